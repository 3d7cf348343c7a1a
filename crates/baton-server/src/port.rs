//! What a node's Raft port answers on framed connections: openraft's RPCs from peers, and
//! batches of requests that other nodes forward to it as leader.

use std::sync::Arc;
use std::time::Duration;

use baton_net::{FORWARD, RaftPort, Rpcs, VOTE};
use baton_raft::typ::Raft;
use tokio::time::Instant;

use crate::coordinator::RaftCoordinator;
use crate::proxy::LeaderRequest;

/// The node's Raft port.
pub type Port = RaftPort<PortRpcs>;

/// Answers framed requests: a FORWARD batch with the coordinator (each request exactly as if
/// it had arrived here; one that finds this node no longer leading answers `NotLeader`), every
/// other kind with openraft, except votes while the node is [`VoteHold`]ing them.
pub struct PortRpcs {
    raft: Raft,
    coordinator: Arc<RaftCoordinator>,
    votes: VoteHold,
}

impl PortRpcs {
    /// Answers with `raft` and `coordinator`, refusing votes until `votes` lets go.
    pub fn new(raft: Raft, coordinator: Arc<RaftCoordinator>, votes: VoteHold) -> Self {
        Self { raft, coordinator, votes }
    }
}

impl Rpcs for PortRpcs {
    async fn answer(&self, kind: u8, body: Vec<u8>) -> Result<Vec<u8>, String> {
        if kind == FORWARD {
            let coordinator = &self.coordinator;
            return baton_net::answer_batch(&body, |request: LeaderRequest| {
                coordinator.execute(request)
            })
            .await;
        }
        if kind == VOTE && self.votes.holds(Instant::now()) {
            return Err("this node has just started and votes for nobody yet".into());
        }
        self.raft.answer(kind, body).await
    }
}

/// A node that has just started votes for nobody for one longest election timeout.
///
/// A follower refuses votes for `election_timeout_max` after it last heard its leader, which
/// the leader's lease counts on (`leader.rs`); but a follower that restarts has forgotten when
/// that was, and could vote at once for a candidate, so that another leader is elected while
/// the old one still trusts its lease. Holding every vote for that long after starting covers
/// whatever it last heard before it stopped.
#[derive(Clone, Copy, Debug)]
pub struct VoteHold {
    until: Instant,
}

impl VoteHold {
    /// Votes held from `started` for `hold`.
    pub fn new(started: Instant, hold: Duration) -> Self {
        Self { until: started + hold }
    }

    /// Whether votes are still held at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        now < self.until
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use proptest::prelude::*;

    use super::*;
    use crate::proxy::Outcome;

    #[test]
    fn a_node_just_started_votes_for_nobody_for_one_longest_election_timeout() {
        let started = Instant::now();
        let hold = VoteHold::new(started, Duration::from_millis(160));
        assert!(hold.holds(started));
        assert!(hold.holds(started + Duration::from_millis(159)));
        assert!(!hold.holds(started + Duration::from_millis(160)));
    }

    /// Answers a FORWARD `body` the way the port does, with a stand-in for the coordinator that
    /// counts what it runs.
    fn answer(body: &[u8]) -> (Result<Vec<u8>, String>, usize) {
        let ran = Cell::new(0);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let answered = runtime.block_on(baton_net::answer_batch(body, |_: LeaderRequest| {
            ran.set(ran.get() + 1);
            async { Outcome::NotLeader }
        }));
        (answered, ran.get())
    }

    fn valid_body() -> Vec<u8> {
        let batch =
            vec![LeaderRequest::Promote(1), LeaderRequest::Remove(2), LeaderRequest::Promote(3)];
        postcard::to_allocvec(&batch).expect("encodes")
    }

    #[test]
    fn a_batch_is_answered_once_per_request_in_order() {
        let (answered, ran) = answer(&valid_body());
        let outcomes: Vec<Outcome> =
            postcard::from_bytes(&answered.expect("answered")).expect("decodes");
        assert_eq!((outcomes.len(), ran), (3, 3));
    }

    proptest! {
        /// A hostile or corrupt body never panics the leader: either nothing of it runs and
        /// the frame is rejected as undecodable, or each request it decodes to runs once and
        /// gets one answer.
        #[test]
        fn any_forward_body_is_rejected_whole_or_answered_once_per_request(
            body in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..256),
                (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| {
                    let mut body = valid_body();
                    let at = at.index(body.len());
                    body[at] = byte;
                    body
                }),
            ]
        ) {
            match answer(&body) {
                (Ok(answers), ran) => {
                    let outcomes: Vec<Outcome> =
                        postcard::from_bytes(&answers).expect("answers decode");
                    prop_assert_eq!(outcomes.len(), ran);
                }
                (Err(reason), ran) => {
                    prop_assert!(reason.contains("cannot decode"), "{}", reason);
                    prop_assert_eq!(ran, 0);
                }
            }
        }
    }
}
