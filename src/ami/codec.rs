//! Framing and parsing of incoming AMI bytes: pure functions plus a thin, bounded `Decoder`.
//!
//! [`find_frame_end`] finds where one packet ends, [`parse_packet`] turns one frame into a
//! [`Packet`], and [`AmiDecoder`] runs the same line scanner incrementally over a socket buffer,
//! never rescanning bytes and never holding more than one bounded packet.

use std::io;

use bytes::{Buf, BytesMut};
use memchr::{memchr, memchr_iter, memmem};
use tokio_util::codec::Decoder;

use super::packet::{HeaderSpan, Packet, Span};
use super::scan::{Scanner, Step};

/// Longest line accepted, without its line ending. Real AMI lines are far shorter; the largest in
/// practice are `ListCommands` entries and long variable values.
pub const DEFAULT_MAX_LINE_BYTES: usize = 65_536;
/// Largest packet accepted, without its terminator. `ListCommands` (~8 kB) is the largest seen in
/// the captures; a megabyte leaves room for huge command output while bounding memory per PBX.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1_048_576;
/// Most header lines in one packet. Asterisk 14+ sends command output as one `Output` header per
/// line, so this also bounds command output length.
pub const DEFAULT_MAX_HEADERS: usize = 1024;

/// Marker that ends the body of a pre-Asterisk-14 `Response: Follows` packet.
pub(super) const END_COMMAND: &[u8] = b"--END COMMAND--";

/// Bounds on what one packet may hold (SPEC §3). Anything larger is discarded and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line, without its line ending.
    pub max_line_bytes: usize,
    /// Largest packet, without its terminating blank line.
    pub max_packet_bytes: usize,
    /// Most header lines in one packet.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// One item out of the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The first line of a connection, e.g. "Asterisk Call Manager/11.0.0" (without CRLF).
    Banner(String),
    /// A parsed packet.
    Packet(Packet),
    /// A packet that broke a bound was skipped; decoding resumes at the next packet.
    Discarded(DiscardReason),
}

/// Which bound a discarded packet broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscardReason {
    /// A line longer than `max_line_bytes`.
    LineTooLong,
    /// A packet longer than `max_packet_bytes`.
    PacketTooLarge,
    /// More than `max_headers` header lines.
    TooManyHeaders,
    /// The stream ended in the middle of a packet (a connection reset mid-packet): never
    /// delivered as if it were whole.
    Truncated,
}

/// Pure framing: given bytes starting at a packet start, returns `Some((frame_len, consumed_len))`
/// where `frame_len` is the length of the packet text without its terminating blank line and
/// `consumed_len` includes the terminator. Accepts "\r\n\r\n", "\r\n\n", "\n\n" and "\n\r\n".
/// Leading blank lines are part of the frame (the parser skips them). A packet whose first line is
/// `Response: Follows` ends only at the first blank line after a line containing
/// `--END COMMAND--`. `None` means more bytes are needed.
pub fn find_frame_end(buf: &[u8]) -> Option<(usize, usize)> {
    let unbounded = Limits {
        max_line_bytes: usize::MAX,
        max_packet_bytes: usize::MAX,
        max_headers: usize::MAX,
    };
    match Scanner::new(unbounded, false).step(buf, 0) {
        Step::Packet { end, next, .. } => Some((end as usize, next as usize)),
        _ => None,
    }
}

/// Where the parser is within one frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Skipping leading blank lines.
    Start,
    /// An ordinary packet: lines with ':' are headers, others raw lines, blank lines ignored.
    Headers,
    /// A legacy header-less packet: every line is raw.
    Text,
    /// The headers of `Response: Follows`, before the command output starts.
    FollowsHeaders,
    /// The command output of `Response: Follows`: every line is raw.
    FollowsBody,
}

/// Pure parse of one frame's text (without its terminator). Leading and trailing blank lines are
/// ignored. Fails only when a bound is broken; invalid UTF-8 is replaced by U+FFFD first and the
/// bounds are measured on the resulting text.
pub fn parse_packet(frame: &[u8], limits: &Limits) -> Result<Packet, DiscardReason> {
    parse_frame(frame, None, limits)
}

/// [`parse_packet`], given the offsets of the frame's LFs when the scanner already found them
/// (offsets past the frame are ignored), so the decoder does not search for them twice.
fn parse_frame(
    frame: &[u8],
    newlines: Option<&[u32]>,
    limits: &Limits,
) -> Result<Packet, DiscardReason> {
    if frame.len() > limits.max_packet_bytes {
        return Err(DiscardReason::PacketTooLarge);
    }
    let (text, newlines) = match std::str::from_utf8(frame) {
        Ok(text) => (text.to_owned(), newlines),
        // Replacement characters move the offsets: search the new text instead.
        Err(_) => (String::from_utf8_lossy(frame).into_owned(), None),
    };
    if u32::try_from(text.len()).is_err() {
        return Err(DiscardReason::PacketTooLarge);
    }
    let bytes = text.as_bytes();
    let (headers, raw) = match newlines {
        Some(offsets) => {
            let inside = offsets
                .iter()
                .map(|&o| o as usize)
                .take_while(|&o| o < bytes.len());
            parse_lines(bytes, Lines::new(bytes, inside), offsets.len() + 1, limits)?
        }
        None => parse_lines(
            bytes,
            Lines::new(bytes, memchr_iter(b'\n', bytes)),
            16,
            limits,
        )?,
    };
    Ok(Packet::from_parts(text, headers, raw))
}

/// Splits the lines of `bytes` into header and raw-line spans; `lines` yields content ranges.
fn parse_lines(
    bytes: &[u8],
    lines: impl Iterator<Item = (usize, usize)>,
    max_lines: usize,
    limits: &Limits,
) -> Result<(Vec<HeaderSpan>, Vec<Span>), DiscardReason> {
    let mut headers: Vec<HeaderSpan> = Vec::with_capacity(max_lines.min(limits.max_headers));
    let mut raw: Vec<Span> = Vec::new();
    // Blank lines seen in a raw section, kept only if another raw line follows them.
    let mut blanks = 0usize;
    let mut mode = Mode::Start;
    for (start, end) in lines {
        let line = &bytes[start..end];
        if line.len() > limits.max_line_bytes {
            return Err(DiscardReason::LineTooLong);
        }
        // Header names are short: a plain loop beats memchr's setup.
        let colon = line.iter().position(|&b| b == b':');
        // Offsets fit in u32: the whole text was checked above.
        let span = Span {
            start: start as u32,
            end: end as u32,
        };
        match mode {
            Mode::Start if line.is_empty() => continue,
            Mode::Start => {
                mode = if is_follows(line) {
                    Mode::FollowsHeaders
                } else if colon.is_some_and(|c| is_header_name(&line[..c])) {
                    Mode::Headers
                } else {
                    Mode::Text
                };
            }
            Mode::Headers if line.is_empty() => continue,
            Mode::FollowsHeaders
                if line.is_empty()
                    || !colon.is_some_and(|c| is_header_name(&line[..c]))
                    || memmem::find(line, END_COMMAND).is_some() =>
            {
                mode = Mode::FollowsBody;
            }
            _ => {}
        }
        match (mode, colon) {
            (Mode::Headers | Mode::FollowsHeaders, Some(c)) => {
                if headers.len() >= limits.max_headers {
                    return Err(DiscardReason::TooManyHeaders);
                }
                headers.push(header_span(bytes, span, c));
            }
            (Mode::Headers, None) => raw.push(span),
            _ if line.is_empty() => blanks += 1,
            _ => {
                // Blank lines inside a raw section are output; trailing ones are dropped.
                let empty = Span {
                    start: span.start,
                    end: span.start,
                };
                raw.extend(std::iter::repeat_n(empty, blanks));
                blanks = 0;
                let marker = match mode {
                    Mode::FollowsBody => memmem::find(line, END_COMMAND),
                    _ => None,
                };
                let Some(m) = marker else {
                    raw.push(span);
                    continue;
                };
                // The marker may be glued to the last output line; keep the text around it.
                let (m, after) = (start + m, start + m + END_COMMAND.len());
                if m > start {
                    raw.push(Span {
                        start: span.start,
                        end: m as u32,
                    });
                }
                if after < end {
                    raw.push(Span {
                        start: after as u32,
                        end: span.end,
                    });
                }
            }
        }
    }
    Ok((headers, raw))
}

/// The content ranges of the lines of a text, given the offsets of its LFs: one trailing CR
/// removed, the last line running to the end of the text.
struct Lines<'a, I> {
    bytes: &'a [u8],
    newlines: I,
    start: usize,
}

impl<'a, I: Iterator<Item = usize>> Lines<'a, I> {
    fn new(bytes: &'a [u8], newlines: I) -> Lines<'a, I> {
        Lines {
            bytes,
            newlines,
            start: 0,
        }
    }
}

impl<I: Iterator<Item = usize>> Iterator for Lines<'_, I> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        let start = self.start;
        if start > self.bytes.len() {
            return None;
        }
        let len = self.bytes.len();
        let nl = self
            .newlines
            .next()
            .filter(|&nl| nl >= start && nl < len)
            .unwrap_or(len);
        self.start = nl + 1;
        let end = if nl > start && self.bytes[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        Some((start, end))
    }
}

/// The spans of the header on `line` (a span of `text`) whose first ':' is at `colon` in the line.
fn header_span(text: &[u8], line: Span, colon: usize) -> HeaderSpan {
    let name_end = line.start + colon as u32;
    // Asterisk writes exactly "Name: value"; only that one separator space is dropped, so
    // command output keeps its column alignment (`Output:   Username …`).
    let mut value_start = name_end + 1;
    if value_start < line.end && text[value_start as usize] == b' ' {
        value_start += 1;
    }
    HeaderSpan {
        name: Span {
            start: line.start,
            end: name_end,
        },
        value: Span {
            start: value_start,
            end: line.end,
        },
    }
}

/// A header name as the first line of a packet or a `Follows` header: no spaces or tabs.
fn is_header_name(name: &[u8]) -> bool {
    !name.iter().any(|b| matches!(b, b' ' | b'\t'))
}

/// True for the line `Response: Follows` (case-insensitive, surrounding blanks allowed).
pub(super) fn is_follows(line: &[u8]) -> bool {
    let Some(colon) = memchr(b':', line) else {
        return false;
    };
    let value = &line[colon + 1..];
    let value = trim_blanks(value);
    line[..colon].eq_ignore_ascii_case(b"Response") && value.eq_ignore_ascii_case(b"Follows")
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The `tokio_util` decoder for a byte stream from Asterisk (or, without a banner, from a client).
///
/// Incremental: the scan position is kept between calls, so bytes are looked at once however the
/// stream is split into reads. Bounded: between calls it holds at most one packet of
/// `max_packet_bytes` (plus the unscanned rest of the last read); a packet that breaks a bound is
/// dropped as it arrives, up to its terminator, and reported once as [`Frame::Discarded`]. Extra
/// blank lines between packets are skipped. The caller must only append to the buffer it passes.
#[derive(Debug, Clone)]
pub struct AmiDecoder {
    limits: Limits,
    scanner: Scanner,
    /// Stream offset of the first byte of the caller's buffer.
    base: u64,
}

impl AmiDecoder {
    /// `expect_banner = true`: the first line (ended by LF) is returned as [`Frame::Banner`] (the
    /// client side of AMI). `false`: no banner (the server side, e.g. a simulator reading actions).
    pub fn new(limits: Limits, expect_banner: bool) -> Self {
        AmiDecoder {
            limits,
            scanner: Scanner::new(limits, expect_banner),
            base: 0,
        }
    }

    /// The bounds this decoder enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Drops the buffer's bytes before stream offset `to`.
    fn drop_until(&mut self, src: &mut BytesMut, to: u64) {
        let n = to.saturating_sub(self.base).min(src.len() as u64);
        src.advance(n as usize);
        self.base += n;
    }
}

impl Decoder for AmiDecoder {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        let (frame, next) = match self.scanner.step(src, self.base) {
            Step::NeedMore => {
                let keep = self.scanner.keep_from(self.base + src.len() as u64);
                self.drop_until(src, keep);
                return Ok(None);
            }
            Step::Banner { start, end, next } => {
                let line = &src[(start - self.base) as usize..(end - self.base) as usize];
                (
                    Frame::Banner(String::from_utf8_lossy(line).into_owned()),
                    next,
                )
            }
            Step::Packet { start, end, next } => {
                let text = &src[(start - self.base) as usize..(end - self.base) as usize];
                let frame = match parse_frame(text, self.scanner.newlines(), &self.limits) {
                    Ok(packet) => Frame::Packet(packet),
                    Err(reason) => Frame::Discarded(reason),
                };
                (frame, next)
            }
            Step::Discarded { reason, next } => (Frame::Discarded(reason), next),
        };
        self.drop_until(src, next);
        Ok(Some(frame))
    }

    /// Yields a final unterminated packet if it parses within bounds, else nothing.
    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        let base = self.base;
        let fragment = self.scanner.finish(src, base).is_some_and(|(start, end)| {
            let text = &src[(start - base) as usize..(end - base) as usize];
            text.iter().any(|b| !b.is_ascii_whitespace())
        });
        let all = self.base + src.len() as u64;
        self.drop_until(src, all);
        Ok(fragment.then_some(Frame::Discarded(DiscardReason::Truncated)))
    }
}
