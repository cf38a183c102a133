//! The directory of cookie sessions: `mansession_id` → the session actor. It starts a session
//! for each login (replacing the one the login's own cookie named, if any) and forgets it when
//! the session ends; each session owns its state and its expiry, so this holds addresses only,
//! and nothing at all for clients that never logged in.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::session::{self, AjamSession, End, Ended, SessionError, Shared};
use super::sessions::new_id;
use crate::auth::AmiUser;

/// Start a cookie session; its new id and its address.
#[derive(Message)]
#[rtype(result = "Result<(String, Addr<AjamSession>), SessionError>")]
pub struct Create {
    pub user: AmiUser,
    /// The login's `Events` parameter.
    pub events: Option<String>,
    /// The session the login's cookie named: ended, so a re-login never leaves one behind.
    pub replaces: Option<String>,
}

/// The live session with this id, if any.
#[derive(Message)]
#[rtype(result = "Option<Addr<AjamSession>>")]
pub struct Lookup {
    pub key: String,
}

/// The one directory per process.
pub struct Directory {
    shared: Arc<Shared>,
    map: HashMap<String, Addr<AjamSession>>,
}

impl Directory {
    pub fn new(shared: Arc<Shared>) -> Directory {
        Directory {
            shared,
            map: HashMap::new(),
        }
    }
}

impl Actor for Directory {
    type Context = Context<Self>;
}

impl Handler<Create> for Directory {
    type Result = Result<(String, Addr<AjamSession>), SessionError>;

    fn handle(&mut self, msg: Create, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(old) = msg.replaces.and_then(|k| self.map.remove(&k)) {
            old.do_send(End);
        }
        let key = loop {
            let id = new_id();
            if !self.map.contains_key(&id) {
                break id;
            }
        };
        let ended = ctx.address().recipient();
        let addr = session::start(
            &self.shared,
            msg.user,
            msg.events.as_deref(),
            Some((key.clone(), ended)),
        )?;
        self.map.insert(key.clone(), addr.clone());
        Ok((key, addr))
    }
}

impl Handler<Lookup> for Directory {
    type Result = Option<Addr<AjamSession>>;

    fn handle(&mut self, msg: Lookup, _ctx: &mut Context<Self>) -> Self::Result {
        self.map.get(&msg.key).filter(|a| a.connected()).cloned()
    }
}

impl Handler<Ended> for Directory {
    type Result = ();

    fn handle(&mut self, msg: Ended, _ctx: &mut Context<Self>) {
        self.map.remove(&msg.key);
    }
}
