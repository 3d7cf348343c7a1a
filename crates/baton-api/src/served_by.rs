//! The `x-baton-served-by` header: which node executed the request.

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponseParts, ResponseParts};

use crate::coordinator::NodeId;

/// Response header naming the node that executed the request (the leader for forwarded
/// writes and linearizable reads). Every response carries it; when a handler does not set it,
/// the answering node's id is used.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-baton-served-by");

/// Sets [`SERVED_BY`] on a response.
pub struct ServedBy(pub NodeId);

impl IntoResponseParts for ServedBy {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.headers_mut().insert(SERVED_BY, HeaderValue::from(self.0));
        Ok(res)
    }
}
