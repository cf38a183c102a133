//! Builds the HTTP server on an already-bound listener: plain or TLS (openssl), with the
//! connection's socket recorded so a stalled WebSocket can be shut down.

use std::any::Any;
use std::os::fd::AsRawFd;

use actix_web::dev::{Extensions, Server};
use actix_web::{App, HttpServer};
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

use super::{configure, AppState, ConnLocal, ConnSocket};

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("TLS setup ({file}): {message}")]
    Tls { file: String, message: String },
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

fn record_socket(conn: &dyn Any, ext: &mut Extensions) {
    let tcp = conn.downcast_ref::<actix_web::rt::net::TcpStream>().or_else(|| {
        conn.downcast_ref::<actix_tls::accept::openssl::TlsStream<actix_web::rt::net::TcpStream>>()
            .map(|tls| tls.get_ref())
    });
    if let Some(tcp) = tcp {
        ext.insert(ConnSocket(tcp.as_raw_fd()));
        if let Ok(local) = tcp.local_addr() {
            ext.insert(ConnLocal(local));
        }
    }
}

/// Starts serving on `listener`; the returned server runs until stopped through its handle.
pub fn serve(state: AppState, listener: std::net::TcpListener) -> Result<Server, ListenError> {
    let http = state.settings.http.clone();
    let workers = if http.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        http.workers
    };
    let max_conn = state.settings.limits.max_sessions + 1024;
    let server = HttpServer::new(move || {
        App::new()
            .configure(configure(state.clone()))
            .wrap(actix_web::middleware::from_fn(super::gate))
    })
    .workers(workers)
    .max_connections(max_conn)
    .backlog(4096)
    .h1_write_buffer_size(http.write_buffer_bytes)
    // Small frames must leave at once, not wait for the client's delayed ACK (Nagle).
    .tcp_nodelay(true)
    .disable_signals()
    .shutdown_timeout(5)
    .on_connect(record_socket);
    let server = match (&http.tls_cert, &http.tls_key) {
        (Some(cert), Some(key)) => server.listen_openssl(listener, tls_acceptor(cert, key)?)?,
        _ => server.listen(listener)?,
    };
    Ok(server.run())
}

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
