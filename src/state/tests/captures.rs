//! Whole captures from a real Asterisk 22 fed through the model: calls' channels come and go,
//! a queue's caller and member follow the queue events, list answers agree with the events.

use super::*;

#[test]
fn originate_local_channels_appear_then_vanish() {
    let packets = capture("10_originate_local100_async");
    let (one, two) = ("1795353467.0", "1795353467.1");
    let mut counts = Vec::new();
    let mut hung_up = Vec::new();
    let state = replay(&packets, |state, p, now| {
        let snap = state.snapshot(now);
        let ids = uniqueids(&snap);
        counts.push(state.channel_count());
        match (p.event(), p.get("Uniqueid")) {
            (Some("Newchannel"), Some(uid)) => assert!(ids.iter().any(|i| i == uid), "{ids:?}"),
            (Some("Hangup"), Some(uid)) => {
                assert!(!ids.iter().any(|i| i == uid), "{uid} still there");
                hung_up.push(uid.to_owned());
            }
            _ => {}
        }
        // Between the two Newchannels and the first Hangup both legs are there.
        if p.event() == Some("DialEnd") {
            assert_eq!(ids, [one, two]);
            let c = find(&snap, "channels", "uniqueid", one).expect("leg ;1");
            assert_eq!(c["channel"], "Local/100@demo-00000000;1");
            assert_eq!(c["state"], "Up");
            assert_eq!(c["state_code"], "6");
            assert_eq!(c["caller_id_num"], "5551000");
            assert_eq!(c["caller_id_name"], "AMI Test");
            assert_eq!(c["connected_num"], "5551000");
            assert_eq!(c["linkedid"], one);
            assert_eq!(c["context"], "demo");
            assert_eq!(c["exten"], "100");
            let c = find(&snap, "channels", "uniqueid", two).expect("leg ;2");
            assert_eq!(c["application"], "Answer");
            assert_eq!(c["bridge"], Value::Null);
        }
    });
    assert_eq!(counts.iter().max(), Some(&2));
    assert_eq!(counts.last(), Some(&0));
    assert_eq!(hung_up, [one, two]);
    assert_eq!(state.channel_count(), 0);
    assert_eq!(
        state.snapshot(0)["device_states"]["Local/100@demo"],
        "NOT_INUSE"
    );
}

#[test]
fn listed_channels_agree_with_the_events() {
    let packets = capture("10_originate_local100_async");
    let at = packets
        .iter()
        .position(|p| p.event() == Some("CoreShowChannel"))
        .expect("a listed channel");
    let live = replay(&packets[..at], |_, _, _| {});
    let items: Vec<&Packet> = packets
        .iter()
        .filter(|p| p.event() == Some("CoreShowChannel"))
        .collect();
    let mut listed = PbxState::new();
    for p in &items {
        assert!(listed.apply(p, 1_795_353_467_500));
    }
    let (a, b) = (live.snapshot(0), listed.snapshot(0));
    assert_eq!(uniqueids(&a), uniqueids(&b));
    for c in list(&a, "channels") {
        let d = find(&b, "channels", "uniqueid", c["uniqueid"].as_str().unwrap()).unwrap();
        for key in [
            "channel",
            "linkedid",
            "state",
            "state_code",
            "caller_id_num",
            "exten",
        ] {
            assert_eq!(c[key], d[key], "{key}");
        }
    }
    // A listed channel already known keeps its start time and takes the listed application.
    let mut both = live.clone();
    for p in &items {
        both.apply(p, 1_795_353_467_500);
    }
    let snap = both.snapshot(1_795_353_467_500);
    let leg = find(&snap, "channels", "uniqueid", "1795353467.0").unwrap();
    assert_eq!(leg["application"], "Wait");
    assert_eq!(leg["created_ms"], 1_795_353_467_091u64);
    assert_eq!(both.channel_count(), 2);
}

#[test]
fn hangup_action_capture_ends_with_no_channels() {
    let mut max = 0;
    let state = replay(&capture("25_hangup_action"), |state, _, _| {
        max = max.max(state.channel_count());
    });
    assert_eq!(max, 2);
    assert_eq!(state.channel_count(), 0);
    assert_eq!(state.bridge_count(), 0);
}

#[test]
fn queue_call_follows_join_agent_and_leave() {
    let packets = capture("13_originate_queue");
    let caller = "1795353481.13";
    let mut seen = Vec::new();
    let mut answer_params = None;
    let state = replay(&packets, |state, p, now| {
        let snap = state.snapshot(now);
        let queue = find(&snap, "queues", "name", "support");
        let member = queue.and_then(|q| {
            q["members"]
                .as_array()?
                .iter()
                .find(|m| m["interface"] == "Local/200@demo")
        });
        let event = p.event().unwrap_or("");
        match event {
            "QueueCallerJoin" => {
                let q = queue.expect("queue support");
                assert_eq!(q["calls"], 1);
                assert_eq!(q["callers"][0]["uniqueid"], caller);
                assert_eq!(q["callers"][0]["position"], 1);
                assert_eq!(q["callers"][0]["channel"], "Local/300@demo-00000006;2");
                assert_eq!(q["callers"][0]["wait_s"], 0);
            }
            "AgentCalled" => {
                let m = member.expect("member");
                assert_eq!(
                    (&m["status"], &m["status_text"]),
                    (&"6".into(), &"Ringing".into())
                );
                assert_eq!(m["name"], "Agent200");
            }
            "QueueCallerLeave" => {
                let q = queue.unwrap();
                assert_eq!(q["calls"], 0);
                assert!(q["callers"].as_array().unwrap().is_empty());
            }
            "AgentConnect" => assert_eq!(member.unwrap()["in_call"], true),
            "AgentComplete" => {
                assert_eq!(member.unwrap()["in_call"], false);
                assert_eq!(queue.unwrap()["completed"], "1");
            }
            "BridgeEnter" if p.get("Uniqueid") == Some(caller) => {
                let b = &list(&snap, "bridges")[0];
                assert_eq!(b["channels"], serde_json::json!(["1795353481.14", caller]));
                assert_eq!(b["type"], "basic");
                assert_eq!(b["technology"], "simple_bridge");
                let c = find(&snap, "channels", "uniqueid", caller).unwrap();
                assert_eq!(c["bridge"], "2df46c6f-fb76-496e-887f-064fe9a5871b");
            }
            "BridgeLeave" if p.get("Uniqueid") == Some("1795353481.14") => {
                let b = &list(&snap, "bridges")[0];
                assert_eq!(b["channels"], serde_json::json!([caller]));
            }
            "QueueParams" => answer_params = queue.cloned(),
            _ => {}
        }
        if matches!(
            event,
            "QueueCallerJoin" | "QueueCallerLeave" | "AgentConnect"
        ) {
            seen.push(event.to_owned());
        }
    });
    assert_eq!(
        seen,
        ["QueueCallerJoin", "QueueCallerLeave", "AgentConnect"]
    );
    // The QueueStatus answer during the call says what the events said.
    let q = answer_params.expect("a QueueStatus answer");
    assert_eq!(q["calls"], 0);
    assert_eq!(q["strategy"], "ringall");
    let snap = state.snapshot(0);
    let q = find(&snap, "queues", "name", "support").unwrap();
    let m = &q["members"][0];
    assert_eq!(m["status"], "1");
    assert_eq!(m["calls_taken"], "1");
    assert_eq!(m["membership"], "static");
    assert_eq!(state.channel_count(), 0);
    assert_eq!(state.bridge_count(), 0);
}

#[test]
fn queue_status_answer_during_the_call_agrees_with_the_events() {
    let packets = capture("13_originate_queue");
    let start = packets
        .iter()
        .position(|p| p.event() == Some("QueueParams"))
        .expect("QueueParams");
    let live = replay(&packets[..start], |_, _, _| {});
    let mut listed = PbxState::new();
    for p in packets[start..]
        .iter()
        .take_while(|p| p.event() != Some("QueueStatusComplete"))
    {
        listed.apply(p, 1_795_353_482_000);
    }
    let (a, b) = (live.snapshot(0), listed.snapshot(0));
    let (qa, qb) = (&list(&a, "queues")[0], &list(&b, "queues")[0]);
    assert_eq!(qa["calls"], qb["calls"]);
    assert_eq!(qa["callers"], qb["callers"]);
    let (ma, mb) = (&qa["members"][0], &qb["members"][0]);
    for key in ["name", "interface", "status", "in_call", "paused"] {
        assert_eq!(ma[key], mb[key], "{key}");
    }
    assert_eq!(mb["in_call"], true);
    assert_eq!(mb["status_text"], "In use");
}

#[test]
fn queue_status_builds_queue_support_with_agent200() {
    let state = replay(&capture("07_queuestatus"), |_, _, _| {});
    assert_eq!(state.queue_count(), 1);
    let snap = state.snapshot(0);
    let q = find(&snap, "queues", "name", "support").expect("queue support");
    assert_eq!(q["strategy"], "ringall");
    assert_eq!(q["calls"], 0);
    assert_eq!(q["max"], "0");
    assert_eq!(q["service_level"], "0");
    let members = q["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    let m = &members[0];
    assert_eq!(m["name"], "Agent200");
    assert_eq!(m["interface"], "Local/200@demo");
    assert_eq!(m["state_interface"], "Local/200@demo");
    assert_eq!(m["membership"], "static");
    assert_eq!(m["penalty"], "0");
    assert_eq!(m["status"], "1");
    assert_eq!(m["status_text"], "Not in use");
    assert_eq!(m["paused"], false);
    assert_eq!(m["paused_reason"], "");
    assert_eq!(m["in_call"], false);
    assert_eq!(state.len(), 2);
}

#[test]
fn floods_and_responses_change_nothing() {
    for name in [
        "15_flood_200_events_user",
        "21_events_action_userevent",
        "06_command",
    ] {
        let mut state = PbxState::new();
        for p in capture(name) {
            assert!(!state.apply(&p, 1), "{name}: {p:?}");
        }
        assert!(state.is_empty());
    }
    // With every class on, the flood's channels still come and go.
    let mut max = 0;
    let state = replay(&capture("14_flood_200_events_on"), |s, _, _| {
        max = max.max(s.channel_count())
    });
    assert_eq!((max, state.channel_count()), (2, 0));
}
