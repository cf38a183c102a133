//! Wires the actors together: registry, one supervised PBX actor per server, the HTTP server;
//! runs until SIGTERM/SIGINT, then closes sessions with 1001 and logs off every PBX.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::http::listener::{serve, ListenError};
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::registry::{AddServer, Registry, Shutdown};

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("{0}")]
    Auth(String),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the service on an already-bound listener until a shutdown signal. Must be called
/// inside an actix system (e.g. `#[actix_web::main]`).
pub async fn run(settings: Settings, listener: std::net::TcpListener) -> Result<(), ServiceError> {
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::default());
    let pbx_arbiter = Arbiter::new();
    let registry = Registry::new(
        settings.limits.clone(),
        settings.ami.limits(),
        settings.reconnect.clone(),
        pbx_arbiter.handle(),
        metrics.clone(),
    )
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
    let auth = Arc::new(Authenticator::new(&settings).map_err(ServiceError::Auth)?);
    if auth.is_open() {
        if settings.http.allow_anonymous_remote {
            log::warn!("no users configured and http.allow_anonymous_remote = true: ANYONE who can reach this port controls every PBX");
        } else {
            log::warn!("no users configured: only loopback clients are served (add [[users]] to serve others)");
        }
    }
    let state = AppState {
        auth,
        registry: registry.clone(),
        settings: settings.clone(),
        metrics,
        next_session: Arc::new(AtomicU64::new(1)),
    };
    let server = serve(state, listener)?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        log::info!("shutdown requested: closing sessions and logging off PBXs");
        let _ = tokio::time::timeout(Duration::from_secs(4), registry.send(Shutdown)).await;
        handle.stop(true).await;
    });
    server.await?;
    pbx_arbiter.stop();
    log::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
