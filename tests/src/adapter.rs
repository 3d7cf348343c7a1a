//! A simulated AVEVA adapter: joins a group, heartbeats every `FailoverTimeout / 2` to any
//! node (moving on to the next node when one does not answer), and records every answer as a
//! `baton_core::invariants::Observation` on the test's clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_core::invariants::Observation;
use baton_core::{Epoch, Role, Score};
use serde_json::{Value, json};

/// One answered heartbeat with the fields the tests look at beside the observation.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The observation (times in ms since the test's epoch).
    pub observation: Observation,
    /// The `LastDataProcessedTime` answered.
    pub last_data_processed_time: Option<String>,
    /// The `LastDataProcessedTime` this adapter sent.
    pub sent_last_data: String,
}

/// Shared record of every adapter's answers.
pub type Journal = Arc<Mutex<Vec<Answer>>>;

/// A running adapter.
pub struct Adapter {
    /// Its session id.
    pub session: String,
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// How an adapter runs.
#[derive(Clone)]
pub struct AdapterConfig {
    /// Base URLs of the Baton nodes.
    pub nodes: Vec<String>,
    /// The group's URL path below a node (`/api/v1/.../groups/g`).
    pub group_path: String,
    /// Group name in observations.
    pub group: String,
    /// Heartbeat interval (FailoverTimeout / 2).
    pub interval: Duration,
    /// The test's clock origin.
    pub epoch: Instant,
    /// In how many of a thousand answers the adapter acts as if the answer were lost: it takes
    /// nothing from it (nor journals it) and waits for its next heartbeat.
    pub lose_per_mille: u64,
    /// Sends Baton's proof of having let go (`ReleasedEpoch`), as Baton's own client does;
    /// without it, it is a stock AVEVA adapter.
    pub proves_release: bool,
    /// Seeds the choice of which answers are lost.
    pub seed: u64,
}

/// A small deterministic generator (xorshift), so that a seed replays the same choices.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl AdapterConfig {
    /// Adapters of group `group` (at `group_path`) that talk to `nodes` and heartbeat every
    /// `failover_timeout / 2`, timing everything from `epoch`.
    pub fn new(
        cluster: &crate::TestCluster,
        nodes: &[u64],
        group_path: &str,
        group: &str,
        failover_timeout: Duration,
        epoch: Instant,
    ) -> Self {
        Self {
            nodes: nodes.iter().map(|id| cluster.url(*id)).collect(),
            group_path: group_path.into(),
            group: group.into(),
            interval: failover_timeout / 2,
            epoch,
            lose_per_mille: 0,
            proves_release: true,
            seed: 1,
        }
    }
}

impl Adapter {
    /// Starts heartbeating as `session` with `score`.
    pub fn start(config: AdapterConfig, session: &str, score: f64, journal: Journal) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let flag = running.clone();
        let session_id = session.to_string();
        let task = tokio::spawn(async move {
            let http = crate::admin_client(config.interval);
            let url = |node: &str| {
                format!("{node}{}/clientsessions/{session_id}/heartbeat", config.group_path)
            };
            let mut node = 0;
            let mut tick = tokio::time::interval(config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut processed = 0u64;
            // As Baton's own client: the epoch of the last answer taken, when it was
            // Secondary, sent as proof of having let go (one heartbeat in flight at a time; an
            // answer given up on is never taken).
            let mut released: Option<u64> = None;
            let salt =
                session_id.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            let mut dice = Rng((config.seed ^ salt).max(1));
            while flag.load(Ordering::SeqCst) {
                tick.tick().await;
                if !flag.load(Ordering::SeqCst) {
                    break;
                }
                processed += 1;
                // Up to one try per node within this interval.
                for _ in 0..config.nodes.len() {
                    let sent_last_data = format!(
                        "2026-01-01T00:00:{:02}.{:03}Z",
                        processed % 60,
                        processed / 60 % 1000
                    );
                    let mut body =
                        json!({"FailoverStatus": score, "LastDataProcessedTime": sent_last_data});
                    if let Some(epoch) = released.filter(|_| config.proves_release) {
                        body["ReleasedEpoch"] = json!(epoch);
                    }
                    let sent_at = ms_since(config.epoch);
                    let reply = http
                        .post(url(&config.nodes[node]))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await;
                    let answer = match reply {
                        Ok(r) if r.status().is_success() => {
                            r.text().await.ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
                        }
                        _ => None,
                    };
                    let received_at = ms_since(config.epoch);
                    let Some(a) = answer else {
                        node = (node + 1) % config.nodes.len();
                        continue;
                    };
                    // Lost on its way back: nothing taken; the next heartbeat is the next try.
                    if (dice.below(1_000) as u64) < config.lose_per_mille {
                        break;
                    }
                    let role = match a["Role"].as_u64() {
                        Some(1) => Role::Primary,
                        Some(2) => Role::PendingPrimary,
                        _ => Role::Secondary,
                    };
                    released = (role == Role::Secondary).then(|| a["Epoch"].as_u64()).flatten();
                    let valid_for_ms =
                        a["ValidFor"].as_str().map(|_| 2 * config.interval.as_millis() as u64);
                    let observation = Observation {
                        group: config.group.clone(),
                        session: session_id.clone(),
                        sent_at,
                        received_at,
                        role,
                        epoch: Epoch(a["Epoch"].as_u64().unwrap_or(0)),
                        valid_for_ms,
                        score: Score::new(score).expect("adapters report scores from 0 to 100"),
                    };
                    let last = a["LastDataProcessedTime"].as_str().map(str::to_string);
                    journal.lock().expect("journal").push(Answer {
                        observation,
                        last_data_processed_time: last,
                        sent_last_data,
                    });
                    break;
                }
            }
        });
        Self { session: session.to_string(), running, task }
    }

    /// Stops heartbeating (the adapter goes silent) and waits for its task to end.
    pub async fn stop(self) {
        self.running.store(false, Ordering::SeqCst);
        let _ = self.task.await;
    }
}

/// The answers of one session, in order.
pub fn answers_of(journal: &Journal, session: &str) -> Vec<Answer> {
    journal
        .lock()
        .expect("journal")
        .iter()
        .filter(|a| a.observation.session == session)
        .cloned()
        .collect()
}

/// Every observation.
pub fn observations(journal: &Journal) -> Vec<Observation> {
    journal.lock().expect("journal").iter().map(|a| a.observation.clone()).collect()
}
