//! HTTP routes: the WebSocket upgrade (`/ws`, and `/` for amiws dashboards), the JSON API,
//! health and metrics, and `web_root` as static files. No business logic lives here.

mod api;
mod gate;
pub mod listener;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use actix::Addr;
use actix_web::{guard, web, HttpMessage, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde_json::json;

use crate::auth::{Authenticator, Identity};
use crate::config::Settings;
use crate::metrics::{Metrics, SharedMetrics};
use crate::registry::session::{SessionIo, SessionSlot};
use crate::registry::Registry;
use crate::ws::outbound::OutboundStream;
use crate::ws::session::WsSession;
pub use gate::gate;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub registry: Addr<Registry>,
    pub settings: Arc<Settings>,
    pub metrics: SharedMetrics,
    /// Swapped whole on SIGHUP.
    pub auth: Arc<std::sync::RwLock<Arc<Authenticator>>>,
    pub next_session: Arc<AtomicU64>,
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
            .route("/livez", web::get().to(api::livez))
            .route("/readyz", web::get().to(api::readyz))
            .route("/metrics", web::get().to(api::metrics))
            .service(actix_files::Files::new("/", web_root).index_file("index.html"));
    }
}

fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get("origin").and_then(|o| o.to_str().ok()) else {
        // Not a browser (browsers always send Origin on WebSocket upgrades).
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = req.connection_info().host().to_string();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin_host.eq_ignore_ascii_case(&host)
}

async fn ws_upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let limits = &state.settings.limits;
    if !origin_allowed(&req, &state.settings.http.allowed_origins) {
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
    );
    // The codec refuses frames far past the limit outright; the session answers the rest.
    let codec = actix_http::ws::Codec::new().max_size(limits.max_client_message_bytes * 4);
    let stream = ws::WebsocketContext::with_codec(session, payload, codec);
    Ok(res.streaming(OutboundStream::new(Box::pin(stream), io)))
}
