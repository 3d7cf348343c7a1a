//! # baton-api: the public HTTP API
//!
//! One axum router per node serves the operational endpoints, cluster administration and the
//! failover-group dialects. It knows nothing of Raft or storage: everything goes through the
//! [`Coordinator`] trait, which `baton-server` implements over openraft and tests implement
//! in memory.
//!
//! ```text
//!  request ─▶ normalize path words ─▶ router ─┬─ /healthz /readyz /dashboard              (open: probes, the page)
//!                                             ├─ /cluster/status|nodes|digest /metrics    (this node's view, admins)
//!                                             ├─ /cluster/learners|nodes/{id}|snapshot    (leader, admins)
//!                                             ├─ /identities /audit /groups/...           (native, bearer token)
//!                                             ├─ /heartbeats                              (native: a WebSocket of heartbeats)
//!                                             ├─ /events /groups/.../events|history       (decisions: SSE, history)
//!                                             ├─ /api/{v1-preview|v1}/.../clientfailover  (AVEVA, bearer token)
//!                                             ├─ /hybridity/api/...                       (HCX, x-hm-authorization)
//!                                             ├─ / /v3/{project}/... /identity/v3/...     (Cinder, X-Auth-Token)
//!                                             └─ /api/v4/failover-groups/...              (Uplynk, msg/sig)
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

pub mod auth;
pub mod aveva;
pub mod cinder;
pub mod coordinator;
mod dashboard;
pub mod error;
pub mod events;
pub mod hcx;
pub mod heartbeat_stream;
pub mod metrics;
mod middleware;
pub mod native;
pub mod ops;
mod served_by;
pub mod streams;
pub mod uplynk;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use tower::ServiceExt as _;
use tower::util::MapRequest;

pub use auth::{Caller, Denied, Gate, RateLimit};
pub use baton_auth::Sealer;
pub use coordinator::{
    ClusterStatus, Consistency, Coordinator, CoordinatorError, HeartbeatOutcome, Member, NodeAddrs,
    NodeId, Served, StateDigest,
};
pub use error::ApiError;
pub use metrics::Metrics;
pub use served_by::{SERVED_BY, ServedBy};

/// What every handler can reach: one shared pointer, since every middleware layer and route
/// clones it for each request (four `Arc`s cost four contended atomic updates per clone and as
/// many per drop, a few per cent of a busy leader's CPU).
pub struct AppState<C>(Arc<Shared<C>>);

/// The parts of [`AppState`].
pub struct Shared<C> {
    /// The node.
    pub coordinator: Arc<C>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// The per-identity rate limiter.
    pub gate: Gate,
    /// Seals the signing keys of new identities.
    pub sealer: Arc<Sealer>,
    /// Session tokens (see [`ApiOptions::sessions`]).
    pub sessions: Arc<baton_auth::SessionKeys>,
    /// Signatures seen on this node (see [`baton_auth::replay`]).
    pub replay: std::sync::Mutex<baton_auth::replay::ReplayCache>,
    /// `https` when the API is served over TLS (for redirects), else `http`.
    pub scheme: &'static str,
    /// Places for heartbeat and event streams (see [`streams`]).
    pub streams: streams::StreamPlaces,
    /// See [`ApiOptions::stream_keepalive`].
    pub stream_keepalive: std::time::Duration,
}

impl<C> Clone for AppState<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C> std::ops::Deref for AppState<C> {
    type Target = Shared<C>;

    fn deref(&self) -> &Shared<C> {
        &self.0
    }
}

/// How a node's API is set up.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Requests per identity per second.
    pub rate_limit: RateLimit,
    /// Seals signing keys; built from the cluster secret.
    pub sealer: Arc<Sealer>,
    /// Makes and checks the session tokens logins hand out; built from the same secret.
    pub sessions: Arc<baton_auth::SessionKeys>,
    /// Whether the API is served over TLS (redirects then name `https`).
    pub https: bool,
    /// A heartbeat stream silent this long is pinged; silent twice as long, it is closed.
    pub stream_keepalive: std::time::Duration,
    /// Heartbeat and event streams one identity may hold open on the node.
    pub max_streams_per_identity: usize,
}

/// The router, before path normalization. Use [`app`] to serve it.
pub fn router<C: Coordinator>(coordinator: Arc<C>, options: ApiOptions) -> Router {
    let metrics = Arc::new(Metrics::new(coordinator.feed().metrics()));
    let state = AppState(Arc::new(Shared {
        coordinator,
        metrics,
        gate: Gate::new(options.rate_limit),
        sealer: options.sealer,
        sessions: options.sessions,
        replay: std::sync::Mutex::new(baton_auth::replay::ReplayCache::new()),
        scheme: if options.https { "https" } else { "http" },
        streams: streams::StreamPlaces::new(options.max_streams_per_identity),
        stream_keepalive: options.stream_keepalive,
    }));
    let native_auth =
        axum::middleware::from_fn_with_state(state.clone(), native::authenticate::<C>);
    let leader_routes = ops::admin_routes::<C>()
        .merge(native::routes::<C>())
        .merge(events::routes::<C>())
        .route("/heartbeats", axum::routing::get(heartbeat_stream::open::<C>))
        .layer(axum::extract::DefaultBodyLimit::max(native::MAX_BODY))
        .layer(native_auth.clone())
        .nest("/api", aveva::routes::<C>(state.clone()))
        .nest("/hybridity/api", hcx::routes::<C>(state.clone()))
        .nest("/api/v4", uplynk::routes::<C>(state.clone()))
        .merge(cinder::routes::<C>(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::redirect_to_leader::<C>,
        ));
    ops::probe_routes::<C>()
        .merge(dashboard::routes())
        .merge(ops::local_routes::<C>().layer(native_auth))
        .merge(leader_routes)
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::record::<C>))
        .with_state(state)
}

/// The service a node serves: [`router`] behind the path normalization, which must run before
/// routing.
pub type App = MapRequest<Router, fn(Request) -> Request>;

/// Builds the public API service for a node.
pub fn app<C: Coordinator>(coordinator: Arc<C>, options: ApiOptions) -> App {
    router(coordinator, options).map_request(middleware::normalize_path as fn(Request) -> Request)
}
