//! The cluster's only Redis I/O: one multiplexed connection per `Store` (re-opened after a
//! failure), the lease scripts, heartbeats, publishing and reading the streams. Knows keys and
//! scripts, not actors or sessions.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Script};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{keys, scripts};

/// Requests kept per server for the owner (older ones are trimmed).
const REQUEST_MAXLEN: usize = 10_000;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A node's heartbeat, as `GET /api/v1/cluster` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: String,
    pub servers: Vec<u32>,
    pub last_seen_ms: u64,
}

/// A lease just taken.
#[derive(Debug, Clone)]
pub struct Acquired {
    /// `<node>/<token>`: what the fence scripts compare.
    pub lease: String,
    /// The request stream's last id at acquisition: requests after it are this lease's.
    pub requests_from: String,
    pub epoch: String,
    /// The last status entry's data ("" if none).
    pub last_status: String,
}

/// Where a server's stream stands, read atomically.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub epoch: Option<String>,
    pub last_id: String,
    pub status: Option<String>,
    pub banner: Option<String>,
}

struct Scripts {
    acquire: Script,
    renew: Script,
    release: Script,
    publish: Script,
    request: Script,
}

pub struct Store {
    client: redis::Client,
    config: AsyncConnectionConfig,
    conn: Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    scripts: Scripts,
}

impl Store {
    /// A store for `url` whose commands time out after `timeout`.
    pub fn open(url: &str, timeout: Duration) -> Result<Store, StoreError> {
        Ok(Store {
            client: redis::Client::open(url)?,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            scripts: Scripts {
                acquire: Script::new(scripts::ACQUIRE),
                renew: Script::new(scripts::RENEW),
                release: Script::new(scripts::RELEASE),
                publish: Script::new(scripts::PUBLISH),
                request: Script::new(scripts::REQUEST),
            },
        })
    }

    /// Whether the last operation reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        match self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
        {
            Ok(c) => {
                *guard = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                self.up.store(false, Relaxed);
                Err(e.into())
            }
        }
    }

    /// Records how an operation went; a broken connection is re-opened next time.
    async fn note<T>(&self, r: redis::RedisResult<T>) -> Result<T, StoreError> {
        match r {
            Ok(v) => {
                self.up.store(true, Relaxed);
                Ok(v)
            }
            Err(e) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    self.up.store(false, Relaxed);
                    *self.conn.lock().await = None;
                }
                Err(e.into())
            }
        }
    }

    pub async fn acquire(
        &self,
        server: u32,
        node: &str,
        ttl_ms: u64,
        new_epoch: &str,
    ) -> Result<Option<Acquired>, StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<Option<(String, String, String, String)>> = self
            .scripts
            .acquire
            .key(keys::lease(server))
            .key(keys::fence(server))
            .key(keys::events(server))
            .key(keys::epoch(server))
            .key(keys::offset(server))
            .key(keys::status(server))
            .key(keys::requests(server))
            .arg(node)
            .arg(ttl_ms)
            .arg(new_epoch)
            .invoke_async(&mut c)
            .await;
        Ok(self
            .note(r)
            .await?
            .map(|(lease, requests_from, epoch, last_status)| Acquired {
                lease,
                requests_from,
                epoch,
                last_status,
            }))
    }

    /// Renews each `(server, lease)`; true where it was still ours.
    pub async fn renew(
        &self,
        held: &[(u32, String)],
        ttl_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let mut inv = self.scripts.renew.prepare_invoke();
        inv.arg(ttl_ms);
        for (s, lease) in held {
            inv.key(keys::lease(*s)).arg(lease);
        }
        let r: redis::RedisResult<Vec<i64>> = inv.invoke_async(&mut c).await;
        Ok(self.note(r).await?.into_iter().map(|v| v == 1).collect())
    }

    pub async fn release(&self, server: u32, lease: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<i64> = self
            .scripts
            .release
            .key(keys::lease(server))
            .arg(lease)
            .invoke_async(&mut c)
            .await;
        self.note(r).await.map(|_| ())
    }

    /// The lease value of each server (None = vacant).
    pub async fn holders(
        &self,
        servers: &[u32],
    ) -> Result<BTreeMap<u32, Option<String>>, StoreError> {
        let values = self
            .mget(servers.iter().map(|s| keys::lease(*s)).collect())
            .await?;
        Ok(servers.iter().copied().zip(values).collect())
    }

    /// Writes this node's heartbeat (expiring after `ttl_ms`).
    pub async fn heartbeat(&self, info: &NodeInfo, ttl_ms: u64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let json = serde_json::to_string(info).unwrap_or_default();
        let r: redis::RedisResult<()> = redis::pipe()
            .cmd("SET")
            .arg(keys::node(&info.node_id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SADD")
            .arg(keys::NODESET)
            .arg(&info.node_id)
            .ignore()
            .query_async(&mut c)
            .await;
        self.note(r).await
    }

    /// Nodes with a live heartbeat; forgets the ones whose heartbeat expired.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<Vec<String>> = redis::cmd("SMEMBERS")
            .arg(keys::NODESET)
            .query_async(&mut c)
            .await;
        let mut ids = self.note(r).await?;
        ids.sort();
        let values = self
            .mget(ids.iter().map(|n| keys::node(n)).collect())
            .await?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, v) in ids.into_iter().zip(values) {
            match v.and_then(|j| serde_json::from_str::<NodeInfo>(&j).ok()) {
                Some(info) => live.push(info),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let r: redis::RedisResult<()> = redis::cmd("SREM")
                .arg(keys::NODESET)
                .arg(&gone)
                .query_async(&mut c)
                .await;
            self.note(r).await?;
        }
        Ok(live)
    }

    /// Removes this node's heartbeat (a clean stop).
    pub async fn leave(&self, node: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<()> = redis::pipe()
            .cmd("DEL")
            .arg(keys::node(node))
            .ignore()
            .cmd("SREM")
            .arg(keys::NODESET)
            .arg(node)
            .ignore()
            .query_async(&mut c)
            .await;
        self.note(r).await
    }

    /// Appends `(kind, data)` items to the server's stream if `lease` still holds it. Returns
    /// the last offset, or None when fenced off.
    pub async fn publish(
        &self,
        server: u32,
        lease: &str,
        maxlen: usize,
        items: &[(&'static str, String)],
    ) -> Result<Option<u64>, StoreError> {
        let mut c = self.conn().await?;
        let mut inv = self.scripts.publish.prepare_invoke();
        inv.key(keys::lease(server))
            .key(keys::events(server))
            .key(keys::offset(server))
            .key(keys::status(server))
            .key(keys::banner(server))
            .arg(lease)
            .arg(maxlen);
        for (kind, data) in items {
            inv.arg(*kind).arg(data);
        }
        let r: redis::RedisResult<Option<u64>> = inv.invoke_async(&mut c).await;
        self.note(r).await
    }

    /// Queues an action for the server's owner. Returns the owner's lease, None if none.
    pub async fn request(&self, server: u32, data: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<Option<String>> = self
            .scripts
            .request
            .key(keys::lease(server))
            .key(keys::requests(server))
            .arg(REQUEST_MAXLEN)
            .arg(data)
            .invoke_async(&mut c)
            .await;
        self.note(r).await
    }

    /// The epoch of each server's history (None = none yet, or Redis lost it).
    pub async fn epochs(&self, servers: &[u32]) -> Result<Vec<Option<String>>, StoreError> {
        self.mget(servers.iter().map(|s| keys::epoch(*s)).collect())
            .await
    }

    /// The values of `keys` in one round trip (None = no such key); none asked, none read.
    async fn mget(&self, keys: Vec<String>) -> Result<Vec<Option<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let r: redis::RedisResult<Vec<Option<String>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut c).await;
        self.note(r).await
    }

    /// Epoch, last entry id, last status and banner of a server, in one transaction.
    pub async fn head(&self, server: u32) -> Result<Head, StoreError> {
        let mut c = self.conn().await?;
        type Last = Vec<(String, BTreeMap<String, String>)>;
        type Reply = (Option<String>, Last, Option<String>, Option<String>);
        let r: redis::RedisResult<Reply> = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(keys::epoch(server))
            .cmd("XREVRANGE")
            .arg(keys::events(server))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .cmd("GET")
            .arg(keys::status(server))
            .cmd("GET")
            .arg(keys::banner(server))
            .query_async(&mut c)
            .await;
        let (epoch, last, status, banner) = self.note(r).await?;
        Ok(Head {
            epoch,
            last_id: last
                .into_iter()
                .next()
                .map_or_else(|| "0-0".to_string(), |(id, _)| id),
            status,
            banner,
        })
    }

    /// Up to `count` entries of the server's stream up to `last` (inclusive), oldest first.
    pub async fn backlog(
        &self,
        server: u32,
        last: &str,
        count: usize,
    ) -> Result<Vec<StreamId>, StoreError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<StreamRangeReply> = redis::cmd("XREVRANGE")
            .arg(keys::events(server))
            .arg(last)
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await;
        let mut ids = self.note(r).await?.ids;
        ids.reverse();
        Ok(ids)
    }

    /// XREAD BLOCK over `streams` (key, last id seen); None when nothing came in time.
    pub async fn read(
        &self,
        streams: &[(String, String)],
        block_ms: u64,
        count: usize,
    ) -> Result<Option<StreamReadReply>, StoreError> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS");
        for (k, _) in streams {
            cmd.arg(k);
        }
        for (_, id) in streams {
            cmd.arg(id);
        }
        let r: redis::RedisResult<Option<StreamReadReply>> = cmd.query_async(&mut c).await;
        self.note(r).await
    }
}
