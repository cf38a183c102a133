//! Call quality from RTCP: `RTCPSent` (Asterisk's report on the media it receives: the inbound
//! direction) and `RTCPReceived` (the far end's report on the media Asterisk sends: outbound),
//! turned into loss %, jitter in ms, round-trip time and an estimated MOS, kept as a bounded time
//! series per call and a bounded window per endpoint.
//!
//! Formulas (each unit-tested with hand-checked numbers):
//! - loss % = `ReportXFractionLost` / 256 × 100 (RFC 3550's 8-bit fixed point fraction);
//! - jitter ms = `ReportXJitter` (RTP timestamp units) / clock rate × 1000; the clock rate is
//!   [`DEFAULT_CLOCK_HZ`] (G.711, G.722, G.729 all use 8 kHz RTP clocks) as AMI does not say;
//! - RTT: an `RTT` header (seconds) when the event has one, otherwise, for `RTCPReceived` only
//!   (whose `LSR` is Asterisk's own clock), arrival − LSR − DLR in NTP "compact" time, with the
//!   event's `Timestamp` as arrival; `RTCPSent`'s LSR is the far end's clock, so it gives none;
//! - MOS: the simplified E-model: effective latency = RTT/2 + 2 × jitter + 10 ms;
//!   R = 93.2 − latency/40 (latency < 160 ms) or 93.2 − (latency − 120)/10, minus 2.5 × loss %;
//!   MOS = 1 + 0.035 R + 7·10⁻⁶ R (R − 60)(100 − R), R clamped to 0..100.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};

use super::{MAX_CHANNELS, MAX_ENDPOINTS};
use crate::ami::Packet;

/// RTP clock rate assumed for jitter (AMI's RTCP events do not carry the codec).
pub const DEFAULT_CLOCK_HZ: f64 = 8000.0;
/// Samples kept per call (one RTCP report every ~5 s per direction: ~5 minutes).
pub const CALL_SAMPLES: usize = 120;
/// Samples kept per endpoint, over all its calls.
pub const ENDPOINT_SAMPLES: usize = 360;
/// How far back the per-endpoint summary looks.
pub const ENDPOINT_WINDOW_MS: u64 = 15 * 60 * 1000;
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
    fn as_str(self) -> &'static str {
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
    fn to_json(&self) -> Value {
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

/// Reads the first report block of an `RTCPSent` / `RTCPReceived` event; `None` when it has no
/// report block (an SR with `ReportCount: 0`) or is not RTCP.
pub fn sample_from(p: &Packet, now_ms: u64) -> Option<Sample> {
    let direction = match p.event()? {
        "RTCPSent" => Direction::Inbound,
        "RTCPReceived" => Direction::Outbound,
        _ => return None,
    };
    let fraction: f64 = p.get("ReportXFractionLost")?.trim().parse().ok()?;
    let jitter_units: f64 = p.get("ReportXJitter")?.trim().parse().ok()?;
    let cumulative_lost = p
        .get("ReportXCumulativeLost")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let loss_pct = (fraction.clamp(0.0, 255.0) / 256.0) * 100.0;
    let jitter_ms = jitter_units.max(0.0) / DEFAULT_CLOCK_HZ * 1000.0;
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

fn rtt_seconds(p: &Packet, direction: Direction) -> Option<f64> {
    if let Some(rtt) = p.get("RTT").and_then(|v| v.trim().parse::<f64>().ok()) {
        return (0.0..MAX_RTT_S).contains(&rtt).then_some(rtt);
    }
    if direction != Direction::Outbound {
        return None;
    }
    let lsr: u32 = p.get("ReportXLSR")?.trim().parse().ok()?;
    let dlr: f64 = p.get("ReportXDLR")?.trim().parse().ok()?;
    let arrival: f64 = p.get("Timestamp")?.trim().parse().ok()?;
    if lsr == 0 || !dlr.is_finite() || !arrival.is_finite() {
        return None;
    }
    rtt_from_lsr(arrival, lsr, dlr)
}

/// Round trip in seconds from an arrival time (Unix seconds), the report's LSR (compact NTP)
/// and DLR (seconds), by RFC 3550 §6.4.1; `None` when the result is not a plausible delay.
pub fn rtt_from_lsr(arrival_unix_s: f64, lsr: u32, dlr_s: f64) -> Option<f64> {
    let ntp = arrival_unix_s + NTP_UNIX_OFFSET;
    // Compact NTP: the middle 32 bits (16.16 fixed point seconds), wrapping every 65,536 s.
    let arrival = ((ntp * 65536.0) as u64 & 0xffff_ffff) as u32;
    let dlr = (dlr_s * 65536.0).round() as u32;
    let units = arrival.wrapping_sub(lsr).wrapping_sub(dlr);
    let rtt = f64::from(units) / 65536.0;
    (rtt < MAX_RTT_S).then_some(rtt)
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

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[derive(Debug, Clone, Default)]
struct CallQuality {
    endpoint: String,
    series: VecDeque<Sample>,
}

/// Quality per live call (keyed by channel name) and per endpoint.
#[derive(Debug, Clone, Default)]
pub(super) struct Quality {
    calls: HashMap<String, CallQuality>,
    endpoints: HashMap<String, VecDeque<Sample>>,
}

impl Quality {
    pub(super) fn len(&self) -> usize {
        self.calls.len() + self.endpoints.len()
    }

    /// An RTCP event: one more sample for its call and its endpoint. True if anything changed.
    pub(super) fn rtcp(&mut self, p: &Packet, now_ms: u64) -> bool {
        let (Some(channel), Some(sample)) = (p.get("Channel"), sample_from(p, now_ms)) else {
            return false;
        };
        let endpoint = endpoint_of(channel);
        let known_call = self.calls.contains_key(channel);
        if known_call || self.calls.len() < MAX_CHANNELS {
            let call = self.calls.entry(channel.to_owned()).or_default();
            endpoint.clone_into(&mut call.endpoint);
            push_bounded(&mut call.series, sample.clone(), CALL_SAMPLES);
        }
        if self.endpoints.contains_key(endpoint) || self.endpoints.len() < MAX_ENDPOINTS {
            let series = self.endpoints.entry(endpoint.to_owned()).or_default();
            push_bounded(series, sample, ENDPOINT_SAMPLES);
            prune(series, now_ms);
        }
        true
    }

    /// A channel hung up: its call series goes (its endpoint's window keeps the samples).
    pub(super) fn hangup(&mut self, p: &Packet) -> bool {
        p.get("Channel")
            .is_some_and(|c| self.calls.remove(c).is_some())
    }

    pub(super) fn to_json(&self, now_ms: u64) -> Value {
        let calls: serde_json::Map<String, Value> = self
            .calls
            .iter()
            .map(|(channel, call)| {
                let latest = |d: Direction| {
                    call.series
                        .iter()
                        .rev()
                        .find(|s| s.direction == d)
                        .map(Sample::to_json)
                };
                let value = json!({
                    "endpoint": call.endpoint,
                    "inbound": latest(Direction::Inbound),
                    "outbound": latest(Direction::Outbound),
                    "series": call.series.iter().map(Sample::to_json).collect::<Vec<_>>(),
                });
                (channel.clone(), value)
            })
            .collect();
        let endpoints: serde_json::Map<String, Value> = self
            .endpoints
            .iter()
            .map(|(name, series)| (name.clone(), summary(series, now_ms)))
            .collect();
        json!({ "calls": calls, "endpoints": endpoints })
    }
}

fn push_bounded(series: &mut VecDeque<Sample>, sample: Sample, cap: usize) {
    if series.len() >= cap {
        series.pop_front();
    }
    series.push_back(sample);
}

fn prune(series: &mut VecDeque<Sample>, now_ms: u64) {
    while series
        .front()
        .is_some_and(|s| now_ms.saturating_sub(s.at_ms) > ENDPOINT_WINDOW_MS)
    {
        series.pop_front();
    }
}

/// Worst and average figures of an endpoint over the window, plus its samples.
fn summary(series: &VecDeque<Sample>, now_ms: u64) -> Value {
    let recent: Vec<&Sample> = series
        .iter()
        .filter(|s| now_ms.saturating_sub(s.at_ms) <= ENDPOINT_WINDOW_MS)
        .collect();
    let n = recent.len().max(1) as f64;
    let avg = |f: fn(&Sample) -> f64| round2(recent.iter().map(|s| f(s)).sum::<f64>() / n);
    let max = |f: fn(&Sample) -> f64| round2(recent.iter().map(|s| f(s)).fold(0.0, f64::max));
    let min_mos = recent.iter().map(|s| s.mos).fold(f64::INFINITY, f64::min);
    json!({
        "samples": recent.len(),
        "loss_pct": {"avg": avg(|s| s.loss_pct), "max": max(|s| s.loss_pct)},
        "jitter_ms": {"avg": avg(|s| s.jitter_ms), "max": max(|s| s.jitter_ms)},
        "rtt_ms": {"max": max(|s| s.rtt_ms.unwrap_or(0.0))},
        "mos": {"avg": avg(|s| s.mos), "min": if recent.is_empty() { Value::Null } else { json!(round2(min_mos)) }},
        "series": recent.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
    })
}
