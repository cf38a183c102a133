//! Bytes <-> AMI packets and actions: the sans-I/O Asterisk Manager Interface codec.
//!
//! This module owns the AMI wire format and nothing else:
//! - `codec`: framing ([`find_frame_end`]), parsing ([`parse_packet`]) and the bounded,
//!   incremental [`AmiDecoder`] that turns a byte stream into [`Frame`]s.
//! - `scan`: the resumable line scanner behind both, which enforces the [`Limits`].
//! - `packet`: the immutable incoming [`Packet`] (one `String` plus compact spans).
//! - `action`: the outgoing [`Action`] and its [`AmiEncoder`], which refuse header injection.
//!
//! Invariant: this module is pure. It never imports actix, serde_json, sockets or clocks; it only
//! sees byte slices and `BytesMut` buffers, so every behaviour is testable without I/O.

mod action;
mod codec;
mod packet;
mod scan;

#[cfg(test)]
mod tests;

pub use action::{Action, ActionError, AmiEncoder};
pub use codec::{
    find_frame_end, parse_packet, AmiDecoder, DiscardReason, Frame, Limits, DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_LINE_BYTES, DEFAULT_MAX_PACKET_BYTES,
};
pub use packet::{ast_true, Packet, PacketKind};
