//! The authentication gate in front of every route: API, metrics and WebSocket need an
//! identity; static files and health probes only need the caller to be allowed at all
//! (a service with no users serves loopback clients, under loopback host names, only). A
//! state-changing request must also be JSON from amihub's own or an allowed origin (CSRF).

use std::net::IpAddr;
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use serde_json::json;

use super::{is_upgrade, origin, AppState, ConnLocal};
use crate::auth::forwarded::{self, Header};
use crate::auth::{AuthError, Credentials, Verdict};
use crate::metrics::Metrics;

/// Only the dashboard's own files and the health probes are public; the API, metrics and the
/// WebSocket need an identity. Judged on the percent-decoded path, as the router sees it.
fn protected(req: &ServiceRequest) -> bool {
    let path = percent_decode_path(req.path());
    if path == "/" {
        return is_upgrade(req.head());
    }
    let api = ["/api", "/ws", "/metrics"]
        .iter()
        .any(|p| path.starts_with(p));
    api || path.contains("//")
}

/// Percent-decoding for paths (`+` stays a plus).
fn percent_decode_path(p: &str) -> String {
    percent_decode(&p.replace('+', "%2B"))
}

fn query_token(query: &str) -> Option<String> {
    query_param(query, "token")
}

/// The percent-decoded value of `name` in a query string.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The address the connection arrived on (recorded by the listener), else the listen address.
fn local_addr(req: &ServiceRequest) -> std::net::SocketAddr {
    req.conn_data::<ConnLocal>()
        .map_or_else(|| req.app_config().local_addr(), |l| l.0)
}

fn refuse(req: ServiceRequest, status: StatusCode, message: &str) -> ServiceResponse<BoxBody> {
    log::warn!(
        "refused {} {} from {:?}: {message}",
        req.method(),
        req.path(),
        req.peer_addr().map(|a| a.ip())
    );
    let resp = HttpResponse::build(status).json(json!({ "error": message }));
    req.into_response(resp)
}

/// Loopback-only mode: a `Host` that is not loopback (or declared in `allowed_origins`) is a
/// DNS-rebinding page, never amihub's own.
fn host_refused(req: &ServiceRequest, state: &AppState) -> Option<String> {
    let http = &state.settings.http;
    let host = match req.headers().get("host") {
        Some(h) => String::from_utf8_lossy(h.as_bytes()).into_owned(),
        None => req.uri().authority()?.to_string(),
    };
    let tls = http.tls_cert.is_some();
    (!origin::host_allowed(&host, local_addr(req), tls, &http.allowed_origins)).then(|| {
        format!(
            "Host {host:?} is not served: without users only loopback hosts are (declare a \
             public name in http.allowed_origins)"
        )
    })
}

/// A state-changing request (anything but GET/HEAD/OPTIONS) must be JSON (a cross-site form or
/// `no-cors` fetch cannot send that type) and come from amihub's own origin or an allowed one.
fn forgery_refused(req: &ServiceRequest, state: &AppState) -> Option<(StatusCode, String)> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let headers = req.headers();
    let media = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
        return Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a state-changing request needs Content-Type: application/json".into(),
        ));
    }
    let http = &state.settings.http;
    let tls = http.tls_cert.is_some();
    let cross = match headers.get("origin") {
        Some(o) => !o
            .to_str()
            .is_ok_and(|o| origin::origin_allowed(o, local_addr(req), tls, &http.allowed_origins)),
        // Without Origin, a browser still says where the request came from.
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none")),
    };
    cross.then(|| {
        (
            StatusCode::FORBIDDEN,
            "cross-origin request refused (origin not allowed)".into(),
        )
    })
}

/// The address failed logins count against: the peer, or for a loopback peer (a local reverse
/// proxy) the last address the proxy appended: of `X-Forwarded-For` (nginx's
/// `$proxy_add_x_forwarded_for`, Apache's default), else `X-Real-IP`, else `Forwarded`.
fn client_address(peer: Option<IpAddr>, chains: &[(Header, Vec<IpAddr>)]) -> Option<IpAddr> {
    let peer = peer?;
    if !forwarded::is_loopback(peer) {
        return Some(peer);
    }
    let last = |h: Header| {
        chains
            .iter()
            .find(|(k, _)| *k == h)
            .and_then(|(_, c)| c.last().copied())
    };
    Some(
        last(Header::XForwardedFor)
            .or_else(|| last(Header::XRealIp))
            .or_else(|| last(Header::Forwarded))
            .unwrap_or(peer),
    )
}

/// actix `from_fn` middleware: authenticates, stores the `Identity`, or answers 401/403.
pub async fn gate(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await;
    };
    let auth = state.auth();
    if auth.is_open() && !state.settings.http.allow_anonymous_remote {
        if let Some(message) = host_refused(&req, &state) {
            Metrics::inc(&state.metrics.auth_failures_total);
            return Ok(refuse(req, StatusCode::FORBIDDEN, &message));
        }
    }
    let headers = req.headers();
    let chains: Vec<(Header, Vec<IpAddr>)> = Header::ALL
        .iter()
        .map(|h| {
            let chain = headers
                .get_all(h.name())
                .flat_map(|v| forwarded::addresses(*h, v.as_bytes()))
                .collect();
            (*h, chain)
        })
        .collect();
    let peer = req.peer_addr().map(|a| a.ip());
    let client = client_address(peer, &chains);
    let has_credentials =
        headers.contains_key("authorization") || req.query_string().contains("token=");
    if !auth.is_open() && has_credentials {
        if let Some(wait) = client.and_then(|c| state.failures.blocked(c, Instant::now())) {
            Metrics::inc(&state.metrics.auth_failures_total);
            let e = AuthError::TooManyFailures(wait.as_secs().max(1));
            log::warn!(
                "refused {} {} from {client:?}: {e}",
                req.method(),
                req.path()
            );
            let resp = HttpResponse::TooManyRequests()
                .append_header(("Retry-After", wait.as_secs().max(1).to_string()))
                .json(json!({ "error": e.to_string() }));
            return Ok(req.into_response(resp));
        }
    }
    let forwarded = chains.into_iter().flat_map(|(_, c)| c).collect();
    let token = query_token(req.query_string());
    let uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let creds = Credentials {
        method: req.method().as_str(),
        uri,
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()),
        query_token: token.as_deref(),
        peer,
        forwarded_for: forwarded,
    };
    let result = match auth.authenticate(&creds) {
        Verdict::Done(r) => r,
        Verdict::Verify(check) => {
            match state.passwords.verify(&check.hash, &check.password).await {
                Ok(ok) => auth.verified(&check, ok),
                Err(busy) => Err(AuthError::Busy(busy)),
            }
        }
    };
    if let (Err(e), Some(c)) = (&result, client) {
        if e.is_failure() {
            state.failures.failed(c, Instant::now());
        }
    }
    let needs_identity = protected(&req);
    let identity = match result {
        Ok(identity) => Some(identity),
        Err(AuthError::Missing) | Err(AuthError::Invalid) if !needs_identity => None,
        Err(e) => {
            Metrics::inc(&state.metrics.auth_failures_total);
            let message = e.to_string();
            let resp = match e {
                AuthError::RemoteWithoutUsers => {
                    return Ok(refuse(req, StatusCode::FORBIDDEN, &message))
                }
                AuthError::Busy(_) => HttpResponse::ServiceUnavailable()
                    .append_header(("Retry-After", "1"))
                    .json(json!({ "error": message })),
                _ => {
                    let mut r = HttpResponse::Unauthorized();
                    for c in auth.challenges(&e) {
                        r.append_header(("WWW-Authenticate", c));
                    }
                    r.json(json!({ "error": message }))
                }
            };
            log::warn!(
                "refused {} {} from {:?}: {message}",
                req.method(),
                req.path(),
                req.peer_addr().map(|a| a.ip())
            );
            return Ok(req.into_response(resp));
        }
    };
    if let Some((status, message)) = forgery_refused(&req, &state) {
        Metrics::inc(&state.metrics.actions_refused_total);
        return Ok(refuse(req, status, &message));
    }
    if let Some(identity) = identity {
        req.extensions_mut().insert(identity);
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_query_strings_are_decoded() {
        assert_eq!(
            query_token("a=1&token=ab%2Bc%3D&b=2").as_deref(),
            Some("ab+c=")
        );
        assert_eq!(query_token("token=x%"), Some("x%".into()));
        assert_eq!(query_token("tok=1"), None);
        assert_eq!(percent_decode_path("/%61pi/v1/servers"), "/api/v1/servers");
        assert_eq!(percent_decode_path("/a+b"), "/a+b");
    }
}
