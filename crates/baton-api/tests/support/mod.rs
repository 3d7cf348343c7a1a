//! An in-memory `Coordinator` for API tests: the real `baton_core::State`, no Raft.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use baton_api::{
    ClusterStatus, Consistency, Coordinator, CoordinatorError, Member, NodeAddrs, NodeId, Served,
    StateDigest,
};
use baton_core::{Command, Query, QueryResult, Request as CoreRequest, Response, State, Timestamp};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// This fake node's id.
pub const ME: NodeId = 1;
/// The other node's id, which leads when `leader_elsewhere` is set.
pub const OTHER: NodeId = 2;

pub struct FakeCoordinator {
    state: Mutex<State>,
    clock: AtomicU64,
    /// `None`: no leader; `Some(ME)`: this node leads; `Some(OTHER)`: the other node leads.
    pub leader: Mutex<Option<NodeId>>,
}

impl FakeCoordinator {
    pub fn leading() -> Self {
        Self {
            state: Mutex::new(State::default()),
            clock: AtomicU64::new(1),
            leader: Mutex::new(Some(ME)),
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
        let at = Timestamp(self.clock.fetch_add(1, Ordering::SeqCst));
        self.serve(|s| s.apply(&CoreRequest { at, command }))
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
        let s = self.state.lock().expect("lock");
        StateDigest {
            applied_index: Some(10),
            digest: format!("{:016x}", s.digest()),
            groups: s.group_count(),
        }
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
