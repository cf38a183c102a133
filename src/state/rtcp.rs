//! One RTCP event (`RTCPSent`, `RTCPReceived`) turned into quality figures: loss %, jitter in ms,
//! round trip and an estimated MOS; the payload clock rate from two sender reports. Pure
//! formulas, no state.
//!
//! Header names: Asterisk 12+ writes the report blocks as `Report0FractionLost`,
//! `Report0IAJitter`, `Report0LSR`, `Report0DLSR` (main/rtp_engine.c); the captured example
//! (`integration/captures/events/rtcpsent_example.txt`) has `ReportXFractionLost`,
//! `ReportXJitter`, `ReportXDLR`. Both spellings are read; the first block is used.
//!
//! Formulas (each unit-tested with hand-checked numbers):
//! - loss % = FractionLost / 256 × 100 (RFC 3550's 8-bit fixed point fraction);
//! - jitter ms = IAJitter (RTP timestamp units) / clock rate × 1000, the clock rate measured from
//!   two sender reports of one SSRC (ΔSentRTP / ΔSentNTP, snapped to a standard rate: see
//!   [`clock_from_srs`]) or [`DEFAULT_CLOCK_HZ`] until then;
//! - RTT: the `RTT` header (seconds, Asterisk writes it on `RTCPReceived`) when present, otherwise,
//!   for `RTCPReceived` only (whose LSR is Asterisk's own clock), arrival − LSR − DLSR in NTP
//!   "compact" time with the event's `Timestamp` as arrival; `RTCPSent`'s LSR is the far end's
//!   clock, so it gives none;
//! - MOS: the simplified E-model: effective latency = RTT/2 + 2 × jitter + 10 ms;
//!   R = 93.2 − latency/40 (latency < 160 ms) or 93.2 − (latency − 120)/10, minus 2.5 × loss %;
//!   MOS = 1 + 0.035 R + 7·10⁻⁶ R (R − 60)(100 − R), R clamped to 0..100, MOS to 1..4.5.

use serde_json::{json, Value};

use crate::ami::Packet;

/// RTP clock rate assumed until two sender reports measured it (G.711, G.722, G.729: 8 kHz).
pub const DEFAULT_CLOCK_HZ: f64 = 8000.0;
/// The RTP clock rates a measurement is snapped to (audio codecs Asterisk knows, and video).
const CLOCK_RATES: [f64; 7] = [8000.0, 16000.0, 24000.0, 32000.0, 44100.0, 48000.0, 90000.0];
/// A measured rate further than this fraction from every standard one is not trusted.
const CLOCK_TOLERANCE: f64 = 0.05;
/// Seconds between the NTP era (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: f64 = 2_208_988_800.0;
/// A computed round trip longer than this is a clock mismatch, not a measurement.
const MAX_RTT_S: f64 = 10.0;

/// Which media stream a report describes, seen from Asterisk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Media Asterisk receives from the far end (reported in `RTCPSent`).
    Inbound,
    /// Media Asterisk sends to the far end (reported back in `RTCPReceived`).
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// One RTCP report turned into quality figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    pub direction: Direction,
    pub loss_pct: f64,
    pub cumulative_lost: i64,
    pub jitter_ms: f64,
    pub rtt_ms: Option<f64>,
    pub mos: f64,
}

impl Sample {
    pub fn to_json(&self) -> Value {
        json!({
            "at_ms": self.at_ms,
            "direction": self.direction.as_str(),
            "loss_pct": round2(self.loss_pct),
            "cumulative_lost": self.cumulative_lost,
            "jitter_ms": round2(self.jitter_ms),
            "rtt_ms": self.rtt_ms.map(round2),
            "mos": round2(self.mos),
        })
    }
}

/// The sender-info part of an SR (`PT: 200(SR)`): whose stream, its NTP and RTP clocks.
#[derive(Debug, Clone, PartialEq)]
pub struct SenderReport {
    pub ssrc: String,
    pub ntp_s: f64,
    pub rtp: u32,
}

/// Which direction an RTCP event reports on; `None` for any other event.
pub fn direction_of(p: &Packet) -> Option<Direction> {
    match p.event()? {
        "RTCPSent" => Some(Direction::Inbound),
        "RTCPReceived" => Some(Direction::Outbound),
        _ => None,
    }
}

/// A report-block field of the first block, in either spelling (`Report0…`, `ReportX…`).
fn block<'a>(p: &'a Packet, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| {
        p.get(&format!("Report0{n}"))
            .or_else(|| p.get(&format!("ReportX{n}")))
    })
}

fn parse<T: std::str::FromStr>(v: Option<&str>) -> Option<T> {
    v?.trim().parse().ok()
}

/// Reads the first report block of an `RTCPSent` / `RTCPReceived` event with jitter converted at
/// `clock_hz`; `None` when it has no report block (an SR with `ReportCount: 0`), a garbled one,
/// or is not RTCP.
pub fn sample_from(p: &Packet, now_ms: u64, clock_hz: f64) -> Option<Sample> {
    let direction = direction_of(p)?;
    let fraction: f64 = parse(block(p, &["FractionLost"]))?;
    let jitter_units: f64 = parse(block(p, &["IAJitter", "Jitter"]))?;
    if !fraction.is_finite() || !jitter_units.is_finite() {
        return None;
    }
    let cumulative_lost = parse(block(p, &["CumulativeLost"])).unwrap_or(0);
    let loss_pct = (fraction.clamp(0.0, 255.0) / 256.0) * 100.0;
    let clock = if clock_hz.is_finite() && clock_hz > 0.0 {
        clock_hz
    } else {
        DEFAULT_CLOCK_HZ
    };
    let jitter_ms = jitter_units.max(0.0) / clock * 1000.0;
    let rtt_ms = rtt_seconds(p, direction).map(|s| s * 1000.0);
    Some(Sample {
        at_ms: now_ms,
        direction,
        loss_pct,
        cumulative_lost,
        jitter_ms,
        rtt_ms,
        mos: mos(rtt_ms.unwrap_or(0.0), jitter_ms, loss_pct),
    })
}

/// The sender info of an SR event; `None` for an RR or when garbled.
pub fn sender_report(p: &Packet) -> Option<SenderReport> {
    if !p.get("PT")?.trim_start().starts_with("200") {
        return None;
    }
    let ntp_s: f64 = parse(p.get("SentNTP"))?;
    let rtp: u32 = parse(p.get("SentRTP"))?;
    let ssrc = p.get("SSRC")?.trim().to_owned();
    ntp_s
        .is_finite()
        .then_some(SenderReport { ssrc, ntp_s, rtp })
}

/// The RTP clock rate from two sender reports of the same stream: ΔRTP / ΔNTP, snapped to the
/// nearest standard rate within 5 %; `None` for different streams, reports less than 0.5 s or
/// more than 5 minutes apart (RTP timestamps wrap), or a rate matching no standard one.
pub fn clock_from_srs(earlier: &SenderReport, later: &SenderReport) -> Option<f64> {
    if earlier.ssrc != later.ssrc {
        return None;
    }
    let dt = later.ntp_s - earlier.ntp_s;
    if !(0.5..=300.0).contains(&dt) {
        return None;
    }
    let rate = f64::from(later.rtp.wrapping_sub(earlier.rtp)) / dt;
    CLOCK_RATES
        .into_iter()
        .find(|r| ((rate - r) / r).abs() <= CLOCK_TOLERANCE)
}

fn rtt_seconds(p: &Packet, direction: Direction) -> Option<f64> {
    if let Some(rtt) = parse::<f64>(p.get("RTT")) {
        return (0.0..MAX_RTT_S).contains(&rtt).then_some(rtt);
    }
    if direction != Direction::Outbound {
        return None;
    }
    let lsr: u32 = parse(block(p, &["LSR"]))?;
    let dlr: f64 = parse(block(p, &["DLSR", "DLR"]))?;
    let arrival: f64 = parse(p.get("Timestamp"))?;
    if lsr == 0 || !dlr.is_finite() || !arrival.is_finite() || dlr < 0.0 {
        return None;
    }
    rtt_from_lsr(arrival, lsr, dlr)
}

/// Round trip in seconds from an arrival time (Unix seconds), the report's LSR (compact NTP)
/// and DLSR (seconds), by RFC 3550 §6.4.1; `None` when the result is not a plausible delay.
pub fn rtt_from_lsr(arrival_unix_s: f64, lsr: u32, dlr_s: f64) -> Option<f64> {
    let arrival = compact_ntp(arrival_unix_s);
    let dlr = (dlr_s * 65536.0).round() as u32;
    let units = arrival.wrapping_sub(lsr).wrapping_sub(dlr);
    let rtt = f64::from(units) / 65536.0;
    (rtt < MAX_RTT_S).then_some(rtt)
}

/// A Unix time as compact NTP: the middle 32 bits (16.16 fixed point seconds, wrapping every
/// 65,536 s) — what an LSR field holds.
pub fn compact_ntp(unix_s: f64) -> u32 {
    let ntp = unix_s + NTP_UNIX_OFFSET;
    ((ntp * 65536.0) as u64 & 0xffff_ffff) as u32
}

/// Estimated MOS by the simplified E-model (see the module docs).
pub fn mos(rtt_ms: f64, jitter_ms: f64, loss_pct: f64) -> f64 {
    let latency = rtt_ms.max(0.0) / 2.0 + 2.0 * jitter_ms.max(0.0) + 10.0;
    let mut r = if latency < 160.0 {
        93.2 - latency / 40.0
    } else {
        93.2 - (latency - 120.0) / 10.0
    };
    r -= 2.5 * loss_pct.max(0.0);
    let r = r.clamp(0.0, 100.0);
    (1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
}

/// `PJSIP/6117-0000001a` -> `PJSIP/6117`: the endpoint a channel belongs to.
pub fn endpoint_of(channel: &str) -> &str {
    match channel.rsplit_once('-') {
        Some((endpoint, suffix)) if !suffix.is_empty() && !endpoint.is_empty() => endpoint,
        _ => channel,
    }
}

pub(super) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
