//! The Originate action's call: a `Local/exten@context` pair (or a single `PJSIP/…` channel)
//! answered at once, with the event sequence of capture 10 trimmed of dialplan noise, and
//! `OriginateResponse` carrying the ActionID when the action was async. A Local call to a
//! queue's name joins that queue; `Application: Wait` + `Data: n` lasts n seconds.

use std::time::Duration;

use rand::Rng;

use super::model::{Call, NewChan, Step};
use super::queue::join_queue;
use super::wire::Msg;
use super::world::World;

/// Longest `Wait(n)` simulated, in seconds.
const MAX_WAIT_S: f64 = 86_400.0;

/// What an Originate action asked for.
pub(crate) struct OriginateReq {
    pub(crate) channel: String,
    pub(crate) action_id: Option<String>,
    pub(crate) is_async: bool,
    /// `Application` form when set; otherwise `Context`/`Exten`.
    pub(crate) application: Option<String>,
    pub(crate) data: String,
    pub(crate) context: String,
    pub(crate) exten: String,
    /// (number, name) from `CallerID: Name <number>`.
    pub(crate) caller_id: (String, String),
}

impl OriginateReq {
    /// Reads the action's headers; `channel` is the already checked `Channel`.
    pub(crate) fn from_packet(p: &crate::ami::Packet, channel: &str) -> OriginateReq {
        let get = |n: &str| p.get(n).unwrap_or("").to_string();
        OriginateReq {
            channel: channel.to_string(),
            action_id: p.action_id().map(str::to_string),
            is_async: super::wire::is_true(p.get("Async")),
            application: p.get("Application").map(str::to_string),
            data: get("Data"),
            context: get("Context"),
            exten: get("Exten"),
            caller_id: parse_caller_id(p.get("CallerID").unwrap_or("")),
        }
    }
}

/// `Name <number>` → (number, name); a bare value is the number.
fn parse_caller_id(v: &str) -> (String, String) {
    match (v.find('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => {
            let name = v[..a].trim().trim_matches('"').to_string();
            (v[a + 1..b].trim().to_string(), name)
        }
        _ => (v.trim().to_string(), String::new()),
    }
}

/// Channels the simulated PBX cannot reach: unknown technologies and resources starting `999`.
pub(crate) fn originate_fails(channel: &str) -> bool {
    match channel.split_once('/') {
        Some((tech, resource)) => {
            !["Local", "PJSIP", "SIP", "IAX2", "DAHDI"].contains(&tech)
                || resource.is_empty()
                || resource.starts_with("999")
        }
        None => true,
    }
}

/// Places the call and writes its events.
pub(crate) fn originate(w: &mut World, req: OriginateReq) {
    let Some((tech, resource)) = req
        .channel
        .split_once('/')
        .filter(|_| !originate_fails(&req.channel))
    else {
        if req.is_async {
            originate_response(w, &req, None);
        }
        return;
    };
    let (exten, ctx) = resource.split_once('@').unwrap_or((resource, "default"));
    let ctx = ctx.split('/').next().unwrap_or(ctx);
    let cid = (req.caller_id.0.as_str(), req.caller_id.1.as_str());
    let app = match &req.application {
        Some(a) => (a.as_str(), req.data.as_str()),
        None => ("", ""),
    };
    // The outgoing side runs the application, or continues at Context/Exten.
    let (one_ctx, one_exten) = match req.application {
        Some(_) => (ctx, exten),
        None => (req.context.as_str(), req.exten.as_str()),
    };
    let device = format!("{tech}/{resource}");
    let seq = w.next_id();
    let mut spec = NewChan {
        name: format!("{tech}/{resource}-{seq:08x}"),
        state: 0,
        cid,
        connected: cid,
        context: one_ctx,
        exten: one_exten,
        app,
        device: Some(device.clone()),
        linkedid: None,
    };
    let (first, second) = if tech == "Local" {
        spec.name = format!("Local/{exten}@{ctx}-{seq:08x};1");
        let one = w.new_chan(spec);
        let linkedid = w.chans.get(&one).map(|c| c.linkedid.clone());
        let two = w.new_chan(NewChan {
            name: format!("Local/{exten}@{ctx}-{seq:08x};2"),
            state: 4,
            cid,
            connected: cid,
            context: ctx,
            exten,
            app: ("Answer", ""),
            device: Some(device.clone()),
            linkedid,
        });
        let halves = [("LocalOne", one.as_str()), ("LocalTwo", two.as_str())];
        let local = [
            ("Context", ctx),
            ("Exten", exten),
            ("LocalOptimization", "Yes"),
        ];
        w.event_of("LocalBridge", "call", &halves, &local);
        w.event_of(
            "DialBegin",
            "call",
            &[("Dest", &one)],
            &[("DialString", resource)],
        );
        w.set_state(&two, 6);
        (one, Some(two))
    } else {
        let one = w.new_chan(spec);
        w.set_state(&one, 5);
        (one, None)
    };
    w.device_state(&device, "INUSE");
    originate_response(w, &req, Some(&first));
    w.set_state(&first, 6);
    if second.is_some() {
        w.event_of(
            "DialEnd",
            "call",
            &[("Dest", &first)],
            &[("DialStatus", "ANSWER")],
        );
    }
    let id = w.next_id();
    let mut chans = vec![first];
    chans.extend(second.clone());
    w.calls.insert(
        id,
        Call {
            chans,
            ..Call::default()
        },
    );
    super::media::start(w, id);
    let queue = w.queues.iter().position(|q| q.name == exten);
    if let (Some(q), Some(two)) = (queue, second) {
        join_queue(w, id, q, &two);
        return;
    }
    let wait = match req.application.as_deref() {
        Some(a) if a.eq_ignore_ascii_case("wait") => req.data.trim().parse::<f64>().ok(),
        _ => None,
    };
    let secs = wait.map_or_else(|| w.rng.gen_range(3.0..40.0), |s| s.clamp(0.0, MAX_WAIT_S));
    w.schedule(Duration::from_secs_f64(secs), Step::Hangup(id));
}

fn originate_response(w: &mut World, req: &OriginateReq, chan: Option<&str>) {
    let mut m = Msg::event("OriginateResponse", "call");
    m.aid(req.action_id.as_deref())
        .h(
            "Response",
            if chan.is_some() { "Success" } else { "Failure" },
        )
        .h("Channel", chan.unwrap_or(&req.channel));
    match &req.application {
        Some(app) => m.h("Application", app).h("Data", &req.data),
        None => m.h("Context", &req.context).h("Exten", &req.exten),
    };
    let uniqueid = chan
        .and_then(|c| w.chans.get(c))
        .map(|c| c.uniqueid.clone());
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "<unknown>".to_string()
        } else {
            s.to_string()
        }
    };
    m.h("Reason", if chan.is_some() { 4 } else { 0 })
        .h("Uniqueid", uniqueid.as_deref().unwrap_or("<null>"))
        .h("CallerIDNum", or_unknown(&req.caller_id.0))
        .h("CallerIDName", or_unknown(&req.caller_id.1));
    w.emit(m);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_id_forms() {
        assert_eq!(
            parse_caller_id("AMI Test <5551000>"),
            ("5551000".into(), "AMI Test".into())
        );
        assert_eq!(parse_caller_id("\"Q\" <1>"), ("1".into(), "Q".into()));
        assert_eq!(parse_caller_id("42"), ("42".into(), String::new()));
    }

    #[test]
    fn unreachable_channels() {
        assert!(originate_fails("Local/999@demo"));
        assert!(originate_fails("Bogus/1"));
        assert!(originate_fails("nochannel"));
        assert!(!originate_fails("Local/100@demo"));
        assert!(!originate_fails("PJSIP/101"));
    }
}
