//! RTCP quality: the formulas with hand-checked numbers, the real RTCPSent event from a SIP call,
//! and the bounded series per call and endpoint.

use super::*;
use crate::state::{endpoint_of, mos, rtt_from_lsr, sample_from, Direction};

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
    let s = sample_from(&example(), 1_000).expect("a report block");
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
    let s = sample_from(&p, 5).expect("sample");
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
    assert_eq!(sample_from(&empty, 0), None);
    let garbage = pkt(&[
        ("Event", "RTCPSent"),
        ("Channel", "PJSIP/1-1"),
        ("ReportXFractionLost", "lots"),
        ("ReportXJitter", "17"),
    ]);
    assert_eq!(sample_from(&garbage, 0), None);
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
    // 14/256 = 5.47 %, the worst in the window.
    assert_eq!(ep["loss_pct"]["max"], 5.47);
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
