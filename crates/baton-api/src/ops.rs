//! Operational and cluster-administration endpoints of the native API.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::coordinator::{
    ClusterStatus, Coordinator, Member, NodeAddrs, NodeId, Served, StateDigest,
};
use crate::error::ApiError;
use crate::native::Admin;
use crate::served_by::ServedBy;

/// Liveness and readiness probes: open to all (load balancers and container health checks
/// carry no token); they show only this node's id, whether it is ready, and indexes.
pub fn probe_routes<C: Coordinator>() -> Router<AppState<C>> {
    Router::new().route("/healthz", get(healthz::<C>)).route("/readyz", get(readyz::<C>))
}

/// Routes that any node answers from its own view, without a leader (administrators only).
pub fn local_routes<C: Coordinator>() -> Router<AppState<C>> {
    Router::new()
        .route("/cluster/status", get(status::<C>))
        .route("/cluster/nodes", get(nodes::<C>))
        .route("/cluster/digest", get(digest::<C>))
        .route("/metrics", get(metrics::<C>))
}

/// Cluster administration: served by the leader (forwarded from followers).
pub fn admin_routes<C: Coordinator>() -> Router<AppState<C>> {
    Router::new()
        .route("/cluster/learners", post(add_learner::<C>))
        .route("/cluster/nodes/{id}/promote", post(promote::<C>))
        .route("/cluster/nodes/{id}", delete(remove::<C>))
        .route("/cluster/snapshot", post(snapshot::<C>))
}

/// A `{id}` path segment that must be a node id; a bad one gets [`ApiError`]'s body.
pub struct NodeIdPath(pub NodeId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NodeIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        raw.parse()
            .map(NodeIdPath)
            .map_err(|_| ApiError::BadRequest(format!("node id {raw:?} is not a positive integer")))
    }
}

/// A JSON body whose rejections use [`ApiError`]'s body.
pub struct NativeJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for NativeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| NativeJson(v))
            .map_err(|e: JsonRejection| ApiError::BadRequest(e.body_text()))
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    id: NodeId,
}

async fn healthz<C: Coordinator>(State(s): State<AppState<C>>) -> Json<Health> {
    Json(Health { status: "ok", id: s.coordinator.node_id() })
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    leader: Option<NodeId>,
    committed_index: Option<u64>,
    applied_index: Option<u64>,
    reason: Option<&'static str>,
}

/// Ready when a leader is known and this node has applied everything it knows committed.
async fn readyz<C: Coordinator>(State(s): State<AppState<C>>) -> Response {
    let st = s.coordinator.status();
    let reason = if st.leader.is_none() {
        Some("no leader is known")
    } else if st.apply_lag() > 0 {
        Some("this node has not applied every committed entry yet")
    } else {
        None
    };
    let body = Readiness {
        ready: reason.is_none(),
        leader: st.leader,
        committed_index: st.committed_index,
        applied_index: st.applied_index,
        reason,
    };
    let code = if reason.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

async fn status<C: Coordinator>(State(s): State<AppState<C>>, _: Admin) -> Json<ClusterStatus> {
    Json(s.coordinator.status())
}

#[derive(Serialize)]
struct NodeView {
    id: NodeId,
    raft_addr: String,
    api_addr: String,
    voter: bool,
    leader: bool,
}

async fn nodes<C: Coordinator>(State(s): State<AppState<C>>, _: Admin) -> Json<Vec<NodeView>> {
    let st = s.coordinator.status();
    let view = |m: &Member| NodeView {
        id: m.id,
        raft_addr: m.raft_addr.clone(),
        api_addr: m.api_addr.clone(),
        voter: m.voter,
        leader: Some(m.id) == st.leader,
    };
    Json(st.members.iter().map(view).collect())
}

async fn digest<C: Coordinator>(State(s): State<AppState<C>>, _: Admin) -> Json<StateDigest> {
    Json(s.coordinator.digest())
}

async fn metrics<C: Coordinator>(State(s): State<AppState<C>>, _: Admin) -> Response {
    let text = s.metrics.render(&s.coordinator.status());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Body of `POST /cluster/learners`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearner {
    /// The new node's id.
    pub id: NodeId,
    /// Its internal Raft address.
    pub raft_addr: String,
    /// Its public API address.
    pub api_addr: String,
}

/// `host:port` with a non-empty host and a numeric port.
fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

fn served_status(served: Served<ClusterStatus>) -> Response {
    (ServedBy(served.by), Json(served.value)).into_response()
}

async fn add_learner<C: Coordinator>(
    State(s): State<AppState<C>>,
    _: Admin,
    NativeJson(body): NativeJson<AddLearner>,
) -> Result<Response, ApiError> {
    for (name, addr) in [("raft_addr", &body.raft_addr), ("api_addr", &body.api_addr)] {
        if !is_host_port(addr) {
            return Err(ApiError::BadRequest(format!(
                "{name} {addr:?} is not a host:port address"
            )));
        }
    }
    let addrs = NodeAddrs { raft_addr: body.raft_addr, api_addr: body.api_addr };
    Ok(served_status(s.coordinator.add_learner(body.id, addrs).await?))
}

async fn promote<C: Coordinator>(
    State(s): State<AppState<C>>,
    _: Admin,
    NodeIdPath(id): NodeIdPath,
) -> Result<Response, ApiError> {
    Ok(served_status(s.coordinator.promote(id).await?))
}

async fn remove<C: Coordinator>(
    State(s): State<AppState<C>>,
    _: Admin,
    NodeIdPath(id): NodeIdPath,
) -> Result<Response, ApiError> {
    Ok(served_status(s.coordinator.remove(id).await?))
}

async fn snapshot<C: Coordinator>(
    State(s): State<AppState<C>>,
    _: Admin,
) -> Result<Response, ApiError> {
    s.coordinator.snapshot().await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "snapshot": "started" }))).into_response())
}

/// Needed so `Arc<C>` state works for the dialect routers too.
impl<C: Coordinator> axum::extract::FromRef<AppState<C>> for Arc<C> {
    fn from_ref(s: &AppState<C>) -> Arc<C> {
        s.coordinator.clone()
    }
}
