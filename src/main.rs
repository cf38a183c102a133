//! The `amihub` binary: command line, logging, then `amihub::run`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use amihub::config::{LogFormat, Settings};

/// Asterisk AMI to WebSocket/JSON hub.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML or YAML by extension).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate a config file and exit (0 = valid; otherwise one line per problem).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Run with two built-in simulated PBXs (no Asterisk needed) on http://127.0.0.1:8000/.
    #[arg(long)]
    demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print an argon2 hash for `[[users]] password_hash`; reads the password from stdin.
    HashPassword,
    /// Run one simulated PBX (calls, queues, agents) on its own, e.g. as the demo PBXs of
    /// docker/compose.cluster.yaml; until SIGTERM/SIGINT.
    Simulate {
        /// Address to listen on for AMI.
        #[arg(long, default_value = "127.0.0.1:5038")]
        listen: String,
        #[arg(long, default_value = "sim-pbx")]
        name: String,
        #[arg(long, default_value = "amihub")]
        username: String,
        /// The AMI secret amihub logs in with.
        #[arg(long)]
        secret: String,
    },
}

/// `amihub simulate`: one simulated PBX with live demo traffic.
fn simulate(listen: String, name: String, username: String, secret: String) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async move {
        let cfg = amihub::sim::SimConfig {
            name,
            username,
            secret,
            demo_traffic: true,
            ..amihub::sim::SimConfig::default()
        };
        let _sim = amihub::sim::SimPbx::start(&listen, cfg)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}

fn init_logging(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}

/// Thousands of WebSocket sessions need thousands of descriptors: lift the soft limit to the hard one.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Simulate {
        listen,
        name,
        username,
        secret,
    }) = cli.command
    {
        init_logging(LogFormat::Text);
        return simulate(listen, name, username, secret);
    }
    if let Some(Command::HashPassword) = cli.command {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let password = line.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!password.is_empty(), "empty password");
        let hash = amihub::auth::hash_password(password).map_err(anyhow::Error::msg)?;
        println!("{hash}");
        return Ok(());
    }
    if let Some(path) = &cli.check_config {
        return match Settings::load(Some(path)) {
            Ok(s) => {
                println!("{}: valid ({} server(s))", path.display(), s.servers.len());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
    }
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    init_logging(settings.log.format);
    raise_fd_limit();
    let _sims = if cli.demo {
        let sims = amihub::demo::start(&mut settings).context("starting the demo PBXs")?;
        log::info!(
            "demo mode: two simulated PBXs; open http://{}/",
            settings.http.listen
        );
        sims
    } else {
        if settings.servers.is_empty() {
            log::warn!("no [[servers]] configured: nothing to proxy (try --demo)");
        }
        Vec::new()
    };
    let listener = std::net::TcpListener::bind(&settings.http.listen)
        .with_context(|| format!("binding http.listen {}", settings.http.listen))?;
    actix_web::rt::System::new().block_on(amihub::run(settings, listener))?;
    Ok(())
}
