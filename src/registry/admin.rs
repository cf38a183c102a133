//! The registry's management messages: servers added and dropped at runtime, listings for the
//! API and admins, readiness, and HTTP actions that collect a complete result.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::oneshot;

use super::fanout::Outgoing;
use super::pending::{ActionFailure, Collected, Pending, ReplyTo};
use super::{Registry, ServerEntry};
use crate::ami::Action;
use crate::auth::Rights;
use crate::config::ServerSettings;
use crate::metrics::Metrics;
use crate::pbx::{PbxConn, PbxHandle, ServerStatus, Shutdown as PbxShutdown};
use crate::ws::protocol::{encode_status, ServerTag};

/// Start a supervised PBX actor for this server (validated settings) and route for it.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct AddServer {
    pub settings: Arc<ServerSettings>,
}

/// Log off and forget a server.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct DropServer {
    pub id: u32,
}

/// The servers `rights` may see (all when None).
#[derive(Message)]
#[rtype(result = "Vec<ServerInfo>")]
pub struct ListServers {
    pub rights: Option<Arc<Rights>>,
}

/// Every session (admins).
#[derive(Message)]
#[rtype(result = "Vec<SessionInfo>")]
pub struct ListSessions;

/// Close the sessions of these users (their credentials or rights changed on reload).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseUserSessions {
    pub users: Vec<String>,
    pub code: u16,
    pub reason: String,
}

/// The live state of one server (if `rights` may see it).
#[derive(Message)]
#[rtype(result = "Result<serde_json::Value, ActionFailure>")]
pub struct ServerState {
    pub server: u32,
    pub rights: Arc<Rights>,
}

/// The call-quality summary of one server (if `rights` may see it).
#[derive(Message)]
#[rtype(result = "Result<serde_json::Value, ActionFailure>")]
pub struct ServerQuality {
    pub server: u32,
    pub rights: Arc<Rights>,
    pub query: crate::pbx::GetQuality,
}

/// True once every server has finished its first connection attempt.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Readiness;

/// Send an action and collect its whole result (response, list events, command output).
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<Result<Collected, ActionFailure>>, ActionFailure>")]
pub struct HttpAction {
    pub server: u32,
    pub action: Action,
    pub client_id: Option<String>,
    pub rights: Arc<Rights>,
    pub timeout: Duration,
}

/// A server as `GET /api/v1/servers` and `ListServers` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub id: u32,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub ssl: bool,
    pub status: &'static str,
    pub reason: String,
    pub banner: String,
    /// Unix time (ms) of the last status change.
    pub since_ms: u64,
    pub connects: u64,
}

/// A session as `ListSessions` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: u64,
    pub user: String,
    pub queued_bytes: usize,
    pub pending_actions: usize,
    pub subscribed: bool,
}

impl Handler<AddServer> for Registry {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: AddServer, ctx: &mut Context<Self>) -> Self::Result {
        let s = msg.settings;
        if self.servers.contains_key(&s.id) {
            return Err(format!("server id {} already exists", s.id));
        }
        if self.servers.values().any(|e| e.tag.name == s.name) {
            return Err(format!("server name {:?} already exists", s.name));
        }
        let (limits, reconnect) = (self.ami_limits, self.reconnect.clone());
        let (registry, metrics, settings) = (ctx.address(), self.metrics.clone(), s.clone());
        self.next_generation += 1;
        let generation = self.next_generation;
        let addr = match &self.cluster {
            Some(cluster) => cluster.mirror(settings, generation, registry),
            None => Supervisor::start(move |_| {
                PbxConn::new(
                    settings,
                    generation,
                    limits,
                    reconnect,
                    registry.into(),
                    metrics,
                )
            })
            .into(),
        };
        log::info!(
            "server {} ({}): added ({}:{})",
            s.id,
            s.name,
            s.host,
            s.port
        );
        let history = self.new_history();
        self.servers.insert(
            s.id,
            ServerEntry {
                tag: ServerTag::new(s.id, &s.name, s.tls),
                settings: s,
                addr,
                status: ServerStatus::Connecting,
                reason: String::new(),
                banner: String::new(),
                since: SystemTime::now(),
                connects: 0,
                settled: false,
                generation,
                history,
            },
        );
        Ok(())
    }
}

impl Handler<DropServer> for Registry {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: DropServer, ctx: &mut Context<Self>) -> Self::Result {
        let tag = self
            .servers
            .get(&msg.id)
            .map(|e| e.tag.clone())
            .ok_or_else(|| format!("unknown server {}", msg.id))?;
        log::info!("server {} ({}): dropped", msg.id, tag.name);
        self.fail_server(ctx, msg.id, &format!("server {} was removed", msg.id));
        // Tell the sessions that may see it while it is still listed, then forget it and log
        // off; the actor's own stop accounts for the connection (`PbxConn::stopped`).
        let status = ServerStatus::Disconnected.as_str();
        let frame = encode_status(&tag, status, "removed");
        let notice = crate::amisrv::render::status_event(status, "removed");
        self.broadcast(
            ctx,
            msg.id,
            vec![(Outgoing::notice(frame, Some(notice)), None)],
        );
        if let Some(entry) = self.servers.remove(&msg.id) {
            let addr = entry.addr;
            actix::spawn(async move {
                let _ = addr.shutdown.send(PbxShutdown).await;
            });
        }
        Ok(())
    }
}

impl Handler<ListServers> for Registry {
    type Result = MessageResult<ListServers>;

    fn handle(&mut self, msg: ListServers, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.servers
                .values()
                .filter(|s| {
                    msg.rights
                        .as_ref()
                        .is_none_or(|r| r.may_see_server(s.tag.id, &s.tag.name))
                })
                .map(|s| ServerInfo {
                    id: s.tag.id,
                    name: s.tag.name.clone(),
                    host: s.settings.host.clone(),
                    port: s.settings.port,
                    ssl: s.tag.ssl,
                    status: s.status.as_str(),
                    reason: s.reason.clone(),
                    banner: s.banner.clone(),
                    since_ms: s
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    connects: s.connects,
                })
                .collect(),
        )
    }
}

impl Handler<ListSessions> for Registry {
    type Result = MessageResult<ListSessions>;

    fn handle(&mut self, _: ListSessions, _ctx: &mut Context<Self>) -> Self::Result {
        let mut out: Vec<SessionInfo> = self
            .sessions
            .map
            .iter()
            .map(|(id, s)| SessionInfo {
                id: *id,
                user: s.user.clone(),
                queued_bytes: s.io.queued(),
                pending_actions: s.pending,
                subscribed: s.select.subscription.is_some(),
            })
            .collect();
        out.sort_by_key(|s| s.id);
        MessageResult(out)
    }
}

impl Handler<CloseUserSessions> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseUserSessions, _ctx: &mut Context<Self>) -> usize {
        let ids: Vec<u64> = self
            .sessions
            .map
            .iter()
            .filter(|(_, s)| msg.users.contains(&s.user))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(s) = self.sessions.map.remove(id) {
                self.pending.map.retain(|_, p| p.session() != Some(*id));
                s.close.do_send(super::session::CloseSession {
                    code: msg.code,
                    reason: msg.reason.clone(),
                });
            }
        }
        ids.len()
    }
}

impl Registry {
    /// The actor and status text of a server `rights` may see; a hidden one is `Forbidden`.
    fn visible_pbx(
        &self,
        server: u32,
        rights: &Rights,
    ) -> Result<(PbxHandle, &'static str), ActionFailure> {
        let entry = self
            .servers
            .get(&server)
            .ok_or(ActionFailure::UnknownServer(server))?;
        if !rights.may_see_server(entry.tag.id, &entry.tag.name) {
            return Err(ActionFailure::Forbidden(format!("server {server}")));
        }
        Ok((entry.addr.clone(), entry.status.as_str()))
    }
}

impl Handler<ServerState> for Registry {
    type Result = ResponseFuture<Result<serde_json::Value, ActionFailure>>;

    fn handle(&mut self, msg: ServerState, _ctx: &mut Context<Self>) -> Self::Result {
        let visible = self.visible_pbx(msg.server, &msg.rights);
        with_status(visible, |pbx| pbx.state.send(crate::pbx::GetState))
    }
}

impl Handler<ServerQuality> for Registry {
    type Result = ResponseFuture<Result<serde_json::Value, ActionFailure>>;

    fn handle(&mut self, msg: ServerQuality, _ctx: &mut Context<Self>) -> Self::Result {
        let visible = self.visible_pbx(msg.server, &msg.rights);
        with_status(visible, move |pbx| pbx.quality.send(msg.query))
    }
}

/// What a visible server's actor answers to `ask`, with the server's status added.
fn with_status<F>(
    visible: Result<(PbxHandle, &'static str), ActionFailure>,
    ask: impl FnOnce(PbxHandle) -> F,
) -> ResponseFuture<Result<serde_json::Value, ActionFailure>>
where
    F: std::future::Future<Output = Result<serde_json::Value, MailboxError>> + 'static,
{
    let asked = visible.map(|(pbx, status)| (ask(pbx), status));
    Box::pin(async move {
        let (answer, status) = asked?;
        let mut v = answer
            .await
            .map_err(|e| ActionFailure::Failed(e.to_string()))?;
        v["status"] = serde_json::json!(status);
        Ok(v)
    })
}

impl Handler<Readiness> for Registry {
    type Result = bool;

    fn handle(&mut self, _: Readiness, _ctx: &mut Context<Self>) -> bool {
        self.servers.values().all(|s| s.settled)
    }
}

impl Handler<HttpAction> for Registry {
    type Result = Result<oneshot::Receiver<Result<Collected, ActionFailure>>, ActionFailure>;

    fn handle(&mut self, msg: HttpAction, ctx: &mut Context<Self>) -> Self::Result {
        let server = self
            .servers
            .get(&msg.server)
            .ok_or(ActionFailure::UnknownServer(msg.server))?;
        if !msg.rights.may_see_server(server.tag.id, &server.tag.name) {
            Metrics::inc(&self.metrics.actions_refused_total);
            return Err(ActionFailure::Forbidden(format!("server {}", msg.server)));
        }
        let in_flight = self
            .pending
            .map
            .values()
            .filter(|p| p.session().is_none() && !p.abandoned())
            .count();
        if in_flight >= super::pending::MAX_HTTP_IN_FLIGHT {
            return Err(ActionFailure::Busy);
        }
        let (tx, rx) = oneshot::channel();
        let reply = ReplyTo::Collect {
            tx: Some(tx),
            response: None,
            events: Vec::new(),
            bytes: 0,
        };
        let pending = Pending::new(reply, msg.server, msg.client_id, &msg.action, msg.timeout);
        self.dispatch(ctx, msg.server, msg.action, pending)?;
        Ok(rx)
    }
}
