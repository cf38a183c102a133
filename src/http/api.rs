//! JSON API handlers: servers, actions with complete results, state and call quality, health and
//! metrics.

use std::time::Duration;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::budget::BudgetError;
use super::{AppState, ConnSocket};
use crate::auth::Identity;
use crate::metrics::Metrics;
use crate::registry::{
    ActionFailure, HttpAction, ListServers, Readiness, ServerQuality, ServerState,
};
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
    let _slot = match state.budget.acquire(&who.name) {
        Ok(slot) => slot,
        Err(e @ BudgetError::Share { .. }) => return error(S::TOO_MANY_REQUESTS, &e.to_string()),
        Err(e) => return error(S::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let msg = HttpAction {
        server,
        action,
        client_id,
        rights: who.rights.clone(),
        timeout,
    };
    let rx = match state.registry.send(msg).await {
        Ok(Ok(rx)) => rx,
        Ok(Err(f)) => return failure(server, f),
        Err(_) => return error(S::SERVICE_UNAVAILABLE, "registry unavailable"),
    };
    let socket = req.conn_data::<ConnSocket>().map(|s| s.0);
    let waited = tokio::select! {
        r = tokio::time::timeout(timeout + Duration::from_secs(1), rx) => r,
        () = client_gone(socket) => {
            // Dropping the receiver and the slot frees both for others at once.
            log::info!("HTTP user {}: client went away before the result", who.name);
            return error(S::SERVICE_UNAVAILABLE, "client went away");
        }
    };
    match waited {
        Ok(Ok(Ok(result))) => HttpResponse::Ok().json(json!({
            "server_id": server,
            "response": packet_value(&result.response, Some(&result.action_id)),
            "events": result
                .events
                .iter()
                .map(|e| packet_value(e, Some(&result.action_id)))
                .collect::<Vec<Value>>(),
        })),
        Ok(Ok(Err(f))) => failure(server, f),
        Ok(Err(_)) | Err(_) => failure(server, ActionFailure::Timeout),
    }
}

/// The HTTP answer to a failed action on `server`. A server the user may not see answers exactly
/// as one that does not exist, so ids cannot be enumerated.
/// Resolves once the client closed its connection (EOF or error on a peek of the socket, checked
/// every [`GONE_POLL`]); never, without a socket. A client that only half-closes counts as gone.
async fn client_gone(socket: Option<std::os::fd::RawFd>) {
    let Some(fd) = socket else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(GONE_POLL).await;
        let mut byte = 0u8;
        // SAFETY: a non-blocking peek of one byte into a local buffer, on the socket of the
        // connection this request is being served on (open for as long as the handler runs).
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let would_block = n < 0
            && matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EAGAIN) | Some(libc::EINTR)
            );
        if n == 0 || (n < 0 && !would_block) {
            return;
        }
    }
}

/// How often a waiting HTTP action checks that its client is still there.
const GONE_POLL: Duration = Duration::from_millis(100);

fn failure(server: u32, f: ActionFailure) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    let f = match f {
        ActionFailure::Forbidden(_) => ActionFailure::UnknownServer(server),
        other => other,
    };
    let status = match f {
        ActionFailure::UnknownServer(_) => S::NOT_FOUND,
        ActionFailure::NotConnected(_) => S::SERVICE_UNAVAILABLE,
        ActionFailure::Forbidden(_) => S::NOT_FOUND,
        ActionFailure::Timeout => S::GATEWAY_TIMEOUT,
        ActionFailure::Busy => S::SERVICE_UNAVAILABLE,
        ActionFailure::Failed(_) => S::BAD_GATEWAY,
    };
    error(status, &f.to_string())
}

/// The signed-in user and the server id of a `/api/v1/servers/{id}/…` request, or the answer.
fn viewer(req: &HttpRequest, path: &str) -> Result<(Identity, u32), Box<HttpResponse>> {
    use actix_web::http::StatusCode as S;
    let who =
        identity(req).ok_or_else(|| Box::new(error(S::UNAUTHORIZED, "authentication required")))?;
    let server = path
        .parse::<u32>()
        .map_err(|_| Box::new(error(S::NOT_FOUND, &format!("unknown server {path}"))))?;
    Ok((who, server))
}

/// The JSON answer to a registry reply about `server`.
fn answer(
    server: u32,
    res: Result<Result<Value, ActionFailure>, actix::MailboxError>,
) -> HttpResponse {
    match res {
        Ok(Ok(v)) => HttpResponse::Ok().json(v),
        Ok(Err(f)) => failure(server, f),
        Err(_) => error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "registry unavailable",
        ),
    }
}

/// `GET /api/v1/servers/{id}/state`: the live calls, queues and endpoints of one server.
pub async fn server_state(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (who, server) = match viewer(&req, &path) {
        Ok(v) => v,
        Err(answer) => return *answer,
    };
    let res = state
        .registry
        .send(ServerState {
            server,
            rights: who.rights,
        })
        .await;
    answer(server, res)
}

/// Rows `/quality` lists when `?limit=` is not given.
const DEFAULT_QUALITY_ROWS: usize = 10;
/// Longest `?endpoint=` accepted (endpoint names are short: `PJSIP/6117`).
const MAX_ENDPOINT_CHARS: usize = 200;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QualityQuery {
    limit: Option<usize>,
    endpoint: Option<String>,
}

/// `GET /api/v1/servers/{id}/quality[?limit=N][&endpoint=PJSIP/6117]`: the worst calls now and
/// the worst endpoints over the window, graded by the configured thresholds.
pub async fn server_quality(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    let (who, server) = match viewer(&req, &path) {
        Ok(v) => v,
        Err(answer) => return *answer,
    };
    let query = match web::Query::<QualityQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(e) => return error(S::BAD_REQUEST, &format!("bad query: {e}")),
    };
    let limit = query.limit.unwrap_or(DEFAULT_QUALITY_ROWS);
    if !(1..=crate::state::MAX_REPORT_ROWS).contains(&limit) {
        return error(
            S::BAD_REQUEST,
            &format!("limit must be 1..={}", crate::state::MAX_REPORT_ROWS),
        );
    }
    if query
        .endpoint
        .as_ref()
        .is_some_and(|e| e.is_empty() || e.chars().count() > MAX_ENDPOINT_CHARS)
    {
        return error(
            S::BAD_REQUEST,
            &format!("endpoint must be 1..={MAX_ENDPOINT_CHARS} characters"),
        );
    }
    let res = state
        .registry
        .send(ServerQuality {
            server,
            rights: who.rights,
            query: crate::pbx::GetQuality {
                limit,
                thresholds: state.settings.quality,
                endpoint: query.endpoint,
            },
        })
        .await;
    answer(server, res)
}

pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready once every enabled server has finished its first connection attempt.
/// `GET /api/v1/cluster`: the live nodes and the servers each owns now (SPEC §11).
pub async fn cluster(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    if identity(&req).is_none() {
        return error(S::UNAUTHORIZED, "authentication required");
    }
    let Some(cluster) = &state.cluster else {
        return error(
            S::NOT_FOUND,
            "cluster mode is off ([cluster] redis_url is unset)",
        );
    };
    match cluster.nodes().await {
        Ok(nodes) => {
            HttpResponse::Ok().json(json!({ "node_id": cluster.node_id(), "nodes": nodes }))
        }
        Err(e) => error(
            S::SERVICE_UNAVAILABLE,
            &format!("cluster store unreachable: {e}"),
        ),
    }
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.cluster.as_ref().is_some_and(|c| !c.redis_up()) {
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("not ready: cluster store (Redis) unreachable\n");
    }
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
