//! [`RaftCoordinator`]: the API's `Coordinator` over openraft, and what the leader does with
//! each kind of [`LeaderRequest`] (writes, heartbeats through the core's heartbeat step, reads,
//! membership changes); this is the one place where openraft's errors become API errors.
//! Getting a request to the leader is `proxy.rs`'s job; the leader's own loop (lease, detector
//! arming and passes) is `leader.rs`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_api::events::Feed;
use baton_api::{
    ClusterStatus, Consistency, Coordinator, CoordinatorError, HeartbeatOutcome, Member, NodeAddrs,
    Served, StateDigest,
};
use baton_core::heartbeat::{Beat, HeartbeatStep, Ready};
use baton_core::{
    Actor, Command, Growth, Identity, IdentityName, Limits, Pending, Query, QueryResult, Request,
    Response,
};
use baton_net::{Followers, Forwarder, Network};
use baton_raft::typ::{ClientWriteError, Raft, RaftError};
use baton_raft::{NodeId, NodeInfo};
use baton_store::{CommittedIndex, StateReader};
use openraft::ServerState;
use openraft::error::{CheckIsLeaderError, ClientWriteError as CWE};
use tokio::time::Instant;

use crate::leader::{Armed, Clock, Lease};
use crate::proposer::{Proposer, Unwritten};
use crate::proxy::{LeaderAnswer, LeaderRequest, Outcome};

/// Options of the coordinator.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a write may wait for its commit.
    pub request_timeout: Duration,
    /// How long to wait for a leader to be known before answering "no leader".
    pub leader_wait: Duration,
    /// How long a request keeps being re-routed while leadership moves (a leader killed
    /// mid-request is replaced within two election timeouts).
    pub reroute_for: Duration,
    /// How long a quorum confirmation lets the leader answer without asking again.
    pub lease: Duration,
    /// How far apart two clocks' rates may be, in parts per million (the detector shortens
    /// the validity it answers by that much).
    pub clock_drift_ppm: u32,
    /// The first administrator, created by whichever node first leads a cluster that has no
    /// identities (from the `admin_token` setting).
    pub bootstrap_admin: Option<Identity>,
    /// What callers' writes may make the state hold; checked before anything is proposed.
    pub limits: Limits,
}

/// The node's coordinator.
pub struct RaftCoordinator {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) state: StateReader,
    pub(crate) committed: CommittedIndex,
    pub(crate) forwarder: Forwarder<LeaderRequest, Outcome>,
    pub(crate) followers: Followers,
    pub(crate) feed: Arc<Feed>,
    pub(crate) options: Options,
    pub(crate) clock: Clock,
    pub(crate) lease: Lease,
    pub(crate) armed: Mutex<Armed>,
    pub(crate) proposer: Proposer,
    /// Growth admitted by the limits and not yet applied (see `baton_core::limits`).
    pub(crate) pending: Mutex<Pending>,
}

/// A write's reservation in [`RaftCoordinator::pending`], given back when dropped.
struct Reserved<'a> {
    pending: &'a Mutex<Pending>,
    grown: Vec<(Growth, u64)>,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.grown.is_empty() {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).release(&self.grown);
        }
    }
}

impl RaftCoordinator {
    /// A coordinator for the node `id`.
    pub fn new(
        id: NodeId,
        raft: Raft,
        state: StateReader,
        committed: CommittedIndex,
        network: &Network,
        feed: Arc<Feed>,
        options: Options,
    ) -> Self {
        let lease = Lease::new(options.lease);
        Self {
            id,
            proposer: Proposer::start(raft.clone()),
            raft,
            state,
            committed,
            forwarder: network.client().forwarder(),
            followers: network.followers(),
            feed,
            options,
            clock: Clock::default(),
            lease,
            armed: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    /// The same coordinator with `clock` as its leader time (a simulation's clock, which runs
    /// fast or slow).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether this node leads, and in which term.
    pub(crate) fn leadership(&self) -> (bool, u64) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader, m.current_term)
    }

    /// Proposes a command at the current leader time (with whatever else is being proposed,
    /// as one entry: see `proposer.rs`) and waits for its response.
    pub(crate) async fn propose(
        &self,
        command: Command,
        actor: Option<Actor>,
    ) -> Result<Response, CoordinatorError> {
        let request = Request { at: self.clock.now(), command, actor };
        match tokio::time::timeout(self.options.request_timeout, self.proposer.propose(request))
            .await
        {
            Err(_) => {
                Err(CoordinatorError::OutcomeUnknown("the write was not committed in time".into()))
            }
            Ok(Ok(response)) => Ok(response),
            // The entry may already be in the log and be committed by the next leader.
            Ok(Err(e @ (Unwritten::LeadershipChanged | Unwritten::Stopped(_)))) => {
                Err(CoordinatorError::OutcomeUnknown(e.to_string()))
            }
            Ok(Err(Unwritten::Failed(e))) => Err(CoordinatorError::Internal(e)),
            Ok(Err(Unwritten::TooLarge { bytes, max })) => {
                Err(CoordinatorError::TooLarge { bytes, max })
            }
        }
    }

    /// Serves a leader-only request on this node. Answers [`Outcome::NotLeader`] when this node
    /// does not lead, without doing anything.
    pub async fn execute(&self, request: LeaderRequest) -> Outcome {
        if !self.ready_to_lead().await {
            return Outcome::NotLeader;
        }
        match request {
            LeaderRequest::Write(command, actor) => self.write_here(command, actor).await,
            LeaderRequest::Heartbeat(beat) => self.heartbeat_here(beat).await,
            LeaderRequest::Read(query) => self.read_here(query).await,
            LeaderRequest::AddLearner { id, node } => {
                self.membership_change(self.raft.add_learner(id, node, true)).await
            }
            LeaderRequest::Promote(id) => {
                let status = self.status();
                if !status.members.iter().any(|m| m.id == id && !m.voter) {
                    return Outcome::Failed(CoordinatorError::Membership(format!(
                        "node {id} is not a learner"
                    )));
                }
                self.membership_change(self.raft.change_membership(
                    openraft::ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                    false,
                ))
                .await
            }
            LeaderRequest::Remove(id) => {
                let status = self.status();
                let Some(member) = status.members.iter().find(|m| m.id == id) else {
                    return Outcome::Failed(CoordinatorError::Membership(format!(
                        "node {id} is not a member"
                    )));
                };
                let change = if member.voter {
                    openraft::ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                self.membership_change(self.raft.change_membership(change, false)).await
            }
        }
    }

    async fn write_here(&self, command: Command, actor: Option<Actor>) -> Outcome {
        // A caller's write, here or forwarded: it names its caller, and is never one of the
        // decisions only the leader makes (a peer holding the cluster secret could otherwise
        // grant the baton itself).
        if actor.is_none() || command.is_leaders_own() {
            // Logged once, by the node the write came in at (`Coordinator::write`).
            return Outcome::Failed(CoordinatorError::Refused(format!(
                "a caller's write must name its caller and may not be the leader's own {}",
                command.name()
            )));
        }
        let now = self.clock.now();
        let (prepared, grown) = {
            let applied = self.state.read();
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match self.options.limits.admit(&applied.state, &pending, &command, actor.as_ref()) {
                Ok(grown) => {
                    pending.hold(&grown);
                    (self.with_detector(|d| d.prepare(command, &applied.state, now)), grown)
                }
                Err(refused) => {
                    return Outcome::done(LeaderAnswer::Written(Response::Rejected(refused)));
                }
            }
        };
        // Given back however this ends (applied, refused, failed, or the caller gone).
        let _reserved = Reserved { pending: &self.pending, grown };
        // Not armed: leadership was lost since `execute` checked.
        let Some(command) = prepared else { return Outcome::NotLeader };
        match self.propose(command, actor).await {
            Ok(response) => Outcome::done(LeaderAnswer::Written(response)),
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Serves a heartbeat with the core's [`HeartbeatStep`]: this only does what the step asks
    /// (commit a command, confirm the lease), each decision made under the state's read lock
    /// and then the detector's (the order the tick uses), so the group is read in place and no
    /// grant can be applied between a decision and the answer it records.
    async fn heartbeat_here(&self, beat: Beat) -> Outcome {
        let mut step = HeartbeatStep::new(beat);
        let mut confirmed_in = None;
        loop {
            let now = self.clock.now();
            let (_, term) = self.leadership();
            // Most heartbeats change nothing replicated: with the lease already confirmed,
            // such a heartbeat is observed, planned and answered in one visit to the group.
            let leased = confirmed_in == Some(term) || self.lease.valid(term);
            let ready = {
                let applied = self.state.read();
                // In the term whose lease was checked, or not at all.
                self.with_detector_in(term, |d| step.ready(&applied.state, d, now, leased))
            };
            match ready {
                None => return Outcome::NotLeader,
                Some(Ready::Answer(outcome)) => {
                    return Outcome::done(LeaderAnswer::Heartbeat(outcome));
                }
                Some(Ready::GiveUp) => return Outcome::Failed(CoordinatorError::NoLeader),
                Some(Ready::Propose(command)) => {
                    let proposed = Instant::now();
                    match self.propose(command, None).await {
                        // Committed, even if refused: a quorum accepted it in this term.
                        Ok(response) => {
                            self.lease.confirmed(term, proposed);
                            step.committed(&response);
                        }
                        Err(e) => return Outcome::Failed(e),
                    }
                }
                // Grant nothing without a confirmed lease.
                Some(Ready::ConfirmLease) => match self.hold_lease(term).await {
                    Ok(()) => confirmed_in = Some(term),
                    Err(e) => return Outcome::Failed(e),
                },
            }
        }
    }

    async fn read_here(&self, query: Query) -> Outcome {
        // Lease read: while a quorum confirmed this leadership within the lease (the leader
        // tick renews it every TICK), no other leader can have committed anything, so once
        // everything this leader knows committed is applied, its state answers linearizably.
        // One quorum round per tick serves every read, instead of one round per read; when
        // the lease has lapsed, the reads waiting for it share one round.
        let (_, term) = self.leadership();
        if self.hold_lease(term).await.is_err() {
            // No quorum answered within the leader wait: another round would not either.
            return if self.leadership().0 {
                Outcome::Failed(CoordinatorError::NoLeader)
            } else {
                Outcome::NotLeader
            };
        }
        if let Some(index) = self.committed.get() {
            let applied = self
                .raft
                .wait(Some(self.options.request_timeout))
                .applied_index_at_least(Some(index), "the read index is applied")
                .await;
            if applied.is_ok() && self.lease.valid(term) {
                return Outcome::done(LeaderAnswer::Read(self.state.query(&query)));
            }
        }
        let confirmed =
            tokio::time::timeout(self.options.request_timeout, self.raft.ensure_linearizable())
                .await;
        match confirmed {
            Ok(Ok(_)) => Outcome::done(LeaderAnswer::Read(self.state.query(&query))),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Outcome::NotLeader
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) | Err(_) => {
                Outcome::Failed(CoordinatorError::NoLeader)
            }
            Ok(Err(e)) => Outcome::Failed(CoordinatorError::Internal(e.to_string())),
        }
    }

    async fn membership_change(
        &self,
        change: impl Future<
            Output = Result<
                openraft::raft::ClientWriteResponse<baton_raft::TypeConfig>,
                RaftError<ClientWriteError>,
            >,
        >,
    ) -> Outcome {
        match change.await {
            Ok(_) => Outcome::done(LeaderAnswer::Membership(self.status())),
            Err(RaftError::APIError(CWE::ForwardToLeader(_))) => Outcome::NotLeader,
            Err(RaftError::APIError(CWE::ChangeMembershipError(e))) => {
                Outcome::Failed(CoordinatorError::Membership(e.to_string()))
            }
            Err(e) => Outcome::Failed(CoordinatorError::Internal(e.to_string())),
        }
    }

    fn expect_answer<T>(
        served: Served<LeaderAnswer>,
        pick: impl FnOnce(LeaderAnswer) -> Option<T>,
    ) -> Result<Served<T>, CoordinatorError> {
        let by = served.by;
        pick(served.value).map(|value| Served { value, by }).ok_or_else(|| {
            CoordinatorError::Internal("the leader answered a different kind of request".into())
        })
    }

    fn membership_answer(
        served: Served<LeaderAnswer>,
    ) -> Result<Served<ClusterStatus>, CoordinatorError> {
        Self::expect_answer(served, |a| match a {
            LeaderAnswer::Membership(s) => Some(s),
            _ => None,
        })
    }
}

impl Coordinator for RaftCoordinator {
    fn node_id(&self) -> NodeId {
        self.id
    }

    async fn write(
        &self,
        command: Command,
        actor: Option<Actor>,
    ) -> Result<Served<Response>, CoordinatorError> {
        let name = command.name();
        let group = command.group().map(ToString::to_string).unwrap_or_default();
        if !group.is_empty() {
            tracing::Span::current().record("group", &group);
        }
        let who = actor.as_ref().map(|a| a.identity.to_string()).unwrap_or_default();
        let served = self.route(LeaderRequest::Write(command, actor)).await;
        let answer = served.and_then(|served| {
            Self::expect_answer(served, |a| match a {
                LeaderAnswer::Written(r) => Some(r),
                _ => None,
            })
        });
        // The command's name only: some commands carry credentials.
        match &answer {
            Ok(Served { value: Response::Rejected(r), by }) => {
                tracing::info!(command = name, group, actor = who, by, refused = %r, "write refused");
            }
            // At debug: one line per write cost a tenth to a quarter of the leader's write
            // throughput (BENCHMARKS.md), and the replicated audit trail (`GET /audit`) keeps
            // who changed what.
            Ok(Served { by, .. }) => {
                tracing::debug!(command = name, group, actor = who, by, "write")
            }
            Err(e) => {
                tracing::warn!(command = name, group, actor = who, error = %e, "write failed")
            }
        }
        answer
    }

    async fn read(
        &self,
        query: Query,
        consistency: Consistency,
    ) -> Result<Served<QueryResult>, CoordinatorError> {
        if consistency == Consistency::Local {
            return Ok(Served { value: self.state.query(&query), by: self.id });
        }
        let served = self.route(LeaderRequest::Read(query)).await?;
        Self::expect_answer(served, |a| match a {
            LeaderAnswer::Read(r) => Some(r),
            _ => None,
        })
    }

    async fn heartbeat(&self, beat: Beat) -> Result<Served<HeartbeatOutcome>, CoordinatorError> {
        tracing::Span::current().record("group", tracing::field::display(&beat.group));
        let served = self.route(LeaderRequest::Heartbeat(beat)).await?;
        Self::expect_answer(served, |a| match a {
            LeaderAnswer::Heartbeat(o) => Some(o),
            _ => None,
        })
    }

    fn identity(&self, name: &IdentityName) -> Option<Identity> {
        self.state.read().state.identity(name).cloned()
    }

    fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, NodeInfo> =
            membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Follower if voters.contains(&self.id) => "follower",
            ServerState::Follower | ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        ClusterStatus {
            id: self.id,
            role: role.into(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            committed_index: self.committed.get(),
            applied_index: m.last_applied.map(|id| id.index),
            snapshot_index: m.snapshot.map(|id| id.index),
            purged_index: m.purged.map(|id| id.index),
            appends_sent_early: self.followers.sent_early(),
            detector_pass_us: self.armed().last_pass_us,
            members: nodes
                .into_iter()
                .map(|(id, n)| Member {
                    id,
                    raft_addr: n.raft_addr,
                    api_addr: n.api_addr,
                    voter: voters.contains(&id),
                })
                .collect(),
        }
    }

    fn digest(&self) -> StateDigest {
        let applied = self.state.read();
        StateDigest::of(&applied.state, applied.last_applied.map(|id| id.index))
    }

    fn feed(&self) -> &Feed {
        &self.feed
    }

    async fn add_learner(
        &self,
        id: NodeId,
        addrs: NodeAddrs,
    ) -> Result<Served<ClusterStatus>, CoordinatorError> {
        let node = NodeInfo { raft_addr: addrs.raft_addr, api_addr: addrs.api_addr };
        Self::membership_answer(self.route(LeaderRequest::AddLearner { id, node }).await?)
    }

    async fn promote(&self, id: NodeId) -> Result<Served<ClusterStatus>, CoordinatorError> {
        Self::membership_answer(self.route(LeaderRequest::Promote(id)).await?)
    }

    async fn remove(&self, id: NodeId) -> Result<Served<ClusterStatus>, CoordinatorError> {
        Self::membership_answer(self.route(LeaderRequest::Remove(id)).await?)
    }

    async fn snapshot(&self) -> Result<(), CoordinatorError> {
        self.raft.trigger().snapshot().await.map_err(|e| CoordinatorError::Internal(e.to_string()))
    }
}
