//! JSON API handlers: servers, actions with complete results, health and metrics.

use std::time::Duration;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::AppState;
use crate::auth::Identity;
use crate::metrics::Metrics;
use crate::registry::{ActionFailure, HttpAction, ListServers, Readiness, ServerState};
use crate::ws::protocol::{packet_value, parse_client, ClientMessage};

/// Upper bound for `?timeout_s=` on an HTTP action.
const MAX_ACTION_TIMEOUT_S: u64 = 120;

fn identity(req: &HttpRequest) -> Option<Identity> {
    req.extensions().get::<Identity>().cloned()
}

fn error(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

pub async fn list_servers(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(who) = identity(&req) else {
        return error(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "authentication required",
        );
    };
    match state
        .registry
        .send(ListServers {
            rights: Some(who.rights),
        })
        .await
    {
        Ok(servers) => HttpResponse::Ok().json(json!({ "servers": servers })),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"error": "registry unavailable"})),
    }
}

/// `POST /api/v1/servers/{id}/actions`: the action as JSON → `{"response":…,"events":[…]}`.
pub async fn post_action(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    let Some(who) = identity(&req) else {
        return error(S::UNAUTHORIZED, "authentication required");
    };
    let Ok(server) = path.parse::<u32>() else {
        return error(S::NOT_FOUND, &format!("unknown server {path}"));
    };
    if body.len() > state.settings.limits.max_client_message_bytes {
        return error(
            S::PAYLOAD_TOO_LARGE,
            "action exceeds max_client_message_bytes",
        );
    }
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => return error(S::BAD_REQUEST, "body must be UTF-8 JSON"),
    };
    let (action, client_id) = match parse_client(text) {
        Ok(ClientMessage::Action {
            action, client_id, ..
        }) => (action, client_id),
        Ok(ClientMessage::Proxy { .. }) => {
            return error(S::BAD_REQUEST, "ProxyAction is WebSocket only")
        }
        Err(e) => return error(S::BAD_REQUEST, &e.to_string()),
    };
    let name = action.name().to_ascii_lowercase();
    if matches!(name.as_str(), "login" | "logoff" | "challenge") {
        return error(
            S::BAD_REQUEST,
            "Login, Logoff and Challenge are handled by amihub",
        );
    }
    if let Err(refused) = who.rights.check_action(&action) {
        Metrics::inc(&state.metrics.actions_refused_total);
        log::warn!(
            "HTTP user {}: refused action {} (not permitted): {refused}",
            who.name,
            action.name()
        );
        return error(S::FORBIDDEN, &format!("{refused} for user {}", who.name));
    }
    let timeout_s = req
        .query_string()
        .split('&')
        .find_map(|kv| kv.strip_prefix("timeout_s="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(state.settings.limits.action_timeout_s)
        .clamp(1, MAX_ACTION_TIMEOUT_S);
    let timeout = Duration::from_secs(timeout_s);
    let msg = HttpAction {
        server,
        action,
        client_id,
        rights: who.rights.clone(),
        timeout,
    };
    let rx = match state.registry.send(msg).await {
        Ok(Ok(rx)) => rx,
        Ok(Err(f)) => return failure(f),
        Err(_) => return error(S::SERVICE_UNAVAILABLE, "registry unavailable"),
    };
    match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
        Ok(Ok(Ok(result))) => HttpResponse::Ok().json(json!({
            "server_id": server,
            "response": packet_value(&result.response, Some(&result.action_id)),
            "events": result
                .events
                .iter()
                .map(|e| packet_value(e, Some(&result.action_id)))
                .collect::<Vec<Value>>(),
        })),
        Ok(Ok(Err(f))) => failure(f),
        Ok(Err(_)) | Err(_) => failure(ActionFailure::Timeout),
    }
}

fn failure(f: ActionFailure) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    let status = match f {
        ActionFailure::UnknownServer(_) => S::NOT_FOUND,
        ActionFailure::NotConnected(_) => S::SERVICE_UNAVAILABLE,
        ActionFailure::Forbidden(_) => S::FORBIDDEN,
        ActionFailure::Timeout => S::GATEWAY_TIMEOUT,
        ActionFailure::Busy => S::SERVICE_UNAVAILABLE,
        ActionFailure::Failed(_) => S::BAD_GATEWAY,
    };
    error(status, &f.to_string())
}

/// `GET /api/v1/servers/{id}/state`: the live calls, queues and endpoints of one server.
pub async fn server_state(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    let Some(who) = identity(&req) else {
        return error(S::UNAUTHORIZED, "authentication required");
    };
    let Ok(server) = path.parse::<u32>() else {
        return error(S::NOT_FOUND, &format!("unknown server {path}"));
    };
    match state
        .registry
        .send(ServerState {
            server,
            rights: who.rights,
        })
        .await
    {
        Ok(Ok(v)) => HttpResponse::Ok().json(v),
        Ok(Err(f)) => failure(f),
        Err(_) => error(S::SERVICE_UNAVAILABLE, "registry unavailable"),
    }
}

pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready once every enabled server has finished its first connection attempt.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.registry.send(Readiness).await {
        Ok(true) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        _ => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("not ready\n"),
    }
}

pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if identity(&req).is_none() {
        return error(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "authentication required",
        );
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
