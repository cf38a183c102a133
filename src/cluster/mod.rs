//! Cluster mode (SPEC §11): several amihub nodes sharing one Redis. Each PBX has one owner
//! node at a time (a fenced lease), which alone holds its AMI connection and publishes what it
//! reads to the server's Redis stream; every node mirrors every stream into its own registry,
//! so sessions anywhere see the same frames in the same order, and forwards its sessions'
//! actions to the owner, whose replies come back through the stream to the requester only.
//!
//! Pure parts: `settings`, `keys`, `wire`, `placement`, `scripts`. I/O: `store` (Redis),
//! `reader` (the XREAD loop), and the actors `node`, `publisher`, `mirror`. Nothing here knows
//! about sessions, rights or rendering: the registry does all of that, unchanged.

mod history;
mod keys;
mod mirror;
mod node;
mod placement;
mod publisher;
mod reader;
mod scripts;
mod settings;
mod store;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use crate::ami::Limits;
use crate::config::{HistorySettings, ReconnectSettings, ServerSettings};
use crate::metrics::SharedMetrics;
use crate::pbx::{PbxHandle, StateTracker};
use crate::registry::history::FrameLog;
use crate::registry::Registry;
use crate::ws::protocol::ServerTag;
pub use settings::ClusterSettings;
pub use store::{NodeInfo, StoreError};

/// Frames kept per server stream when no history bound is configured (SPEC §10 default).
pub const DEFAULT_MAX_FRAMES: usize = 10_000;

/// Handle to this node's cluster membership (cheap to clone).
#[derive(Clone)]
pub struct Cluster {
    node: Addr<node::Node>,
    store: Arc<store::Store>,
    node_id: String,
}

impl Cluster {
    /// Joins the cluster `settings` names (None when `redis_url` is unset). The owner's PBX
    /// actors run on the calling thread (the registry's). Must run inside an actix system.
    pub fn start(
        settings: &ClusterSettings,
        maxlen: usize,
        ami_limits: Limits,
        reconnect: ReconnectSettings,
        metrics: SharedMetrics,
    ) -> Result<Option<Cluster>, StoreError> {
        let Some(url) = settings.redis_url.as_deref() else {
            return Ok(None);
        };
        let lease = settings.lease_ms;
        let timeout = Duration::from_millis((lease / 2).max(100));
        let store = Arc::new(store::Store::open(url, timeout)?);
        let block_ms = (lease / 4).clamp(20, 200);
        let reader_store = store::Store::open(url, Duration::from_millis(block_ms + 2000))?;
        let view: reader::SharedView = Arc::new(Mutex::new(reader::View::default()));
        let node = node::Node::new(
            settings.node_id.clone(),
            lease,
            maxlen,
            store.clone(),
            ami_limits,
            reconnect,
            metrics,
            view.clone(),
        )
        .start();
        actix::spawn(reader::run(
            reader_store,
            view,
            node.clone(),
            block_ms,
            maxlen,
        ));
        log::info!(
            "cluster: node {} joins via {} (lease {lease} ms)",
            settings.node_id,
            redacted(url)
        );
        Ok(Some(Cluster {
            node,
            store,
            node_id: settings.node_id.clone(),
        }))
    }

    /// The registry's actor for `settings` in cluster mode: a mirror of its stream.
    pub fn mirror(
        &self,
        settings: Arc<ServerSettings>,
        generation: u64,
        registry: Addr<Registry>,
    ) -> PbxHandle {
        let m = mirror::Mirror {
            tag: ServerTag::new(settings.id, &settings.name, settings.tls),
            settings: settings.clone(),
            generation,
            registry,
            store: self.store.clone(),
            node: self.node.clone(),
            tracker: StateTracker::default(),
            connected: false,
            place: mirror::Place::default(),
        };
        let addr = m.start();
        self.node.do_send(node::Track {
            settings,
            generation,
            mirror: addr.clone(),
        });
        PbxHandle {
            send: addr.clone().recipient(),
            shutdown: addr.clone().recipient(),
            state: addr.clone().recipient(),
            quality: addr.recipient(),
        }
    }

    /// The registry's history of a mirrored server: positions are the stream's.
    pub fn frame_log(&self, settings: HistorySettings) -> Box<dyn FrameLog> {
        Box::new(history::SharedLog::new(settings))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether this node's last Redis operation succeeded.
    pub fn redis_up(&self) -> bool {
        self.store.is_up()
    }

    /// Live nodes and the servers each owns now.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, String> {
        match self.node.send(node::ListNodes).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Clean stop: log off owned PBXs and release their leases (bounded by `within`).
    pub async fn leave(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.node.send(node::Leave)).await;
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match url.split_once('@') {
        Some((creds, rest)) => match creds.rsplit_once(':') {
            Some((user, _)) if !user.ends_with('/') => format!("{user}:***@{rest}"),
            _ => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            super::redacted("redis://user:pw@127.0.0.1:6379/0"),
            "redis://user:***@127.0.0.1:6379/0"
        );
        assert_eq!(super::redacted("redis://127.0.0.1/"), "redis://127.0.0.1/");
    }
}
