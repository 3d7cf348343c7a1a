//! `baton`: the Baton node binary.

use std::path::PathBuf;
use std::process::ExitCode;

use baton_server::config::Config;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Baton: a Raft-replicated failover coordinator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node.
    ///
    /// Configuration layers: built-in defaults, then --config FILE, then BATON_* environment
    /// variables (BATON_API_ADDR sets api_addr), then the flags below.
    ///
    /// Example: baton serve --config config/node1.toml
    Serve {
        /// TOML configuration file (see config/node.example.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Overrides `id`.
        #[arg(long)]
        id: Option<u64>,
        /// Overrides `api_addr`.
        #[arg(long)]
        api_addr: Option<String>,
        /// Overrides `raft_addr`.
        #[arg(long)]
        raft_addr: Option<String>,
        /// Overrides `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Overrides any key: --set heartbeat_interval_ms=40 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Exit 0 if a GET of URL answers 2xx within two seconds, 1 otherwise. For container health
    /// checks, where no curl exists.
    ///
    /// Example: baton probe http://127.0.0.1:7001/readyz
    Probe {
        /// The URL to GET.
        url: String,
    },
}

/// Exit code for a refused configuration.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a node that could not start or failed while running.
const EXIT_FAILED: u8 = 1;

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Serve { config, id, api_addr, raft_addr, data_dir, set } => {
            serve(config, id, api_addr, raft_addr, data_dir, set)
        }
        Cmd::Probe { url } => probe(&url),
    }
}

fn probe(url: &str) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return ExitCode::from(EXIT_FAILED);
    };
    let ok = runtime.block_on(async {
        let client =
            reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build().ok()?;
        let response = client.get(url).send().await.ok()?;
        response.status().is_success().then_some(())
    });
    if ok.is_some() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) }
}

fn serve(
    config: Option<PathBuf>,
    id: Option<u64>,
    api_addr: Option<String>,
    raft_addr: Option<String>,
    data_dir: Option<PathBuf>,
    set: Vec<String>,
) -> ExitCode {
    // 1. Configuration.
    let mut overrides: Vec<(String, String)> = Vec::new();
    for item in set {
        let Some((k, v)) = item.split_once('=') else {
            eprintln!("baton: --set expects KEY=VALUE, got {item:?}");
            return ExitCode::from(EXIT_CONFIG);
        };
        overrides.push((k.trim().to_string(), v.to_string()));
    }
    let quoted = |s: String| format!("{s:?}");
    overrides.extend(id.map(|v| ("id".into(), v.to_string())));
    overrides.extend(api_addr.map(|v| ("api_addr".into(), quoted(v))));
    overrides.extend(raft_addr.map(|v| ("raft_addr".into(), quoted(v))));
    overrides.extend(data_dir.map(|v| ("data_dir".into(), quoted(v.display().to_string()))));
    let config = match Config::load(config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("baton: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    // 2. Logging.
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();

    // 3. Run until SIGINT or SIGTERM.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("baton: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(baton_server::node::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
