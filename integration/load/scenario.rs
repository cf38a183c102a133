//! One scenario: a fresh simulator and amihub, clients connected (busy, stalled or idle), a
//! flood with a Seq and SentNs in every event, then a drain until every client has the final
//! Seq or a deadline passes. Every phase has a deadline.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amihub::sim::FloodSpec;
use tokio::sync::Semaphore;

use crate::hist::Hist;
use crate::hub::{start_sim, Hub};
use crate::procfs::{own_thread_stat, rss_kib, status_kib, CpuMeter, MachineCpu, RssSampler};
use crate::wsclient::{self, Ending, Report, Role, Shared};

/// amihub's default `session_queue_bytes`.
pub const DEFAULT_QUEUE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// Busy (reading) clients.
    pub clients: usize,
    /// Events per second; 0 = as fast as possible.
    pub rate: u64,
    pub duration: Duration,
    pub event_bytes: usize,
    /// Clients that connect, then read nothing until the flood is over.
    pub stalled: usize,
    /// Idle sessions (no flood is run when there are no busy or stalled clients).
    pub idle: usize,
    /// SO_RCVBUF of stalled clients (0 = the OS default).
    pub stalled_rcvbuf: u32,
    /// `[limits] session_queue_bytes` (None = amihub's default).
    pub queue_bytes: Option<u64>,
    /// How long after the flood clients may take to get the final Seq.
    pub drain: Duration,
}

/// What one scenario measured.
#[derive(Debug, Default)]
pub struct Outcome {
    pub error: Option<String>,
    pub busy_joined: usize,
    pub idle_joined: usize,
    pub stalled_joined: usize,
    pub connect_s: f64,
    pub flooded: bool,
    /// Final Seq (events the simulator sent).
    pub events: u64,
    pub offered: f64,
    pub delivered_total: f64,
    pub min_client: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub latency_samples: u64,
    /// Mean payload of a flood message as delivered (the JSON text).
    pub avg_frame_bytes: u64,
    pub lost: u64,
    pub out_of_order: u64,
    /// Busy clients the server closed, and how.
    pub busy_cut: Vec<String>,
    /// Busy clients still connected that never saw the final Seq by the deadline.
    pub busy_unfinished: usize,
    pub stalled_endings: Vec<Ending>,
    pub stalled_bytes_after: Vec<u64>,
    /// Seconds from the flood's start to the end of each stalled client's stream.
    pub stalled_ended_at: Vec<f64>,
    pub log_cuts: u64,
    pub drain_s: f64,
    pub rss_base_mb: f64,
    pub rss_start_mb: f64,
    pub rss_peak_mb: f64,
    pub rss_hwm_mb: f64,
    /// The RSS growth of the same run without the stalled clients (the matrix's stalled row
    /// runs that first), so what the stalled clients cost is told apart from what the busy
    /// clients and the filling resume history cost.
    pub baseline_growth_mb: Option<f64>,
    pub idle_kb_per_session: Option<f64>,
    pub amihub_cpu: f64,
    pub tool_cpu: f64,
    pub sim_cpu: f64,
    /// The whole machine, % of one core.
    pub machine_cpu: f64,
    pub wall_s: f64,
    pub log_tail: Vec<String>,
}

impl Outcome {
    pub fn stalled_4008(&self) -> usize {
        self.stalled_endings
            .iter()
            .filter(|e| matches!(e, Ending::Closed(4008, _)))
            .count()
    }

    /// CPU used by everything else on the machine during the flood, % of one core.
    pub fn other_cpu(&self) -> f64 {
        (self.machine_cpu - self.amihub_cpu - self.tool_cpu - self.sim_cpu).max(0.0)
    }

    pub fn rss_growth_mb(&self) -> f64 {
        (self.rss_peak_mb - self.rss_start_mb).max(0.0)
    }

    /// The growth the stalled clients add over the baseline run (all of it without one).
    pub fn stalled_growth_mb(&self) -> f64 {
        (self.rss_growth_mb() - self.baseline_growth_mb.unwrap_or(0.0)).max(0.0)
    }
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub async fn run(sc: &Scenario, exe: &Path) -> Outcome {
    let started = Instant::now();
    let mut out = Outcome::default();
    if let Err(e) = run_inner(sc, exe, &mut out).await {
        out.error = Some(format!("{e:#}"));
    }
    out.wall_s = started.elapsed().as_secs_f64();
    out
}

async fn run_inner(sc: &Scenario, exe: &Path, out: &mut Outcome) -> anyhow::Result<()> {
    let sim = start_sim("load")?;
    let result = with_sim(sc, exe, &sim, out).await;
    sim.stop();
    result
}

async fn with_sim(
    sc: &Scenario,
    exe: &Path,
    sim: &amihub::sim::SimPbx,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let hub = Hub::start(exe, sim.addr(), sc.queue_bytes)?;
    let r = with_hub(sc, sim, &hub, out).await;
    out.log_cuts = hub.cuts.load(Relaxed);
    out.log_tail = hub.tail();
    r
}

async fn with_hub(
    sc: &Scenario,
    sim: &amihub::sim::SimPbx,
    hub: &Hub,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    hub.wait_connected(Duration::from_secs(15)).await?;
    let pid = hub.pid();
    let sampler = RssSampler::start(pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    out.rss_base_mb = mb(rss_kib(pid));

    // Connect everyone, at most 128 upgrades in flight.
    let shared = Arc::new(Shared::new(hub.cuts.clone(), sc.stalled as u64));
    let gate = Arc::new(Semaphore::new(128));
    let mut tasks: Vec<(Role, tokio::task::JoinHandle<Report>)> = Vec::new();
    let roles = std::iter::repeat_n(Role::Idle, sc.idle)
        .chain(std::iter::repeat_n(Role::Busy, sc.clients))
        .chain(std::iter::repeat_n(Role::Stalled, sc.stalled));
    let t_connect = Instant::now();
    for role in roles {
        let permit = gate.clone().acquire_owned().await?;
        let (shared, addr) = (shared.clone(), hub.addr);
        let rcvbuf = if role == Role::Stalled {
            sc.stalled_rcvbuf
        } else {
            0
        };
        tasks.push((
            role,
            tokio::spawn(wsclient::run(addr, role, rcvbuf, shared, permit)),
        ));
    }
    let total = tasks.len();
    let connect_deadline =
        t_connect + Duration::from_secs(30) + Duration::from_millis(total as u64 * 2);
    loop {
        let joined = shared.joined.load(Relaxed);
        let failed = tasks.iter().filter(|(_, t)| t.is_finished()).count();
        if joined + failed >= total || Instant::now() >= connect_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.connect_s = t_connect.elapsed().as_secs_f64();

    if sc.clients + sc.stalled == 0 {
        // Idle sessions: memory per session once everything has settled.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kib(pid);
        out.rss_start_mb = mb(after);
        out.rss_peak_mb = mb(sampler.peak_kib());
        out.rss_hwm_mb = mb(status_kib(pid, "VmHWM").unwrap_or(0));
        let reports = finish(&shared, tasks).await;
        out.idle_joined = reports.iter().filter(|(_, r)| r.joined).count();
        if out.idle_joined > 0 {
            out.idle_kb_per_session =
                Some((after as f64 - out.rss_base_mb * 1024.0) / out.idle_joined as f64);
        }
        return Ok(());
    }

    // The flood.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sampler.reset_peak();
    out.rss_start_mb = mb(rss_kib(pid));
    let sim_stat = own_thread_stat("sim-load").unwrap_or_default();
    let cpu = CpuMeter::start(vec![
        format!("/proc/{pid}/stat"),
        "/proc/self/stat".to_string(),
        sim_stat,
    ]);
    let machine = MachineCpu::start();
    let ev0 = sim.stats().events_sent;
    let count = (sc.rate > 0).then(|| sc.rate * sc.duration.as_secs().max(1));
    let t0 = Instant::now();
    out.flooded = true;
    sim.flood(FloodSpec {
        rate_per_s: (sc.rate > 0).then_some(sc.rate),
        count,
        event_bytes: sc.event_bytes,
    });
    let sent = |s: &amihub::sim::SimPbx| s.stats().events_sent - ev0;
    let sim_end;
    match count {
        Some(n) => {
            let deadline = t0 + sc.duration + sc.duration.max(Duration::from_secs(10));
            while sent(sim) < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sim_end = Instant::now();
            if sent(sim) < n {
                sim.stop_flood();
            }
        }
        None => {
            tokio::time::sleep(sc.duration).await;
            sim.stop_flood();
            sim_end = Instant::now();
        }
    }
    // The writer counts a batch once written: wait until the count holds still.
    let mut last = sent(sim);
    let mut still = Instant::now();
    let settle_deadline = Instant::now() + Duration::from_secs(5);
    while still.elapsed() < Duration::from_millis(300) && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = sent(sim);
        if now != last {
            last = now;
            still = Instant::now();
        }
    }
    out.events = last;
    out.offered = last as f64 / (sim_end - t0).as_secs_f64().max(1e-3);
    let target = last.max(shared.max_seq.load(Relaxed));
    shared.target.store(target, Relaxed);
    shared.target_set.cancel();
    shared.flood_over.store(true, Relaxed);

    // Drain: every busy client has the final Seq (or was closed), or the deadline.
    let t_drain = Instant::now();
    let drain_deadline = t_drain + sc.drain;
    let busy_total = tasks.iter().filter(|(r, _)| *r == Role::Busy).count();
    while shared.finished.load(Relaxed) < busy_total && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out.drain_s = t_drain.elapsed().as_secs_f64();
    // Stalled clients read to the end of their stream (amihub kills a cut one within seconds).
    let stalled_deadline = Instant::now() + Duration::from_secs(10);
    while tasks
        .iter()
        .any(|(r, t)| *r == Role::Stalled && !t.is_finished())
        && Instant::now() < stalled_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pct = cpu.percent();
    out.amihub_cpu = pct[0];
    out.sim_cpu = pct[2];
    out.tool_cpu = (pct[1] - pct[2]).max(0.0);
    out.machine_cpu = machine.percent();
    out.rss_peak_mb = mb(sampler.peak_kib());
    out.rss_hwm_mb = mb(status_kib(pid, "VmHWM").unwrap_or(0));

    let reports = finish(&shared, tasks).await;
    summarize(out, &reports, target, t0, sim_end);
    Ok(())
}

/// Stops every client and collects its report.
async fn finish(
    shared: &Shared,
    tasks: Vec<(Role, tokio::task::JoinHandle<Report>)>,
) -> Vec<(Role, Report)> {
    shared.stop.cancel();
    let mut reports = Vec::with_capacity(tasks.len());
    for (role, t) in tasks {
        if let Ok(r) = t.await {
            reports.push((role, r));
        }
    }
    reports
}

fn summarize(
    out: &mut Outcome,
    reports: &[(Role, Report)],
    target: u64,
    t0: Instant,
    sim_end: Instant,
) {
    let mut hist = Hist::new();
    let mut total = 0u64;
    let mut bytes = 0u64;
    let mut last_any: Option<Instant> = None;
    let mut min_rate = f64::INFINITY;
    for (role, r) in reports {
        match role {
            Role::Idle => out.idle_joined += usize::from(r.joined),
            Role::Stalled => {
                out.stalled_joined += usize::from(r.joined);
                out.stalled_endings.push(r.ending.clone());
                out.stalled_ended_at.push(
                    r.ended_at
                        .map_or(0.0, |t| t.saturating_duration_since(t0).as_secs_f64()),
                );
                out.stalled_bytes_after.push(r.bytes_after_resume);
            }
            Role::Busy => {
                if !r.joined {
                    continue;
                }
                out.busy_joined += 1;
                if let Some(h) = &r.hist {
                    hist.merge(h);
                }
                total += r.received;
                bytes += r.received_bytes;
                out.out_of_order += r.out_of_order;
                if let Some(t) = r.last_recv {
                    last_any = Some(last_any.map_or(t, |a| a.max(t)));
                }
                if r.ended_by_server() {
                    let at = r
                        .ended_at
                        .map_or(0.0, |t| t.saturating_duration_since(t0).as_secs_f64());
                    out.busy_cut.push(format!(
                        "{} at {at:.2} s after {} msgs",
                        describe(&r.ending),
                        r.received
                    ));
                    continue;
                }
                if r.ending != Ending::ReachedTarget {
                    out.busy_unfinished += 1;
                }
                out.lost += target.saturating_sub(r.distinct);
                // Over the client's own span: its first to its last flood message.
                let rate = match (r.first_recv, r.last_recv) {
                    (Some(a), Some(b)) if b > a && r.received > 1 => {
                        (r.received - 1) as f64 / (b - a).as_secs_f64()
                    }
                    _ => 0.0,
                };
                min_rate = min_rate.min(rate);
            }
        }
    }
    out.min_client = if min_rate.is_finite() { min_rate } else { 0.0 };
    // Over the flood (or longer, if deliveries lag behind it); a client cut early still
    // counts for the whole flood.
    let end = last_any.map_or(sim_end, |t| t.max(sim_end));
    out.delivered_total = total as f64 / (end - t0).as_secs_f64().max(1e-3);
    out.avg_frame_bytes = bytes.checked_div(total).unwrap_or(0);
    out.p50_ms = hist.quantile(0.50) as f64 / 1000.0;
    out.p99_ms = hist.quantile(0.99) as f64 / 1000.0;
    out.max_ms = hist.max() as f64 / 1000.0;
    out.latency_samples = hist.count();
}

pub fn describe(e: &Ending) -> String {
    match e {
        Ending::Stopped => "still open".into(),
        Ending::ReachedTarget => "got final Seq".into(),
        Ending::Closed(code, reason) if reason.is_empty() => format!("close {code}"),
        Ending::Closed(code, reason) => format!("close {code} ({reason})"),
        Ending::Eof => "EOF without close frame".into(),
        Ending::Error(e) => format!("error: {e}"),
    }
}
