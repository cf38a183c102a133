//! Redis key names of the cluster. Per-server keys share a hash tag (`{s<id>}`), so the Lua
//! scripts that touch several of them stay valid on a Redis Cluster too.

/// Every node's id is in this set while it may be alive.
pub const NODESET: &str = "amihub:nodes";

/// A node's heartbeat: JSON `{"node_id","servers","last_seen_ms"}`, expiring after a lease.
pub fn node(id: &str) -> String {
    format!("amihub:node:{id}")
}

fn server(id: u32, part: &str) -> String {
    format!("amihub:{{s{id}}}:{part}")
}

/// The ownership lease: `<node_id>/<fencing token>`, with a PX expiry.
pub fn lease(id: u32) -> String {
    server(id, "lease")
}

/// The fencing-token counter (INCR per acquisition).
pub fn fence(id: u32) -> String {
    server(id, "fence")
}

/// The server's stream: every packet and status the owner read, entry ids `<offset>-<n>`.
pub fn events(id: u32) -> String {
    server(id, "events")
}

/// The last broadcast offset published.
pub fn offset(id: u32) -> String {
    server(id, "offset")
}

/// The name of this server's history; a new one whenever Redis lost it.
pub fn epoch(id: u32) -> String {
    server(id, "epoch")
}

/// The last status entry published (what a node that starts shows first).
pub fn status(id: u32) -> String {
    server(id, "status")
}

/// The last banner published.
pub fn banner(id: u32) -> String {
    server(id, "banner")
}

/// Actions for the owner, each stamped with the lease it was addressed to.
pub fn requests(id: u32) -> String {
    server(id, "req")
}

/// The server id of an `events` or `req` stream key, and whether it is `req`.
pub fn parse_stream(key: &str) -> Option<(u32, bool)> {
    let rest = key.strip_prefix("amihub:{s")?;
    let (id, part) = rest.split_once("}:")?;
    let id = id.parse().ok()?;
    match part {
        "events" => Some((id, false)),
        "req" => Some((id, true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_round_trip() {
        assert_eq!(parse_stream(&events(7)), Some((7, false)));
        assert_eq!(parse_stream(&requests(12)), Some((12, true)));
        assert_eq!(parse_stream(&lease(7)), None);
        assert_eq!(parse_stream("amihub:{sx}:events"), None);
    }
}
