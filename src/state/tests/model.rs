//! Endpoints and device states, a rebuild after `reset`, the caps, and packets the model ignores.

use serde_json::json;

use super::*;
use crate::state::{snapshot_actions, MAX_CHANNELS, MAX_DEVICES, MAX_MEMBERS, MAX_QUEUES};

#[test]
fn endpoints_and_device_states() {
    let mut s = PbxState::new();
    let endpoint = pkt(&[
        ("Event", "EndpointList"),
        ("ObjectType", "endpoint"),
        ("ObjectName", "100"),
        ("Contacts", "100/sip:100@10.0.0.5:5060,"),
        ("DeviceState", "Not in use"),
    ]);
    assert!(s.apply(&endpoint, 0));
    let snap = s.snapshot(0);
    let e = find(&snap, "endpoints", "name", "PJSIP/100").expect("endpoint");
    assert_eq!(e["device_state"], "NOT_INUSE");
    assert_eq!(e["status"], "Reachable");
    assert_eq!(e["contacts"], "100/sip:100@10.0.0.5:5060");
    let device = pkt(&[
        ("Event", "DeviceStateChange"),
        ("Device", "PJSIP/100"),
        ("State", "INUSE"),
    ]);
    assert!(s.apply(&device, 0));
    assert!(!s.apply(&device, 0));
    let contact = pkt(&[
        ("Event", "ContactStatus"),
        ("URI", "sip:100@10.0.0.5:5060"),
        ("ContactStatus", "Unreachable"),
        ("AOR", "100"),
        ("EndpointName", "100"),
    ]);
    assert!(s.apply(&contact, 0));
    let peer = pkt(&[
        ("Event", "PeerEntry"),
        ("Channeltype", "SIP"),
        ("ObjectName", "300"),
        ("IPaddress", "10.0.0.7"),
        ("IPport", "5060"),
        ("Status", "OK (5 ms)"),
    ]);
    assert!(s.apply(&peer, 0));
    let peer_status = pkt(&[
        ("Event", "PeerStatus"),
        ("Peer", "SIP/300"),
        ("PeerStatus", "Unregistered"),
    ]);
    assert!(s.apply(&peer_status, 0));
    let snap = s.snapshot(0);
    assert_eq!(
        snap["endpoints"],
        json!([
            {"name": "PJSIP/100", "device_state": "INUSE", "status": "Unreachable",
             "contacts": "100/sip:100@10.0.0.5:5060"},
            {"name": "SIP/300", "device_state": "", "status": "Unregistered",
             "contacts": "10.0.0.7:5060"},
        ])
    );
    assert_eq!(snap["device_states"], json!({"PJSIP/100": "INUSE"}));
}

#[test]
fn reset_then_replayed_snapshot_items_rebuild_the_same_state() {
    let mut items: Vec<Packet> = capture("10_originate_local100_async")
        .into_iter()
        .chain(capture("13_originate_queue"))
        .filter(|p| {
            matches!(
                p.event(),
                Some("CoreShowChannel" | "QueueParams" | "QueueMember")
            )
        })
        .collect();
    items.extend([
        bridge_event("BridgeListItem", "b1", None),
        queue_caller("QueueEntry", "support", "7.1", "1"),
        pkt(&[
            ("Event", "DeviceStateChange"),
            ("Device", "PJSIP/100"),
            ("State", "INUSE"),
        ]),
        pkt(&[
            ("Event", "EndpointList"),
            ("ObjectName", "100"),
            ("DeviceState", "In use"),
        ]),
        pkt(&[
            ("Event", "PeerEntry"),
            ("Channeltype", "SIP"),
            ("ObjectName", "9"),
        ]),
    ]);
    let now = 1_795_353_500_000;
    let mut s = PbxState::new();
    for p in &items {
        s.apply(p, now);
    }
    let before = s.snapshot(now + 5_000);
    assert_eq!(s.channel_count(), 2);
    assert_eq!((s.bridge_count(), s.queue_count()), (1, 1));
    s.reset();
    assert!(s.is_empty());
    assert_eq!(
        s.snapshot(0),
        json!({"channels": [], "bridges": [], "queues": [], "endpoints": [], "device_states": {},
            "quality": {"calls": {}, "endpoints": {}}, "endpoint_changes": {}})
    );
    for p in &items {
        s.apply(p, now);
    }
    assert_eq!(s.snapshot(now + 5_000), before);
    let names: Vec<String> = snapshot_actions()
        .iter()
        .map(|a| a.name().to_owned())
        .collect();
    let expected = [
        "CoreShowChannels",
        "BridgeList",
        "QueueStatus",
        "DeviceStateList",
        "PJSIPShowEndpoints",
        "SIPpeers",
    ];
    assert_eq!(names, expected);
}

#[test]
fn caps_hold() {
    let mut s = PbxState::new();
    let mut accepted = 0;
    for i in 0..200_000u32 {
        let uid = format!("1700000000.{i}");
        if s.apply(&newchannel(&uid, "Local/x"), 0) {
            accepted += 1;
        }
    }
    assert_eq!(accepted, MAX_CHANNELS);
    assert_eq!((s.channel_count(), s.len()), (MAX_CHANNELS, MAX_CHANNELS));
    let mut s = PbxState::new();
    for i in 0..MAX_QUEUES + 50 {
        let q = format!("q{i}");
        s.apply(&pkt(&[("Event", "QueueParams"), ("Queue", &q)]), 0);
        let iface = format!("PJSIP/{i}");
        s.apply(
            &pkt(&[
                ("Event", "QueueMember"),
                ("Queue", &q),
                ("Location", &iface),
            ]),
            0,
        );
        let ds = [
            ("Event", "DeviceStateChange"),
            ("Device", &iface),
            ("State", "INUSE"),
        ];
        s.apply(&pkt(&ds), 0);
        s.apply(
            &pkt(&[
                ("Event", "PeerStatus"),
                ("Peer", &iface),
                ("PeerStatus", "Reachable"),
            ]),
            0,
        );
    }
    assert_eq!(s.queue_count(), MAX_QUEUES);
    assert_eq!(
        s.len(),
        // Endpoints, and their health change logs, are each capped at MAX_ENDPOINTS.
        MAX_QUEUES + MAX_MEMBERS + MAX_DEVICES + 2 * crate::state::MAX_ENDPOINTS
    );
    // Known entries still update past the caps.
    let m = [
        ("Event", "QueueMember"),
        ("Queue", "q0"),
        ("Location", "PJSIP/0"),
        ("Status", "2"),
    ];
    assert!(s.apply(&pkt(&m), 0));
}

#[test]
fn unrelated_packets_return_false() {
    let mut s = PbxState::new();
    let user = pkt(&[("Event", "UserEvent"), ("UserEvent", "Flood"), ("Seq", "1")]);
    let response = pkt(&[
        ("Response", "Success"),
        ("Event", "Newchannel"),
        ("Uniqueid", "1"),
    ]);
    for p in [
        user,
        response,
        pkt(&[]),
        pkt(&[("Event", "VarSet"), ("Uniqueid", "1")]),
    ] {
        assert!(!s.apply(&p, 0));
    }
    assert!(s.is_empty());
}
