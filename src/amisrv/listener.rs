//! Accepts AMI client connections (plain TCP or TLS) on the `[ami_listener]` address, sends the
//! banner, and starts one [`AmiSession`] with its socket writer per connection, within
//! `max_sessions`.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use openssl::ssl::{Ssl, SslAcceptor};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::session::{next_id, AmiSession, Shared, WriterDone};
use super::writer::{self, Out};
use crate::ami::AmiDecoder;
use crate::http::listener::{tls_acceptor, ListenError};
use crate::metrics::Metrics;
use crate::registry::session::{SessionIo, SessionSlot};

/// A client connection, plain or TLS.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// The bound listener, ready to run on an arbiter.
pub struct AmiListener {
    listener: std::net::TcpListener,
    tls: Option<Arc<SslAcceptor>>,
    shared: Arc<Shared>,
}

impl AmiListener {
    /// Binds `[ami_listener] listen` and loads its certificate; errors name the key.
    pub fn bind(shared: Shared) -> Result<Option<AmiListener>, ListenError> {
        let Some(listen) = shared.settings.listen.clone() else {
            return Ok(None);
        };
        let tls = match (&shared.settings.tls_cert, &shared.settings.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(tls_acceptor(cert, key)?.build())),
            _ => None,
        };
        let listener = std::net::TcpListener::bind(&listen)?;
        listener.set_nonblocking(true)?;
        Ok(Some(AmiListener {
            listener,
            tls,
            shared: Arc::new(shared),
        }))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Accepts until the arbiter stops.
    pub async fn run(self) {
        let listener = match tokio::net::TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                log::error!("ami listener: {e}");
                return;
            }
        };
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("ami listener: accept: {e}");
                    actix::clock::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (shared, tls) = (self.shared.clone(), self.tls.clone());
            actix::spawn(async move { accept(tcp, peer, tls, shared).await });
        }
    }
}

async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<SslAcceptor>>,
    shared: Arc<Shared>,
) {
    let max = shared.settings.max_sessions;
    let Some(slot) = SessionSlot::acquire(&shared.metrics, |m| &m.ami_sessions, max) else {
        Metrics::inc(&shared.metrics.ami_refused_sessions_total);
        log::warn!("ami listener: refused {peer}: max_sessions ({max}) reached");
        return;
    };
    let _ = tcp.set_nodelay(true);
    let conn: Box<dyn Conn> = match tls {
        None => Box::new(tcp),
        Some(acceptor) => {
            let handshake = async {
                let ssl = Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
                let mut stream =
                    tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
                std::pin::Pin::new(&mut stream)
                    .accept()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(stream)
            };
            let timeout = std::time::Duration::from_secs(10);
            match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(e)) => {
                    log::info!("ami listener: TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => {
                    log::info!("ami listener: TLS handshake with {peer} timed out");
                    return;
                }
            }
        }
    };
    let (read, write) = tokio::io::split(conn);
    let io = SessionIo::new(None, Some(slot));
    let (tx, rx) = mpsc::unbounded_channel();
    let banner = ByteString::from(format!("{}\r\n", shared.settings.banner));
    io.add_queued(banner.len());
    let _ = tx.send(Out {
        frames: Arc::from(vec![banner]),
        newline: false,
    });
    let id = next_id(&shared);
    log::debug!("ami session {id}: connection from {peer}");
    let decoder = AmiDecoder::new(shared.codec, false);
    let session_io = io.clone();
    let addr = AmiSession::create(move |ctx| {
        ctx.add_stream(FramedRead::new(read, decoder));
        AmiSession::new(id, peer, shared, session_io, tx)
    });
    let end = writer::run(write, rx, io).await;
    addr.do_send(WriterDone(end));
}
