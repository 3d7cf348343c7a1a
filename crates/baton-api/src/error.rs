//! The native API's error: one JSON body for every failure of the operational and admin
//! endpoints. Dialects have their own error bodies (see `aveva::error`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::coordinator::CoordinatorError;

/// A failed native request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No leader is known.
    #[error("the cluster has no leader right now; retry shortly")]
    NoLeader,
    /// The outcome of a write is unknown.
    #[error("the outcome of the request is unknown; it may or may not have been applied")]
    OutcomeUnknown,
    /// The request was malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A membership change was refused.
    #[error("{0}")]
    Conflict(String),
    /// Something failed inside the node; details are in its log.
    #[error("internal error; see the node's log")]
    Internal,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NoLeader => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            ApiError::OutcomeUnknown => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::NoLeader => ApiError::NoLeader,
            CoordinatorError::OutcomeUnknown(reason) => {
                tracing::warn!(%reason, "request outcome unknown");
                ApiError::OutcomeUnknown
            }
            CoordinatorError::Membership(reason) => ApiError::Conflict(reason),
            CoordinatorError::Internal(reason) => {
                tracing::error!(%reason, "internal error");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        (status, Json(Body { error: code, message: self.to_string() })).into_response()
    }
}

/// The 503 answer when a redirect is asked for but no leader is known.
pub(crate) fn no_leader_response() -> Response {
    ApiError::NoLeader.into_response()
}
