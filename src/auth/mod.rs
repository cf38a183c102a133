//! Who may do what: users (argon2 password hashes, bearer tokens, an htdigest file for HTTP
//! Digest) and their rights (servers, actions, events, admin). Pure checks over request parts;
//! the HTTP layer calls [`Authenticator::authenticate`] and hands the [`Identity`] on.

pub mod digest;
pub mod expressions;
pub mod forwarded;
pub mod hasher;
pub mod limiter;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::ami::Action;
use crate::config::{Settings, UserSettings};

/// Actions a user may send when `actions` is not configured: read-only, no side effects on calls,
/// configuration or the PBX host.
pub const READ_ONLY_ACTIONS: &[&str] = &[
    "Ping",
    "CoreStatus",
    "CoreSettings",
    "CoreShowChannels",
    "CoreShowChannelMap",
    "Status",
    "QueueStatus",
    "QueueSummary",
    "BridgeList",
    "BridgeInfo",
    "DeviceStateList",
    "ExtensionState",
    "ExtensionStateList",
    "PresenceState",
    "PresenceStateList",
    "PJSIPShowEndpoints",
    "PJSIPShowEndpoint",
    "PJSIPShowContacts",
    "PJSIPShowAors",
    "PJSIPShowRegistrationsOutbound",
    "SIPpeers",
    "SIPshowpeer",
    "IAXpeers",
    "IAXpeerlist",
    "Agents",
    "ParkedCalls",
    "ConfbridgeList",
    "ConfbridgeListRooms",
    "MeetmeList",
    "MailboxCount",
    "MailboxStatus",
    "ListCommands",
];

/// A set that is either everything (`["*"]`) or an explicit list (compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    All,
    Only(HashSet<String>),
}

impl Allow {
    pub fn from_list<S: AsRef<str>>(items: &[S]) -> Allow {
        if items.iter().any(|i| i.as_ref() == "*") {
            Allow::All
        } else {
            Allow::Only(
                items
                    .iter()
                    .map(|i| i.as_ref().to_ascii_lowercase())
                    .collect(),
            )
        }
    }

    pub fn allows(&self, item: &str) -> bool {
        match self {
            Allow::All => true,
            // Checked for every session on every broadcast: without a copy of `item` unless
            // the list is long and `item` is not in lower case already.
            Allow::Only(set) if !item.bytes().any(|b| b.is_ascii_uppercase()) => set.contains(item),
            Allow::Only(set) if set.len() <= 16 => set.iter().any(|s| s.eq_ignore_ascii_case(item)),
            Allow::Only(set) => set.contains(&item.to_ascii_lowercase()),
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Allow::All)
    }
}

/// What one user may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    pub servers: Allow,
    pub actions: Allow,
    pub events: Allow,
    pub admin: bool,
}

impl Rights {
    /// Everything: loopback clients of a service with no users configured.
    pub fn everything() -> Rights {
        Rights {
            servers: Allow::All,
            actions: Allow::All,
            events: Allow::All,
            admin: true,
        }
    }

    pub fn from_user(u: &UserSettings) -> Rights {
        Rights {
            servers: u.servers.as_deref().map_or(Allow::All, Allow::from_list),
            actions: u
                .actions
                .as_deref()
                .map_or_else(|| Allow::from_list(READ_ONLY_ACTIONS), Allow::from_list),
            events: u.events.as_deref().map_or(Allow::All, Allow::from_list),
            admin: u.admin,
        }
    }

    /// A server is named by id or by name in `servers`.
    pub fn may_see_server(&self, id: u32, name: &str) -> bool {
        // Name first: the id's text is made only when a list must be searched for it.
        self.servers.allows(name) || self.servers.allows(&id.to_string())
    }

    pub fn may_send(&self, action: &str) -> bool {
        self.actions.allows(action)
    }

    pub fn may_see_event(&self, event: &str) -> bool {
        self.events.allows(event)
    }

    /// Whether this user may send `action` as written: its name must be allowed, and a header
    /// Asterisk evaluates as variables or functions needs the Getvar right too (see
    /// [`expressions`]). Every front end that sends actions asks this.
    pub fn check_action(&self, action: &Action) -> Result<(), ActionRefused> {
        let name = action.name();
        if !self.may_send(name) {
            return Err(ActionRefused::Action(name.to_string()));
        }
        match expressions::evaluated_header(action) {
            Some(header) if !self.may_send(expressions::NEEDED_RIGHT) => {
                Err(ActionRefused::Evaluates {
                    action: name.to_string(),
                    header,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Why a user may not send an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionRefused {
    #[error("Action {0} is not permitted")]
    Action(String),
    #[error(
        "Header {header} of {action} is not permitted: Asterisk evaluates variables and \
         dialplan functions in it, which needs the {} right",
        expressions::NEEDED_RIGHT
    )]
    Evaluates {
        action: String,
        header: &'static str,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub rights: Arc<Rights>,
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required")]
    Missing,
    #[error("invalid credentials")]
    Invalid,
    #[error("no users are configured: only loopback clients are served")]
    RemoteWithoutUsers,
    #[error("{0}")]
    Digest(#[from] digest::DigestError),
    #[error("too many failed logins from this address: retry in {0} s")]
    TooManyFailures(u64),
    #[error("{0}: retry shortly")]
    Busy(#[from] hasher::PoolBusy),
}

impl AuthError {
    /// A wrong guess, which counts against the client's address.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            AuthError::Invalid
                | AuthError::Digest(digest::DigestError::Invalid)
                | AuthError::Digest(digest::DigestError::Replayed)
        )
    }
}

/// What [`Authenticator::authenticate`] decided: done, or an argon2 check to run first (off the
/// async workers, see [`hasher::PasswordPool`]), whose outcome goes to
/// [`Authenticator::verified`].
pub enum Verdict {
    Done(Result<Identity, AuthError>),
    Verify(PasswordCheck),
}

/// A Basic password to check against a user's argon2 hash.
pub struct PasswordCheck {
    pub name: String,
    pub hash: String,
    pub password: String,
    key: [u8; 32],
}

/// The parts of a request authentication looks at.
pub struct Credentials<'a> {
    pub method: &'a str,
    /// The request target (path and query), which a Digest answer must name.
    pub uri: &'a str,
    pub authorization: Option<&'a str>,
    pub query_token: Option<&'a str>,
    pub peer: Option<IpAddr>,
    /// Addresses named by Forwarded / X-Forwarded-For / X-Real-IP (a reverse proxy's client).
    pub forwarded_for: Vec<IpAddr>,
}

struct User {
    name: String,
    password_hash: Option<String>,
    token: Option<String>,
    ami_secret: Option<String>,
    ami_default_server: Option<String>,
    rights: Arc<Rights>,
}

/// A user logged in to the AMI listener.
#[derive(Debug, Clone)]
pub struct AmiUser {
    pub identity: Identity,
    /// Where actions without a `Server:` header go.
    pub default_server: Option<String>,
}

/// Checks credentials against the configured users; built once from the settings.
pub struct Authenticator {
    users: Vec<User>,
    digest: Option<digest::DigestUsers>,
    /// Who may answer HTTP Digest on the AJAM paths (`/arawman`, …): the htdigest users and
    /// every `[[users]]` entry with an `ami_secret` (Digest needs a cleartext secret or an HA1).
    ajam_digest: digest::DigestUsers,
    default_rights: Arc<Rights>,
    open_remote: bool,
    /// Argon2 is deliberately slow: (user, password) pairs verified lately, by keyed hash.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// Keys the hashes of `verified` (per process, so they mean nothing elsewhere).
    cache_key: [u8; 32],
}

/// Successful password checks remembered at most.
const VERIFIED_CACHE: usize = 4096;
/// How long a successful password check is remembered.
pub const VERIFIED_TTL: Duration = Duration::from_secs(60);

impl Authenticator {
    pub fn new(settings: &Settings) -> Result<Authenticator, String> {
        let users = settings
            .users
            .iter()
            .map(|u| User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                token: u.token.clone(),
                ami_secret: u.ami_secret.clone(),
                ami_default_server: u.ami_default_server.clone(),
                rights: Arc::new(Rights::from_user(u)),
            })
            .collect();
        let digest = match &settings.http.auth_file {
            Some(path) => Some(digest::DigestUsers::load(path, &settings.http.auth_domain)?),
            None => None,
        };
        let realm = &settings.http.auth_domain;
        let mut lines: Vec<String> = settings
            .users
            .iter()
            .filter_map(|u| {
                let secret = u.ami_secret.as_deref()?;
                Some(format!(
                    "{}:{realm}:{}",
                    u.name,
                    digest::ha1(&u.name, realm, secret)
                ))
            })
            .collect();
        if let Some(d) = &digest {
            lines.extend(
                d.entries()
                    .into_iter()
                    .map(|(u, h)| format!("{u}:{realm}:{h}")),
            );
        }
        let ajam_digest = digest::DigestUsers::parse(&lines.join("\n"), realm);
        Ok(Authenticator {
            users,
            digest,
            ajam_digest,
            default_rights: Arc::new(Rights::from_user(&UserSettings::default())),
            open_remote: settings.http.allow_anonymous_remote,
            verified: Mutex::new(HashMap::new()),
            cache_key: rand::random(),
        })
    }

    /// htdigest users and their hashes (to see who changed on reload).
    pub fn digest_users(&self) -> Vec<(String, String)> {
        self.digest.as_ref().map_or_else(Vec::new, |d| d.entries())
    }

    /// True when no user source is configured (anonymous loopback mode).
    pub fn is_open(&self) -> bool {
        self.users.is_empty() && self.digest.is_none()
    }

    /// The `WWW-Authenticate` challenges to send with a 401 for `refusal`. Digest is offered
    /// only when every password user can answer it (no argon2 `password_hash` users): a browser
    /// picks Digest over Basic, and an argon2 user cannot answer Digest. htdigest users log in
    /// with Basic too, and a Digest answer is accepted whenever a client sends one.
    pub fn challenges(&self, refusal: &AuthError) -> Vec<String> {
        let mut out = vec!["Basic realm=\"amihub\", charset=\"UTF-8\"".to_string()];
        let argon2_users = self.users.iter().any(|u| u.password_hash.is_some());
        if let Some(d) = self.digest.as_ref().filter(|_| !argon2_users) {
            let stale = *refusal == AuthError::Digest(digest::DigestError::Stale);
            out.push(d.challenge(stale));
        }
        out.push("Bearer realm=\"amihub\"".into());
        out
    }

    /// Decides on a request's credentials; an uncached Basic password needs an argon2 check.
    pub fn authenticate(&self, c: &Credentials<'_>) -> Verdict {
        match self.basic_password(c) {
            Some(Ok((name, password))) => self.by_password(name, password),
            Some(Err(e)) => Verdict::Done(Err(e)),
            None => Verdict::Done(self.without_argon2(c)),
        }
    }

    /// The (name, password) of an HTTP Basic header, when that is what decides.
    fn basic_password(&self, c: &Credentials<'_>) -> Option<Result<(String, String), AuthError>> {
        if self.is_open() || c.query_token.is_some() {
            return None;
        }
        let (scheme, rest) = c.authorization?.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let parsed = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|t| {
                let (n, p) = t.split_once(':')?;
                Some((n.to_string(), p.to_string()))
            });
        Some(parsed.ok_or(AuthError::Invalid))
    }

    fn without_argon2(&self, c: &Credentials<'_>) -> Result<Identity, AuthError> {
        if self.is_open() {
            let local = |ip: &IpAddr| forwarded::is_loopback(*ip);
            let all_local = c.peer.as_ref().is_some_and(local) && c.forwarded_for.iter().all(local);
            if all_local || self.open_remote {
                return Ok(Identity {
                    name: "anonymous".into(),
                    rights: Arc::new(Rights::everything()),
                });
            }
            return Err(AuthError::RemoteWithoutUsers);
        }
        if let Some(token) = c.query_token {
            return self.by_token(token);
        }
        let Some(header) = c.authorization else {
            return Err(AuthError::Missing);
        };
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => self.by_token(rest.trim()),
            "digest" => {
                let d = self.digest.as_ref().ok_or(AuthError::Invalid)?;
                let name = d.verify(c.method, c.uri, rest)?;
                Ok(self.identity_for(&name))
            }
            _ => Err(AuthError::Invalid),
        }
    }

    /// An AMI listener login (`Username`/`Secret` or MD5 `Key`), judged like an HTTP request:
    /// the secret is the user's password or token; an MD5 key must be made with its
    /// `ami_secret`. With no users configured, loopback peers log in as anonymous. argon2 runs
    /// on `passwords`, the HTTP side's bounded pool.
    pub async fn ami_login(
        &self,
        credentials: &crate::amisrv::login::Credentials,
        peer: IpAddr,
        passwords: &hasher::PasswordPool,
    ) -> Result<AmiUser, AuthError> {
        use crate::amisrv::login::{md5_key, Credentials};
        if self.is_open() {
            if peer.is_loopback() || self.open_remote {
                return Ok(AmiUser {
                    identity: Identity {
                        name: "anonymous".into(),
                        rights: Arc::new(Rights::everything()),
                    },
                    default_server: None,
                });
            }
            return Err(AuthError::RemoteWithoutUsers);
        }
        let name = credentials.user();
        let identity = match credentials {
            Credentials::Secret { user, secret } => {
                let by_token = self
                    .by_token(secret)
                    .ok()
                    .filter(|identity| identity.name == *user);
                match by_token {
                    Some(identity) => identity,
                    None => match self.by_password(user.clone(), secret.clone()) {
                        Verdict::Done(result) => result?,
                        Verdict::Verify(check) => {
                            let ok = passwords
                                .verify(&check.hash, &check.password)
                                .await
                                .map_err(AuthError::Busy)?;
                            self.verified(&check, ok)?
                        }
                    },
                }
            }
            Credentials::Md5 {
                user,
                challenge,
                key,
            } => {
                let secret = self
                    .users
                    .iter()
                    .find(|u| u.name == *user)
                    .and_then(|u| u.ami_secret.as_deref())
                    .ok_or(AuthError::Invalid)?;
                if !ct_eq(md5_key(challenge, secret).as_bytes(), key.as_bytes()) {
                    return Err(AuthError::Invalid);
                }
                self.identity_for(user)
            }
        };
        Ok(self.ami_user(identity, name))
    }

    fn ami_user(&self, identity: Identity, name: &str) -> AmiUser {
        let default_server = self
            .users
            .iter()
            .find(|u| u.name == name)
            .and_then(|u| u.ami_default_server.clone());
        AmiUser {
            identity,
            default_server,
        }
    }

    /// The `WWW-Authenticate` Digest challenge of the AJAM paths (`stale` when the client's nonce
    /// wore out).
    pub fn ajam_challenge(&self, stale: bool) -> String {
        self.ajam_digest.challenge(stale)
    }

    /// Checks an AJAM request's `Authorization: Digest …` parameters (for `method` and the
    /// request target `uri`) against the htdigest users and the `ami_secret` of `[[users]]`.
    pub fn ajam_digest(&self, method: &str, uri: &str, params: &str) -> Result<AmiUser, AuthError> {
        let name = self.ajam_digest.verify(method, uri, params)?;
        Ok(self.ami_user(self.identity_for(&name), &name))
    }

    fn identity_for(&self, name: &str) -> Identity {
        let rights = self
            .users
            .iter()
            .find(|u| u.name == name)
            .map_or_else(|| self.default_rights.clone(), |u| u.rights.clone());
        Identity {
            name: name.to_string(),
            rights,
        }
    }

    fn by_token(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Invalid);
        }
        let mut found = None;
        for u in &self.users {
            // Compare every token in full so timing tells nothing about which one matched.
            if u.token
                .as_deref()
                .is_some_and(|t| ct_eq(t.as_bytes(), token.as_bytes()))
            {
                found = Some(u);
            }
        }
        found
            .map(|u| Identity {
                name: u.name.clone(),
                rights: u.rights.clone(),
            })
            .ok_or(AuthError::Invalid)
    }

    fn by_password(&self, name: String, password: String) -> Verdict {
        let user = self.users.iter().find(|u| u.name == name);
        let Some(hash) = user.and_then(|u| u.password_hash.clone()) else {
            // An htdigest user may also use Basic: HA1 = MD5(user:realm:password).
            let ok = self
                .digest
                .as_ref()
                .is_some_and(|d| d.check_password(&name, &password));
            return Verdict::Done(if ok {
                Ok(self.identity_for(&name))
            } else {
                Err(AuthError::Invalid)
            });
        };
        let key = self.fingerprint(&name, &hash, &password);
        let fresh = self
            .verified
            .lock()
            .map(|v| v.get(&key).is_some_and(|t| t.elapsed() < VERIFIED_TTL))
            .unwrap_or(false);
        if fresh {
            return Verdict::Done(Ok(self.identity_for(&name)));
        }
        Verdict::Verify(PasswordCheck {
            name,
            hash,
            password,
            key,
        })
    }

    /// The outcome of an argon2 check: remembered for [`VERIFIED_TTL`] when it matched.
    pub fn verified(&self, check: &PasswordCheck, ok: bool) -> Result<Identity, AuthError> {
        if !ok {
            return Err(AuthError::Invalid);
        }
        if let Ok(mut v) = self.verified.lock() {
            if v.len() >= VERIFIED_CACHE {
                v.retain(|_, t| t.elapsed() < VERIFIED_TTL);
                if v.len() >= VERIFIED_CACHE {
                    v.clear();
                }
            }
            v.insert(check.key, Instant::now());
        }
        Ok(self.identity_for(&check.name))
    }

    /// A keyed SHA-256 of (user, hash, password) so the cache never holds a password.
    fn fingerprint(&self, name: &str, hash: &str, password: &str) -> [u8; 32] {
        let mut h = openssl::sha::Sha256::new();
        h.update(&self.cache_key);
        for part in [name, hash, password] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finish()
    }
}

/// Constant-time equality for secrets.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Prints an argon2id PHC string for `password` (the `hash-password` subcommand).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(users: &str) -> Settings {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(users, config::FileFormat::Toml))
            .build()
            .unwrap();
        let mut s: Settings = raw.try_deserialize().unwrap();
        s.finish().unwrap();
        s
    }

    /// `authenticate`, with any argon2 check run inline.
    fn now(a: &Authenticator, c: &Credentials<'_>) -> Result<Identity, AuthError> {
        match a.authenticate(c) {
            Verdict::Done(r) => r,
            Verdict::Verify(check) => {
                let ok = argon2::password_hash::PasswordHash::new(&check.hash).is_ok_and(|h| {
                    use argon2::password_hash::PasswordVerifier;
                    argon2::Argon2::default()
                        .verify_password(check.password.as_bytes(), &h)
                        .is_ok()
                });
                a.verified(&check, ok)
            }
        }
    }

    fn creds<'a>(auth: Option<&'a str>, token: Option<&'a str>, peer: &str) -> Credentials<'a> {
        Credentials {
            method: "GET",
            uri: "/",
            authorization: auth,
            query_token: token,
            peer: peer.parse().ok(),
            forwarded_for: Vec::new(),
        }
    }

    #[test]
    fn no_users_means_loopback_only() {
        let a = Authenticator::new(&settings("")).unwrap();
        assert!(now(&a, &creds(None, None, "127.0.0.1")).is_ok());
        assert!(now(&a, &creds(None, None, "::1")).is_ok());
        assert_eq!(
            now(&a, &creds(None, None, "10.1.2.3")).unwrap_err(),
            AuthError::RemoteWithoutUsers
        );
        let mut proxied = creds(None, None, "127.0.0.1");
        proxied.forwarded_for =
            forwarded::addresses(forwarded::Header::XForwardedFor, b"203.0.113.9");
        assert_eq!(
            now(&a, &proxied).unwrap_err(),
            AuthError::RemoteWithoutUsers
        );
    }

    #[test]
    fn tokens_and_passwords() {
        let hash = hash_password("pw").unwrap();
        let a = Authenticator::new(&settings(&format!(
            "[[users]]\nname='ops'\ntoken='t0k-0123456789abcdef'\n[[users]]\nname='alice'\npassword_hash='{hash}'\nactions=['*']\n"
        )))
        .unwrap();
        let who = now(
            &a,
            &creds(Some("Bearer t0k-0123456789abcdef"), None, "10.0.0.1"),
        )
        .unwrap();
        assert_eq!(who.name, "ops");
        assert!(!who.rights.may_send("Originate"));
        assert!(who.rights.may_send("corestatus"));
        assert_eq!(
            now(&a, &creds(None, Some("t0k-0123456789abcdef"), "10.0.0.1"))
                .unwrap()
                .name,
            "ops"
        );
        assert_eq!(
            now(&a, &creds(Some("Bearer nope"), None, "10.0.0.1")).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            now(&a, &creds(None, None, "127.0.0.1")).unwrap_err(),
            AuthError::Missing
        );
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pw")
        );
        let who = now(&a, &creds(Some(&basic), None, "10.0.0.1")).unwrap();
        assert!(who.rights.may_send("Originate"));
        // Second time hits the cache: no argon2 check, and still succeeds.
        assert!(matches!(
            a.authenticate(&creds(Some(&basic), None, "10.0.0.1")),
            Verdict::Done(Ok(_))
        ));
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:px")
        );
        assert_eq!(
            now(&a, &creds(Some(&wrong), None, "10.0.0.1")).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn rights_match_ids_names_and_case() {
        let r = Rights::from_user(&UserSettings {
            servers: Some(vec!["2".into(), "East".into()]),
            actions: Some(vec!["originate".into()]),
            events: Some(vec!["Hangup".into()]),
            ..UserSettings::default()
        });
        assert!(
            r.may_see_server(2, "x") && r.may_see_server(7, "east") && !r.may_see_server(1, "west")
        );
        assert!(r.may_send("Originate") && !r.may_send("Command"));
        assert!(r.may_see_event("hangup") && !r.may_see_event("Newchannel"));
        let d = Rights::from_user(&UserSettings::default());
        for denied in [
            "Originate",
            "Redirect",
            "Hangup",
            "Command",
            "Setvar",
            "UpdateConfig",
            "GetConfig",
            "DBPut",
            "Events",
        ] {
            assert!(
                !d.may_send(denied),
                "{denied} must not be in the read-only default"
            );
        }
    }
}
