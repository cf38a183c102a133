//! Channel and bridge events one at a time: bridges follow Enter / Leave / Destroy / Merge and
//! listed `BridgeId`s, channel events update, durations count against `now_ms`.

use serde_json::json;

use super::*;

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
