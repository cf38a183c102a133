//! This node's part in the cluster: its heartbeat, the leases it takes, renews and hands over
//! (placement decides which), the AMI connection it runs for each PBX it owns (a `PbxConn`
//! whose sink is a fenced `Publisher`), and the forwarded actions it executes for them. A
//! lease not renewed in time, or refused by Redis, ends that connection at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::mirror::Mirror;
use super::placement::{Planner, View};
use super::publisher::{Deadline, Publisher, Seal};
use super::reader::SharedView;
use super::store::{Acquired, NodeInfo, Store, StoreError};
use super::wire::{decode, Item, KIND_STATUS};
use crate::ami::{Action, Limits, Packet};
use crate::config::{ReconnectSettings, ServerSettings};
use crate::metrics::{Metrics, SharedMetrics};
use crate::pbx::{PbxConn, SendAction, ServerStatus, Shutdown as PbxShutdown, Sink};
use crate::registry::{Inbound, PbxPackets, PbxStatusChanged};

/// A server this node serves (every configured server, owned or not).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Track {
    pub settings: Arc<ServerSettings>,
    pub generation: u64,
    pub mirror: Addr<Mirror>,
}

/// A server's mirror stopped (dropped or replaced).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Untrack {
    pub server: u32,
    pub generation: u64,
}

/// The publisher of `lease` was fenced off.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaseLost {
    pub server: u32,
    pub lease: String,
}

/// Actions forwarded to this node's `lease` of `server`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Requests {
    pub server: u32,
    pub lease: String,
    pub actions: Vec<Action>,
}

/// Clean stop: log off every owned PBX, then release its lease so another node takes it now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

/// The servers each live node owns, for `GET /api/v1/cluster`.
#[derive(Message)]
#[rtype(result = "Result<Vec<NodeInfo>, StoreError>")]
pub struct ListNodes;

struct Tracked {
    settings: Arc<ServerSettings>,
    generation: u64,
}

struct Owned {
    lease: String,
    deadline: Deadline,
    conn: Addr<PbxConn>,
    publisher: Addr<Publisher>,
}

/// What one tick learnt from Redis.
struct Observed {
    sent: Instant,
    held: Vec<(u32, String)>,
    live: Vec<NodeInfo>,
    holders: BTreeMap<u32, Option<String>>,
    renewed: Vec<bool>,
}

pub struct Node {
    pub me: String,
    pub lease_ms: u64,
    pub maxlen: usize,
    pub store: Arc<Store>,
    pub ami_limits: Limits,
    pub reconnect: ReconnectSettings,
    pub metrics: SharedMetrics,
    pub view: SharedView,
    pub base: Instant,
    servers: BTreeMap<u32, Tracked>,
    owned: BTreeMap<u32, Owned>,
    planner: Planner,
    ticking: bool,
    leaving: bool,
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: String,
        lease_ms: u64,
        maxlen: usize,
        store: Arc<Store>,
        ami_limits: Limits,
        reconnect: ReconnectSettings,
        metrics: SharedMetrics,
        view: SharedView,
    ) -> Node {
        Node {
            me,
            lease_ms,
            maxlen,
            store,
            ami_limits,
            reconnect,
            metrics,
            view,
            base: Instant::now(),
            servers: BTreeMap::new(),
            owned: BTreeMap::new(),
            planner: Planner::default(),
            ticking: false,
            leaving: false,
        }
    }

    /// Renewal period: four renewals per lease.
    pub fn tick_every(lease_ms: u64) -> Duration {
        Duration::from_millis((lease_ms / 4).max(50))
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            node_id: self.me.clone(),
            servers: self.owned.keys().copied().collect(),
            last_seen_ms: crate::pbx::now_ms(),
        }
    }

    fn sync_view(&self) {
        if let Ok(mut v) = self.view.lock() {
            v.owned
                .retain(|s, (lease, _)| self.owned.get(s).is_some_and(|o| &o.lease == lease));
        }
        self.metrics
            .cluster_owned_servers
            .store(self.owned.len() as u64, Relaxed);
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.ticking || self.leaving {
            return;
        }
        // A lease whose renewal is overdue is given up before Redis even answers.
        let overdue: Vec<u32> = self
            .owned
            .iter()
            .filter(|(_, o)| o.deadline.passed())
            .map(|(s, _)| *s)
            .collect();
        for s in overdue {
            self.give_up(s, "lease not renewed in time");
        }
        self.ticking = true;
        let store = self.store.clone();
        let info = self.info();
        let held: Vec<(u32, String)> = self
            .owned
            .iter()
            .map(|(s, o)| (*s, o.lease.clone()))
            .collect();
        let servers: Vec<u32> = self.servers.keys().copied().collect();
        let ttl = self.lease_ms;
        let sent = Instant::now();
        let fut = async move {
            store.heartbeat(&info, ttl).await?;
            let live = store.nodes().await?;
            let holders = store.holders(&servers).await?;
            let renewed = store.renew(&held, ttl).await?;
            Ok::<_, StoreError>(Observed {
                sent,
                held,
                live,
                holders,
                renewed,
            })
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.ticking = false;
            act.metrics
                .cluster_redis_up
                .store(u64::from(res.is_ok()), Relaxed);
            match res {
                Ok(seen) => act.after_tick(ctx, seen),
                Err(e) => log::warn!("cluster: lease tick failed: {e}"),
            }
        }));
    }

    fn after_tick(&mut self, ctx: &mut Context<Self>, seen: Observed) {
        for ((server, lease), ok) in seen.held.iter().zip(&seen.renewed) {
            let Some(o) = self.owned.get(server).filter(|o| &o.lease == lease) else {
                continue;
            };
            if *ok {
                o.deadline.extend(seen.sent, self.lease_ms * 9 / 10);
            } else {
                self.give_up(*server, "another node holds the lease");
            }
        }
        let live: Vec<String> = seen.live.iter().map(|n| n.node_id.clone()).collect();
        let holders: BTreeMap<u32, Option<String>> = seen
            .holders
            .into_iter()
            .map(|(s, v)| {
                (
                    s,
                    v.and_then(|v| v.rsplit_once('/').map(|(n, _)| n.to_string())),
                )
            })
            .collect();
        let servers: Vec<u32> = self.servers.keys().copied().collect();
        let owned: BTreeSet<u32> = self.owned.keys().copied().collect();
        let plan = self.planner.plan(&View {
            me: &self.me,
            live: &live,
            servers: &servers,
            holders: &holders,
            owned: &owned,
        });
        if let Some(s) = plan.release {
            log::info!("server {s}: handing over to its assigned node");
            self.hand_over(ctx, s);
        }
        if !plan.acquire.is_empty() {
            self.acquire(ctx, plan.acquire);
        }
    }

    fn acquire(&mut self, ctx: &mut Context<Self>, servers: Vec<u32>) {
        let (store, me, ttl) = (self.store.clone(), self.me.clone(), self.lease_ms);
        let fut = async move {
            let mut got = Vec::new();
            for s in servers {
                let sent = Instant::now();
                let epoch = format!("{:016x}", rand::random::<u64>());
                match store.acquire(s, &me, ttl, &epoch).await {
                    Ok(Some(a)) => got.push((s, sent, a)),
                    Ok(None) => {}
                    Err(e) => {
                        log::warn!("server {s}: lease not taken: {e}");
                        break;
                    }
                }
            }
            got
        };
        ctx.spawn(fut.into_actor(self).map(|got, act, ctx| {
            for (s, sent, a) in got {
                act.own(ctx, s, sent, a);
            }
        }));
    }

    /// Starts the AMI connection for a lease just taken.
    fn own(&mut self, ctx: &mut Context<Self>, server: u32, sent: Instant, a: Acquired) {
        let store = self.store.clone();
        let Some(settings) = self.servers.get(&server).map(|t| t.settings.clone()) else {
            // Dropped meanwhile: give it straight back.
            actix::spawn(async move {
                let _ = store.release(server, &a.lease).await;
            });
            return;
        };
        if self.leaving {
            actix::spawn(async move {
                let _ = store.release(server, &a.lease).await;
            });
            return;
        }
        let deadline = Deadline {
            base: self.base,
            at_ms: Arc::new(AtomicU64::new(0)),
        };
        deadline.extend(sent, self.lease_ms * 9 / 10);
        let publisher = Publisher {
            server,
            lease: a.lease.clone(),
            deadline: deadline.clone(),
            store: self.store.clone(),
            node: ctx.address(),
            maxlen: self.maxlen,
            metrics: self.metrics.clone(),
            fenced: false,
        };
        let publisher = publisher.start();
        // The previous owner vanished without saying so: tell everyone before reconnecting.
        let previous = decode(KIND_STATUS, &a.last_status).ok();
        if let Some(Item::Status { status, .. }) = previous {
            if status != ServerStatus::Disconnected && status != ServerStatus::AuthFailed {
                publisher.do_send(PbxStatusChanged {
                    server_id: server,
                    generation: 0,
                    status: ServerStatus::Disconnected,
                    reason: format!("previous owner lost its lease; node {} takes over", self.me),
                    banner: None,
                    state_version: None,
                    at: None,
                });
            }
        }
        let sink = Sink {
            packets: publisher.clone().recipient(),
            status: publisher.clone().recipient(),
            shared: true,
        };
        let (limits, reconnect, metrics) = (
            self.ami_limits,
            self.reconnect.clone(),
            self.metrics.clone(),
        );
        let conn =
            Supervisor::start(move |_| PbxConn::new(settings, 0, limits, reconnect, sink, metrics));
        log::info!(
            "server {server}: this node ({}) owns it now (lease {}, epoch {})",
            self.me,
            a.lease,
            a.epoch
        );
        Metrics::inc(&self.metrics.cluster_acquisitions_total);
        if let Ok(mut v) = self.view.lock() {
            v.owned
                .insert(server, (a.lease.clone(), a.requests_from.clone()));
        }
        self.owned.insert(
            server,
            Owned {
                lease: a.lease,
                deadline,
                conn,
                publisher,
            },
        );
        self.sync_view();
    }

    /// The lease is gone: stop acting at once (the publisher is already fenced or will be).
    fn give_up(&mut self, server: u32, why: &str) {
        let Some(o) = self.owned.remove(&server) else {
            return;
        };
        log::warn!(
            "server {server}: lost lease {} ({why}); closing its AMI connection",
            o.lease
        );
        o.deadline.at_ms.store(0, Relaxed);
        let conn = o.conn;
        actix::spawn(async move {
            let _ = conn.send(PbxShutdown).await;
        });
        self.sync_view();
    }

    /// Logs off the PBX (publishing its Disconnected while still owner), then releases.
    fn hand_over(&mut self, _ctx: &mut Context<Self>, server: u32) {
        let Some(o) = self.owned.remove(&server) else {
            return;
        };
        self.sync_view();
        let store = self.store.clone();
        actix::spawn(async move {
            let _ = o.conn.send(PbxShutdown).await;
            let reason = "handed over to another cluster node".to_string();
            let _ = o.publisher.send(Seal { reason }).await;
            if let Err(e) = store.release(server, &o.lease).await {
                log::warn!("server {server}: lease not released ({e}); it expires by itself");
            }
        });
    }
}

impl Actor for Node {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Node::tick_every(self.lease_ms), |act, ctx| act.tick(ctx));
    }
}

impl Handler<Track> for Node {
    type Result = ();

    fn handle(&mut self, msg: Track, _ctx: &mut Context<Self>) {
        let id = msg.settings.id;
        self.servers.insert(
            id,
            Tracked {
                settings: msg.settings,
                generation: msg.generation,
            },
        );
        if let Ok(mut v) = self.view.lock() {
            v.mirrors.insert(id, msg.mirror);
        }
    }
}

impl Handler<Untrack> for Node {
    type Result = ();

    fn handle(&mut self, msg: Untrack, ctx: &mut Context<Self>) {
        if self
            .servers
            .get(&msg.server)
            .is_none_or(|t| t.generation != msg.generation)
        {
            return;
        }
        self.servers.remove(&msg.server);
        if let Ok(mut v) = self.view.lock() {
            v.mirrors.remove(&msg.server);
        }
        self.hand_over(ctx, msg.server);
    }
}

impl Handler<LeaseLost> for Node {
    type Result = ();

    fn handle(&mut self, msg: LeaseLost, _ctx: &mut Context<Self>) {
        if self
            .owned
            .get(&msg.server)
            .is_some_and(|o| o.lease == msg.lease)
        {
            self.give_up(msg.server, "publishing was refused");
        }
    }
}

fn error_reply(action: &Action, message: &str) -> Packet {
    let mut h = vec![("Response", "Error")];
    if let Some(id) = action.get("ActionID") {
        h.push(("ActionID", id));
    }
    h.push(("Message", message));
    Packet::from_headers(h)
}

impl Handler<Requests> for Node {
    type Result = ();

    fn handle(&mut self, msg: Requests, ctx: &mut Context<Self>) {
        let Some(o) = self
            .owned
            .get(&msg.server)
            .filter(|o| o.lease == msg.lease && !o.deadline.passed())
        else {
            return;
        };
        let (conn, publisher, server) = (o.conn.clone(), o.publisher.clone(), msg.server);
        let deadline = o.deadline.clone();
        ctx.spawn(
            async move {
                for action in msg.actions {
                    // Re-checked per action: a node paused past its lease acts no more.
                    if deadline.passed() {
                        return;
                    }
                    let err = match conn
                        .send(SendAction {
                            action: action.clone(),
                        })
                        .await
                    {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    // The requester hears of it through the stream, like any reply.
                    let reply = error_reply(&action, &err);
                    let _ = publisher
                        .send(PbxPackets {
                            server_id: server,
                            generation: 0,
                            items: vec![Inbound {
                                packet: reply,
                                json: None,
                                at: None,
                            }],
                            state_version: None,
                        })
                        .await;
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Leave> for Node {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Leave, _ctx: &mut Context<Self>) -> Self::Result {
        self.leaving = true;
        let owned = std::mem::take(&mut self.owned);
        self.sync_view();
        let (store, me) = (self.store.clone(), self.me.clone());
        Box::pin(async move {
            // Out of the live set first, so the others take what is released at their next tick.
            let _ = store.leave(&me).await;
            let stops = owned.into_iter().map(|(server, o)| {
                let (store, me) = (store.clone(), me.clone());
                async move {
                    let _ = o.conn.send(PbxShutdown).await;
                    let reason = format!("node {me} stopped; another cluster node takes over");
                    let _ = o.publisher.send(Seal { reason }).await;
                    let _ = store.release(server, &o.lease).await;
                }
            });
            futures_util::future::join_all(stops).await;
            // Again, in case a heartbeat already under way landed after the first.
            let _ = store.leave(&me).await;
            log::info!("cluster: node {me} left, its leases released");
        })
    }
}

impl Handler<ListNodes> for Node {
    type Result = ResponseFuture<Result<Vec<NodeInfo>, StoreError>>;

    fn handle(&mut self, _: ListNodes, _ctx: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move { store.nodes().await })
    }
}
