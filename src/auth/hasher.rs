//! A small pool of low-priority threads that run argon2 password verification, so a flood of
//! guesses never runs on the async HTTP workers and never takes more than its threads' share of
//! the CPU; its queue is bounded (a full queue is refused at once, not waited for).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use tokio::sync::oneshot;

/// Niceness of the verifier threads: the async workers win the CPU when both want it.
const NICE: libc::c_int = 10;

/// Why a password could not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks waiting")]
pub struct PoolBusy;

struct Job {
    hash: String,
    password: String,
    reply: oneshot::Sender<bool>,
}

/// Verifier threads and their bounded queue.
pub struct PasswordPool {
    tx: SyncSender<Job>,
}

impl PasswordPool {
    /// `threads` verifiers (at least one) behind a queue of `queue` waiting checks.
    pub fn new(threads: usize, queue: usize) -> Arc<PasswordPool> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || verifier(&rx));
            if let Err(e) = spawned {
                log::error!("cannot start a password verifier thread: {e}");
            }
        }
        Arc::new(PasswordPool { tx })
    }

    /// One verifier per two cores (at least one), 64 checks waiting.
    pub fn for_this_host() -> Arc<PasswordPool> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PasswordPool::new(cores / 2, 64)
    }

    /// Whether `password` matches the argon2 PHC string `hash`.
    pub async fn verify(&self, hash: &str, password: &str) -> Result<bool, PoolBusy> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            hash: hash.to_string(),
            password: password.to_string(),
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => rx.await.map_err(|_| PoolBusy),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(PoolBusy),
        }
    }
}

/// Whether `password` matches the argon2 PHC string `hash` (slow: run it off async workers).
pub fn matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

fn verifier(rx: &Mutex<Receiver<Job>>) {
    // SAFETY: setpriority(2) on the calling thread (Linux: PRIO_PROCESS with who = 0 is the
    // calling thread), with no pointers involved.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
    }
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        if job.reply.is_closed() {
            continue;
        }
        let _ = job.reply.send(matches(&job.hash, &job.password));
    }
}
