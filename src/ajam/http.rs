//! The AJAM routes on the HTTP listener: `/rawman`, `/mxml`, `/manager` (a `mansession_id`
//! cookie after `action=Login`) and `/arawman`, `/amxml`, `/amanager` (HTTP Digest on every
//! request), GET or form POST. Here live HTTP's concerns only: the CSRF rule, parameters, the
//! cookie, login and Digest checks (with the shared failure limiter and password pool), and
//! rendering a session's AMI text as the path asks. Sessions answer; this never talks to a PBX.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use tokio::sync::oneshot;

use super::directory::{Create, Lookup};
use super::request::{parse_request, AjamRequest};
use super::session::Joined;
use super::session::{self, AjamSession, Answer, End, Run};
use super::sessions::{is_id, new_id};
use super::translate::{html_document, translate, xml_document, Format, XmlTarget};
use crate::ami::Packet;
use crate::amisrv::login::{self, Credentials, PreLogin, Step};
use crate::amisrv::session::LOGIN_FAILURE_DELAY;
use crate::auth::digest::DigestError;
use crate::auth::AuthError;
use crate::http::{client_ip, cross_site, AppState, ConnLocal};
use crate::metrics::Metrics;

/// The cookie-session paths and their Digest twins.
pub const PATHS: [&str; 6] = [
    "/rawman",
    "/mxml",
    "/manager",
    "/arawman",
    "/amxml",
    "/amanager",
];

/// The cookie Asterisk names its HTTP manager sessions with.
const COOKIE: &str = "mansession_id";

/// Asterisk's 401 page (with amihub's name where Asterisk puts its version).
const UNAUTHORIZED_PAGE: &str = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\r\n\
<html><head>\r\n<title>401 Unauthorized</title>\r\n</head><body>\r\n<h1>Unauthorized</h1>\r\n\
<p></p>\r\n<hr />\r\n<address>amihub</address>\r\n</body></html>\r\n";

/// Whether `path` is one of the AJAM paths (the gate leaves their authentication to them).
pub fn is_ajam_path(path: &str) -> bool {
    PATHS.contains(&path)
}

/// Registers the six paths, GET and POST.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for path in PATHS {
        cfg.service(
            web::resource(path)
                .route(web::get().to(serve))
                .route(web::post().to(serve)),
        );
    }
}

/// How a path answers: its body format, and whether it authenticates with Digest.
#[derive(Debug, Clone, Copy)]
struct Kind {
    /// None: `/rawman`, AMI text as it is.
    format: Option<Format>,
    digest: bool,
}

impl Kind {
    fn of(path: &str) -> Kind {
        let digest = path.starts_with("/a");
        let format = match path.trim_start_matches("/a").trim_start_matches('/') {
            "mxml" => Some(Format::Xml),
            "manager" => Some(Format::Html),
            _ => None,
        };
        Kind { format, digest }
    }

    fn content_type(self) -> &'static str {
        match self.format {
            None => "text/plain",
            Some(Format::Xml) => "text/xml",
            Some(Format::Html) => "text/html",
        }
    }
}

/// A response in the path's format, with Asterisk's headers and, on cookie paths, the cookie.
struct Reply<'a> {
    kind: Kind,
    status: StatusCode,
    text: &'a str,
    cookie: Option<&'a str>,
    target: XmlTarget<'a>,
}

fn render(r: Reply<'_>, state: &AppState) -> HttpResponse {
    let body = match r.kind.format {
        None => r.text.to_string(),
        Some(Format::Xml) => xml_document(&translate(r.text, Format::Xml, r.target)),
        Some(Format::Html) => html_document(&translate(r.text, Format::Html, r.target)),
    };
    let mut resp = HttpResponse::build(r.status);
    resp.content_type(r.kind.content_type())
        .insert_header(("Cache-Control", "no-cache, no-store"));
    if let Some(id) = r.cookie {
        let secure = if state.settings.http.tls_cert.is_some() {
            "; Secure"
        } else {
            ""
        };
        let max_age = state.settings.ajam.httptimeout_s;
        resp.insert_header((
            "Set-Cookie",
            format!(
                "{COOKIE}=\"{id}\"; Version=1; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}"
            ),
        ))
        .insert_header(("Pragma", "SuppressEvents"));
    }
    resp.body(body)
}

/// The session id a request's `Cookie` names, if it has the shape of one amihub issues.
fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .find(|v| is_id(v))
}

/// Why a request's parameters could not be read.
#[derive(Debug, thiserror::Error)]
enum ParamError {
    #[error("malformed parameters: {0}")]
    Malformed(String),
    #[error("a POST to AJAM must be a form (Content-Type: application/x-www-form-urlencoded)")]
    NotAForm,
    #[error("request body exceeds limits.max_client_message_bytes ({0})")]
    TooLarge(usize),
}

impl ParamError {
    fn status(&self) -> StatusCode {
        match self {
            ParamError::Malformed(_) => StatusCode::BAD_REQUEST,
            ParamError::NotAForm => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ParamError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

fn decode(text: &str) -> Result<Vec<(String, String)>, ParamError> {
    web::Query::<Vec<(String, String)>>::from_query(text)
        .map(|q| q.into_inner())
        .map_err(|e| ParamError::Malformed(e.to_string()))
}

/// The query string's parameters, then a form body's (as Asterisk merges them).
fn params(req: &HttpRequest, body: &[u8], max: usize) -> Result<Vec<(String, String)>, ParamError> {
    let mut out = decode(req.query_string())?;
    if req.method() == actix_web::http::Method::POST && !body.is_empty() {
        let media = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim);
        if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/x-www-form-urlencoded")) {
            return Err(ParamError::NotAForm);
        }
        if body.len() > max {
            return Err(ParamError::TooLarge(max));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| ParamError::Malformed("body is not UTF-8".into()))?;
        out.extend(decode(text)?);
    }
    Ok(out)
}

/// Every AJAM request.
async fn serve(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let kind = Kind::of(req.path());
    let Some(ajam) = state.ajam.clone() else {
        return HttpResponse::NotFound().finish();
    };
    let metrics = &state.metrics;
    Metrics::inc(&metrics.ajam_requests_total);
    let plain = |status: StatusCode, text: &str| {
        render(
            Reply {
                kind,
                status,
                text,
                cookie: None,
                target: XmlTarget::default(),
            },
            &state,
        )
    };
    let local = req
        .conn_data::<ConnLocal>()
        .map_or_else(|| req.app_config().local_addr(), |l| l.0);
    // CSRF: a browser page of another site may not drive a session (or a Digest login it
    // holds), whatever the method. Scripts send no Origin and no Sec-Fetch-Site.
    if cross_site(req.headers(), local, &state.settings) {
        Metrics::inc(&metrics.actions_refused_total);
        log::warn!(
            "refused {} {} from {:?}: cross-origin request (origin not allowed)",
            req.method(),
            req.path(),
            req.peer_addr().map(|a| a.ip())
        );
        let text = login::error(None, "cross-origin request refused (origin not allowed)");
        return plain(StatusCode::FORBIDDEN, &text);
    }
    let max = state.settings.limits.max_client_message_bytes;
    let request = match params(&req, &body, max).map(parse_request) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return plain(StatusCode::OK, &login::error(None, &e.to_string())),
        Err(e) => return plain(e.status(), &login::error(None, &e.to_string())),
    };
    if kind.digest {
        return digest(&req, kind, request, &ajam, &state).await;
    }
    let cookie = session_cookie(&req);
    let name = request.action.name().to_ascii_lowercase();
    let id = request.action.get("ActionID").map(str::to_string);
    let reply = |status: StatusCode, text: &str, cookie: &str| {
        render(
            Reply {
                kind,
                status,
                text,
                cookie: Some(cookie),
                target: target(&request),
            },
            &state,
        )
    };
    if name == "login" {
        let (status, text, key) = log_in(&req, &request, cookie, &ajam, &state).await;
        return reply(status, &text, &key);
    }
    let session = match cookie {
        Some(key) => ajam
            .directory
            .send(Lookup { key: key.clone() })
            .await
            .ok()
            .flatten()
            .map(|addr| (key, addr)),
        None => None,
    };
    if let Some((key, addr)) = session {
        if let Some(answer) = run(&addr, request.clone(), &state).await {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
            return reply(status, &answer.text, &key);
        }
    }
    // No session: Asterisk's words to a client that has not logged in, and, as Asterisk, a
    // cookie — a fresh random one that amihub does not store: nothing is kept for strangers.
    let text = if name == "challenge" {
        login::error(
            id.as_deref(),
            "MD5 challenge login needs a connection: over HTTP log in with username and \
             secret, or use HTTP Digest on /arawman, /amxml, /amanager",
        )
    } else {
        let packet = Packet::from_headers(request.action.headers());
        match PreLogin::default().on_packet(&packet, String::new) {
            Step::Reply(text) | Step::Goodbye(text) => text,
            Step::Check { .. } | Step::Fail => login::error(id.as_deref(), login::DENIED),
        }
    };
    reply(StatusCode::OK, &text, &new_id())
}

/// The XML response's `id` and element (`ajaxdest`, `ajaxobjtype`).
fn target(r: &AjamRequest) -> XmlTarget<'_> {
    let d = XmlTarget::default();
    XmlTarget {
        dest: r.dest.as_deref().unwrap_or(d.dest),
        objtype: r.objtype.as_deref().unwrap_or(d.objtype),
    }
}

/// Hands a request to a session and waits for its answer; None if the session is gone.
async fn run(
    addr: &actix::Addr<AjamSession>,
    request: AjamRequest,
    state: &AppState,
) -> Option<Answer> {
    let (tx, rx) = oneshot::channel();
    addr.send(Run { request, reply: tx }).await.ok()?;
    let limits = &state.settings.limits;
    let patience =
        Duration::from_secs(limits.action_timeout_s + state.settings.ajam.httptimeout_s + 5);
    match tokio::time::timeout(patience, rx).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(_)) => Some(Answer {
            text: login::error(None, "the HTTP manager session ended").to_string(),
            status: 200,
        }),
        Err(_) => Some(Answer {
            text: login::error(None, "timeout waiting for the PBX").to_string(),
            status: 504,
        }),
    }
}

/// `action=Login`: checked as the AMI listener checks it (the user's password or token,
/// argon2 on the shared pool, failures counted per address with HTTP's and AMI's); a good one
/// starts a session with a new id, a bad one waits as the AMI listener does.
async fn log_in(
    req: &HttpRequest,
    request: &AjamRequest,
    cookie: Option<String>,
    ajam: &super::Ajam,
    state: &AppState,
) -> (StatusCode, String, String) {
    let action = &request.action;
    let id = action.get("ActionID");
    let user = action.get("Username").unwrap_or("").to_string();
    let secret = action.get("Secret").unwrap_or("").to_string();
    let auth = state.auth();
    let peer = req.peer_addr().map(|a| a.ip());
    let client = client_ip(req.headers(), peer);
    let blocked = !auth.is_open()
        && client
            .and_then(|c| state.failures.blocked(c, Instant::now()))
            .is_some();
    let result = match peer {
        Some(peer) if !blocked && !user.is_empty() => {
            let credentials = Credentials::Secret {
                user: user.clone(),
                secret,
            };
            auth.ami_login(&credentials, peer, &state.passwords).await
        }
        _ => Err(AuthError::Invalid),
    };
    let metrics = &state.metrics;
    match result {
        Ok(u) => {
            let create = Create {
                user: u,
                events: action.get("Events").map(str::to_string),
                replaces: cookie,
            };
            match ajam.directory.send(create).await {
                Ok(Ok((key, session))) => {
                    let _ = session.send(Joined).await;
                    Metrics::inc(&metrics.ajam_logins_total);
                    log::info!("ajam: {user} logged in from {peer:?}");
                    (StatusCode::OK, login::accepted(id).to_string(), key)
                }
                Ok(Err(e)) => {
                    log::warn!("ajam: login of {user} refused: {e}");
                    let text = login::error(id, &e.to_string()).to_string();
                    (StatusCode::SERVICE_UNAVAILABLE, text, new_id())
                }
                Err(_) => {
                    let text = login::error(id, "HTTP manager unavailable").to_string();
                    (StatusCode::SERVICE_UNAVAILABLE, text, new_id())
                }
            }
        }
        Err(e) => {
            if e.is_failure() && !blocked {
                if let Some(c) = client {
                    state.failures.failed(c, Instant::now());
                }
            }
            Metrics::inc(&metrics.ajam_login_failures_total);
            Metrics::inc(&metrics.auth_failures_total);
            log::warn!("ajam: login failed for user {user:?} from {client:?}: {e}");
            tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
            (
                StatusCode::OK,
                login::error(id, login::FAILED).to_string(),
                new_id(),
            )
        }
    }
}

/// `/arawman`, `/amxml`, `/amanager`: HTTP Digest on this request, then a session that lives
/// for this request only (a `WaitEvent` there sees what happens while it waits).
async fn digest(
    req: &HttpRequest,
    kind: Kind,
    request: AjamRequest,
    ajam: &super::Ajam,
    state: &AppState,
) -> HttpResponse {
    let auth = state.auth();
    let metrics = &state.metrics;
    let client = client_ip(req.headers(), req.peer_addr().map(|a| a.ip()));
    let challenge = |stale: bool| {
        HttpResponse::Unauthorized()
            .content_type("text/html")
            .insert_header(("Cache-Control", "no-cache, no-store"))
            .insert_header(("WWW-Authenticate", auth.ajam_challenge(stale)))
            .body(UNAUTHORIZED_PAGE)
    };
    let params = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("digest"))
        .map(|(_, p)| p.to_string());
    let Some(params) = params else {
        return challenge(false);
    };
    if let Some(wait) = client.and_then(|c| state.failures.blocked(c, Instant::now())) {
        Metrics::inc(&metrics.auth_failures_total);
        let e = AuthError::TooManyFailures(wait.as_secs().max(1));
        return HttpResponse::TooManyRequests()
            .content_type(kind.content_type())
            .insert_header(("Retry-After", wait.as_secs().max(1).to_string()))
            .body(login::error(None, &e.to_string()).to_string());
    }
    let uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let user = match auth.ajam_digest(req.method().as_str(), uri, &params) {
        Ok(user) => user,
        Err(e) => {
            if e.is_failure() {
                if let Some(c) = client {
                    state.failures.failed(c, Instant::now());
                }
            }
            Metrics::inc(&metrics.ajam_login_failures_total);
            Metrics::inc(&metrics.auth_failures_total);
            log::warn!("ajam: Digest refused from {client:?}: {e}");
            return challenge(e == AuthError::Digest(DigestError::Stale));
        }
    };
    Metrics::inc(&metrics.ajam_logins_total);
    let waits = request.action.name().eq_ignore_ascii_case("waitevent");
    let events = if waits { "on" } else { "off" };
    let reply = |status: StatusCode, text: &str| {
        render(
            Reply {
                kind,
                status,
                text,
                cookie: None,
                target: target(&request),
            },
            state,
        )
    };
    let addr = match session::start(&ajam.shared, user, Some(events), None) {
        Ok(addr) => addr,
        Err(e) => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &login::error(None, &e.to_string()),
            )
        }
    };
    let answer = run(&addr, request.clone(), state).await;
    addr.do_send(End);
    match answer {
        Some(a) => reply(
            StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK),
            &a.text,
        ),
        None => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &login::error(None, "HTTP manager unavailable"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_format_and_authentication() {
        let k = Kind::of("/rawman");
        assert!(k.format.is_none() && !k.digest);
        let k = Kind::of("/amxml");
        assert!(k.format == Some(Format::Xml) && k.digest);
        let k = Kind::of("/manager");
        assert!(k.format == Some(Format::Html) && !k.digest);
        let k = Kind::of("/amanager");
        assert!(k.format == Some(Format::Html) && k.digest);
        assert_eq!(Kind::of("/arawman").content_type(), "text/plain");
    }
}
