//! Queue events one at a time: caller positions and counts, a QueueStatus relisting, member
//! pause and removal.

use serde_json::json;

use super::*;

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
    // 6.1 comes back later (a caller can rejoin): its wait starts again.
    assert!(s.apply(&queue_caller("QueueCallerJoin", "q", "6.1", "2"), 70_000));
    let snap = s.snapshot(70_000);
    assert_eq!(snap["queues"][0]["callers"][1]["joined_ms"], 70_000);
    assert_eq!(snap["queues"][0]["calls"], 2);
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
