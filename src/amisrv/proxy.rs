//! astmanproxy's ProxyActions on the AMI listener (`Action: Proxy` or `Action: ProxyAction`,
//! with `ProxyAction: <name>`): ListServers, ListSessions (admin), AddServer / DropServer
//! (admin), SetOutputFormat, ListIOHandlers, SetAutoFilter, Logoff. Every reply is
//! `Response:` first with the request's ActionID, so AMI libraries match it like any response.
//! Also the output formats: standard AMI text, xml, csv and json lines.

use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use serde_json::{json, Map, Value};

use super::login;
use super::render::render_reply;
use super::session::AmiSession;
use crate::ami::Packet;
use crate::metrics::Metrics;
use crate::registry::session::Format;
use crate::registry::{AddServer, DropServer, ListServers, ListSessions, SetFormat};
use crate::ws::protocol::encode_reply;

/// `SetOutputFormat`: how an AMI session's packets are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// AMI text, as Asterisk writes it.
    Standard,
    /// astmanproxy's `<AsteriskManagerOutput>` documents, one `<Name Value="…"/>` per header.
    Xml,
    /// One line per packet: every header as a quoted `"Name: value"` field.
    Csv,
    /// The SPEC §4 JSON envelope, one object per line.
    Json,
}

/// The formats `ListIOHandlers` names.
const HANDLERS: [&str; 4] = ["standard", "xml", "csv", "json"];

impl OutputFormat {
    pub fn parse(name: &str) -> Option<OutputFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "standard" => Some(OutputFormat::Standard),
            "xml" => Some(OutputFormat::Xml),
            "csv" => Some(OutputFormat::Csv),
            "json" => Some(OutputFormat::Json),
            _ => None,
        }
    }

    /// What the registry renders for this session.
    pub fn registry_format(self) -> Format {
        match self {
            OutputFormat::Json => Format::Json,
            _ => Format::Ami,
        }
    }

    /// JSON objects are one per line.
    pub fn newline(self) -> bool {
        self == OutputFormat::Json
    }

    /// Frames the registry rendered for this session, in this session's format. Standard and
    /// json are shared as rendered; xml and csv are converted per session (legacy formats).
    pub fn convert(self, frames: Arc<[ByteString]>) -> Arc<[ByteString]> {
        match self {
            OutputFormat::Standard | OutputFormat::Json => frames,
            _ => frames.iter().map(|f| self.convert_one(f)).collect(),
        }
    }

    /// One of amihub's own AMI-text replies, in this session's format.
    pub fn convert_own(self, frame: ByteString) -> ByteString {
        match self {
            OutputFormat::Standard => frame,
            OutputFormat::Json => {
                let p = parse(&frame);
                let fields: Vec<(&str, &str)> = p.headers().collect();
                encode_reply(None, &fields)
            }
            _ => self.convert_one(&frame),
        }
    }

    fn convert_one(self, frame: &ByteString) -> ByteString {
        let p = parse(frame);
        let mut out = String::with_capacity(frame.len() * 2);
        let lines = p.headers().chain(p.raw_lines().map(|l| ("Output", l)));
        match self {
            OutputFormat::Xml => {
                out.push_str("<AsteriskManagerOutput>\r\n");
                for (name, value) in lines {
                    out.push('<');
                    out.push_str(&xml_name(name));
                    out.push_str(" Value=\"");
                    push_xml_escaped(&mut out, value);
                    out.push_str("\"/>\r\n");
                }
                out.push_str("</AsteriskManagerOutput>\r\n");
            }
            _ => {
                for (i, (name, value)) in lines.enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(&name.replace('"', "\"\""));
                    out.push_str(": ");
                    out.push_str(&value.replace('"', "\"\""));
                    out.push('"');
                }
                out.push_str("\r\n");
            }
        }
        ByteString::from(out)
    }
}

fn parse(frame: &str) -> Packet {
    super::render::parse_rendered(frame)
}

/// A header name as an XML element name: characters XML names cannot hold become `_`.
fn xml_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

fn push_xml_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => out.push_str(&format!("&#{};", c as u32)),
            c => out.push(c),
        }
    }
}

impl AmiSession {
    fn proxy_ok(&self, id: Option<&str>, name: &str, extra: &[(&str, &str)]) {
        let mut fields = vec![("Response", "Success"), ("ProxyAction", name)];
        fields.extend_from_slice(extra);
        self.write(render_reply(&fields, id, None));
    }

    fn admin_only(&self, id: Option<&str>, name: &str) -> bool {
        if self.user.as_ref().is_some_and(|u| u.identity.rights.admin) {
            return true;
        }
        Metrics::inc(&self.shared.metrics.actions_refused_total);
        log::warn!(
            "ami session {}: refused ProxyAction {name} (admin only)",
            self.id
        );
        self.error(id, login::DENIED);
        false
    }

    pub(super) fn on_proxy(&mut self, p: &Packet, ctx: &mut Context<Self>) {
        let id = p.action_id().map(str::to_string);
        let name = p.get("ProxyAction").unwrap_or("").to_string();
        let Some(user) = self.user.clone() else {
            return;
        };
        let registry = self.shared.registry.clone();
        match name.to_ascii_lowercase().as_str() {
            "listservers" => {
                let rights = Some(user.identity.rights.clone());
                registry
                    .send(ListServers { rights })
                    .into_actor(self)
                    .map(move |res, act, _| {
                        let servers = res.unwrap_or_default();
                        let rows: Vec<[String; 4]> = servers
                            .iter()
                            .map(|s| {
                                [
                                    s.name.clone(),
                                    s.id.to_string(),
                                    s.status.to_string(),
                                    format!("{}:{}", s.host, s.port),
                                ]
                            })
                            .collect();
                        let mut extra = Vec::new();
                        for r in &rows {
                            extra.extend([
                                ("Server", r[0].as_str()),
                                ("ServerID", r[1].as_str()),
                                ("Status", r[2].as_str()),
                                ("Host", r[3].as_str()),
                            ]);
                        }
                        act.proxy_ok(id.as_deref(), "ListServers", &extra);
                    })
                    .wait(ctx);
            }
            "listsessions" if self.admin_only(id.as_deref(), &name) => {
                registry
                    .send(ListSessions)
                    .into_actor(self)
                    .map(move |res, act, _| {
                        let rows: Vec<String> = res
                            .unwrap_or_default()
                            .iter()
                            .map(|s| {
                                format!(
                                    "{} user={} queued={} pending={}",
                                    s.id, s.user, s.queued_bytes, s.pending_actions
                                )
                            })
                            .collect();
                        let extra: Vec<(&str, &str)> =
                            rows.iter().map(|r| ("Session", r.as_str())).collect();
                        act.proxy_ok(id.as_deref(), "ListSessions", &extra);
                    })
                    .wait(ctx);
            }
            "addserver" if self.admin_only(id.as_deref(), &name) => {
                let mut body = Map::new();
                for (header, value) in p.headers() {
                    let key = header.to_ascii_lowercase();
                    if matches!(key.as_str(), "action" | "actionid" | "proxyaction") {
                        continue;
                    }
                    let v = match key.as_str() {
                        "id" | "port" | "ping_interval_s" | "ping_timeout_s" => value
                            .parse::<u64>()
                            .map_or_else(|_| json!(value), |n| json!(n)),
                        "tls" | "tls_verify" | "enabled" => json!(
                            value.eq_ignore_ascii_case("true")
                                || value.eq_ignore_ascii_case("yes")
                                || value == "1"
                        ),
                        _ => json!(value),
                    };
                    body.insert(key, v);
                }
                let settings = match crate::config::runtime_server(Value::Object(body)) {
                    Ok(s) => Arc::new(s),
                    Err(e) => return self.error(id.as_deref(), &format!("AddServer: {e}")),
                };
                let sid = settings.id.to_string();
                registry
                    .send(AddServer { settings })
                    .into_actor(self)
                    .map(move |res, act, _| match res {
                        Ok(Ok(())) => {
                            act.proxy_ok(id.as_deref(), "AddServer", &[("ServerID", &sid)])
                        }
                        Ok(Err(e)) => act.error(id.as_deref(), &format!("AddServer: {e}")),
                        Err(_) => act.error(id.as_deref(), "registry unavailable"),
                    })
                    .wait(ctx);
            }
            "dropserver" if self.admin_only(id.as_deref(), &name) => {
                let wanted = p
                    .get("Server")
                    .or_else(|| p.get("ServerID"))
                    .unwrap_or("")
                    .to_string();
                let fut = async move {
                    let servers = registry
                        .send(ListServers { rights: None })
                        .await
                        .map_err(|e| e.to_string())?;
                    let server = servers
                        .iter()
                        .find(|s| s.id.to_string() == wanted || s.name == wanted)
                        .ok_or_else(|| format!("unknown server {wanted:?}"))?;
                    let sid = server.id;
                    registry
                        .send(DropServer { id: sid })
                        .await
                        .map_err(|e| e.to_string())??;
                    Ok::<u32, String>(sid)
                };
                fut.into_actor(self)
                    .map(move |res, act, _| match res {
                        Ok(sid) => act.proxy_ok(
                            id.as_deref(),
                            "DropServer",
                            &[("ServerID", &sid.to_string())],
                        ),
                        Err(e) => act.error(id.as_deref(), &format!("DropServer: {e}")),
                    })
                    .wait(ctx);
            }
            "setoutputformat" => {
                let wanted = p.get("OutputFormat").unwrap_or("");
                let Some(format) = OutputFormat::parse(wanted) else {
                    let msg = format!("Unknown OutputFormat {wanted:?} (standard, xml, csv, json)");
                    return self.error(id.as_deref(), &msg);
                };
                // The reply is still in the old format; everything after it in the new one.
                self.proxy_ok(
                    id.as_deref(),
                    "SetOutputFormat",
                    &[("OutputFormat", wanted)],
                );
                self.output = format;
                self.shared.registry.do_send(SetFormat {
                    session: self.id,
                    format: format.registry_format(),
                });
            }
            "listiohandlers" => {
                let extra: Vec<(&str, &str)> = HANDLERS.iter().map(|h| ("IOHandler", *h)).collect();
                self.proxy_ok(id.as_deref(), "ListIOHandlers", &extra);
            }
            "setautofilter" => {
                let on = p
                    .get("AutoFilter")
                    .is_some_and(|v| v.eq_ignore_ascii_case("on"));
                self.auto_filter = on;
                self.resubscribe();
                let state = if on { "on" } else { "off" };
                self.proxy_ok(id.as_deref(), "SetAutoFilter", &[("AutoFilter", state)]);
            }
            "logoff" => {
                self.write(login::goodbye(id.as_deref()));
                self.close(ctx);
            }
            "listsessions" | "addserver" | "dropserver" => {}
            _ => {
                let msg = format!("Unknown ProxyAction {name:?}");
                self.error(id.as_deref(), &msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_values_and_names_without_truncating() {
        let frame = ByteString::from(
            "Event: X\r\nChanVariable(PJSIP/1): a=\"<&>\"\r\nLong: ".to_string()
                + &"y".repeat(5000)
                + "\r\n\r\n",
        );
        let out = OutputFormat::Xml.convert_one(&frame);
        assert!(out.starts_with("<AsteriskManagerOutput>\r\n<Event Value=\"X\"/>\r\n"));
        assert!(out.contains("<ChanVariable_PJSIP_1_ Value=\"a=&quot;&lt;&amp;&gt;&quot;\"/>"));
        assert!(out.contains(&"y".repeat(5000)));
        assert!(out.ends_with("</AsteriskManagerOutput>\r\n"));
    }

    #[test]
    fn csv_is_one_quoted_line_per_packet() {
        let frame = ByteString::from("Response: Success\r\nMessage: say \"hi\"\r\n\r\n");
        assert_eq!(
            &*OutputFormat::Csv.convert_one(&frame),
            "\"Response: Success\",\"Message: say \"\"hi\"\"\"\r\n"
        );
    }

    #[test]
    fn json_replies_are_type_8_envelopes() {
        let out = OutputFormat::Json.convert_own(login::error(Some("a"), "no"));
        assert_eq!(
            &*out,
            "{\"type\":8,\"data\":{\"Response\":\"Error\",\"ActionID\":\"a\",\"Message\":\"no\"}}"
        );
    }
}
