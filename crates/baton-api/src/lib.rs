//! # baton-api: the public HTTP API
//!
//! One axum router per node serves the operational endpoints, cluster administration and the
//! failover-group dialects. It knows nothing of Raft or storage: everything goes through the
//! [`Coordinator`] trait, which `baton-server` implements over openraft and tests implement
//! in memory.
//!
//! ```text
//!  request ─▶ normalize path words ─▶ router ─┬─ /healthz /readyz /cluster/status|nodes|digest /metrics  (this node's view)
//!                                             ├─ /cluster/learners|nodes/{id}|snapshot           (leader)
//!                                             └─ /api/{v1-preview|v1}/.../clientfailover/...       (leader)
//!            every response: x-baton-served-by; `?redirect` on a follower: 307 to the leader
//! ```
//!
//! ## Contract
//! - Writes and reads of the dialects go to the leader through [`Coordinator::write`] and
//!   [`Coordinator::read`] (the coordinator forwards from a follower). With `?redirect`, a
//!   follower answers 307 with `Location` at the leader's API address instead (307 keeps the
//!   method and body). With no leader: 503.
//! - Each dialect answers in its own error format; the native endpoints use [`ApiError`].
//! - Literal path words of the AVEVA API are case-insensitive (`clientSessions` =
//!   `clientsessions`); ids in paths are matched exactly.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

pub mod aveva;
pub mod coordinator;
pub mod error;
pub mod metrics;
mod middleware;
pub mod ops;
mod served_by;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use tower::ServiceExt as _;
use tower::util::MapRequest;

pub use coordinator::{
    ClusterStatus, Consistency, Coordinator, CoordinatorError, HeartbeatOutcome, Member, NodeAddrs,
    NodeId, Served, StateDigest,
};
pub use error::ApiError;
pub use metrics::Metrics;
pub use served_by::{SERVED_BY, ServedBy};

/// What every handler can reach.
pub struct AppState<C> {
    /// The node.
    pub coordinator: Arc<C>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
}

impl<C> Clone for AppState<C> {
    fn clone(&self) -> Self {
        Self { coordinator: self.coordinator.clone(), metrics: self.metrics.clone() }
    }
}

/// The router, before path normalization. Use [`app`] to serve it.
pub fn router<C: Coordinator>(coordinator: Arc<C>) -> Router {
    let state = AppState { coordinator, metrics: Arc::new(Metrics::default()) };
    let leader_routes = ops::admin_routes::<C>().nest("/api", aveva::routes::<C>()).layer(
        axum::middleware::from_fn_with_state(state.clone(), middleware::redirect_to_leader::<C>),
    );
    ops::local_routes::<C>()
        .merge(leader_routes)
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::record::<C>))
        .with_state(state)
}

/// The service a node serves: [`router`] behind the path normalization, which must run before
/// routing.
pub type App = MapRequest<Router, fn(Request) -> Request>;

/// Builds the public API service for a node.
pub fn app<C: Coordinator>(coordinator: Arc<C>) -> App {
    router(coordinator).map_request(middleware::normalize_path as fn(Request) -> Request)
}
