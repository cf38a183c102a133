//! The authentication gate in front of every route: API, metrics and WebSocket need an
//! identity; static files and health probes only need the caller to be allowed at all
//! (a service with no users serves loopback clients only).

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use serde_json::json;

use super::{is_upgrade, AppState};
use crate::auth::{forwarded_addresses, AuthError, Credentials};
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
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
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

/// actix `from_fn` middleware: authenticates, stores the `Identity`, or answers 401/403.
pub async fn gate(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await;
    };
    let headers = req.headers();
    let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .flat_map(|h| headers.get_all(*h))
        .filter_map(|v| v.to_str().ok());
    let token = query_token(req.query_string());
    let uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let creds = Credentials {
        method: req.method().as_str(),
        uri,
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()),
        query_token: token.as_deref(),
        peer: req.peer_addr().map(|a| a.ip()),
        forwarded_for: forwarded_addresses(forwarded),
    };
    let auth = state.auth();
    let result = auth.authenticate(&creds);
    let needs_identity = protected(&req);
    match result {
        Ok(identity) => {
            req.extensions_mut().insert(identity);
            next.call(req).await
        }
        Err(AuthError::Missing) | Err(AuthError::Invalid) if !needs_identity => {
            next.call(req).await
        }
        Err(e) => {
            Metrics::inc(&state.metrics.auth_failures_total);
            log::warn!(
                "refused {} {} from {:?}: {e}",
                req.method(),
                req.path(),
                req.peer_addr().map(|a| a.ip())
            );
            let resp = match e {
                AuthError::RemoteWithoutUsers => {
                    HttpResponse::Forbidden().json(json!({"error": e.to_string()}))
                }
                _ => {
                    let mut r = HttpResponse::Unauthorized();
                    for c in auth.challenges() {
                        r.append_header(("WWW-Authenticate", c));
                    }
                    r.json(json!({"error": e.to_string()}))
                }
            };
            Ok(req.into_response(resp))
        }
    }
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
