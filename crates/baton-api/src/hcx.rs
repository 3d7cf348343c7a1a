//! The VMware HCX "HA groups" dialect under `/hybridity/api`: session login, HA groups
//! (create, list, show, delete, forceFailover) and interconnect tasks. Appliances are the
//! group's members; Active/Standby come from the core (Primary or PendingPrimary is Active).
//! HCX groups never preempt and never fail back. Every mutation answers 202 with a task.
//!
//! Identities: `POST /hybridity/api/sessions {"username", "password"}` takes an identity's name
//! and token and answers with a session token (an hour long, ended by a rotation or
//! revocation of the identity) in `x-hm-authorization`, which every other call sends
//! back (an `Authorization` header with the token, bare or as `Bearer`, works too). A member's
//! HA groups live in its tenant, namespace `hcx`; an administrator's in tenant `_admin`
//! (tenant names starting with `_` are reserved).
//! Appliances heartbeat through the AVEVA session endpoints of that scope.
//!
//! Errors: 401 and 403 have no body; 400, 404, 409 and 500 carry
//! `{"errors": [{"code", "message"}]}`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query as UrlQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use baton_core::{
    AccessRole, Command, ForceRefused, Group, GroupConfig, GroupId, GroupKey, NamespaceId, Policy,
    Principal, Query, QueryResult, Rejection, Response as CoreResponse, Scope, SessionId, Stage,
    TenantId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Caller, Denied};
use crate::coordinator::{Consistency, Coordinator, CoordinatorError, Served};
use crate::served_by::ServedBy;

/// The header HCX carries its session token in.
pub const HM_AUTHORIZATION: &str = "x-hm-authorization";
/// The namespace HCX groups live in.
pub const NAMESPACE: &str = "hcx";
/// The tenant an administrator's HCX groups live in.
pub const ADMIN_TENANT: &str = "_admin";
/// Failover timeout of an HA group unless the request says otherwise.
const DEFAULT_FAILOVER_TIMEOUT_MS: u64 = 30_000;
/// Most appliances in one HA group.
const MAX_APPLIANCES: usize = 16;
/// Largest HCX request body.
const MAX_BODY: usize = 64 * 1024;

/// The HCX routes, to be nested under `/hybridity/api`.
pub fn routes<C: Coordinator>(state: AppState<C>) -> Router<AppState<C>> {
    let groups = "/interconnect/appliances/ha/groups";
    let authenticated = Router::new()
        .route(groups, get(list::<C>).post(create::<C>))
        .route(&format!("{groups}/{{group}}"), get(show::<C>).delete(delete::<C>))
        .route(&format!("{groups}/{{group}}/forceFailover"), post(force_failover::<C>))
        .route("/interconnect/tasks/{task}", get(task::<C>))
        .fallback(|| async { HcxError::not_found("No HCX resource exists at this path.") })
        .layer(axum::middleware::from_fn_with_state(state, authenticate::<C>));
    Router::new()
        .route("/sessions", post(login::<C>))
        .merge(authenticated)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// A failed HCX request.
#[derive(Debug)]
pub struct HcxError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HcxError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    /// 400 with the HCX error envelope.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }
    /// 404 with the HCX error envelope.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
    /// 409 with the HCX error envelope.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }
    /// 413 with the HCX error envelope: the change would take the group or tenant over a
    /// limit.
    pub fn over_limit(over: &baton_core::OverLimit) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "LIMIT_EXCEEDED", over.to_string())
    }
    /// 401 without a body.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "", "")
    }
    /// 403 without a body.
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "", "")
    }
}

impl IntoResponse for HcxError {
    fn into_response(self) -> Response {
        match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => self.status.into_response(),
            status => {
                let body = json!({"errors": [{"code": self.code, "message": self.message}]});
                (status, Json(body)).into_response()
            }
        }
    }
}

impl From<CoordinatorError> for HcxError {
    fn from(e: CoordinatorError) -> Self {
        let (status, message) = crate::error::unserved(e, "hcx");
        let code = match status {
            StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE",
            StatusCode::GATEWAY_TIMEOUT => "OUTCOME_UNKNOWN",
            _ => "HA_INTERNAL_SERVER_ERROR",
        };
        Self::new(status, code, message)
    }
}

type Result<T> = std::result::Result<T, HcxError>;

/// The token of a request: `x-hm-authorization`, else `Authorization` (bare or `Bearer`).
fn token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(HM_AUTHORIZATION)
        .or_else(|| headers.get(axum::http::header::AUTHORIZATION))?
        .to_str()
        .ok()?
        .trim();
    Some(match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    })
}

async fn authenticate<C: Coordinator>(
    State(state): State<AppState<C>>,
    request: Request,
    next: Next,
) -> Response {
    crate::auth::let_in(
        &state,
        request,
        next,
        crate::auth::Tokens::OwnOrSession(token),
        denied_answer,
    )
    .await
}

/// This API's answer to a request that was not let in.
fn denied_answer(denied: Denied) -> Response {
    match denied {
        denied @ Denied::Throttled { .. } => {
            let mut response = HcxError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                format!("Too many requests; retry after {} s.", denied.retry_after_secs()),
            )
            .into_response();
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(denied.retry_after_secs()),
            );
            response
        }
        _ => HcxError::unauthorized().into_response(),
    }
}

/// The authenticated caller of an HCX route.
struct HcxCaller(Caller);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for HcxCaller {
    type Rejection = HcxError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self> {
        parts.extensions.get::<Caller>().cloned().map(HcxCaller).ok_or_else(HcxError::unauthorized)
    }
}

/// Where a caller's HA groups live.
fn scope_of(principal: &Principal) -> Scope {
    let tenant = match &principal.role {
        AccessRole::Member { tenant } => tenant.clone(),
        AccessRole::Admin => TenantId::new(ADMIN_TENANT).expect("a valid tenant id"),
    };
    Scope { tenant, namespace: NamespaceId::new(NAMESPACE).expect("a valid namespace id") }
}

fn group_key(caller: &Caller, group: String) -> Result<GroupKey> {
    let group = GroupId::new(group).map_err(|e| HcxError::bad_request(e.to_string()))?;
    Ok(GroupKey { scope: scope_of(&caller.principal), group })
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn login<C: Coordinator>(
    State(s): State<AppState<C>>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let Ok(Login { username, password }) = serde_json::from_slice::<Login>(&body) else {
        return Err(HcxError::bad_request("The body must be {\"username\", \"password\"}."));
    };
    // The password is the identity's token; the user name must be the identity it names.
    let caller = crate::auth::authenticate(
        &*s.coordinator,
        &s.gate,
        crate::auth::Accepts::OwnTokens,
        Some(&password),
        None,
    )
    .map_err(|_| HcxError::unauthorized())?;
    if caller.principal.name.as_str() != username {
        return Err(HcxError::unauthorized());
    }
    // A session token, not the identity's own: it ends within the hour, and at once if the
    // identity's token is rotated or revoked.
    let (session, _) = crate::auth::session_for(&s.sessions, &caller, &password);
    let mut response = Json(json!({"username": username})).into_response();
    let value = HeaderValue::from_str(&session).map_err(|_| HcxError::unauthorized())?;
    response.headers_mut().insert(HM_AUTHORIZATION, value);
    Ok(response)
}

/// `createHAGroupRequest`, plus Baton's optional fields.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRequest {
    appliances: Vec<String>,
    #[serde(default)]
    policy_info: Option<PolicyInfo>,
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    service_mesh_id: Option<String>,
    #[serde(default)]
    group_type: Option<String>,
    /// Baton's extension: how long an appliance may be silent, in seconds (default 30).
    #[serde(default)]
    failover_timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct PolicyInfo {
    #[serde(default)]
    policy: Option<String>,
}

async fn create<C: Coordinator>(
    State(s): State<AppState<C>>,
    HcxCaller(caller): HcxCaller,
    body: axum::body::Bytes,
) -> Result<Response> {
    let request: CreateRequest = serde_json::from_slice(&body)
        .map_err(|e| HcxError::bad_request(format!("The request body is not valid: {e}")))?;
    if request.appliances.is_empty() || request.appliances.len() > MAX_APPLIANCES {
        return Err(HcxError::bad_request(format!(
            "An HA group needs 1 to {MAX_APPLIANCES} appliances."
        )));
    }
    let mut members = Vec::new();
    for id in &request.appliances {
        let id =
            SessionId::new(id).map_err(|e| HcxError::bad_request(format!("appliance: {e}")))?;
        if members.iter().any(|m: &baton_core::NewMember| m.id == id) {
            return Err(HcxError::bad_request(format!("Appliance {id} is listed twice.")));
        }
        members.push(baton_core::NewMember::new(id));
    }
    let timeout_ms = match request.failover_timeout_seconds {
        Some(seconds) => seconds.saturating_mul(1_000),
        None => DEFAULT_FAILOVER_TIMEOUT_MS,
    };
    let mut labels = BTreeMap::new();
    let policy = request.policy_info.unwrap_or_default().policy;
    for (key, value) in [
        ("serviceMeshId", request.service_mesh_id),
        ("groupType", request.group_type),
        ("policy", policy),
    ] {
        if let Some(value) = value {
            labels.insert(key.to_string(), value);
        }
    }
    // HCX: no preemption and no automatic failback.
    let policy = Policy { preemption_margin: None, ..Policy::default() };
    let config = GroupConfig::new(request.name, None, timeout_ms)
        .and_then(|c| c.with_labels(labels))
        .map_err(|e| HcxError::bad_request(e.to_string()))?
        .with_policy(policy);
    let key = group_key(&caller, request.group_id.unwrap_or_else(baton_auth::hex::random_uuid))?;
    let command = Command::CreateGroup { key: key.clone(), config, members };
    let Served { value, by } = s.coordinator.write(command, Some(caller.actor())).await?;
    match value {
        CoreResponse::Group { group, .. } => {
            Ok(accepted(by, TaskRef::new(TaskKind::Create, &group), &group.key.group))
        }
        other => Err(refused(other, &key.group)),
    }
}

fn refused(response: CoreResponse, group: &GroupId) -> HcxError {
    match response {
        CoreResponse::Rejected(Rejection::GroupExists { .. }) => {
            HcxError::conflict(format!("HA group {group} already exists."))
        }
        CoreResponse::Rejected(Rejection::GroupNotFound(_)) => not_found(group),
        CoreResponse::Rejected(Rejection::NoStandby(_)) => {
            HcxError::conflict(format!("HA group {group} has no healthy standby appliance."))
        }
        CoreResponse::Rejected(Rejection::Superseded(_)) => HcxError::conflict(format!(
            "HA group {group} changed while the request was applied; retry."
        )),
        CoreResponse::Rejected(Rejection::Forbidden(_)) => HcxError::forbidden(),
        CoreResponse::Rejected(Rejection::Unauthenticated(_)) => HcxError::unauthorized(),
        CoreResponse::Rejected(Rejection::OverLimit(over)) => HcxError::over_limit(&over),
        other => {
            tracing::error!(?other, "unexpected answer to an HCX command");
            HcxError::from(CoordinatorError::Internal("unexpected answer".into()))
        }
    }
}

fn not_found(group: &GroupId) -> HcxError {
    HcxError::not_found(format!("HA group {group} does not exist."))
}

/// `GroupActionSuccessResponse` with status 202.
fn accepted(by: u64, task: TaskRef, group: &GroupId) -> Response {
    let body = json!({
        "data": {"interconnectTaskId": task.id(), "groupId": group.as_str()},
        "warnings": [],
        "errors": [],
    });
    (StatusCode::ACCEPTED, ServedBy(by), Json(body)).into_response()
}

/// Reads a group the caller may use, or 404 (another tenant's group is not visible at all).
async fn read_group<C: Coordinator>(
    c: &C,
    caller: &Caller,
    key: &GroupKey,
) -> Result<Served<Group>> {
    let Served { value, by } = c.read(Query::Group(key.clone()), Consistency::Linearizable).await?;
    match value {
        QueryResult::Group(Some(group)) if caller.principal.may_use(&group) => {
            Ok(Served { value: *group, by })
        }
        QueryResult::Group(Some(group)) if caller.principal.may_know(&group) => {
            Err(HcxError::forbidden())
        }
        _ => Err(not_found(&key.group)),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether a member's last checkpointed heartbeat is recent. Checkpoints trail heartbeats by
/// up to half a failover timeout, so "recent" allows one and a half.
fn healthy(group: &Group, member: &baton_core::Session, now: u64) -> bool {
    let window = group.config.failover_timeout_ms().saturating_mul(3) / 2;
    member.last_heartbeat.as_ref().is_some_and(|h| h.received_at.0.saturating_add(window) >= now)
}

fn ha_group_view(group: &Group) -> Value {
    let now = now_ms();
    let label = |k: &str| group.config.labels.get(k).cloned();
    let members: Vec<Value> = group
        .sessions
        .values()
        .map(|s| {
            let active = group.holder.as_ref().is_some_and(|h| h.session == s.id);
            json!({
                "applianceId": s.id.as_str(),
                "applianceName": s.name.clone().unwrap_or_else(|| s.id.to_string()),
                "peerApplianceId": null,
                "peerApplianceName": null,
                "role": if active { "ACTIVE" } else { "STANDBY" },
            })
        })
        .collect();
    let healthy_count = group.sessions.values().filter(|s| healthy(group, s, now)).count();
    let (availability, description) = match healthy_count {
        n if n == group.sessions.len() && n > 0 => ("HEALTHY", "Every appliance is heartbeating."),
        0 => ("UNAVAILABLE", "No appliance is heartbeating."),
        _ => ("DEGRADED", "Some appliances are not heartbeating."),
    };
    let (state, message) = match (&group.holder, &group.handover) {
        (_, Some(_)) => ("FAILING_OVER", "A failover is in progress."),
        (Some(h), None) if h.stage == Stage::Pending => {
            ("FAILING_OVER", "A standby is taking over.")
        }
        (Some(_), None) => ("FORMED", "The group has an active appliance."),
        (None, None) => ("NOT_FORMED", "No appliance is active yet."),
    };
    json!({
        "groupId": group.key.group.as_str(),
        "name": group.config.name.clone().unwrap_or_else(|| group.key.group.to_string()),
        "serviceMeshId": label("serviceMeshId"),
        "groupType": label("groupType").unwrap_or_else(|| "NETWORK_EXTENSION".into()),
        "groupMembers": members,
        "policyInfo": {"policy": label("policy")},
        "status": {
            "groupState": state,
            "statusMessage": message,
            "availabilityState": availability,
            "availabilityDescription": description,
        },
        "dvsId": null,
        "dvsName": null,
        "remoteDvsId": null,
        "remoteDvsName": null,
        "networkExtensionCount": 0,
        "networkStretchCapacity": 0,
        "epoch": group.epoch.0,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    service_mesh_id: Option<String>,
}

async fn list<C: Coordinator>(
    State(s): State<AppState<C>>,
    HcxCaller(caller): HcxCaller,
    query: std::result::Result<UrlQuery<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let UrlQuery(q) = query.map_err(|e| HcxError::bad_request(e.body_text()))?;
    let scope = scope_of(&caller.principal);
    let Served { value, by } =
        s.coordinator.read(Query::Groups(scope), Consistency::Linearizable).await?;
    let QueryResult::Groups(groups) = value else {
        return Err(CoordinatorError::Internal("a groups query got another answer".into()).into());
    };
    let items: Vec<Value> = groups
        .iter()
        .filter(|g| caller.principal.may_use(g))
        .filter(|g| {
            q.service_mesh_id
                .as_ref()
                .is_none_or(|m| g.config.labels.get("serviceMeshId") == Some(m))
        })
        .map(ha_group_view)
        .collect();
    Ok((ServedBy(by), Json(json!({ "items": items }))).into_response())
}

async fn show<C: Coordinator>(
    State(s): State<AppState<C>>,
    HcxCaller(caller): HcxCaller,
    Path(group): Path<String>,
) -> Result<Response> {
    let key = group_key(&caller, group)?;
    let Served { value, by } = read_group(&*s.coordinator, &caller, &key).await?;
    Ok((ServedBy(by), Json(ha_group_view(&value))).into_response())
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete<C: Coordinator>(
    State(s): State<AppState<C>>,
    HcxCaller(caller): HcxCaller,
    Path(group): Path<String>,
    query: std::result::Result<UrlQuery<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let UrlQuery(q) = query.map_err(|e| HcxError::bad_request(e.body_text()))?;
    let key = group_key(&caller, group)?;
    let Served { value: current, .. } = read_group(&*s.coordinator, &caller, &key).await?;
    if current.handover.is_some() && !q.force {
        return Err(HcxError::conflict(format!(
            "A failover task is running on HA group {}; wait for it or pass force=true.",
            key.group
        )));
    }
    let task = TaskRef::new(TaskKind::Delete, &current);
    let command =
        Command::DeleteGroup { key: key.clone(), refuse_if_active: false, active: vec![] };
    let Served { value, by } = s.coordinator.write(command, Some(caller.actor())).await?;
    match value {
        CoreResponse::Deleted => Ok(accepted(by, task, &key.group)),
        other => Err(refused(other, &key.group)),
    }
}

async fn force_failover<C: Coordinator>(
    State(s): State<AppState<C>>,
    HcxCaller(caller): HcxCaller,
    Path(group): Path<String>,
) -> Result<Response> {
    let key = group_key(&caller, group)?;
    let Served { value: current, .. } = read_group(&*s.coordinator, &caller, &key).await?;
    let command = match current.forced_handover(None) {
        Ok(Some(command)) => command,
        Ok(None) | Err(ForceRefused::NoHolder) => {
            return Err(HcxError::conflict(format!(
                "HA group {} has no active appliance to fail over from.",
                key.group
            )));
        }
        Err(ForceRefused::AlreadyMoving) => {
            return Err(HcxError::conflict(format!(
                "A failover task is already running on HA group {}.",
                key.group
            )));
        }
    };
    let task = TaskRef::new(TaskKind::ForceFailover, &current);
    let Served { value, by } = s.coordinator.write(command, Some(caller.actor())).await?;
    match value {
        CoreResponse::Group { .. } => Ok(accepted(by, task, &key.group)),
        other => Err(refused(other, &key.group)),
    }
}

/// What a task did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum TaskKind {
    Create,
    Delete,
    ForceFailover,
}

/// A task, self-describing: its id encodes the group, the kind and the epoch it started at, so
/// its status is derived from the group's replicated state and nothing extra is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TaskRef {
    kind: TaskKind,
    key: GroupKey,
    epoch: u64,
    at: u64,
}

impl TaskRef {
    fn new(kind: TaskKind, group: &Group) -> Self {
        Self { kind, key: group.key.clone(), epoch: group.epoch.0, at: now_ms() }
    }

    fn id(&self) -> String {
        baton_auth::hex::encode(&postcard::to_allocvec(self).expect("a task reference encodes"))
    }

    fn parse(id: &str) -> Option<Self> {
        if id.len() > 2_048 {
            return None;
        }
        postcard::from_bytes(&baton_auth::hex::decode(id)?).ok()
    }
}

fn time(ms: u64) -> String {
    crate::aveva::wire::format_time(baton_core::ClientTime(i64::try_from(ms).unwrap_or(i64::MAX)))
}

async fn task<C: Coordinator>(
    State(s): State<AppState<C>>,
    HcxCaller(caller): HcxCaller,
    Path(id): Path<String>,
) -> Result<Response> {
    let unknown = || HcxError::not_found(format!("Task {id} does not exist."));
    let task = TaskRef::parse(&id).ok_or_else(unknown)?;
    if task.key.scope != scope_of(&caller.principal) {
        return Err(unknown());
    }
    let Served { value, by } =
        s.coordinator.read(Query::Group(task.key.clone()), Consistency::Linearizable).await?;
    let group = match value {
        QueryResult::Group(Some(group)) if caller.principal.may_use(&group) => Some(*group),
        QueryResult::Group(Some(group)) if caller.principal.may_know(&group) => {
            return Err(HcxError::forbidden());
        }
        _ => None,
    };
    let (kind, status, progress, message, end) = match task.kind {
        TaskKind::Create => {
            ("CREATE_HA_GROUP", "SUCCESS", 100, "The HA group was created.", Some(task.at))
        }
        TaskKind::Delete => {
            ("DELETE_HA_GROUP", "SUCCESS", 100, "The HA group was deleted.", Some(task.at))
        }
        TaskKind::ForceFailover => match &group {
            None => (
                "FORCE_FAILOVER_HA_GROUP",
                "FAILED",
                100,
                "The HA group was deleted.",
                Some(task.at),
            ),
            Some(g) if g.epoch.0 > task.epoch => (
                "FORCE_FAILOVER_HA_GROUP",
                "SUCCESS",
                100,
                "A standby appliance is active.",
                g.holder.as_ref().map(|h| h.since.0),
            ),
            Some(g) if g.handover.is_some() => (
                "FORCE_FAILOVER_HA_GROUP",
                "RUNNING",
                50,
                "Waiting for the active appliance to relinquish its role.",
                None,
            ),
            Some(_) => (
                "FORCE_FAILOVER_HA_GROUP",
                "FAILED",
                100,
                "No standby appliance could take over; the active appliance kept its role.",
                Some(task.at),
            ),
        },
    };
    let name = group.as_ref().and_then(|g| g.config.name.clone());
    let body = json!({
        "interconnectTaskId": id,
        "entityDetails": {"id": task.key.group.as_str(), "type": "HA_GROUP", "name": name},
        "type": kind,
        "status": status,
        "progress": progress,
        "message": message,
        "startTime": time(task.at),
        "endTime": end.map(time),
        "request": null,
        "response": null,
        "steps": [],
    });
    Ok((ServedBy(by), Json(body)).into_response())
}
