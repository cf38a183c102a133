//! A PBX as every cluster node serves it: the registry's actor for a server in cluster mode.
//! It is fed the server's stream (by the reader), keeps the live state from it, hands packets
//! and statuses to the registry exactly as a PBX connection would, and forwards the actions
//! the registry gives it to the owner through Redis. It never talks to the PBX.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::node::{Node, Untrack};
use super::store::Store;
use super::wire::{encode_action, Entry, Item};
use crate::ami::Action;
use crate::amisrv::render::status_event;
use crate::config::ServerSettings;
use crate::pbx::{
    GetQuality, GetState, PbxError, SendAction, ServerStatus, Shutdown, StateTracker,
};
use crate::registry::fanout::Outgoing;
use crate::registry::{
    At, HistoryGap, Inbound, KeepHistory, PbxPackets, PbxStatusChanged, Registry,
};
use crate::ws::protocol::{encode_packet, encode_prompt, encode_status_with, ServerTag};

/// How long an action waits for a server that has no owner (a takeover in progress).
const OWNER_WAIT: Duration = Duration::from_secs(2);

/// Stream entries for this server, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Feed {
    /// The stream's epoch, when the reader knows it (a change means a new history).
    pub epoch: Option<Arc<str>>,
    /// The stream's newest offset before these entries, on (re)reading its head.
    pub head: Option<u64>,
    pub entries: Vec<Entry>,
}

/// What the stream held when this node began following it: history, for resume only.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Backfill {
    pub epoch: Arc<str>,
    /// Broadcast entries only, oldest first.
    pub entries: Vec<Entry>,
}

/// Where this node is in the server's shared history.
#[derive(Default)]
pub struct Place {
    pub epoch: Option<Arc<str>>,
    pub newest: u64,
}

impl Place {
    /// Takes what a feed says of the stream.
    fn follow(&mut self, feed: &Feed) {
        if let Some(h) = feed.head {
            // (Re)reading the head: its epoch (None = no history yet) and newest offset.
            self.epoch = feed.epoch.clone();
            self.newest = h;
        } else if let Some(e) = &feed.epoch {
            if self.epoch.as_ref() != Some(e) {
                self.epoch = Some(e.clone());
                self.newest = 0;
            }
        }
    }

    /// How many broadcast entries were skipped before one at `offset` (trimmed from the stream
    /// before this node read them), if any.
    fn missed(&self, offset: Option<u64>) -> Option<u64> {
        let o = offset?;
        let gap = o.checked_sub(self.newest.checked_add(1)?)?;
        (self.epoch.is_some() && self.newest > 0 && gap > 0).then_some(gap)
    }

    /// The position of an entry (None before the epoch is known).
    fn at(&mut self, offset: Option<u64>) -> Option<At> {
        let epoch = self.epoch.clone()?;
        if let Some(o) = offset {
            self.newest = o;
        }
        Some(At {
            epoch,
            offset: self.newest,
            kept: offset.is_some(),
        })
    }
}

pub struct Mirror {
    pub settings: Arc<ServerSettings>,
    pub generation: u64,
    pub tag: ServerTag,
    pub registry: Addr<Registry>,
    pub store: Arc<Store>,
    pub node: Addr<Node>,
    pub tracker: StateTracker,
    pub connected: bool,
    pub place: Place,
}

impl Actor for Mirror {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.node.do_send(Untrack {
            server: self.settings.id,
            generation: self.generation,
        });
    }
}

/// Sends `action` to the owner of `server`, waiting up to OWNER_WAIT while it has none.
async fn forward(store: Arc<Store>, server: u32, action: Action) -> Result<(), PbxError> {
    action.to_bytes()?;
    let data = encode_action(&action);
    let deadline = tokio::time::Instant::now() + OWNER_WAIT;
    loop {
        match store.request(server, &data).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(None) => {
                return Err(PbxError::Cluster {
                    server_id: server,
                    message: "no cluster node owns this server right now (owner changing)".into(),
                })
            }
            Err(e) => {
                return Err(PbxError::Cluster {
                    server_id: server,
                    message: e.to_string(),
                })
            }
        }
    }
}

impl Mirror {
    fn packets(&self, items: Vec<Inbound>, state_version: Option<u64>) -> PbxPackets {
        PbxPackets {
            server_id: self.settings.id,
            generation: self.generation,
            items,
            state_version,
        }
    }

    fn on_status(
        &mut self,
        ctx: &mut Context<Self>,
        status: ServerStatus,
        reason: String,
        at: Option<At>,
    ) {
        let was = self.connected;
        self.connected = status == ServerStatus::Connected;
        if self.connected && !was {
            self.rebuild_state(ctx);
        } else if !self.connected {
            self.tracker.abandon();
        }
        self.registry.do_send(PbxStatusChanged {
            server_id: self.settings.id,
            generation: self.generation,
            status,
            reason,
            banner: None,
            state_version: None,
            at,
        });
    }

    /// Frames of the stream were lost to this node: its sessions are told. (The live state is
    /// not rebuilt here: a snapshot holds the server's events back until it completes, and the
    /// gap may be a Redis that restarted, whose new epoch the reader is about to find.)
    fn history_gap(&mut self, missed: u64) {
        if let Some(at) = self.place.at(None) {
            self.registry.do_send(HistoryGap {
                server_id: self.settings.id,
                generation: self.generation,
                missed,
                at,
            });
        }
    }

    /// Hands the registry what is batched so far (before a frame that must follow it).
    fn hand_over(&self, batch: &mut Vec<Inbound>) {
        if !batch.is_empty() {
            let items = std::mem::take(batch);
            self.registry.do_send(self.packets(items, None));
        }
    }

    /// Asks the owner, through the stream, for the snapshot the state tracker starts from.
    fn rebuild_state(&mut self, ctx: &mut Context<Self>) {
        let (store, server) = (self.store.clone(), self.settings.id);
        let actions = self.tracker.start();
        ctx.spawn(
            async move {
                for a in actions {
                    if let Err(e) = forward(store.clone(), server, a).await {
                        log::warn!("server {server}: state snapshot not requested: {e}");
                        break;
                    }
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Feed> for Mirror {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Feed, ctx: &mut Context<Self>) -> Self::Result {
        self.place.follow(&msg);
        let mut batch: Vec<Inbound> = Vec::new();
        for entry in msg.entries {
            if let Some(missed) = self.place.missed(entry.offset) {
                self.hand_over(&mut batch);
                self.history_gap(missed);
            }
            let at = self.place.at(entry.offset);
            match entry.item {
                Item::Packet(p) => {
                    if let Some(p) = self.tracker.track(p) {
                        let json = p
                            .action_id()
                            .is_none()
                            .then(|| encode_packet(&self.tag, &p, None));
                        // Replies (no offset) are routed, not placed.
                        let at = at.filter(|a| a.kept);
                        batch.push(Inbound {
                            packet: p,
                            json,
                            at,
                        });
                    }
                    if let Some(v) = self.tracker.take_ready() {
                        let items = std::mem::take(&mut batch);
                        self.registry.do_send(self.packets(items, Some(v)));
                    }
                }
                Item::Status { status, reason } => {
                    self.hand_over(&mut batch);
                    self.on_status(ctx, status, reason, at);
                }
                Item::Banner(banner) => {
                    self.hand_over(&mut batch);
                    self.registry.do_send(PbxStatusChanged::logging_in(
                        self.settings.id,
                        self.generation,
                        banner,
                        at,
                    ));
                }
            }
        }
        // The last batch is awaited: while the registry is congested, the reader waits here.
        let last = self.registry.send(self.packets(batch, None));
        Box::pin(async move {
            let _ = last.await;
        })
    }
}

impl Handler<Backfill> for Mirror {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Backfill, _ctx: &mut Context<Self>) -> Self::Result {
        let frames = msg
            .entries
            .into_iter()
            .filter_map(|e| {
                let at = At {
                    epoch: msg.epoch.clone(),
                    offset: e.offset?,
                    kept: true,
                };
                let out = match e.item {
                    Item::Packet(p) => {
                        Outgoing::packet(encode_packet(&self.tag, &p, None), p, None)
                    }
                    Item::Status { status, reason } => Outgoing::notice(
                        encode_status_with(&self.tag, status.as_str(), &reason, &[]),
                        Some(status_event(status.as_str(), &reason)),
                    ),
                    Item::Banner(b) => Outgoing::notice(encode_prompt(&self.tag, &b), None),
                };
                Some((out, at))
            })
            .collect();
        let sent = self.registry.send(KeepHistory {
            server_id: self.settings.id,
            generation: self.generation,
            frames,
        });
        Box::pin(async move {
            let _ = sent.await;
        })
    }
}

impl Handler<SendAction> for Mirror {
    type Result = ResponseFuture<Result<(), PbxError>>;

    fn handle(&mut self, msg: SendAction, _ctx: &mut Context<Self>) -> Self::Result {
        let server = self.settings.id;
        if !self.connected {
            return Box::pin(async move { Err(PbxError::NotConnected { server_id: server }) });
        }
        Box::pin(forward(self.store.clone(), server, msg.action))
    }
}

impl Handler<GetState> for Mirror {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.tracker
                .json(self.settings.id, &self.settings.name, self.connected),
        )
    }
}

impl Handler<GetQuality> for Mirror {
    type Result = MessageResult<GetQuality>;

    fn handle(&mut self, msg: GetQuality, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.tracker.quality(
            self.settings.id,
            &self.settings.name,
            self.connected,
            &msg,
        ))
    }
}

impl Handler<Shutdown> for Mirror {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
