//! AJAM, Asterisk's HTTP manager (`/rawman`, `/mxml`, `/manager`): its body formats and session state.
//!
//! This module owns what AJAM is, apart from HTTP: `translate` turns AMI text (what
//! `/rawman` answers verbatim) into the `<ajax-response>` XML of `/mxml` and the HTML table of
//! `/manager`, by Asterisk's own rules; `request` turns a request's parameters into the AMI
//! action it asks for; `sessions` keeps the `mansession_id` sessions and their
//! bounded `WaitEvent` queues. Invariant: pure — no actix, no sockets, no clocks; the
//! HTTP front end that will serve these routes decides who may see which packets.

mod request;
mod sessions;
mod translate;

#[cfg(test)]
mod tests;

pub use request::{parse_request, AjamRequest, RequestError};
pub use sessions::{Drained, SessionError, SessionTable};
pub use translate::{html_document, translate, xml_document, Format, XmlTarget};
