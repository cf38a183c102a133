//! Builds the HTTP server on an already-bound listener: plain or TLS (openssl), each connection
//! wrapped in a [`Conn`] (so a WebSocket writes beside the dispatcher), with its socket recorded
//! so a stalled WebSocket can be shut down. Knows no routes: those are [`configure`]'s.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use actix_http::{error::DispatchError, HttpService, Protocol};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_tls::accept::openssl::{Acceptor, TlsStream};
use actix_tls::accept::TlsError;
use actix_web::dev::{AppConfig, Extensions, Server};
use actix_web::rt::net::TcpStream;
use actix_web::App;
use openssl::ssl::{AlpnError, SslAcceptor, SslFiletype, SslMethod};
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::Conn;
use super::{configure, AppState, ConnLocal, ConnSocket};

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("TLS setup ({file}): {message}")]
    Tls { file: String, message: String },
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// The TCP socket under a connection, plain or TLS.
pub trait TcpSocket {
    fn tcp(&self) -> &TcpStream;
}

impl TcpSocket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl TcpSocket for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref()
    }
}

/// A connection just accepted (after its TLS handshake, if any), as actix-http takes it.
fn accepted<S: TcpSocket>(io: S) -> (Conn<S>, Protocol, Option<SocketAddr>) {
    // Small frames must leave at once, not wait for the client's delayed ACK (Nagle).
    let _ = io.tcp().set_nodelay(true);
    let peer = io.tcp().peer_addr().ok();
    (Conn::new(io), Protocol::Http1, peer)
}

/// Records on each new connection its raw socket, local address and side queue (what the
/// WebSocket handler needs from the connection).
fn record_conn<S: TcpSocket>(conn: &Conn<S>, ext: &mut Extensions) {
    let tcp = conn.get_ref().tcp();
    ext.insert(ConnSocket(tcp.as_raw_fd()));
    if let Ok(local) = tcp.local_addr() {
        ext.insert(ConnLocal(local));
    }
    ext.insert(conn.side_queue());
}

/// Starts serving on `listener`; the returned server runs until stopped through its handle.
///
/// Built from actix-server and actix-http directly rather than `HttpServer`, so the connection
/// can be wrapped ([`Conn`]) and a WebSocket session write beside the dispatcher.
pub fn serve(state: AppState, listener: std::net::TcpListener) -> Result<Server, ListenError> {
    let http = state.settings.http.clone();
    let workers = if http.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        http.workers
    };
    let max_conn = state.settings.limits.max_sessions + 1024;
    let tls = match (&http.tls_cert, &http.tls_key) {
        (Some(cert), Some(key)) => Some(with_http11_alpn(tls_acceptor(cert, key)?)?),
        _ => None,
    };
    let write_buffer = http.write_buffer_bytes;
    let builder = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(max_conn)
        .backlog(4096)
        .disable_signals()
        .shutdown_timeout(5);
    let builder = match tls {
        None => builder.listen("amihub-http", listener, move || {
            fn_service(|io: TcpStream| async move { Ok::<_, DispatchError>(accepted(io)) })
                .and_then(http_service(state.clone(), write_buffer))
        })?,
        Some(acceptor) => builder.listen("amihub-https", listener, move || {
            Acceptor::new(acceptor.clone())
                .map_init_err(|_| ())
                .map_err(TlsError::into_service_error)
                .map(accepted::<TlsStream<TcpStream>>)
                .and_then(http_service(state.clone(), write_buffer).map_err(TlsError::Service))
        })?,
    };
    Ok(builder.run())
}

/// Offers HTTP/1.1 only over ALPN (no HTTP/2: the WebSocket needs HTTP/1.1), as actix-web's
/// own listener did.
fn with_http11_alpn(mut b: openssl::ssl::SslAcceptorBuilder) -> Result<SslAcceptor, ListenError> {
    const H11: &[u8] = b"\x08http/1.1";
    b.set_alpn_select_callback(|_, offered| {
        if offered.windows(H11.len()).any(|w| w == H11) {
            Ok(b"http/1.1")
        } else {
            Err(AlpnError::NOACK)
        }
    });
    b.set_alpn_protos(H11).map_err(|e| ListenError::Tls {
        file: "ALPN".into(),
        message: e.to_string(),
    })?;
    Ok(b.build())
}

/// The App (routes behind the auth and origin gate) served over HTTP/1.1 on connections of `S`.
fn http_service<S>(
    state: AppState,
    write_buffer: usize,
) -> impl ServiceFactory<
    (Conn<S>, Protocol, Option<SocketAddr>),
    Config = (),
    Response = (),
    Error = DispatchError,
    InitError = (),
>
where
    S: TcpSocket + AsyncRead + AsyncWrite + Unpin + 'static,
{
    let app = App::new()
        .configure(configure(state))
        .wrap(actix_web::middleware::from_fn(super::gate))
        .into_factory()
        .map_err(|e: actix_web::Error| e.error_response());
    HttpService::build()
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
        .h1_write_buffer_size(write_buffer)
        .on_connect_ext(record_conn::<S>)
        .finish(map_config(app, |_| AppConfig::default()))
}

/// What `HttpServer` sets by default: a client has 5 s to send its request head, and 1 s to
/// close after the response before the connection is dropped.
const CLIENT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const CLIENT_DISCONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A TLS acceptor (Mozilla's intermediate profile) for a PEM certificate chain and key; the
/// HTTP listener and the AMI listener share it.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<openssl::ssl::SslAcceptorBuilder, ListenError> {
    let tls_err = |file: &std::path::Path, e: openssl::error::ErrorStack| ListenError::Tls {
        file: file.display().to_string(),
        message: e.to_string(),
    };
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| tls_err(cert, e))?;
    b.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| tls_err(key, e))?;
    b.set_certificate_chain_file(cert)
        .map_err(|e| tls_err(cert, e))?;
    Ok(b)
}
