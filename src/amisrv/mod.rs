//! The AMI listener (SPEC §8): AMI client libraries connect to amihub as to Asterisk, log in as
//! amihub users, and reach every PBX they may see through the registry's one connection per PBX.
//!
//! - `login`: what a client may do before login (pure).
//! - `render`: AMI text out: the `Server:` header, ActionIDs restored, Asterisk's reply shape (pure).
//! - `session`: the session actor (a registry front end); `proxy`: its ProxyActions and formats.
//! - `writer`: the socket writer task; `listener`: accepts connections (TCP or TLS).
//!
//! Invariants: `login` and `render` never import actix or sockets; a session never talks to a
//! PBX actor, only to the registry.

pub mod listener;
pub mod local;
pub mod login;
mod proxy;
pub mod render;
pub mod session;
mod writer;

pub use listener::AmiListener;
