//! An in-memory `Coordinator` for API tests: the real `baton_core::State` and `Detector`, a
//! manual clock, no Raft.

// Shared by several test binaries; each uses a subset.
#![allow(dead_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use baton_api::{
    ClusterStatus, Consistency, Coordinator, CoordinatorError, HeartbeatOutcome, Member, NodeAddrs,
    NodeId, Served, StateDigest,
};
use baton_core::detector::{Detector, Refusal};
use baton_core::{
    Command, GroupKey, HeartbeatIn, Query, QueryResult, Rejection, Request as CoreRequest,
    Response, SessionId, State, Timestamp,
};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// This fake node's id.
pub const ME: NodeId = 1;
/// The other node's id, which leads when `leader_elsewhere` is set.
pub const OTHER: NodeId = 2;

pub struct FakeCoordinator {
    state: Mutex<State>,
    detector: Mutex<Detector>,
    clock: AtomicU64,
    /// `None`: no leader; `Some(ME)`: this node leads; `Some(OTHER)`: the other node leads.
    pub leader: Mutex<Option<NodeId>>,
}

impl FakeCoordinator {
    pub fn leading() -> Self {
        Self {
            state: Mutex::new(State::default()),
            detector: Mutex::new(Detector::default()),
            clock: AtomicU64::new(1_700_000_000_000),
            leader: Mutex::new(Some(ME)),
        }
    }

    /// Moves the fake leader's clock forward.
    pub fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.clock.load(Ordering::SeqCst))
    }

    /// Applies a command as the leader would, after the detector prepared it.
    fn apply(&self, command: Command) -> Response {
        let now = self.now();
        let mut state = self.state.lock().expect("lock");
        let command = self.detector.lock().expect("lock").prepare(command, &state, now);
        state.apply(&CoreRequest { at: now, command })
    }

    /// Runs the detector's tick and applies its decisions.
    pub fn tick(&self) {
        let now = self.now();
        let commands =
            self.detector.lock().expect("lock").tick(&self.state.lock().expect("lock"), now);
        for command in commands {
            self.apply(command);
        }
    }

    fn leader(&self) -> Option<NodeId> {
        *self.leader.lock().expect("lock")
    }

    fn serve<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<Served<T>, CoordinatorError> {
        let by = self.leader().ok_or(CoordinatorError::NoLeader)?;
        Ok(Served { value: f(&mut self.state.lock().expect("lock")), by })
    }
}

impl Coordinator for FakeCoordinator {
    fn node_id(&self) -> NodeId {
        ME
    }

    async fn write(&self, command: Command) -> Result<Served<Response>, CoordinatorError> {
        let by = self.leader().ok_or(CoordinatorError::NoLeader)?;
        Ok(Served { value: self.apply(command), by })
    }

    async fn heartbeat(
        &self,
        group: GroupKey,
        session: SessionId,
        heartbeat: HeartbeatIn,
    ) -> Result<Served<HeartbeatOutcome>, CoordinatorError> {
        let by = self.leader().ok_or(CoordinatorError::NoLeader)?;
        let now = self.now();
        let Some(g) = self.state.lock().expect("lock").group(&group).cloned() else {
            return Ok(Served { value: HeartbeatOutcome::GroupNotFound, by });
        };
        if !g.sessions.contains_key(&session) {
            return Ok(Served { value: HeartbeatOutcome::SessionNotFound, by });
        }
        let plan = {
            let mut d = self.detector.lock().expect("lock");
            if let Err(Refusal::TooFast { retry_after_ms }) =
                d.observe(&g, &session, heartbeat, now)
            {
                return Ok(Served { value: HeartbeatOutcome::TooFast { retry_after_ms }, by });
            }
            d.plan_heartbeat(&g, &session, now)
        };
        if let Some(command) = plan
            && let Response::Rejected(r @ Rejection::Superseded(_)) = self.apply(command)
        {
            return Err(CoordinatorError::Internal(r.to_string()));
        }
        let g = self
            .state
            .lock()
            .expect("lock")
            .group(&group)
            .cloned()
            .expect("the group still exists");
        let answer = self.detector.lock().expect("lock").answer(&g, &session, now);
        Ok(Served { value: HeartbeatOutcome::Answered(answer), by })
    }

    async fn read(
        &self,
        query: Query,
        _: Consistency,
    ) -> Result<Served<QueryResult>, CoordinatorError> {
        self.serve(|s| s.query(&query))
    }

    fn status(&self) -> ClusterStatus {
        let member = |id: NodeId| Member {
            id,
            raft_addr: format!("127.0.0.1:710{id}"),
            api_addr: format!("127.0.0.1:700{id}"),
            voter: true,
        };
        ClusterStatus {
            id: ME,
            role: if self.leader() == Some(ME) { "leader" } else { "follower" }.into(),
            term: 3,
            leader: self.leader(),
            last_log_index: Some(10),
            committed_index: Some(10),
            applied_index: Some(10),
            snapshot_index: None,
            purged_index: None,
            members: vec![member(ME), member(OTHER)],
        }
    }

    fn digest(&self) -> StateDigest {
        StateDigest::of(&self.state.lock().expect("lock"), Some(10))
    }

    async fn add_learner(
        &self,
        id: NodeId,
        _: NodeAddrs,
    ) -> Result<Served<ClusterStatus>, CoordinatorError> {
        Err(CoordinatorError::Membership(format!("fake cannot add {id}")))
    }

    async fn promote(&self, id: NodeId) -> Result<Served<ClusterStatus>, CoordinatorError> {
        Err(CoordinatorError::Membership(format!("node {id} is not a learner")))
    }

    async fn remove(&self, id: NodeId) -> Result<Served<ClusterStatus>, CoordinatorError> {
        Err(CoordinatorError::Membership(format!("node {id} is not a member")))
    }

    async fn snapshot(&self) -> Result<(), CoordinatorError> {
        Ok(())
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

/// Sends one request through the full app (path normalization included).
pub async fn call(app: &baton_api::App, method: &str, uri: &str, body: Option<&str>) -> Reply {
    call_with(app, method, uri, body, Some("application/json")).await
}

/// Like [`call`], with an explicit content type (or none).
pub async fn call_with(
    app: &baton_api::App,
    method: &str,
    uri: &str,
    body: Option<&str>,
    content_type: Option<&str>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let (Some(ct), Some(_)) = (content_type, body) {
        req = req.header("content-type", ct);
    }
    let req =
        req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, body, text }
}
