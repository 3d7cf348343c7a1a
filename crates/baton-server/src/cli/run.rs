//! `baton run`: the self-fencing runner. It joins a group as a session, heartbeats through the
//! client's [`Agent`], and runs COMMAND only while the session holds the baton:
//!
//! ```text
//!  holds the baton (Primary/PendingPrimary, grant valid past stop_by) ──▶ start COMMAND
//!     env BATON_EPOCH, BATON_GROUP, BATON_SESSION, BATON_ROLE
//!  told Secondary, a new epoch, or stop_by reached without renewal ─────▶ SIGTERM,
//!     then SIGKILL after the grace period, so it is dead before the grant lapses
//!  COMMAND exits on its own ──▶ the runner exits with its status (and stops heartbeating)
//!  SIGTERM/SIGINT to the runner ──▶ stop COMMAND the same way, exit 0
//!  the runner dies (SIGKILL, a crash) ──▶ the kernel SIGKILLs COMMAND at once
//! ```
//!
//! COMMAND never outlives the runner that fences it: it is started with the parent-death
//! signal SIGKILL (`PR_SET_PDEATHSIG`), so a runner killed outright cannot leave it running
//! unheartbeated while another session is granted the baton.
//!
//! `stop_by = valid_until − grace − margin`: the child gets SIGTERM at `stop_by` at the latest
//! and SIGKILL `grace` later, `margin` before anyone else may be granted the baton. The grace
//! is at most a quarter of the failover timeout, so a healthy holder (renewed every half
//! timeout) is never stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_client::{Agent, AgentConfig, Client, ClientConfig, Status};
use baton_core::{Epoch, GroupKey, Role, SessionId};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::http::{Failure, exit};
use super::{Connection, group_key};

/// How often the runner looks at the session's status.
const TICK: Duration = Duration::from_millis(20);
/// Time kept between the child's SIGKILL and the end of the grant.
const MARGIN: Duration = Duration::from_millis(100);

/// `baton run --group G --session S -- COMMAND ARGS...`
#[derive(Args, Debug)]
pub struct RunArgs {
    /// TENANT/NAMESPACE/GROUP
    #[arg(long)]
    pub group: String,
    /// This member's session id (joined if new).
    #[arg(long)]
    pub session: String,
    /// The health score to report (0-100).
    #[arg(long, default_value_t = 100.0)]
    pub score: f64,
    /// Seconds between SIGTERM and SIGKILL (at most a quarter of the failover timeout).
    #[arg(long, default_value_t = 5.0)]
    pub grace_seconds: f64,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

struct Running {
    child: Child,
    epoch: Epoch,
}

fn signal(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Makes the kernel SIGKILL the command when the runner dies, whatever kills the runner.
/// The runner's runtime is single-threaded, so the thread that spawns the command (whose end
/// the kernel watches) lives as long as the runner.
#[allow(unsafe_code)]
fn die_with_the_runner(command: &mut Command) {
    let runner = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: it calls prctl(2) and getppid(2), both
    // async-signal-safe system calls, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The runner died before the signal was set: do not start at all.
            if nix::unistd::getppid() != runner {
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
            }
            Ok(())
        });
    }
}

/// SIGTERM, then SIGKILL once `grace` has passed; returns once the child has exited.
async fn stop(running: &mut Running, grace: Duration, why: &str) {
    eprintln!("baton run: {why}: stopping the command (SIGTERM, SIGKILL after {grace:?})");
    signal(&running.child, Signal::SIGTERM);
    if tokio::time::timeout(grace, running.child.wait()).await.is_err() {
        let _ = running.child.start_kill();
        let _ = running.child.wait().await;
    }
}

/// Runs the runner until the command exits or the runner is told to stop; returns the exit code.
pub fn run(conn: &Connection, args: RunArgs) -> Result<u8, Failure> {
    let key = group_key(&args.group)?;
    let session =
        SessionId::new(&args.session).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    let token = conn
        .token
        .clone()
        .ok_or_else(|| Failure::new(exit::USAGE, "give your token with --token or BATON_TOKEN"))?;
    let client_config = ClientConfig {
        nodes: conn.url.split(',').map(str::to_owned).collect(),
        token,
        timeout: Duration::from_secs(conn.timeout.clamp(1, 10)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    runtime.block_on(async move {
        let client = Arc::new(
            Client::new(client_config).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?,
        );
        // The grace must leave a healthy holder running: at most a quarter of the timeout.
        let timeout = loop {
            match client.group(&key).await {
                Ok(g) => break Duration::from_millis(g.config.failover_timeout_ms()),
                Err(baton_client::Error::Unavailable(e)) => {
                    eprintln!("baton run: waiting for the cluster: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    let code = match e {
                        baton_client::Error::NotFound(_) => exit::NOT_FOUND,
                        baton_client::Error::Denied(_) => exit::DENIED,
                        _ => exit::REFUSED,
                    };
                    return Err(Failure::new(code, e.to_string()));
                }
            }
        };
        let grace = Duration::from_secs_f64(args.grace_seconds.max(0.0)).min(timeout / 4);
        let agent = Agent::start(
            client,
            AgentConfig {
                group: key.clone(),
                session: session.clone(),
                score: args.score,
                interval: None,
            },
        );
        supervise(&agent, &key, &session, &args.command, grace).await
    })
}

async fn supervise(
    agent: &Agent,
    key: &GroupKey,
    session: &SessionId,
    command: &[String],
    grace: Duration,
) -> Result<u8, Failure> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
    let mut running: Option<Running> = None;
    let may_run = |status: &Status, now: Instant| status.holds_baton(now + grace + MARGIN);
    loop {
        // Only with the command stopped may the agent prove that this session let go.
        agent.set_idle(running.is_none());
        let status = agent.status();
        let now = Instant::now();
        if let Some(r) = running.as_mut() {
            let why = if status.role == Role::Secondary {
                Some("demoted to Secondary".to_string())
            } else if status.epoch != r.epoch {
                Some(format!("the epoch moved from {} to {}", r.epoch.0, status.epoch.0))
            } else if !may_run(&status, now) {
                Some("the grant is running out without renewal".to_string())
            } else {
                None
            };
            if let Some(why) = why {
                stop(r, grace, &why).await;
                running = None;
                continue;
            }
            if let Ok(Some(exited)) = r.child.try_wait() {
                eprintln!("baton run: the command exited ({exited})");
                let code = exited.code().map_or(1, |c| u8::try_from(c).unwrap_or(1));
                return Ok(code);
            }
        } else if may_run(&status, now) {
            let role = if status.role == Role::Primary { "Primary" } else { "PendingPrimary" };
            eprintln!(
                "baton run: {session} holds the baton of {key} (epoch {}): starting {}",
                status.epoch.0, command[0]
            );
            let mut child = Command::new(&command[0]);
            child
                .args(&command[1..])
                .env("BATON_EPOCH", status.epoch.0.to_string())
                .env("BATON_GROUP", key.to_string())
                .env("BATON_SESSION", session.as_str())
                .env("BATON_ROLE", role)
                .kill_on_drop(true);
            die_with_the_runner(&mut child);
            // Before the command starts: no proof of letting go may leave while it runs.
            agent.set_idle(false);
            let child = child.spawn().map_err(|e| {
                Failure::new(exit::USAGE, format!("cannot start {}: {e}", command[0]))
            })?;
            running = Some(Running { child, epoch: status.epoch });
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    if let Some(r) = running.as_mut() {
        stop(r, grace, "asked to stop").await;
    }
    Ok(exit::OK)
}
