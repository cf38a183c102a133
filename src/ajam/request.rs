//! An AJAM request's parameters (query string or form body, already decoded) -> the AMI action
//! it asks for, plus the parameters that are amihub's or AJAM's own and never reach a PBX.

use crate::ami::{Action, ActionError, DEFAULT_MAX_HEADERS};

/// What one `/rawman`, `/mxml` or `/manager` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AjamRequest {
    /// `Action:` first, then every other parameter as a header, in the order given.
    pub action: Action,
    /// `server=<name or id>`: which PBX (removed from the action).
    pub server: Option<String>,
    /// `ajaxdest` / `ajaxobjtype`: the XML response's `id` and element name.
    pub dest: Option<String>,
    pub objtype: Option<String>,
}

/// Why a request's parameters are refused before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("Missing action in request")]
    MissingAction,
    #[error("too many parameters (at most {0})")]
    TooMany(usize),
    #[error(transparent)]
    Header(#[from] ActionError),
}

/// Builds the action from decoded `(name, value)` parameters.
pub fn parse_request<I>(params: I) -> Result<AjamRequest, RequestError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut action: Option<Action> = None;
    let mut rest = Vec::new();
    let (mut server, mut dest, mut objtype) = (None, None, None);
    for (count, (name, value)) in params.into_iter().enumerate() {
        if count >= DEFAULT_MAX_HEADERS {
            return Err(RequestError::TooMany(DEFAULT_MAX_HEADERS));
        }
        match name.to_ascii_lowercase().as_str() {
            "action" if action.is_none() => action = Some(Action::new(&value)),
            "server" => server = Some(value),
            "ajaxdest" => dest = Some(value),
            "ajaxobjtype" => objtype = Some(value),
            _ => rest.push((name, value)),
        }
    }
    let mut action = match action {
        Some(a) if !a.name().is_empty() => a,
        _ => return Err(RequestError::MissingAction),
    };
    for (name, value) in rest {
        action.push(&name, value);
    }
    action.to_bytes()?;
    Ok(AjamRequest {
        action,
        server,
        dest,
        objtype,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_become_headers_in_order_and_ours_are_taken_out() {
        let r = parse_request(params(&[
            ("queue", "support"),
            ("action", "queuestatus"),
            ("Server", "pbx2"),
            ("actionid", "q1"),
            ("Variable", "a=1"),
            ("Variable", "b=2"),
            ("ajaxdest", "d"),
        ]))
        .expect("valid");
        let headers: Vec<_> = r.action.headers().collect();
        assert_eq!(
            headers,
            [
                ("Action", "queuestatus"),
                ("queue", "support"),
                ("actionid", "q1"),
                ("Variable", "a=1"),
                ("Variable", "b=2"),
            ]
        );
        assert_eq!(r.server.as_deref(), Some("pbx2"));
        assert_eq!(r.dest.as_deref(), Some("d"));
        assert_eq!(r.objtype, None);
    }

    #[test]
    fn missing_action_injection_and_floods_are_refused() {
        assert_eq!(
            parse_request(params(&[("queue", "x")])),
            Err(RequestError::MissingAction)
        );
        assert_eq!(
            parse_request(params(&[("action", "")])),
            Err(RequestError::MissingAction)
        );
        assert!(matches!(
            parse_request(params(&[
                ("action", "Ping"),
                ("x", "1\r\nAction: Originate")
            ])),
            Err(RequestError::Header(ActionError::CrLf { .. }))
        ));
        assert!(matches!(
            parse_request(params(&[("action", "Ping\nAction: Originate")])),
            Err(RequestError::Header(ActionError::CrLf { .. }))
        ));
        let flood = (0..=DEFAULT_MAX_HEADERS).map(|i| (format!("h{i}"), String::new()));
        assert_eq!(
            parse_request(std::iter::once(("action".into(), "Ping".into())).chain(flood)),
            Err(RequestError::TooMany(DEFAULT_MAX_HEADERS))
        );
    }
}
