//! Settings: the only reader of config files, secret files and `AMIHUB__…` environment variables.
//!
//! Everything is validated here, once, so actors can rely on their settings and never `expect()`.
//! Unknown keys are errors (serde `deny_unknown_fields`), reported with the key's name.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ami::Limits;

/// A problem with the configuration, naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// The whole configuration (see `config/amihub.toml` for every key with its default).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub ami: AmiSettings,
    #[serde(default)]
    pub reconnect: ReconnectSettings,
    #[serde(default)]
    pub limits: LimitSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub ami_listener: AmiListenerSettings,
    /// Call-quality thresholds (good / warn / bad) for the API, the dashboard and its colours.
    #[serde(default)]
    pub quality: crate::state::Thresholds,
    #[serde(default)]
    pub demo: DemoSettings,
    #[serde(default)]
    pub ajam: AjamSettings,
    #[serde(default)]
    pub cluster: crate::cluster::ClusterSettings,
    #[serde(default)]
    pub history: HistorySettings,
    #[serde(default)]
    pub fanout: FanoutSettings,
    #[serde(default)]
    pub servers: Vec<ServerSettings>,
    #[serde(default)]
    pub users: Vec<UserSettings>,
    /// The file this was loaded from (SIGHUP reloads it).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Servers added outside the file (the demo simulators); kept across reloads.
    #[serde(skip)]
    pub pinned_servers: Vec<ServerSettings>,
}

/// One user (`[[users]]`): credentials and rights (SPEC §6).
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    pub name: String,
    /// argon2 PHC string (`amihub hash-password`).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Bearer token (also `?token=` for browsers).
    #[serde(default)]
    pub token: Option<String>,
    /// File whose first line is the token (wins over `token`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Server ids or names; `["*"]` = all. Default: all.
    #[serde(default)]
    pub servers: Option<Vec<String>>,
    /// Action allowlist, case-insensitive; `["*"]` = all. Default: the read-only set.
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    /// Event names this user receives; `["*"]` = all. Default: all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// May list sessions and add or drop servers at runtime.
    #[serde(default)]
    pub admin: bool,
    /// Cleartext secret for AMI `Challenge`/MD5 logins to the AMI listener (as in Asterisk's
    /// manager.conf; MD5 login needs one).
    #[serde(default)]
    pub ami_secret: Option<String>,
    /// File whose first line is `ami_secret` (wins over it).
    #[serde(default)]
    pub ami_secret_file: Option<PathBuf>,
    /// Server (name or id) for AMI listener actions that name none with `Server:`.
    #[serde(default)]
    pub ami_default_server: Option<String>,
}

/// Credentials never appear in `Debug` output.
impl std::fmt::Debug for UserSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSettings")
            .field("name", &self.name)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "ami_secret",
                &self.ami_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("ami_default_server", &self.ami_default_server)
            .field("servers", &self.servers)
            .field("actions", &self.actions)
            .field("events", &self.events)
            .field("admin", &self.admin)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address the HTTP/WebSocket listener binds.
    pub listen: String,
    /// Directory served at `/`.
    pub web_root: PathBuf,
    /// Origins allowed to open a WebSocket besides the page's own origin.
    pub allowed_origins: Vec<String>,
    /// PEM certificate chain; with `tls_key` the listener speaks HTTPS/WSS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// A connection's response buffer: the HTTP dispatcher copies what a session has queued
    /// into it until it holds this many bytes, then writes (actix-http's default: 32 KiB). A
    /// busy session's buffer grows to about twice this while its socket is full.
    pub write_buffer_bytes: usize,
    /// Apache htdigest file: its users may log in with HTTP Digest (or Basic).
    pub auth_file: Option<PathBuf>,
    /// The realm of `auth_file` to use.
    pub auth_domain: String,
    /// With no users configured, serve non-loopback clients too (demo in a container only).
    pub allow_anonymous_remote: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:8000".into(),
            web_root: PathBuf::from("web_root"),
            allowed_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            workers: 0,
            write_buffer_bytes: 32 << 10,
            auth_file: None,
            auth_domain: "amihub".into(),
            allow_anonymous_remote: false,
        }
    }
}

/// The AMI listener (SPEC §8): AMI client libraries log in to amihub as to Asterisk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmiListenerSettings {
    /// Address to listen on, e.g. "127.0.0.1:5039"; unset = no AMI listener.
    pub listen: Option<String>,
    /// PEM certificate chain; with `tls_key` the listener speaks AMI over TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// First line sent to every client; libraries check the `Asterisk Call Manager/` prefix.
    pub banner: String,
    /// A connection that has not logged in by then is closed.
    pub auth_timeout_s: u64,
    /// Open AMI connections at most (logged in or not); more are refused at once.
    pub max_sessions: usize,
}

impl Default for AmiListenerSettings {
    fn default() -> Self {
        AmiListenerSettings {
            listen: None,
            tls_cert: None,
            tls_key: None,
            banner: "Asterisk Call Manager/11.0.0".into(),
            auth_timeout_s: 30,
            max_sessions: 1000,
        }
    }
}

/// What `--demo`'s simulated PBXs do (`[demo]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoSettings {
    /// Gap between the RTCP reports of each simulated call (Asterisk's default is 5 s).
    pub rtcp_interval_ms: u64,
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings {
            rtcp_interval_ms: 5_000,
        }
    }
}

/// AJAM (SPEC §9): Asterisk's HTTP manager (`/rawman`, `/mxml`, `/manager`, and `/a…` with
/// Digest) on the HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AjamSettings {
    /// Serve the AJAM paths at all.
    pub enabled: bool,
    /// Asterisk's `httptimeout`: a cookie session idle this long ends (also the cookie's Max-Age
    /// and the longest `WaitEvent`).
    pub httptimeout_s: u64,
    /// Live HTTP manager sessions at most (cookie and Digest); more logins are refused.
    pub max_sessions: usize,
    /// Events waiting for `WaitEvent` per session at most; the oldest are dropped past it.
    pub queue_events: usize,
    /// Bytes of events waiting per session at most (the oldest are dropped past it).
    pub queue_bytes: usize,
}

impl Default for AjamSettings {
    fn default() -> Self {
        AjamSettings {
            enabled: true,
            httptimeout_s: 60,
            max_sessions: 1000,
            queue_events: 1000,
            queue_bytes: 1 << 20,
        }
    }
}

/// Bounds on what the AMI codec accepts (SPEC §3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmiSettings {
    pub max_line_bytes: usize,
    pub max_packet_bytes: usize,
    pub max_headers: usize,
}

impl Default for AmiSettings {
    fn default() -> Self {
        let l = Limits::default();
        AmiSettings {
            max_line_bytes: l.max_line_bytes,
            max_packet_bytes: l.max_packet_bytes,
            max_headers: l.max_headers,
        }
    }
}

impl AmiSettings {
    pub fn limits(&self) -> Limits {
        Limits {
            max_line_bytes: self.max_line_bytes,
            max_packet_bytes: self.max_packet_bytes,
            max_headers: self.max_headers,
        }
    }
}

/// Reconnect backoff for every PBX (SPEC §2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectSettings {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
    pub jitter: f64,
    /// A connection that stays up this long resets the attempt counter.
    pub reset_after_s: u64,
    /// TCP connect + TLS handshake bound.
    pub connect_timeout_ms: u64,
    /// Banner + login bound once connected.
    pub login_timeout_ms: u64,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        ReconnectSettings {
            initial_ms: 500,
            max_ms: 30_000,
            multiplier: 2.0,
            jitter: 0.2,
            reset_after_s: 60,
            connect_timeout_ms: 5_000,
            login_timeout_ms: 10_000,
        }
    }
}

/// Per-session and per-process limits (SPEC §7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    pub max_sessions: usize,
    /// Bytes queued towards one WebSocket before it is closed with 4008.
    pub session_queue_bytes: usize,
    pub max_client_message_bytes: usize,
    pub actions_per_second: u32,
    pub ws_ping_interval_s: u64,
    pub ws_idle_timeout_s: u64,
    /// How long a routed action waits for its response / list completion.
    pub action_timeout_s: u64,
    /// Outstanding actions one session may have at once.
    pub max_pending_actions_per_session: usize,
    /// HTTP actions one user may have waiting for a PBX at once (of 256 for everyone).
    pub max_http_actions_per_user: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_sessions: 10_000,
            session_queue_bytes: 1 << 20,
            max_client_message_bytes: 65_536,
            actions_per_second: 50,
            ws_ping_interval_s: 20,
            ws_idle_timeout_s: 60,
            action_timeout_s: 10,
            max_pending_actions_per_session: 256,
            max_http_actions_per_user: 32,
        }
    }
}

/// The bounded window of broadcast frames kept per server for resume (SPEC §10). A frame
/// leaves when any bound is passed; read once at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// Frames kept per server.
    pub max_frames: usize,
    /// Seconds a frame is kept.
    pub max_age_s: u64,
    /// Bytes kept per server (the rendered frames, compressed once sealed in a block, their
    /// entries, and the few packets kept whole).
    pub max_bytes: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            max_frames: 10_000,
            max_age_s: 300,
            max_bytes: 32 << 20,
        }
    }
}

/// Write coalescing of the broadcast fan-out: broadcast frames go to every session at most once
/// per `flush_interval_ms`, as one batch and one socket write each. A frame arriving when the
/// last flush is an interval old goes out at once; one arriving sooner waits for the rest of the
/// interval (or until `flush_bytes` are held). 0 = off (every PBX read is fanned out at once).
/// With many sessions the interval grows so that sessions × flushes per second stays within
/// `session_flushes_per_second` (each flush wakes every session and costs each a socket write):
/// 2 ms up to 70 sessions, 2.9 ms at 100, 29 ms at 1,000, at most `MAX_FLUSH_INTERVAL_MS`; 0 = fixed
/// interval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutSettings {
    pub flush_interval_ms: u64,
    pub flush_bytes: usize,
    pub session_flushes_per_second: u64,
}

/// Longest write delay the configuration accepts.
pub const MAX_FLUSH_INTERVAL_MS: u64 = 100;

impl Default for FanoutSettings {
    fn default() -> Self {
        FanoutSettings {
            flush_interval_ms: 2,
            flush_bytes: 64 << 10,
            session_flushes_per_second: 35_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Md5,
    Plain,
}

/// One PBX (`[[servers]]`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Stable id used by clients (`AMIServerID`); defaults to the 1-based position.
    #[serde(default)]
    pub id: u32,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub secret: String,
    /// File whose first line is the secret (wins over `secret`).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub auth: AuthMode,
    /// `on`, `off`, or an AMI class list such as `call,agent,system`.
    #[serde(default = "default_events")]
    pub events: String,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    #[serde(default = "default_ping_interval")]
    pub ping_interval_s: u64,
    #[serde(default = "default_ping_timeout")]
    pub ping_timeout_s: u64,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// Secrets never appear in `Debug` output.
impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .field("auth", &self.auth)
            .field("events", &self.events)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

fn default_port() -> u16 {
    5038
}
fn default_events() -> String {
    "on".into()
}
fn default_true() -> bool {
    true
}
fn default_ping_interval() -> u64 {
    10
}
fn default_ping_timeout() -> u64 {
    5
}

impl Settings {
    /// Loads `path` (TOML or YAML by extension), then `AMIHUB__…` environment overrides, then
    /// secret files; validates the result.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("yaml") | Some("yml") => config::FileFormat::Yaml,
                _ => config::FileFormat::Toml,
            };
            builder = builder.add_source(config::File::from(path).format(format));
        }
        // Keys inside arrays (`AMIHUB__SERVERS__0__SECRET`) become indexed overrides
        // (`servers[0].secret`); the rest go through config's Environment source.
        let (indexed, plain) = split_env(std::env::vars());
        builder = builder.add_source(
            config::Environment::with_prefix("AMIHUB")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("http.allowed_origins")
                .try_parsing(true)
                .source(Some(plain)),
        );
        let shown = path.map_or("<environment>".to_string(), |p| p.display().to_string());
        for (key, value) in indexed {
            builder = builder
                .set_override(key.as_str(), value)
                .map_err(|e| ConfigError::Load {
                    path: shown.clone(),
                    message: format!("{key}: {e}"),
                })?;
        }
        let raw = builder.build().map_err(|e| ConfigError::Load {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        // serde_path_to_error names where a problem is (`servers[0].bogus`), not only what.
        let mut settings: Settings =
            serde_path_to_error::deserialize(raw).map_err(|e| ConfigError::Load {
                path: shown,
                message: e.to_string(),
            })?;
        settings.finish()?;
        settings.source = path.map(Path::to_path_buf);
        Ok(settings)
    }

    /// Loads the same file again (SIGHUP), keeping pinned servers.
    pub fn reload(&self) -> Result<Settings, ConfigError> {
        let mut next = Settings::load(self.source.as_deref())?;
        next.servers.extend(self.pinned_servers.iter().cloned());
        next.pinned_servers = self.pinned_servers.clone();
        Ok(next)
    }

    /// Fills derived defaults (ids, names, secret files) and checks every rule, collecting all
    /// problems rather than stopping at the first.
    pub fn finish(&mut self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for (i, s) in self.servers.iter_mut().enumerate() {
            if s.id == 0 {
                s.id = i as u32 + 1;
            }
            check_server(s, &format!("servers[{i}]"), &mut problems);
        }
        for (i, u) in self.users.iter_mut().enumerate() {
            let key = format!("users[{i}]");
            if u.name.is_empty() || u.name.contains(':') {
                problems.push(format!("{key}.name: must be set and contain no ':'"));
            }
            if let Some(file) = &u.token_file {
                match std::fs::read_to_string(file) {
                    Ok(text) => {
                        u.token = Some(text.lines().next().unwrap_or("").trim().to_string())
                    }
                    Err(e) => problems.push(format!(
                        "{key}.token_file: cannot read {}: {e}",
                        file.display()
                    )),
                }
            }
            if let Some(file) = &u.ami_secret_file {
                match std::fs::read_to_string(file) {
                    Ok(text) => u.ami_secret = Some(text.lines().next().unwrap_or("").to_string()),
                    Err(e) => problems.push(format!(
                        "{key}.ami_secret_file: cannot read {}: {e}",
                        file.display()
                    )),
                }
            }
            if u.ami_secret.as_deref().is_some_and(str::is_empty) {
                problems.push(format!("{key}.ami_secret: must not be empty"));
            }
            if u.token.as_deref().is_some_and(|t| t.len() < 16) {
                problems.push(format!("{key}.token: must be at least 16 characters"));
            }
            if let Some(hash) = &u.password_hash {
                if !hash.starts_with("$argon2") {
                    problems.push(format!(
                        "{key}.password_hash: must be an argon2 hash (amihub hash-password)"
                    ));
                }
            }
            if u.password_hash.is_none() && u.token.is_none() && self.http.auth_file.is_none() {
                problems.push(format!("{key}: needs password_hash or token"));
            }
        }
        let mut user_names: Vec<&str> = self.users.iter().map(|u| u.name.as_str()).collect();
        user_names.sort_unstable();
        if user_names.windows(2).any(|w| w[0] == w[1]) {
            problems.push("users: names must be unique".into());
        }
        if let Some(f) = &self.http.auth_file {
            if !f.exists() {
                problems.push(format!("http.auth_file: {} does not exist", f.display()));
            }
        }
        let mut ids: Vec<u32> = self.servers.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            problems.push("servers: ids must be unique".into());
        }
        let mut names: Vec<&str> = self.servers.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            problems.push("servers: names must be unique".into());
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "http.listen: {:?} is not an address like 127.0.0.1:8000",
                self.http.listen
            ));
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            problems.push("http.tls_cert and http.tls_key: set both or neither".into());
        }
        problems.extend(self.quality.problems());
        if !(100..=60_000).contains(&self.demo.rtcp_interval_ms) {
            problems.push("demo.rtcp_interval_ms: must be between 100 and 60000".into());
        }
        let al = &self.ami_listener;
        if let Some(listen) = &al.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!(
                    "ami_listener.listen: {listen:?} is not an address like 127.0.0.1:5039"
                ));
            }
        }
        if al.tls_cert.is_some() != al.tls_key.is_some() {
            problems
                .push("ami_listener.tls_cert and ami_listener.tls_key: set both or neither".into());
        }
        if !al.banner.starts_with("Asterisk Call Manager/") || al.banner.contains(['\r', '\n']) {
            problems.push(
                "ami_listener.banner: must start with \"Asterisk Call Manager/\" (libraries check it) and be one line"
                    .into(),
            );
        }
        if al.auth_timeout_s == 0 || al.max_sessions == 0 {
            problems
                .push("ami_listener.auth_timeout_s and max_sessions: must be at least 1".into());
        }
        let aj = &self.ajam;
        if aj.httptimeout_s == 0
            || aj.max_sessions == 0
            || aj.queue_events == 0
            || aj.queue_bytes == 0
        {
            problems.push(
                "ajam.httptimeout_s, max_sessions, queue_events and queue_bytes: must be at least 1"
                    .into(),
            );
        }
        let r = &self.reconnect;
        if r.initial_ms == 0 || r.max_ms < r.initial_ms {
            problems.push("reconnect.max_ms: must be >= reconnect.initial_ms > 0".into());
        }
        if !(r.multiplier >= 1.0 && r.multiplier <= 100.0) {
            problems.push("reconnect.multiplier: must be between 1.0 and 100.0".into());
        }
        if !(0.0..=1.0).contains(&r.jitter) {
            problems.push("reconnect.jitter: must be between 0.0 and 1.0".into());
        }
        let l = &self.limits;
        if l.max_sessions == 0 {
            problems.push("limits.max_sessions: must be at least 1".into());
        }
        if l.session_queue_bytes < 4096 {
            problems.push("limits.session_queue_bytes: must be at least 4096".into());
        }
        if l.max_client_message_bytes < 256 {
            problems.push("limits.max_client_message_bytes: must be at least 256".into());
        }
        if l.actions_per_second == 0 {
            problems.push("limits.actions_per_second: must be at least 1".into());
        }
        if l.ws_ping_interval_s == 0 || l.ws_idle_timeout_s <= l.ws_ping_interval_s {
            problems.push(
                "limits.ws_idle_timeout_s: must be greater than limits.ws_ping_interval_s > 0"
                    .into(),
            );
        }
        let h = &self.history;
        if h.max_frames == 0 || h.max_age_s == 0 || h.max_bytes < 4096 {
            problems
                .push("history: need max_frames >= 1, max_age_s >= 1, max_bytes >= 4096".into());
        }
        if self.http.write_buffer_bytes < 1024 {
            problems.push("http.write_buffer_bytes: must be at least 1024".into());
        }
        let f = &self.fanout;
        if f.flush_interval_ms > MAX_FLUSH_INTERVAL_MS || f.flush_bytes < 1024 {
            problems.push(format!(
                "fanout: need flush_interval_ms <= {MAX_FLUSH_INTERVAL_MS} and flush_bytes >= 1024"
            ));
        }
        let a = &self.ami;
        if a.max_line_bytes < 1024 || a.max_packet_bytes < a.max_line_bytes || a.max_headers < 16 {
            problems.push(
                "ami: need max_line_bytes >= 1024, max_packet_bytes >= max_line_bytes, max_headers >= 16"
                    .into(),
            );
        }
        problems.extend(self.cluster.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Splits `AMIHUB__…` variables into indexed overrides (`servers[0].secret`, for keys inside
/// `[[servers]]`/`[[users]]`) and the rest (left to config's Environment source).
fn split_env(
    vars: impl Iterator<Item = (String, String)>,
) -> (
    Vec<(String, String)>,
    std::collections::HashMap<String, String>,
) {
    let mut indexed = Vec::new();
    let mut plain = std::collections::HashMap::new();
    for (k, v) in vars {
        let Some(rest) = k.strip_prefix("AMIHUB__") else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if parts.iter().any(|p| p.parse::<usize>().is_ok()) {
            let mut path = String::new();
            for p in parts {
                match p.parse::<usize>() {
                    Ok(i) => path.push_str(&format!("[{i}]")),
                    Err(_) if path.is_empty() => path.push_str(&p),
                    Err(_) => {
                        path.push('.');
                        path.push_str(&p);
                    }
                }
            }
            indexed.push((path, v));
        } else {
            plain.insert(k, v);
        }
    }
    (indexed, plain)
}

/// Fills a server's derived defaults and checks it; `key` names it in messages.
fn check_server(s: &mut ServerSettings, key: &str, problems: &mut Vec<String>) {
    if s.name.is_empty() {
        s.name = format!("pbx{}", s.id);
    }
    if s.host.is_empty() {
        problems.push(format!("{key}.host: must be set"));
    }
    if s.username.is_empty() {
        problems.push(format!("{key}.username: must be set"));
    }
    if let Some(file) = &s.secret_file {
        match std::fs::read_to_string(file) {
            Ok(text) => s.secret = text.lines().next().unwrap_or("").to_string(),
            Err(e) => problems.push(format!(
                "{key}.secret_file: cannot read {}: {e}",
                file.display()
            )),
        }
    }
    if s.ping_interval_s == 0 {
        problems.push(format!("{key}.ping_interval_s: must be at least 1"));
    }
    if s.ping_timeout_s == 0 {
        problems.push(format!("{key}.ping_timeout_s: must be at least 1"));
    }
    if [&s.events, &s.username, &s.secret, &s.name]
        .iter()
        .any(|v| v.contains(['\r', '\n']))
    {
        problems.push(format!(
            "{key}: name, username, secret and events must not contain CR or LF"
        ));
    }
    if let Some(ca) = &s.tls_ca {
        if !ca.exists() {
            problems.push(format!("{key}.tls_ca: {} does not exist", ca.display()));
        }
    }
}

/// A server added at runtime by an admin (`AddServer` on the WebSocket or the AMI listener),
/// from its JSON form, validated. Paths on the amihub host are config-file only: a remote admin
/// must not make amihub read (and send) arbitrary files.
pub fn runtime_server(v: serde_json::Value) -> Result<ServerSettings, String> {
    let s = serde_json::from_value::<ServerSettings>(v).map_err(|e| e.to_string())?;
    if s.secret_file.is_some() || s.tls_ca.is_some() {
        return Err("secret_file and tls_ca can only be set in the config file".into());
    }
    validate_server(s).map_err(|e| e.join("; "))
}

/// Validates one server added at runtime (its `id` must be set).
pub fn validate_server(mut s: ServerSettings) -> Result<ServerSettings, Vec<String>> {
    let mut problems = Vec::new();
    if s.id == 0 {
        problems.push("Server.id: must be set".to_string());
    }
    check_server(&mut s, "Server", &mut problems);
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_toml(text: &str) -> Result<Settings, String> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| e.to_string())?;
        let mut s: Settings = raw.try_deserialize().map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = parse_toml("[[servers]]\nhost='127.0.0.1'\nusername='u'\nsecret='s'\n").unwrap();
        let srv = &s.servers[0];
        assert_eq!((srv.id, srv.name.as_str(), srv.port), (1, "pbx1", 5038));
        assert_eq!(srv.auth, AuthMode::Md5);
        assert_eq!((srv.ping_interval_s, srv.ping_timeout_s), (10, 5));
        assert_eq!(s.reconnect.initial_ms, 500);
        assert_eq!(s.reconnect.max_ms, 30_000);
        assert_eq!(s.limits.session_queue_bytes, 1 << 20);
        assert_eq!(s.http.listen, "127.0.0.1:8000");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse_toml("[http]\nlisten='127.0.0.1:1'\nlisen='x'\n").unwrap_err();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = parse_toml(
            "[reconnect]\njitter=3.0\n[[servers]]\nname='a'\n[[servers]]\nname='a'\nhost='h'\nusername='u'\n",
        )
        .unwrap_err();
        assert!(err.contains("servers[0].host"), "{err}");
        assert!(err.contains("servers[0].username"), "{err}");
        assert!(err.contains("names must be unique"), "{err}");
        assert!(err.contains("reconnect.jitter"), "{err}");
    }

    #[test]
    fn indexed_environment_keys_become_array_overrides() {
        let vars = [
            ("AMIHUB__SERVERS__0__SECRET", "s3"),
            ("AMIHUB__USERS__1__TOKEN", "t"),
            ("AMIHUB__HTTP__LISTEN", "0.0.0.0:1"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let (indexed, plain) = split_env(vars.into_iter());
        assert_eq!(
            indexed,
            [
                ("servers[0].secret".to_string(), "s3".to_string()),
                ("users[1].token".into(), "t".into())
            ]
        );
        assert_eq!(plain.len(), 1);
        assert!(plain.contains_key("AMIHUB__HTTP__LISTEN"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = parse_toml("[[servers]]\nhost='h'\nusername='u'\nsecret='hunter2'\n").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
