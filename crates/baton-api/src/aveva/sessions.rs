//! AVEVA client sessions, heartbeats, role overrides and group status.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use baton_core::{Change, Command, Query, QueryResult, Response as CoreResponse, SessionId};

use super::error::AvevaError;
use super::wire::{
    AvevaJson, AvevaPath, ClientSessionIn, ClientSessionOut, FailoverResponseOut, GroupStatusOut,
    HeartbeatIn, Paging, RoleOverrideIn, SessionPath, Version, format_time,
};
use super::{group_not_found, list_response, rejected};
use crate::coordinator::{Consistency, Coordinator, HeartbeatOutcome, Served};
use crate::served_by::ServedBy;

type Result<T> = std::result::Result<T, AvevaError>;

fn session_not_found(session: &SessionId) -> AvevaError {
    AvevaError::not_found(format!(
        "Client session {:?} does not exist in this failover group.",
        session.as_str()
    ))
}

/// Reads a group linearizably, or answers 404, or 403 if the caller may not use it.
pub(super) async fn read_group<C: Coordinator>(
    c: &C,
    path: &AvevaPath,
) -> Result<Served<baton_core::Group>> {
    let key = path.group_key();
    let Served { value, by } = c.read(Query::Group(key.clone()), Consistency::Linearizable).await?;
    match value {
        QueryResult::Group(Some(group)) if path.caller.principal.may_use(&group) => {
            Ok(Served { value: *group, by })
        }
        QueryResult::Group(Some(group)) if path.caller.principal.may_know(&group) => {
            Err(AvevaError::not_allowed_owner(&key.group))
        }
        QueryResult::Group(_) => Err(group_not_found(&key.group)),
        _ => Err(AvevaError::internal("a group query got another kind of answer")),
    }
}

pub(super) async fn list_sessions<C: Coordinator>(
    State(c): State<Arc<C>>,
    path: AvevaPath,
    paging: Paging,
) -> Result<Response> {
    let Served { value: group, by } = read_group(&*c, &path).await?;
    let all: Vec<_> = group.sessions.values().map(|s| ClientSessionOut::new(&group, s)).collect();
    Ok(list_response(path.version, &paging, by, all))
}

pub(super) async fn get_session<C: Coordinator>(
    State(c): State<Arc<C>>,
    p: SessionPath,
) -> Result<Response> {
    let Served { value: group, by } = read_group(&*c, &p.path).await?;
    let session = group.sessions.get(&p.session).ok_or_else(|| session_not_found(&p.session))?;
    Ok((ServedBy(by), axum::Json(ClientSessionOut::new(&group, session))).into_response())
}

pub(super) async fn post_session<C: Coordinator>(
    State(c): State<Arc<C>>,
    path: AvevaPath,
    AvevaJson(body): AvevaJson<ClientSessionIn>,
) -> Result<Response> {
    let id = body.id.ok_or_else(|| AvevaError::bad_request("Property Id is required."))?;
    let session = SessionId::new(id).map_err(|e| AvevaError::bad_request(e.to_string()))?;
    write_session(&*c, path, session, body.name, false).await
}

pub(super) async fn put_session<C: Coordinator>(
    State(c): State<Arc<C>>,
    p: SessionPath,
    AvevaJson(body): AvevaJson<ClientSessionIn>,
) -> Result<Response> {
    if p.path.version == Version::V1 {
        return Err(AvevaError::method_not_allowed());
    }
    if let Some(id) = &body.id
        && id != p.session.as_str()
    {
        return Err(AvevaError::bad_request(format!(
            "The Id in the body ({id:?}) differs from the id in the path ({:?}).",
            p.session.as_str()
        )));
    }
    write_session(&*c, p.path, p.session, body.name, true).await
}

async fn write_session<C: Coordinator>(
    c: &C,
    path: AvevaPath,
    session: SessionId,
    name: Option<String>,
    put: bool,
) -> Result<Response> {
    baton_core::GroupConfig::new(name.clone(), None, baton_core::MIN_FAILOVER_TIMEOUT_MS)
        .map_err(|e| AvevaError::bad_request(e.to_string().replace("name", "session name")))?;
    let group = path.group_key();
    let command = if put {
        Command::PutSession { group, session, name }
    } else {
        Command::CreateSession { group, session, name }
    };
    let Served { value, by } = c.write(command, Some(path.caller.actor())).await?;
    let CoreResponse::Session { session, change } = value else { return Err(rejected(value)) };
    let status = match (path.version, change) {
        (Version::V1, Change::Created) => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    // The session's role needs the group; a fresh session is always Secondary until it
    // heartbeats, and an existing one keeps its role, which a GET shows.
    let view = serde_json::json!({
        "Id": session.id.as_str(),
        "Name": session.name,
    });
    Ok((status, ServedBy(by), axum::Json(view)).into_response())
}

pub(super) async fn delete_session<C: Coordinator>(
    State(c): State<Arc<C>>,
    p: SessionPath,
) -> Result<Response> {
    let command = Command::DeleteSession { group: p.path.group_key(), session: p.session };
    let Served { value, by } = c.write(command, Some(p.path.caller.actor())).await?;
    match value {
        CoreResponse::Deleted => Ok(match p.path.version {
            Version::V1Preview => (StatusCode::OK, ServedBy(by), ()).into_response(),
            Version::V1 => (StatusCode::NO_CONTENT, ServedBy(by), ()).into_response(),
        }),
        other => Err(rejected(other)),
    }
}

/// `error` with a `Retry-After` header of `retry_after_ms`, in whole seconds (at least one).
fn retry_after(error: AvevaError, retry_after_ms: u64) -> Response {
    let mut response = error.into_response();
    let seconds = retry_after_ms.div_ceil(1000).max(1);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

pub(super) async fn heartbeat<C: Coordinator>(
    State(c): State<Arc<C>>,
    p: SessionPath,
    AvevaJson(body): AvevaJson<HeartbeatIn>,
) -> Result<Response> {
    let released = body.releasedepoch.map(baton_core::Epoch);
    let heartbeat = body.into_core()?;
    let group = p.path.group_key();
    let beat = baton_core::Beat {
        group: group.clone(),
        session: p.session.clone(),
        heartbeat,
        caller: p.path.caller.principal.name.clone(),
        released,
    };
    let Served { value, by } = c.heartbeat(beat).await?;
    match value {
        HeartbeatOutcome::Answered(answer) => {
            Ok((ServedBy(by), axum::Json(FailoverResponseOut::from(&answer))).into_response())
        }
        HeartbeatOutcome::GroupNotFound => Err(group_not_found(&group.group)),
        HeartbeatOutcome::SessionNotFound => Err(session_not_found(&p.session)),
        HeartbeatOutcome::Forbidden => Err(AvevaError::not_allowed_owner(&group.group)),
        HeartbeatOutcome::TooFast { retry_after_ms } => Ok(retry_after(
            AvevaError::too_many_requests(format!(
                "Client session {:?} sends heartbeats faster than its group allows; retry after {retry_after_ms} ms.",
                p.session.as_str()
            )),
            retry_after_ms,
        )),
        HeartbeatOutcome::Deciding { retry_after_ms } => Ok(retry_after(
            AvevaError::deciding(format!(
                "Client session {:?} held the baton and its successor is being committed; retry after {retry_after_ms} ms.",
                p.session.as_str()
            )),
            retry_after_ms,
        )),
    }
}

pub(super) async fn role_override<C: Coordinator>(
    State(c): State<Arc<C>>,
    p: SessionPath,
    AvevaJson(body): AvevaJson<RoleOverrideIn>,
) -> Result<Response> {
    if p.path.version == Version::V1Preview {
        return Err(AvevaError::not_found("Role overrides exist in API version v1 only."));
    }
    let primary_for_ms = body.into_override()?;
    let command =
        Command::SetOverride { group: p.path.group_key(), session: p.session, primary_for_ms };
    let Served { value, by } = c.write(command, Some(p.path.caller.actor())).await?;
    let CoreResponse::Session { session, .. } = value else { return Err(rejected(value)) };
    let expiry = session
        .role_override
        .as_ref()
        .and_then(|o| o.expires_at)
        .map(|t| format_time(baton_core::ClientTime(i64::try_from(t.0).unwrap_or(i64::MAX))));
    let body = serde_json::json!({
        "Value": u8::from(session.role_override.is_some()),
        "RoleOverrideExpirationTime": expiry,
    });
    Ok((ServedBy(by), axum::Json(body)).into_response())
}

pub(super) async fn group_status<C: Coordinator>(
    State(c): State<Arc<C>>,
    path: AvevaPath,
) -> Result<Response> {
    if path.version == Version::V1Preview {
        return Err(AvevaError::not_found("Group status exists in API version v1 only."));
    }
    let Served { value: group, by } = read_group(&*c, &path).await?;
    Ok((ServedBy(by), axum::Json(GroupStatusOut::from(&group))).into_response())
}
