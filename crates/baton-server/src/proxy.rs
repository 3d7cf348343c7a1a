//! Forwarding and routing: how a request that only the leader may serve reaches it. Every
//! node runs a [`LeaderRequest`] itself when it leads, and otherwise sends it to the leader's
//! internal port (batched with others by `baton_net`'s `Forwarder`) and waits for its
//! [`Outcome`]; a request whose node turned out not to lead is re-routed, bounded in time.

use std::time::Duration;

use baton_api::{ClusterStatus, CoordinatorError, HeartbeatOutcome, Served};
use baton_core::{Actor, Beat, Command, Query, QueryResult, Response};
use baton_net::CallError;
use baton_raft::{NodeId, NodeInfo};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::coordinator::RaftCoordinator;

/// Longest pause before re-routing a request whose node turned out not to lead (or could not
/// be reached); the pause ends as soon as this node learns of another leader.
const REROUTE_PAUSE: Duration = Duration::from_millis(50);

/// A request only the leader may serve.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderRequest {
    /// Replicate a command on behalf of an actor.
    Write(Command, Option<Actor>),
    /// Answer a query linearizably.
    Read(Query),
    /// Add a learner.
    AddLearner {
        /// Its id.
        id: NodeId,
        /// Its addresses.
        node: NodeInfo,
    },
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a node.
    Remove(NodeId),
    /// A session's heartbeat.
    Heartbeat(Beat),
}

/// What the leader answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderAnswer {
    /// A committed command's response.
    Written(Response),
    /// A linearizable query's answer.
    Read(QueryResult),
    /// The cluster after a membership change.
    Membership(ClusterStatus),
    /// A heartbeat's outcome.
    Heartbeat(HeartbeatOutcome),
}

/// The outcome of running a [`LeaderRequest`] on one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outcome {
    /// Served.
    Done(Box<LeaderAnswer>),
    /// This node does not lead; nothing was done, so the request may be re-routed.
    NotLeader,
    /// Failed for a reason re-routing would not fix.
    Failed(CoordinatorError),
}

impl Outcome {
    pub(crate) fn done(answer: LeaderAnswer) -> Self {
        Outcome::Done(Box::new(answer))
    }
}

impl RaftCoordinator {
    /// Waits (bounded) until a leader is known and returns it with its addresses.
    pub(crate) async fn leader(&self) -> Result<(NodeId, NodeInfo), CoordinatorError> {
        let metrics = self
            .raft
            .wait(Some(self.options.leader_wait))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|_| CoordinatorError::NoLeader)?;
        let leader = metrics.current_leader.ok_or(CoordinatorError::NoLeader)?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .ok_or(CoordinatorError::NoLeader)?;
        Ok((leader, node))
    }

    /// Runs `request` on the leader, wherever it is.
    pub(crate) async fn route(
        &self,
        request: LeaderRequest,
    ) -> Result<Served<LeaderAnswer>, CoordinatorError> {
        let give_up = Instant::now() + self.options.reroute_for;
        loop {
            // Most requests reach the leader itself: no need to copy the cluster's metrics and
            // the leader's addresses to find out.
            let (leader, outcome) = if self.leadership().0 {
                (self.id, self.execute(request.clone()).await)
            } else {
                let (leader, node) = self.leader().await?;
                if leader == self.id {
                    (leader, self.execute(request.clone()).await)
                } else {
                    (leader, self.forward(leader, &node, &request).await)
                }
            };
            match outcome {
                Outcome::Done(value) => return Ok(Served { value: *value, by: leader }),
                Outcome::Failed(e) => return Err(e),
                Outcome::NotLeader if Instant::now() >= give_up => {
                    return Err(CoordinatorError::NoLeader);
                }
                Outcome::NotLeader => {
                    // The node tried has moved on or is gone: re-route as soon as this node
                    // hears of another leader (an election, after a leader dies).
                    let _ = self
                        .raft
                        .wait(Some(REROUTE_PAUSE))
                        .metrics(|m| m.current_leader != Some(leader), "another leader")
                        .await;
                }
            }
        }
    }

    pub(crate) async fn forward(
        &self,
        leader: NodeId,
        node: &NodeInfo,
        request: &LeaderRequest,
    ) -> Outcome {
        let deadline = self.options.request_timeout + Duration::from_secs(1);
        let peer = baton_net::Peer { id: leader, addr: node.raft_addr.clone() };
        match self.forwarder.send(&peer, request.clone(), deadline).await {
            Ok(outcome) => outcome,
            // Nothing reached the leader: safe to re-route.
            Err(CallError::Unreachable { .. }) => Outcome::NotLeader,
            // The leader refused the batch before running any of it (an undecodable body, or
            // a kind of request it does not serve): nothing was run, and re-routing to the
            // same leader would be refused again.
            Err(e @ CallError::Rejected { .. }) => {
                Outcome::Failed(CoordinatorError::Internal(e.to_string()))
            }
            // The request may have reached the leader: a write's outcome is unknown; a read or
            // a membership change can be repeated.
            Err(e) => match request {
                LeaderRequest::Write(..) => {
                    Outcome::Failed(CoordinatorError::OutcomeUnknown(e.to_string()))
                }
                _ => Outcome::NotLeader,
            },
        }
    }
}
