//! Every node's reading loop, on a Redis connection of its own: XREAD BLOCK over the stream of
//! every server the node serves (fed to its mirror, in order) and the request stream of every
//! server it owns (handed to the node). After losing Redis it tells the mirrors, retries, and
//! on return carries on from where it stopped, or from the new head where the history is gone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use redis::Value;

use super::keys;
use super::mirror::{Feed, Mirror};
use super::node::{Node, Requests};
use super::store::{Head, Store};
use super::wire::{decode, decode_action, offset_of, Entry, Item};
use crate::pbx::ServerStatus;

/// Entries read per stream per call.
const COUNT: usize = 512;

/// What the reader follows; the node edits it.
#[derive(Default)]
pub struct View {
    pub mirrors: BTreeMap<u32, Addr<Mirror>>,
    /// Owned servers: (lease, request stream id to read after).
    pub owned: BTreeMap<u32, (String, String)>,
}

pub type SharedView = Arc<Mutex<View>>;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Where one server's stream is being read from.
struct Position {
    epoch: Option<String>,
    last: String,
}

/// The status a node shows for a server before (or instead of) reading its stream.
fn head_entries(head: &Head) -> Vec<Entry> {
    let mut out = Vec::new();
    if let Some(b) = &head.banner {
        out.push(Entry {
            offset: None,
            item: Item::Banner(b.clone()),
        });
    }
    let status = head
        .status
        .as_deref()
        .and_then(|s| decode(super::wire::KIND_STATUS, s).ok());
    out.push(Entry {
        offset: None,
        item: status.unwrap_or(Item::Status {
            status: ServerStatus::Connecting,
            reason: "waiting for a cluster node to take this server".into(),
        }),
    });
    out
}

fn lost_entry(why: &str) -> Entry {
    Entry {
        offset: None,
        item: Item::Status {
            status: ServerStatus::Disconnected,
            reason: format!("cluster store unreachable: {why}"),
        },
    }
}

pub async fn run(store: Store, view: SharedView, node: Addr<Node>, block_ms: u64) {
    let mut pos: BTreeMap<u32, Position> = BTreeMap::new();
    let mut req_pos: BTreeMap<u32, (String, String)> = BTreeMap::new();
    let mut lost = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        let (mirrors, owned) = match view.lock() {
            Ok(v) => (v.mirrors.clone(), v.owned.clone()),
            Err(_) => return,
        };
        pos.retain(|s, _| mirrors.contains_key(s));
        let result = step(
            &store,
            &mirrors,
            &owned,
            &mut pos,
            &mut req_pos,
            &node,
            block_ms,
            lost,
        )
        .await;
        match result {
            Ok(()) => {
                lost = false;
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                if !lost {
                    log::warn!("cluster: lost Redis ({e}); retrying");
                    for m in mirrors.values() {
                        let _ = m
                            .send(Feed {
                                entries: vec![lost_entry(&e.to_string())],
                            })
                            .await;
                    }
                }
                lost = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn step(
    store: &Store,
    mirrors: &BTreeMap<u32, Addr<Mirror>>,
    owned: &BTreeMap<u32, (String, String)>,
    pos: &mut BTreeMap<u32, Position>,
    req_pos: &mut BTreeMap<u32, (String, String)>,
    node: &Addr<Node>,
    block_ms: u64,
    recovering: bool,
) -> Result<(), super::store::StoreError> {
    // Start (or, after an outage, re-check) each server: same epoch = carry on; otherwise
    // the history is gone and reading starts at the new head.
    for (id, m) in mirrors {
        if pos.contains_key(id) && !recovering {
            continue;
        }
        let head = store.head(*id).await?;
        let same = pos
            .get(id)
            .is_some_and(|p| p.epoch == head.epoch && p.epoch.is_some());
        if !same {
            if let Some(old) = pos.get(id) {
                log::warn!(
                    "server {id}: cluster history {:?} is gone (now {:?}); reading from its new head",
                    old.epoch,
                    head.epoch
                );
            }
            pos.insert(
                *id,
                Position {
                    epoch: head.epoch.clone(),
                    last: head.last_id.clone(),
                },
            );
        }
        let _ = m
            .send(Feed {
                entries: head_entries(&head),
            })
            .await;
    }
    req_pos.retain(|s, (lease, _)| owned.get(s).is_some_and(|(l, _)| l == lease));
    for (s, (lease, from)) in owned {
        req_pos
            .entry(*s)
            .or_insert_with(|| (lease.clone(), from.clone()));
    }
    let mut streams: Vec<(String, String)> = pos
        .iter()
        .map(|(s, p)| (keys::events(*s), p.last.clone()))
        .collect();
    streams.extend(
        req_pos
            .iter()
            .map(|(s, (_, last))| (keys::requests(*s), last.clone())),
    );
    if streams.is_empty() {
        tokio::time::sleep(Duration::from_millis(block_ms)).await;
        return Ok(());
    }
    let Some(reply) = store.read(&streams, block_ms, COUNT).await? else {
        return Ok(());
    };
    for key in reply.keys {
        let Some((server, is_req)) = keys::parse_stream(&key.key) else {
            continue;
        };
        if is_req {
            let Some((lease, last)) = req_pos.get_mut(&server) else {
                continue;
            };
            let mut actions = Vec::new();
            for e in key.ids {
                *last = e.id.clone();
                let token = e.map.get("t").and_then(text);
                let data = e.map.get("d").and_then(text);
                if token.as_deref() != Some(lease.as_str()) {
                    continue;
                }
                match data.as_deref().map(decode_action) {
                    Some(Ok(a)) => actions.push(a),
                    _ => log::warn!("server {server}: unreadable forwarded action {}", e.id),
                }
            }
            if !actions.is_empty() {
                node.do_send(Requests {
                    server,
                    lease: lease.clone(),
                    actions,
                });
            }
            continue;
        }
        let (Some(p), Some(m)) = (pos.get_mut(&server), mirrors.get(&server)) else {
            continue;
        };
        let mut entries = Vec::with_capacity(key.ids.len());
        for e in key.ids {
            p.last = e.id.clone();
            let kind = e.map.get("k").and_then(text).unwrap_or_default();
            let data = e.map.get("d").and_then(text).unwrap_or_default();
            match decode(&kind, &data) {
                Ok(item) => entries.push(Entry {
                    offset: offset_of(&e.id, &kind),
                    item,
                }),
                Err(err) => log::warn!("server {server}: unreadable stream entry {}: {err}", e.id),
            }
        }
        let _ = m.send(Feed { entries }).await;
    }
    Ok(())
}
