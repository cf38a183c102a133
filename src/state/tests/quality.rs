//! RTCP quality: the formulas with hand-checked numbers, the real RTCPSent event from a SIP call,
//! and the bounded series per call and endpoint.

use super::*;
use crate::state::rtcp::DEFAULT_CLOCK_HZ;
use crate::state::{
    clock_from_srs, compact_ntp, endpoint_of, mos, rtt_from_lsr, sample_from, sender_report,
    Direction, Thresholds,
};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/integration/captures/events/rtcpsent_example.txt"
);

fn example() -> Packet {
    let text = std::fs::read_to_string(EXAMPLE).expect("example");
    let headers: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.trim_start().to_owned()))
        .collect();
    Packet::from_headers(headers)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn the_real_rtcpsent_gives_inbound_loss_jitter_and_mos_but_no_rtt() {
    let s = sample_from(&example(), 1_000, DEFAULT_CLOCK_HZ).expect("a report block");
    assert_eq!(s.direction, Direction::Inbound);
    assert_eq!(s.loss_pct, 0.0);
    assert_eq!(s.cumulative_lost, 0);
    // ReportXJitter 17 at 8 kHz: 17 / 8000 s.
    assert!(close(s.jitter_ms, 2.125), "{}", s.jitter_ms);
    // LSR there is the far end's clock: no round trip can be computed from it.
    assert_eq!(s.rtt_ms, None);
    // latency = 0 + 2 × 2.125 + 10 = 14.25; R = 93.2 − 14.25/40 = 92.84375.
    assert!(close(s.mos, 4.402283971038819), "{}", s.mos);
}

#[test]
fn mos_formula_edges() {
    // Loss 13/256 = 5.078125 %, jitter 20 ms, RTT 150 ms: latency 125, R = 77.3796875.
    assert!(close(
        mos(150.0, 20.0, 13.0 / 256.0 * 100.0),
        3.921233144594311
    ));
    // Past 160 ms the steeper branch: latency 270, R = 78.2.
    assert!(close(mos(400.0, 30.0, 0.0), 3.954186424));
    // Total loss floors at 1, a perfect line stays under the 4.5 ceiling.
    assert_eq!(mos(0.0, 0.0, 100.0), 1.0);
    assert!(mos(0.0, 0.0, 0.0) <= 4.5);
    // Nonsense input cannot push it out of range.
    assert_eq!(mos(1e9, 1e9, 1e9), 1.0);
    assert!(mos(-5.0, -5.0, -5.0) <= 4.5);
}

#[test]
fn rtt_from_lsr_and_dlr_by_rfc3550() {
    // Asterisk sent an SR 1.5 s before this report arrived; the far end held it 1 s: RTT 0.5 s.
    let arrival = 1_589_292_716.75_f64;
    let sent_ntp = arrival - 1.5 + 2_208_988_800.0;
    let lsr = ((sent_ntp * 65536.0) as u64 & 0xffff_ffff) as u32;
    let rtt = rtt_from_lsr(arrival, lsr, 1.0).expect("plausible");
    assert!((rtt - 0.5).abs() < 1e-4, "{rtt}");
    // An LSR from another clock gives an implausible delay, which is dropped.
    assert_eq!(
        rtt_from_lsr(arrival, lsr.wrapping_add(65536 * 100), 1.0),
        None
    );
    // As an RTCPReceived event (media Asterisk sent, reported back).
    let p = pkt(&[
        ("Event", "RTCPReceived"),
        ("Timestamp", "1589292716.750000"),
        ("Channel", "PJSIP/6117-0000001a"),
        ("PT", "201(RR)"),
        ("ReportCount", "1"),
        ("ReportXFractionLost", "13"),
        ("ReportXCumulativeLost", "40"),
        ("ReportXJitter", "160"),
        ("ReportXLSR", &lsr.to_string()),
        ("ReportXDLR", "1.0000"),
    ]);
    let s = sample_from(&p, 5, DEFAULT_CLOCK_HZ).expect("sample");
    assert_eq!(s.direction, Direction::Outbound);
    assert!(close(s.loss_pct, 5.078125));
    assert_eq!(s.cumulative_lost, 40);
    assert!(close(s.jitter_ms, 20.0));
    assert!((s.rtt_ms.expect("rtt") - 500.0).abs() < 0.1);
}

#[test]
fn reports_without_a_block_or_with_garbage_are_skipped() {
    let empty = pkt(&[
        ("Event", "RTCPSent"),
        ("Channel", "PJSIP/1-1"),
        ("ReportCount", "0"),
    ]);
    assert_eq!(sample_from(&empty, 0, DEFAULT_CLOCK_HZ), None);
    let garbage = pkt(&[
        ("Event", "RTCPSent"),
        ("Channel", "PJSIP/1-1"),
        ("ReportXFractionLost", "lots"),
        ("ReportXJitter", "17"),
    ]);
    assert_eq!(sample_from(&garbage, 0, DEFAULT_CLOCK_HZ), None);
    let mut state = PbxState::new();
    assert!(!state.apply(&garbage, 0));
    assert_eq!(state.snapshot(0)["quality"]["calls"], serde_json::json!({}));
}

#[test]
fn endpoints_come_from_channel_names() {
    assert_eq!(endpoint_of("PJSIP/6117-0000001a"), "PJSIP/6117");
    assert_eq!(endpoint_of("SIP/100-00000007"), "SIP/100");
    assert_eq!(endpoint_of("PJSIP/trunk-a-00000001"), "PJSIP/trunk-a");
    assert_eq!(endpoint_of("DAHDI/1"), "DAHDI/1");
}

#[test]
fn calls_keep_a_bounded_series_and_endpoints_a_window_after_hangup() {
    let mut state = PbxState::new();
    let report = |lost: &str| {
        pkt(&[
            ("Event", "RTCPSent"),
            ("Channel", "PJSIP/6117-0000001a"),
            ("ReportXFractionLost", lost),
            ("ReportXJitter", "8"),
        ])
    };
    for i in 0..(crate::state::quality::CALL_SAMPLES as u64 + 5) {
        assert!(state.apply(&report(if i % 2 == 0 { "0" } else { "14" }), i * 5_000));
    }
    let snap = state.snapshot(700_000);
    let call = &snap["quality"]["calls"]["PJSIP/6117-0000001a"];
    assert_eq!(call["endpoint"], "PJSIP/6117");
    assert_eq!(
        call["series"].as_array().map(Vec::len),
        Some(crate::state::quality::CALL_SAMPLES)
    );
    assert_eq!(call["inbound"]["jitter_ms"], 1.0);
    assert_eq!(call["outbound"], Value::Null);
    let ep = &snap["quality"]["endpoints"]["PJSIP/6117"];
    // 14/256 = 5.47 %, the worst in the window; 125 samples, 5 s apart, in 15 s buckets.
    assert_eq!(ep["loss_pct"]["max"], 5.47);
    assert_eq!(ep["samples"], 125);
    let buckets = ep["series"].as_array().expect("series");
    assert_eq!(buckets.len(), 42);
    assert_eq!(buckets[0]["samples"], 3);
    // (0 + 14 + 0) / 3 fifths of 256ths: 1.82 % on average in the first bucket.
    assert_eq!(buckets[0]["loss_pct"]["avg"], 1.82);
    assert!(state.apply(
        &pkt(&[("Event", "Hangup"), ("Channel", "PJSIP/6117-0000001a")]),
        0
    ));
    let snap = state.snapshot(700_000);
    assert_eq!(snap["quality"]["calls"], serde_json::json!({}));
    assert!(snap["quality"]["endpoints"]["PJSIP/6117"]["samples"].as_u64() > Some(0));
    // Past the window the endpoint summary is empty.
    let later = 700_000 + crate::state::quality::ENDPOINT_WINDOW_MS + 1;
    assert_eq!(
        state.snapshot(later)["quality"]["endpoints"]["PJSIP/6117"]["samples"],
        0
    );
}

#[test]
fn endpoint_changes_log_user_agent_address_and_reachability() {
    let mut state = PbxState::new();
    let contact = |status: &str, uri: &str, ua: &str| {
        pkt(&[
            ("Event", "ContactStatus"),
            ("URI", uri),
            ("ContactStatus", status),
            ("AOR", "777"),
            ("EndpointName", "777"),
            ("RoundtripUsec", "0"),
            ("UserAgent", ua),
        ])
    };
    assert!(state.apply(
        &contact("Created", "sip:777@192.0.2.10:5060", "Linphone/5.2"),
        1
    ));
    assert!(state.apply(
        &contact("Reachable", "sip:777@192.0.2.10:5060", "Linphone/5.2"),
        2
    ));
    // The same again changes nothing.
    assert!(!state.apply(
        &contact("Reachable", "sip:777@192.0.2.10:5060", "Linphone/5.2"),
        3
    ));
    assert!(state.apply(
        &contact("Reachable", "sip:777@198.51.100.4:5062;ob", "Zoiper rv2.10"),
        4
    ));
    assert!(state.apply(
        &pkt(&[
            ("Event", "DeviceStateChange"),
            ("Device", "PJSIP/777"),
            ("State", "UNAVAILABLE")
        ]),
        5
    ));
    // A busy/idle flip of an available device is not a health change.
    state.apply(
        &pkt(&[
            ("Event", "DeviceStateChange"),
            ("Device", "PJSIP/777"),
            ("State", "INUSE"),
        ]),
        6,
    );
    state.apply(
        &pkt(&[
            ("Event", "DeviceStateChange"),
            ("Device", "PJSIP/777"),
            ("State", "NOT_INUSE"),
        ]),
        7,
    );
    let snap = state.snapshot(10);
    let ep = &snap["endpoint_changes"]["PJSIP/777"];
    assert_eq!(ep["user_agent"], "Zoiper rv2.10");
    assert_eq!(ep["address"], "198.51.100.4:5062");
    let changes: Vec<(String, String, String)> = ep["changes"]
        .as_array()
        .expect("log")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("field"), s("from"), s("to"))
        })
        .collect();
    let expect = |f: &str, a: &str, b: &str| (f.to_owned(), a.to_owned(), b.to_owned());
    assert_eq!(
        changes,
        [
            expect("status", "", "Created"),
            expect("address", "", "192.0.2.10:5060"),
            expect("user_agent", "", "Linphone/5.2"),
            expect("status", "Created", "Reachable"),
            expect("address", "192.0.2.10:5060", "198.51.100.4:5062"),
            expect("user_agent", "Linphone/5.2", "Zoiper rv2.10"),
            expect("device", "", "UNAVAILABLE"),
            expect("device", "UNAVAILABLE", "AVAILABLE"),
        ]
    );
    // The devices model still saw the same events.
    assert!(!snap["device_states"]
        .as_object()
        .expect("states")
        .is_empty());
}

#[test]
fn the_change_log_is_bounded() {
    let mut state = PbxState::new();
    for i in 0..(crate::state::changes::CHANGES_PER_ENDPOINT + 20) {
        let status = if i % 2 == 0 {
            "Reachable"
        } else {
            "Unreachable"
        };
        state.apply(
            &pkt(&[
                ("Event", "PeerStatus"),
                ("Peer", "SIP/100"),
                ("PeerStatus", status),
            ]),
            i as u64,
        );
    }
    let snap = state.snapshot(0);
    assert_eq!(
        snap["endpoint_changes"]["SIP/100"]["changes"]
            .as_array()
            .map(Vec::len),
        Some(crate::state::changes::CHANGES_PER_ENDPOINT)
    );
}

/// An RTCP event as Asterisk 22 writes it (main/rtp_engine.c): `Report0…` names, `IAJitter`,
/// `DLSR`, and `RTT` on RTCPReceived.
fn asterisk22(event: &str, pt: &str, ntp: f64, rtp: u32, fraction: u32, jitter: u32) -> Packet {
    let (ntp_s, rtp_s, frac_s, jit_s) = (
        format!("{ntp:.6}"),
        rtp.to_string(),
        fraction.to_string(),
        jitter.to_string(),
    );
    let mut h = vec![
        ("Event", event),
        ("Privilege", "reporting,all"),
        ("Channel", "PJSIP/118-00000003"),
        ("To", "127.0.0.1:4002"),
        ("From", "127.0.0.1:4003"),
    ];
    if event == "RTCPReceived" {
        h.push(("RTT", "0.0420"));
    }
    h.extend([("SSRC", "0x1a2b3c4d"), ("PT", pt), ("ReportCount", "1")]);
    if pt.starts_with("200") {
        h.extend([
            ("SentNTP", ntp_s.as_str()),
            ("SentRTP", rtp_s.as_str()),
            ("SentPackets", "250"),
            ("SentOctets", "40000"),
        ]);
    }
    h.extend([
        ("Report0SourceSSRC", "0x0badf00d"),
        ("Report0FractionLost", frac_s.as_str()),
        ("Report0CumulativeLost", "12"),
        ("Report0HighestSequence", "4711"),
        ("Report0SequenceNumberCycles", "0"),
        ("Report0IAJitter", jit_s.as_str()),
        ("Report0LSR", "0"),
        ("Report0DLSR", "0.0000"),
    ]);
    pkt(&h)
}

#[test]
fn asterisk22_report0_names_and_the_rtt_header_are_read() {
    let p = asterisk22("RTCPReceived", "201(RR)", 0.0, 0, 26, 160);
    let s = sample_from(&p, 7, DEFAULT_CLOCK_HZ).expect("sample");
    assert_eq!(s.direction, Direction::Outbound);
    // 26/256 = 10.15625 %; 160 units at 8 kHz = 20 ms; RTT header 0.042 s.
    assert!(close(s.loss_pct, 10.15625));
    assert!(close(s.jitter_ms, 20.0));
    assert_eq!(s.cumulative_lost, 12);
    assert!(close(s.rtt_ms.expect("rtt"), 42.0));
    // latency 21 + 40 + 10 = 71: R = 93.2 − 1.775 − 25.390625 = 66.034375.
    assert!(close(s.mos, 3.405_944_572_899_261_7), "{}", s.mos);
}

#[test]
fn the_clock_rate_comes_from_two_sender_reports() {
    let sr = |ntp: f64, rtp: u32| {
        sender_report(&asterisk22("RTCPSent", "200(SR)", ntp, rtp, 0, 0)).expect("an SR")
    };
    let t = 1_795_000_000.25;
    // Opus: 48 kHz; 5.02 s apart with a little scheduling noise: still 48000.
    assert_eq!(
        clock_from_srs(&sr(t, 1000), &sr(t + 5.02, 1000 + 240_000)),
        Some(48000.0)
    );
    // G.711 across an RTP timestamp wrap.
    assert_eq!(
        clock_from_srs(&sr(t, u32::MAX - 100), &sr(t + 5.0, 39_899)),
        Some(8000.0)
    );
    // 12 kHz is no standard rate; too close in time; a different stream.
    assert_eq!(clock_from_srs(&sr(t, 0), &sr(t + 5.0, 60_000)), None);
    assert_eq!(clock_from_srs(&sr(t, 0), &sr(t + 0.1, 800)), None);
    let mut other = sr(t + 5.0, 40_000);
    other.ssrc = "0x99".into();
    assert_eq!(clock_from_srs(&sr(t, 0), &other), None);
    // An RR has no sender info.
    assert_eq!(
        sender_report(&asterisk22("RTCPSent", "201(RR)", t, 0, 0, 0)),
        None
    );
    // In the state: after two SRs 48 kHz apart, IAJitter 960 is 20 ms, not 120 ms.
    let mut state = PbxState::new();
    state.apply(&asterisk22("RTCPSent", "200(SR)", t, 0, 0, 960), 1_000);
    let first = state.snapshot(1_000)["quality"]["calls"]["PJSIP/118-00000003"]["inbound"]
        ["jitter_ms"]
        .clone();
    assert_eq!(first, 120.0);
    state.apply(
        &asterisk22("RTCPSent", "200(SR)", t + 5.0, 240_000, 0, 960),
        6_000,
    );
    let call = &state.snapshot(6_000)["quality"]["calls"]["PJSIP/118-00000003"];
    assert_eq!(call["clock_hz"], 48000.0);
    assert_eq!(call["inbound"]["jitter_ms"], 20.0);
}

#[test]
fn compact_ntp_is_the_middle_32_bits() {
    // 2020-05-12 14:11:56.75 UTC: NTP seconds 3798281516, fraction .75 = 0xC000.
    let unix = 1_589_292_716.75;
    assert_eq!(
        compact_ntp(unix),
        ((3_798_281_516u64 & 0xffff) << 16 | 0xc000) as u32
    );
}

#[test]
fn thresholds_grade_the_worst_figure() {
    let th = Thresholds::default();
    let s = |loss, jitter, rtt: Option<f64>| crate::state::Sample {
        at_ms: 0,
        direction: Direction::Inbound,
        loss_pct: loss,
        cumulative_lost: 0,
        jitter_ms: jitter,
        rtt_ms: rtt,
        mos: mos(rtt.unwrap_or(0.0), jitter, loss),
    };
    assert_eq!(th.grade(&s(0.0, 2.0, Some(40.0))).as_str(), "good");
    assert_eq!(th.grade(&s(1.5, 2.0, None)).as_str(), "warn");
    assert_eq!(th.grade(&s(0.0, 25.0, None)).as_str(), "warn");
    assert_eq!(th.grade(&s(0.0, 2.0, Some(650.0))).as_str(), "bad");
    assert_eq!(th.grade(&s(8.0, 2.0, None)).as_str(), "bad");
    assert!(th.problems().is_empty());
    let wrong = Thresholds {
        loss_warn_pct: 9.0,
        mos_bad: 4.2,
        jitter_bad_ms: f64::NAN,
        ..Thresholds::default()
    };
    assert_eq!(wrong.problems().len(), 3, "{:?}", wrong.problems());
}

#[test]
fn the_quality_report_lists_worst_calls_and_endpoints_first() {
    let mut state = PbxState::new();
    let report = |chan: &str, lost: &str, jitter: &str| {
        pkt(&[
            ("Event", "RTCPSent"),
            ("Channel", chan),
            ("PT", "201(RR)"),
            ("ReportCount", "1"),
            ("Report0FractionLost", lost),
            ("Report0IAJitter", jitter),
        ])
    };
    let t = 1_795_000_000_000;
    state.apply(&report("PJSIP/101-00000001", "0", "16"), t);
    state.apply(&report("PJSIP/102-00000002", "26", "480"), t + 1);
    state.apply(&report("PJSIP/103-00000003", "4", "200"), t + 2);
    state.apply(
        &pkt(&[
            ("Event", "ContactStatus"),
            ("URI", "sip:102@127.0.0.1:5062"),
            ("ContactStatus", "Unreachable"),
            ("AOR", "102"),
            ("EndpointName", "102"),
            ("RoundtripUsec", "0"),
        ]),
        t + 3,
    );
    let r = state.quality_report(t + 10, 2, &Thresholds::default(), Some("PJSIP/102"));
    assert_eq!(r["active_calls"], 3);
    assert_eq!(r["bad_calls"], 1);
    assert_eq!(r["warn_calls"], 1);
    let calls: Vec<(&str, &str)> = r["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap_or(""),
                c["grade"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("PJSIP/102-00000002", "bad"),
            ("PJSIP/103-00000003", "warn")
        ]
    );
    let eps = r["endpoints"].as_array().expect("endpoints");
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["endpoint"], "PJSIP/102");
    assert_eq!(eps[0]["grade"], "bad");
    assert_eq!(eps[0]["health"]["status"], "Unreachable");
    assert_eq!(r["unreachable"], serde_json::json!(["PJSIP/102"]));
    assert_eq!(r["endpoint"]["quality"]["series"][0]["grade"], "bad");
    assert_eq!(r["endpoint"]["health"]["changes"][0]["to"], "Unreachable");
    assert_eq!(r["thresholds"]["loss_bad_pct"], 5.0);
}

#[test]
fn endpoint_buckets_are_bounded_by_count_and_window() {
    let mut state = PbxState::new();
    let report = pkt(&[
        ("Event", "RTCPSent"),
        ("Channel", "PJSIP/trunk-00000001"),
        ("ReportXFractionLost", "0"),
        ("ReportXJitter", "8"),
    ]);
    // A trunk with a report every second for an hour: 3600 samples, 60 buckets.
    let t0 = 1_795_000_000_000;
    for i in 0..3600 {
        state.apply(&report, t0 + i * 1000);
    }
    let now = t0 + 3_599_000;
    let ep = &state.snapshot(now)["quality"]["endpoints"]["PJSIP/trunk"];
    let series = ep["series"].as_array().expect("series");
    assert!(series.len() <= crate::state::quality::ENDPOINT_BUCKETS);
    assert!(
        ep["samples"].as_u64() <= Some(15 * 60 + 15),
        "{}",
        ep["samples"]
    );
    assert!(
        ep["samples"].as_u64() >= Some(15 * 60 - 15),
        "{}",
        ep["samples"]
    );
}
