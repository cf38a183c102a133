//! AJAM, Asterisk's HTTP manager (`/rawman`, `/mxml`, `/manager`): what its bodies look like.
//!
//! This module owns the AJAM body formats and nothing else: `translate` turns AMI text (what
//! `/rawman` answers verbatim) into the `<ajax-response>` XML of `/mxml` and the HTML table of
//! `/manager`, by Asterisk's own rules. Invariant: pure — no actix, no sockets, no sessions; the
//! HTTP front end that will serve these routes decides who may see which packets.

mod translate;

#[cfg(test)]
mod tests;

pub use translate::{html_document, translate, xml_document, Format, XmlTarget};
