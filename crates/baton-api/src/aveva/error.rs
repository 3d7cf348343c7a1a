//! AVEVA's error body: `{"OperationId", "Error", "Reason", "Resolution"}`, with the status
//! codes the AVEVA services use.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::coordinator::CoordinatorError;

/// A failed AVEVA request.
#[derive(Debug)]
pub struct AvevaError {
    status: StatusCode,
    error: &'static str,
    reason: String,
    resolution: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Body<'a> {
    operation_id: String,
    error: &'a str,
    reason: &'a str,
    resolution: &'a str,
}

impl AvevaError {
    /// 400: the request is malformed; `reason` says what was wrong.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "The request is not valid.",
            reason: reason.into(),
            resolution: "Correct the request and try again.",
        }
    }

    /// 404: the addressed resource does not exist.
    pub fn not_found(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            error: "The specified resource was not found.",
            reason: reason.into(),
            resolution: "Check the identifiers in the request path.",
        }
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            error: "The request conflicts with the current state of the resource.",
            reason: reason.into(),
            resolution: "Delete the existing resource first, or send the same configuration.",
        }
    }

    /// 401: no valid credential.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "The request is not authenticated.",
            reason: reason.into(),
            resolution: "Send a valid token in the Authorization header: Bearer <token>.",
        }
    }

    /// 403: the caller may not do this.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            error: "Forbidden.",
            reason: reason.into(),
            resolution: "Ask an administrator for access.",
        }
    }

    /// 403 for a tenant the caller does not belong to.
    pub fn other_tenant(tenant: &baton_core::TenantId) -> Self {
        Self::forbidden(format!("This identity is not a member of tenant {:?}.", tenant.as_str()))
    }

    /// 403 for a group of the caller's tenant that admits only its allowed owners.
    pub fn not_allowed_owner(group: &baton_core::GroupId) -> Self {
        Self::forbidden(format!(
            "This identity is not an allowed owner of failover group {:?}.",
            group.as_str()
        ))
    }

    /// 429: the client sends faster than allowed.
    pub fn too_many_requests(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "Too many requests.",
            reason: reason.into(),
            resolution: "Send heartbeats every FailoverTimeout / 2.",
        }
    }

    /// 405: the path exists but not with this method.
    pub fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error: "The method is not allowed on this resource.",
            reason: "This API version does not support the method on this path.".into(),
            resolution: "Check the API reference for the methods this path supports.",
        }
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error: "The request body must be JSON.",
            reason: format!("Content-Type {content_type:?} is not supported."),
            resolution: "Send the body as application/json.",
        }
    }

    /// 413: the body is larger than allowed.
    pub fn payload_too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: "The request body is too large.",
            reason: format!("The body exceeds the limit of {limit} bytes."),
            resolution: "Send a smaller body.",
        }
    }

    /// 413: the change would take the group or tenant over one of the cluster's limits.
    pub fn over_limit(over: &baton_core::OverLimit) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: "The change would exceed a limit.",
            reason: format!("{}.", crate::error::capitalized(&over.to_string())),
            resolution: "Remove something first, or ask the operator to raise the limit.",
        }
    }

    /// 500 for an answer that should be impossible (a bug); the detail is logged, not shown.
    pub fn internal(detail: impl Into<String>) -> Self {
        CoordinatorError::Internal(detail.into()).into()
    }

    /// 503: the session's role is being decided (its successor is being committed); it holds
    /// nothing until then.
    pub fn deciding(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "The session's role is being decided.",
            reason: reason.into(),
            resolution: "Heartbeat again after the time in the Retry-After header.",
        }
    }

    /// The status code this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<CoordinatorError> for AvevaError {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::NoLeader => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "The service is unavailable.",
                reason: "The Baton cluster has no leader right now (an election is under way or a quorum is unreachable).".into(),
                resolution: "Retry shortly.",
            },
            CoordinatorError::OutcomeUnknown(reason) => {
                tracing::warn!(%reason, "AVEVA request outcome unknown");
                Self {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    error: "The outcome of the request is unknown.",
                    reason: "Leadership changed or the request timed out after it was proposed; it may or may not have been applied.".into(),
                    resolution: "Read the resource to see whether the change was applied, then retry if needed.",
                }
            }
            e @ CoordinatorError::TooLarge { .. } => Self {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                error: "The request is too large.",
                reason: e.to_string(),
                resolution: "Make the change smaller.",
            },
            CoordinatorError::Membership(reason)
            | CoordinatorError::Internal(reason)
            | CoordinatorError::Refused(reason) => {
                tracing::error!(%reason, "internal error serving an AVEVA request");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    error: "An internal error occurred.",
                    reason: "See the Baton node's log.".into(),
                    resolution: "Retry; contact the operator if it persists.",
                }
            }
        }
    }
}

impl IntoResponse for AvevaError {
    fn into_response(self) -> Response {
        let body = Body {
            operation_id: format!("{:032x}", rand::random::<u128>()),
            error: self.error,
            reason: &self.reason,
            resolution: self.resolution,
        };
        (self.status, Json(body)).into_response()
    }
}
