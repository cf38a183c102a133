//! Logins, action errors, CLI output and the connection controls (silent, kill, refuse, stop).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;

use super::{headers, pbx, Client, PATIENCE};
use crate::sim::{SimConfig, SimPbx};

#[tokio::test]
async fn plain_login_ping_logoff() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.send(&[
        ("Action", "Login"),
        ("ActionID", "l1"),
        ("Username", "admin"),
        ("Secret", "amp111"),
        ("Events", "off"),
    ])
    .await;
    let p = c.packet().await;
    assert_eq!(
        headers(&p),
        [
            ("Response", "Success"),
            ("ActionID", "l1"),
            ("Message", "Authentication accepted")
        ]
    );
    c.send(&[("Action", "Ping"), ("ActionID", "p2")]).await;
    let p = c.packet().await;
    assert_eq!(
        headers(&p)[..3],
        [
            ("Response", "Success"),
            ("ActionID", "p2"),
            ("Ping", "Pong")
        ]
    );
    assert!(p.get("Timestamp").is_some_and(|t| t.contains('.')));
    c.send(&[("Action", "Logoff"), ("ActionID", "x")]).await;
    let p = c.packet().await;
    assert_eq!(
        headers(&p),
        [
            ("Response", "Goodbye"),
            ("ActionID", "x"),
            ("Message", "Thanks for all the fish.")
        ]
    );
    assert!(c.next().await.is_none(), "closed after Goodbye");
    let s = pbx.stats();
    assert_eq!((s.logins_ok, s.pings, s.logoffs, s.actions), (1, 1, 1, 3));
}

#[tokio::test]
async fn events_on_login_sends_fully_booted() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.send(&[
        ("Action", "Login"),
        ("Username", "admin"),
        ("Secret", "amp111"),
    ])
    .await;
    assert_eq!(c.packet().await.get("Response"), Some("Success"));
    let p = c.packet().await;
    assert_eq!(
        headers(&p)[..2],
        [("Event", "FullyBooted"), ("Privilege", "system,all")]
    );
    assert_eq!(c.packet().await.event(), Some("SuccessfulAuth"));
}

#[tokio::test]
async fn md5_challenge_login() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.send(&[
        ("Action", "Challenge"),
        ("ActionID", "c1"),
        ("AuthType", "MD5"),
    ])
    .await;
    let p = c.packet().await;
    let challenge = p.get("Challenge").expect("challenge").to_string();
    let key = session_key(&challenge, "amp111");
    c.send(&[
        ("Action", "Login"),
        ("ActionID", "l1"),
        ("AuthType", "MD5"),
        ("Username", "admin"),
        ("Key", &key),
        ("Events", "off"),
    ])
    .await;
    assert_eq!(
        c.packet().await.get("Message"),
        Some("Authentication accepted")
    );
}

fn session_key(challenge: &str, secret: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(format!("{challenge}{secret}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn bad_secret_fails_and_closes() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.send(&[
        ("Action", "Login"),
        ("ActionID", "l7"),
        ("Username", "admin"),
        ("Secret", "wrong"),
    ])
    .await;
    let p = c.packet().await;
    assert_eq!(
        headers(&p),
        [
            ("Response", "Error"),
            ("ActionID", "l7"),
            ("Message", "Authentication failed")
        ]
    );
    assert!(c.next().await.is_none());
    // A forced failure looks the same for the right secret.
    pbx.set_fail_auth(true);
    let mut c = Client::connect(&pbx).await;
    c.send(&[
        ("Action", "Login"),
        ("Username", "admin"),
        ("Secret", "amp111"),
    ])
    .await;
    assert_eq!(
        c.packet().await.get("Message"),
        Some("Authentication failed")
    );
    assert!(c.next().await.is_none());
    assert_eq!(pbx.stats().logins_failed, 2);
}

#[tokio::test]
async fn actions_before_login_are_denied() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.send(&[("Action", "Ping"), ("ActionID", "p8")]).await;
    let p = c.packet().await;
    assert_eq!(
        headers(&p),
        [
            ("Response", "Error"),
            ("ActionID", "p8"),
            ("Message", "Permission denied")
        ]
    );
    c.send(&[("Action", "Logoff")]).await;
    assert_eq!(c.packet().await.get("Response"), Some("Goodbye"));
}

#[tokio::test]
async fn errors_for_missing_and_unknown_actions() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.login("off").await;
    c.send(&[("ActionID", "n1"), ("Foo", "bar")]).await;
    assert_eq!(
        c.packet().await.get("Message"),
        Some("Missing action in request")
    );
    c.send(&[("Action", "NoSuchAction"), ("ActionID", "n2")])
        .await;
    let msg = c.packet().await.get("Message").map(str::to_string);
    let hint = "Use Action: ListCommands to show available commands.";
    assert_eq!(
        msg,
        Some(format!("Invalid/unknown command: NoSuchAction. {hint}"))
    );
    c.send(&[
        ("Action", "Hangup"),
        ("Channel", "Local/nonexistent-0001;1"),
    ])
    .await;
    assert_eq!(c.packet().await.get("Message"), Some("No such channel"));
}

#[tokio::test]
async fn command_output_shape() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.login("off").await;
    c.send(&[
        ("Action", "Command"),
        ("ActionID", "c16"),
        ("Command", "core show version"),
    ])
    .await;
    let p = c.packet().await;
    assert_eq!(
        headers(&p)[..3],
        [
            ("Response", "Success"),
            ("ActionID", "c16"),
            ("Message", "Command output follows")
        ]
    );
    assert!(p.output_lines()[0].starts_with("Asterisk 22.10.1 built by"));
    c.send(&[("Action", "Command"), ("Command", "core show uptime")])
        .await;
    assert_eq!(c.packet().await.output_lines().len(), 2);
    c.send(&[("Action", "Command"), ("Command", "this is not a command")])
        .await;
    let p = c.packet().await;
    assert_eq!(p.get("Response"), Some("Error"));
    assert!(p.output_lines()[0].starts_with("No such command 'this is not a command'"));
}

#[tokio::test]
async fn silent_answers_nothing() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.login("off").await;
    pbx.set_silent(true);
    let pbx2 = pbx.clone();
    c.send(&[("Action", "Ping"), ("ActionID", "quiet")]).await;
    assert!(pbx.wait_for(PATIENCE, |s| s.pings == 1).await);
    // The ping reached the PBX; give a reply the time to show up if one were coming.
    let reply = tokio::time::timeout(Duration::from_millis(200), c.rd.next()).await;
    assert!(reply.is_err(), "silent PBX answered: {reply:?}");
    // A connection made meanwhile gets its banner once the PBX answers again.
    let late = tokio::spawn(async move { Client::connect(&pbx2).await });
    assert!(pbx.wait_for(PATIENCE, |s| s.live_connections == 2).await);
    pbx.set_silent(false);
    late.await.expect("banner after the silence");
    c.send(&[("Action", "Ping"), ("ActionID", "loud")]).await;
    assert_eq!(c.packet().await.action_id(), Some("loud"));
}

#[tokio::test]
async fn kill_refuse_and_stop() {
    let pbx = pbx(false).await;
    let mut c = Client::connect(&pbx).await;
    c.login("off").await;
    pbx.kill_connections();
    assert!(c.next().await.is_none(), "socket closed");
    assert!(
        pbx.wait_for(PATIENCE, |s| s.live_connections == 0 && s.logged_in == 0)
            .await
    );
    pbx.set_refuse(true);
    let mut s = TcpStream::connect(pbx.addr()).await.expect("connect");
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(PATIENCE, tokio::io::AsyncReadExt::read(&mut s, &mut byte)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "refused connection closed without a banner"
    );
    pbx.set_refuse(false);
    let mut c = Client::connect(&pbx).await;
    let addr = pbx.addr();
    pbx.stop();
    assert!(c.next().await.is_none());
    let again = SimPbx::start(&addr.to_string(), SimConfig::default())
        .await
        .expect("port released");
    Client::connect(&again).await;
}

#[test]
fn start_in_thread_serves_without_a_runtime() {
    use std::io::Read;
    let pbx = SimPbx::start_in_thread("127.0.0.1:0", SimConfig::default()).expect("start");
    let mut s = std::net::TcpStream::connect(pbx.addr()).expect("connect");
    let mut banner = [0u8; 30];
    s.read_exact(&mut banner).expect("banner");
    assert_eq!(&banner, b"Asterisk Call Manager/11.0.0\r\n");
    pbx.stop();
    let mut rest = Vec::new();
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    assert_eq!(s.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0), 0);
}
