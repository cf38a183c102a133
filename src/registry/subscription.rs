//! What a session asked to receive (`{"ProxyAction":"Subscribe",…}`): servers, event names, and
//! Asterisk `eventfilter` rules. Within what the user's rights already allow.

use regex::Regex;

use crate::ami::Packet;
use crate::auth::Allow;

/// Rules at most per subscription, and the compiled size of each.
pub const MAX_FILTERS: usize = 64;
const MAX_REGEX_BYTES: usize = 64 * 1024;
/// Longest rule text: compile cost grows with it (`(?i)[a-z]{200}` costs about 0.4 ms).
pub const MAX_FILTER_BYTES: usize = 128;
/// Memory of each rule's lazy DFA cache, so matching stays bounded too.
const MAX_DFA_BYTES: usize = 256 * 1024;

/// One `eventfilter` rule: `Header: regex` allows, `!Header: regex` denies.
#[derive(Debug, Clone)]
pub struct Filter {
    pub deny: bool,
    pub regex: Regex,
}

/// A session's subscription.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    pub servers: Option<Allow>,
    pub events: Option<Allow>,
    pub filters: Vec<Filter>,
    /// Asterisk event classes an AMI session asked for (`Events:` at login, `Action: Events`),
    /// matched against an event's `Privilege:`: None = every class, an empty set = events off.
    pub classes: Option<Allow>,
}

/// Why a Subscribe was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("{field} must be a list of strings")]
    NotAList { field: &'static str },
    #[error("at most {MAX_FILTERS} filters")]
    TooManyFilters,
    #[error("filter of {0} bytes is longer than {MAX_FILTER_BYTES}")]
    FilterTooLong(usize),
    #[error("invalid filter {filter:?}: {message}")]
    BadFilter { filter: String, message: String },
}

impl Subscription {
    /// Builds from the lists of a Subscribe message (None = no restriction on that axis).
    pub fn new(
        servers: Option<Vec<String>>,
        events: Option<Vec<String>>,
        filters: Vec<String>,
    ) -> Result<Subscription, SubscribeError> {
        if filters.len() > MAX_FILTERS {
            return Err(SubscribeError::TooManyFilters);
        }
        if let Some(f) = filters.iter().find(|f| f.len() > MAX_FILTER_BYTES) {
            return Err(SubscribeError::FilterTooLong(f.len()));
        }
        let filters = filters
            .into_iter()
            .map(|f| {
                let (deny, pattern) = match f.strip_prefix('!') {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, f.clone()),
                };
                regex::RegexBuilder::new(&pattern)
                    .size_limit(MAX_REGEX_BYTES)
                    .dfa_size_limit(MAX_DFA_BYTES)
                    .build()
                    .map(|regex| Filter { deny, regex })
                    .map_err(|e| SubscribeError::BadFilter {
                        filter: f,
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Subscription {
            servers: servers.map(|s| Allow::from_list(&s)),
            events: events.map(|e| Allow::from_list(&e)),
            filters,
            classes: None,
        })
    }

    /// Parses an AMI `Events:` / `EventMask:` value: `on`, `off`, or a class list.
    pub fn set_event_mask(&mut self, mask: &str) {
        let mask = mask.trim();
        self.classes = if mask.eq_ignore_ascii_case("on") || mask.eq_ignore_ascii_case("all") {
            None
        } else if mask.eq_ignore_ascii_case("off") || mask.is_empty() {
            Some(Allow::from_list::<&str>(&[]))
        } else {
            let list: Vec<&str> = mask.split(',').map(str::trim).collect();
            Some(Allow::from_list(&list))
        };
    }

    /// True when this session takes no events (`Events: off`).
    pub fn events_off(&self) -> bool {
        matches!(&self.classes, Some(Allow::Only(set)) if set.is_empty())
    }

    /// True when the subscription does not narrow events at all.
    pub fn events_all(&self) -> bool {
        self.events.as_ref().is_none_or(Allow::is_all)
            && self.filters.is_empty()
            && self.classes.is_none()
    }

    pub fn sees_server(&self, id: u32, name: &str) -> bool {
        self.servers
            .as_ref()
            .is_none_or(|s| s.allows(name) || s.allows(&id.to_string()))
    }

    /// Event names, then Asterisk's precedence: with allow rules an event must match one of
    /// them; then any matching deny rule drops it. A rule matches any one `Header: value` line.
    pub fn admits(&self, p: &Packet) -> bool {
        if let (Some(events), Some(name)) = (&self.events, p.event()) {
            if !events.allows(name) {
                return false;
            }
        }
        if let Some(classes) = &self.classes {
            // An event without Privilege belongs to no class: it goes to sessions with events on.
            let privilege = p.get("Privilege");
            let admitted = match privilege {
                Some(list) => list
                    .split(',')
                    .any(|c| c.trim() != "all" && classes.allows(c.trim())),
                None => !self.events_off(),
            };
            if p.event().is_some() && !admitted {
                return false;
            }
        }
        if self.filters.is_empty() {
            return true;
        }
        let mut line = String::new();
        let mut matches = |re: &Regex| {
            p.headers().any(|(n, v)| {
                line.clear();
                line.push_str(n);
                line.push_str(": ");
                line.push_str(v);
                re.is_match(&line)
            })
        };
        let mut allows = self.filters.iter().filter(|f| !f.deny).peekable();
        if allows.peek().is_some() && !allows.any(|f| matches(&f.regex)) {
            return false;
        }
        !self
            .filters
            .iter()
            .filter(|f| f.deny)
            .any(|f| matches(&f.regex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, channel: &str) -> Packet {
        Packet::from_headers([("Event", name), ("Channel", channel)])
    }

    fn sub(events: Option<&[&str]>, filters: &[&str]) -> Subscription {
        Subscription::new(
            None,
            events.map(|e| e.iter().map(|s| s.to_string()).collect()),
            filters.iter().map(|s| s.to_string()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn no_rules_admit_everything() {
        assert!(sub(None, &[]).admits(&ev("Newchannel", "PJSIP/1")));
        assert!(sub(None, &[]).events_all());
    }

    #[test]
    fn allow_rules_are_a_whitelist() {
        let s = sub(None, &["Event: Newchannel", "Event: Hangup"]);
        assert!(s.admits(&ev("Newchannel", "x")));
        assert!(s.admits(&ev("Hangup", "x")));
        assert!(!s.admits(&ev("VarSet", "x")));
    }

    #[test]
    fn deny_rules_are_a_blacklist() {
        let s = sub(None, &["!Event: VarSet"]);
        assert!(!s.admits(&ev("VarSet", "x")));
        assert!(s.admits(&ev("Newchannel", "x")));
    }

    #[test]
    fn allow_is_applied_before_deny() {
        let s = sub(None, &["Event: Newchannel", "!Channel: Local/"]);
        assert!(s.admits(&ev("Newchannel", "PJSIP/100-1")));
        assert!(!s.admits(&ev("Newchannel", "Local/100@demo-1")));
        assert!(!s.admits(&ev("Hangup", "PJSIP/100-1")));
    }

    #[test]
    fn event_names_and_servers() {
        let s =
            Subscription::new(Some(vec!["2".into()]), Some(vec!["hangup".into()]), vec![]).unwrap();
        assert!(s.admits(&ev("Hangup", "x")) && !s.admits(&ev("Newchannel", "x")));
        assert!(s.sees_server(2, "b") && !s.sees_server(1, "a"));
    }

    #[test]
    fn event_mask_matches_privilege_classes() {
        let call = Packet::from_headers([("Event", "Newchannel"), ("Privilege", "call,all")]);
        let user = Packet::from_headers([("Event", "UserEvent"), ("Privilege", "user,all")]);
        let mut s = Subscription::default();
        s.set_event_mask("user");
        assert!(s.admits(&user) && !s.admits(&call) && !s.events_all());
        s.set_event_mask("off");
        assert!(s.events_off() && !s.admits(&user));
        s.set_event_mask("on");
        assert!(s.admits(&call) && s.events_all());
    }

    #[test]
    fn bad_regex_and_too_many_rules_are_refused() {
        assert!(matches!(
            Subscription::new(None, None, vec!["Event: (".into()]),
            Err(SubscribeError::BadFilter { .. })
        ));
        let long = format!("Event: {}", "x".repeat(MAX_FILTER_BYTES));
        assert_eq!(
            Subscription::new(None, None, vec![long]).unwrap_err(),
            SubscribeError::FilterTooLong(MAX_FILTER_BYTES + 7)
        );
        let many = vec!["Event: x".to_string(); MAX_FILTERS + 1];
        assert_eq!(
            Subscription::new(None, None, many).unwrap_err(),
            SubscribeError::TooManyFilters
        );
    }
}
