//! The server side: axum routes for the Raft RPCs, the cluster-secret check, and the postcard
//! body type shared with handlers the server crate adds (leader forwarding).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use baton_raft::typ::{AppendEntriesRequest, InstallSnapshotRequest, Raft, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{CONTENT_TYPE, PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE, SECRET_HEADER};

/// Largest internal request body: a batch of log entries or one snapshot chunk.
pub const MAX_RPC_BODY: usize = 64 * 1024 * 1024;

/// A postcard-encoded body, as request extractor and as response.
pub struct Postcard<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Postcard<T> {
    type Rejection = (StatusCode, String);

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")))?;
        postcard::from_bytes(&bytes)
            .map(Postcard)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("cannot decode the body: {e}")))
    }
}

impl<T: Serialize> IntoResponse for Postcard<T> {
    fn into_response(self) -> Response {
        match postcard::to_allocvec(&self.0) {
            Ok(bytes) => ([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], bytes)
                .into_response(),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an RPC answer");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// The Raft RPC routes (`/raft/append`, `/raft/vote`, `/raft/snapshot`), unauthenticated:
/// wrap them with [`secured`].
pub fn raft_routes(raft: Raft) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .with_state(raft)
}

/// Requires one of the cluster `secrets` (the current one and any still accepted during a
/// rotation) on every request of `router` and raises the body limit to [`MAX_RPC_BODY`]. A
/// request without a right secret gets 401 and reaches no handler.
pub fn secured(router: Router, secrets: &[String]) -> Router {
    let secrets: Arc<[Vec<u8>]> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
    router
        .layer(DefaultBodyLimit::max(MAX_RPC_BODY))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let secrets = secrets.clone();
            async move {
                let presented = req.headers().get(SECRET_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
                // Every secret is compared, so the time taken does not tell which one matched.
                let matched = secrets
                    .iter()
                    .fold(false, |any, s| constant_time_eq::constant_time_eq(presented, s) | any);
                if !matched {
                    tracing::warn!(path = %req.uri().path(), "refused an internal request without the cluster secret");
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                next.run(req).await
            }
        }))
}

async fn append(
    State(raft): State<Raft>,
    Postcard(rpc): Postcard<AppendEntriesRequest>,
) -> impl IntoResponse {
    Postcard(raft.append_entries(rpc).await)
}

async fn vote(State(raft): State<Raft>, Postcard(rpc): Postcard<VoteRequest>) -> impl IntoResponse {
    Postcard(raft.vote(rpc).await)
}

async fn snapshot(
    State(raft): State<Raft>,
    Postcard(rpc): Postcard<InstallSnapshotRequest>,
) -> impl IntoResponse {
    Postcard(raft.install_snapshot(rpc).await)
}
