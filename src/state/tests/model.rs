//! Single events through the model: bridges, queue positions and pauses, endpoints and device
//! states, durations against `now_ms`, caps, and a rebuild after `reset`.

use serde_json::json;

use super::*;
use crate::state::{snapshot_actions, MAX_CHANNELS, MAX_DEVICES, MAX_MEMBERS, MAX_QUEUES};

fn newchannel(uid: &str, name: &str) -> Packet {
    pkt(&[
        ("Event", "Newchannel"),
        ("Channel", name),
        ("ChannelState", "4"),
        ("ChannelStateDesc", "Ring"),
        ("CallerIDNum", "100"),
        ("CallerIDName", "Alice"),
        ("Context", "demo"),
        ("Exten", "200"),
        ("Uniqueid", uid),
        ("Linkedid", uid),
    ])
}

fn bridge_event(event: &str, bridge: &str, uid: Option<&str>) -> Packet {
    let mut h = vec![
        ("Event", event),
        ("BridgeUniqueid", bridge),
        ("BridgeType", "basic"),
        ("BridgeTechnology", "simple_bridge"),
    ];
    if let Some(uid) = uid {
        h.push(("Uniqueid", uid));
    }
    pkt(&h)
}

fn queue_caller(event: &str, queue: &str, uid: &str, position: &str) -> Packet {
    pkt(&[
        ("Event", event),
        ("Channel", &format!("PJSIP/trunk-{uid}")),
        ("CallerIDNum", "+14155550000"),
        ("CallerIDName", "Acme"),
        ("Uniqueid", uid),
        ("Queue", queue),
        ("Position", position),
    ])
}

fn positions(state: &PbxState, queue: &str) -> Vec<(u64, String)> {
    let snap = state.snapshot(0);
    let q = find(&snap, "queues", "name", queue).expect("queue");
    q["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let pos = c["position"].as_u64().unwrap();
            (pos, c["uniqueid"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn bridges_follow_enter_leave_destroy_and_merge() {
    let mut s = PbxState::new();
    s.apply(&newchannel("1.1", "PJSIP/100-01"), 0);
    s.apply(&newchannel("1.2", "PJSIP/200-02"), 0);
    assert!(s.apply(&bridge_event("BridgeCreate", "b1", None), 0));
    assert!(s.apply(&bridge_event("BridgeEnter", "b1", Some("1.1")), 0));
    assert!(s.apply(&bridge_event("BridgeEnter", "b1", Some("1.2")), 0));
    assert!(!s.apply(&bridge_event("BridgeEnter", "b1", Some("1.2")), 0));
    let snap = s.snapshot(0);
    assert_eq!(list(&snap, "bridges")[0]["channels"], json!(["1.1", "1.2"]));
    assert_eq!(s.calls.bridge_of("1.1"), Some("b1"));
    assert!(s.apply(&bridge_event("BridgeLeave", "b1", Some("1.1")), 0));
    assert_eq!(s.calls.bridge_of("1.1"), None);
    assert_eq!(
        list(&s.snapshot(0), "bridges")[0]["channels"],
        json!(["1.2"])
    );
    // A merge moves the channels of the other bridge over.
    s.apply(&bridge_event("BridgeEnter", "b2", Some("1.1")), 0);
    let merge = pkt(&[
        ("Event", "BridgeMerge"),
        ("ToBridgeUniqueid", "b1"),
        ("FromBridgeUniqueid", "b2"),
    ]);
    assert!(s.apply(&merge, 0));
    assert_eq!(s.bridge_count(), 1);
    assert_eq!(
        list(&s.snapshot(0), "bridges")[0]["channels"],
        json!(["1.2", "1.1"])
    );
    // A hangup takes the channel out; a destroy unlinks the rest.
    s.apply(&pkt(&[("Event", "Hangup"), ("Uniqueid", "1.2")]), 0);
    assert_eq!(
        list(&s.snapshot(0), "bridges")[0]["channels"],
        json!(["1.1"])
    );
    assert!(s.apply(&bridge_event("BridgeDestroy", "b1", None), 0));
    assert_eq!(s.bridge_count(), 0);
    assert_eq!(s.calls.bridge_of("1.1"), None);
}

#[test]
fn listed_channel_links_its_bridge_and_a_dead_one_stays_dead() {
    let mut s = PbxState::new();
    let listed = |uid: &str| {
        pkt(&[
            ("Event", "CoreShowChannel"),
            ("ActionID", "x"),
            ("Channel", "PJSIP/100-01"),
            ("ChannelStateDesc", "Up"),
            ("Uniqueid", uid),
            ("Application", "Dial"),
            ("Duration", "00:01:05"),
            ("BridgeId", "b9"),
        ])
    };
    assert!(s.apply(&listed("2.1"), 100_000));
    assert!(s.apply(&bridge_event("BridgeListItem", "b9", None), 100_000));
    let snap = s.snapshot(100_000);
    let c = &list(&snap, "channels")[0];
    assert_eq!(
        (&c["created_ms"], &c["duration_s"]),
        (&json!(35_000), &json!(65))
    );
    assert_eq!(c["bridge"], "b9");
    assert_eq!(list(&snap, "bridges")[0]["channels"], json!(["2.1"]));
    assert_eq!(list(&snap, "bridges")[0]["type"], "basic");
    // A list answer that raced with the Hangup must not bring the channel back.
    s.apply(&pkt(&[("Event", "Hangup"), ("Uniqueid", "2.1")]), 100_000);
    assert!(!s.apply(&listed("2.1"), 100_000));
    assert_eq!(s.channel_count(), 0);
}

#[test]
fn channel_events_update_and_durations_use_now() {
    let mut s = PbxState::new();
    assert!(s.apply(&newchannel("3.1", "PJSIP/100-03"), 1_000));
    let newstate = pkt(&[
        ("Event", "Newstate"),
        ("Channel", "PJSIP/100-03"),
        ("ChannelState", "6"),
        ("ChannelStateDesc", "Up"),
        ("ConnectedLineNum", "200"),
        ("ConnectedLineName", "Bob"),
        ("Uniqueid", "3.1"),
    ]);
    assert!(s.apply(&newstate, 2_000));
    assert!(!s.apply(&newstate, 2_500));
    let exten = pkt(&[
        ("Event", "Newexten"),
        ("Uniqueid", "3.1"),
        ("Exten", "200"),
        ("Application", "Dial"),
    ]);
    assert!(s.apply(&exten, 2_000));
    let rename = pkt(&[
        ("Event", "Rename"),
        ("Channel", "PJSIP/100-03"),
        ("Newname", "PJSIP/100-03<ZOMBIE>"),
        ("Uniqueid", "3.1"),
    ]);
    assert!(s.apply(&rename, 2_000));
    let snap = s.snapshot(13_999);
    let c = &list(&snap, "channels")[0];
    assert_eq!(c["channel"], "PJSIP/100-03<ZOMBIE>");
    assert_eq!(c["state"], "Up");
    assert_eq!(c["connected_name"], "Bob");
    assert_eq!(c["application"], "Dial");
    assert_eq!(c["created_ms"], 1_000);
    assert_eq!(c["duration_s"], 12);
    assert_eq!(s.snapshot(500)["channels"][0]["duration_s"], 0);
    // Events about unknown channels do not create them.
    let other = pkt(&[("Event", "Newstate"), ("Uniqueid", "9.9")]);
    assert!(!s.apply(&other, 0));
    assert_eq!(s.channel_count(), 1);
}

#[test]
fn channels_sort_by_creation_then_name() {
    let mut s = PbxState::new();
    s.apply(&newchannel("4.3", "PJSIP/b"), 20);
    s.apply(&newchannel("4.2", "PJSIP/c"), 10);
    s.apply(&newchannel("4.1", "PJSIP/a"), 20);
    let names: Vec<Value> = list(&s.snapshot(30), "channels")
        .iter()
        .map(|c| c["channel"].clone())
        .collect();
    assert_eq!(names, ["PJSIP/c", "PJSIP/a", "PJSIP/b"]);
}

#[test]
fn queue_callers_keep_positions_and_count() {
    let mut s = PbxState::new();
    for (uid, pos) in [("5.1", "1"), ("5.2", "2"), ("5.3", "3")] {
        assert!(s.apply(&queue_caller("QueueCallerJoin", "sales", uid, pos), 1_000));
    }
    let ids = |s: &PbxState| positions(s, "sales");
    assert_eq!(ids(&s)[2], (3, "5.3".to_owned()));
    assert!(s.apply(
        &queue_caller("QueueCallerLeave", "sales", "5.2", "2"),
        2_000
    ));
    assert_eq!(ids(&s), [(1, "5.1".to_owned()), (2, "5.3".to_owned())]);
    // A priority caller joins at the head.
    s.apply(&queue_caller("QueueCallerJoin", "sales", "5.4", "1"), 3_000);
    let order: Vec<String> = ids(&s).into_iter().map(|(_, u)| u).collect();
    assert_eq!(order, ["5.4", "5.1", "5.3"]);
    // Abandon removes and counts; the Leave that follows finds nothing.
    assert!(s.apply(
        &queue_caller("QueueCallerAbandon", "sales", "5.1", "2"),
        4_000
    ));
    assert!(!s.apply(
        &queue_caller("QueueCallerLeave", "sales", "5.1", "2"),
        4_000
    ));
    let snap = s.snapshot(10_000);
    let q = find(&snap, "queues", "name", "sales").unwrap();
    assert_eq!(q["calls"], 2);
    assert_eq!(q["abandoned"], "1");
    assert_eq!(q["callers"][0]["wait_s"], 7);
    assert_eq!(q["callers"][1]["joined_ms"], 1_000);
    assert_eq!(q["callers"][1]["position"], 2);
}

#[test]
fn queue_status_relists_callers_keeping_join_times() {
    let mut s = PbxState::new();
    s.apply(&queue_caller("QueueCallerJoin", "q", "6.1", "1"), 1_000);
    s.apply(&queue_caller("QueueCallerJoin", "q", "6.2", "2"), 2_000);
    let params = pkt(&[("Event", "QueueParams"), ("Queue", "q"), ("Calls", "1")]);
    assert!(s.apply(&params, 60_000));
    assert_eq!(s.snapshot(0)["queues"][0]["calls"], 1);
    // Only 6.2 is still waiting: 6.1's Leave was lost.
    let mut entry = queue_caller("QueueEntry", "q", "6.2", "1");
    entry = Packet::from_headers(entry.headers().chain([("Wait", "57")]));
    assert!(s.apply(&entry, 60_000));
    let snap = s.snapshot(60_000);
    let q = &snap["queues"][0];
    assert_eq!(q["calls"], 1);
    assert_eq!(q["callers"].as_array().unwrap().len(), 1);
    assert_eq!(q["callers"][0]["joined_ms"], 2_000);
    assert_eq!(q["callers"][0]["wait_s"], 58);
    assert_eq!(s.len(), 2);
}

#[test]
fn members_pause_and_leave() {
    let mut s = PbxState::new();
    let status = pkt(&[
        ("Event", "QueueMemberStatus"),
        ("Queue", "support"),
        ("MemberName", "Bruno"),
        ("Interface", "PJSIP/202"),
        ("Membership", "dynamic"),
        ("Status", "2"),
        ("Paused", "0"),
        ("InCall", "1"),
    ]);
    assert!(s.apply(&status, 0));
    let pause = pkt(&[
        ("Event", "QueueMemberPause"),
        ("Queue", "support"),
        ("MemberName", "Bruno"),
        ("Interface", "PJSIP/202"),
        ("Paused", "1"),
        ("PausedReason", "Lunch"),
    ]);
    assert!(s.apply(&pause, 0));
    let member = |s: &PbxState| s.snapshot(0)["queues"][0]["members"][0].clone();
    let m = member(&s);
    assert_eq!(
        (&m["paused"], &m["paused_reason"]),
        (&json!(true), &json!("Lunch"))
    );
    assert_eq!(
        (&m["status_text"], &m["in_call"]),
        (&json!("In use"), &json!(true))
    );
    // The pre-12 event: Location and Reason.
    let old = pkt(&[
        ("Event", "QueueMemberPaused"),
        ("Queue", "support"),
        ("Location", "PJSIP/202"),
        ("Paused", "0"),
    ]);
    assert!(s.apply(&old, 0));
    let m = member(&s);
    assert_eq!(
        (&m["paused"], &m["paused_reason"]),
        (&json!(false), &json!(""))
    );
    let removed = pkt(&[
        ("Event", "QueueMemberRemoved"),
        ("Queue", "support"),
        ("Interface", "PJSIP/202"),
    ]);
    assert!(s.apply(&removed, 0));
    assert_eq!(s.len(), 1);
}

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
        json!({"channels": [], "bridges": [], "queues": [], "endpoints": [], "device_states": {}})
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
        MAX_QUEUES + MAX_MEMBERS + MAX_DEVICES + crate::state::MAX_ENDPOINTS
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
