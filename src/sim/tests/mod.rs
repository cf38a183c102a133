//! Scenarios against a real simulator over loopback, read back with the `ami` decoder:
//! `session` covers logins, errors and the connection controls; `traffic` the simulated state,
//! events and floods.

mod session;
mod traffic;

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use super::{SimConfig, SimPbx};
use crate::ami::{AmiDecoder, Frame, Limits, Packet};

/// Patience for anything the simulator should do promptly.
pub(super) const PATIENCE: Duration = Duration::from_secs(5);

pub(super) struct Client {
    pub(super) rd: FramedRead<OwnedReadHalf, AmiDecoder>,
    wr: OwnedWriteHalf,
}

impl Client {
    pub(super) async fn connect(pbx: &SimPbx) -> Client {
        let stream = TcpStream::connect(pbx.addr()).await.expect("connect");
        let (rd, wr) = stream.into_split();
        let mut c = Client {
            rd: FramedRead::new(rd, AmiDecoder::new(Limits::default(), true)),
            wr,
        };
        match c.frame().await {
            Some(Frame::Banner(b)) => assert_eq!(b, "Asterisk Call Manager/11.0.0"),
            other => panic!("expected a banner, got {other:?}"),
        }
        c
    }

    pub(super) async fn frame(&mut self) -> Option<Frame> {
        match tokio::time::timeout(PATIENCE, self.rd.next()).await {
            Ok(f) => f.map(|r| r.expect("read")),
            Err(_) => panic!("nothing from the simulator within {PATIENCE:?}"),
        }
    }

    /// The next packet; `None` once the simulator closed the connection.
    pub(super) async fn next(&mut self) -> Option<Packet> {
        match self.frame().await? {
            Frame::Packet(p) => Some(p),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub(super) async fn packet(&mut self) -> Packet {
        self.next().await.expect("connection closed")
    }

    /// Skips packets until one has `name: value`.
    pub(super) async fn until(&mut self, name: &str, value: &str) -> Packet {
        loop {
            let p = self.packet().await;
            if p.get(name) == Some(value) {
                return p;
            }
        }
    }

    pub(super) async fn send(&mut self, headers: &[(&str, &str)]) {
        let mut text = String::new();
        for (n, v) in headers {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        text.push_str("\r\n");
        self.wr.write_all(text.as_bytes()).await.expect("write");
    }

    pub(super) async fn login(&mut self, events: &str) {
        self.send(&[
            ("Action", "Login"),
            ("ActionID", "l1"),
            ("Username", "admin"),
            ("Secret", "amp111"),
            ("Events", events),
        ])
        .await;
        let p = self.packet().await;
        assert_eq!(p.get("Message"), Some("Authentication accepted"), "{p:?}");
    }
}

pub(super) fn headers(p: &Packet) -> Vec<(&str, &str)> {
    p.headers().collect()
}

pub(super) async fn pbx(demo: bool) -> SimPbx {
    let cfg = SimConfig {
        demo_traffic: demo,
        demo_interval_ms: 100,
        ..SimConfig::default()
    };
    SimPbx::start("127.0.0.1:0", cfg).await.expect("start")
}

/// Reads an EventList answer: the start response, then items up to the `complete` event.
pub(super) async fn read_list(c: &mut Client, aid: &str, complete: &str) -> (Vec<Packet>, Packet) {
    let start = c.until("ActionID", aid).await;
    assert_eq!(start.get("EventList"), Some("start"), "{start:?}");
    let mut items = Vec::new();
    loop {
        let p = c.packet().await;
        if p.action_id() != Some(aid) {
            continue; // a live event interleaved
        }
        if p.event() == Some(complete) {
            assert_eq!(p.get("EventList"), Some("Complete"));
            assert_eq!(p.get("ListItems"), Some(items.len().to_string().as_str()));
            return (items, p);
        }
        items.push(p);
    }
}
