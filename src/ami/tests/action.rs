//! Encoding actions: exact bytes, refusals that write nothing, and the tokio encoder.

use bytes::BytesMut;
use tokio_util::codec::Encoder;

use crate::ami::{Action, ActionError, AmiEncoder};

#[test]
fn encode_writes_headers_in_order_and_a_blank_line() {
    let action = Action::new("Originate")
        .header("ActionID", "o-1")
        .header("Variable", "A=1")
        .header("Variable", "B=2")
        .header("Async", "");
    let bytes = action.to_bytes().unwrap();
    assert_eq!(
        &bytes[..],
        b"Action: Originate\r\nActionID: o-1\r\nVariable: A=1\r\nVariable: B=2\r\nAsync: \r\n\r\n"
    );
    assert_eq!(action.name(), "Originate");
    assert_eq!(action.get("variable"), Some("A=1"));
}

#[test]
fn set_replaces_the_first_or_appends() {
    let mut action = Action::new("Ping");
    action.set("actionid", "x");
    action.set("ActionID", "y");
    action.push("ActionID", "z");
    let headers: Vec<_> = action.headers().collect();
    assert_eq!(
        headers,
        [("Action", "Ping"), ("actionid", "y"), ("ActionID", "z")]
    );
}

#[test]
fn refusals_write_nothing() {
    let cases = [
        (
            Action::new("Ping").header("ActionID", "a\r\nAction: Logoff"),
            "CrLf",
        ),
        (Action::new("Ping").header("X\n", "v"), "CrLf"),
        (Action::new("Ping\r"), "CrLf"),
        (Action::new("Ping").header("Bad:Name", "v"), "BadName"),
        (Action::new("Ping").header("", "v"), "BadName"),
        (Action::default().header("ActionID", "1"), "MissingAction"),
    ];
    for (action, kind) in cases {
        let mut buf = BytesMut::from(&b"kept"[..]);
        let err = action.encode(&mut buf).unwrap_err();
        let got = match err {
            ActionError::CrLf { .. } => "CrLf",
            ActionError::BadName { .. } => "BadName",
            ActionError::MissingAction => "MissingAction",
        };
        assert_eq!(got, kind, "{action:?}");
        assert_eq!(&buf[..], b"kept", "nothing written for {action:?}");
        assert!(action.to_bytes().is_err());
    }
    assert_eq!(Action::default().name(), "");
}

#[test]
fn encoder_reports_refusal_as_invalid_input() {
    let mut buf = BytesMut::new();
    let err = AmiEncoder
        .encode(Action::new("Ping").header("X", "a\nb"), &mut buf)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(buf.is_empty());
    AmiEncoder.encode(&Action::new("Ping"), &mut buf).unwrap();
    assert_eq!(&buf[..], b"Action: Ping\r\n\r\n");
}
