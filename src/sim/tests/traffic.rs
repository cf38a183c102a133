//! The simulated state through list answers, Originate/Hangup, event masks, floods and demo calls.

use std::time::{Duration, Instant};

use super::{headers, pbx, read_list, Client};
use crate::sim::FloodSpec;

#[tokio::test]
async fn queue_status_list_shape() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.login("off").await;
    c.send(&[("Action", "QueueStatus"), ("ActionID", "q1")])
        .await;
    let (items, _) = read_list(&mut c, "q1", "QueueStatusComplete").await;
    let params: Vec<_> = items
        .iter()
        .filter(|p| p.event() == Some("QueueParams"))
        .collect();
    assert_eq!(
        params
            .iter()
            .map(|p| p.get("Queue").unwrap_or(""))
            .collect::<Vec<_>>(),
        ["support", "sales"]
    );
    let members = items
        .iter()
        .filter(|p| p.event() == Some("QueueMember"))
        .count();
    assert!((8..=12).contains(&members), "{members} agents");
    assert_eq!(items.len(), 2 + members);
    c.send(&[
        ("Action", "QueueStatus"),
        ("ActionID", "q2"),
        ("Queue", "nosuchqueue"),
    ])
    .await;
    let (items, _) = read_list(&mut c, "q2", "QueueStatusComplete").await;
    assert!(items.is_empty());
    c.send(&[
        ("Action", "QueueSummary"),
        ("ActionID", "q3"),
        ("Queue", "sales"),
    ])
    .await;
    let (items, _) = read_list(&mut c, "q3", "QueueSummaryComplete").await;
    assert_eq!(items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originate_then_hangup_keeps_lists_consistent() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.login("on").await;
    let originate = [
        ("Action", "Originate"),
        ("ActionID", "o1"),
        ("Channel", "Local/100@demo"),
        ("Application", "Wait"),
        ("Data", "30"),
        ("Async", "true"),
        ("CallerID", "AMI Test <5551000>"),
    ];
    c.send(&originate).await;
    let p = c.until("ActionID", "o1").await;
    assert_eq!(
        headers(&p),
        [
            ("Response", "Success"),
            ("ActionID", "o1"),
            ("Message", "Originate successfully queued")
        ]
    );
    let p = c.until("Event", "OriginateResponse").await;
    assert_eq!(
        (p.action_id(), p.get("Response"), p.get("Reason")),
        (Some("o1"), Some("Success"), Some("4"))
    );
    assert_eq!(p.get("CallerIDNum"), Some("5551000"));
    // Exactly Asterisk 22's shape (capture 10): the same headers in the same order, the same
    // values apart from the time, the call's ids and the Wait duration.
    let recorded = captured_originate_response();
    let names =
        |p: &crate::ami::Packet| p.headers().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&p), names(&recorded));
    for h in [
        "Event",
        "Privilege",
        "Response",
        "Application",
        "Reason",
        "CallerIDNum",
        "CallerIDName",
    ] {
        assert_eq!(p.get(h), recorded.get(h), "{h}");
    }
    let chan = p.get("Channel").expect("channel").to_string();
    c.send(&[("Action", "CoreShowChannels"), ("ActionID", "s1")])
        .await;
    let (items, _) = read_list(&mut c, "s1", "CoreShowChannelsComplete").await;
    assert_eq!(items.len(), 2);
    c.send(&[("Action", "Hangup"), ("ActionID", "h1"), ("Channel", &chan)])
        .await;
    assert_eq!(
        c.until("ActionID", "h1").await.get("Message"),
        Some("Channel Hungup")
    );
    let p = c.until("Event", "Hangup").await;
    assert_eq!(p.get("Cause-txt"), Some("Normal Clearing"));
    c.send(&[("Action", "CoreShowChannels"), ("ActionID", "s2")])
        .await;
    let (items, _) = read_list(&mut c, "s2", "CoreShowChannelsComplete").await;
    assert!(items.is_empty());
    assert!(pbx.channels().is_empty());
}

/// The `OriginateResponse` a real Asterisk 22 wrote for an async Originate (capture 10).
fn captured_originate_response() -> crate::ami::Packet {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/integration/captures/10_originate_local100_async.txt"
    );
    let bytes = std::fs::read(path).expect("capture 10");
    let mut rest = &bytes[..];
    while let Some((end, next)) = crate::ami::find_frame_end(rest) {
        let p = crate::ami::parse_packet(&rest[..end], &crate::ami::Limits::default())
            .expect("capture packet");
        if p.event() == Some("OriginateResponse") {
            return p;
        }
        rest = &rest[next..];
    }
    panic!("capture 10 has no OriginateResponse");
}

#[tokio::test]
async fn userevent_and_emit_follow_event_masks() {
    let pbx = pbx(false).await;
    let mut on = Client::connect(&pbx).await;
    on.login("user").await;
    let mut off = Client::connect(&pbx).await;
    off.login("off").await;
    on.send(&[
        ("Action", "UserEvent"),
        ("ActionID", "u1"),
        ("UserEvent", "ManualTest"),
        ("Header1", "one"),
    ])
    .await;
    assert_eq!(on.packet().await.get("Message"), Some("Event Sent"));
    let p = on.packet().await;
    let h = headers(&p);
    assert_eq!(
        (h[0], h[1], h[3], h[4]),
        (
            ("Event", "UserEvent"),
            ("Privilege", "user,all"),
            ("UserEvent", "ManualTest"),
            ("ActionID", "u1")
        )
    );
    pbx.emit(&[("Event", "Custom"), ("Privilege", "call,all"), ("X", "1")]);
    pbx.emit(&[("Event", "Custom"), ("Privilege", "user,all"), ("X", "2")]);
    assert_eq!(on.packet().await.get("X"), Some("2"));
    // The events-off session got nothing: its next packet is the answer to this Ping.
    off.send(&[("Action", "Ping"), ("ActionID", "p")]).await;
    assert_eq!(off.packet().await.action_id(), Some("p"));
    pbx.inject_raw(b"Event: Raw\r\nA: b\r\n\r\n");
    assert_eq!(off.packet().await.event(), Some("Raw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_delivers_every_seq_in_order() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.login("on").await;
    c.until("Event", "SuccessfulAuth").await;
    pbx.flood(FloodSpec {
        rate_per_s: None,
        count: Some(1000),
        event_bytes: 600,
    });
    for seq in 1..=1000u64 {
        let p = c.packet().await;
        assert_eq!(
            (p.event(), p.get("UserEvent")),
            (Some("UserEvent"), Some("Flood"))
        );
        assert_eq!(p.get("Seq"), Some(seq.to_string().as_str()));
        assert!(p.get("SentNs").is_some_and(|t| t.parse::<u64>().is_ok()));
    }
    c.send(&[("Action", "Ping"), ("ActionID", "after")]).await;
    assert_eq!(
        c.packet().await.action_id(),
        Some("after"),
        "nothing after Seq 1000"
    );
    assert!(pbx.stats().events_sent >= 1000);
}

#[tokio::test]
async fn paced_flood_keeps_its_rate() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.login("user").await;
    let start = Instant::now();
    pbx.flood(FloodSpec {
        rate_per_s: Some(2000),
        count: Some(200),
        event_bytes: 300,
    });
    let last = c.until("Seq", "200").await;
    assert_eq!(last.get("UserEvent"), Some("Flood"));
    assert!(
        start.elapsed() >= Duration::from_millis(90),
        "200 events at 2000/s took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn demo_traffic_makes_calls() {
    let pbx = pbx(true).await;
    let mut c = Client::connect(&pbx).await;
    c.login("on").await;
    let p = c.until("Event", "Newchannel").await;
    assert_eq!(p.get("Privilege"), Some("call,all"));
    // Calls last seconds; with a call every ~100 ms the first hangups come soon.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no Hangup within a minute");
        let p = c.packet().await;
        if p.event() == Some("Hangup") {
            assert!(p.get("Cause").is_some() && p.get("Cause-txt").is_some());
            break;
        }
    }
    c.send(&[("Action", "Status"), ("ActionID", "st")]).await;
    let (items, done) = read_list(&mut c, "st", "StatusComplete").await;
    assert_eq!(done.get("Items"), Some(items.len().to_string().as_str()));
}
