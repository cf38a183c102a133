//! Outgoing AMI actions: ordered headers, serialised only when no header can inject a line.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Encoder;

/// An outgoing action: ordered headers, repeats allowed (e.g. several `Variable` headers).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Action {
    headers: Vec<(String, String)>,
}

/// Why an action cannot be written to the wire.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// A CR or LF in a name or value would end the header (or the action) early.
    #[error("header {name:?} contains CR or LF")]
    CrLf { name: String },
    /// An empty name, or one containing ':'.
    #[error("invalid header name {name:?}")]
    BadName { name: String },
    /// No `Action` header: Asterisk would answer "Missing action in request".
    #[error("missing Action header")]
    MissingAction,
}

impl Action {
    /// An action whose first header is `Action: name`.
    pub fn new(name: &str) -> Action {
        Action {
            headers: vec![("Action".to_owned(), name.to_owned())],
        }
    }

    /// Appends a header (builder style).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Action {
        self.push(name, value);
        self
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_owned(), value.into()));
    }

    /// Replaces the value of the first header of this name (ASCII case-insensitive) or appends it.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => *v = value.into(),
            None => self.push(name, value),
        }
    }

    /// Value of the first header of this name, ASCII case-insensitive.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Value of the `Action` header, "" if there is none.
    pub fn name(&self) -> &str {
        self.get("Action").unwrap_or("")
    }

    /// Headers in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Appends `Name: value\r\n` per header and a final `\r\n` to `buf`. Refuses a CR or LF
    /// anywhere, a ':' in a name, an empty name and a missing `Action` header, writing nothing.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), ActionError> {
        let mut len = 2;
        let mut has_action = false;
        for (name, value) in &self.headers {
            if has_cr_lf(name) || has_cr_lf(value) {
                return Err(ActionError::CrLf { name: name.clone() });
            }
            if name.is_empty() || name.contains(':') {
                return Err(ActionError::BadName { name: name.clone() });
            }
            has_action |= name.eq_ignore_ascii_case("Action");
            len += name.len() + value.len() + 4;
        }
        if !has_action {
            return Err(ActionError::MissingAction);
        }
        buf.reserve(len);
        for (name, value) in &self.headers {
            buf.put_slice(name.as_bytes());
            buf.put_slice(b": ");
            buf.put_slice(value.as_bytes());
            buf.put_slice(b"\r\n");
        }
        buf.put_slice(b"\r\n");
        Ok(())
    }

    /// The wire bytes of this action, see [`Action::encode`].
    pub fn to_bytes(&self) -> Result<Bytes, ActionError> {
        let mut buf = BytesMut::new();
        self.encode(&mut buf)?;
        Ok(buf.freeze())
    }
}

fn has_cr_lf(s: &str) -> bool {
    memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_some()
}

/// The `tokio_util` encoder for actions; a refused action is an `InvalidInput` I/O error.
#[derive(Debug, Clone, Copy, Default)]
pub struct AmiEncoder;

impl Encoder<Action> for AmiEncoder {
    type Error = io::Error;

    fn encode(&mut self, action: Action, dst: &mut BytesMut) -> io::Result<()> {
        self.encode(&action, dst)
    }
}

impl Encoder<&Action> for AmiEncoder {
    type Error = io::Error;

    fn encode(&mut self, action: &Action, dst: &mut BytesMut) -> io::Result<()> {
        action
            .encode(dst)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }
}
