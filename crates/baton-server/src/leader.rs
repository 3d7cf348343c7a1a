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
}

impl Lease {
    /// A lease trusted for `duration` after each confirmation starts.
    pub fn new(duration: Duration) -> Self {
        Self { duration, confirmed_at: Mutex::new(None) }
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
