//! `--demo`: two simulated PBXs on loopback with live traffic, wired in as ordinary servers.

use crate::config::{AuthMode, ServerSettings, Settings};
use crate::sim::{SimConfig, SimPbx};

/// Starts the simulators and adds them to `settings` as servers 1 and 2 (after any configured).
/// The returned handles keep them running.
pub fn start(settings: &mut Settings) -> std::io::Result<Vec<SimPbx>> {
    let mut sims = Vec::new();
    for (i, auth) in [(1u32, AuthMode::Md5), (2, AuthMode::Plain)] {
        let name = format!("demo-pbx{i}");
        let secret = format!("demo-secret-{}", rand::random::<u32>());
        let cfg = SimConfig {
            name: name.clone(),
            username: "amihub".into(),
            secret: secret.clone(),
            demo_traffic: true,
            seed: u64::from(i),
            rtcp_interval_ms: settings.demo.rtcp_interval_ms,
            ..SimConfig::default()
        };
        let sim = SimPbx::start_in_thread("127.0.0.1:0", cfg)?;
        let id = settings.servers.iter().map(|s| s.id).max().unwrap_or(0) + 1;
        let server = ServerSettings {
            id,
            name,
            host: sim.addr().ip().to_string(),
            port: sim.addr().port(),
            username: "amihub".into(),
            secret,
            secret_file: None,
            auth,
            events: "on".into(),
            tls: false,
            tls_ca: None,
            tls_verify: true,
            ping_interval_s: 10,
            ping_timeout_s: 5,
            enabled: true,
        };
        settings.servers.push(server.clone());
        settings.pinned_servers.push(server);
        sims.push(sim);
    }
    Ok(sims)
}
