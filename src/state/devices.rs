//! Endpoints and device states: PJSIP endpoints from EndpointList and ContactStatus, chan_sip
//! (or IAX2) peers from PeerEntry, reachability from PeerStatus, and every device's state from
//! DeviceStateChange (live, and as DeviceStateList items). Endpoints are named like their device
//! (`PJSIP/100`, `SIP/100`), so a device state also lands on its endpoint.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{set, MAX_DEVICES, MAX_ENDPOINTS};
use crate::ami::Packet;

#[derive(Debug, Clone, Default)]
pub(super) struct Devices {
    endpoints: BTreeMap<String, Endpoint>,
    /// Device name -> state as DeviceStateChange spells it (`NOT_INUSE`, `INUSE`, ...).
    states: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
struct Endpoint {
    device_state: String,
    status: String,
    /// The status came from an event or a peer listing, not a guess.
    status_known: bool,
    /// Contacts as PJSIPShowEndpoints lists them (`aor/uri`), or a SIP peer's `ip:port`.
    contacts: Vec<String>,
}

impl Devices {
    pub(super) fn len(&self) -> usize {
        self.endpoints.len() + self.states.len()
    }

    /// DeviceStateChange: `Device` is now in `State`.
    pub(super) fn device_state(&mut self, p: &Packet) -> bool {
        let (Some(device), Some(state)) = (p.get("Device"), p.get("State")) else {
            return false;
        };
        if device.is_empty() {
            return false;
        }
        let room = self.states.len() < MAX_DEVICES;
        let mut changed = match self.states.get_mut(device) {
            Some(old) => set(old, Some(state)),
            None if room => {
                self.states.insert(device.to_owned(), state.to_owned());
                true
            }
            None => false,
        };
        if let Some(e) = self.endpoints.get_mut(device) {
            changed |= set(&mut e.device_state, Some(state));
        }
        changed
    }

    /// EndpointList (PJSIPShowEndpoints): `ObjectName`, its `DeviceState` in words, `Contacts`.
    pub(super) fn endpoint_list(&mut self, p: &Packet) -> bool {
        let Some(object) = p.get("ObjectName").filter(|n| !n.is_empty()) else {
            return false;
        };
        let name = format!("PJSIP/{object}");
        let device_state = p.get("DeviceState").map(devstate_from_words);
        let contacts: Option<Vec<String>> = p.get("Contacts").map(|c| {
            c.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        });
        let Some((mut changed, e)) = self.endpoint(&name) else {
            return false;
        };
        if let Some(state) = device_state {
            changed |= set(&mut e.device_state, Some(state));
        }
        if let Some(contacts) = contacts {
            if e.contacts != contacts {
                e.contacts = contacts;
                changed = true;
            }
        }
        // PJSIPShowEndpoints says nothing about reachability; guess only until an event says.
        if !e.status_known {
            let guess = if e.device_state == "UNAVAILABLE" {
                "Unavailable"
            } else if e.contacts.is_empty() {
                "Unknown"
            } else {
                "Reachable"
            };
            changed |= set(&mut e.status, Some(guess));
        }
        changed
    }

    /// PeerEntry (SIPpeers, IAXpeerlist): `Channeltype/ObjectName`, `IPaddress:IPport`, `Status`.
    pub(super) fn peer_entry(&mut self, p: &Packet) -> bool {
        let Some(object) = p.get("ObjectName").filter(|n| !n.is_empty()) else {
            return false;
        };
        let tech = p.get("Channeltype").unwrap_or("SIP");
        let name = format!("{tech}/{object}");
        let contact = match (p.get("IPaddress"), p.get("IPport")) {
            (Some(ip), Some(port)) if !ip.is_empty() && ip != "-none-" && ip != "(null)" => {
                Some(format!("{ip}:{port}"))
            }
            _ => None,
        };
        let status = p.get("Status").map(peer_status_words);
        let known_state = self.states.get(&name).cloned();
        let Some((mut changed, e)) = self.endpoint(&name) else {
            return false;
        };
        let contacts: Vec<String> = contact.into_iter().collect();
        if e.contacts != contacts {
            e.contacts = contacts;
            changed = true;
        }
        changed |= set(&mut e.status, status);
        e.status_known |= status.is_some();
        if e.device_state.is_empty() {
            changed |= set(&mut e.device_state, known_state.as_deref());
        }
        changed
    }

    /// PeerStatus: `Peer` (`PJSIP/100`, `SIP/100`) is `Registered`, `Reachable`, ...
    pub(super) fn peer_status(&mut self, p: &Packet) -> bool {
        let (Some(peer), Some(status)) = (p.get("Peer"), p.get("PeerStatus")) else {
            return false;
        };
        if peer.is_empty() {
            return false;
        }
        let known_state = self.states.get(peer).cloned();
        let Some((mut changed, e)) = self.endpoint(peer) else {
            return false;
        };
        changed |= set(&mut e.status, Some(status));
        e.status_known = true;
        if e.device_state.is_empty() {
            changed |= set(&mut e.device_state, known_state.as_deref());
        }
        changed
    }

    /// ContactStatus: a contact of PJSIP endpoint `EndpointName` was created, removed or found
    /// (un)reachable.
    pub(super) fn contact_status(&mut self, p: &Packet) -> bool {
        let (Some(endpoint), Some(status)) = (p.get("EndpointName"), p.get("ContactStatus")) else {
            return false;
        };
        if endpoint.is_empty() {
            return false;
        }
        let uri = p.get("URI").unwrap_or("");
        let contact = match p.get("AOR") {
            Some(aor) if !aor.is_empty() => format!("{aor}/{uri}"),
            _ => uri.to_owned(),
        };
        let Some((mut changed, e)) = self.endpoint(&format!("PJSIP/{endpoint}")) else {
            return false;
        };
        let listed = e
            .contacts
            .iter()
            .position(|c| *c == contact || (!uri.is_empty() && c.ends_with(&format!("/{uri}"))));
        match status {
            "Removed" => {
                if let Some(i) = listed {
                    e.contacts.remove(i);
                    changed = true;
                }
                if e.contacts.is_empty() {
                    changed |= set(&mut e.status, Some("Unavailable"));
                    e.status_known = true;
                }
            }
            "Created" | "Updated" => {
                if listed.is_none() && !uri.is_empty() {
                    e.contacts.push(contact);
                    changed = true;
                }
            }
            _ => {
                if listed.is_none() && !uri.is_empty() {
                    e.contacts.push(contact);
                    changed = true;
                }
                changed |= set(&mut e.status, Some(status));
                e.status_known = true;
            }
        }
        changed
    }

    /// The endpoint `name`, created if unknown and under the cap; `(created, endpoint)`.
    fn endpoint(&mut self, name: &str) -> Option<(bool, &mut Endpoint)> {
        let created = !self.endpoints.contains_key(name);
        if created {
            if self.endpoints.len() >= MAX_ENDPOINTS {
                return None;
            }
            self.endpoints.insert(name.to_owned(), Endpoint::default());
        }
        self.endpoints.get_mut(name).map(|e| (created, e))
    }

    /// Endpoints by name.
    pub(super) fn endpoints_json(&self) -> Value {
        let items = self.endpoints.iter().map(|(name, e)| {
            json!({
                "name": name,
                "device_state": e.device_state,
                "status": e.status,
                "contacts": e.contacts.join(","),
            })
        });
        Value::Array(items.collect())
    }

    /// Device name -> state, by name.
    pub(super) fn states_json(&self) -> Value {
        let map: Map<String, Value> = self
            .states
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Value::Object(map)
    }
}

/// A device state in the words of `PJSIPShowEndpoints` (`Not in use`) as DeviceStateChange
/// spells it (`NOT_INUSE`); an already-spelled or unknown value is kept.
fn devstate_from_words(words: &str) -> &str {
    match words.trim().to_ascii_lowercase().as_str() {
        "unknown" => "UNKNOWN",
        "not in use" => "NOT_INUSE",
        "in use" => "INUSE",
        "busy" => "BUSY",
        "invalid" => "INVALID",
        "unavailable" => "UNAVAILABLE",
        "ringing" => "RINGING",
        "ring+inuse" => "RINGINUSE",
        "on hold" => "ONHOLD",
        _ => words,
    }
}

/// A chan_sip `Status` (`OK (5 ms)`, `UNREACHABLE`, `LAGGED (900 ms)`, `UNKNOWN`,
/// `Unmonitored`) in PeerStatus words.
fn peer_status_words(status: &str) -> &str {
    let s = status.trim();
    if s.starts_with("OK") {
        "Reachable"
    } else if s.starts_with("UNREACHABLE") {
        "Unreachable"
    } else if s.starts_with("LAGGED") {
        "Lagged"
    } else if s.starts_with("UNKNOWN") {
        "Unknown"
    } else {
        s
    }
}
