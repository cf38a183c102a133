//! Wires the actors together: registry, one supervised PBX actor per server, the HTTP server;
//! runs until SIGTERM/SIGINT (then closes sessions with 1001 and logs off every PBX), and
//! reloads servers and users on SIGHUP.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use tokio::signal::unix::{signal, SignalKind};

use crate::amisrv::AmiListener;
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::http::listener::{serve, ListenError};
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::registry::{AddServer, CloseUserSessions, DropServer, Registry, Shutdown};

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("ami_listener: {0}")]
    AmiListen(ListenError),
    #[error("{0}")]
    Auth(String),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::StoreError),
}

fn announce_auth(settings: &Settings, auth: &Authenticator) {
    if !auth.is_open() {
        log::info!("{} user(s) configured", settings.users.len());
    } else if settings.http.allow_anonymous_remote {
        log::warn!("no users configured and http.allow_anonymous_remote = true: ANYONE who can reach this port controls every PBX");
    } else {
        log::warn!(
            "no users configured: only loopback clients are served (add [[users]] to serve others)"
        );
    }
}

/// Runs the service on an already-bound listener until a shutdown signal. Must be called
/// inside an actix system (e.g. `System::new().block_on`).
pub async fn run(settings: Settings, listener: std::net::TcpListener) -> Result<(), ServiceError> {
    let metrics = Arc::new(Metrics::default());
    let auth = Authenticator::new(&settings).map_err(ServiceError::Auth)?;
    announce_auth(&settings, &auth);
    // The PBX actors run on this thread, the registry's: every handover to the registry is
    // then a same-thread message, with no cross-thread wake-up per PBX read. On two cores that
    // cost less CPU at 100 clients and gave more events per second at full speed than a thread
    // of their own (README, "PBX actors on the registry's thread").
    let cluster = crate::cluster::Cluster::start(
        &settings.cluster,
        settings.history.max_frames,
        settings.ami.limits(),
        settings.reconnect.clone(),
        metrics.clone(),
    )?;
    let registry = Registry::new(
        settings.limits.clone(),
        settings.ami.limits(),
        settings.reconnect.clone(),
        metrics.clone(),
    )
    .with_cluster(cluster.clone())
    .with_history(settings.history.clone())
    .with_fanout(settings.fanout.clone())
    .start();
    for server in settings.servers.iter().filter(|s| s.enabled) {
        registry.do_send(AddServer {
            settings: Arc::new(server.clone()),
        });
    }
    if let Ok(addr) = listener.local_addr() {
        log::info!(
            "listening on {}://{addr} with {} server(s)",
            if settings.http.tls_cert.is_some() {
                "https"
            } else {
                "http"
            },
            settings.servers.len()
        );
    }
    let state = AppState {
        registry: registry.clone(),
        settings: Arc::new(settings.clone()),
        metrics,
        auth: Arc::new(RwLock::new(Arc::new(auth))),
        next_session: Arc::new(AtomicU64::new(1)),
        budget: crate::http::ActionBudget::new(
            crate::registry::pending::MAX_HTTP_IN_FLIGHT,
            settings.limits.max_http_actions_per_user,
        ),
        passwords: crate::auth::hasher::PasswordPool::for_this_host(),
        failures: Arc::default(),
        ajam: None,
        cluster: cluster.clone(),
    };
    let state = AppState {
        ajam: crate::ajam::Ajam::start(&state),
        ..state
    };
    let ami_arbiter = start_ami_listener(&settings, &state)?;
    let server = serve(state.clone(), listener)?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            log::error!("cannot install signal handlers");
            return;
        };
        let mut current = settings;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => current = reload(current, &state).await,
            }
        }
        log::info!("shutdown requested: closing sessions and logging off PBXs");
        // Stop accepting first, so no session joins after the 1001 round.
        handle.pause().await;
        // Cluster: leave first (out of the live set, PBXs logged off, leases released), so the
        // other nodes take this node's PBXs at their next lease tick.
        if let Some(c) = &cluster {
            c.leave(Duration::from_secs(3)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(4), registry.send(Shutdown)).await;
        handle.stop(true).await;
    });
    server.await?;
    if let Some(a) = ami_arbiter {
        a.stop();
    }
    log::info!("stopped");
    Ok(())
}

/// Binds `[ami_listener]` (if set) and runs it on an arbiter of its own, sharing the registry,
/// the users and the session ids with the HTTP side.
fn start_ami_listener(
    settings: &Settings,
    state: &AppState,
) -> Result<Option<Arbiter>, ServiceError> {
    let limits = &settings.limits;
    let ami = settings.ami.limits();
    let shared = crate::amisrv::session::Shared {
        registry: state.registry.clone(),
        auth: state.auth.clone(),
        settings: settings.ami_listener.clone(),
        limits: limits.clone(),
        codec: crate::ami::Limits {
            max_line_bytes: ami.max_line_bytes.min(limits.max_client_message_bytes),
            max_packet_bytes: ami.max_packet_bytes.min(limits.max_client_message_bytes),
            max_headers: ami.max_headers,
        },
        metrics: state.metrics.clone(),
        next_session: state.next_session.clone(),
        passwords: state.passwords.clone(),
        failures: state.failures.clone(),
    };
    let Some(listener) = AmiListener::bind(shared).map_err(ServiceError::AmiListen)? else {
        return Ok(None);
    };
    if let Some(addr) = listener.local_addr() {
        let scheme = if listener.is_tls() { "ami+tls" } else { "ami" };
        log::info!("AMI listener on {scheme}://{addr}");
    }
    let arbiter = Arbiter::new();
    arbiter.spawn(listener.run());
    Ok(Some(arbiter))
}

/// SIGHUP: re-reads the config; unchanged servers keep their connection and sessions of
/// unchanged users stay up. Other sections need a restart.
async fn reload(current: Settings, state: &AppState) -> Settings {
    let next = match current.reload() {
        Ok(next) => next,
        Err(e) => {
            log::error!("reload failed, keeping the running configuration: {e}");
            return current;
        }
    };
    let auth = match Authenticator::new(&next) {
        Ok(a) => a,
        Err(e) => {
            log::error!("reload failed, keeping the running configuration: {e}");
            return current;
        }
    };
    let registry = &state.registry;
    let enabled = |s: &Settings| -> Vec<crate::config::ServerSettings> {
        s.servers.iter().filter(|x| x.enabled).cloned().collect()
    };
    let (old, new) = (enabled(&current), enabled(&next));
    let (mut added, mut dropped, mut kept) = (0, 0, 0);
    for s in &old {
        if !new.contains(s) {
            let _ = registry.send(DropServer { id: s.id }).await;
            dropped += 1;
        } else {
            kept += 1;
        }
    }
    for s in &new {
        if !old.contains(s) {
            match registry
                .send(AddServer {
                    settings: Arc::new(s.clone()),
                })
                .await
            {
                Ok(Ok(())) => added += 1,
                Ok(Err(e)) => log::error!("reload: server {} ({}): {e}", s.id, s.name),
                Err(e) => log::error!("reload: {e}"),
            }
        }
    }
    // Users whose entry changed or went away lose their sessions; anonymous sessions end when
    // users are configured.
    let mut gone: Vec<String> = current
        .users
        .iter()
        .filter(|u| !next.users.contains(u))
        .map(|u| u.name.clone())
        .collect();
    if state.auth().is_open() && !auth.is_open() {
        gone.push("anonymous".into());
    }
    let new_digest = auth.digest_users();
    for entry in state.auth().digest_users() {
        if !new_digest.contains(&entry) && !gone.contains(&entry.0) {
            gone.push(entry.0);
        }
    }
    let closed = registry
        .send(CloseUserSessions {
            users: gone,
            code: 4001,
            reason: "credentials or rights changed".into(),
        })
        .await
        .unwrap_or(0);
    announce_auth(&next, &auth);
    if let Ok(mut a) = state.auth.write() {
        *a = Arc::new(auth);
    }
    log::info!("reloaded: servers +{added} -{dropped} ={kept}; {closed} session(s) of changed users closed");
    next
}
