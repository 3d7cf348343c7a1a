//! Keeps replication streaming under load, which openraft 0.9 does not do on its own.
//!
//! openraft 0.9 keeps one AppendEntries in flight per follower and starts the next one only
//! when something new is proposed (or at the next heartbeat). Entries proposed while a
//! follower's request was in flight therefore wait, after its answer, for another write or for
//! the heartbeat interval. Under a closed loop of clients (every writer waiting for its own
//! commit) nothing new is proposed, and every round of replication took a heartbeat interval:
//! followers synced 40 times a second whatever the load.
//!
//! The leader watches its replication progress instead: when a follower's matched index
//! advances and the log holds more than it matched, the leader triggers a heartbeat, which
//! sends that follower the waiting entries at once (and an empty heartbeat to an idle,
//! caught-up follower; a follower with a request in flight is left alone).

use std::collections::BTreeMap;
use std::future::Future;

use baton_raft::NodeId;
use baton_raft::typ::{Raft, RaftMetrics};

/// Runs until `stop` resolves: after each follower acknowledgement that leaves it behind the
/// leader's log, sends it what is waiting.
pub async fn keep_streaming(raft: Raft, id: NodeId, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut metrics = raft.metrics();
    let mut matched = BTreeMap::new();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let behind = lagging_after_ack(&metrics.borrow_and_update(), id, &mut matched);
        if behind && raft.trigger().heartbeat().await.is_err() {
            return;
        }
    }
}

/// Whether a follower's matched index moved since `matched` last saw it and is still behind the
/// leader's last log index. Updates `matched`.
fn lagging_after_ack(
    metrics: &RaftMetrics,
    id: NodeId,
    matched: &mut BTreeMap<NodeId, Option<u64>>,
) -> bool {
    let Some(replication) = &metrics.replication else {
        matched.clear();
        return false;
    };
    let last = metrics.last_log_index;
    let mut behind = false;
    for (follower, log_id) in replication.iter().filter(|(follower, _)| **follower != id) {
        let index = log_id.map(|l| l.index);
        let moved = matched.insert(*follower, index) != Some(index);
        behind |= moved && index < last;
    }
    behind
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    fn metrics(last: u64, followers: &[(NodeId, u64)]) -> RaftMetrics {
        let mut m = RaftMetrics::new_initial(1);
        m.last_log_index = Some(last);
        let log_id = |index| Some(LogId::new(CommittedLeaderId::new(1, 1), index));
        m.replication = Some(
            std::iter::once((1, log_id(last)))
                .chain(followers.iter().map(|&(id, index)| (id, log_id(index))))
                .collect(),
        );
        m
    }

    #[test]
    fn an_ack_that_leaves_a_follower_behind_sends_it_more() {
        let mut seen = BTreeMap::new();
        assert!(lagging_after_ack(&metrics(10, &[(2, 5), (3, 5)]), 1, &mut seen));
        // Nothing acknowledged since: no second nudge (its request is in flight).
        assert!(!lagging_after_ack(&metrics(12, &[(2, 5), (3, 5)]), 1, &mut seen));
        assert!(lagging_after_ack(&metrics(12, &[(2, 10), (3, 5)]), 1, &mut seen));
    }

    #[test]
    fn caught_up_followers_and_followers_need_no_nudge() {
        let mut seen = BTreeMap::new();
        assert!(!lagging_after_ack(&metrics(10, &[(2, 10), (3, 10)]), 1, &mut seen));
        let mut follower = RaftMetrics::new_initial(2);
        follower.last_log_index = Some(10);
        assert!(!lagging_after_ack(&follower, 2, &mut seen));
        assert!(seen.is_empty(), "a node that stops leading forgets what it saw");
    }
}
