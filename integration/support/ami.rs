//! A raw AMI client for the AMI listener scenarios: bytes in, packets out, exactly as sent.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Amihub, PATIENCE};

/// One AMI connection to amihub's listener.
pub struct AmiClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The first line amihub sent, with its CRLF.
    pub banner: String,
}

/// How a read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum AmiRead {
    Packet(String),
    Closed,
    Timeout,
}

impl AmiClient {
    /// Connects and reads the banner line.
    pub async fn connect(addr: SocketAddr) -> AmiClient {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the AMI listener");
        AmiClient::over(stream).await
    }

    /// Connects from the loopback address `from` (e.g. 127.0.0.2) and reads the banner line.
    pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> AmiClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind the client socket");
        let stream = socket
            .connect(addr)
            .await
            .expect("connect to the AMI listener");
        AmiClient::over(stream).await
    }

    async fn over(stream: TcpStream) -> AmiClient {
        let mut c = AmiClient {
            stream,
            buf: Vec::new(),
            banner: String::new(),
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !c.buf.windows(2).any(|w| w == b"\r\n") {
            assert!(c.fill(deadline).await, "no banner");
        }
        let end = c.buf.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
        c.banner = String::from_utf8_lossy(&c.buf[..end]).into_owned();
        c.buf.drain(..end);
        c
    }

    async fn fill(&mut self, deadline: tokio::time::Instant) -> bool {
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.stream
            .write_all(text.as_bytes())
            .await
            .expect("write to the AMI listener");
    }

    /// The next packet (with its blank line), the end of the stream, or a timeout.
    pub async fn read(&mut self, patience: Duration) -> AmiRead {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let packet: Vec<u8> = self.buf.drain(..end + 4).collect();
                return AmiRead::Packet(String::from_utf8_lossy(&packet).into_owned());
            }
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return AmiRead::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return AmiRead::Timeout,
            }
        }
    }

    /// Raw bytes up to and including `needle` (for the xml, csv and json output formats).
    pub async fn text_until(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let n = needle.as_bytes();
            if let Some(end) = self.buf.windows(n.len()).position(|w| w == n) {
                let text: Vec<u8> = self.buf.drain(..end + n.len()).collect();
                return String::from_utf8_lossy(&text).into_owned();
            }
            let got = String::from_utf8_lossy(&self.buf).into_owned();
            assert!(self.fill(deadline).await, "no {needle:?} after {got:?}");
        }
    }

    /// The next packet; panics if the connection ends first or nothing comes.
    pub async fn packet(&mut self) -> String {
        match self.read(PATIENCE).await {
            AmiRead::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Skips packets until one satisfies `pred`; returns it and everything skipped.
    pub async fn packet_where(&mut self, pred: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let mut skipped = Vec::new();
        loop {
            let p = self.packet().await;
            if pred(&p) {
                return (p, skipped);
            }
            skipped.push(p);
        }
    }

    /// True when amihub closes the connection (after any packets still in flight).
    pub async fn closed(&mut self) -> bool {
        loop {
            match self.read(PATIENCE).await {
                AmiRead::Closed => return true,
                AmiRead::Timeout => return false,
                AmiRead::Packet(_) => {}
            }
        }
    }

    /// Logs in with a secret; panics unless accepted.
    pub async fn login(&mut self, user: &str, secret: &str, events: &str) {
        self.send(&format!(
            "Action: Login\r\nActionID: login\r\nUsername: {user}\r\nSecret: {secret}\r\nEvents: {events}\r\n\r\n"
        ))
        .await;
        let reply = self.packet().await;
        assert_eq!(
            reply,
            "Response: Success\r\nActionID: login\r\nMessage: Authentication accepted\r\n\r\n"
        );
    }
}

/// The value of header `name` in a packet's text.
pub fn header<'a>(packet: &'a str, name: &str) -> Option<&'a str> {
    packet.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name)
            .then(|| v.strip_prefix(' ').unwrap_or(v))
    })
}

impl Amihub {
    /// The AMI listener's address, from its start-up log line.
    pub fn ami_addr(&self) -> SocketAddr {
        let line = self
            .lines()
            .into_iter()
            .find(|l| l.contains("AMI listener on"))
            .expect("AMI listener log line");
        let rest = line.split("://").nth(1).expect("address");
        rest.split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .expect("AMI listener address")
    }
}
