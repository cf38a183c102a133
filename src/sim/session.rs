//! One AMI connection to the simulator: a reader task that parses actions with
//! `crate::ami::AmiDecoder`, runs the login state machine and answers each action, and a writer
//! loop that owns the socket's write half and writes, in order, the banner, responses, events
//! published to this connection and flood batches. Everything for the socket goes through one
//! bounded queue, so responses and events keep their order and a slow reader slows only its writer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use rand::Rng;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::originate::{originate, originate_fails, OriginateReq};
use super::wire::{event_tv, now, parse_mask, Msg, Stamp, SECURITY, SYSTEM};
use super::world::World;
use super::writer::{write_loop, Out, QUEUE_MESSAGES};
use super::{answers, lock, traffic, Inner};
use crate::ami::{AmiDecoder, Frame, Limits, Packet};

/// The parts of a connection the control API reaches.
pub(crate) struct ConnHandle {
    pub(crate) tx: mpsc::Sender<Out>,
    pub(crate) shared: Arc<ConnShared>,
}

pub(crate) struct ConnShared {
    /// Event classes this connection takes (0 = events off).
    pub(crate) mask: AtomicU32,
    pub(crate) logged_in: AtomicBool,
    /// Cancelled to drop the connection at once.
    pub(crate) token: CancellationToken,
}

/// Serves one accepted connection until either side closes it.
pub(crate) async fn serve(inner: Arc<Inner>, stream: TcpStream, peer: SocketAddr) {
    let id = inner.next_conn.fetch_add(1, Relaxed);
    let _ = stream.set_nodelay(true);
    let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
    let shared = Arc::new(ConnShared {
        mask: AtomicU32::new(0),
        logged_in: AtomicBool::new(false),
        token: inner.shutdown.child_token(),
    });
    let handle = ConnHandle {
        tx: tx.clone(),
        shared: shared.clone(),
    };
    lock(&inner.conns).insert(id, handle);
    inner.stats.live_connections.fetch_add(1, Relaxed);
    let (rd, wr) = stream.into_split();
    let session = Session {
        inner: inner.clone(),
        shared: shared.clone(),
        tx,
        id,
        peer,
        challenge: None,
        authed: false,
    };
    let reader = tokio::spawn(session.read_loop(rd));
    write_loop(&inner, wr, rx, &shared, id).await;
    shared.token.cancel();
    let _ = reader.await;
    lock(&inner.conns).remove(&id);
    if shared.logged_in.swap(false, Relaxed) {
        inner.stats.logged_in.fetch_sub(1, Relaxed);
    }
    inner.stats.live_connections.fetch_sub(1, Relaxed);
}

struct Session {
    inner: Arc<Inner>,
    shared: Arc<ConnShared>,
    tx: mpsc::Sender<Out>,
    id: u64,
    peer: SocketAddr,
    challenge: Option<String>,
    authed: bool,
}

impl Session {
    async fn read_loop(mut self, rd: OwnedReadHalf) {
        let mut frames = FramedRead::new(rd, AmiDecoder::new(Limits::default(), false));
        loop {
            let frame = tokio::select! {
                _ = self.shared.token.cancelled() => return,
                f = frames.next() => f,
            };
            match frame {
                Some(Ok(Frame::Packet(p))) => {
                    if !self.on_action(p).await {
                        return;
                    }
                }
                Some(Ok(Frame::Discarded(reason))) => {
                    log::debug!("{}: discarded an action: {reason:?}", self.inner.cfg.name)
                }
                Some(Ok(Frame::Banner(_))) => {}
                Some(Err(_)) | None => {
                    // The client is gone: flush what is queued, then close.
                    self.send(Out::Close).await;
                    return;
                }
            }
        }
    }

    /// Queues `out` for the writer; false once the connection is over.
    async fn send(&self, out: Out) -> bool {
        tokio::select! {
            r = self.tx.send(out) => r.is_ok(),
            _ = self.shared.token.cancelled() => false,
        }
    }

    /// Answers one action; false when the connection is to be closed.
    async fn on_action(&mut self, p: Packet) -> bool {
        let stats = &self.inner.stats;
        stats.actions.fetch_add(1, Relaxed);
        let name = p.get("Action").unwrap_or("").trim().to_string();
        let lower = name.to_ascii_lowercase();
        if lower == "ping" {
            stats.pings.fetch_add(1, Relaxed);
        }
        let _ = self.inner.actions_tx.send(p.clone());
        if *self.inner.silent.borrow() {
            return true;
        }
        let aid = p.action_id();
        if lower.is_empty() {
            return self
                .send(Out::Raw(Msg::reply(
                    false,
                    aid,
                    "Missing action in request",
                )))
                .await;
        }
        if !self.authed && !matches!(lower.as_str(), "login" | "challenge" | "logoff") {
            return self
                .send(Out::Raw(Msg::reply(false, aid, "Permission denied")))
                .await;
        }
        match lower.as_str() {
            "login" => self.login(&p).await,
            "logoff" => {
                stats.logoffs.fetch_add(1, Relaxed);
                let mut m = Msg::response("Goodbye", aid);
                m.h("Message", "Thanks for all the fish.");
                self.send(Out::Raw(m.finish())).await;
                self.send(Out::Close).await;
                false
            }
            "originate" => self.originate(&p).await,
            "hangup" => self.hangup(&p).await,
            "userevent" => self.user_event(&p).await,
            _ => {
                // Queued under the state lock, so a list matches the events queued before it.
                let reply = {
                    let inner = self.inner.clone();
                    let mut w = lock(&inner.world);
                    let reply = Out::Raw(self.answer(&mut w, &lower, &name, &p));
                    match self.tx.try_send(reply) {
                        Ok(()) => return true,
                        Err(mpsc::error::TrySendError::Full(reply)) => reply,
                        Err(mpsc::error::TrySendError::Closed(_)) => return false,
                    }
                };
                self.send(reply).await
            }
        }
    }

    async fn login(&mut self, p: &Packet) -> bool {
        let (inner, aid) = (&self.inner, p.action_id());
        let secret_ok = if p
            .get("AuthType")
            .is_some_and(|t| t.eq_ignore_ascii_case("md5"))
        {
            match (&self.challenge, p.get("Key")) {
                (Some(c), Some(key)) => key
                    .trim()
                    .eq_ignore_ascii_case(&md5_hex(&format!("{c}{}", inner.cfg.secret))),
                _ => false,
            }
        } else {
            p.get("Secret") == Some(inner.cfg.secret.as_str())
        };
        let ok = secret_ok && p.get("Username") == Some(inner.cfg.username.as_str());
        if !ok || inner.fail_auth.load(Relaxed) {
            inner.stats.logins_failed.fetch_add(1, Relaxed);
            self.send(Out::Raw(Msg::reply(false, aid, "Authentication failed")))
                .await;
            self.send(Out::Close).await;
            return false;
        }
        let mask = parse_mask(p.get("Events"));
        let mut outs = vec![Out::Raw(Msg::reply(true, aid, "Authentication accepted"))];
        let up = now()
            .as_secs()
            .saturating_sub(lock(&inner.world).started.as_secs());
        if mask & SYSTEM != 0 {
            let mut m = Msg::new("Event", "FullyBooted");
            m.h("Privilege", "system,all")
                .h("Uptime", up)
                .h("LastReload", up)
                .h("Status", "Fully Booted");
            outs.push(Out::Event(m.finish()));
        }
        if mask & SECURITY != 0 {
            let t = now();
            let mut m = Msg::event("SuccessfulAuth", "security");
            m.h("EventTV", event_tv(t))
                .h("Severity", "Informational")
                .h("Service", "AMI")
                .h("EventVersion", 1)
                .h("AccountID", &inner.cfg.username)
                .h("SessionID", format_args!("0x{:012x}", self.id))
                .h("LocalAddress", format_args!("IPV4/TCP/{}", inner.addr))
                .h("RemoteAddress", format_args!("IPV4/TCP/{}", self.peer))
                .h("UsingPassword", 0)
                .h("SessionTV", event_tv(t));
            outs.push(Out::Event(m.finish()));
        }
        // Queue the answer and turn events on under the registry lock that publishing takes,
        // so no event can overtake "Authentication accepted".
        {
            let _conns = lock(&inner.conns);
            for out in outs {
                if self.tx.try_send(out).is_err() {
                    return false;
                }
            }
            self.shared.mask.store(mask, Relaxed);
            if !self.shared.logged_in.swap(true, Relaxed) {
                let now = inner.stats.logged_in.fetch_add(1, Relaxed) + 1;
                inner.stats.max_logged_in.fetch_max(now, Relaxed);
            }
        }
        self.authed = true;
        inner.stats.logins_ok.fetch_add(1, Relaxed);
        true
    }

    async fn originate(&mut self, p: &Packet) -> bool {
        let aid = p.action_id();
        let Some(channel) = p.get("Channel").map(str::trim).filter(|c| !c.is_empty()) else {
            return self
                .send(Out::Raw(Msg::reply(false, aid, "Channel not specified")))
                .await;
        };
        let req = OriginateReq::from_packet(p, channel);
        if !req.is_async && originate_fails(channel) {
            return self
                .send(Out::Raw(Msg::reply(false, aid, "Originate failed")))
                .await;
        }
        if !self
            .send(Out::Raw(Msg::reply(
                true,
                aid,
                "Originate successfully queued",
            )))
            .await
        {
            return false;
        }
        {
            let mut w = lock(&self.inner.world);
            originate(&mut w, req);
            self.inner.publish(&mut w);
        }
        self.inner.world_wake.notify_one();
        true
    }

    async fn hangup(&mut self, p: &Packet) -> bool {
        let aid = p.action_id();
        let Some(chan) = p.get("Channel").map(str::trim).filter(|c| !c.is_empty()) else {
            return self
                .send(Out::Raw(Msg::reply(false, aid, "No channel specified")))
                .await;
        };
        let cause = p
            .get("Cause")
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(16);
        if !lock(&self.inner.world).chans.contains_key(chan) {
            return self
                .send(Out::Raw(Msg::reply(false, aid, "No such channel")))
                .await;
        }
        if !self
            .send(Out::Raw(Msg::reply(true, aid, "Channel Hungup")))
            .await
        {
            return false;
        }
        {
            let mut w = lock(&self.inner.world);
            traffic::hangup_channel(&mut w, chan, cause);
            self.inner.publish(&mut w);
        }
        self.inner.world_wake.notify_one();
        true
    }

    /// Broadcasts `Event: UserEvent` with the action's other headers (ActionID included).
    async fn user_event(&mut self, p: &Packet) -> bool {
        let aid = p.action_id();
        let Some(name) = p.get("UserEvent").filter(|n| !n.is_empty()) else {
            return self
                .send(Out::Raw(Msg::reply(false, aid, "UserEvent needs a name")))
                .await;
        };
        if !self
            .send(Out::Raw(Msg::reply(true, aid, "Event Sent")))
            .await
        {
            return false;
        }
        let mut m = Msg::event("UserEvent", "user");
        m.h("UserEvent", name);
        for (n, v) in p.headers() {
            if !n.eq_ignore_ascii_case("Action") && !n.eq_ignore_ascii_case("UserEvent") {
                m.h(n, v);
            }
        }
        let mut w = lock(&self.inner.world);
        w.emit(m);
        self.inner.publish(&mut w);
        true
    }

    /// The answer to an action that needs no waiting.
    fn answer(&mut self, w: &mut World, lower: &str, name: &str, p: &Packet) -> Bytes {
        let aid = p.action_id();
        let arg = |h: &str| p.get(h).map(str::trim).filter(|v| !v.is_empty());
        match lower {
            "challenge" => {
                if !arg("AuthType").is_some_and(|t| t.eq_ignore_ascii_case("md5")) {
                    return Msg::reply(false, aid, "Must specify AuthType");
                }
                let challenge = self.challenge.get_or_insert_with(|| {
                    rand::thread_rng()
                        .gen_range(100_000_000..1_000_000_000u32)
                        .to_string()
                });
                let mut m = Msg::response("Success", aid);
                m.h("Challenge", challenge);
                m.finish()
            }
            "ping" => {
                let mut m = Msg::response("Success", aid);
                m.h("Ping", "Pong").h("Timestamp", Stamp(now()));
                m.finish()
            }
            "events" => {
                let mask = match arg("EventMask") {
                    Some(v) => parse_mask(Some(v)),
                    None => return Msg::reply(false, aid, "Invalid EventMask"),
                };
                self.shared.mask.store(mask, Relaxed);
                let mut m = Msg::response("Success", aid);
                m.h("Events", if mask == 0 { "Off" } else { "On" });
                m.finish()
            }
            "command" => answers::command(w, aid, arg("Command")),
            "corestatus" => answers::core_status(w, aid),
            "coresettings" => answers::core_settings(w, aid),
            "coreshowchannels" => answers::core_show_channels(w, aid),
            "status" => answers::status(w, aid, arg("Channel"))
                .unwrap_or_else(|| Msg::reply(false, aid, "No such channel")),
            "queuestatus" => answers::queue_status(w, aid, arg("Queue")),
            "queuesummary" => answers::queue_summary(w, aid, arg("Queue")),
            "bridgelist" => answers::bridge_list(w, aid),
            "devicestatelist" => answers::device_state_list(w, aid),
            "setvar" | "getvar" => {
                let Some(var) = arg("Variable") else {
                    return Msg::reply(false, aid, "No variable specified");
                };
                if lower == "setvar" {
                    w.vars
                        .insert(var.to_string(), p.get("Value").unwrap_or("").to_string());
                    return Msg::reply(true, aid, "Variable Set");
                }
                let mut m = Msg::response("Success", aid);
                m.h("Variable", var)
                    .h("Value", w.vars.get(var).map_or("", String::as_str));
                m.finish()
            }
            "listcommands" => answers::list_commands(aid),
            _ => Msg::reply(
                false,
                aid,
                &format!("Invalid/unknown command: {name}. {LIST_HINT}"),
            ),
        }
    }
}

/// The end of Asterisk's answer to an unknown action.
const LIST_HINT: &str = "Use Action: ListCommands to show available commands.";

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn md5_key_matches_capture_16_shape() {
        assert_eq!(super::md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert!(super::super::wire::is_true(Some("true")));
    }
}
