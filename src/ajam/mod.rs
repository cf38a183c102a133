//! AJAM, Asterisk's HTTP manager (`/rawman`, `/mxml`, `/manager` and their Digest twins
//! `/arawman`, `/amxml`, `/amanager`), served for every PBX behind amihub (SPEC §9).
//!
//! - Pure: `translate` turns AMI text (what `/rawman` answers verbatim) into the
//!   `<ajax-response>` XML of `/mxml` and the HTML table of `/manager`, by Asterisk's own rules;
//!   `request` turns a request's parameters into the AMI action it asks for; `sessions` makes
//!   session ids and bounds `WaitEvent` queues; `reply` shapes the AMI text a session answers.
//! - Actors: `session` (one per HTTP manager session: a registry front end owning its queue,
//!   subscription and requests in flight) and `directory` (cookie id → session).
//! - `http`: the routes (CSRF rule, parameters, cookie, login, Digest, rendering).
//!
//! Invariants: the pure modules import no actix and no sockets; a session never talks to a PBX
//! actor, only to the registry, which decides what it receives.

pub mod directory;
pub mod http;
mod reply;
mod request;
pub mod session;
mod sessions;
mod translate;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use actix::prelude::*;

pub use directory::Directory;
pub use http::is_ajam_path;
pub use request::{parse_request, AjamRequest, RequestError};
pub use session::Shared;
pub use sessions::{Drained, EventQueue};
pub use translate::{html_document, translate, xml_document, Format, XmlTarget};

/// What the HTTP side holds of AJAM: the cookie-session directory and what sessions share.
#[derive(Clone)]
pub struct Ajam {
    pub directory: Addr<Directory>,
    pub shared: Arc<Shared>,
}

impl Ajam {
    /// Starts the directory, unless `[ajam] enabled = false`.
    pub fn start(state: &crate::http::AppState) -> Option<Ajam> {
        let settings = &state.settings;
        if !settings.ajam.enabled {
            return None;
        }
        let shared = Arc::new(Shared {
            registry: state.registry.clone(),
            settings: settings.ajam.clone(),
            limits: settings.limits.clone(),
            metrics: state.metrics.clone(),
            next_session: state.next_session.clone(),
            budget: state.budget.clone(),
        });
        let directory = Directory::new(shared.clone()).start();
        Some(Ajam { directory, shared })
    }
}
