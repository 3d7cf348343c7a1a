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
}
