//! Endpoint health over time: a bounded per-endpoint log of changes to its reachability, contact
//! address, user agent, device availability and outbound registration, from `ContactStatus`
//! (and `ContactStatusDetail`), `PeerStatus`, `DeviceStateChange` and `Registry` events.
//! ("User-Agent on PJSIP/777 changed from … to Zoiper …" is one entry.)

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};

use super::MAX_ENDPOINTS;
use crate::ami::Packet;

/// Changes kept per endpoint, newest last.
pub const CHANGES_PER_ENDPOINT: usize = 50;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Status,
    Address,
    UserAgent,
    /// Only availability (into or out of `UNAVAILABLE`), not every busy/idle flip of a call.
    Device,
    Registration,
}

impl Field {
    fn as_str(self) -> &'static str {
        match self {
            Field::Status => "status",
            Field::Address => "address",
            Field::UserAgent => "user_agent",
            Field::Device => "device",
            Field::Registration => "registration",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Change {
    at_ms: u64,
    field: Field,
    from: String,
    to: String,
}

#[derive(Debug, Clone, Default)]
struct Known {
    status: String,
    address: String,
    user_agent: String,
    device: String,
    registration: String,
    log: VecDeque<Change>,
}

impl Known {
    fn value(&mut self, field: Field) -> &mut String {
        match field {
            Field::Status => &mut self.status,
            Field::Address => &mut self.address,
            Field::UserAgent => &mut self.user_agent,
            Field::Device => &mut self.device,
            Field::Registration => &mut self.registration,
        }
    }

    /// Records `to` for `field`; a change is logged when a known value differs.
    fn set(&mut self, field: Field, to: Option<&str>, at_ms: u64) -> bool {
        let Some(to) = to.map(str::trim).filter(|v| !v.is_empty()) else {
            return false;
        };
        let current = self.value(field);
        if current == to {
            return false;
        }
        let from = std::mem::replace(current, to.to_owned());
        if self.log.len() >= CHANGES_PER_ENDPOINT {
            self.log.pop_front();
        }
        self.log.push_back(Change {
            at_ms,
            field,
            from,
            to: to.to_owned(),
        });
        true
    }
}

/// Every endpoint's latest health and its change log.
#[derive(Debug, Clone, Default)]
pub(super) struct Changes {
    endpoints: HashMap<String, Known>,
}

impl Changes {
    pub(super) fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Feeds one of the health events; true if anything changed.
    pub(super) fn apply(&mut self, event: &str, p: &Packet, now_ms: u64) -> bool {
        match event {
            "ContactStatus" | "ContactStatusDetail" => {
                let Some(name) = p.get("EndpointName").filter(|n| !n.is_empty()) else {
                    return false;
                };
                let status = p.get("ContactStatus").or_else(|| p.get("Status"));
                let address = p
                    .get("ViaAddress")
                    .filter(|v| !v.is_empty())
                    .or_else(|| p.get("URI").map(address_of_uri));
                let Some(k) = self.endpoint(&format!("PJSIP/{name}")) else {
                    return false;
                };
                // An old contact removed after the phone registered from elsewhere says nothing
                // about the current one.
                let removed = status.is_some_and(|s| s.eq_ignore_ascii_case("Removed"));
                if removed && address.is_some_and(|a| a != k.address) && !k.address.is_empty() {
                    return false;
                }
                let a = k.set(Field::Status, status, now_ms);
                let b = k.set(Field::Address, address, now_ms);
                let c = k.set(Field::UserAgent, p.get("UserAgent"), now_ms);
                a || b || c
            }
            "PeerStatus" => {
                let Some(peer) = p.get("Peer").filter(|n| !n.is_empty()) else {
                    return false;
                };
                let Some(k) = self.endpoint(peer) else {
                    return false;
                };
                let a = k.set(Field::Status, p.get("PeerStatus"), now_ms);
                let b = k.set(Field::Address, p.get("Address"), now_ms);
                a || b
            }
            "DeviceStateChange" => {
                let (Some(device), Some(state)) = (p.get("Device"), p.get("State")) else {
                    return false;
                };
                let available = if state.eq_ignore_ascii_case("UNAVAILABLE") {
                    "UNAVAILABLE"
                } else {
                    "AVAILABLE"
                };
                // Only endpoints already known, or one going unavailable, are worth a log.
                if !self.endpoints.contains_key(device) && available != "UNAVAILABLE" {
                    return false;
                }
                self.endpoint(device)
                    .is_some_and(|k| k.set(Field::Device, Some(available), now_ms))
            }
            "Registry" => {
                let (Some(tech), Some(domain)) = (p.get("ChannelType"), p.get("Domain")) else {
                    return false;
                };
                self.endpoint(&format!("{tech}/{domain}"))
                    .is_some_and(|k| k.set(Field::Registration, p.get("Status"), now_ms))
            }
            _ => false,
        }
    }

    fn endpoint(&mut self, name: &str) -> Option<&mut Known> {
        if !self.endpoints.contains_key(name) && self.endpoints.len() >= MAX_ENDPOINTS {
            return None;
        }
        Some(self.endpoints.entry(name.to_owned()).or_default())
    }

    pub(super) fn to_json(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .endpoints
            .iter()
            .map(|(name, k)| (name.clone(), k.to_json(CHANGES_PER_ENDPOINT)))
            .collect();
        Value::Object(map)
    }

    /// One endpoint's health with its newest `changes` log entries; `None` if never seen.
    pub(super) fn endpoint_json(&self, name: &str, changes: usize) -> Option<Value> {
        self.endpoints.get(name).map(|k| k.to_json(changes))
    }

    /// Endpoints whose contact is `Unreachable` or whose device is `UNAVAILABLE`, sorted.
    pub(super) fn unreachable(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .endpoints
            .iter()
            .filter(|(_, k)| {
                k.status.eq_ignore_ascii_case("Unreachable") || k.device == "UNAVAILABLE"
            })
            .map(|(n, _)| n.as_str())
            .collect();
        out.sort_unstable();
        out
    }
}

impl Known {
    /// Current values and the newest `changes` log entries (oldest of those first).
    fn to_json(&self, changes: usize) -> Value {
        let skip = self.log.len().saturating_sub(changes);
        let log: Vec<Value> = self
            .log
            .iter()
            .skip(skip)
            .map(|c| json!({"at_ms": c.at_ms, "field": c.field.as_str(), "from": c.from, "to": c.to}))
            .collect();
        json!({
            "status": self.status, "address": self.address, "user_agent": self.user_agent,
            "device": self.device, "registration": self.registration, "changes": log,
        })
    }
}

/// `sip:6117@203.0.113.5:5060;ob` -> `203.0.113.5:5060`.
fn address_of_uri(uri: &str) -> &str {
    let rest = uri.split_once(':').map_or(uri, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    rest.split(';').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_give_addresses() {
        assert_eq!(
            address_of_uri("sip:6117@203.0.113.5:5060;ob"),
            "203.0.113.5:5060"
        );
        assert_eq!(address_of_uri("sip:198.51.100.7:5061"), "198.51.100.7:5061");
        assert_eq!(address_of_uri("garbage"), "garbage");
    }
}
