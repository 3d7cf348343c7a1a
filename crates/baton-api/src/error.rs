//! The native API's error: one JSON body for every failure of the operational and admin
//! endpoints. Dialects have their own error bodies (see `aveva::error`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
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
    /// A membership change or another change was refused by the state.
    #[error("{0}")]
    Conflict(String),
    /// No valid credential.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource (or none the caller may see).
    #[error("{0}")]
    NotFound(String),
    /// The identity sends faster than allowed; retry after this many seconds.
    #[error("too many requests from this identity; retry after {0} s")]
    TooManyRequests(u64),
    /// The node is at a limit (open heartbeat streams); retry later or on another node.
    #[error("{0}")]
    Busy(String),
    /// The change is larger than the log takes.
    #[error("{0}")]
    TooLarge(String),
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
    /// The error's code, as the `error` field of its body names it.
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NoLeader => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            ApiError::OutcomeUnknown => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
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
            e @ CoordinatorError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            // The API's own writes always name their caller: a refusal is a bug.
            CoordinatorError::Internal(reason) | CoordinatorError::Refused(reason) => {
                tracing::error!(%reason, "internal error");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let mut response =
            (status, Json(Body { error: code, message: self.to_string() })).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests(seconds) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            _ => {}
        }
        response
    }
}

/// How a dialect answers a request the node could not serve: the status and a message safe to
/// show (the detail is logged here, never shown).
pub(crate) fn unserved(e: CoordinatorError, dialect: &'static str) -> (StatusCode, &'static str) {
    match e {
        CoordinatorError::NoLeader => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The Baton cluster has no leader right now; retry shortly.",
        ),
        CoordinatorError::OutcomeUnknown(reason) => {
            tracing::warn!(%reason, dialect, "request outcome unknown");
            (
                StatusCode::GATEWAY_TIMEOUT,
                "The outcome of the request is unknown; read the resource before retrying.",
            )
        }
        CoordinatorError::TooLarge { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "The change is larger than one request may be in the log (256 KiB); make it smaller.",
        ),
        CoordinatorError::Membership(reason)
        | CoordinatorError::Internal(reason)
        | CoordinatorError::Refused(reason) => {
            tracing::error!(%reason, dialect, "internal error");
            (StatusCode::INTERNAL_SERVER_ERROR, "An internal error occurred; see the node's log.")
        }
    }
}

/// `text` with its first letter in upper case, for a core message that starts a sentence.
pub(crate) fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The 503 answer when a redirect is asked for but no leader is known.
pub(crate) fn no_leader_response() -> Response {
    ApiError::NoLeader.into_response()
}
