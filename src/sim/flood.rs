//! The flood generator of one connection: `UserEvent: Flood` events with `Seq` from 1 and
//! `SentNs`, then realistic channel headers padded to the requested size, formatted straight
//! into the writer's reused buffer a batch at a time. Unthrottled it fills whole batches; with a
//! rate it is a token bucket ticking every millisecond. It never buffers more than one batch: the
//! writer's `write_all` waits on a slow reader before the next batch is made.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::wire::now;
use super::FloodSpec;

/// Bytes formatted before a batch is written.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;
/// Distinct channel header blocks cycled through, so consecutive events differ.
const VARIANTS: u64 = 16;
const HEAD: &[u8] = b"Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Flood\r\nSeq: ";
/// Room taken by `Seq`/`SentNs` values and their line ends, for padding estimates.
const NUMBERS_ESTIMATE: usize = 7 + 2 + 8 + 19 + 2;

pub(crate) struct Flood {
    rate: Option<u64>,
    remaining: Option<u64>,
    seq: u64,
    /// Start of the current pacing window and events sent since.
    paced_from: Instant,
    paced_sent: u64,
    /// Per variant: everything after `SentNs`, blank line included.
    tails: Vec<Vec<u8>>,
}

impl Flood {
    pub(crate) fn new(spec: &FloodSpec, conn_id: u64) -> Flood {
        let t = now().as_secs();
        let tails = (0..VARIANTS)
            .map(|i| {
                let (ext, peer) = (100 + i % 21, 120 - i % 21);
                let mut s = format!(
                    "Channel: PJSIP/{ext}-{:08x}\r\nChannelState: 6\r\nChannelStateDesc: Up\r\n\
                     CallerIDNum: {ext}\r\nCallerIDName: Ext {ext}\r\nConnectedLineNum: {peer}\r\n\
                     Language: en\r\nAccountCode: \r\nContext: from-internal\r\nExten: {peer}\r\n\
                     Priority: 1\r\nUniqueid: {t}.{n}\r\nLinkedid: {t}.{n}\r\n",
                    conn_id * VARIANTS + i,
                    n = conn_id * VARIANTS + i,
                );
                let used = HEAD.len() + NUMBERS_ESTIMATE + s.len() + 2;
                // "Padding: " + value + CRLF.
                if let Some(value) = spec.event_bytes.checked_sub(used + 11).filter(|v| *v > 0) {
                    s.push_str("Padding: ");
                    s.extend(std::iter::repeat_n('x', value));
                    s.push_str("\r\n");
                }
                s.push_str("\r\n");
                s.into_bytes()
            })
            .collect();
        Flood {
            rate: spec.rate_per_s.filter(|r| *r > 0),
            remaining: spec.count,
            seq: 0,
            paced_from: Instant::now(),
            paced_sent: 0,
            tails,
        }
    }

    pub(crate) fn finished(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Events the rate allows now; a reader more than a second behind is not owed a burst.
    fn owed(&mut self) -> u64 {
        let Some(rate) = self.rate else {
            return u64::MAX;
        };
        let elapsed = self.paced_from.elapsed().as_nanos();
        let due = (elapsed * u128::from(rate) / 1_000_000_000) as u64;
        let owed = due.saturating_sub(self.paced_sent);
        if owed > rate.max(1000) {
            self.paced_from = Instant::now();
            self.paced_sent = 0;
            return 0;
        }
        owed
    }

    /// How long until the next event is due: zero now, else at least one millisecond tick.
    pub(crate) fn delay(&mut self) -> Duration {
        if self.rate.is_some() && self.owed() == 0 {
            Duration::from_millis(1)
        } else {
            Duration::ZERO
        }
    }

    /// Formats the events due now, at most one batch, into `buf`; returns how many.
    pub(crate) fn fill(&mut self, buf: &mut BytesMut) -> u64 {
        let mut n = self.owed().min(self.remaining.unwrap_or(u64::MAX));
        let start = buf.len();
        let mut written = 0;
        while n > 0 && buf.len() - start < BATCH_BYTES {
            self.seq += 1;
            buf.extend_from_slice(HEAD);
            put_u64(buf, self.seq);
            buf.extend_from_slice(b"\r\nSentNs: ");
            put_u64(buf, now().as_nanos() as u64);
            buf.extend_from_slice(b"\r\n");
            buf.extend_from_slice(&self.tails[(self.seq % VARIANTS) as usize]);
            n -= 1;
            written += 1;
        }
        self.paced_sent += written;
        if let Some(r) = self.remaining.as_mut() {
            *r -= written;
        }
        written
    }
}

/// Decimal digits of `v`, without allocating.
fn put_u64(buf: &mut BytesMut, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_padded_and_counted() {
        let spec = FloodSpec {
            rate_per_s: None,
            count: Some(3),
            event_bytes: 600,
        };
        let mut f = Flood::new(&spec, 1);
        let mut buf = BytesMut::new();
        assert_eq!(f.fill(&mut buf), 3);
        assert!(f.finished());
        let text = String::from_utf8_lossy(&buf);
        let events: Vec<&str> = text.split_terminator("\r\n\r\n").collect();
        assert_eq!(events.len(), 3);
        assert!(events[2].contains("\r\nSeq: 3\r\n"));
        for e in events {
            assert!(e.starts_with(
                "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Flood\r\nSeq: "
            ));
            assert!((560..=640).contains(&(e.len() + 4)), "size {}", e.len());
        }
    }

    #[test]
    fn a_rate_paces_events() {
        let spec = FloodSpec {
            rate_per_s: Some(1),
            count: None,
            event_bytes: 100,
        };
        let mut f = Flood::new(&spec, 1);
        let mut buf = BytesMut::new();
        assert_eq!(f.fill(&mut buf), 0);
        assert_eq!(f.delay(), Duration::from_millis(1));
    }
}
