//! A minimal, cheap WebSocket client for load: a raw HTTP upgrade, then unmasked server frames
//! parsed straight out of one read buffer. For each text frame only `"Seq":"` and `"SentNs":"`
//! are located (memchr's memmem), never a full JSON parse, so the tool is not the bottleneck.
//!
//! Roles: `Busy` reads everything and records sequence gaps and latency until it has seen the
//! final Seq; `Idle` reads (and answers pings) until stopped; `Stalled` reads its first frame,
//! then nothing until the flood is over or amihub logged cuts for every stalled client, and then
//! reads to the end of the stream to learn how it was closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use memchr::memmem::Finder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::hist::Hist;

/// State shared by all clients of one scenario and its controller.
pub struct Shared {
    /// The final Seq of the flood once known (0 = not yet).
    pub target: AtomicU64,
    /// Highest Seq any client has seen.
    pub max_seq: AtomicU64,
    /// Busy clients that reached the final Seq or whose stream ended.
    pub finished: AtomicUsize,
    /// Clients that completed the upgrade and got their first frame (joined the registry).
    pub joined: AtomicUsize,
    /// The flood has ended: stalled clients start reading.
    pub flood_over: AtomicBool,
    /// "slow consumer" cuts amihub has logged so far.
    pub cuts_logged: Arc<AtomicU64>,
    /// Stalled clients in the scenario (they resume once this many cuts are logged).
    pub stalled: u64,
    /// Cancelled once `target` is set, to wake busy clients that already have everything.
    pub target_set: CancellationToken,
    /// Ends every client loop (the scenario's deadline or its end).
    pub stop: CancellationToken,
}

impl Shared {
    pub fn new(cuts_logged: Arc<AtomicU64>, stalled: u64) -> Shared {
        Shared {
            target: AtomicU64::new(0),
            max_seq: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            joined: AtomicUsize::new(0),
            flood_over: AtomicBool::new(false),
            cuts_logged,
            stalled,
            target_set: CancellationToken::new(),
            stop: CancellationToken::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Busy,
    Idle,
    Stalled,
}

/// How a client's stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Stopped by the controller (deadline or end of the scenario).
    Stopped,
    /// Saw the final Seq.
    ReachedTarget,
    /// A close frame from the server.
    Closed(u16, String),
    /// End of stream without a close frame.
    Eof,
    Error(String),
}

pub struct Report {
    pub role: Role,
    pub joined: bool,
    pub ending: Ending,
    /// Flood frames received (with a Seq).
    pub received: u64,
    /// Payload bytes of those frames.
    pub received_bytes: u64,
    /// Flood frames whose Seq was above every earlier one.
    pub distinct: u64,
    pub last_seq: u64,
    /// Flood frames whose Seq was not above the last one (duplicates or reordering).
    pub out_of_order: u64,
    /// Text frames without a Seq (statuses and the like).
    pub other_frames: u64,
    pub first_recv: Option<Instant>,
    pub last_recv: Option<Instant>,
    /// Latency from SentNs to receipt, microseconds (busy clients only).
    pub hist: Option<Hist>,
    /// When the stream ended (close frame, EOF, error or final Seq).
    pub ended_at: Option<Instant>,
    /// Bytes read after a stalled client resumed reading.
    pub bytes_after_resume: u64,
}

impl Report {
    fn new(role: Role) -> Report {
        Report {
            role,
            joined: false,
            ending: Ending::Stopped,
            received: 0,
            received_bytes: 0,
            distinct: 0,
            last_seq: 0,
            out_of_order: 0,
            other_frames: 0,
            first_recv: None,
            last_recv: None,
            hist: (role == Role::Busy).then(Hist::new),
            ended_at: None,
            bytes_after_resume: 0,
        }
    }

    /// The stream was ended by the server (close frame, EOF or error) rather than by us.
    pub fn ended_by_server(&self) -> bool {
        matches!(
            self.ending,
            Ending::Closed(..) | Ending::Eof | Ending::Error(_)
        )
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Free buffer space kept for each read by busy clients.
const BUSY_READ: usize = 64 * 1024;
const IDLE_READ: usize = 2 * 1024;

/// Connects, joins, then plays `role` until stopped; never panics.
/// `permit` (a slot of the connect gate) is released once joined or failed.
pub async fn run(
    addr: SocketAddr,
    role: Role,
    rcvbuf: u32,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) -> Report {
    let mut report = Report::new(role);
    let conn = tokio::select! {
        _ = shared.stop.cancelled() => return report,
        c = tokio::time::timeout(CONNECT_TIMEOUT, Conn::open(addr, rcvbuf, role)) => c,
    };
    let mut conn = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            report.ending = Ending::Error(format!("connect: {e}"));
            return report;
        }
        Err(_) => {
            report.ending = Ending::Error("connect: timeout".into());
            return report;
        }
    };
    // Joined once the registry has sent the current server statuses.
    let joined = tokio::select! {
        _ = shared.stop.cancelled() => return report,
        r = tokio::time::timeout(CONNECT_TIMEOUT, conn.join(&mut report, &shared)) => r,
    };
    match joined {
        Ok(None) => {}
        Ok(Some(ending)) => {
            report.ending = ending;
            return report;
        }
        Err(_) => {
            report.ending = Ending::Error("no first frame within 15 s".into());
            return report;
        }
    }
    report.joined = true;
    shared.joined.fetch_add(1, Relaxed);
    drop(permit);

    if role == Role::Stalled {
        // Read nothing until the flood is over or every stalled client has been cut.
        loop {
            if shared.flood_over.load(Relaxed) || shared.cuts_logged.load(Relaxed) >= shared.stalled
            {
                break;
            }
            tokio::select! {
                _ = shared.stop.cancelled() => return report,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
    report.ending = tokio::select! {
        _ = shared.stop.cancelled() => Ending::Stopped,
        e = async { loop { if let Some(e) = conn.pump(&mut report, &shared, false).await { return e } } } => e,
    };
    report.ended_at = Some(Instant::now());
    if role == Role::Busy {
        shared.finished.fetch_add(1, Relaxed);
    }
    report
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// A fragmented message being reassembled.
    frag: Vec<u8>,
    frag_text: bool,
    read_size: usize,
    seq: Finder<'static>,
    sent: Finder<'static>,
}

impl Conn {
    async fn open(addr: SocketAddr, rcvbuf: u32, role: Role) -> std::io::Result<Conn> {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if rcvbuf > 0 {
            sock.set_recv_buffer_size(rcvbuf)?;
        }
        let mut stream = sock.connect(addr).await?;
        stream.set_nodelay(true)?;
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let read_size = if role == Role::Busy {
            BUSY_READ
        } else {
            IDLE_READ
        };
        let mut buf = BytesMut::with_capacity(read_size);
        let end = loop {
            if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err(std::io::Error::other("upgrade response too long"));
            }
            buf.reserve(1024);
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(std::io::Error::other("closed during upgrade"));
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            let line = head.lines().next().unwrap_or("").to_string();
            return Err(std::io::Error::other(format!("upgrade refused: {line}")));
        }
        buf.advance(end);
        if role != Role::Busy {
            // Keep idle connections small.
            buf = BytesMut::from(&buf[..]);
        }
        Ok(Conn {
            stream,
            buf,
            frag: Vec::new(),
            frag_text: false,
            read_size,
            seq: Finder::new(b"\"Seq\":\"").into_owned(),
            sent: Finder::new(b"\"SentNs\":\"").into_owned(),
        })
    }

    /// Reads until the first text frame (the server statuses sent on joining).
    async fn join(&mut self, r: &mut Report, shared: &Shared) -> Option<Ending> {
        loop {
            if let Some(e) = self.pump(r, shared, true).await {
                return Some(e);
            }
            if r.other_frames + r.received > 0 {
                return None;
            }
        }
    }

    /// Handles the frames buffered, then reads once. Returns `Some` when the stream is over for
    /// this client; with `first`, also returns `None` as soon as one text frame was seen.
    async fn pump(&mut self, r: &mut Report, shared: &Shared, first: bool) -> Option<Ending> {
        let others_before = r.other_frames + r.received;
        let (now_ns, now) = (unix_ns(), Instant::now());
        let mut pongs: Vec<Vec<u8>> = Vec::new();
        while let Some((op, fin, hdr, len, mask)) = header(&self.buf) {
            if len > 64 * 1024 * 1024 {
                return Some(Ending::Error(format!("frame of {len} bytes")));
            }
            if self.buf.len() < hdr + len {
                self.buf.reserve(hdr + len - self.buf.len());
                break;
            }
            let payload = &mut self.buf[hdr..hdr + len];
            if let Some(m) = mask {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= m[i % 4];
                }
            }
            match op {
                0x1 if fin => on_text(self, hdr, len, r, now_ns, now),
                0x1 | 0x2 => {
                    self.frag.clear();
                    self.frag.extend_from_slice(&self.buf[hdr..hdr + len]);
                    self.frag_text = op == 0x1;
                }
                0x0 => {
                    self.frag.extend_from_slice(&self.buf[hdr..hdr + len]);
                    if fin && self.frag_text {
                        let text = std::mem::take(&mut self.frag);
                        on_payload(&self.seq, &self.sent, &text, r, now_ns, now);
                        self.frag = text;
                    }
                }
                0x8 => {
                    let p = &self.buf[hdr..hdr + len];
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    let reason = String::from_utf8_lossy(p.get(2..).unwrap_or(&[])).to_string();
                    return Some(Ending::Closed(code, reason));
                }
                0x9 => pongs.push(self.buf[hdr..hdr + len].to_vec()),
                _ => {}
            }
            self.buf.advance(hdr + len);
        }
        for p in pongs {
            // Client frames are masked; a zero key leaves the payload as is.
            let mut f = vec![0x8A, 0x80 | p.len().min(125) as u8, 0, 0, 0, 0];
            f.extend_from_slice(&p[..p.len().min(125)]);
            if let Err(e) = self.stream.write_all(&f).await {
                return Some(Ending::Error(format!("write pong: {e}")));
            }
        }
        if r.last_seq > 0 {
            shared.max_seq.fetch_max(r.last_seq, Relaxed);
        }
        if first && r.other_frames + r.received > others_before {
            return None;
        }
        let target = shared.target.load(Relaxed);
        if r.role == Role::Busy && target > 0 && r.last_seq >= target {
            return Some(Ending::ReachedTarget);
        }
        if self.buf.capacity() - self.buf.len() < self.read_size / 4 {
            self.buf.reserve(self.read_size);
        }
        let read = if r.role == Role::Busy && !shared.target_set.is_cancelled() {
            tokio::select! {
                res = self.stream.read_buf(&mut self.buf) => Some(res),
                _ = shared.target_set.cancelled() => None,
            }
        } else {
            Some(self.stream.read_buf(&mut self.buf).await)
        };
        let Some(read) = read else {
            // The final Seq is known now: check it against what this client has.
            return None;
        };
        match read {
            Ok(0) => Some(Ending::Eof),
            Ok(n) => {
                if r.role == Role::Stalled && r.joined {
                    r.bytes_after_resume += n as u64;
                }
                None
            }
            Err(e) => Some(Ending::Error(e.to_string())),
        }
    }
}

fn on_text(c: &Conn, hdr: usize, len: usize, r: &mut Report, now_ns: u64, now: Instant) {
    on_payload(&c.seq, &c.sent, &c.buf[hdr..hdr + len], r, now_ns, now);
}

/// Records one text message: its Seq (gap accounting) and SentNs (latency).
fn on_payload(
    seq_f: &Finder<'_>,
    sent_f: &Finder<'_>,
    p: &[u8],
    r: &mut Report,
    now_ns: u64,
    now: Instant,
) {
    let Some(i) = seq_f.find(p) else {
        r.other_frames += 1;
        return;
    };
    let at = i + seq_f.needle().len();
    let seq = digits(&p[at..]);
    r.received += 1;
    r.received_bytes += p.len() as u64;
    r.first_recv.get_or_insert(now);
    r.last_recv = Some(now);
    if seq > r.last_seq {
        r.distinct += 1;
        r.last_seq = seq;
    } else {
        r.out_of_order += 1;
    }
    if let Some(h) = r.hist.as_mut() {
        if let Some(j) = sent_f.find(&p[at..]) {
            let sent = digits(&p[at + j + sent_f.needle().len()..]);
            h.record(now_ns.saturating_sub(sent) / 1000);
        }
    }
}

fn digits(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
    }
    v
}

pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

type Header = (u8, bool, usize, usize, Option<[u8; 4]>);

/// (opcode, fin, header length, payload length, mask) of the frame at the start of `b`.
fn header(b: &[u8]) -> Option<Header> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let op = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (mut hdr, len) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (4, u16::from_be_bytes([b[2], b[3]]) as usize)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            (10, u64::from_be_bytes(l) as usize)
        }
        n => (2, n as usize),
    };
    let mask = if masked {
        if b.len() < hdr + 4 {
            return None;
        }
        let m = [b[hdr], b[hdr + 1], b[hdr + 2], b[hdr + 3]];
        hdr += 4;
        Some(m)
    } else {
        None
    };
    Some((op, fin, hdr, len, mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_seq_and_sent() {
        let (s, t) = (Finder::new(b"\"Seq\":\""), Finder::new(b"\"SentNs\":\""));
        let mut r = Report::new(Role::Busy);
        let now = unix_ns();
        let msg = format!(
            "{{\"type\":3,\"data\":{{\"UserEvent\":\"Flood\",\"Seq\":\"17\",\"SentNs\":\"{}\"}}}}",
            now - 2_000_000
        );
        on_payload(&s, &t, msg.as_bytes(), &mut r, now, Instant::now());
        assert_eq!((r.received, r.last_seq), (1, 17));
        let h = r.hist.unwrap();
        assert!((1900..2100).contains(&h.max()), "{}", h.max());
    }

    #[test]
    fn parses_headers() {
        assert_eq!(header(&[0x81, 5]), Some((1, true, 2, 5, None)));
        assert_eq!(header(&[0x81, 126, 1, 0]), Some((1, true, 4, 256, None)));
        assert_eq!(header(&[0x88, 126]), None);
    }
}
