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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_core::Timestamp;
use baton_core::detector::Detector;

/// How often the leader's detector runs.
pub const TICK: Duration = Duration::from_millis(25);

/// Leader time: wall-clock milliseconds at start-up plus monotonic time since, so that it never
/// jumps backwards or forwards with the wall clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_at_start_ms: u64,
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Self { wall_at_start_ms: u64::try_from(wall).unwrap_or(u64::MAX), start: Instant::now() }
    }
}

impl Clock {
    /// Now, in leader time.
    pub fn now(&self) -> Timestamp {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.wall_at_start_ms.saturating_add(elapsed))
    }
}

/// The leader lease: until when this node may act as the only leader without asking a quorum.
#[derive(Debug)]
pub struct Lease {
    duration: Duration,
    confirmed_at: Mutex<Option<Instant>>,
    /// Held while a quorum round runs: one round at a time.
    confirming: tokio::sync::Mutex<()>,
}

impl Lease {
    /// A lease trusted for `duration` after each confirmation starts.
    pub fn new(duration: Duration) -> Self {
        Self { duration, confirmed_at: Mutex::new(None), confirming: tokio::sync::Mutex::new(()) }
    }

    /// Runs `round` (a quorum confirmation: true if a quorum answered), one round at a time,
    /// and extends the lease from when it started if it succeeded. With `unless_held`, a caller
    /// that waited for another caller's round runs none if that round renewed the lease: on a
    /// leader too busy to renew its lease in time, hundreds of heartbeats each asking a quorum
    /// at once kept it from being renewed at all.
    pub async fn confirm<Round>(&self, unless_held: bool, round: impl FnOnce() -> Round) -> bool
    where
        Round: Future<Output = bool>,
    {
        let _turn = self.confirming.lock().await;
        if unless_held && self.valid() {
            return true;
        }
        let started = Instant::now();
        let confirmed = round().await;
        if confirmed {
            self.confirmed(started);
        }
        confirmed
    }

    /// Records a quorum confirmation that started at `started`.
    pub fn confirmed(&self, started: Instant) {
        let mut at = self.confirmed_at.lock().expect("lease lock is never poisoned");
        if at.is_none_or(|t| t < started) {
            *at = Some(started);
        }
    }

    /// Forgets every confirmation (leadership lost).
    pub fn revoke(&self) {
        *self.confirmed_at.lock().expect("lease lock is never poisoned") = None;
    }

    /// Whether the lease holds now.
    pub fn valid(&self) -> bool {
        self.remaining().is_some()
    }

    /// How long the lease still holds.
    pub fn remaining(&self) -> Option<Duration> {
        let at = (*self.confirmed_at.lock().expect("lease lock is never poisoned"))?;
        (at + self.duration).checked_duration_since(Instant::now())
    }
}

/// The detector while this node leads and has caught up; `None` otherwise.
#[derive(Debug, Default)]
pub struct Armed {
    /// The term it was armed in.
    pub term: Option<u64>,
    /// The detector.
    pub detector: Option<Detector>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

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
                        .confirm(unless_held, || async {
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
        assert!(lease.valid());
    }

    #[tokio::test]
    async fn after_a_failed_round_the_next_caller_asks_the_quorum_again() {
        let lease = Arc::new(Lease::new(Duration::from_secs(60)));
        let (rounds, heard) = confirm_at_once(&lease, 3, true, false).await;
        assert_eq!(rounds, 3, "a failed round renews nothing, so each caller tries");
        assert!(heard.iter().all(|&h| !h));
        assert!(!lease.valid());
    }

    #[tokio::test]
    async fn a_renewal_asks_the_quorum_even_while_the_lease_holds() {
        let lease = Arc::new(Lease::new(Duration::from_secs(60)));
        lease.confirmed(Instant::now());
        let (rounds, heard) = confirm_at_once(&lease, 2, false, true).await;
        assert_eq!(rounds, 2, "the leader tick's renewals are never skipped");
        assert!(heard.iter().all(|&h| h));
    }

    #[tokio::test]
    async fn a_held_lease_needs_no_round() {
        let lease = Arc::new(Lease::new(Duration::from_secs(60)));
        lease.confirmed(Instant::now());
        let (rounds, _) = confirm_at_once(&lease, 5, true, true).await;
        assert_eq!(rounds, 0);
    }
}
