//! Media of the simulated calls and the health of the simulated phones: every PJSIP channel of a
//! connected call gets an `RTCPSent` (Asterisk's sender report, with its reception report on the
//! media it receives) and an `RTCPReceived` (the phone's sender report, with its reception
//! report on the media Asterisk sends, and Asterisk's computed `RTT`) every RTCP interval. About
//! a quarter of the calls, and every call of extension 113 ("the phone on bad Wi-Fi"), start
//! clean and degrade from their third report on. With demo traffic a scripted health cycle runs:
//! extension 117 re-registers from a new address with another user agent, extension 120 becomes
//! unreachable and comes back.
//!
//! Event text follows Asterisk 22's main/rtp_engine.c (`Report0…`, `IAJitter`, `DLSR`, the `RTT`
//! header on `RTCPReceived`) and res_pjsip's `ContactStatus`/`PeerStatus`. Addresses in event text
//! are documentation ranges (RFC 5737): no traffic ever goes to them.

use std::time::Duration;

use rand::Rng;

use super::model::Step;
use super::wire::{now, Msg, Stamp};
use super::world::World;

/// The extension whose calls always degrade.
const BAD_WIFI_EXTENSION: &str = "PJSIP/113";
/// The extension with an Opus (48 kHz RTP clock) softphone; everyone else speaks G.711 (8 kHz).
const OPUS_EXTENSION: &str = "PJSIP/118";
/// Share of the other calls that degrade.
const DEGRADE_SHARE: f64 = 0.25;
/// Reports of a degrading call before it turns bad.
const CLEAN_REPORTS: u32 = 2;
/// Seconds between the NTP era (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: f64 = 2_208_988_800.0;

/// The RTP streams of one channel, both directions.
pub(crate) struct Stream {
    ours: u32,
    theirs: u32,
    clock: u32,
    rtp_base: u32,
    their_rtp_base: u32,
    their_seq_base: u32,
    started: Duration,
    degrade: bool,
    reports: u32,
    lost_in: u64,
    lost_out: u64,
    packets_seen: u64,
    local: String,
    far: String,
    /// The phone's last SR: its compact NTP time and when (wall clock) it "arrived".
    their_last_sr: Option<(u32, Duration)>,
}

/// How long a demo call talks: 3–40 s, a degrading one long enough to be seen going bad.
pub(crate) fn talk_time(w: &mut World, degrading: bool) -> Duration {
    if degrading {
        let clean = w.rtcp_interval * (CLEAN_REPORTS + 4);
        clean.max(Duration::from_secs(30)) + Duration::from_secs(w.rng.gen_range(0..=60))
    } else {
        Duration::from_secs(w.rng.gen_range(3..=40))
    }
}

/// A call just connected: its PJSIP channels get RTP streams and the first report is scheduled.
/// True if one of them will degrade.
pub(crate) fn start(w: &mut World, id: u64) -> bool {
    let Some(call) = w.calls.get(&id) else {
        return false;
    };
    let chans: Vec<String> = call
        .chans
        .iter()
        .chain(call.agent_chan.iter())
        .filter(|c| c.starts_with("PJSIP/") || c.starts_with("SIP/"))
        .cloned()
        .collect();
    let bad_leg = chans
        .iter()
        .position(|c| c.starts_with(&format!("{BAD_WIFI_EXTENSION}-")));
    let random_bad = w.rng.gen_bool(DEGRADE_SHARE);
    for (i, chan) in chans.iter().enumerate() {
        let degrade = bad_leg.map_or(random_bad && i == 0, |b| b == i);
        let clock = if chan.starts_with(&format!("{OPUS_EXTENSION}-")) {
            48_000
        } else {
            8_000
        };
        let stream = Stream {
            ours: w.rng.gen(),
            theirs: w.rng.gen(),
            clock,
            rtp_base: w.rng.gen(),
            their_rtp_base: w.rng.gen(),
            their_seq_base: w.rng.gen_range(0..65_536),
            started: now(),
            degrade,
            reports: 0,
            lost_in: 0,
            lost_out: 0,
            packets_seen: 0,
            local: format!(
                "192.0.2.1:{}",
                10_000 + 2 * w.rng.gen_range(0..5_000u32) + 1
            ),
            far: format!(
                "198.51.100.{}:{}",
                w.rng.gen_range(10..250u32),
                4_000 + 2 * w.rng.gen_range(0..2_000u32) + 1
            ),
            their_last_sr: None,
        };
        w.media.insert(chan.clone(), stream);
    }
    if !chans.is_empty() {
        let first = w.rtcp_interval;
        let after = jittered(w, first);
        w.schedule(after, Step::Rtcp(id));
    }
    bad_leg.is_some() || (random_bad && !chans.is_empty())
}

/// ±10 % around the interval, so calls do not report in lockstep.
fn jittered(w: &mut World, d: Duration) -> Duration {
    d.mul_f64(w.rng.gen_range(0.9..1.1))
}

/// One RTCP exchange for every stream of call `id`, then the next one is scheduled.
pub(crate) fn report(w: &mut World, id: u64) {
    let Some(call) = w.calls.get(&id) else {
        return;
    };
    let chans: Vec<String> = call
        .chans
        .iter()
        .chain(call.agent_chan.iter())
        .filter(|c| w.media.contains_key(*c))
        .cloned()
        .collect();
    if chans.is_empty() {
        return;
    }
    for chan in &chans {
        exchange(w, chan);
    }
    let interval = w.rtcp_interval;
    let next = jittered(w, interval);
    w.schedule(next, Step::Rtcp(id));
}

/// How the line sounds for one report: (loss fraction, jitter ms, round trip s).
fn line(w: &mut World, bad: bool) -> (f64, f64, f64) {
    if bad {
        (
            w.rng.gen_range(0.08..0.14),
            w.rng.gen_range(45.0..90.0),
            w.rng.gen_range(0.18..0.26),
        )
    } else {
        let loss = if w.rng.gen_bool(0.8) {
            0.0
        } else {
            w.rng.gen_range(0.002..0.008)
        };
        (loss, w.rng.gen_range(1.0..6.0), w.rng.gen_range(0.02..0.06))
    }
}

fn compact_ntp(t: Duration) -> u32 {
    let ntp = t.as_secs_f64() + NTP_UNIX_OFFSET;
    ((ntp * 65536.0) as u64 & 0xffff_ffff) as u32
}

/// `RTCPSent` then `RTCPReceived` for one channel.
fn exchange(w: &mut World, chan: &str) {
    let t = now();
    let Some(s) = w.media.get(chan) else {
        return;
    };
    let bad = s.degrade && s.reports >= CLEAN_REPORTS;
    let (loss_in, jitter_in, rtt) = line(w, bad);
    let (loss_out, jitter_out, _) = line(w, bad);
    let dlsr_far = w.rng.gen_range(0.2..1.0);
    let Some(s) = w.media.get_mut(chan) else {
        return;
    };
    s.reports += 1;
    let elapsed = t.saturating_sub(s.started).as_secs_f64();
    let packets = (elapsed * 50.0) as u64;
    let new_packets = packets.saturating_sub(s.packets_seen).max(1);
    s.packets_seen = packets;
    s.lost_in += (new_packets as f64 * loss_in).round() as u64;
    s.lost_out += (new_packets as f64 * loss_out).round() as u64;
    let clock = f64::from(s.clock);
    let octets_per_packet = if s.clock == 8_000 { 160 } else { 80 };
    let rtp = |base: u32| base.wrapping_add((elapsed * clock) as u64 as u32);
    let highest = s.their_seq_base as u64 + packets;
    let (lsr, dlsr) = match s.their_last_sr {
        Some((lsr, at)) => (lsr, t.saturating_sub(at).as_secs_f64()),
        None => (0, 0.0),
    };
    let h = |v: &dyn std::fmt::Display| v.to_string();
    let sent: Vec<(&str, String)> = vec![
        ("To", s.far.clone()),
        ("From", s.local.clone()),
        ("SSRC", format!("0x{:08x}", s.ours)),
        ("PT", "200(SR)".into()),
        ("ReportCount", "1".into()),
        ("SentNTP", h(&Stamp(t))),
        ("SentRTP", h(&rtp(s.rtp_base))),
        ("SentPackets", h(&packets)),
        ("SentOctets", h(&(packets * octets_per_packet))),
        ("Report0SourceSSRC", format!("0x{:08x}", s.theirs)),
        (
            "Report0FractionLost",
            h(&((loss_in * 256.0).round() as u32)),
        ),
        ("Report0CumulativeLost", h(&s.lost_in)),
        ("Report0HighestSequence", h(&(highest & 0xffff))),
        ("Report0SequenceNumberCycles", h(&(highest >> 16))),
        ("Report0IAJitter", h(&((jitter_in * clock / 1000.0) as u32))),
        ("Report0LSR", h(&lsr)),
        ("Report0DLSR", format!("{dlsr:.4}")),
    ];
    // The phone's SR left it rtt/2 ago; it reports on our SR sent rtt + dlsr before now.
    let their_ntp = t.saturating_sub(Duration::from_secs_f64(rtt / 2.0));
    let our_sr = t.saturating_sub(Duration::from_secs_f64(rtt + dlsr_far));
    let received: Vec<(&str, String)> = vec![
        ("From", s.far.clone()),
        ("To", s.local.clone()),
        ("RTT", format!("{rtt:.4}")),
        ("SSRC", format!("0x{:08x}", s.theirs)),
        ("PT", "200(SR)".into()),
        ("ReportCount", "1".into()),
        ("SentNTP", h(&Stamp(their_ntp))),
        ("SentRTP", h(&rtp(s.their_rtp_base))),
        ("SentPackets", h(&packets)),
        ("SentOctets", h(&(packets * octets_per_packet))),
        ("Report0SourceSSRC", format!("0x{:08x}", s.ours)),
        (
            "Report0FractionLost",
            h(&((loss_out * 256.0).round() as u32)),
        ),
        ("Report0CumulativeLost", h(&s.lost_out)),
        ("Report0HighestSequence", h(&(packets & 0xffff))),
        ("Report0SequenceNumberCycles", h(&(packets >> 16))),
        (
            "Report0IAJitter",
            h(&((jitter_out * clock / 1000.0) as u32)),
        ),
        ("Report0LSR", h(&compact_ntp(our_sr))),
        ("Report0DLSR", format!("{dlsr_far:.4}")),
    ];
    s.their_last_sr = Some((compact_ntp(their_ntp), t));
    for (event, extra) in [("RTCPSent", sent), ("RTCPReceived", received)] {
        let refs: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
        w.chan_event(event, "reporting", chan, &refs);
    }
}

/// The phones of the health script.
const ROAMING: &str = "117";
const FLAKY: &str = "120";
/// What extension 117 registers with, in turn: (user agent, contact host:port).
const REGISTRATIONS: [(&str, &str); 2] = [
    ("Linphone/5.2.5 (belle-sip/5.2.94)", "198.51.100.17:5060"),
    ("Zoiper rv2.10.20.3", "203.0.113.45:52114"),
];

/// Step `n` of the health cycle, then the next one: 117 registers (0), re-registers elsewhere
/// with another user agent (1, 4), 120 goes unreachable (2) and comes back (3).
pub(crate) fn health(w: &mut World, n: u8) {
    match n {
        0 => register(w, 0, None),
        1 => register(w, 1, Some(0)),
        2 => reachability(w, false),
        3 => reachability(w, true),
        _ => register(w, 0, Some(1)),
    }
    let next = if n >= 4 { 1 } else { n + 1 };
    let gap = w.rtcp_interval * 3;
    w.schedule(gap, Step::Health(next));
}

fn contact_uri(ext: &str, host: &str) -> String {
    format!("sip:{ext}@{host};transport=udp")
}

/// Extension 117 registers with `REGISTRATIONS[to]`; the contact of `from` is removed.
fn register(w: &mut World, to: usize, from: Option<usize>) {
    let (agent, host) = REGISTRATIONS[to];
    let expire = (now().as_secs() + 3600).to_string();
    let call_id = format!("{:032x}", w.rng.gen::<u128>());
    let mut m = contact_status(ROAMING, host, "Created", "0");
    m.h("UserAgent", agent)
        .h("RegExpire", &expire)
        .h("ViaAddress", host)
        .h("CallID", &call_id);
    w.emit(m);
    if let Some(old) = from {
        w.emit(contact_status(
            ROAMING,
            REGISTRATIONS[old].1,
            "Removed",
            "0",
        ));
    }
    let rtt_us = w.rng.gen_range(8_000..40_000u32).to_string();
    w.emit(contact_status(ROAMING, host, "Reachable", &rtt_us));
}

/// A `ContactStatus` event with the five headers res_pjsip always writes.
fn contact_status(ext: &str, host: &str, status: &str, rtt_us: &str) -> Msg {
    let mut m = Msg::event("ContactStatus", "system");
    m.h("URI", contact_uri(ext, host))
        .h("ContactStatus", status)
        .h("AOR", ext)
        .h("EndpointName", ext)
        .h("RoundtripUsec", rtt_us);
    m
}

/// Extension 120's qualify fails (or succeeds again): ContactStatus, PeerStatus and its device.
fn reachability(w: &mut World, reachable: bool) {
    let status = if reachable {
        "Reachable"
    } else {
        "Unreachable"
    };
    let rtt_us = if reachable { "21345" } else { "0" };
    w.emit(contact_status(FLAKY, "198.51.100.120:5060", status, rtt_us));
    let peer = format!("PJSIP/{FLAKY}");
    let mut m = Msg::event("PeerStatus", "system");
    m.h("ChannelType", "PJSIP")
        .h("Peer", &peer)
        .h("PeerStatus", status);
    w.emit(m);
    let busy = w
        .chans
        .values()
        .any(|c| c.device.as_deref() == Some(peer.as_str()));
    let state = match (reachable, busy) {
        (false, _) => "UNAVAILABLE",
        (true, true) => "INUSE",
        (true, false) => "NOT_INUSE",
    };
    w.device_state(&peer, state);
}
