//! Cross-cutting request handling: path normalization, leader redirects, the served-by
//! header and request metrics.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use crate::AppState;
use crate::coordinator::Coordinator;
use crate::error::no_leader_response;
use crate::metrics::RequestLabels;
use crate::served_by::SERVED_BY;

/// Positions of literal words in AVEVA paths (`/api/{v}/tenants/{t}/namespaces/{n}/
/// clientfailover/groups/{g}/clientsessions/{s}/heartbeat`), counted from `api` = 0. Only these
/// segments are lowercased; ids keep their case.
const AVEVA_LITERALS: [usize; 7] = [0, 1, 2, 4, 6, 7, 9];
/// The last literal (`heartbeat`, `roleoverride`) sits at position 11.
const AVEVA_ACTION: usize = 11;

/// Lowercases the literal words of AVEVA paths so that routing is case-insensitive for them.
pub fn normalize_path(mut req: Request) -> Request {
    let path = req.uri().path();
    // Compared as bytes: slicing the string could split a multi-byte character.
    let is_aveva = path.as_bytes().get(..5).is_some_and(|p| p.eq_ignore_ascii_case(b"/api/"));
    if !is_aveva {
        return req;
    }
    let literal = |i: usize| AVEVA_LITERALS.contains(&i) || i == AVEVA_ACTION;
    // Nearly every client already writes the literals in lower case: nothing to rebuild (nor
    // to allocate: every heartbeat comes here).
    if path[1..]
        .split('/')
        .enumerate()
        .all(|(i, s)| !literal(i) || !s.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return req;
    }
    let normalized: Vec<String> = path[1..]
        .split('/')
        .enumerate()
        .map(|(i, s)| if literal(i) { s.to_ascii_lowercase() } else { s.to_string() })
        .collect();
    let mut new_path = format!("/{}", normalized.join("/"));
    if new_path == path {
        return req;
    }
    if let Some(q) = req.uri().query() {
        new_path = format!("{new_path}?{q}");
    }
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = new_path.parse().ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req
}

/// With `?redirect` on a node that is not the leader: 307 to the same path and query on the
/// leader's API address (503 when no leader is known). Without it, the request goes on and
/// the coordinator forwards it.
pub async fn redirect_to_leader<C: Coordinator>(
    State(s): State<AppState<C>>,
    req: Request,
    next: Next,
) -> Response {
    let wants_redirect = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p.split('=').next().is_some_and(|k| k.eq_ignore_ascii_case("redirect")))
    });
    if !wants_redirect {
        return next.run(req).await;
    }
    let status = s.coordinator.status();
    if status.leader == Some(status.id) {
        return next.run(req).await;
    }
    let Some(leader) = status.leader_member() else {
        return no_leader_response();
    };
    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("{}://{}{}", s.scheme, leader.api_addr, path_and_query);
    match HeaderValue::from_str(&location) {
        Ok(location) => {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response()
        }
        Err(_) => no_leader_response(),
    }
}

/// The header naming a request in logs; a client's own (up to 64 letters, digits, `-`, `_`,
/// `.`) is kept, else one is made up. Every answer carries it.
pub const REQUEST_ID: &str = "x-request-id";

fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_owned)
}

/// Runs the request in a span named by its request id (answered in `x-request-id`), counts it
/// by route, method and status, and sets the served-by header when the handler did not.
pub async fn record<C: Coordinator>(
    State(s): State<AppState<C>>,
    req: Request,
    next: Next,
) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let method = req.method().to_string();
    let method_label = crate::metrics::method_label(req.method());
    let id = request_id(&req);
    // Connection tasks do not inherit the node's span: name the node here.
    let node = s.coordinator.node_id();
    // The coordinator records the group a write or heartbeat addresses.
    let span = tracing::info_span!(
        "request",
        node,
        id = %id,
        method = %method,
        route = %route,
        group = tracing::field::Empty
    );
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if !response.headers().contains_key(SERVED_BY) {
        response.headers_mut().insert(SERVED_BY, HeaderValue::from(s.coordinator.node_id()));
    }
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method: method_label.to_string(),
            status: response.status().as_u16(),
        })
        .inc();
    response
}
