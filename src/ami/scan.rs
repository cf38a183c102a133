//! The resumable line scanner that finds packet boundaries and enforces the byte bounds.
//!
//! Shared by [`super::find_frame_end`] (one pass over a slice) and [`super::AmiDecoder`] (resumed
//! after every read). It works on absolute stream offsets so the decoder can drop bytes it no
//! longer needs without the scanner losing its place.

use memchr::{memchr_iter, memmem};

use super::codec::{is_follows, DiscardReason, Limits, END_COMMAND};

/// Bytes kept of an over-long line while discarding: enough to find the marker across reads and
/// to see the CR before a LF.
const DISCARD_TAIL: u64 = END_COMMAND.len() as u64 + 1;
/// Most LF offsets remembered per packet for the parser; past this it searches them itself.
const MAX_REMEMBERED_LINES: usize = 8192;

/// What the scanner found; offsets are absolute stream positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// No complete item yet.
    NeedMore,
    /// The banner line's content is `start..end`; the next item starts at `next`.
    Banner { start: u64, end: u64, next: u64 },
    /// A packet's frame is `start..end`; the next item starts at `next`.
    Packet { start: u64, end: u64, next: u64 },
    /// A packet (or banner) broke a bound; the next item starts at `next`.
    Discarded { reason: DiscardReason, next: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the banner line.
    Banner,
    /// Between packets: blank lines are skipped.
    Gap,
    /// Inside a packet that starts at `packet_start`.
    Packet,
}

/// The resumable line scanner behind both [`super::find_frame_end`] and [`super::AmiDecoder`].
///
/// It looks at each byte once: `pos` remembers how far LFs have been searched. Positions are
/// absolute stream offsets, so the decoder can drop bytes it no longer needs (while discarding)
/// by moving `base` forward. Bounds are checked on every complete line and, for a line still
/// arriving, as soon as it is certain to break one; when two bounds break, the one crossed first in
/// the stream wins, so the outcome never depends on how the bytes were split into reads.
#[derive(Debug, Clone)]
pub(super) struct Scanner {
    limits: Limits,
    phase: Phase,
    /// Bytes before this have been searched for LF.
    pos: u64,
    /// Start of the current, incomplete line.
    line_start: u64,
    /// Start of the current packet's first line.
    packet_start: u64,
    /// End of the content of the packet's last non-blank line.
    frame_end: u64,
    /// The packet's first line is not complete yet.
    first_line: bool,
    /// The packet is `Response: Follows`: blank lines end it only after the marker.
    follows: bool,
    /// The `--END COMMAND--` marker has been seen in this packet.
    marker_seen: bool,
    /// The current line has been searched for the marker up to here.
    marker_scanned: u64,
    /// The current packet broke this bound and is being skipped.
    discard: Option<DiscardReason>,
    /// Offsets from `packet_start` of the packet's LFs, so the parser need not search again;
    /// `None` once there were too many to remember.
    newlines: Option<Vec<u32>>,
}

impl Scanner {
    pub(super) fn new(limits: Limits, expect_banner: bool) -> Scanner {
        Scanner {
            limits,
            phase: if expect_banner {
                Phase::Banner
            } else {
                Phase::Gap
            },
            pos: 0,
            line_start: 0,
            packet_start: 0,
            frame_end: 0,
            first_line: false,
            follows: false,
            marker_seen: false,
            marker_scanned: 0,
            discard: None,
            newlines: Some(Vec::new()),
        }
    }

    /// Scans `buf`, whose first byte is at stream offset `base`, up to the next item.
    pub(super) fn step(&mut self, buf: &[u8], base: u64) -> Step {
        let end = base + buf.len() as u64;
        if self.pos < base || self.pos > end {
            // The caller changed the buffer behind our back: start over at its beginning.
            *self = Scanner::new(self.limits, false);
            self.pos = base;
            self.line_start = base;
        }
        // One iterator for all lines of this call: much cheaper than a memchr call per line.
        let from = self.pos;
        for i in memchr_iter(b'\n', &buf[(from - base) as usize..]) {
            let nl = from + i as u64;
            self.pos = nl + 1;
            if let Some(step) = self.complete_line(buf, base, nl) {
                return step;
            }
        }
        self.pos = end;
        self.partial_line(buf, base);
        Step::NeedMore
    }

    /// Handles the line ending with the LF at `nl`.
    fn complete_line(&mut self, buf: &[u8], base: u64, nl: u64) -> Option<Step> {
        let ls = self.line_start;
        self.line_start = nl + 1;
        let at = |p: u64| buf[(p - base) as usize];
        let ce = if nl > ls && at(nl - 1) == b'\r' {
            nl - 1
        } else {
            nl
        };
        let next = nl + 1;
        match self.phase {
            Phase::Banner => {
                self.phase = Phase::Gap;
                if self.discard.take().is_some() || ce - ls > self.limits.max_line_bytes as u64 {
                    return Some(Step::Discarded {
                        reason: DiscardReason::LineTooLong,
                        next,
                    });
                }
                return Some(Step::Banner {
                    start: ls,
                    end: ce,
                    next,
                });
            }
            Phase::Gap if ce == ls => return None,
            Phase::Gap => self.begin_packet(ls),
            Phase::Packet => {}
        }
        if let Some(newlines) = &mut self.newlines {
            match u32::try_from(nl - self.packet_start) {
                Ok(offset) if newlines.len() < MAX_REMEMBERED_LINES => newlines.push(offset),
                _ => self.newlines = None,
            }
        }
        if ce == ls {
            if self.follows && !self.marker_seen {
                // A blank line inside pre-14 command output: more output must follow, so it
                // counts towards the packet size.
                if self.discard.is_none() {
                    self.discard = self.broken_bound(ls, ce);
                }
                self.marker_scanned = next;
                return None;
            }
            self.phase = Phase::Gap;
            return Some(match self.discard.take() {
                Some(reason) => Step::Discarded { reason, next },
                None => Step::Packet {
                    start: self.packet_start,
                    end: self.frame_end,
                    next,
                },
            });
        }
        if self.discard.is_none() {
            self.discard = self.broken_bound(ls, ce);
        }
        if self.first_line {
            self.first_line = false;
            // A line that broke a bound may be partly dropped already, and is never `Follows`.
            self.follows = self.discard.is_none()
                && is_follows(&buf[(ls - base) as usize..(ce - base) as usize]);
        } else if self.follows && !self.marker_seen {
            self.scan_marker(buf, base, ls, nl);
        }
        self.marker_scanned = next;
        self.frame_end = ce;
        None
    }

    /// Checks the incomplete line at the end of `buf` against the bounds, and for the marker.
    fn partial_line(&mut self, buf: &[u8], base: u64) {
        let ls = self.line_start;
        let end = self.pos;
        let len = end - ls;
        match self.phase {
            Phase::Banner => {
                if len >= (self.limits.max_line_bytes as u64).saturating_add(2) {
                    self.discard = Some(DiscardReason::LineTooLong);
                }
                return;
            }
            // A line that is more than a lone CR cannot be blank: a packet has started.
            Phase::Gap if len >= 2 || (len == 1 && buf[(ls - base) as usize] != b'\r') => {
                self.begin_packet(ls)
            }
            Phase::Gap => return,
            Phase::Packet => {}
        }
        if self.discard.is_none() && len >= 2 {
            // Content is at least `len - 1` bytes (one CR may still be stripped).
            self.discard = self.broken_bound(ls, end - 1);
        }
        if self.follows && !self.marker_seen && !self.first_line {
            self.scan_marker(buf, base, ls, end);
        }
    }

    /// The bound broken by a packet line whose content spans at least `ls..ce`, if any.
    fn broken_bound(&self, ls: u64, ce: u64) -> Option<DiscardReason> {
        let max_line = self.limits.max_line_bytes as u64;
        let max_packet = self.limits.max_packet_bytes as u64;
        let line_over = ce - ls > max_line;
        let packet_over = ce - self.packet_start > max_packet;
        match (line_over, packet_over) {
            (false, false) => None,
            (true, false) => Some(DiscardReason::LineTooLong),
            (false, true) => Some(DiscardReason::PacketTooLarge),
            // Both: the bound crossed first in the stream, so chunking cannot change the answer.
            (true, true) => {
                let line_cross = ls.saturating_add(max_line);
                let packet_cross = self.packet_start.saturating_add(max_packet);
                Some(if line_cross <= packet_cross {
                    DiscardReason::LineTooLong
                } else {
                    DiscardReason::PacketTooLarge
                })
            }
        }
    }

    fn begin_packet(&mut self, start: u64) {
        self.phase = Phase::Packet;
        self.packet_start = start;
        self.frame_end = start;
        self.first_line = true;
        self.follows = false;
        self.marker_seen = false;
        self.marker_scanned = start;
        match &mut self.newlines {
            Some(newlines) => newlines.clear(),
            None => self.newlines = Some(Vec::new()),
        }
    }

    /// The LF offsets of the packet just returned by `step`, relative to its start, if known.
    pub(super) fn newlines(&self) -> Option<&[u32]> {
        self.newlines.as_deref()
    }

    /// Searches the line starting at `ls` up to `upto` for the marker, overlapping the last search.
    fn scan_marker(&mut self, buf: &[u8], base: u64, ls: u64, upto: u64) {
        let overlap = END_COMMAND.len() as u64 - 1;
        let from = ls
            .max(self.marker_scanned.saturating_sub(overlap))
            .max(base);
        if upto > from {
            let hay = &buf[(from - base) as usize..(upto - base) as usize];
            if memmem::find(hay, END_COMMAND).is_some() {
                self.marker_seen = true;
            }
        }
        self.marker_scanned = upto;
    }

    /// The first stream offset the decoder must keep; everything before it may be dropped.
    pub(super) fn keep_from(&self, end: u64) -> u64 {
        match (self.phase, self.discard) {
            (Phase::Packet, None) => self.packet_start,
            (_, Some(_)) => self.line_start.max(end.saturating_sub(DISCARD_TAIL)),
            _ => self.line_start,
        }
    }

    /// At end of stream (after `step` returned `NeedMore`): the frame of a final unterminated
    /// packet, if there is one that broke no bound. Leaves the scanner between packets at the end.
    pub(super) fn finish(&mut self, buf: &[u8], base: u64) -> Option<(u64, u64)> {
        let end = base + buf.len() as u64;
        let ls = self.line_start;
        let mut frame = None;
        if self.phase == Phase::Packet && self.pos == end && ls >= base {
            let ce = if end > ls && buf[buf.len() - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            if self.discard.is_none() && ce > ls {
                self.discard = self.broken_bound(ls, ce);
                self.frame_end = ce;
            }
            if self.discard.is_none() {
                frame = Some((self.packet_start, self.frame_end));
            }
        }
        *self = Scanner::new(self.limits, false);
        self.pos = end;
        self.line_start = end;
        frame
    }
}
