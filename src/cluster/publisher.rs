//! The owner's side of a PBX stream: takes what the owner's PBX actor reads (as the registry
//! would) and appends it to the server's Redis stream through the fencing script. The first
//! refusal (lease gone, local deadline passed, Redis unreachable) fences it for good and tells
//! the node, which ends the AMI connection: a node that lost its lease never publishes again.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::node::{LeaseLost, Node};
use super::store::Store;
use super::wire::{encode, Item};
use crate::metrics::{Metrics, SharedMetrics};
use crate::registry::{PbxPackets, PbxStatusChanged};

/// Until when (ms since `base`) this node may act on its lease without hearing from Redis.
#[derive(Clone)]
pub struct Deadline {
    pub base: Instant,
    pub at_ms: Arc<AtomicU64>,
}

impl Deadline {
    pub fn passed(&self) -> bool {
        self.base.elapsed().as_millis() as u64 >= self.at_ms.load(Relaxed)
    }

    /// The lease is good until `from + ms`.
    pub fn extend(&self, from: Instant, ms: u64) {
        let at = from.saturating_duration_since(self.base).as_millis() as u64 + ms;
        self.at_ms.store(at, Relaxed);
    }
}

pub struct Publisher {
    pub server: u32,
    pub lease: String,
    pub deadline: Deadline,
    pub store: Arc<Store>,
    pub node: Addr<Node>,
    pub maxlen: usize,
    pub metrics: SharedMetrics,
    pub fenced: bool,
}

impl Actor for Publisher {
    type Context = Context<Self>;
}

impl Publisher {
    fn fence(&mut self, why: String) {
        if self.fenced {
            return;
        }
        self.fenced = true;
        Metrics::inc(&self.metrics.cluster_fenced_total);
        log::warn!(
            "server {}: lease {} fenced off ({why}): publishing and acting stop here",
            self.server,
            self.lease
        );
        self.node.do_send(LeaseLost {
            server: self.server,
            lease: self.lease.clone(),
        });
    }

    fn publish(&mut self, items: Vec<(&'static str, String)>) -> ResponseActFuture<Self, ()> {
        if self.fenced || items.is_empty() {
            return Box::pin(actix::fut::ready(()));
        }
        if self.deadline.passed() {
            self.fence("lease not renewed in time".into());
            return Box::pin(actix::fut::ready(()));
        }
        let (store, server, lease, maxlen) = (
            self.store.clone(),
            self.server,
            self.lease.clone(),
            self.maxlen,
        );
        let fut = async move { store.publish(server, &lease, maxlen, &items).await };
        Box::pin(fut.into_actor(self).map(|r, act, _| match r {
            Ok(Some(_)) => {}
            Ok(None) => act.fence("another node holds the lease".into()),
            Err(e) => act.fence(e.to_string()),
        }))
    }
}

impl Handler<PbxPackets> for Publisher {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: PbxPackets, _ctx: &mut Context<Self>) -> Self::Result {
        let items = msg
            .items
            .into_iter()
            .map(|i| encode(&Item::Packet(i.packet)))
            .collect();
        AtomicResponse::new(self.publish(items))
    }
}

impl Handler<PbxStatusChanged> for Publisher {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: PbxStatusChanged, _ctx: &mut Context<Self>) -> Self::Result {
        let item = match msg.banner {
            Some(b) => Item::Banner(b),
            None => Item::Status {
                status: msg.status,
                reason: msg.reason,
            },
        };
        AtomicResponse::new(self.publish(vec![encode(&item)]))
    }
}

/// A clean hand-over: publish a last `Disconnected` with `reason` (after everything sent
/// before), then publish nothing more, quietly.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Seal {
    pub reason: String,
}

impl Handler<Seal> for Publisher {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Seal, _ctx: &mut Context<Self>) -> Self::Result {
        let item = Item::Status {
            status: crate::pbx::ServerStatus::Disconnected,
            reason: msg.reason,
        };
        let last = self.publish(vec![encode(&item)]);
        AtomicResponse::new(Box::pin(last.map(|_, act, _| act.fenced = true)))
    }
}
