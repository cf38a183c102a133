//! Every node's reading loop, on a Redis connection of its own: XREAD BLOCK over the stream of
//! every server the node serves (fed to its mirror, in order) and the request stream of every
//! server it owns (handed to the node). After losing Redis it tells the mirrors, retries, and
//! on return carries on from where it stopped, or from the new head where the history is gone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use redis::streams::StreamId;
use redis::Value;

use super::keys;
use super::mirror::{Backfill, Feed, Mirror};
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

/// How often a node checks every stream's epoch even while Redis answers: a Redis that lost
/// its data between two reads (a fast restart) shows up here, not as an error.
const EPOCH_CHECK: Duration = Duration::from_secs(1);

/// Where one server's stream is being read from.
struct Position {
    epoch: Option<Arc<str>>,
    last: String,
}

/// The broadcast offset an entry id stands at (`<offset>-<n>`; "0-0" before any).
fn offset_at(id: &str) -> u64 {
    id.split_once('-')
        .and_then(|(o, _)| o.parse().ok())
        .unwrap_or(0)
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

fn lost_feed(why: &str) -> Feed {
    Feed {
        epoch: None,
        head: None,
        entries: vec![Entry {
            offset: None,
            item: Item::Status {
                status: ServerStatus::Disconnected,
                reason: format!("cluster store unreachable: {why}"),
            },
        }],
    }
}

/// The broadcast entries among `ids`, decoded, with the id of the last one read.
fn entries_of(server: u32, ids: Vec<StreamId>, last: &mut String) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(ids.len());
    for e in ids {
        *last = e.id.clone();
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
    entries
}

/// Gives a mirror that starts following a stream what the stream still holds (up to
/// `max_frames` broadcast entries), as history its sessions may resume from.
async fn backfill(
    store: &Store,
    server: u32,
    head: &super::store::Head,
    max_frames: usize,
    mirror: &Addr<Mirror>,
) -> Result<(), super::store::StoreError> {
    let Some(epoch) = head.epoch.as_deref() else {
        return Ok(());
    };
    if head.last_id == "0-0" || max_frames == 0 {
        return Ok(());
    }
    let ids = store.backlog(server, &head.last_id, max_frames).await?;
    let mut last = String::new();
    let entries: Vec<Entry> = entries_of(server, ids, &mut last)
        .into_iter()
        .filter(|e| e.offset.is_some())
        .collect();
    if !entries.is_empty() {
        let _ = mirror
            .send(Backfill {
                epoch: Arc::from(epoch),
                entries,
            })
            .await;
    }
    Ok(())
}

pub async fn run(
    store: Store,
    view: SharedView,
    node: Addr<Node>,
    block_ms: u64,
    max_frames: usize,
) {
    let mut pos: BTreeMap<u32, Position> = BTreeMap::new();
    let mut req_pos: BTreeMap<u32, (String, String)> = BTreeMap::new();
    let mut lost = false;
    let mut backoff = Duration::from_millis(100);
    let mut checked = tokio::time::Instant::now();
    loop {
        let (mirrors, owned) = match view.lock() {
            Ok(v) => (v.mirrors.clone(), v.owned.clone()),
            Err(_) => return,
        };
        pos.retain(|s, _| mirrors.contains_key(s));
        let check = lost || checked.elapsed() >= EPOCH_CHECK;
        let result = step(
            &store,
            &mirrors,
            &owned,
            &mut pos,
            &mut req_pos,
            &node,
            block_ms,
            max_frames,
            lost,
            check,
        )
        .await;
        if check && result.is_ok() {
            checked = tokio::time::Instant::now();
        }
        match result {
            Ok(()) => {
                lost = false;
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                if !lost {
                    log::warn!("cluster: lost Redis ({e}); retrying");
                    for m in mirrors.values() {
                        let _ = m.send(lost_feed(&e.to_string())).await;
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
    max_frames: usize,
    recovering: bool,
    check: bool,
) -> Result<(), super::store::StoreError> {
    // Which followed streams changed epoch (or lost it) since they were read.
    let mut stale: Vec<u32> = Vec::new();
    if check && !pos.is_empty() {
        let ids: Vec<u32> = pos.keys().copied().collect();
        let epochs = store.epochs(&ids).await?;
        for (id, e) in ids.into_iter().zip(epochs) {
            if pos
                .get(&id)
                .is_some_and(|p| p.epoch.as_deref() != e.as_deref())
            {
                stale.push(id);
            }
        }
    }
    // Start (or, after an outage, re-check) each server: same epoch = carry on from where
    // reading stopped; a new one is a new history, read from its first entry (every frame of
    // it is news to every session here).
    for (id, m) in mirrors {
        let known = pos.contains_key(id) && !stale.contains(id);
        if known && !recovering {
            continue;
        }
        let head = store.head(*id).await?;
        let epoch: Option<Arc<str>> = head.epoch.as_deref().map(Arc::from);
        let carry_on = pos
            .get(id)
            .is_some_and(|p| p.epoch.is_some() && p.epoch == epoch);
        if carry_on {
            let feed = Feed {
                epoch,
                head: None,
                entries: head_entries(&head),
            };
            let _ = m.send(feed).await;
            continue;
        }
        let (last, at) = match pos.get(id) {
            Some(old) => {
                log::warn!(
                    "server {id}: cluster history {:?} is gone (now {:?}); reading the new one from its start",
                    old.epoch,
                    head.epoch
                );
                ("0-0".to_string(), 0)
            }
            None => {
                backfill(store, *id, &head, max_frames, m).await?;
                (head.last_id.clone(), offset_at(&head.last_id))
            }
        };
        pos.insert(
            *id,
            Position {
                epoch: epoch.clone(),
                last,
            },
        );
        let _ = m
            .send(Feed {
                epoch,
                head: Some(at),
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
        if p.epoch.is_none() {
            // The first owner made the epoch before it published anything.
            let e = store.epochs(&[server]).await?;
            p.epoch = e.into_iter().next().flatten().as_deref().map(Arc::from);
        }
        let entries = entries_of(server, key.ids, &mut p.last);
        let feed = Feed {
            epoch: p.epoch.clone(),
            head: None,
            entries,
        };
        let _ = m.send(feed).await;
    }
    Ok(())
}
