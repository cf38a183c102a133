//! Opening the byte stream to a PBX: TCP, optionally TLS (openssl, verifying certificates).

use std::pin::Pin;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::ServerSettings;

/// A connected AMI byte stream, plain or TLS.
pub trait AmiIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AmiIo for T {}

/// Why a connection to a PBX could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum PbxError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connect to {addr}: timed out after {ms} ms")]
    Timeout { addr: String, ms: u64 },
    #[error("TLS to {addr}: {message}")]
    Tls { addr: String, message: String },
    #[error("server {server_id} is not connected")]
    NotConnected { server_id: u32 },
    #[error("server {server_id}: send queue full (PBX not reading)")]
    QueueFull { server_id: u32 },
    #[error("server {server_id}: {message}")]
    Cluster { server_id: u32, message: String },
    #[error("invalid action: {0}")]
    Action(#[from] crate::ami::ActionError),
}

/// Builds the TLS connector once per server (CA file and verification from the settings).
pub fn tls_connector(s: &ServerSettings) -> Result<Option<SslConnector>, PbxError> {
    if !s.tls {
        return Ok(None);
    }
    let tls_err = |e: openssl::error::ErrorStack| PbxError::Tls {
        addr: format!("{}:{}", s.host, s.port),
        message: e.to_string(),
    };
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(tls_err)?;
    if let Some(ca) = &s.tls_ca {
        b.set_ca_file(ca).map_err(tls_err)?;
    }
    b.set_verify(if s.tls_verify {
        SslVerifyMode::PEER
    } else {
        SslVerifyMode::NONE
    });
    Ok(Some(b.build()))
}

/// Opens TCP (and TLS when configured) within `timeout`.
pub async fn open(
    host: String,
    port: u16,
    tls: Option<SslConnector>,
    verify_host: bool,
    timeout: Duration,
) -> Result<Box<dyn AmiIo>, PbxError> {
    let addr = format!("{host}:{port}");
    let ms = timeout.as_millis() as u64;
    let fut = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|source| PbxError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let Some(connector) = tls else {
            return Ok(Box::new(tcp) as Box<dyn AmiIo>);
        };
        let tls_err = |message: String| PbxError::Tls {
            addr: addr.clone(),
            message,
        };
        let mut cfg = connector.configure().map_err(|e| tls_err(e.to_string()))?;
        cfg.set_verify_hostname(verify_host);
        let ssl = cfg.into_ssl(&host).map_err(|e| tls_err(e.to_string()))?;
        let mut stream =
            tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| tls_err(e.to_string()))?;
        Pin::new(&mut stream)
            .connect()
            .await
            .map_err(|e| tls_err(e.to_string()))?;
        Ok(Box::new(stream) as Box<dyn AmiIo>)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(PbxError::Timeout { addr, ms }),
    }
}
