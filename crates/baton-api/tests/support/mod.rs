//! An in-memory `Coordinator` for API tests: the real `baton_core::State` and `Detector`, a
//! manual clock, no Raft.

// Shared by several test binaries; each uses a subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use baton_api::{
    ClusterStatus, Consistency, Coordinator, CoordinatorError, HeartbeatOutcome, Member, NodeAddrs,
    NodeId, Served, StateDigest,
};
use baton_core::detector::Detector;
use baton_core::heartbeat::{Beat, HeartbeatStep, Ready};
use baton_core::{
    AccessRole, Actor, Command, Identity, IdentityName, Limits, Query, QueryResult,
    Request as CoreRequest, Response, State, TenantId, Timestamp,
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
    /// Log indexes for published decisions.
    index: AtomicU64,
    feed: baton_api::events::Feed,
    /// `None`: no leader; `Some(ME)`: this node leads; `Some(OTHER)`: the other node leads.
    pub leader: Mutex<Option<NodeId>>,
    /// The limits callers' writes are held to, as the leader holds them.
    pub limits: Mutex<Limits>,
}

/// The administrator every fake cluster starts with.
pub const ROOT_TOKEN: &str =
    "baton_root.00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The cluster secret the fake's sealer uses.
pub const CLUSTER_SECRET: &str = "fake-cluster-secret-0123456789";

impl FakeCoordinator {
    pub fn leading() -> Self {
        let fake = Self {
            state: Mutex::new(State::default()),
            detector: Mutex::new(Detector::default()),
            clock: AtomicU64::new(1_700_000_000_000),
            index: AtomicU64::new(0),
            feed: baton_api::events::Feed::default(),
            leader: Mutex::new(Some(ME)),
            limits: Mutex::new(Limits::default()),
        };
        let root = baton_auth::parse_token(ROOT_TOKEN).expect("a valid token");
        let admin = identity(root.name.clone(), AccessRole::Admin, root.secret);
        let created = fake.apply(Command::BootstrapAdmin { identity: admin }, None);
        assert!(matches!(created, Response::Identity(_)), "{created:?}");
        fake
    }

    /// Creates a member of `tenant` and returns its token.
    pub fn member(&self, name: &str, tenant: &str) -> String {
        let name = IdentityName::new(name).expect("valid name");
        let (token, credential) = baton_auth::issue_token(&name);
        let role = AccessRole::Member { tenant: TenantId::new(tenant).expect("valid tenant") };
        let mut member = identity(name, role, "");
        member.token = credential;
        let created = self.apply(Command::CreateIdentity { identity: member }, self.root());
        assert!(matches!(created, Response::Identity(_)), "{created:?}");
        token
    }

    /// Replaces `name`'s token with a new one, as `baton tokens rotate` does; returns it.
    pub fn rotate(&self, name: &str) -> String {
        let name = IdentityName::new(name).expect("valid name");
        let (token, credential) = baton_auth::issue_token(&name);
        let command = Command::RotateIdentity { name, token: credential, signing_key: None };
        let rotated = self.apply(command, self.root());
        assert!(matches!(rotated, Response::Identity(_)), "{rotated:?}");
        token
    }

    /// The administrator, as an actor.
    pub fn root(&self) -> Option<Actor> {
        Some(Actor {
            identity: IdentityName::new("root").expect("valid"),
            from: None,
            request_key: None,
        })
    }

    /// Applies a command on behalf of an actor, bypassing HTTP (for test setup).
    pub fn apply_as(&self, command: Command, actor: Option<Actor>) -> Response {
        self.apply(command, actor)
    }

    /// Moves the fake leader's clock forward.
    pub fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.clock.load(Ordering::SeqCst))
    }

    /// Applies a command as the leader would, after the detector prepared it.
    fn apply(&self, command: Command, actor: Option<Actor>) -> Response {
        let now = self.now();
        let mut state = self.state.lock().expect("lock");
        let command = self.detector.lock().expect("lock").prepare(command, &state, now);
        let effects = state.apply_tracked(&CoreRequest { at: now, command, actor });
        let index = self.index.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(decision) = effects.decision {
            self.feed.publish(index, decision);
        }
        effects.response
    }

    /// Runs the detector's tick and applies its decisions.
    pub fn tick(&self) {
        let now = self.now();
        let commands =
            self.detector.lock().expect("lock").tick(&self.state.lock().expect("lock"), now);
        for command in commands {
            self.apply(command, None);
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

    async fn write(
        &self,
        command: Command,
        actor: Option<Actor>,
    ) -> Result<Served<Response>, CoordinatorError> {
        let by = self.leader().ok_or(CoordinatorError::NoLeader)?;
        // Judged before anything is applied, as the leader judges before it proposes.
        let admitted = {
            let state = self.state.lock().expect("lock");
            let none = baton_core::Pending::default();
            self.limits.lock().expect("lock").admit(&state, &none, &command, actor.as_ref())
        };
        // Applied at once: nothing is ever pending.
        let value = match admitted {
            Ok(_) => self.apply(command, actor),
            Err(refused) => Response::Rejected(refused),
        };
        Ok(Served { value, by })
    }

    /// Through the core's one heartbeat step, as the leader serves it (its lease always
    /// confirmed; each command it asks for applied at once).
    async fn heartbeat(&self, beat: Beat) -> Result<Served<HeartbeatOutcome>, CoordinatorError> {
        let by = self.leader().ok_or(CoordinatorError::NoLeader)?;
        let mut step = HeartbeatStep::new(beat);
        loop {
            let now = self.now();
            let ready = {
                let state = self.state.lock().expect("lock");
                step.ready(&state, &mut self.detector.lock().expect("lock"), now, true)
            };
            match ready {
                Ready::Answer(value) => return Ok(Served { value, by }),
                Ready::Propose(command) => step.committed(&self.apply(command, None)),
                Ready::ConfirmLease => unreachable!("the fake's lease is always confirmed"),
                Ready::GiveUp => return Err(CoordinatorError::NoLeader),
            }
        }
    }

    async fn read(
        &self,
        query: Query,
        _: Consistency,
    ) -> Result<Served<QueryResult>, CoordinatorError> {
        self.serve(|s| s.query(&query))
    }

    fn identity(&self, name: &IdentityName) -> Option<Identity> {
        self.state.lock().expect("lock").identity(name).cloned()
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
            appends_sent_early: 0,
            detector_pass_us: None,
            members: vec![member(ME), member(OTHER)],
        }
    }

    fn digest(&self) -> StateDigest {
        StateDigest::of(&self.state.lock().expect("lock"), Some(10))
    }

    fn feed(&self) -> &baton_api::events::Feed {
        &self.feed
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

fn identity(name: IdentityName, role: AccessRole, secret: &str) -> Identity {
    Identity {
        name,
        role,
        token: baton_auth::credential_for(secret),
        signing_key: None,
        created_at: Timestamp(0),
        rotated_at: None,
        revoked_at: None,
    }
}

/// The app over a fake node, as a real node builds it.
pub fn app_for(fake: std::sync::Arc<FakeCoordinator>) -> baton_api::App {
    let options = baton_api::ApiOptions {
        rate_limit: baton_api::RateLimit::default(),
        sealer: std::sync::Arc::new(baton_api::Sealer::new(CLUSTER_SECRET, &[])),
        sessions: std::sync::Arc::new(baton_auth::SessionKeys::new(CLUSTER_SECRET, &[])),
        https: false,
        stream_keepalive: std::time::Duration::from_secs(15),
        max_streams_per_identity: baton_api::streams::DEFAULT_STREAMS_PER_IDENTITY,
    };
    baton_api::app(fake, options)
}

/// Sends one request through the full app (path normalization included), as the
/// administrator.
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
    call_as(app, Some(ROOT_TOKEN), method, uri, body, content_type).await
}

/// Sends one request with `token` as the bearer token (or none).
pub async fn call_as(
    app: &baton_api::App,
    token: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<&str>,
    content_type: Option<&str>,
) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    send(app, method, uri, &headers, body, content_type).await
}

/// Sends one request with exactly these headers.
pub async fn send(
    app: &baton_api::App,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    content_type: Option<&str>,
) -> Reply {
    send_from(app, None, method, uri, headers, body, content_type).await
}

/// Like [`send`], from the client address `from` (as the server records it), if any.
pub async fn send_from(
    app: &baton_api::App,
    from: Option<std::net::SocketAddr>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    content_type: Option<&str>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(addr) = from {
        req = req.extension(axum::extract::ConnectInfo(addr));
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
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

/// What a Baton-aware client remembers between heartbeats: per heartbeat path, the `Epoch` of
/// the last answer it took when that answer was Secondary, sent back as `ReleasedEpoch` with
/// the next heartbeat (its proof that it let go, so a hand-over away from it completes at once
/// instead of when its last grant lapses).
#[derive(Default)]
pub struct Released(Mutex<BTreeMap<String, u64>>);

impl Released {
    /// The heartbeat body for `path`, with the proof if there is one.
    pub fn body(&self, path: &str, mut body: Value) -> String {
        if let Some(epoch) = self.0.lock().expect("lock").get(path) {
            body["ReleasedEpoch"] = (*epoch).into();
        }
        body.to_string()
    }

    /// Takes the answer to a heartbeat of `path`.
    pub fn took(&self, path: &str, reply: &Reply) {
        if reply.status != StatusCode::OK {
            return;
        }
        let mut released = self.0.lock().expect("lock");
        match (reply.body["Role"].as_u64(), reply.body["Epoch"].as_u64()) {
            (Some(0), Some(epoch)) => released.insert(path.to_string(), epoch),
            _ => released.remove(path),
        };
    }
}
