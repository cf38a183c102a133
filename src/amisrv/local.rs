//! The actions an AMI-speaking session (the AMI listener, an AJAM session) answers itself:
//! `Events`, `Filter` and a `Ping` that names no server, in Asterisk's reply shapes. Pure: the
//! session's subscription in, reply text out; the caller resubscribes and writes the reply.

use std::time::{SystemTime, UNIX_EPOCH};

use bytestring::ByteString;

use super::render::render_reply;
use crate::registry::Subscription;

/// `Events` (`EventMask`: on, off or a class list, as Asterisk; none = off): sets the mask.
pub fn events(subscription: &mut Subscription, mask: Option<&str>, id: Option<&str>) -> ByteString {
    subscription.set_event_mask(mask.unwrap_or("off"));
    let state = if subscription.events_off() {
        "Off"
    } else {
        "On"
    };
    render_reply(&[("Response", "Success"), ("Events", state)], id, None)
}

/// `Filter` (`Operation: Add`, `Filter: [!]Header: regex`), Asterisk's eventfilter: adds the
/// filter, keeping the event classes. Err: the message of the session's error reply, and
/// nothing changed.
pub fn add_filter(
    subscription: &mut Subscription,
    filters: &mut Vec<String>,
    operation: Option<&str>,
    filter: Option<&str>,
    id: Option<&str>,
) -> Result<ByteString, String> {
    let op = operation.unwrap_or("Add");
    let Some(filter) = filter.filter(|_| op.eq_ignore_ascii_case("add")) else {
        return Err("Filter needs Operation: Add and a Filter".into());
    };
    let mut next_filters = filters.clone();
    next_filters.push(filter.to_string());
    let mut next =
        Subscription::new(None, None, next_filters.clone()).map_err(|e| format!("Filter: {e}"))?;
    next.classes = subscription.classes.take();
    *subscription = next;
    *filters = next_filters;
    Ok(render_reply(
        &[
            ("Response", "Success"),
            ("Message", "Filter Added Successfully"),
        ],
        id,
        None,
    ))
}

/// `Ping` for amihub itself: Asterisk's `Pong` with the time as `seconds.micros`.
pub fn pong(id: Option<&str>) -> ByteString {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = format!("{}.{:06}", now.as_secs(), now.subsec_micros());
    render_reply(
        &[
            ("Response", "Success"),
            ("Ping", "Pong"),
            ("Timestamp", &stamp),
        ],
        id,
        None,
    )
}
