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
    pub actions_refused_total: AtomicU64,
    pub auth_failures_total: AtomicU64,
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
        ];
        let mut out = String::with_capacity(4096);
        for &(name, kind, value, help) in rows {
            let _ = writeln!(out, "# HELP amihub_{name} {help}");
            let _ = writeln!(out, "# TYPE amihub_{name} {kind}");
            let _ = writeln!(out, "amihub_{name} {}", value.load(Relaxed));
        }
        out
    }
}
