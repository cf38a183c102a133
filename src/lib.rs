//! amihub: one supervised AMI connection per Asterisk PBX, fanned out as JSON to WebSocket clients.
//!
//! Layout (each module owns one concern):
//! - [`auth`]: users, credentials (argon2, tokens, htdigest) and rights; pure checks.
//! - [`config`]: the only reader of config files and environment; validates everything up front.
//! - [`ami`]: bytes <-> AMI packets and actions. Pure: never imports actix, serde_json or sockets.
//! - [`ajam`]: AJAM, Asterisk's HTTP manager (`/rawman`, `/mxml`, `/manager`, Digest twins): pure
//!   body formats and queues, one actor per HTTP manager session, the routes.
//! - [`pbx`]: the supervised connection actor per PBX (login, keepalive, reconnect with backoff).
//! - [`registry`]: server_id -> PBX actor, sessions, ActionID routing, fan-out of shared frames;
//!   `registry::session` is the protocol its front ends (WebSocket, AMI listener) implement.
//! - [`amisrv`]: the AMI listener: AMI clients log in to amihub as to Asterisk.
//! - [`ws`]: WebSocket session actors; `ws::protocol` is the only module that knows the JSON envelope.
//! - [`http`]: routes, static files, TLS listener; no business logic.
//! - [`state`]: live calls, queues and endpoints per PBX, rebuilt after every login; pure.
//! - [`sim`]: the simulated PBX behind `--demo`, reused by tests and the load tool.
//! - [`service`]: wires the actors together and runs until a shutdown signal.
//!
//! Invariants:
//! - `ami` and `sim` never import actix; `ami` never imports serde_json.
//! - Only `registry` decides who receives a packet; sessions never talk to PBX actors directly.
//! - `registry` never imports a front end's actor (`ws::session`, `amisrv::session`).
//! - Every queue between a PBX and a browser is bounded in bytes; a slow browser is cut loose.

pub mod ajam;
pub mod ami;
pub mod amisrv;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod http;
pub mod metrics;
pub mod pbx;
pub mod registry;
pub mod service;
pub mod sim;
pub mod state;
pub mod ws;

pub use service::run;
