//! `{"ProxyAction": …}` messages a session handles with amihub itself: ListServers, Subscribe,
//! Snapshot, Resume, and for admins ListSessions, AddServer and DropServer.

use std::sync::Arc;

use actix::prelude::*;
use actix_web_actors::ws;
use serde_json::{json, Map, Value};

use crate::metrics::Metrics;
use crate::registry::{
    AddServer, DropServer, ListServers, ListSessions, Resume, ServerState, Subscribe, Subscription,
};
use crate::ws::protocol::encode_reply_value;
use crate::ws::session::WsSession;

type Ctx = ws::WebsocketContext<WsSession>;

/// A list of strings from a JSON value (a single string counts as one item).
fn string_list(v: Option<&Value>) -> Result<Option<Vec<String>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err("must be a list of strings".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err("must be a list of strings".into()),
    }
}

impl WsSession {
    fn ok(&self, ctx: &mut Ctx, name: &str, mut data: Map<String, Value>) {
        data.insert("Response".into(), json!("Success"));
        if let Some(id) = &self.proxy_id {
            data.insert("ActionID".into(), json!(id));
        }
        data.insert("ProxyAction".into(), json!(name));
        self.reply(ctx, encode_reply_value(&Value::Object(data)));
    }

    fn admin_only(&self, ctx: &mut Ctx, name: &str) -> bool {
        if self.identity.rights.admin {
            return true;
        }
        Metrics::inc(&self.metrics.actions_refused_total);
        log::warn!(
            "session {} (user {}): refused ProxyAction {name} (admin only)",
            self.id,
            self.identity.name
        );
        self.fail(ctx, &format!("ProxyAction {name} requires an admin user"));
        false
    }

    /// An error reply carrying the ProxyAction's own ActionID.
    fn fail(&self, ctx: &mut Ctx, message: &str) {
        self.error(ctx, message, self.proxy_id.as_deref());
    }

    pub(super) fn on_proxy(&mut self, name: &str, body: Map<String, Value>, ctx: &mut Ctx) {
        // Replies below run while the session waits (`.wait`), so this id stays theirs.
        self.proxy_id = match body.get("ActionID") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        match name {
            "ListServers" => {
                let rights = Some(self.identity.rights.clone());
                self.registry
                    .send(ListServers { rights })
                    .into_actor(self)
                    .map(|res, act, ctx| match res {
                        Ok(servers) => {
                            let mut m = Map::new();
                            m.insert("Servers".into(), json!(servers));
                            act.ok(ctx, "ListServers", m);
                        }
                        Err(_) => act.fail(ctx, "registry unavailable"),
                    })
                    .wait(ctx);
            }
            "Snapshot" => {
                let id = match body.get("AMIServerID") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.parse().ok(),
                    _ => None,
                };
                let Some(server) = id.and_then(|i| u32::try_from(i).ok()) else {
                    return self.fail(ctx, "Snapshot needs AMIServerID");
                };
                let rights = self.identity.rights.clone();
                self.registry
                    .send(ServerState { server, rights })
                    .into_actor(self)
                    .map(move |res, act, ctx| match res {
                        Ok(Ok(v)) => {
                            let mut m = Map::new();
                            m.insert("ServerID".into(), json!(server));
                            m.insert("StateVersion".into(), v["state_version"].clone());
                            m.insert("Complete".into(), v["complete"].clone());
                            m.insert("State".into(), v["state"].clone());
                            act.ok(ctx, "Snapshot", m);
                        }
                        Ok(Err(e)) => act.fail(ctx, &format!("Snapshot: {e}")),
                        Err(_) => act.fail(ctx, "registry unavailable"),
                    })
                    .wait(ctx);
            }
            "Subscribe" if !self.subscribe_bucket.take() => {
                Metrics::inc(&self.metrics.actions_refused_total);
                let msg = format!(
                    "Subscribe rate limit exceeded ({} per second)",
                    crate::ws::session::SUBSCRIBES_PER_SECOND
                );
                self.fail(ctx, &msg);
            }
            "Subscribe" => {
                let parsed = (|| {
                    let servers =
                        string_list(body.get("Servers")).map_err(|e| format!("Servers {e}"))?;
                    let events =
                        string_list(body.get("Events")).map_err(|e| format!("Events {e}"))?;
                    let filters =
                        string_list(body.get("Filters")).map_err(|e| format!("Filters {e}"))?;
                    Subscription::new(servers, events, filters.unwrap_or_default())
                        .map_err(|e| e.to_string())
                })();
                match parsed {
                    Ok(subscription) => {
                        self.registry.do_send(Subscribe {
                            session: self.id,
                            subscription,
                        });
                        self.ok(ctx, "Subscribe", Map::new());
                    }
                    Err(e) => self.fail(ctx, &format!("Subscribe: {e}")),
                }
            }
            "Resume" => match crate::ws::resume::parse_since(body.get("Since")) {
                // The registry answers, after the replayed frames.
                Ok(since) => self.registry.do_send(Resume {
                    session: self.id,
                    since,
                    action_id: self.proxy_id.clone(),
                    join: None,
                }),
                Err(e) => self.fail(ctx, &format!("Resume: {e}")),
            },
            "ListSessions" if self.admin_only(ctx, name) => {
                self.registry
                    .send(ListSessions)
                    .into_actor(self)
                    .map(|res, act, ctx| match res {
                        Ok(sessions) => {
                            let mut m = Map::new();
                            m.insert("Sessions".into(), json!(sessions));
                            act.ok(ctx, "ListSessions", m);
                        }
                        Err(_) => act.fail(ctx, "registry unavailable"),
                    })
                    .wait(ctx);
            }
            "AddServer" if self.admin_only(ctx, name) => {
                let settings = body
                    .get("Server")
                    .cloned()
                    .ok_or_else(|| "AddServer needs \"Server\": {…}".to_string())
                    .and_then(crate::config::runtime_server);
                let settings = match settings {
                    Ok(s) => Arc::new(s),
                    Err(e) => return self.fail(ctx, &format!("AddServer: {e}")),
                };
                let id = settings.id;
                self.registry
                    .send(AddServer { settings })
                    .into_actor(self)
                    .map(move |res, act, ctx| match res {
                        Ok(Ok(())) => {
                            let mut m = Map::new();
                            m.insert("ServerID".into(), json!(id));
                            act.ok(ctx, "AddServer", m);
                        }
                        Ok(Err(e)) => act.fail(ctx, &format!("AddServer: {e}")),
                        Err(_) => act.fail(ctx, "registry unavailable"),
                    })
                    .wait(ctx);
            }
            "DropServer" if self.admin_only(ctx, name) => {
                let id = match body.get("AMIServerID").or_else(|| body.get("ServerID")) {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.parse().ok(),
                    _ => None,
                };
                let Some(id) = id.and_then(|i| u32::try_from(i).ok()) else {
                    return self.fail(ctx, "DropServer needs AMIServerID");
                };
                self.registry
                    .send(DropServer { id })
                    .into_actor(self)
                    .map(move |res, act, ctx| match res {
                        Ok(Ok(())) => {
                            let mut m = Map::new();
                            m.insert("ServerID".into(), json!(id));
                            act.ok(ctx, "DropServer", m);
                        }
                        Ok(Err(e)) => act.fail(ctx, &format!("DropServer: {e}")),
                        Err(_) => act.fail(ctx, "registry unavailable"),
                    })
                    .wait(ctx);
            }
            "ListSessions" | "AddServer" | "DropServer" => {}
            other => self.fail(ctx, &format!("Unknown ProxyAction {other:?}")),
        }
    }
}
