//! The heartbeat agent: keeps one session of a group alive and publishes what Baton answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_core::{Epoch, GroupKey, Role, SessionId};
use tokio::sync::watch;

use crate::{Client, Error};

/// What an [`Agent`] runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The group.
    pub group: GroupKey,
    /// The session to keep alive (joined if it does not exist).
    pub session: SessionId,
    /// The health score to report (0-100).
    pub score: f64,
    /// How often to heartbeat; `None`: every `FailoverTimeout / 2` of the group.
    pub interval: Option<Duration>,
}

/// The session as Baton last answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Its role; Secondary until a heartbeat was answered.
    pub role: Role,
    /// The group's epoch.
    pub epoch: Epoch,
    /// Until when its grant (Primary or PendingPrimary) holds without renewal.
    pub valid_until: Option<Instant>,
    /// Heartbeats answered so far.
    pub answered: u64,
    /// The last failure, cleared by the next answer.
    pub last_error: Option<String>,
}

impl Status {
    /// Whether the session holds the baton at `now`: granted, and the grant not yet lapsed.
    pub fn holds_baton(&self, now: Instant) -> bool {
        matches!(self.role, Role::Primary | Role::PendingPrimary)
            && self.valid_until.is_some_and(|until| now < until)
    }
}

/// A running agent; heartbeats stop when it is dropped.
pub struct Agent {
    status: watch::Receiver<Status>,
    task: tokio::task::JoinHandle<()>,
    idle: Arc<AtomicBool>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Agent {
    /// Starts heartbeating on the current runtime.
    pub fn start(client: Arc<Client>, config: AgentConfig) -> Self {
        let initial = Status {
            role: Role::Secondary,
            epoch: Epoch(0),
            valid_until: None,
            answered: 0,
            last_error: None,
        };
        let (tx, status) = watch::channel(initial);
        let idle = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(client, config, tx, idle.clone()));
        Self { status, task, idle }
    }

    /// Says whether nothing acts on a grant of this session any more (`true`: whatever ran as
    /// Primary has stopped). While it is so and the last answer was Secondary, the agent's
    /// heartbeats prove that the session let go, so a hand-over away from it completes at
    /// once instead of when its last grant lapses. Never set it while anything may still act
    /// as Primary: Baton would then grant another member while this one still works.
    pub fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::SeqCst);
    }

    /// The latest status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that sees every new status.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }
}

async fn run(
    client: Arc<Client>,
    config: AgentConfig,
    tx: watch::Sender<Status>,
    idle: Arc<AtomicBool>,
) {
    let failed = |tx: &watch::Sender<Status>, e: &Error| {
        tx.send_modify(|s| s.last_error = Some(e.to_string()));
    };
    // Join, and learn the interval, retrying until the cluster answers.
    let interval = loop {
        let joined = client.join(&config.group, &config.session).await;
        let interval = match (joined, config.interval) {
            (Ok(()), Some(interval)) => Ok(interval),
            (Ok(()), None) => client
                .group(&config.group)
                .await
                .map(|g| Duration::from_millis(g.config.failover_timeout_ms() / 2)),
            (Err(e), _) => Err(e),
        };
        match interval {
            Ok(interval) => break interval,
            Err(e) => {
                tracing::warn!(error = %e, "cannot join yet");
                failed(&tx, &e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let mut next = tokio::time::Instant::now();
    // The epoch of the last answer taken, when it was Secondary: sent with the next heartbeat,
    // once the owner says nothing acts on a grant, as proof that this session let go, so a
    // hand-over need not wait for its last grant to lapse. One heartbeat is in flight at a
    // time, and an answer given up on is never taken, which is what makes the proof true.
    let mut released = None;
    loop {
        let proof = released.filter(|_| idle.load(Ordering::SeqCst));
        match client.heartbeat(&config.group, &config.session, config.score, proof).await {
            Ok(grant) => tx.send_modify(|s| {
                released = (grant.role == Role::Secondary).then_some(grant.epoch);
                s.role = grant.role;
                s.epoch = grant.epoch;
                // A Secondary holds nothing; a grant holds until the validity of the last
                // answer taken.
                s.valid_until = match grant.role {
                    Role::Secondary => None,
                    _ => grant.valid_until,
                };
                s.answered += 1;
                s.last_error = None;
            }),
            Err(Error::TooFast(wait)) => next += wait,
            Err(e) => failed(&tx, &e),
        }
        next += interval;
        // Never fall behind by more than one interval (after a long outage).
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
        tokio::time::sleep_until(next).await;
    }
}
