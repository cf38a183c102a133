//! One HTTP manager session: an actor owning a logged-in user's state — its event subscription
//! (`Events`, `Filter`), its bounded `WaitEvent` queue and the requests it has in flight. It
//! joins the registry as an AMI-format session, so the registry routes replies to it alone and
//! events within the user's rights; it answers `Logoff`, `WaitEvent`, `Events`, `Filter` and
//! `Ping` (without `server=`) itself and hands every other action to the registry. It ends on
//! `Logoff`, after `httptimeout` idle (cookie sessions), on [`End`] (a Digest request's
//! session), or when the registry closes it. It knows nothing of HTTP.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::oneshot;

use super::reply::{own_reply, wait_event};
use super::request::AjamRequest;
use super::sessions::EventQueue;
use crate::ami::Action;
use crate::amisrv::render::{parse_rendered, render_reply};
use crate::amisrv::{local, login};
use crate::auth::{ActionRefused, AmiUser};
use crate::config::{AjamSettings, LimitSettings};
use crate::http::{ActionBudget, ActionSlot, BudgetError};
use crate::metrics::{Metrics, SharedMetrics};
use crate::registry::pending::{is_response, Pending, ReplyTo, MAX_COLLECT_BYTES};
use crate::registry::session::{
    CloseSession, Deliver, Format, SessionIo, SessionSlot, TokenBucket,
};
use crate::registry::{ClientRequest, Join, Leave, Registry, Subscribe, Subscription, Target};

/// Async Originates whose `OriginateResponse` is still expected, per session, at most.
const MAX_LATE: usize = 64;

/// What every HTTP manager session shares.
pub struct Shared {
    pub registry: Addr<Registry>,
    pub settings: AjamSettings,
    pub limits: LimitSettings,
    pub metrics: SharedMetrics,
    /// Session ids, shared with the other front ends so they are unique in the registry.
    pub next_session: Arc<AtomicU64>,
    /// The HTTP side's per-user budget of actions waiting for a PBX.
    pub budget: Arc<ActionBudget>,
}

/// Why a session could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("too many HTTP manager sessions (ajam.max_sessions = {0})")]
    Full(usize),
}

/// A request's answer: AMI text (the HTTP side renders it as the path asks), and the HTTP
/// status (200, as Asterisk answers even errors; 429/503 when the action budget is used up).
#[derive(Debug)]
pub struct Answer {
    pub text: String,
    pub status: u16,
}

impl Answer {
    fn ok(text: impl Into<String>) -> Answer {
        Answer {
            text: text.into(),
            status: 200,
        }
    }
}

/// Serve one request; the answer goes to `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Run {
    pub request: AjamRequest,
    pub reply: oneshot::Sender<Answer>,
}

/// End the session now (a Digest request's session, or a cookie session replaced by a login).
#[derive(Message)]
#[rtype(result = "()")]
pub struct End;

/// Tells the directory a cookie session is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ended {
    pub key: String,
}

/// An action waiting for its reply.
struct InFlight {
    reply: oneshot::Sender<Answer>,
    client_id: Option<String>,
    /// The registry's own reading of when a reply is complete (response, list, `…Complete`).
    progress: Pending,
    body: String,
    _slot: ActionSlot,
}

/// A `WaitEvent` waiting for events.
struct Waiter {
    reply: oneshot::Sender<Answer>,
    id: Option<String>,
    generation: u64,
}

/// One HTTP manager session.
pub struct AjamSession {
    id: u64,
    /// The cookie id and whom to tell when the session ends (None: a Digest request's session).
    key: Option<(String, Recipient<Ended>)>,
    user: AmiUser,
    shared: Arc<Shared>,
    io: Arc<SessionIo>,
    subscription: Subscription,
    filters: Vec<String>,
    queue: EventQueue<ByteString>,
    waiter: Option<Waiter>,
    waits: u64,
    inflight: HashMap<String, InFlight>,
    /// Tags of async Originates answered already, with the requester's ActionID, whose
    /// `OriginateResponse` is an event of this session's queue.
    late: VecDeque<(String, Option<String>)>,
    next_tag: u64,
    last_seen: Instant,
    bucket: TokenBucket,
}

/// Starts a session for `user` (events as the login's `Events` asked; None = on). Refused when
/// `ajam.max_sessions` sessions are live.
pub fn start(
    shared: &Arc<Shared>,
    user: AmiUser,
    events: Option<&str>,
    key: Option<(String, Recipient<Ended>)>,
) -> Result<Addr<AjamSession>, SessionError> {
    let max = shared.settings.max_sessions;
    let slot = SessionSlot::acquire(&shared.metrics, |m| &m.ajam_sessions, max)
        .ok_or(SessionError::Full(max))?;
    let mut subscription = Subscription::default();
    subscription.set_event_mask(events.unwrap_or("on"));
    let session = AjamSession {
        id: shared.next_session.fetch_add(1, Relaxed),
        key,
        user,
        shared: shared.clone(),
        io: SessionIo::new(None, Some(slot)),
        subscription,
        filters: Vec::new(),
        queue: EventQueue::new(shared.settings.queue_events, shared.settings.queue_bytes),
        waiter: None,
        waits: 0,
        inflight: HashMap::new(),
        late: VecDeque::new(),
        next_tag: 1,
        last_seen: Instant::now(),
        bucket: TokenBucket::new(shared.limits.actions_per_second),
    };
    Ok(session.start())
}

/// Answered once the session is in the registry: a login's reply waits for it, so no event
/// published after the client saw `Authentication accepted` can pass it by.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Joined;

impl Handler<Joined> for AjamSession {
    type Result = ();

    fn handle(&mut self, _: Joined, _ctx: &mut Context<Self>) {}
}

impl AjamSession {
    fn name(&self) -> &str {
        &self.user.identity.name
    }

    fn error(&self, id: Option<&str>, message: &str) -> Answer {
        Answer::ok(&*login::error(id, message))
    }

    fn refused(&self, id: Option<&str>, message: &str) -> Answer {
        Metrics::inc(&self.shared.metrics.actions_refused_total);
        self.error(id, message)
    }

    fn on_request(
        &mut self,
        r: AjamRequest,
        reply: oneshot::Sender<Answer>,
        ctx: &mut Context<Self>,
    ) {
        self.last_seen = Instant::now();
        let id = r.action.get("ActionID").map(str::to_string);
        let id = id.as_deref();
        if !self.bucket.take() {
            let msg = format!(
                "Rate limit exceeded ({} actions per second)",
                self.shared.limits.actions_per_second
            );
            let _ = reply.send(self.refused(id, &msg));
            return;
        }
        let answer = match r.action.name().to_ascii_lowercase().as_str() {
            "logoff" => {
                ctx.stop();
                Answer::ok(&*login::goodbye(id))
            }
            "login" | "challenge" => Answer::ok(&*render_reply(
                &[
                    ("Response", "Success"),
                    ("Message", "Already authenticated"),
                ],
                id,
                None,
            )),
            "waitevent" => return self.wait(&r.action, id, reply, ctx),
            "events" => self.events(&r.action, id),
            "filter" => self.add_filter(&r.action, id),
            "ping" if r.server.is_none() => Answer::ok(&*local::pong(id)),
            _ => return self.forward(r, reply),
        };
        let _ = reply.send(answer);
    }

    /// `action=Events&EventMask=…`: on, off or a class list, as Asterisk.
    fn events(&mut self, action: &Action, id: Option<&str>) -> Answer {
        let reply = local::events(&mut self.subscription, action.get("EventMask"), id);
        self.resubscribe();
        Answer::ok(&*reply)
    }

    /// `action=Filter&Operation=Add&Filter=[!]Header: regex`, Asterisk's eventfilter.
    fn add_filter(&mut self, action: &Action, id: Option<&str>) -> Answer {
        let (operation, filter) = (action.get("Operation"), action.get("Filter"));
        match local::add_filter(
            &mut self.subscription,
            &mut self.filters,
            operation,
            filter,
            id,
        ) {
            Ok(reply) => {
                self.resubscribe();
                Answer::ok(&*reply)
            }
            Err(message) => self.error(id, &message),
        }
    }

    fn resubscribe(&self) {
        self.shared.registry.do_send(Subscribe {
            session: self.id,
            subscription: self.subscription.clone(),
        });
    }

    /// An action for a PBX: rights, the budget, then the registry with an internal tag as
    /// ActionID (the requester's own comes back on the reply).
    fn forward(&mut self, r: AjamRequest, reply: oneshot::Sender<Answer>) {
        let client_id = r.action.get("ActionID").map(str::to_string);
        let id = client_id.as_deref();
        let mut action = Action::new(r.action.name());
        for (header, value) in r.action.headers().skip(1) {
            if !header.eq_ignore_ascii_case("ActionID") {
                action.push(header, value);
            }
        }
        if let Err(refused) = self.user.identity.rights.check_action(&action) {
            log::warn!(
                "ajam session {} (user {}): refused action {} (not permitted): {refused}",
                self.id,
                self.name(),
                action.name()
            );
            let message = match refused {
                ActionRefused::Action(_) => login::DENIED.to_string(),
                other => other.to_string(),
            };
            let _ = reply.send(self.refused(id, &message));
            return;
        }
        if self.inflight.len() >= self.shared.limits.max_pending_actions_per_session {
            let _ = reply.send(self.refused(id, "Too many outstanding actions"));
            return;
        }
        let slot = match self.shared.budget.acquire(self.name()) {
            Ok(slot) => slot,
            Err(e) => {
                let mut answer = self.refused(id, &e.to_string());
                // As on the JSON API: past the user's share 429, past the whole budget 503.
                answer.status = match e {
                    BudgetError::Share { .. } => 429,
                    BudgetError::Full(_) => 503,
                };
                let _ = reply.send(answer);
                return;
            }
        };
        let tag = self.next_tag.to_string();
        self.next_tag += 1;
        let timeout = Duration::from_secs(self.shared.limits.action_timeout_s);
        let progress = Pending::new(ReplyTo::Session(self.id), 0, None, &action, timeout);
        let target = match r.server.or_else(|| self.user.default_server.clone()) {
            Some(name) => Target::Named(name),
            None => Target::Sole,
        };
        self.inflight.insert(
            tag.clone(),
            InFlight {
                reply,
                client_id,
                progress,
                body: String::new(),
                _slot: slot,
            },
        );
        self.shared.registry.do_send(ClientRequest {
            session: self.id,
            action,
            target,
            client_id: Some(tag),
        });
    }

    /// `action=WaitEvent&Timeout=…`: at once if events wait, else when one arrives or after
    /// `Timeout` seconds (at most, and by default, `httptimeout`). A newer WaitEvent ends an
    /// older one, as Asterisk's does.
    fn wait(
        &mut self,
        action: &Action,
        id: Option<&str>,
        reply: oneshot::Sender<Answer>,
        ctx: &mut Context<Self>,
    ) {
        let max = self.shared.settings.httptimeout_s;
        let secs = match action
            .get("Timeout")
            .and_then(|t| t.trim().parse::<i64>().ok())
        {
            Some(t) if t >= 0 => (t as u64).min(max),
            _ => max,
        };
        self.answer_waiter();
        self.waits += 1;
        let generation = self.waits;
        self.waiter = Some(Waiter {
            reply,
            id: id.map(str::to_string),
            generation,
        });
        if !self.queue.is_empty() || secs == 0 {
            return self.answer_waiter();
        }
        ctx.run_later(Duration::from_secs(secs), move |act, _| {
            if act
                .waiter
                .as_ref()
                .is_some_and(|w| w.generation == generation)
            {
                act.answer_waiter();
            }
        });
    }

    /// Answers the waiting `WaitEvent` with everything queued, unless its client went away
    /// (then the events stay for the next one).
    fn answer_waiter(&mut self) {
        let Some(w) = self.waiter.take() else { return };
        if w.reply.is_closed() {
            return;
        }
        let drained = self.queue.drain();
        self.shared
            .metrics
            .ajam_queued_events
            .fetch_sub(drained.events.len() as u64, Relaxed);
        let text = wait_event(w.id.as_deref(), drained.dropped, &drained.events);
        self.last_seen = Instant::now();
        let _ = w.reply.send(Answer::ok(text));
    }

    fn enqueue(&mut self, frame: ByteString) {
        let size = frame.len();
        let dropped = self.queue.push(frame, size);
        let m = &self.shared.metrics;
        m.ajam_queued_events.fetch_add(1, Relaxed);
        if dropped > 0 {
            m.ajam_queued_events.fetch_sub(dropped, Relaxed);
            Metrics::add(&m.ajam_events_dropped_total, dropped);
        }
    }

    /// One frame the registry routed here: part of a reply in flight, a late
    /// `OriginateResponse`, or an event for the queue.
    fn on_frame(&mut self, frame: &ByteString) {
        let packet = parse_rendered(frame);
        let tag = packet.action_id().map(str::to_string);
        if let Some(entry) = tag.as_deref().and_then(|t| self.inflight.get_mut(t)) {
            let response = is_response(&packet);
            let Some(done) = entry.progress.absorb(&packet) else {
                // An event that merely carries the id (UserEvent): an event, with the id restored.
                let text = own_reply(frame, &packet, entry.client_id.as_deref(), true);
                return self.enqueue(text.into());
            };
            entry.body.push_str(&own_reply(
                frame,
                &packet,
                entry.client_id.as_deref(),
                false,
            ));
            // AJAM answers an async Originate with its response; its OriginateResponse is an
            // event for WaitEvent, as on Asterisk.
            let done = if response { !entry.progress.list } else { done };
            let over = entry.body.len() > MAX_COLLECT_BYTES;
            if !(done || over) {
                return;
            }
            let Some(tag) = tag else { return };
            let Some(entry) = self.inflight.remove(&tag) else {
                return;
            };
            let success = packet
                .get("Response")
                .is_some_and(|r| r.eq_ignore_ascii_case("Success"));
            if response && success && entry.progress.async_originate {
                if self.late.len() >= MAX_LATE {
                    self.late.pop_front();
                }
                self.late.push_back((tag, entry.client_id.clone()));
            }
            let answer = if over {
                let msg = format!("result larger than {MAX_COLLECT_BYTES} bytes");
                self.error(entry.client_id.as_deref(), &msg)
            } else {
                Answer::ok(entry.body)
            };
            self.last_seen = Instant::now();
            let _ = entry.reply.send(answer);
            return;
        }
        let late = tag
            .as_deref()
            .and_then(|t| self.late.iter().position(|(l, _)| l == t));
        if let Some(pos) = late {
            let client_id = self.late.remove(pos).and_then(|(_, c)| c);
            let text = own_reply(frame, &packet, client_id.as_deref(), true);
            return self.enqueue(text.into());
        }
        self.enqueue(frame.clone());
    }
}

impl Actor for AjamSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        Metrics::inc(&self.shared.metrics.ajam_sessions_total);
        // Until the registry has the session, it handles nothing else (see [`Joined`]).
        let join = self.shared.registry.send(Join {
            session: self.id,
            user: self.user.identity.name.clone(),
            out: Some(ctx.address().recipient()),
            close: ctx.address().recipient(),
            io: self.io.clone(),
            rights: self.user.identity.rights.clone(),
            format: Format::Ami,
            subscription: Some(self.subscription.clone()),
        });
        ctx.wait(join.into_actor(self).map(|_, _, _| ()));
        if self.key.is_none() {
            return;
        }
        let idle = Duration::from_secs(self.shared.settings.httptimeout_s);
        let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        ctx.run_interval(every, move |act, ctx| {
            let busy = act.waiter.is_some() || !act.inflight.is_empty();
            if !busy && act.last_seen.elapsed() >= idle {
                Metrics::inc(&act.shared.metrics.ajam_expired_sessions_total);
                log::info!(
                    "ajam session {} (user {}): idle for {} s, ended",
                    act.id,
                    act.user.identity.name,
                    idle.as_secs()
                );
                ctx.stop();
            }
        });
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        // A WaitEvent still waiting gets what is queued; replies in flight see their sender
        // dropped.
        self.answer_waiter();
        self.shared.registry.do_send(Leave { session: self.id });
        if let Some((key, directory)) = self.key.take() {
            directory.do_send(Ended { key });
        }
        self.shared
            .metrics
            .ajam_queued_events
            .fetch_sub(self.queue.len() as u64, Relaxed);
        Running::Stop
    }
}

impl Handler<Run> for AjamSession {
    type Result = ();

    fn handle(&mut self, msg: Run, ctx: &mut Context<Self>) {
        self.on_request(msg.request, msg.reply, ctx);
    }
}

impl Handler<End> for AjamSession {
    type Result = ();

    fn handle(&mut self, _: End, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Deliver> for AjamSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) {
        // The registry counted these bytes; they leave its account as soon as they are here.
        let frames = msg.take(&self.io);
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        self.io.sub_queued(bytes);
        for frame in frames.iter() {
            self.on_frame(frame);
        }
        if !self.queue.is_empty() {
            self.answer_waiter();
        }
    }
}

impl Handler<CloseSession> for AjamSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        log::info!(
            "ajam session {} ({}): closing ({} {})",
            self.id,
            self.name(),
            msg.code,
            msg.reason
        );
        ctx.stop();
    }
}
