//! `[cluster]`: the shared Redis, this node's name and the ownership lease (SPEC §11). Only
//! parses and validates; knows nothing of Redis itself.

use serde::Deserialize;

/// `[cluster]` (unset `redis_url` = single node, behaviour unchanged).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `redis://host:port/db` of the shared Redis 7.x; None = single node.
    pub redis_url: Option<String>,
    /// This node's name in the cluster [host name].
    pub node_id: String,
    /// How long a PBX's ownership lease lives without renewal.
    pub lease_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis_url: None,
            node_id: host_name(),
            lease_ms: 5000,
        }
    }
}

/// The host name, or "amihub" when the system has none.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "amihub".to_string(),
    }
}

impl ClusterSettings {
    /// Every problem with these settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(url) = &self.redis_url {
            if !url.starts_with("redis://") && !url.starts_with("redis+unix://") {
                out.push("cluster.redis_url: must start with redis:// (or redis+unix://)".into());
            } else if let Err(e) = redis::Client::open(url.as_str()) {
                out.push(format!("cluster.redis_url: {e}"));
            }
        }
        let id_ok = !self.node_id.is_empty()
            && self.node_id.len() <= 64
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !id_ok {
            out.push("cluster.node_id: 1-64 characters of A-Z a-z 0-9 . _ -".into());
        }
        if !(200..=600_000).contains(&self.lease_ms) {
            out.push("cluster.lease_ms: must be between 200 and 600000".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_single_node() {
        let s = ClusterSettings::default();
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert!(s.redis_url.is_none());
        assert_eq!(s.lease_ms, 5000);
    }

    #[test]
    fn bad_values_name_their_key() {
        let s = ClusterSettings {
            redis_url: Some("http://x".into()),
            node_id: "a b".into(),
            lease_ms: 10,
        };
        let p = s.problems().join("\n");
        for key in ["cluster.redis_url", "cluster.node_id", "cluster.lease_ms"] {
            assert!(p.contains(key), "{p}");
        }
    }
}
