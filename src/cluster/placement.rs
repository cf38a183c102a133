//! Which node should own which PBX, decided per lease tick from what Redis showed: a balanced
//! rendezvous assignment over the live nodes, and when to take a vacant lease or hand one
//! over. Pure: no clocks, no I/O; the node feeds it one observation per tick.

use std::collections::{BTreeMap, BTreeSet};

/// Ticks a node waits after starting before it takes leases (to hear of its peers first).
pub const WARMUP_TICKS: u64 = 1;
/// Ticks a lease must be seen vacant before a node not assigned to it takes it anyway.
pub const VACANT_TICKS: u32 = 2;
/// Ticks a peer must have been alive before a lease is handed over to it.
pub const STABLE_TICKS: u64 = 3;

fn score(node: &str, server: u32) -> u64 {
    // FNV-1a, then a splitmix64 finaliser: stable across processes and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain(server.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Servers to nodes: each server (in id order) to its highest-scoring node that still has
/// room, so loads differ by at most one and a membership change moves few servers.
pub fn assign(nodes: &BTreeSet<String>, servers: &[u32]) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        return out;
    }
    let mut sorted = servers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    // `base` each, and `extra` nodes one more: capacity is exactly the number of servers.
    let base = sorted.len() / nodes.len();
    let mut extra = sorted.len() % nodes.len();
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for s in sorted {
        let mut ranked: Vec<&String> = nodes.iter().collect();
        ranked.sort_by_key(|n| std::cmp::Reverse(score(n, s)));
        let pick = ranked.into_iter().find(|n| {
            let l = load.get(n.as_str()).copied().unwrap_or(0);
            l < base || (l == base && extra > 0)
        });
        if let Some(n) = pick {
            let l = load.entry(n.as_str()).or_default();
            if *l == base {
                extra -= 1;
            }
            *l += 1;
            out.insert(s, n.clone());
        }
    }
    out
}

/// What one tick observed.
pub struct View<'a> {
    pub me: &'a str,
    /// Nodes with a live heartbeat (this one included or not).
    pub live: &'a [String],
    /// Every configured server.
    pub servers: &'a [u32],
    /// The node holding each server's lease, None when vacant.
    pub holders: &'a BTreeMap<u32, Option<String>>,
    /// Servers this node holds a lease for.
    pub owned: &'a BTreeSet<u32>,
}

/// What to do this tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub acquire: Vec<u32>,
    /// At most one lease handed over per tick, so a joining node takes load gradually.
    pub release: Option<u32>,
}

/// Memory across ticks: how long peers have been alive and leases vacant.
#[derive(Debug, Default)]
pub struct Planner {
    ticks: u64,
    seen: BTreeMap<String, u64>,
    vacant: BTreeMap<u32, u32>,
}

impl Planner {
    pub fn plan(&mut self, v: &View) -> Plan {
        self.ticks += 1;
        let live: BTreeSet<String> = v.live.iter().cloned().chain([v.me.to_string()]).collect();
        self.seen.retain(|n, _| live.contains(n));
        for n in &live {
            *self.seen.entry(n.clone()).or_default() += 1;
        }
        let assigned = assign(&live, v.servers);
        let mut plan = Plan::default();
        for s in v.servers {
            let holder = v.holders.get(s).cloned().flatten();
            if holder.is_some() || v.owned.contains(s) {
                self.vacant.remove(s);
                continue;
            }
            let vacant = self.vacant.entry(*s).or_default();
            *vacant += 1;
            let mine = assigned.get(s).is_some_and(|n| n == v.me);
            if self.ticks > WARMUP_TICKS && (mine || *vacant > VACANT_TICKS) {
                plan.acquire.push(*s);
            }
        }
        self.vacant.retain(|s, _| v.servers.contains(s));
        if self.ticks > STABLE_TICKS {
            plan.release = v.owned.iter().copied().find(|s| {
                assigned.get(s).is_some_and(|n| {
                    n != v.me && self.seen.get(n).copied().unwrap_or(0) >= STABLE_TICKS
                })
            });
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn assignment_is_balanced_and_deterministic() {
        let servers: Vec<u32> = (1..=10).collect();
        let a = assign(&nodes(&["a", "b", "c"]), &servers);
        assert_eq!(a.len(), 10);
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        for n in a.values() {
            *load.entry(n).or_default() += 1;
        }
        assert_eq!(load.len(), 3);
        assert!(load.values().all(|l| (3..=4).contains(l)), "{load:?}");
        assert_eq!(a, assign(&nodes(&["c", "a", "b"]), &servers));
    }

    #[test]
    fn a_node_leaving_moves_only_its_servers() {
        let servers: Vec<u32> = (1..=12).collect();
        let before = assign(&nodes(&["a", "b", "c", "d"]), &servers);
        let after = assign(&nodes(&["a", "b", "c"]), &servers);
        let moved = servers
            .iter()
            .filter(|s| before[s] != after[s] && before[s] != "d")
            .count();
        assert!(moved <= 2, "moved {moved}: {before:?} -> {after:?}");
    }

    struct World {
        live: Vec<String>,
        servers: Vec<u32>,
        holders: BTreeMap<u32, Option<String>>,
        owned: BTreeSet<u32>,
    }

    impl World {
        fn view<'a>(&'a self, me: &'a str) -> View<'a> {
            View {
                me,
                live: &self.live,
                servers: &self.servers,
                holders: &self.holders,
                owned: &self.owned,
            }
        }
    }

    #[test]
    fn waits_one_tick_then_takes_its_share_then_strays_after_a_while() {
        let w = World {
            live: vec!["a".into(), "b".into()],
            servers: vec![1, 2, 3, 4],
            holders: BTreeMap::new(),
            owned: BTreeSet::new(),
        };
        let mut p = Planner::default();
        assert!(p.plan(&w.view("a")).acquire.is_empty(), "warm-up tick");
        let mine: Vec<u32> = assign(&nodes(&["a", "b"]), &w.servers)
            .into_iter()
            .filter(|(_, n)| n == "a")
            .map(|(s, _)| s)
            .collect();
        assert_eq!(p.plan(&w.view("a")).acquire, mine);
        // Still vacant a tick later: everything is taken, b's share too.
        assert_eq!(p.plan(&w.view("a")).acquire, vec![1, 2, 3, 4]);
    }

    #[test]
    fn held_leases_are_left_alone_and_a_stable_peer_gets_its_share_back() {
        let servers = vec![1, 2, 3, 4];
        let mut w = World {
            live: vec!["a".into()],
            servers: servers.clone(),
            holders: servers
                .iter()
                .map(|s| (*s, Some("a".to_string())))
                .collect(),
            owned: servers.iter().copied().collect(),
        };
        let mut p = Planner::default();
        for _ in 0..5 {
            assert_eq!(p.plan(&w.view("a")), Plan::default());
        }
        w.live.push("b".into());
        let b_share: BTreeSet<u32> = assign(&nodes(&["a", "b"]), &servers)
            .into_iter()
            .filter(|(_, n)| n == "b")
            .map(|(s, _)| s)
            .collect();
        let mut released = None;
        for _ in 0..STABLE_TICKS {
            let plan = p.plan(&w.view("a"));
            assert!(plan.acquire.is_empty());
            released = released.or(plan.release);
        }
        let r = released.expect("hands one over once b is stable");
        assert!(b_share.contains(&r));
    }
}
