//! Early replication: a leader's new entries sent to the followers that are in step with it
//! before the leader has synced them, so that a follower's sync overlaps the leader's (see
//! `baton_store::EarlyReplication` for why that is safe and what else it takes).
//!
//! What a follower holds is learned from its answers to openraft's own AppendEntries
//! ([`Followers::record`], called by [`crate::Connection`]); an early AppendEntries is answered
//! too, but its answer is dropped: openraft sends the same entries again once the leader's
//! sync is done, and the follower, which has them by then, answers that at once. Under load a
//! follower is always behind the leader's newest append by the one in flight, so only a
//! leader that is not busy sends anything early: no entry is sent twice when replication is
//! the bottleneck.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_raft::NodeId;
use baton_raft::typ::{AppendEntriesRequest, Entry, LogId, Vote};

use crate::MAX_APPEND_BYTES;
use crate::client::{Dialer, Peer};
use crate::frame;

/// A follower's log as the leader last learned it, under the leader's vote.
#[derive(Clone, Debug, PartialEq, Eq)]
struct InStep {
    peer: Peer,
    vote: Vote,
    last: LogId,
}

impl InStep {
    /// Whether this follower's log ends at `prev` under `vote`.
    fn holds(&self, vote: &Vote, prev: &LogId) -> bool {
        self.vote == *vote && self.last == *prev
    }
}

/// What this node, as leader, last learned of each follower's log, and the early sending of
/// new entries to the followers in step. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Followers {
    dialer: Arc<Dialer>,
    deadline: Duration,
    known: Arc<Mutex<BTreeMap<NodeId, InStep>>>,
    sent: Arc<AtomicU64>,
}

impl Followers {
    pub(crate) fn new(dialer: Arc<Dialer>, deadline: Duration) -> Self {
        Self { dialer, deadline, known: Arc::default(), sent: Arc::default() }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, InStep>> {
        self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records what `target` answered an AppendEntries under `vote`: that its log ends at
    /// `last` after a success, or nothing known (`None`) after anything else. Called after
    /// every AppendEntries, so a follower already known is updated in place.
    pub(crate) fn record(&self, target: &Peer, vote: &Vote, last: Option<LogId>) {
        let mut known = self.known();
        let Some(last) = last else {
            known.remove(&target.id);
            return;
        };
        match known.get_mut(&target.id) {
            Some(f) if f.peer == *target => (f.vote, f.last) = (*vote, last),
            _ => {
                known.insert(target.id, InStep { peer: target.clone(), vote: *vote, last });
            }
        }
    }

    /// The followers whose log ends at `prev` under `vote`.
    fn in_step(&self, vote: &Vote, prev: &LogId) -> Vec<Peer> {
        self.known().values().filter(|f| f.holds(vote, prev)).map(|f| f.peer.clone()).collect()
    }

    /// Whether some follower's log ends at `prev` under `vote`.
    pub fn wants(&self, vote: &Vote, prev: &LogId) -> bool {
        self.known().values().any(|f| f.holds(vote, prev))
    }

    /// Sends `entries`, which follow `prev`, under `vote` and with commit index `committed`,
    /// to every follower whose log ends at `prev`, each on a pooled connection of its own
    /// task; returns at once. Entries over [`MAX_APPEND_BYTES`] are left to openraft.
    pub fn send(&self, vote: Vote, prev: LogId, entries: Vec<Entry>, committed: Option<LogId>) {
        let peers = self.in_step(&vote, &prev);
        if peers.is_empty() {
            return;
        }
        let request = AppendEntriesRequest {
            vote,
            prev_log_id: Some(prev),
            entries,
            leader_commit: committed,
        };
        let frame = frame::encode(frame::APPEND, &request);
        if frame.len() > MAX_APPEND_BYTES {
            return;
        }
        let frame: Arc<[u8]> = frame.into();
        self.sent.fetch_add(1, Ordering::Relaxed);
        for peer in peers {
            let (dialer, frame, deadline) = (self.dialer.clone(), frame.clone(), self.deadline);
            tokio::spawn(async move {
                let addr = &peer.addr;
                match tokio::time::timeout(deadline, dialer.exchange(&peer, &frame)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!("early AppendEntries to {addr}: {e}"),
                    Err(_) => tracing::debug!("early AppendEntries to {addr}: no answer"),
                }
            });
        }
    }

    /// How many appends were sent early since the node started.
    pub fn sent_early(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}
