//! Call quality over time: per live call a bounded series of RTCP samples (see `rtcp` for the
//! formulas) and its measured RTP clock; per endpoint fixed time buckets over a bounded window,
//! so a trunk with hundreds of calls costs no more than a phone; thresholds that grade a figure
//! good, warn or bad; the worst-first summary behind `GET /api/v1/servers/{id}/quality`.
//!
//! Knows RTCP events only; endpoint health (contacts, user agents) is `changes`.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::rtcp::{
    clock_from_srs, direction_of, endpoint_of, round2, sample_from, sender_report, Direction,
    Sample, SenderReport, DEFAULT_CLOCK_HZ,
};
use super::{MAX_CHANNELS, MAX_ENDPOINTS};
use crate::ami::Packet;

/// Samples kept per call (one RTCP report every ~5 s per direction: ~5 minutes).
pub const CALL_SAMPLES: usize = 120;
/// Width of one per-endpoint bucket.
pub const BUCKET_MS: u64 = 15_000;
/// Buckets kept per endpoint: together the window of the per-endpoint summary.
pub const ENDPOINT_BUCKETS: usize = 60;
/// How far back the per-endpoint summary looks (15 minutes).
pub const ENDPOINT_WINDOW_MS: u64 = BUCKET_MS * ENDPOINT_BUCKETS as u64;

/// Where a figure turns from good to warn and from warn to bad (`[quality]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub loss_warn_pct: f64,
    pub loss_bad_pct: f64,
    pub jitter_warn_ms: f64,
    pub jitter_bad_ms: f64,
    pub rtt_warn_ms: f64,
    pub rtt_bad_ms: f64,
    /// A MOS below this is warn, below `mos_bad` bad.
    pub mos_warn: f64,
    pub mos_bad: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            loss_warn_pct: 1.0,
            loss_bad_pct: 5.0,
            jitter_warn_ms: 20.0,
            jitter_bad_ms: 50.0,
            rtt_warn_ms: 300.0,
            rtt_bad_ms: 600.0,
            mos_warn: 4.0,
            mos_bad: 3.6,
        }
    }
}

/// How a figure (or a call, by its worst figure) stands against the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grade {
    Good,
    Warn,
    Bad,
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::Good => "good",
            Grade::Warn => "warn",
            Grade::Bad => "bad",
        }
    }
}

impl Thresholds {
    /// What is wrong with these thresholds, one message per problem.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let pairs = [
            (
                "loss_warn_pct",
                self.loss_warn_pct,
                "loss_bad_pct",
                self.loss_bad_pct,
            ),
            (
                "jitter_warn_ms",
                self.jitter_warn_ms,
                "jitter_bad_ms",
                self.jitter_bad_ms,
            ),
            (
                "rtt_warn_ms",
                self.rtt_warn_ms,
                "rtt_bad_ms",
                self.rtt_bad_ms,
            ),
            ("mos_bad", self.mos_bad, "mos_warn", self.mos_warn),
        ];
        for (lo_name, lo, hi_name, hi) in pairs {
            if !lo.is_finite() || !hi.is_finite() || lo < 0.0 || hi < 0.0 {
                out.push(format!(
                    "quality.{lo_name} and quality.{hi_name} must be finite and >= 0"
                ));
            } else if lo > hi {
                out.push(format!(
                    "quality.{lo_name} ({lo}) must not exceed quality.{hi_name} ({hi})"
                ));
            }
        }
        out
    }

    fn above(value: f64, warn: f64, bad: f64) -> Grade {
        if value >= bad {
            Grade::Bad
        } else if value >= warn {
            Grade::Warn
        } else {
            Grade::Good
        }
    }

    /// The worst grade of a sample's loss, jitter, round trip (when known) and MOS.
    pub fn grade(&self, s: &Sample) -> Grade {
        let mos = if s.mos < self.mos_bad {
            Grade::Bad
        } else if s.mos < self.mos_warn {
            Grade::Warn
        } else {
            Grade::Good
        };
        let rtt = s.rtt_ms.map_or(Grade::Good, |r| {
            Self::above(r, self.rtt_warn_ms, self.rtt_bad_ms)
        });
        [
            Self::above(s.loss_pct, self.loss_warn_pct, self.loss_bad_pct),
            Self::above(s.jitter_ms, self.jitter_warn_ms, self.jitter_bad_ms),
            rtt,
            mos,
        ]
        .into_iter()
        .max()
        .unwrap_or(Grade::Good)
    }
}

#[derive(Debug, Clone, Default)]
struct CallQuality {
    endpoint: String,
    series: VecDeque<Sample>,
    /// Measured RTP clock rate; `None` until two sender reports of one stream were seen.
    clock_hz: Option<f64>,
    /// The last sender report seen in each event (`RTCPSent`: Asterisk's stream,
    /// `RTCPReceived`: the far end's).
    last_sr: [Option<SenderReport>; 2],
}

impl CallQuality {
    fn latest(&self, d: Direction) -> Option<&Sample> {
        self.series.iter().rev().find(|s| s.direction == d)
    }

    /// The worse of the latest inbound and outbound samples (lower MOS).
    fn worst_latest(&self) -> Option<&Sample> {
        let (a, b) = (
            self.latest(Direction::Inbound),
            self.latest(Direction::Outbound),
        );
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.mos < a.mos { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// Aggregates of the samples of one endpoint that arrived in one [`BUCKET_MS`] slot.
#[derive(Debug, Clone, PartialEq)]
struct Bucket {
    start_ms: u64,
    samples: u32,
    loss_sum: f64,
    loss_max: f64,
    jitter_sum: f64,
    jitter_max: f64,
    rtt_max: Option<f64>,
    mos_sum: f64,
    mos_min: f64,
}

impl Bucket {
    fn new(start_ms: u64) -> Bucket {
        Bucket {
            start_ms,
            samples: 0,
            loss_sum: 0.0,
            loss_max: 0.0,
            jitter_sum: 0.0,
            jitter_max: 0.0,
            rtt_max: None,
            mos_sum: 0.0,
            mos_min: f64::INFINITY,
        }
    }

    fn add(&mut self, s: &Sample) {
        self.merge(&Bucket {
            start_ms: self.start_ms,
            samples: 1,
            loss_sum: s.loss_pct,
            loss_max: s.loss_pct,
            jitter_sum: s.jitter_ms,
            jitter_max: s.jitter_ms,
            rtt_max: s.rtt_ms,
            mos_sum: s.mos,
            mos_min: s.mos,
        });
    }

    fn merge(&mut self, o: &Bucket) {
        self.samples += o.samples;
        self.loss_sum += o.loss_sum;
        self.loss_max = self.loss_max.max(o.loss_max);
        self.jitter_sum += o.jitter_sum;
        self.jitter_max = self.jitter_max.max(o.jitter_max);
        self.rtt_max = match (self.rtt_max, o.rtt_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.mos_sum += o.mos_sum;
        self.mos_min = self.mos_min.min(o.mos_min);
    }

    /// The bucket's worst figures as one sample, for grading.
    fn worst(&self) -> Sample {
        Sample {
            at_ms: self.start_ms,
            direction: Direction::Inbound,
            loss_pct: self.loss_max,
            cumulative_lost: 0,
            jitter_ms: self.jitter_max,
            rtt_ms: self.rtt_max,
            mos: self.mos_min,
        }
    }

    fn to_json(&self) -> Value {
        let n = f64::from(self.samples.max(1));
        json!({
            "at_ms": self.start_ms,
            "samples": self.samples,
            "loss_pct": {"avg": round2(self.loss_sum / n), "max": round2(self.loss_max)},
            "jitter_ms": {"avg": round2(self.jitter_sum / n), "max": round2(self.jitter_max)},
            "rtt_ms": {"max": self.rtt_max.map(round2)},
            "mos": {"avg": round2(self.mos_sum / n), "min": round2(self.mos_min)},
        })
    }
}

#[derive(Debug, Clone, Default)]
struct EndpointQuality {
    buckets: VecDeque<Bucket>,
}

impl EndpointQuality {
    fn add(&mut self, s: &Sample) {
        let start = s.at_ms - s.at_ms % BUCKET_MS;
        match self.buckets.back_mut() {
            // A clock that stepped back lands in the newest bucket rather than reordering.
            Some(b) if b.start_ms >= start => b.add(s),
            _ => {
                if self.buckets.len() >= ENDPOINT_BUCKETS {
                    self.buckets.pop_front();
                }
                let mut b = Bucket::new(start);
                b.add(s);
                self.buckets.push_back(b);
            }
        }
    }

    fn recent(&self, now_ms: u64) -> impl Iterator<Item = &Bucket> {
        let from = now_ms.saturating_sub(ENDPOINT_WINDOW_MS);
        self.buckets
            .iter()
            .filter(move |b| b.start_ms + BUCKET_MS > from)
    }

    /// All buckets in the window merged into one; `None` when the window is empty.
    fn total(&self, now_ms: u64) -> Option<Bucket> {
        self.recent(now_ms).fold(None, |acc: Option<Bucket>, b| {
            let mut t = acc.unwrap_or_else(|| Bucket::new(b.start_ms));
            t.merge(b);
            Some(t)
        })
    }

    fn summary(&self, now_ms: u64, with_series: bool) -> Value {
        let total = self.total(now_ms);
        let mut v = total.as_ref().map_or_else(
            || Bucket::new(now_ms).to_json(),
            |t| {
                let mut v = t.to_json();
                v["at_ms"] = json!(self.recent(now_ms).next().map(|b| b.start_ms));
                v
            },
        );
        if total.is_none() {
            v["mos"]["min"] = Value::Null;
        }
        if with_series {
            v["series"] = self.recent(now_ms).map(Bucket::to_json).collect();
        }
        v
    }
}

/// Quality per live call (keyed by channel name) and per endpoint.
#[derive(Debug, Clone, Default)]
pub(super) struct Quality {
    calls: HashMap<String, CallQuality>,
    endpoints: HashMap<String, EndpointQuality>,
    /// The sample the last `rtcp` call produced, until taken (for the metrics).
    last: Option<Sample>,
}

impl Quality {
    pub(super) fn len(&self) -> usize {
        self.calls.len() + self.endpoints.len()
    }

    /// An RTCP event: one more sample for its call and its endpoint, and the call's clock rate
    /// measured from its sender reports. True if anything changed.
    pub(super) fn rtcp(&mut self, p: &Packet, now_ms: u64) -> bool {
        let (Some(channel), Some(direction)) = (p.get("Channel"), direction_of(p)) else {
            return false;
        };
        let endpoint = endpoint_of(channel);
        let room = self.calls.contains_key(channel) || self.calls.len() < MAX_CHANNELS;
        let sr = sender_report(p);
        if room && sr.is_some() {
            learn_clock(self.call(channel, endpoint), direction, sr);
        }
        let clock = self.calls.get(channel).and_then(|c| c.clock_hz);
        let Some(sample) = sample_from(p, now_ms, clock.unwrap_or(DEFAULT_CLOCK_HZ)) else {
            return false;
        };
        if room {
            let series = &mut self.call(channel, endpoint).series;
            if series.len() >= CALL_SAMPLES {
                series.pop_front();
            }
            series.push_back(sample.clone());
        }
        if !self.endpoints.contains_key(endpoint) && self.endpoints.len() >= MAX_ENDPOINTS {
            // Make room from endpoints with nothing left in the window.
            self.endpoints
                .retain(|_, e| e.recent(now_ms).next().is_some());
        }
        if self.endpoints.contains_key(endpoint) || self.endpoints.len() < MAX_ENDPOINTS {
            self.endpoints
                .entry(endpoint.to_owned())
                .or_default()
                .add(&sample);
        }
        self.last = Some(sample);
        true
    }

    fn call(&mut self, channel: &str, endpoint: &str) -> &mut CallQuality {
        self.calls
            .entry(channel.to_owned())
            .or_insert_with(|| CallQuality {
                endpoint: endpoint.to_owned(),
                ..CallQuality::default()
            })
    }

    /// The sample the last RTCP event produced, once.
    pub(super) fn take_last(&mut self) -> Option<Sample> {
        self.last.take()
    }

    /// A channel hung up: its call series goes (its endpoint's buckets keep the figures).
    pub(super) fn hangup(&mut self, p: &Packet) -> bool {
        p.get("Channel")
            .is_some_and(|c| self.calls.remove(c).is_some())
    }

    /// Everything: every call with its latest figures and series, every endpoint's window.
    pub(super) fn to_json(&self, now_ms: u64) -> Value {
        let calls: serde_json::Map<String, Value> = self
            .calls
            .iter()
            .map(|(channel, call)| {
                let value = json!({
                    "endpoint": call.endpoint,
                    "clock_hz": call.clock_hz.unwrap_or(DEFAULT_CLOCK_HZ),
                    "inbound": call.latest(Direction::Inbound).map(Sample::to_json),
                    "outbound": call.latest(Direction::Outbound).map(Sample::to_json),
                    "series": call.series.iter().map(Sample::to_json).collect::<Vec<_>>(),
                });
                (channel.clone(), value)
            })
            .collect();
        let endpoints: serde_json::Map<String, Value> = self
            .endpoints
            .iter()
            .map(|(name, e)| (name.clone(), e.summary(now_ms, true)))
            .collect();
        json!({ "calls": calls, "endpoints": endpoints })
    }

    /// Live calls, worst first (lowest MOS of their latest inbound/outbound figures), at most
    /// `limit`, each graded; plus how many calls have figures at all, and of them how many are
    /// [bad, warn].
    pub(super) fn worst_calls(
        &self,
        limit: usize,
        th: &Thresholds,
    ) -> (Vec<Value>, usize, [usize; 2]) {
        let mut rows: Vec<(&String, &CallQuality, &Sample)> = self
            .calls
            .iter()
            .filter_map(|(c, q)| q.worst_latest().map(|s| (c, q, s)))
            .collect();
        let total = rows.len();
        let count = |g: Grade| rows.iter().filter(|r| th.grade(r.2) == g).count();
        let graded = [count(Grade::Bad), count(Grade::Warn)];
        rows.sort_by(|a, b| a.2.mos.total_cmp(&b.2.mos).then_with(|| a.0.cmp(b.0)));
        let out = rows
            .into_iter()
            .take(limit)
            .map(|(channel, q, worst)| {
                json!({
                    "channel": channel,
                    "endpoint": q.endpoint,
                    "grade": th.grade(worst).as_str(),
                    "worst": worst.to_json(),
                    "inbound": q.latest(Direction::Inbound).map(Sample::to_json),
                    "outbound": q.latest(Direction::Outbound).map(Sample::to_json),
                })
            })
            .collect();
        (out, total, graded)
    }

    /// Endpoints with figures in the window, worst first (lowest MOS seen), at most `limit`.
    pub(super) fn worst_endpoints(
        &self,
        now_ms: u64,
        limit: usize,
        th: &Thresholds,
    ) -> Vec<(String, Value)> {
        let mut rows: Vec<(&String, Bucket, &EndpointQuality)> = self
            .endpoints
            .iter()
            .filter_map(|(n, e)| e.total(now_ms).map(|t| (n, t, e)))
            .collect();
        rows.sort_by(|a, b| {
            a.1.mos_min
                .total_cmp(&b.1.mos_min)
                .then_with(|| a.0.cmp(b.0))
        });
        rows.into_iter()
            .take(limit)
            .map(|(name, total, e)| {
                let mut v = e.summary(now_ms, false);
                v["grade"] = json!(th.grade(&total.worst()).as_str());
                (name.clone(), v)
            })
            .collect()
    }

    /// One endpoint's window with its bucket series; `None` if it never had figures.
    pub(super) fn endpoint_detail(
        &self,
        name: &str,
        now_ms: u64,
        th: &Thresholds,
    ) -> Option<Value> {
        let e = self.endpoints.get(name)?;
        let mut v = e.summary(now_ms, true);
        if let Some(total) = e.total(now_ms) {
            v["grade"] = json!(th.grade(&total.worst()).as_str());
        }
        if let Value::Array(series) = &mut v["series"] {
            for (b, item) in e.recent(now_ms).zip(series.iter_mut()) {
                item["grade"] = json!(th.grade(&b.worst()).as_str());
            }
        }
        Some(v)
    }
}

/// Records an SR of `direction`'s event and, with the previous one of the same stream, the
/// call's clock rate.
fn learn_clock(call: &mut CallQuality, direction: Direction, sr: Option<SenderReport>) {
    let Some(sr) = sr else {
        return;
    };
    let slot = &mut call.last_sr[direction as usize];
    if let Some(rate) = slot.as_ref().and_then(|prev| clock_from_srs(prev, &sr)) {
        call.clock_hz = Some(rate);
    }
    *slot = Some(sr);
}
