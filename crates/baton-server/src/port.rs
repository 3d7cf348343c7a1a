//! What a node's Raft port answers on framed connections: openraft's RPCs from peers, and
//! batches of requests that other nodes forward to it as leader.

use std::sync::Arc;

use baton_net::{FORWARD, RaftPort, Rpcs};
use baton_raft::typ::Raft;

use crate::coordinator::{LeaderRequest, RaftCoordinator};

/// The node's Raft port.
pub type Port = RaftPort<PortRpcs>;

/// Answers framed requests: a FORWARD batch with the coordinator (each request exactly as if
/// it had arrived here; one that finds this node no longer leading answers `NotLeader`), every
/// other kind with openraft.
pub struct PortRpcs {
    raft: Raft,
    coordinator: Arc<RaftCoordinator>,
}

impl PortRpcs {
    /// Answers with `raft` and `coordinator`.
    pub fn new(raft: Raft, coordinator: Arc<RaftCoordinator>) -> Self {
        Self { raft, coordinator }
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
        self.raft.answer(kind, body).await
    }
}
