//! What only the leader does for failover: measure liveness (the core's `Detector`), keep a
//! leader lease, and turn the detector's decisions into Raft commands.
//!
//! ```text
//!  became leader (next tick or first request) ─▶ ensure_linearizable (caught up)
//!                                              ─▶ Detector::new(state, now)  (re-armed)
//!  every TICK ─▶ refresh lease ─▶ detector.tick(state, now) ─▶ client_write each command
//!  lost leadership ─▶ detector dropped: no answer that grants anything
//! ```
//!
//! The lease: a quorum confirmation (`ensure_linearizable`) that *started* at instant `t`
//! proves that no other leader can be elected before `t + election_timeout_max`: each follower
//! that answered heard from this leader after `t`, refuses votes for `election_timeout_max`
//! after that, and campaigns only after that plus its own election timeout. Baton trusts it for
//! `election_timeout_min`, on the monotonic clock, which keeps running through a SIGSTOP; the
//! difference is the margin for clocks that run at slightly different rates.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_api::CoordinatorError;
use baton_core::detector::Detector;
use baton_core::{Command, Response, Timestamp};
use tokio::time::Instant;

use crate::coordinator::RaftCoordinator;

/// How often the leader's detector runs.
pub const TICK: Duration = Duration::from_millis(25);

/// Leader time: wall-clock milliseconds at start-up plus monotonic time since, so that it never
/// jumps backwards or forwards with the wall clock. A simulation starts it at a chosen reading
/// and lets it run fast or slow ([`Clock::starting_at`]).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_at_start_ms: u64,
    start: Instant,
    /// How much faster than the monotonic clock it runs, in parts per million (negative:
    /// slower).
    drift_ppm: i32,
}

impl Default for Clock {
    fn default() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Self::starting_at(u64::try_from(wall).unwrap_or(u64::MAX), 0)
    }
}

impl Clock {
    /// A clock that reads `wall_ms` now and runs `drift_ppm` parts per million fast.
    pub fn starting_at(wall_ms: u64, drift_ppm: i32) -> Self {
        Self { wall_at_start_ms: wall_ms, start: Instant::now(), drift_ppm }
    }

    /// Now, in leader time.
    pub fn now(&self) -> Timestamp {
        let elapsed_us = self.start.elapsed().as_micros();
        let rate = 1_000_000 + i128::from(self.drift_ppm);
        let elapsed_ms =
            i128::try_from(elapsed_us).unwrap_or(i128::MAX / 2_000_000) * rate / 1_000_000_000;
        let elapsed = u64::try_from(elapsed_ms.max(0)).unwrap_or(u64::MAX);
        Timestamp(self.wall_at_start_ms.saturating_add(elapsed))
    }
}

/// The leader lease: until when this node may act as the only leader without asking a quorum.
/// Each confirmation is stamped with the term its caller was leading in, and serves only
/// callers in that term: a round of an earlier term proves nothing about what a later term's
/// leadership has applied (its first entry among it).
#[derive(Debug)]
pub struct Lease {
    duration: Duration,
    confirmed: Mutex<Option<Confirmation>>,
    /// Held while a quorum round runs: one round at a time.
    confirming: tokio::sync::Mutex<()>,
}

/// The latest quorum confirmation: in which term, and when its round started.
#[derive(Clone, Copy, Debug)]
struct Confirmation {
    term: u64,
    started: Instant,
}

impl Lease {
    /// A lease trusted for `duration` after each confirmation starts.
    pub fn new(duration: Duration) -> Self {
        Self { duration, confirmed: Mutex::new(None), confirming: tokio::sync::Mutex::new(()) }
    }

    /// Runs `round` (a quorum confirmation: true if a quorum answered) for a caller leading in
    /// `term`, one round at a time, and extends the lease from when it started if it
    /// succeeded. With `unless_held`, a caller that waited for another caller's round runs
    /// none if that round renewed the lease for `term`: on a leader too busy to renew its
    /// lease in time, hundreds of heartbeats each asking a quorum at once kept it from being
    /// renewed at all.
    pub async fn confirm<Round>(
        &self,
        term: u64,
        unless_held: bool,
        round: impl FnOnce() -> Round,
    ) -> bool
    where
        Round: Future<Output = bool>,
    {
        let _turn = self.confirming.lock().await;
        if unless_held && self.valid(term) {
            return true;
        }
        let started = Instant::now();
        let confirmed = round().await;
        if confirmed {
            self.confirmed(term, started);
        }
        confirmed
    }

    /// Records a quorum confirmation, by a caller leading in `term`, that started at
    /// `started`. One of an earlier term than the one recorded is ignored.
    pub fn confirmed(&self, term: u64, started: Instant) {
        let mut confirmed = self.confirmed.lock().expect("lease lock is never poisoned");
        let newer = confirmed.is_none_or(|c| (c.term, c.started) < (term, started));
        if newer {
            *confirmed = Some(Confirmation { term, started });
        }
    }

    /// Forgets every confirmation (leadership lost).
    pub fn revoke(&self) {
        *self.confirmed.lock().expect("lease lock is never poisoned") = None;
    }

    /// Whether the lease holds now for a caller leading in `term`.
    pub fn valid(&self, term: u64) -> bool {
        let confirmed = *self.confirmed.lock().expect("lease lock is never poisoned");
        confirmed.is_some_and(|c| c.term == term && c.started.elapsed() < self.duration)
    }
}

/// The detector while this node leads and has caught up; `None` otherwise.
#[derive(Debug, Default)]
pub struct Armed {
    /// The term it was armed in.
    pub term: Option<u64>,
    /// The detector.
    pub detector: Option<Detector>,
    /// How long its last pass kept this node busy (its parts, not the waits between them), in
    /// microseconds.
    pub last_pass_us: Option<u64>,
}

impl RaftCoordinator {
    pub(crate) fn armed(&self) -> std::sync::MutexGuard<'_, Armed> {
        self.armed
            .lock()
            .expect("the detector lock is never poisoned: nothing panics while holding it")
    }

    /// Runs with the detector, if this node leads and armed it in the current term. A detector
    /// from an earlier term is never used, even before the next tick disarms it.
    pub(crate) fn with_detector<T>(&self, f: impl FnOnce(&mut Detector) -> T) -> Option<T> {
        let (leading, term) = self.leadership();
        if !leading {
            return None;
        }
        self.with_detector_armed_in(term, f)
    }

    /// [`Self::with_detector`] if this node still leads in `term`.
    pub(crate) fn with_detector_in<T>(
        &self,
        term: u64,
        f: impl FnOnce(&mut Detector) -> T,
    ) -> Option<T> {
        let (leading, now_term) = self.leadership();
        if !leading || now_term != term {
            return None;
        }
        self.with_detector_armed_in(term, f)
    }

    /// Runs with the detector if it was armed in `term` (the caller has just seen this node
    /// lead in `term`).
    pub(crate) fn with_detector_armed_in<T>(
        &self,
        term: u64,
        f: impl FnOnce(&mut Detector) -> T,
    ) -> Option<T> {
        let mut armed = self.armed();
        if armed.term != Some(term) {
            return None;
        }
        armed.detector.as_mut().map(f)
    }

    /// Arms the detector for `term` unless it already is: the caller has just confirmed
    /// leadership, which also waited until everything committed was applied, so the state is
    /// caught up and every deadline is re-armed from it.
    pub(crate) fn arm(&self, term: u64) {
        if self.armed().term == Some(term) {
            return;
        }
        let applied = self.state.read();
        let mut armed = self.armed();
        if armed.term != Some(term) {
            let detector = Detector::new(&applied.state, self.clock.now())
                .with_clock_drift(self.options.clock_drift_ppm);
            *armed = Armed { term: Some(term), detector: Some(detector), last_pass_us: None };
            tracing::info!(term, "became leader; failure detector armed, every deadline re-armed");
        }
    }

    /// Whether this node leads with an armed detector, arming it first if it has just been
    /// elected: a request that reaches a new leader is served at once instead of waiting for
    /// the next tick.
    pub(crate) async fn ready_to_lead(&self) -> bool {
        let (leading, term) = self.leadership();
        if !leading {
            return false;
        }
        if self.armed().term == Some(term) {
            return true;
        }
        // A round of this term also waited until everything committed was applied, this
        // term's first entry among it: whichever caller's round it was, the state is caught up.
        if self.hold_lease(term).await.is_err() || !self.barrier(term).await {
            return false;
        }
        self.arm(term);
        true
    }

    /// Commits and applies an entry of `term` before the detector is armed in it. A quorum
    /// round alone is not enough: it waits only for what is already committed, and an entry an
    /// earlier leader (this node among them) proposed and never saw committed may still be in
    /// the log, a grant among them, to be committed by this term's first entry. A detector
    /// armed before then would answer from a state that decision is about to change: it told
    /// a holder "Primary" while its successor's grant, decided two terms before, was being
    /// committed (cluster simulation, seed 398). Once an entry of this term is applied,
    /// everything before it is applied or gone.
    async fn barrier(&self, term: u64) -> bool {
        let barrier = Command::Checkpoint { groups: Vec::new() };
        self.propose(barrier, None).await.is_ok() && self.leadership() == (true, term)
    }

    /// Confirms leadership in `term` with a quorum (a round of its own, which also waits
    /// until everything committed is applied) and extends the lease from when it started.
    pub(crate) async fn confirm_leadership(&self, term: u64) -> Result<(), CoordinatorError> {
        self.confirm(term, false).await
    }

    /// Makes sure the lease holds, confirming leadership with a quorum only if it has lapsed.
    /// Callers that find it lapsed while a round is under way wait for that round instead of
    /// starting their own (see [`Lease::confirm`]; at 256 clients the bench's heartbeats
    /// answered 503 without this).
    pub(crate) async fn hold_lease(&self, term: u64) -> Result<(), CoordinatorError> {
        if self.lease.valid(term) { Ok(()) } else { self.confirm(term, true).await }
    }

    /// A quorum round through [`Lease::confirm`]. Bounded, the wait for another caller's round
    /// included, by the leader wait: a leader that cannot reach a quorum within two election
    /// timeouts is not going to, and its clients should hear 503 promptly.
    pub(crate) async fn confirm(
        &self,
        term: u64,
        unless_held: bool,
    ) -> Result<(), CoordinatorError> {
        let round = self
            .lease
            .confirm(term, unless_held, || async { self.raft.ensure_linearizable().await.is_ok() });
        match tokio::time::timeout(self.options.leader_wait, round).await {
            Ok(true) => Ok(()),
            _ => Err(CoordinatorError::NoLeader),
        }
    }

    /// The leader's duties, until `stop` resolves: arm the detector when this node becomes
    /// leader (after catching up), keep the lease fresh, tick the detector and propose what it
    /// decides; disarm when leadership is lost.
    pub async fn run_leader_duties(&self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut detector_due = Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = interval.tick() => self.leader_tick(&mut detector_due).await,
            }
        }
    }

    /// One round of the leader's duties. The lease is refreshed every [`TICK`]; the detector
    /// runs when `detector_due` has come, and sets when it is due next (see
    /// [`next_detector_pass`]).
    pub(crate) async fn leader_tick(&self, detector_due: &mut Instant) {
        let (leading, term) = self.leadership();
        if !leading {
            let mut armed = self.armed();
            if armed.detector.is_some() {
                tracing::info!("lost leadership; failure detector disarmed");
            }
            *armed = Armed::default();
            self.lease.revoke();
            return;
        }
        // Refresh the lease every tick; a leader that cannot reach a quorum stops granting.
        if self.confirm_leadership(term).await.is_err() {
            self.lease.revoke();
            return;
        }
        if self.armed().term != Some(term) && !self.barrier(term).await {
            return;
        }
        self.arm(term);
        if let Some(admin) = &self.options.bootstrap_admin
            && self.state.read().state.identity_count() == 0
        {
            let command = Command::BootstrapAdmin { identity: admin.clone() };
            match self.propose(command, None).await {
                Ok(Response::Identity(_)) => {
                    tracing::info!(name = %admin.name, "created the bootstrap administrator");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not create the bootstrap administrator")
                }
            }
        }
        let started = Instant::now();
        if started < *detector_due {
            return;
        }
        let now = self.clock.now();
        // The pass goes in parts of DETECTOR_PART groups, each under the state's read lock
        // and the detector's lock, and lets go of both between parts: an apply (which needs
        // the state's write lock) or a heartbeat (the detector's) waits for one part, not for
        // a pass over every group (about 0.75 ms with 4,096 groups, 20 ms with 100,000).
        let mut commands = Vec::new();
        let mut from = None;
        let mut busy = Duration::ZERO;
        loop {
            let part_started = Instant::now();
            let (part, next) = {
                let applied = self.state.read();
                self.with_detector(|d| {
                    d.tick_part(&applied.state, now, from.as_ref(), DETECTOR_PART)
                })
                .unwrap_or_default()
            };
            busy += part_started.elapsed();
            commands.extend(part);
            match next {
                Some(key) => from = Some(key),
                None => break,
            }
            tokio::task::yield_now().await;
        }
        *detector_due = next_detector_pass(started, busy);
        {
            let mut armed = self.armed();
            if armed.term == Some(term) {
                armed.last_pass_us = Some(u64::try_from(busy.as_micros()).unwrap_or(u64::MAX));
            }
        }
        // Proposed together, so Raft replicates them in as few appends as it can: a leader
        // that finds a thousand holders stale commits their successors at once.
        let proposals = commands.into_iter().map(|command| async move {
            match self.propose(command.clone(), None).await {
                Ok(Response::Rejected(reason)) => {
                    tracing::debug!(%reason, "detector decision superseded");
                    // Only the detector of the term that decided it: a later term's knows
                    // nothing of this decision.
                    self.with_detector_in(term, |d| d.refused(&command));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not commit a failover decision"),
            }
        });
        futures::future::join_all(proposals).await;
    }
}

/// When the detector runs next, after a pass that started at `started` and kept the leader
/// busy for `took` (its parts, not the waits between them): every [`TICK`], or, when a pass is
/// long (a leader of 100,000 groups), after four times its length. Back to back, long passes
/// under one lock left writes a few milliseconds in every 25 (50 writes/s with 100,000
/// groups); in parts they let applies and heartbeats in between, but still cost the leader's
/// CPU. Failures are then noticed up to one pass period late.
fn next_detector_pass(started: Instant, took: Duration) -> Instant {
    started + TICK.max(took.saturating_mul(DETECTOR_PERIOD_PER_PASS))
}

/// A detector pass may take at most this share (one in N) of the leader's time.
const DETECTOR_PERIOD_PER_PASS: u32 = 4;

/// Groups per part of a detector pass (about 0.2 ms of the leader's time on this project's
/// benchmark machine): as many as one checkpoint command carries, so that a part's
/// checkpoints go in one command.
const DETECTOR_PART: usize = baton_core::detector::CHECKPOINT_GROUPS;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const TERM: u64 = 3;

    /// `callers` concurrent confirmations of `lease`, each round taking 10 ms and answering
    /// `answer`; how many rounds ran, and what each caller heard.
    async fn confirm_at_once(
        lease: &Arc<Lease>,
        callers: usize,
        unless_held: bool,
        answer: bool,
    ) -> (usize, Vec<bool>) {
        let rounds = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (lease, rounds) = (lease.clone(), rounds.clone());
                tokio::spawn(async move {
                    lease
                        .confirm(TERM, unless_held, || async {
                            rounds.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            answer
                        })
                        .await
                })
            })
            .collect();
        let mut heard = Vec::new();
        for task in tasks {
            heard.push(task.await.expect("a caller"));
        }
        (rounds.load(Ordering::SeqCst), heard)
    }

    #[tokio::test]
    async fn callers_that_find_the_lease_lapsed_share_one_quorum_round() {
        let lease = Arc::new(Lease::new(Duration::from_secs(60)));
        let (rounds, heard) = confirm_at_once(&lease, 100, true, true).await;
        assert_eq!(rounds, 1);
        assert!(heard.iter().all(|&h| h), "every caller holds the lease");
        assert!(lease.valid(TERM));
    }

    #[tokio::test]
    async fn after_a_failed_round_the_next_caller_asks_the_quorum_again() {
        let lease = Arc::new(Lease::new(Duration::from_secs(60)));
        let (rounds, heard) = confirm_at_once(&lease, 3, true, false).await;
        assert_eq!(rounds, 3, "a failed round renews nothing, so each caller tries");
        assert!(heard.iter().all(|&h| !h));
        assert!(!lease.valid(TERM));
    }

    #[tokio::test]
    async fn a_renewal_asks_the_quorum_even_while_the_lease_holds() {
        let lease = Arc::new(Lease::new(Duration::from_secs(60)));
        lease.confirmed(TERM, Instant::now());
        let (rounds, heard) = confirm_at_once(&lease, 2, false, true).await;
        assert_eq!(rounds, 2, "the leader tick's renewals are never skipped");
        assert!(heard.iter().all(|&h| h));
    }

    #[tokio::test]
    async fn a_held_lease_needs_no_round() {
        let lease = Arc::new(Lease::new(Duration::from_secs(60)));
        lease.confirmed(TERM, Instant::now());
        let (rounds, _) = confirm_at_once(&lease, 5, true, true).await;
        assert_eq!(rounds, 0);
    }

    #[tokio::test]
    async fn a_confirmation_of_an_earlier_term_serves_no_caller_of_a_later_one() {
        let lease = Arc::new(Lease::new(Duration::from_secs(60)));
        lease.confirmed(TERM - 1, Instant::now());
        assert!(!lease.valid(TERM));
        let (rounds, heard) = confirm_at_once(&lease, 5, true, true).await;
        assert_eq!(rounds, 1, "the new term's callers share one round of their own");
        assert!(heard.iter().all(|&h| h));
        assert!(lease.valid(TERM));
        assert!(!lease.valid(TERM - 1), "nor does a later term's serve an earlier one");
        lease.confirmed(TERM - 1, Instant::now());
        assert!(lease.valid(TERM), "a late confirmation of the earlier term is ignored");
    }

    #[test]
    fn a_short_detector_pass_runs_again_next_tick() {
        let start = Instant::now();
        assert_eq!(next_detector_pass(start, Duration::from_millis(2)), start + TICK);
    }

    #[test]
    fn a_long_detector_pass_leaves_the_leader_three_quarters_of_its_time() {
        let start = Instant::now();
        let next = next_detector_pass(start, Duration::from_millis(20));
        assert_eq!(next, start + Duration::from_millis(80));
    }
}
