//! WebSocket side: the session actor, its outbound byte accounting, and the JSON protocol.

pub mod outbound;
pub mod protocol;
mod proxy;
pub mod resume;
pub mod session;
