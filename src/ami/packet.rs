//! One incoming AMI packet: the frame text kept once, with compact spans for headers and raw lines.

use std::fmt;

/// Asterisk's `ast_true`: how it reads a boolean header (`Async`, `Paused`, `InCall`).
pub fn ast_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "yes" | "true" | "y" | "t" | "on"
    )
}

/// What a packet is, judged by its first header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// The first header is `Event`.
    Event,
    /// The first header is `Response`.
    Response,
    /// The first header is `Action` (a client's request, as the simulator sees it).
    Action,
    /// No headers, only raw lines (legacy header-less output such as the old `Queues` action).
    Text,
    /// Anything else.
    Unknown,
}

/// One parsed AMI packet. Immutable and cheap to share behind an `Arc`.
///
/// The text of the frame is stored once; headers and raw lines are `u32` spans into it, so a
/// packet costs two or three allocations however many headers it has. Equality compares the
/// headers and raw lines, not the exact bytes they were parsed from.
#[derive(Clone, Default)]
pub struct Packet {
    text: String,
    headers: Vec<HeaderSpan>,
    raw: Vec<Span>,
}

/// A byte range `start..end` of the packet text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) start: u32,
    pub(super) end: u32,
}

/// The name and value spans of one header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeaderSpan {
    pub(super) name: Span,
    pub(super) value: Span,
}

impl Packet {
    /// Builds a packet from (name, value) pairs, for tests, the simulator and state code.
    ///
    /// The stored text is `name: value\r\n` per header. A packet is limited to 4 GiB of text;
    /// headers past that are left out.
    pub fn from_headers<I, N, V>(headers: I) -> Packet
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let mut text = String::new();
        let mut spans = Vec::new();
        for (name, value) in headers {
            let (name, value) = (name.as_ref(), value.as_ref());
            let name_start = text.len();
            let value_start = name_start + name.len() + 2;
            let value_end = value_start + value.len();
            let (Ok(ns), Ok(vs), Ok(ve)) = (
                u32::try_from(name_start),
                u32::try_from(value_start),
                u32::try_from(value_end),
            ) else {
                break;
            };
            text.push_str(name);
            text.push_str(": ");
            text.push_str(value);
            text.push_str("\r\n");
            spans.push(HeaderSpan {
                name: Span {
                    start: ns,
                    end: ns + name.len() as u32,
                },
                value: Span { start: vs, end: ve },
            });
        }
        Packet::from_parts(text, spans, Vec::new())
    }

    /// Appends raw (non-header) lines, e.g. when rebuilding a packet stored elsewhere (the
    /// cluster's streams). Lines past 4 GiB of text are left out.
    pub fn with_raw_lines<'a>(mut self, lines: impl IntoIterator<Item = &'a str>) -> Packet {
        for line in lines {
            let start = self.text.len();
            let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(start + line.len())) else {
                break;
            };
            self.text.push_str(line);
            self.text.push('\n');
            self.raw.push(Span { start: s, end: e });
        }
        self
    }

    /// Assembles a packet from parsed parts; every span must lie on char boundaries of `text`.
    pub(super) fn from_parts(text: String, headers: Vec<HeaderSpan>, raw: Vec<Span>) -> Packet {
        Packet { text, headers, raw }
    }

    /// Headers in wire order, repeats preserved. The name is everything before the first ':', the
    /// value everything after it less the one separator space (trailing kept except CR).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.headers
            .iter()
            .map(move |h| (self.slice(h.name), self.slice(h.value)))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// True when the packet has no headers (it may still have raw lines).
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Header `i` (in wire order) as (name, value).
    pub fn header(&self, i: usize) -> Option<(&str, &str)> {
        let h = self.headers.get(i)?;
        Some((self.slice(h.name), self.slice(h.value)))
    }

    /// Length of the packet's text (its headers and raw lines as parsed).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Value of the first header with this name, compared ASCII case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        // Called many times per packet (routing, state): compare lengths before any bytes.
        let (text, want) = (self.text.as_bytes(), name.as_bytes());
        self.headers
            .iter()
            .find(|h| {
                h.name.end.wrapping_sub(h.name.start) as usize == want.len()
                    && text
                        .get(h.name.start as usize..h.name.end as usize)
                        .is_some_and(|n| n.eq_ignore_ascii_case(want))
            })
            .map(|h| self.slice(h.value))
    }

    /// Lines that are not headers: the body of `Response: Follows` (pre-14 command output, without
    /// the `--END COMMAND--` marker), or the lines of a legacy header-less text packet. Empty for
    /// ordinary packets.
    pub fn raw_lines(&self) -> impl Iterator<Item = &str> + '_ {
        self.raw.iter().map(move |s| self.slice(*s))
    }

    /// Event, Response or Action by the first header's name; Text when there are no headers but
    /// raw lines; Unknown otherwise.
    pub fn kind(&self) -> PacketKind {
        let Some(first) = self.headers.first() else {
            return if self.raw.is_empty() {
                PacketKind::Unknown
            } else {
                PacketKind::Text
            };
        };
        let name = self.slice(first.name);
        if name.eq_ignore_ascii_case("Event") {
            PacketKind::Event
        } else if name.eq_ignore_ascii_case("Response") {
            PacketKind::Response
        } else if name.eq_ignore_ascii_case("Action") {
            PacketKind::Action
        } else {
            PacketKind::Unknown
        }
    }

    /// The `Event` header.
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// The `ActionID` header.
    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }

    /// Command output lines in any of the three wire shapes: every `Output` header value in order,
    /// followed by [`Packet::raw_lines`]. Empty if none.
    pub fn output_lines(&self) -> Vec<&str> {
        let mut lines: Vec<&str> = self
            .headers()
            .filter(|(name, _)| name.eq_ignore_ascii_case("Output"))
            .map(|(_, value)| value)
            .collect();
        lines.extend(self.raw_lines());
        lines
    }

    /// Approximate heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.headers.capacity() * std::mem::size_of::<HeaderSpan>()
            + self.raw.capacity() * std::mem::size_of::<Span>()
    }

    fn slice(&self, span: Span) -> &str {
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }
}

impl PartialEq for Packet {
    fn eq(&self, other: &Packet) -> bool {
        self.headers().eq(other.headers()) && self.raw_lines().eq(other.raw_lines())
    }
}

impl Eq for Packet {}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Packet");
        s.field("headers", &self.headers().collect::<Vec<_>>());
        if !self.raw.is_empty() {
            s.field("raw_lines", &self.raw_lines().collect::<Vec<_>>());
        }
        s.finish()
    }
}
