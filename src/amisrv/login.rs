//! What an AMI client may do before it has logged in, as Asterisk's `manager.c` behaves: `Login`
//! (Username/Secret, or `AuthType: MD5` with the `Key` of an earlier `Challenge`), `Challenge`,
//! `Logoff`; every other action gets `Permission denied`. Pure: the caller supplies the random
//! challenge and checks the credentials (argon2 is slow and lives in `auth`).

use bytestring::ByteString;
use md5::{Digest, Md5};

use super::render::render_reply;
use crate::ami::Packet;

/// Asterisk's answer to a good login.
pub const ACCEPTED: &str = "Authentication accepted";
/// Asterisk's answer to a bad login (sent after a delay, then the connection closes).
pub const FAILED: &str = "Authentication failed";
/// Asterisk's answer to any other action before login.
pub const DENIED: &str = "Permission denied";

/// Credentials to check, from a `Login` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Secret:` is the user's password (argon2 `password_hash`) or token.
    Secret { user: String, secret: String },
    /// `Key:` must be md5hex(challenge + the user's `ami_secret`).
    Md5 {
        user: String,
        challenge: String,
        key: String,
    },
}

impl Credentials {
    pub fn user(&self) -> &str {
        match self {
            Credentials::Secret { user, .. } | Credentials::Md5 { user, .. } => user,
        }
    }
}

/// What to do with one packet from a client that has not logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write this and read on.
    Reply(ByteString),
    /// Write this `Goodbye` and close.
    Goodbye(ByteString),
    /// Check these credentials; the login's `Events:` header (None = Asterisk's default, on).
    Check {
        credentials: Credentials,
        events: Option<String>,
    },
    /// A `Login` that cannot succeed (no username, MD5 without a challenge): fail it as a bad one.
    Fail,
}

/// The pre-login state of one connection: the challenge it was given, if any.
#[derive(Debug, Default)]
pub struct PreLogin {
    challenge: Option<String>,
}

impl PreLogin {
    /// Handles one packet; `fresh_challenge` is called only for `Action: Challenge`.
    pub fn on_packet(&mut self, p: &Packet, fresh_challenge: impl FnOnce() -> String) -> Step {
        let id = p.action_id();
        let name = p.get("Action").unwrap_or("");
        if name.eq_ignore_ascii_case("Login") {
            let user = p.get("Username").unwrap_or("").to_string();
            if user.is_empty() {
                return Step::Fail;
            }
            let events = p.get("Events").map(str::to_string);
            let md5 = p
                .get("AuthType")
                .is_some_and(|t| t.eq_ignore_ascii_case("md5"));
            let credentials = if md5 {
                // A challenge is good for one login attempt.
                let Some(challenge) = self.challenge.take() else {
                    return Step::Fail;
                };
                let key = p.get("Key").unwrap_or("").to_ascii_lowercase();
                Credentials::Md5 {
                    user,
                    challenge,
                    key,
                }
            } else {
                let secret = p.get("Secret").unwrap_or("").to_string();
                Credentials::Secret { user, secret }
            };
            return Step::Check {
                credentials,
                events,
            };
        }
        if name.eq_ignore_ascii_case("Challenge") {
            let md5 = p
                .get("AuthType")
                .is_some_and(|t| t.eq_ignore_ascii_case("md5"));
            if !md5 {
                return Step::Reply(error(id, "Must specify AuthType"));
            }
            let challenge = fresh_challenge();
            let reply = render_reply(
                &[("Response", "Success"), ("Challenge", &challenge)],
                id,
                None,
            );
            self.challenge = Some(challenge);
            return Step::Reply(reply);
        }
        if name.eq_ignore_ascii_case("Logoff") {
            return Step::Goodbye(goodbye(id));
        }
        if p.get("Action").is_none() {
            return Step::Reply(error(id, "Missing action in request"));
        }
        Step::Reply(error(id, DENIED))
    }
}

/// md5hex(challenge + secret), Asterisk's MD5 login key.
pub fn md5_key(challenge: &str, secret: &str) -> String {
    let mut h = Md5::new();
    h.update(challenge.as_bytes());
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `Response: Success` / `Message: Authentication accepted`.
pub fn accepted(id: Option<&str>) -> ByteString {
    render_reply(&[("Response", "Success"), ("Message", ACCEPTED)], id, None)
}

/// `Response: Error` with a message, in Asterisk's order.
pub fn error(id: Option<&str>, message: &str) -> ByteString {
    render_reply(&[("Response", "Error"), ("Message", message)], id, None)
}

/// Asterisk's answer to `Logoff`.
pub fn goodbye(id: Option<&str>) -> ByteString {
    render_reply(
        &[
            ("Response", "Goodbye"),
            ("Message", "Thanks for all the fish."),
        ],
        id,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(h: &[(&str, &str)]) -> Packet {
        Packet::from_headers(h.iter().copied())
    }

    #[test]
    fn md5_key_matches_the_capture() {
        // 16_challenge_md5_login: challenge 145233646, secret amp111.
        assert_eq!(
            md5_key("145233646", "amp111"),
            "2165ab7feea6a3c2d179a99557e2fd1f"
        );
    }

    #[test]
    fn challenge_then_md5_login() {
        let mut s = PreLogin::default();
        let step = s.on_packet(
            &action(&[
                ("Action", "Challenge"),
                ("ActionID", "c"),
                ("AuthType", "MD5"),
            ]),
            || "42".into(),
        );
        assert_eq!(
            step,
            Step::Reply("Response: Success\r\nActionID: c\r\nChallenge: 42\r\n\r\n".into())
        );
        let login = action(&[
            ("Action", "Login"),
            ("AuthType", "md5"),
            ("Username", "u"),
            ("Key", "ABC"),
            ("Events", "off"),
        ]);
        assert_eq!(
            s.on_packet(&login, || unreachable!()),
            Step::Check {
                credentials: Credentials::Md5 {
                    user: "u".into(),
                    challenge: "42".into(),
                    key: "abc".into()
                },
                events: Some("off".into())
            }
        );
        assert_eq!(
            s.on_packet(&login, || unreachable!()),
            Step::Fail,
            "a challenge is good once"
        );
    }

    #[test]
    fn other_actions_are_denied_and_logoff_says_goodbye() {
        let mut s = PreLogin::default();
        assert_eq!(
            s.on_packet(
                &action(&[("Action", "Ping"), ("ActionID", "ping-8")]),
                String::new
            ),
            Step::Reply(
                "Response: Error\r\nActionID: ping-8\r\nMessage: Permission denied\r\n\r\n".into()
            )
        );
        assert_eq!(
            s.on_packet(
                &action(&[("Action", "Logoff"), ("ActionID", "l")]),
                String::new
            ),
            Step::Goodbye(
                "Response: Goodbye\r\nActionID: l\r\nMessage: Thanks for all the fish.\r\n\r\n"
                    .into()
            )
        );
        assert_eq!(
            s.on_packet(
                &action(&[("Action", "Login"), ("Secret", "x")]),
                String::new
            ),
            Step::Fail
        );
    }
}
