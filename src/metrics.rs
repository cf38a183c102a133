//! Process-wide counters and gauges (atomics), rendered as Prometheus text with the `amihub_` prefix.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Shared by every actor through an `Arc`; each field is one metric.
#[derive(Debug, Default)]
pub struct Metrics {
    pub pbx_connects_total: AtomicU64,
    pub pbx_disconnects_total: AtomicU64,
    pub pbx_auth_failures_total: AtomicU64,
    pub pbx_connected: AtomicU64,
    pub ami_packets_in_total: AtomicU64,
    pub ami_bytes_in_total: AtomicU64,
    pub ami_malformed_total: AtomicU64,
    pub ami_actions_out_total: AtomicU64,
    pub ws_sessions: AtomicU64,
    pub ws_sessions_total: AtomicU64,
    pub ws_messages_out_total: AtomicU64,
    pub ws_bytes_out_total: AtomicU64,
    pub ws_client_messages_total: AtomicU64,
    pub ws_client_errors_total: AtomicU64,
    pub ws_slow_consumer_closes_total: AtomicU64,
    pub ws_refused_sessions_total: AtomicU64,
    pub ami_sessions: AtomicU64,
    pub ami_sessions_total: AtomicU64,
    pub ami_logins_total: AtomicU64,
    pub ami_login_failures_total: AtomicU64,
    pub ami_messages_out_total: AtomicU64,
    pub ami_bytes_out_total: AtomicU64,
    pub ami_client_actions_total: AtomicU64,
    pub ami_client_errors_total: AtomicU64,
    pub ami_slow_consumer_closes_total: AtomicU64,
    pub ami_refused_sessions_total: AtomicU64,
    pub ajam_sessions: AtomicU64,
    pub ajam_sessions_total: AtomicU64,
    pub ajam_logins_total: AtomicU64,
    pub ajam_login_failures_total: AtomicU64,
    pub ajam_requests_total: AtomicU64,
    pub ajam_expired_sessions_total: AtomicU64,
    pub ajam_queued_events: AtomicU64,
    pub ajam_events_dropped_total: AtomicU64,
    pub actions_refused_total: AtomicU64,
    pub auth_failures_total: AtomicU64,
    pub cluster_redis_up: AtomicU64,
    pub cluster_owned_servers: AtomicU64,
    pub cluster_acquisitions_total: AtomicU64,
    pub cluster_fenced_total: AtomicU64,
    pub history_frames: AtomicU64,
    pub history_bytes: AtomicU64,
    pub resume_requests_total: AtomicU64,
    pub resume_frames_total: AtomicU64,
    pub resume_gaps_total: AtomicU64,
    /// Round trip of routed actions, from writing upstream to the final reply.
    pub action_duration: Histogram,
    /// Estimated MOS of every RTCP report (both directions, every PBX).
    pub rtcp_mos: Histogram<MosScale>,
    /// Packet loss of every RTCP report, in percent.
    pub rtcp_loss: Histogram<LossPercent>,
}

/// The upper bounds of a histogram's buckets.
pub trait Buckets {
    const BOUNDS: &'static [f64];
}

/// Seconds, for the action round trip.
#[derive(Debug, Default)]
pub struct Seconds;
impl Buckets for Seconds {
    const BOUNDS: &'static [f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ];
}

/// Estimated MOS (1 to 4.5), finer where calls turn from fair to poor.
#[derive(Debug, Default)]
pub struct MosScale;
impl Buckets for MosScale {
    const BOUNDS: &'static [f64] = &[1.5, 2.0, 2.5, 3.0, 3.3, 3.6, 3.8, 4.0, 4.2, 4.4, 4.5];
}

/// Packet loss in percent.
#[derive(Debug, Default)]
pub struct LossPercent;
impl Buckets for LossPercent {
    const BOUNDS: &'static [f64] = &[0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0];
}

/// A fixed-bucket Prometheus histogram over atomics; the sum is kept in millionths.
#[derive(Debug)]
pub struct Histogram<B: Buckets = Seconds> {
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
    _bounds: std::marker::PhantomData<B>,
}

impl<B: Buckets> Default for Histogram<B> {
    fn default() -> Self {
        Histogram {
            counts: B::BOUNDS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            _bounds: std::marker::PhantomData,
        }
    }
}

impl Histogram<Seconds> {
    pub fn observe(&self, d: std::time::Duration) {
        self.observe_value(d.as_secs_f64());
    }
}

impl<B: Buckets> Histogram<B> {
    /// Counts one value; a NaN or negative one counts as 0.
    pub fn observe_value(&self, v: f64) {
        let v = if v.is_nan() { 0.0 } else { v.max(0.0) };
        if let Some(i) = B::BOUNDS.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((v * 1e6) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP amihub_{name} {help}");
        let _ = writeln!(out, "# TYPE amihub_{name} histogram");
        let mut cumulative = 0;
        for (b, c) in B::BOUNDS.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "amihub_{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "amihub_{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "amihub_{name}_sum {sum}");
        let _ = writeln!(out, "amihub_{name}_count {count}");
    }
}

/// A cheap handle to the process metrics.
pub type SharedMetrics = Arc<Metrics>;

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let rows: &[(&str, &str, &AtomicU64, &str)] = &[
            (
                "pbx_connects_total",
                "counter",
                &self.pbx_connects_total,
                "Successful AMI logins.",
            ),
            (
                "cluster_redis_up",
                "gauge",
                &self.cluster_redis_up,
                "1 while this cluster node reaches Redis (0 in single-node mode).",
            ),
            (
                "cluster_owned_servers",
                "gauge",
                &self.cluster_owned_servers,
                "PBXs whose lease this cluster node holds.",
            ),
            (
                "cluster_acquisitions_total",
                "counter",
                &self.cluster_acquisitions_total,
                "PBX leases this node took (starts and takeovers).",
            ),
            (
                "cluster_fenced_total",
                "counter",
                &self.cluster_fenced_total,
                "Leases lost while owning: publishing refused, connection closed.",
            ),
            (
                "pbx_disconnects_total",
                "counter",
                &self.pbx_disconnects_total,
                "AMI connections lost or dropped.",
            ),
            (
                "pbx_auth_failures_total",
                "counter",
                &self.pbx_auth_failures_total,
                "AMI logins refused by a PBX.",
            ),
            (
                "pbx_connected",
                "gauge",
                &self.pbx_connected,
                "PBXs currently logged in.",
            ),
            (
                "ami_packets_in_total",
                "counter",
                &self.ami_packets_in_total,
                "AMI packets parsed.",
            ),
            (
                "ami_bytes_in_total",
                "counter",
                &self.ami_bytes_in_total,
                "Bytes read from PBXs.",
            ),
            (
                "ami_malformed_total",
                "counter",
                &self.ami_malformed_total,
                "AMI packets discarded for breaking a bound.",
            ),
            (
                "ami_actions_out_total",
                "counter",
                &self.ami_actions_out_total,
                "Actions written to PBXs.",
            ),
            (
                "ws_sessions",
                "gauge",
                &self.ws_sessions,
                "Open WebSocket sessions.",
            ),
            (
                "ws_sessions_total",
                "counter",
                &self.ws_sessions_total,
                "WebSocket sessions opened.",
            ),
            (
                "ws_messages_out_total",
                "counter",
                &self.ws_messages_out_total,
                "Frames queued to WebSocket clients.",
            ),
            (
                "ws_bytes_out_total",
                "counter",
                &self.ws_bytes_out_total,
                "Payload bytes queued to WebSocket clients.",
            ),
            (
                "ws_client_messages_total",
                "counter",
                &self.ws_client_messages_total,
                "Messages received from clients.",
            ),
            (
                "ws_client_errors_total",
                "counter",
                &self.ws_client_errors_total,
                "Client messages answered with an error.",
            ),
            (
                "ws_slow_consumer_closes_total",
                "counter",
                &self.ws_slow_consumer_closes_total,
                "Sessions closed with 4008 for falling behind.",
            ),
            (
                "ws_refused_sessions_total",
                "counter",
                &self.ws_refused_sessions_total,
                "WebSocket upgrades refused (limits).",
            ),
            (
                "ami_sessions",
                "gauge",
                &self.ami_sessions,
                "Open AMI listener sessions (logged in or not).",
            ),
            (
                "ami_sessions_total",
                "counter",
                &self.ami_sessions_total,
                "AMI listener connections accepted.",
            ),
            (
                "ami_logins_total",
                "counter",
                &self.ami_logins_total,
                "AMI listener logins accepted.",
            ),
            (
                "ami_login_failures_total",
                "counter",
                &self.ami_login_failures_total,
                "AMI listener logins refused (then delayed and closed).",
            ),
            (
                "ami_messages_out_total",
                "counter",
                &self.ami_messages_out_total,
                "Packets queued to AMI listener clients.",
            ),
            (
                "ami_bytes_out_total",
                "counter",
                &self.ami_bytes_out_total,
                "Bytes queued to AMI listener clients.",
            ),
            (
                "ami_client_actions_total",
                "counter",
                &self.ami_client_actions_total,
                "Actions received from AMI listener clients.",
            ),
            (
                "ami_client_errors_total",
                "counter",
                &self.ami_client_errors_total,
                "AMI client actions answered with an error by amihub.",
            ),
            (
                "ami_slow_consumer_closes_total",
                "counter",
                &self.ami_slow_consumer_closes_total,
                "AMI sessions closed for falling behind.",
            ),
            (
                "ami_refused_sessions_total",
                "counter",
                &self.ami_refused_sessions_total,
                "AMI connections refused (max_sessions, auth timeout).",
            ),
            (
                "ajam_sessions",
                "gauge",
                &self.ajam_sessions,
                "Live HTTP manager (AJAM) sessions, cookie and Digest.",
            ),
            (
                "ajam_sessions_total",
                "counter",
                &self.ajam_sessions_total,
                "AJAM sessions started.",
            ),
            (
                "ajam_logins_total",
                "counter",
                &self.ajam_logins_total,
                "AJAM logins accepted (action=Login and Digest).",
            ),
            (
                "ajam_login_failures_total",
                "counter",
                &self.ajam_login_failures_total,
                "AJAM logins refused (action=Login and Digest).",
            ),
            (
                "ajam_requests_total",
                "counter",
                &self.ajam_requests_total,
                "AJAM requests served.",
            ),
            (
                "ajam_expired_sessions_total",
                "counter",
                &self.ajam_expired_sessions_total,
                "AJAM cookie sessions ended by httptimeout.",
            ),
            (
                "ajam_queued_events",
                "gauge",
                &self.ajam_queued_events,
                "Events waiting for WaitEvent in all AJAM sessions.",
            ),
            (
                "ajam_events_dropped_total",
                "counter",
                &self.ajam_events_dropped_total,
                "Events dropped from full AJAM session queues (oldest first).",
            ),
            (
                "actions_refused_total",
                "counter",
                &self.actions_refused_total,
                "Client actions refused before reaching a PBX.",
            ),
            (
                "auth_failures_total",
                "counter",
                &self.auth_failures_total,
                "Requests refused for missing or wrong credentials.",
            ),
            (
                "history_frames",
                "gauge",
                &self.history_frames,
                "Broadcast frames kept for resume, all servers.",
            ),
            (
                "history_bytes",
                "gauge",
                &self.history_bytes,
                "Bytes of history kept for resume (frames and parsed packets), all servers.",
            ),
            (
                "resume_requests_total",
                "counter",
                &self.resume_requests_total,
                "Resume requests (ProxyAction Resume and ?resume=).",
            ),
            (
                "resume_frames_total",
                "counter",
                &self.resume_frames_total,
                "Frames replayed to resuming sessions.",
            ),
            (
                "resume_gaps_total",
                "counter",
                &self.resume_gaps_total,
                "Resume gaps: servers answered with resume gap (window passed, epoch changed, too big), and cluster frames a node never read (trimmed).",
            ),
        ];
        let mut out = String::with_capacity(4096);
        for &(name, kind, value, help) in rows {
            let _ = writeln!(out, "# HELP amihub_{name} {help}");
            let _ = writeln!(out, "# TYPE amihub_{name} {kind}");
            let _ = writeln!(out, "amihub_{name} {}", value.load(Relaxed));
        }
        self.action_duration.render(
            &mut out,
            "action_duration_seconds",
            "Round trip of actions routed to a PBX, until their final reply.",
        );
        self.rtcp_mos.render(
            &mut out,
            "rtcp_mos",
            "Estimated MOS (simplified E-model) of each RTCP report block, both directions.",
        );
        self.rtcp_loss.render(
            &mut out,
            "rtcp_loss_percent",
            "Packet loss (fraction lost, percent) of each RTCP report block, both directions.",
        );
        out
    }
}
