//! What a client asks to resume from (SPEC §10): the `Since` object of `{"ProxyAction":"Resume"}`
//! and the `?resume=<id>:<epoch>:<offset>,…` query parameter of the WebSocket URL, parsed into
//! positions per server. Pure parsing; the registry does the replay.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::registry::history::Position;

/// Servers one request may name (well above any real deployment; bounds the work per request).
pub const MAX_SERVERS: usize = 1024;
/// Longest epoch accepted (ours are 16 characters).
const MAX_EPOCH: usize = 128;

/// Why a resume request was refused (a type-8 error, or HTTP 400 for the URL form).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("Since must be an object of \"<server_id>\": {{\"epoch\": \"…\", \"offset\": N}}")]
    NotObject,
    #[error("{0:?} is not a server id")]
    BadServer(String),
    #[error("server {0}: needs \"epoch\" (a string) and \"offset\" (a non-negative integer)")]
    BadPosition(u32),
    #[error("{0:?} is not <server_id>:<epoch>:<offset>")]
    BadItem(String),
    #[error("more than {MAX_SERVERS} servers")]
    TooMany,
}

fn server_id(text: &str) -> Result<u32, ResumeError> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ResumeError::BadServer(text.to_string()))
}

fn epoch_ok(epoch: &str) -> bool {
    !epoch.is_empty() && epoch.len() <= MAX_EPOCH && !epoch.contains(['\r', '\n'])
}

/// `{"1": {"epoch": "…", "offset": 42}, …}`; an offset may also be a numeric string.
pub fn parse_since(v: Option<&Value>) -> Result<BTreeMap<u32, Position>, ResumeError> {
    let Some(Value::Object(map)) = v else {
        return Err(ResumeError::NotObject);
    };
    if map.len() > MAX_SERVERS {
        return Err(ResumeError::TooMany);
    }
    let mut out = BTreeMap::new();
    for (key, pos) in map {
        let id = server_id(key)?;
        let epoch = pos
            .get("epoch")
            .and_then(Value::as_str)
            .filter(|e| epoch_ok(e));
        let offset = match pos.get("offset") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let (Some(epoch), Some(offset)) = (epoch, offset) else {
            return Err(ResumeError::BadPosition(id));
        };
        let epoch = epoch.to_string();
        out.insert(id, Position { epoch, offset });
    }
    Ok(out)
}

/// `1:9f3c…:42,2:77aa…:7` (already percent-decoded); empty means nothing to resume.
pub fn parse_query(text: &str) -> Result<BTreeMap<u32, Position>, ResumeError> {
    let mut out = BTreeMap::new();
    for item in text.split(',').filter(|i| !i.trim().is_empty()) {
        if out.len() >= MAX_SERVERS {
            return Err(ResumeError::TooMany);
        }
        let bad = || ResumeError::BadItem(item.chars().take(200).collect());
        let (id, rest) = item.split_once(':').ok_or_else(bad)?;
        let (epoch, offset) = rest.rsplit_once(':').ok_or_else(bad)?;
        let id = server_id(id)?;
        let offset = offset.trim().parse::<u64>().map_err(|_| bad())?;
        if !epoch_ok(epoch) {
            return Err(bad());
        }
        let epoch = epoch.to_string();
        out.insert(id, Position { epoch, offset });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pos(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn since_object_parses_numbers_and_numeric_strings() {
        let v = json!({"1": {"epoch": "ab", "offset": 5}, "3": {"epoch": "cd", "offset": "0"}});
        let got = parse_since(Some(&v)).unwrap();
        assert_eq!(got, BTreeMap::from([(1, pos("ab", 5)), (3, pos("cd", 0))]));
    }

    #[test]
    fn bad_since_objects_are_refused_with_a_reason() {
        assert_eq!(parse_since(None), Err(ResumeError::NotObject));
        assert_eq!(parse_since(Some(&json!([1]))), Err(ResumeError::NotObject));
        let bad_id = json!({"x": {"epoch": "ab", "offset": 1}});
        assert!(matches!(
            parse_since(Some(&bad_id)),
            Err(ResumeError::BadServer(_))
        ));
        for p in [
            json!({"epoch": "ab"}),
            json!({"epoch": "ab", "offset": -1}),
            json!({"epoch": "ab", "offset": 1.5}),
            json!({"epoch": 7, "offset": 1}),
            json!({"epoch": "", "offset": 1}),
            json!({"epoch": "a\nb", "offset": 1}),
        ] {
            let v = json!({ "2": p });
            assert_eq!(
                parse_since(Some(&v)),
                Err(ResumeError::BadPosition(2)),
                "{v}"
            );
        }
    }

    #[test]
    fn query_form_parses_every_server() {
        let got = parse_query("1:ab:42,2:c:d:7,").unwrap();
        assert_eq!(
            got,
            BTreeMap::from([(1, pos("ab", 42)), (2, pos("c:d", 7))])
        );
        assert_eq!(parse_query("").unwrap(), BTreeMap::new());
        for bad in ["1:ab", "x:ab:1", "1::1", "1:ab:-1", "0:ab:1", "1:ab:x"] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
    }
}
