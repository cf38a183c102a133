//! HTTP routes: the WebSocket upgrade (`/ws`, and `/` for amiws dashboards), the JSON API,
//! health and metrics, and `web_root` as static files. No business logic lives here.

mod api;
mod budget;
pub mod conn;
mod gate;
pub mod listener;
mod origin;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use actix::Addr;
use actix_web::{guard, web, HttpMessage, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde_json::json;

use crate::auth::hasher::PasswordPool;
use crate::auth::limiter::FailureLimiter;
use crate::auth::{Authenticator, Identity};
use crate::config::Settings;
use crate::metrics::{Metrics, SharedMetrics};
use crate::registry::session::{SessionIo, SessionSlot};
use crate::registry::Registry;
use crate::ws::outbound::OutboundStream;
use crate::ws::session::WsSession;
pub use budget::{ActionBudget, BudgetError, Slot as ActionSlot};
pub use gate::{client_ip, cross_site, gate};

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub registry: Addr<Registry>,
    pub settings: Arc<Settings>,
    pub metrics: SharedMetrics,
    /// Swapped whole on SIGHUP.
    pub auth: Arc<std::sync::RwLock<Arc<Authenticator>>>,
    pub next_session: Arc<AtomicU64>,
    /// HTTP actions waiting for a PBX, in all and per user.
    pub budget: Arc<ActionBudget>,
    /// Where argon2 checks run (off the async workers, bounded).
    pub passwords: Arc<PasswordPool>,
    /// Failed logins per client address.
    pub failures: Arc<FailureLimiter>,
    /// AJAM (`[ajam] enabled`): its session directory and what its sessions share.
    pub ajam: Option<crate::ajam::Ajam>,
    /// Cluster mode (SPEC §11); None on a single node.
    pub cluster: Option<crate::cluster::Cluster>,
}

impl AppState {
    /// The current authenticator.
    pub fn auth(&self) -> Arc<Authenticator> {
        match self.auth.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The raw socket of the connection a request arrived on (set by the listener's on_connect).
#[derive(Debug, Clone, Copy)]
pub struct ConnSocket(pub RawFd);

/// The local address of the connection a request arrived on (set by the listener's on_connect):
/// what same-origin is judged against.
#[derive(Debug, Clone, Copy)]
pub struct ConnLocal(pub std::net::SocketAddr);

fn is_upgrade(head: &actix_web::dev::RequestHead) -> bool {
    head.headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Registers every route; tests build the same app with this.
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let web_root = state.settings.http.web_root.clone();
        if state.ajam.is_some() {
            cfg.configure(crate::ajam::http::routes);
        }
        cfg.app_data(web::Data::new(state))
            .app_data(web::JsonConfig::default().limit(65_536))
            .route("/ws", web::get().to(ws_upgrade))
            .route(
                "/",
                web::get()
                    .guard(guard::fn_guard(|ctx| is_upgrade(ctx.head())))
                    .to(ws_upgrade),
            )
            .route("/api/v1/servers", web::get().to(api::list_servers))
            .route(
                "/api/v1/servers/{id}/actions",
                web::post().to(api::post_action),
            )
            .route(
                "/api/v1/servers/{id}/state",
                web::get().to(api::server_state),
            )
            .route(
                "/api/v1/servers/{id}/quality",
                web::get().to(api::server_quality),
            )
            .route("/api/v1/cluster", web::get().to(api::cluster))
            .route("/livez", get_or_head().to(api::livez))
            .route("/readyz", get_or_head().to(api::readyz))
            .route("/metrics", get_or_head().to(api::metrics))
            .service(actix_files::Files::new("/", web_root).index_file("index.html"));
    }
}

/// Probes answer HEAD as well as GET (actix sends the headers only).
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Browsers always send Origin on a WebSocket upgrade; other clients need none.
fn origin_allowed(req: &HttpRequest, settings: &Settings) -> bool {
    let Some(origin) = req.headers().get("origin") else {
        return true;
    };
    let local = req
        .conn_data::<ConnLocal>()
        .map_or_else(|| req.app_config().local_addr(), |l| l.0);
    let http = &settings.http;
    origin.to_str().is_ok_and(|o| {
        origin::origin_allowed(o, local, http.tls_cert.is_some(), &http.allowed_origins)
    })
}

async fn ws_upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let limits = &state.settings.limits;
    if !origin_allowed(&req, &state.settings) {
        Metrics::inc(&state.metrics.ws_refused_sessions_total);
        log::warn!(
            "refused WebSocket from foreign origin {:?}",
            req.headers().get("origin")
        );
        return Ok(HttpResponse::Forbidden().json(json!({"error": "origin not allowed"})));
    }
    let Some(identity) = req.extensions().get::<Identity>().cloned() else {
        return Ok(HttpResponse::Unauthorized().json(json!({"error": "authentication required"})));
    };
    let resume = gate::query_param(req.query_string(), "resume").unwrap_or_default();
    let resume = match crate::ws::resume::parse_query(&resume) {
        Ok(r) => r,
        Err(e) => {
            let error = format!("resume: {e}");
            return Ok(HttpResponse::BadRequest().json(json!({ "error": error })));
        }
    };
    // Every connection of amihub's listener has one; checked before a session slot is taken.
    let Some(side) = req.conn_data::<conn::SideQueue>().cloned() else {
        return Ok(HttpResponse::InternalServerError()
            .json(json!({"error": "connection has no side queue (not from amihub's listener)"})));
    };
    let Some(slot) = SessionSlot::acquire(&state.metrics, |m| &m.ws_sessions, limits.max_sessions)
    else {
        Metrics::inc(&state.metrics.ws_refused_sessions_total);
        return Ok(HttpResponse::ServiceUnavailable()
            .json(json!({"error": "max_sessions reached", "max_sessions": limits.max_sessions})));
    };
    let mut res = ws::handshake(&req)?;
    let socket = req
        .conn_data::<ConnSocket>()
        .zip(req.peer_addr())
        .map(|(s, peer)| (s.0, peer));
    let io = SessionIo::new(socket, Some(slot));
    let id = state.next_session.fetch_add(1, Relaxed);
    let session = WsSession::new(
        id,
        identity,
        state.registry.clone(),
        io.clone(),
        limits.clone(),
        state.metrics.clone(),
    )
    .resuming(resume);
    // The codec refuses frames far past the limit outright; the session answers the rest.
    let codec = actix_http::ws::Codec::new().max_size(limits.max_client_message_bytes * 4);
    let stream = ws::WebsocketContext::with_codec(session, payload, codec);
    Ok(res.streaming(OutboundStream::new(Box::pin(stream), io, side)))
}
