//! Actions in flight: the ActionIDs amihub wrote upstream (`amihub.<32 hex digits>`, random per
//! action), which server each went to, who asked, and how far each reply has got (response, list
//! items, `…Complete`, an async Originate's result).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::ami::{Packet, PacketKind};

/// Prefix of the ActionIDs amihub writes for client actions.
pub const ID_PREFIX: &str = "amihub.";

/// The key of one action in flight, and the random part of its upstream ActionID: 128 bits from
/// the thread's CSPRNG, so a PBX cannot guess another PBX's ids (they were sequential).
pub type Token = u128;

/// The ActionID written upstream for `token`.
pub fn wire_id(token: Token) -> String {
    format!("{ID_PREFIX}{token:032x}")
}
/// How long an async Originate's `OriginateResponse` is awaited after its response.
const ORIGINATE_WAIT: Duration = Duration::from_secs(120);

/// A complete result for an HTTP caller.
#[derive(Debug, Clone)]
pub struct Collected {
    pub response: Packet,
    pub events: Vec<Packet>,
    /// The caller's ActionID (or the generated one) to show in the result.
    pub action_id: String,
}

/// Why an HTTP action produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionFailure {
    #[error("unknown server {0}")]
    UnknownServer(u32),
    #[error("server {0} is not connected")]
    NotConnected(u32),
    #[error("action {0} is not permitted for this user")]
    Forbidden(String),
    #[error("timeout waiting for the PBX")]
    Timeout,
    #[error("too many HTTP actions in flight (at most {MAX_HTTP_IN_FLIGHT})")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

/// Where the reply to an action goes.
pub enum ReplyTo {
    Session(u64),
    Collect {
        tx: Option<oneshot::Sender<Result<Collected, ActionFailure>>>,
        response: Option<Packet>,
        events: Vec<Packet>,
        /// Bytes collected so far (bounded by MAX_COLLECT_BYTES).
        bytes: usize,
    },
}

/// Largest HTTP action result amihub collects before failing it.
pub const MAX_COLLECT_BYTES: usize = 16 << 20;
/// HTTP actions in flight at once (all users); more get 503.
pub const MAX_HTTP_IN_FLIGHT: usize = 256;

/// One action in flight.
pub struct Pending {
    pub reply: ReplyTo,
    pub server_id: u32,
    /// The client's own ActionID, restored on every reply.
    pub client_id: Option<String>,
    pub responded: bool,
    /// The response announced a list: events follow until `…Complete`.
    pub list: bool,
    pub async_originate: bool,
    pub deadline: Instant,
    pub started: Instant,
}

impl Pending {
    pub fn new(
        reply: ReplyTo,
        server_id: u32,
        client_id: Option<String>,
        action: &crate::ami::Action,
        timeout: Duration,
    ) -> Pending {
        let async_originate = action.name().eq_ignore_ascii_case("Originate")
            && action.get("Async").is_some_and(crate::ami::ast_true);
        Pending {
            reply,
            server_id,
            client_id,
            responded: false,
            list: false,
            async_originate,
            deadline: Instant::now() + timeout,
            started: Instant::now(),
        }
    }

    /// The id the client sees: its own, or the one amihub generated.
    pub fn shown_id(&self, token: Token) -> String {
        self.client_id.clone().unwrap_or_else(|| wire_id(token))
    }

    /// An HTTP caller that went away (dropped its receiver): nobody waits for this result.
    pub fn abandoned(&self) -> bool {
        match &self.reply {
            ReplyTo::Collect { tx, .. } => tx.as_ref().is_none_or(|t| t.is_closed()),
            ReplyTo::Session(_) => false,
        }
    }

    pub fn session(&self) -> Option<u64> {
        match self.reply {
            ReplyTo::Session(s) => Some(s),
            ReplyTo::Collect { .. } => None,
        }
    }

    /// Feeds a packet carrying this action's id. Returns None if it is not part of the reply
    /// (an event that merely carries the id, like UserEvent: a broadcast), else whether the
    /// reply is now complete.
    pub fn absorb(&mut self, packet: &Packet) -> Option<bool> {
        let is_response = is_response(packet);
        let event = packet.event().unwrap_or("");
        let targeted =
            is_response || self.list || (self.async_originate && event == "OriginateResponse");
        if !targeted {
            return None;
        }
        if is_response {
            self.responded = true;
            let msg = packet.get("Message").unwrap_or("");
            self.list = packet
                .get("EventList")
                .is_some_and(|v| v.eq_ignore_ascii_case("start"))
                || msg.ends_with("will follow");
            let success = packet
                .get("Response")
                .is_some_and(|r| r.eq_ignore_ascii_case("Success"));
            if self.async_originate && success {
                self.deadline = Instant::now() + ORIGINATE_WAIT;
            }
            let awaits_more = self.list || (self.async_originate && success);
            return Some(!awaits_more);
        }
        let complete = packet
            .get("EventList")
            .is_some_and(|v| v.eq_ignore_ascii_case("Complete"))
            || (self.list && event.ends_with("Complete"))
            || event == "OriginateResponse";
        Some(complete)
    }
}

/// True for the response to an action: a packet whose first header is `Response`. An event
/// may carry a `Response` header of its own (`OriginateResponse` does, capture 10): that is
/// still an event.
pub fn is_response(packet: &Packet) -> bool {
    packet.kind() == PacketKind::Response
}

/// The table of actions in flight.
#[derive(Default)]
pub struct PendingTable {
    pub map: HashMap<Token, Pending>,
}

impl PendingTable {
    /// Registers an action under a fresh random token (its upstream id is [`wire_id`]).
    pub fn insert(&mut self, p: Pending) -> Token {
        loop {
            let token: Token = rand::random();
            if let std::collections::hash_map::Entry::Vacant(slot) = self.map.entry(token) {
                slot.insert(p);
                return token;
            }
        }
    }

    /// The token of an ActionID that `server_id` sent back, if it is one of ours, still pending,
    /// and its action went to that server: a PBX can only answer what was sent to it.
    pub fn lookup(&self, server_id: u32, action_id: Option<&str>) -> Option<Token> {
        let hex = action_id?.strip_prefix(ID_PREFIX)?;
        if hex.len() != 32 {
            return None;
        }
        let token = Token::from_str_radix(hex, 16).ok()?;
        let p = self.map.get(&token)?;
        (p.server_id == server_id).then_some(token)
    }

    /// Actions past their deadline, and HTTP actions whose caller went away.
    pub fn expired(&self, now: Instant) -> Vec<Token> {
        self.map
            .iter()
            .filter(|(_, p)| p.deadline <= now || p.abandoned())
            .map(|(s, _)| *s)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::Action;

    fn pending(action: Action) -> Pending {
        Pending::new(
            ReplyTo::Session(1),
            1,
            Some("c".into()),
            &action,
            Duration::from_secs(10),
        )
    }

    fn p(h: &[(&str, &str)]) -> Packet {
        Packet::from_headers(h.iter().copied())
    }

    #[test]
    fn plain_response_completes() {
        let mut x = pending(Action::new("Ping"));
        assert_eq!(x.absorb(&p(&[("Response", "Success")])), Some(true));
    }

    #[test]
    fn list_runs_until_complete() {
        let mut x = pending(Action::new("QueueStatus"));
        assert_eq!(
            x.absorb(&p(&[("Response", "Success"), ("EventList", "start")])),
            Some(false)
        );
        assert_eq!(x.absorb(&p(&[("Event", "QueueParams")])), Some(false));
        assert_eq!(
            x.absorb(&p(&[
                ("Event", "QueueStatusComplete"),
                ("EventList", "Complete")
            ])),
            Some(true)
        );
    }

    #[test]
    fn async_originate_waits_for_originate_response() {
        let mut x = pending(Action::new("Originate").header("Async", "true"));
        assert_eq!(
            x.absorb(&p(&[("Event", "UserEvent")])),
            None,
            "unrelated event is broadcast"
        );
        assert_eq!(x.absorb(&p(&[("Response", "Success")])), Some(false));
        assert_eq!(x.absorb(&p(&[("Event", "OriginateResponse")])), Some(true));
    }

    #[test]
    fn originate_response_with_its_own_response_header_completes() {
        // The shape Asterisk 22 writes (capture 10): the event repeats `Response: Success`.
        let mut x = pending(Action::new("Originate").header("Async", "yes"));
        assert_eq!(x.absorb(&p(&[("Response", "Success")])), Some(false));
        let event = p(&[
            ("Event", "OriginateResponse"),
            ("Privilege", "call,all"),
            ("ActionID", "amihub.1"),
            ("Response", "Success"),
            ("Reason", "4"),
        ]);
        assert!(!is_response(&event));
        assert_eq!(x.absorb(&event), Some(true));
    }

    #[test]
    fn ids_are_ours_only_while_pending_and_only_from_their_server() {
        let mut t = PendingTable::default();
        let seq = t.insert(pending(Action::new("Ping")));
        let id = wire_id(seq);
        assert_eq!(t.lookup(1, Some(&id)), Some(seq));
        assert_eq!(t.lookup(2, Some(&id)), None, "another server's reply");
        assert_eq!(t.lookup(1, Some("amihub.1")), None);
        assert_eq!(t.lookup(1, Some(&id.to_uppercase())), None);
        assert_eq!(t.lookup(1, Some("client-1")), None);
        assert_eq!(t.lookup(1, None), None);
        t.map.clear();
        assert_eq!(t.lookup(1, Some(&id)), None);
    }

    #[test]
    fn ids_are_random_not_sequential() {
        let mut t = PendingTable::default();
        let a = t.insert(pending(Action::new("Ping")));
        let b = t.insert(pending(Action::new("Ping")));
        assert_ne!(a.abs_diff(b), 1);
        assert_eq!(wire_id(a).len(), ID_PREFIX.len() + 32);
    }
}
