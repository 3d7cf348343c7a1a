//! [`RaftCoordinator`]: the API's `Coordinator` over openraft. Leader-only requests run here
//! when this node leads and are forwarded to the leader's internal port otherwise; this is the
//! one place where openraft's errors become API errors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_api::events::Feed;
use baton_api::{
    ClusterStatus, Consistency, Coordinator, CoordinatorError, HeartbeatOutcome, Member, NodeAddrs,
    Served, StateDigest,
};
use baton_core::detector::{Detector, Refusal};
use baton_core::{
    Actor, Command, GroupKey, HeartbeatAnswer, HeartbeatIn, Identity, IdentityName, Query,
    QueryResult, Rejection, Request, Response, SessionId,
};
use baton_net::{CallError, Followers, Forwarder, Network};
use baton_raft::typ::{ClientWriteError, Raft, RaftError};
use baton_raft::{NodeId, NodeInfo};
use baton_store::{CommittedIndex, StateReader};
use openraft::ServerState;
use openraft::error::{CheckIsLeaderError, ClientWriteError as CWE};
use serde::{Deserialize, Serialize};

use crate::leader::{Armed, Clock, Lease, TICK};
use crate::proposer::{Proposer, Unwritten};

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
    Heartbeat {
        /// The group.
        group: GroupKey,
        /// The session.
        session: SessionId,
        /// What it reported.
        heartbeat: HeartbeatIn,
        /// Who sent it.
        caller: IdentityName,
    },
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

/// What a heartbeat's first visit to its group decided.
enum Planned {
    /// Refused: sent sooner than its group allows.
    TooFast(u64),
    /// Answered at once: nothing to replicate, and the lease was confirmed.
    Answered(HeartbeatAnswer),
    /// Propose this first (if anything), then answer under a confirmed lease.
    Then(Option<Command>),
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
    fn done(answer: LeaderAnswer) -> Self {
        Outcome::Done(Box::new(answer))
    }
}

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
    /// The first administrator, created by whichever node first leads a cluster that has no
    /// identities (from the `admin_token` setting).
    pub bootstrap_admin: Option<Identity>,
}

/// The node's coordinator.
pub struct RaftCoordinator {
    id: NodeId,
    raft: Raft,
    state: StateReader,
    committed: CommittedIndex,
    forwarder: Forwarder<LeaderRequest, Outcome>,
    followers: Followers,
    feed: Arc<Feed>,
    options: Options,
    clock: Clock,
    lease: Lease,
    armed: Mutex<Armed>,
    proposer: Proposer,
}

/// How often a heartbeat re-plans after its command lost a race with another decision.
const MAX_HEARTBEAT_ATTEMPTS: usize = 5;

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
        }
    }

    fn armed(&self) -> std::sync::MutexGuard<'_, Armed> {
        self.armed
            .lock()
            .expect("the detector lock is never poisoned: nothing panics while holding it")
    }

    /// Runs with the detector, if this node leads and armed it in the current term. A detector
    /// from an earlier term is never used, even before the next tick disarms it.
    fn with_detector<T>(&self, f: impl FnOnce(&mut Detector) -> T) -> Option<T> {
        let (leading, term) = self.leadership();
        if !leading {
            return None;
        }
        self.with_detector_armed_in(term, f)
    }

    /// [`Self::with_detector`] if this node still leads in `term`.
    fn with_detector_in<T>(&self, term: u64, f: impl FnOnce(&mut Detector) -> T) -> Option<T> {
        let (leading, now_term) = self.leadership();
        if !leading || now_term != term {
            return None;
        }
        self.with_detector_armed_in(term, f)
    }

    /// Runs with the detector if it was armed in `term` (the caller has just seen this node
    /// lead in `term`).
    fn with_detector_armed_in<T>(
        &self,
        term: u64,
        f: impl FnOnce(&mut Detector) -> T,
    ) -> Option<T> {
        let mut armed = self.armed();
        if armed.term != Some(term) {
            return None;
        }
        armed.detector.as_mut().map(f)
    }

    /// Whether this node leads, and in which term.
    fn leadership(&self) -> (bool, u64) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader, m.current_term)
    }

    /// Arms the detector for `term` unless it already is: the caller has just confirmed
    /// leadership, which also waited until everything committed was applied, so the state is
    /// caught up and every deadline is re-armed from it.
    fn arm(&self, term: u64) {
        if self.armed().term == Some(term) {
            return;
        }
        let applied = self.state.read();
        let mut armed = self.armed();
        if armed.term != Some(term) {
            let detector = Detector::new(&applied.state, self.clock.now());
            *armed = Armed { term: Some(term), detector: Some(detector), last_pass_us: None };
            tracing::info!(term, "became leader; failure detector armed, every deadline re-armed");
        }
    }

    /// Whether this node leads with an armed detector, arming it first if it has just been
    /// elected: a request that reaches a new leader is served at once instead of waiting for
    /// the next tick.
    async fn ready_to_lead(&self) -> bool {
        let (leading, term) = self.leadership();
        if !leading {
            return false;
        }
        if self.armed().term == Some(term) {
            return true;
        }
        // A round of this term also waited until everything committed was applied, this
        // term's first entry among it: whichever caller's round it was, the state is caught up.
        if self.hold_lease(term).await.is_err() {
            return false;
        }
        self.arm(term);
        true
    }

    /// Confirms leadership in `term` with a quorum (a round of its own, which also waits
    /// until everything committed is applied) and extends the lease from when it started.
    async fn confirm_leadership(&self, term: u64) -> Result<(), CoordinatorError> {
        self.confirm(term, false).await
    }

    /// Makes sure the lease holds, confirming leadership with a quorum only if it has lapsed.
    /// Callers that find it lapsed while a round is under way wait for that round instead of
    /// starting their own (see [`Lease::confirm`]; at 256 clients the bench's heartbeats
    /// answered 503 without this).
    async fn hold_lease(&self, term: u64) -> Result<(), CoordinatorError> {
        if self.lease.valid(term) { Ok(()) } else { self.confirm(term, true).await }
    }

    /// A quorum round through [`Lease::confirm`]. Bounded, the wait for another caller's round
    /// included, by the leader wait: a leader that cannot reach a quorum within two election
    /// timeouts is not going to, and its clients should hear 503 promptly.
    async fn confirm(&self, term: u64, unless_held: bool) -> Result<(), CoordinatorError> {
        let round = self
            .lease
            .confirm(term, unless_held, || async { self.raft.ensure_linearizable().await.is_ok() });
        match tokio::time::timeout(self.options.leader_wait, round).await {
            Ok(true) => Ok(()),
            _ => Err(CoordinatorError::NoLeader),
        }
    }

    /// The leader's duties, until `stop` resolves: arm the detector when this node becomes
    /// leader (after catching up), keep the lease fresh, tick the detector and propose what it
    /// decides; disarm when leadership is lost.
    pub async fn run_leader_duties(&self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut detector_due = Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = interval.tick() => self.leader_tick(&mut detector_due).await,
            }
        }
    }

    /// One round of the leader's duties. The lease is refreshed every [`TICK`]; the detector
    /// runs when `detector_due` has come, and sets when it is due next (see
    /// [`next_detector_pass`]).
    async fn leader_tick(&self, detector_due: &mut Instant) {
        let (leading, term) = self.leadership();
        if !leading {
            let mut armed = self.armed();
            if armed.detector.is_some() {
                tracing::info!("lost leadership; failure detector disarmed");
            }
            *armed = Armed::default();
            self.lease.revoke();
            return;
        }
        // Refresh the lease every tick; a leader that cannot reach a quorum stops granting.
        if self.confirm_leadership(term).await.is_err() {
            self.lease.revoke();
            return;
        }
        self.arm(term);
        if let Some(admin) = &self.options.bootstrap_admin
            && self.state.read().state.identity_count() == 0
        {
            let command = Command::BootstrapAdmin { identity: admin.clone() };
            match self.propose(command, None).await {
                Ok(Response::Identity(_)) => {
                    tracing::info!(name = %admin.name, "created the bootstrap administrator");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not create the bootstrap administrator")
                }
            }
        }
        let started = Instant::now();
        if started < *detector_due {
            return;
        }
        let now = self.clock.now();
        // The pass goes in parts of DETECTOR_PART groups, each under the state's read lock
        // and the detector's lock, and lets go of both between parts: an apply (which needs
        // the state's write lock) or a heartbeat (the detector's) waits for one part, not for
        // a pass over every group (about 0.75 ms with 4,096 groups, 20 ms with 100,000).
        let mut commands = Vec::new();
        let mut from = None;
        let mut busy = Duration::ZERO;
        loop {
            let part_started = Instant::now();
            let (part, next) = {
                let applied = self.state.read();
                self.with_detector(|d| {
                    d.tick_part(&applied.state, now, from.as_ref(), DETECTOR_PART)
                })
                .unwrap_or_default()
            };
            busy += part_started.elapsed();
            commands.extend(part);
            match next {
                Some(key) => from = Some(key),
                None => break,
            }
            tokio::task::yield_now().await;
        }
        *detector_due = next_detector_pass(started, busy);
        {
            let mut armed = self.armed();
            if armed.term == Some(term) {
                armed.last_pass_us = Some(u64::try_from(busy.as_micros()).unwrap_or(u64::MAX));
            }
        }
        // Proposed together, so Raft replicates them in as few appends as it can: a leader
        // that finds a thousand holders stale commits their successors at once.
        let proposals = commands.into_iter().map(|command| async move {
            match self.propose(command.clone(), None).await {
                Ok(Response::Rejected(reason)) => {
                    tracing::debug!(%reason, "detector decision superseded");
                    self.with_detector(|d| d.refused(&command));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not commit a failover decision"),
            }
        });
        futures::future::join_all(proposals).await;
    }

    /// Proposes a command at the current leader time (with whatever else is being proposed,
    /// as one entry: see `proposer.rs`) and waits for its response.
    async fn propose(
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
        }
    }

    /// Waits (bounded) until a leader is known and returns it with its addresses.
    async fn leader(&self) -> Result<(NodeId, NodeInfo), CoordinatorError> {
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
    async fn route(
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
                    (leader, self.forward(&node, &request).await)
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

    async fn forward(&self, leader: &NodeInfo, request: &LeaderRequest) -> Outcome {
        let deadline = self.options.request_timeout + Duration::from_secs(1);
        match self.forwarder.send(&leader.raft_addr, request.clone(), deadline).await {
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

    /// Serves a leader-only request on this node. Answers [`Outcome::NotLeader`] when this node
    /// does not lead, without doing anything.
    pub async fn execute(&self, request: LeaderRequest) -> Outcome {
        if !self.ready_to_lead().await {
            return Outcome::NotLeader;
        }
        match request {
            LeaderRequest::Write(command, actor) => self.write_here(command, actor).await,
            LeaderRequest::Heartbeat { group, session, heartbeat, caller } => {
                self.heartbeat_here(group, session, heartbeat, caller).await
            }
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
        let now = self.clock.now();
        let prepared = {
            let applied = self.state.read();
            self.with_detector(|d| d.prepare(command, &applied.state, now))
        };
        // Not armed: leadership was lost since `execute` checked.
        let Some(command) = prepared else { return Outcome::NotLeader };
        match self.propose(command, actor).await {
            Ok(response) => Outcome::done(LeaderAnswer::Written(response)),
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn heartbeat_here(
        &self,
        key: GroupKey,
        session: SessionId,
        heartbeat: HeartbeatIn,
        caller: IdentityName,
    ) -> Outcome {
        let done = |o| Outcome::done(LeaderAnswer::Heartbeat(o));
        for attempt in 0..MAX_HEARTBEAT_ATTEMPTS {
            let now = self.clock.now();
            // Most heartbeats change nothing replicated: with the lease already confirmed,
            // such a heartbeat is observed, planned and answered in one visit to the group.
            let (_, term) = self.leadership();
            let leased = self.lease.valid(term);
            // Observed and planned under the state's read lock (then the detector's, the order
            // the tick uses), so the group is read in place, never copied.
            let plan = {
                let applied = self.state.read();
                let group = match applied.state.group(&key) {
                    None => return done(HeartbeatOutcome::GroupNotFound),
                    Some(g) if !applied.state.may_use(&caller, g) => {
                        return done(HeartbeatOutcome::Forbidden);
                    }
                    Some(g) if !g.sessions.contains_key(&session) => {
                        return done(HeartbeatOutcome::SessionNotFound);
                    }
                    Some(g) => g,
                };
                // In the term whose lease was checked, or not at all.
                self.with_detector_in(term, |d| {
                    if attempt == 0
                        && let Err(Refusal::TooFast { retry_after_ms }) =
                            d.observe(group, &session, heartbeat.clone(), now)
                    {
                        return Planned::TooFast(retry_after_ms);
                    }
                    match d.plan_heartbeat(group, &session, now) {
                        None if leased => Planned::Answered(d.answer(group, &session, now)),
                        command => Planned::Then(command),
                    }
                })
            };
            let command = match plan {
                None => return Outcome::NotLeader,
                Some(Planned::TooFast(retry_after_ms)) => {
                    return done(HeartbeatOutcome::TooFast { retry_after_ms });
                }
                Some(Planned::Answered(answer)) => return done(HeartbeatOutcome::Answered(answer)),
                Some(Planned::Then(command)) => command,
            };
            if let Some(command) = command {
                let (_, term) = self.leadership();
                let proposed = Instant::now();
                match self.propose(command, None).await {
                    Ok(Response::Rejected(Rejection::Superseded(_))) => continue,
                    Ok(Response::Rejected(Rejection::SessionNotFound { .. })) => {
                        return done(HeartbeatOutcome::SessionNotFound);
                    }
                    Ok(Response::Rejected(Rejection::GroupNotFound(_))) => {
                        return done(HeartbeatOutcome::GroupNotFound);
                    }
                    Ok(_) => self.lease.confirmed(term, proposed),
                    Err(e) => return Outcome::Failed(e),
                }
            }
            // Grant nothing without a confirmed lease.
            if let Err(e) = self.hold_lease(self.leadership().1).await {
                return Outcome::Failed(e);
            }
            // Answer from the state as it is while the answer is recorded: the state's read lock
            // is held (then the detector's, the order the tick uses), so no grant can be
            // applied in between.
            let answered = {
                let applied = self.state.read();
                match applied.state.group(&key) {
                    None => Some(HeartbeatOutcome::GroupNotFound),
                    Some(g) if !applied.state.may_use(&caller, g) => {
                        Some(HeartbeatOutcome::Forbidden)
                    }
                    Some(g) if !g.sessions.contains_key(&session) => {
                        Some(HeartbeatOutcome::SessionNotFound)
                    }
                    Some(g) => {
                        let now = self.clock.now();
                        self.with_detector(|d| {
                            HeartbeatOutcome::Answered(d.answer(g, &session, now))
                        })
                    }
                }
            };
            return match answered {
                Some(outcome) => done(outcome),
                None => Outcome::NotLeader,
            };
        }
        Outcome::Failed(CoordinatorError::NoLeader)
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

    async fn heartbeat(
        &self,
        group: GroupKey,
        session: SessionId,
        heartbeat: HeartbeatIn,
        caller: IdentityName,
    ) -> Result<Served<HeartbeatOutcome>, CoordinatorError> {
        tracing::Span::current().record("group", tracing::field::display(&group));
        let request = LeaderRequest::Heartbeat { group, session, heartbeat, caller };
        let served = self.route(request).await?;
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

/// When the detector runs next, after a pass that started at `started` and kept the leader
/// busy for `took` (its parts, not the waits between them): every [`TICK`], or, when a pass is
/// long (a leader of 100,000 groups), after four times its length. Back to back, long passes
/// under one lock left writes a few milliseconds in every 25 (50 writes/s with 100,000
/// groups); in parts they let applies and heartbeats in between, but still cost the leader's
/// CPU. Failures are then noticed up to one pass period late.
fn next_detector_pass(started: Instant, took: Duration) -> Instant {
    started + TICK.max(took.saturating_mul(DETECTOR_PERIOD_PER_PASS))
}

/// A detector pass may take at most this share (one in N) of the leader's time.
const DETECTOR_PERIOD_PER_PASS: u32 = 4;

/// Groups per part of a detector pass (about 0.2 ms of the leader's time on this project's
/// benchmark machine): as many as one checkpoint command carries, so that a part's
/// checkpoints go in one command.
const DETECTOR_PART: usize = baton_core::detector::CHECKPOINT_GROUPS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_detector_pass_runs_again_next_tick() {
        let start = Instant::now();
        assert_eq!(next_detector_pass(start, Duration::from_millis(2)), start + TICK);
    }

    #[test]
    fn a_long_detector_pass_leaves_the_leader_three_quarters_of_its_time() {
        let start = Instant::now();
        let next = next_detector_pass(start, Duration::from_millis(20));
        assert_eq!(next, start + Duration::from_millis(80));
    }
}
