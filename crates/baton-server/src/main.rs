//! `baton`: the Baton node binary.

use std::path::PathBuf;
use std::process::ExitCode;

use baton_server::cli::{self, Connection};
use baton_server::config::{Config, LogFormat};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: with glibc's per-thread arenas, a leader holding
/// 100,000 groups kept 100 MiB more resident than it used (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Baton: a Raft-replicated failover coordinator.
#[derive(Parser)]
#[command(version, about, after_help = EXAMPLES)]
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
        /// Overrides any key: --set heartbeat_interval_ms=20 (repeatable).
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
    /// Print a fresh token, offline, for the `admin_token` setting of a new cluster.
    ///
    /// Example: BATON_ADMIN_TOKEN=$(baton token new admin) baton serve --config node1.toml
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Manage the identities of a running cluster (administrators; anyone may rotate their own).
    ///
    /// Example: baton tokens create --name alice --role member --tenant acme
    #[command(after_help = cli::EXIT_CODES)]
    Tokens {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: TokensCmd,
    },
    /// The cluster's members: status, add a learner, promote, remove (administrators).
    ///
    /// Example: baton cluster status
    #[command(after_help = cli::EXIT_CODES)]
    Cluster {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: cli::ClusterCmd,
    },
    /// Failover groups: list, show, create, delete, history.
    ///
    /// Example: baton groups show acme/plant/collectors
    #[command(after_help = cli::EXIT_CODES)]
    Groups {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: cli::GroupsCmd,
    },
    /// A group's members (sessions) and their roles.
    ///
    /// Example: baton sessions list acme/plant/collectors
    #[command(after_help = cli::EXIT_CODES)]
    Sessions {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: cli::SessionsCmd,
    },
    /// Force the baton away from a group's holder (to a named member, if given).
    ///
    /// Example: baton failover acme/plant/collectors --to b --wait 30
    #[command(after_help = cli::EXIT_CODES)]
    Failover {
        #[command(flatten)]
        conn: Connection,
        #[command(flatten)]
        args: cli::FailoverArgs,
    },
    /// Pin the baton to a member (primary), for a while or until turned off.
    ///
    /// Example: baton override acme/plant/collectors b primary --for-seconds 600
    #[command(after_help = cli::EXIT_CODES)]
    Override {
        #[command(flatten)]
        conn: Connection,
        #[command(flatten)]
        args: cli::OverrideArgs,
    },
    /// Run COMMAND only while this member holds the baton of GROUP: join, heartbeat, start it
    /// when granted (BATON_EPOCH, BATON_GROUP, BATON_SESSION, BATON_ROLE in its environment),
    /// stop it (SIGTERM, SIGKILL after the grace period) when demoted or when the grant runs
    /// out without renewal, before anyone else may be granted the baton. Exits with COMMAND's
    /// status when it exits on its own.
    ///
    /// Example: baton run --group acme/plant/collectors --session "$(hostname)" -- ./collector --resume
    #[command(after_help = cli::EXIT_CODES)]
    Run {
        #[command(flatten)]
        conn: Connection,
        #[command(flatten)]
        args: cli::run::RunArgs,
    },
    /// Decisions as they happen.
    ///
    /// Example: baton events follow acme/plant/collectors
    #[command(after_help = cli::EXIT_CODES)]
    Events {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: cli::EventsCmd,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a new random token for NAME (default "admin").
    New {
        /// The identity name the token is for.
        #[arg(default_value = "admin")]
        name: String,
    },
}

#[derive(Subcommand)]
enum TokensCmd {
    /// Create an identity and print its token (and API key) once.
    ///
    /// Example: baton tokens create --name alice --role member --tenant acme --signing-key
    Create {
        /// Its name: letters, digits, '-', '_', '.', '@'.
        #[arg(long)]
        name: String,
        /// `admin` or `member`.
        #[arg(long, default_value = "member")]
        role: String,
        /// The tenant of a member.
        #[arg(long)]
        tenant: Option<String>,
        /// Also issue a request-signing key (Uplynk API key).
        #[arg(long)]
        signing_key: bool,
    },
    /// List identities (no secrets).
    List,
    /// Replace an identity's token (and API key); the old ones stop working at once.
    Rotate {
        /// Whose.
        name: String,
    },
    /// Revoke an identity on every node.
    Revoke {
        /// Whose.
        name: String,
    },
}

const EXAMPLES: &str = "Examples:
  baton serve --config config/node1.toml
  export BATON_URL=http://127.0.0.1:7001,http://127.0.0.1:7002 BATON_TOKEN=$(cat data/admin.token)
  baton cluster status
  baton groups show acme/plant/collectors
  baton failover acme/plant/collectors --wait 30
  baton events follow

Every client command takes --url, --token, --json and --timeout; `baton help COMMAND` says more.";

/// Exit code for a refused configuration.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a node that could not start or failed while running.
const EXIT_FAILED: u8 = 1;

fn main() -> ExitCode {
    baton_net::tls::install_default_provider();
    match Cli::parse().command {
        Cmd::Serve { config, id, api_addr, raft_addr, data_dir, set } => {
            serve(config, id, api_addr, raft_addr, data_dir, set)
        }
        Cmd::Probe { url } => probe(&url),
        Cmd::Token { command: TokenCmd::New { name } } => match baton_core::IdentityName::new(name)
        {
            Ok(name) => {
                println!("{}", baton_auth::issue_token(&name).0);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("baton: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Cmd::Tokens { conn, command } => cli::finish(tokens(&conn, command)),
        Cmd::Cluster { conn, command } => cli::finish(cli::cluster(&conn, command)),
        Cmd::Groups { conn, command } => cli::finish(cli::groups(&conn, command)),
        Cmd::Sessions { conn, command } => cli::finish(cli::sessions(&conn, command)),
        Cmd::Failover { conn, args } => cli::finish(cli::failover(&conn, args)),
        Cmd::Override { conn, args } => cli::finish(cli::role_override(&conn, args)),
        Cmd::Events { conn, command } => cli::finish(cli::events(&conn, command)),
        Cmd::Run { conn, args } => match cli::run::run(&conn, args) {
            Ok(code) => ExitCode::from(code),
            Err(f) => cli::finish(Err(f)),
        },
    }
}

fn tokens(conn: &Connection, command: TokensCmd) -> Result<(), cli::http::Failure> {
    match command {
        TokensCmd::Create { name, role, tenant, signing_key } => {
            let body = serde_json::json!({
                "name": name, "role": role, "tenant": tenant, "signing_key": signing_key,
            });
            cli::tokens(conn, "POST", "/identities", Some(body))
        }
        TokensCmd::List => cli::tokens(conn, "GET", "/identities", None),
        TokensCmd::Rotate { name } => {
            cli::tokens(conn, "POST", &format!("/identities/{name}/rotate"), None)
        }
        TokensCmd::Revoke { name } => {
            cli::tokens(conn, "DELETE", &format!("/identities/{name}"), None)
        }
    }
}

fn probe(url: &str) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return ExitCode::from(EXIT_FAILED);
    };
    let ok = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .tls_backend_preconfigured(baton_net::tls::plain_http_only())
            .build()
            .ok()?;
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
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Human => logs.with_ansi(ansi).init(),
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(true).init(),
    }

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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
