//! The AVEVA CONNECT client-failover dialect, both `v1-preview` (the seed document) and `v1`
//! (GA status codes). Translates the wire format to core commands and queries; decides nothing
//! about failover itself.

pub mod error;
mod sessions;
pub mod timespan;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use baton_core::{Change, Command, Query, QueryResult, Rejection, Response as CoreResponse};

use self::error::AvevaError;
use self::wire::{
    AvevaJson, AvevaPath, GroupConfigurationIn, GroupConfigurationOut, Paging, Version,
};
use crate::AppState;
use crate::auth::Denied;
use crate::coordinator::{Consistency, Coordinator, Served};
use crate::served_by::ServedBy;

/// Header carrying the total number of items of a v1 list.
const TOTAL_COUNT: HeaderName = HeaderName::from_static("total-count");

/// The AVEVA routes, to be nested under `/api`. Every request, known path or not, is
/// authenticated first (`Authorization: Bearer <token>`).
pub fn routes<C: Coordinator>(state: AppState<C>) -> Router<AppState<C>> {
    let base = "/{version}/tenants/{tenant}/namespaces/{namespace}/clientfailover";
    Router::new()
        .route(base, get(endpoint_info))
        .route(&format!("{base}/groups"), get(list_groups::<C>).post(post_group::<C>))
        .route(
            &format!("{base}/groups/{{group}}"),
            get(get_group::<C>).put(put_group::<C>).delete(delete_group::<C>),
        )
        .route(&format!("{base}/groups/{{group}}/status"), get(sessions::group_status::<C>))
        .route(
            &format!("{base}/groups/{{group}}/clientsessions"),
            get(sessions::list_sessions::<C>).post(sessions::post_session::<C>),
        )
        .route(
            &format!("{base}/groups/{{group}}/clientsessions/{{session}}"),
            get(sessions::get_session::<C>)
                .put(sessions::put_session::<C>)
                .delete(sessions::delete_session::<C>),
        )
        .route(
            &format!("{base}/groups/{{group}}/clientsessions/{{session}}/heartbeat"),
            post(sessions::heartbeat::<C>),
        )
        .route(
            &format!("{base}/groups/{{group}}/clientsessions/{{session}}/roleoverride"),
            post(sessions::role_override::<C>),
        )
        .fallback(|| async {
            AvevaError::not_found("No AVEVA client-failover resource exists at this path.")
        })
        .method_not_allowed_fallback(|| async { AvevaError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(wire::MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state, authenticate::<C>))
}

/// Lets in only callers with a valid token, answering AVEVA's 401 (with `WWW-Authenticate`)
/// or 429 otherwise; the [`Caller`] is left in the request for [`AvevaPath`].
async fn authenticate<C: Coordinator>(
    State(state): State<AppState<C>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    crate::auth::let_in(
        &state,
        request,
        next,
        crate::auth::Tokens::Own(crate::auth::bearer),
        denied_answer,
    )
    .await
}

/// This API's answer to a request that was not let in.
fn denied_answer(denied: Denied) -> Response {
    match denied {
        denied @ Denied::Throttled { .. } => {
            let mut response = AvevaError::too_many_requests(format!(
                "This identity sends requests faster than allowed; retry after {} s.",
                denied.retry_after_secs()
            ))
            .into_response();
            response.headers_mut().insert(header::RETRY_AFTER, denied.retry_after_secs().into());
            response
        }
        Denied::BadRequestKey => {
            AvevaError::bad_request(format!("{}.", Denied::BadRequestKey)).into_response()
        }
        denied => {
            ([(header::WWW_AUTHENTICATE, "Bearer")], AvevaError::unauthorized(format!("{denied}.")))
                .into_response()
        }
    }
}

type Result<T> = std::result::Result<T, AvevaError>;

async fn endpoint_info(path: AvevaPath) -> Response {
    let version = match path.version {
        Version::V1Preview => "v1-preview",
        Version::V1 => "v1",
    };
    axum::Json(serde_json::json!({ "Version": version })).into_response()
}

async fn list_groups<C: Coordinator>(
    State(c): State<Arc<C>>,
    path: AvevaPath,
    paging: Paging,
) -> Result<Response> {
    let Served { value, by } = c.read(Query::Groups(path.scope), Consistency::Linearizable).await?;
    let QueryResult::Groups(groups) = value else {
        return Err(AvevaError::internal("a groups query answered with one group"));
    };
    let principal = &path.caller.principal;
    let all: Vec<GroupConfigurationOut> =
        groups.iter().filter(|g| principal.may_use(g)).map(GroupConfigurationOut::from).collect();
    Ok(list_response(path.version, &paging, by, all))
}

/// A list as each version answers it: v1-preview the whole array; v1 the page that `skip` and
/// `count` select, with the total in `Total-Count`.
pub(crate) fn list_response<T: serde::Serialize>(
    version: Version,
    paging: &Paging,
    by: crate::coordinator::NodeId,
    all: Vec<T>,
) -> Response {
    match version {
        Version::V1Preview => (ServedBy(by), axum::Json(all)).into_response(),
        Version::V1 => {
            let total = all.len();
            let page: Vec<_> = all.into_iter().skip(paging.skip).take(paging.count).collect();
            (ServedBy(by), [(TOTAL_COUNT, total.to_string())], axum::Json(page)).into_response()
        }
    }
}

async fn get_group<C: Coordinator>(State(c): State<Arc<C>>, path: AvevaPath) -> Result<Response> {
    let Served { value: group, by } = sessions::read_group(&*c, &path).await?;
    Ok((ServedBy(by), axum::Json(GroupConfigurationOut::from(&group))).into_response())
}

async fn post_group<C: Coordinator>(
    State(c): State<Arc<C>>,
    path: AvevaPath,
    AvevaJson(body): AvevaJson<GroupConfigurationIn>,
) -> Result<Response> {
    let (id, config) = body.into_config(None)?;
    let key = baton_core::GroupKey { scope: path.scope.clone(), group: id };
    let actor = Some(path.caller.actor());
    let Served { value, by } =
        c.write(Command::CreateGroup { key, config, members: vec![] }, actor).await?;
    match value {
        CoreResponse::Group { group, change } => {
            let status = match (path.version, change) {
                (Version::V1, Change::Created) => StatusCode::CREATED,
                _ => StatusCode::OK,
            };
            Ok((status, ServedBy(by), axum::Json(GroupConfigurationOut::from(&*group)))
                .into_response())
        }
        other => Err(rejected(other)),
    }
}

async fn put_group<C: Coordinator>(
    State(c): State<Arc<C>>,
    path: AvevaPath,
    AvevaJson(body): AvevaJson<GroupConfigurationIn>,
) -> Result<Response> {
    if path.version == Version::V1 {
        // PUT on a group existed only in the preview; v1 dropped it.
        return Err(AvevaError::method_not_allowed());
    }
    let key = path.group_key();
    let (_, mut config) = body.into_config(Some(&key.group))?;
    // AVEVA configures name, description and timeout; what another dialect set on the same
    // group (its policy, labels, visibility) is kept.
    let Served { value: current, .. } =
        c.read(Query::Group(key.clone()), Consistency::Linearizable).await?;
    if let QueryResult::Group(Some(current)) = current {
        config.policy = current.config.policy.clone();
        config.labels = current.config.labels.clone();
        config.owners_only = current.config.owners_only;
    }
    let actor = Some(path.caller.actor());
    let Served { value, by } = c.write(Command::PutGroup { key, config }, actor).await?;
    match value {
        CoreResponse::Group { group, .. } => {
            Ok((ServedBy(by), axum::Json(GroupConfigurationOut::from(&*group))).into_response())
        }
        other => Err(rejected(other)),
    }
}

async fn delete_group<C: Coordinator>(
    State(c): State<Arc<C>>,
    path: AvevaPath,
) -> Result<Response> {
    // v1 refuses while sessions are active (the leader fills in which are); the preview deletes.
    let command = Command::DeleteGroup {
        key: path.group_key(),
        refuse_if_active: path.version == Version::V1,
        active: Vec::new(),
    };
    let Served { value, by } = c.write(command, Some(path.caller.actor())).await?;
    match value {
        CoreResponse::Deleted => Ok(match path.version {
            Version::V1Preview => (StatusCode::OK, ServedBy(by), ()).into_response(),
            Version::V1 => (StatusCode::NO_CONTENT, ServedBy(by), ()).into_response(),
        }),
        other => Err(rejected(other)),
    }
}

pub(crate) fn group_not_found(group: &baton_core::GroupId) -> AvevaError {
    AvevaError::not_found(format!("Failover group {:?} does not exist.", group.as_str()))
}

/// Maps a core refusal (or an answer of the wrong kind, which is a bug) to AVEVA's error.
pub(crate) fn rejected(response: CoreResponse) -> AvevaError {
    match response {
        CoreResponse::Rejected(Rejection::GroupNotFound(key)) => group_not_found(&key.group),
        CoreResponse::Rejected(Rejection::GroupExists { key, .. }) => AvevaError::conflict(
            format!("Group {:?} already exists with different configuration.", key.group.as_str()),
        ),
        CoreResponse::Rejected(Rejection::GroupHasActiveSessions(key)) => AvevaError::conflict(
            format!("Group {:?} has active sessions and cannot be deleted.", key.group.as_str()),
        ),
        CoreResponse::Rejected(Rejection::SessionNotFound { session, .. }) => {
            AvevaError::not_found(format!(
                "Client session {:?} does not exist in this failover group.",
                session.as_str()
            ))
        }
        CoreResponse::Rejected(Rejection::SessionExists { session }) => {
            AvevaError::conflict(format!(
                "A client session {:?} with a different configuration already exists.",
                session.as_str()
            ))
        }
        CoreResponse::Rejected(Rejection::Forbidden(_)) => AvevaError::forbidden(
            "This identity may not use this failover group (it is not an allowed owner).",
        ),
        CoreResponse::Rejected(Rejection::Unauthenticated(_)) => {
            AvevaError::unauthorized("The credential is not valid.")
        }
        CoreResponse::Rejected(r @ Rejection::IdempotencyKeyReused) => AvevaError::conflict(
            format!("{}: send a new Idempotency-Key.", crate::error::capitalized(&r.to_string())),
        ),
        CoreResponse::Rejected(Rejection::OverLimit(over)) => AvevaError::over_limit(&over),
        other => AvevaError::internal(format!("unexpected answer {other:?}")),
    }
}
