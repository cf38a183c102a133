//! Linux /proc readings: resident memory and CPU time of amihub, of this process and of one
//! of its threads (the simulator), plus a sampler that keeps the peak RSS.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS").unwrap_or(0)
}

/// utime + stime in clock ticks from a `stat` file (`/proc/PID/stat` or a task's).
pub fn cpu_ticks(stat_path: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(stat_path) else {
        return 0;
    };
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The stat path of the thread of this process whose name starts with `prefix`.
pub fn own_thread_stat(prefix: &str) -> Option<String> {
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            return Some(dir.join("stat").to_string_lossy().into_owned());
        }
    }
    None
}

/// CPU time used between two points, as % of one core.
pub struct CpuMeter {
    paths: Vec<String>,
    start: Vec<u64>,
    at: std::time::Instant,
}

impl CpuMeter {
    pub fn start(paths: Vec<String>) -> CpuMeter {
        let start = paths.iter().map(|p| cpu_ticks(p)).collect();
        CpuMeter {
            paths,
            start,
            at: std::time::Instant::now(),
        }
    }

    /// % of one core per path since `start`.
    pub fn percent(&self) -> Vec<f64> {
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        let hz = clock_ticks_per_s();
        self.paths
            .iter()
            .zip(&self.start)
            .map(|(p, s)| cpu_ticks(p).saturating_sub(*s) as f64 / hz / secs * 100.0)
            .collect()
    }
}

/// Samples VmRSS of a process every 100 ms on its own thread and keeps the peak since the last
/// `reset_peak`.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pid: u32,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                while !s.load(Relaxed) {
                    p.fetch_max(rss_kib(pid), Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        RssSampler {
            peak,
            stop,
            thread,
            pid,
        }
    }

    /// Peak sampled since start or the last reset, including a reading now.
    pub fn peak_kib(&self) -> u64 {
        self.peak.fetch_max(rss_kib(self.pid), Relaxed);
        self.peak.load(Relaxed)
    }

    pub fn reset_peak(&self) {
        self.peak.store(rss_kib(self.pid), Relaxed);
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Raises this process's open-file soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Busy and total jiffies of the whole machine (/proc/stat `cpu` line).
fn machine_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Whole-machine CPU use between `start` and `percent`, as % of one core (200 % = 2 cores busy).
pub struct MachineCpu {
    start: (u64, u64),
    cores: f64,
}

impl MachineCpu {
    pub fn start() -> MachineCpu {
        MachineCpu {
            start: machine_jiffies(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        }
    }

    pub fn percent(&self) -> f64 {
        let (busy, total) = machine_jiffies();
        let (db, dt) = (busy - self.start.0, total - self.start.1);
        if dt == 0 {
            0.0
        } else {
            db as f64 / dt as f64 * self.cores * 100.0
        }
    }
}
