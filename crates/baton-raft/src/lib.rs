//! # baton-raft: Baton's openraft type configuration
//!
//! `declare_raft_types!` for Baton and the [`typ`] aliases every other crate uses, so that no
//! other crate spells out openraft's generic parameters.
//!
//! - Log payload (`D`): `Vec<`[`baton_core::Request`]`>`, the requests (a command plus the
//!   leader's timestamp and the caller) that the leader proposed together, applied one after
//!   another in order. Proposing concurrent requests as one entry is the leader's group
//!   commit: one append, one sync and one replication round for all of them.
//! - Apply result (`R`): `Vec<`[`baton_core::Response`]`>`, one response per request, in
//!   order; empty for Raft's own entries (blank, membership), which carry no request.
//! - Node identity: [`NodeId`] (`u64`) and [`NodeInfo`], which carries both of a node's
//!   addresses: Raft RPC (internal) and the public API.
//! - Runtime: tokio ([`runtime::Runtime`]), with openraft's random choices (election
//!   timeouts) drawn from a generator per thread that a simulation seeds
//!   ([`runtime::seed_thread_rng`]).

#![cfg_attr(not(test), deny(unused_crate_dependencies))]
#![deny(missing_docs)]

pub mod runtime;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A Baton node's id within its cluster. Chosen by the operator, never reused.
pub type NodeId = u64;

/// Where a node can be reached. Stored in the Raft membership, so every node knows every
/// other node's addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the internal Raft RPC listener.
    pub raft_addr: String,
    /// `host:port` of the public API listener.
    pub api_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// Baton's openraft type configuration.
    pub TypeConfig:
        D = Vec<baton_core::Request>,
        R = Vec<baton_core::Response>,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = runtime::Runtime,
);

/// Aliases for openraft types instantiated with [`TypeConfig`].
pub mod typ {
    use super::{NodeId, NodeInfo, TypeConfig};

    /// A running Raft node.
    pub type Raft = openraft::Raft<TypeConfig>;
    /// A log entry.
    pub type Entry = openraft::Entry<TypeConfig>;
    /// A log id (term, leader, index).
    pub type LogId = openraft::LogId<NodeId>;
    /// A vote.
    pub type Vote = openraft::Vote<NodeId>;
    /// Membership as stored in the log.
    pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
    /// Snapshot metadata.
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
    /// A snapshot with its data.
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    /// Storage failure.
    pub type StorageError = openraft::StorageError<NodeId>;
    /// Metrics published by a Raft node.
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeInfo>;
    /// AppendEntries request.
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    /// AppendEntries response.
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    /// Vote request.
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    /// Vote response.
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    /// InstallSnapshot request (one chunk).
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    /// InstallSnapshot response.
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
    /// Raft error with an API-specific payload.
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    /// Error from a network RPC.
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, NodeInfo, RaftError<E>>;
    /// Error from `client_write`.
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, NodeInfo>;
    /// Error from `ensure_linearizable`.
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, NodeInfo>;
    /// Forward-to-leader hint inside errors.
    pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, NodeInfo>;
}
