//! What the API needs from the node it runs on. `baton-server` implements this over openraft;
//! tests implement it in memory.

use std::future::Future;

pub use baton_core::HeartbeatOutcome;
use baton_core::{Actor, Beat, Command, Identity, IdentityName, Query, QueryResult, Response};
use serde::{Deserialize, Serialize};

/// A node id (same as the Raft node id).
pub type NodeId = u64;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Answered by a leader that has confirmed its leadership with a quorum after the request
    /// arrived (the default for every dialect read).
    Linearizable,
    /// Answered from this node's applied state; may be stale.
    Local,
}

/// A value and the node that produced it (the leader, for forwarded writes and reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served<T> {
    /// The value.
    pub value: T,
    /// The node that executed the request.
    pub by: NodeId,
}

/// A node's addresses, as stored in the cluster membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddrs {
    /// `host:port` of the internal Raft listener.
    pub raft_addr: String,
    /// `host:port` of the public API listener.
    pub api_addr: String,
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its node id.
    pub id: NodeId,
    /// `host:port` of its internal Raft listener.
    pub raft_addr: String,
    /// `host:port` of its public API listener.
    pub api_addr: String,
    /// `true` for a voter, `false` for a learner.
    pub voter: bool,
}

/// A node's view of the cluster, as `/cluster/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// The current Raft term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The index of the last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// The highest index this node knows to be committed.
    pub committed_index: Option<u64>,
    /// The index of the last entry applied to the state machine.
    pub applied_index: Option<u64>,
    /// The last index covered by this node's snapshot.
    pub snapshot_index: Option<u64>,
    /// The last index purged from this node's log.
    pub purged_index: Option<u64>,
    /// How many of its appends this node sent to followers early (before its own sync), as
    /// leader, since it started. Absent (0) from versions before early replication.
    #[serde(default)]
    pub appends_sent_early: u64,
    /// How long the leader's last failure-detector pass over every group kept it busy, in
    /// microseconds; absent on a node that is not leading (and from earlier versions).
    #[serde(default)]
    pub detector_pass_us: Option<u64>,
    /// Voters and learners.
    pub members: Vec<Member>,
}

impl ClusterStatus {
    /// The leader's member entry, if the leader is known and a member.
    pub fn leader_member(&self) -> Option<&Member> {
        let leader = self.leader?;
        self.members.iter().find(|m| m.id == leader)
    }

    /// Entries committed but not yet applied here.
    pub fn apply_lag(&self) -> u64 {
        self.committed_index.unwrap_or(0).saturating_sub(self.applied_index.unwrap_or(0))
    }
}

/// A fingerprint of a node's applied state, to compare nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    /// The applied index the digest was taken at.
    pub applied_index: Option<u64>,
    /// The digest (see `baton_core::State::digest`), in hex.
    pub digest: String,
    /// Number of groups.
    pub groups: usize,
}

impl StateDigest {
    /// The digest of `state` applied up to `applied_index`.
    pub fn of(state: &baton_core::State, applied_index: Option<u64>) -> Self {
        Self {
            applied_index,
            digest: format!("{:016x}", state.digest()),
            groups: state.group_count(),
        }
    }
}

/// Why the coordinator could not serve a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CoordinatorError {
    /// No leader is known (election under way, or no quorum).
    #[error("the cluster has no leader right now")]
    NoLeader,
    /// The request reached the leader but its outcome is unknown (leadership lost or timeout
    /// after proposing). It may or may not have been applied.
    #[error("the outcome of the request is unknown: {0}")]
    OutcomeUnknown(String),
    /// A membership change was refused (unknown node, would lose quorum, change in progress).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The change is larger than one request may be in the log; nothing was proposed.
    #[error("the change takes {bytes} bytes, more than the {max} one request may")]
    TooLarge {
        /// Its size in the log.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Anything else; details are logged, not shown to clients.
    #[error("internal error: {0}")]
    Internal(String),
    /// A request no caller may make (a forwarded write without its caller, or one of the
    /// leader's own decisions); nothing was proposed. (Last, so that earlier answers keep
    /// their encoding between nodes.)
    #[error("refused: {0}")]
    Refused(String),
}

/// The node behind the API.
pub trait Coordinator: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> NodeId;

    /// Replicates a command on behalf of `actor` (who is judged again when it applies, and
    /// recorded in the audit trail) and returns its committed response. Served by the leader;
    /// a follower forwards it.
    fn write(
        &self,
        command: Command,
        actor: Option<Actor>,
    ) -> impl Future<Output = Result<Served<Response>, CoordinatorError>> + Send;

    /// Answers a query at the requested consistency.
    fn read(
        &self,
        query: Query,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Served<QueryResult>, CoordinatorError>> + Send;

    /// Delivers a session's heartbeat, sent by `caller`, to the leader, which checks the
    /// caller may use the group, measures liveness, commits any role change, confirms it still
    /// leads, and answers.
    fn heartbeat(
        &self,
        beat: Beat,
    ) -> impl Future<Output = Result<Served<HeartbeatOutcome>, CoordinatorError>> + Send;

    /// This node's view of the cluster.
    fn status(&self) -> ClusterStatus;

    /// An identity as this node's applied state has it (to authenticate a request here).
    fn identity(&self, name: &IdentityName) -> Option<Identity>;

    /// A fingerprint of this node's applied state.
    fn digest(&self) -> StateDigest;

    /// The decisions this node has applied, for event streams.
    fn feed(&self) -> &crate::events::Feed;

    /// Adds a learner and waits until it has caught up with the log.
    fn add_learner(
        &self,
        id: NodeId,
        addrs: NodeAddrs,
    ) -> impl Future<Output = Result<Served<ClusterStatus>, CoordinatorError>> + Send;

    /// Makes a learner a voter.
    fn promote(
        &self,
        id: NodeId,
    ) -> impl Future<Output = Result<Served<ClusterStatus>, CoordinatorError>> + Send;

    /// Removes a node (voter or learner) from the cluster.
    fn remove(
        &self,
        id: NodeId,
    ) -> impl Future<Output = Result<Served<ClusterStatus>, CoordinatorError>> + Send;

    /// Builds a snapshot on this node now (the log may then be purged up to it).
    fn snapshot(&self) -> impl Future<Output = Result<(), CoordinatorError>> + Send;
}
