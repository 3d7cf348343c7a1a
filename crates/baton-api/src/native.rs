//! The native API's identity, audit and group-control endpoints, and the native API's
//! authentication (a bearer token; the operational endpoints need an administrator).
//!
//! ```text
//! POST   /identities                     admin   create; the answer shows the token (and API key) once
//! GET    /identities                     admin   list (no secrets)
//! GET    /identities/{name}              admin or that identity
//! POST   /identities/{name}/rotate       admin or that identity: new token (and API key)
//! DELETE /identities/{name}              admin   revoke, on every node within a second
//! GET    /audit?group=t/n/g&after=&limit= admin  the audit trail, oldest first
//! GET    /groups                                every group the caller may use
//! GET    /groups/{t}/{n}                        the scope's groups the caller may use
//! POST   /groups/{t}/{n}                        create a group with members and a policy
//! GET    /groups/{t}/{n}/{g}                    one group: members, holder, epoch, hand-over
//! DELETE /groups/{t}/{n}/{g}                    delete it (its holder's grant is honoured)
//! POST   /groups/{t}/{n}/{g}/failover[?to=s]    force a hand-over away from the holder
//! PUT    /groups/{t}/{n}/{g}/allowed-owners     {"owners": [...]}
//! GET    /heartbeats                            a WebSocket of heartbeats (`heartbeat_stream`)
//! ```

use std::collections::BTreeSet;

use axum::extract::{FromRequestParts, Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use baton_auth::Sealer;
use baton_core::{
    AccessRole, AuditEntry, Command, ForceRefused, GroupId, GroupKey, Identity, IdentityName,
    NamespaceId, Query, QueryResult, Rejection, Response as CoreResponse, Scope, TenantId,
    Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, Denied};
use crate::coordinator::{Consistency, Coordinator, Served};
use crate::error::ApiError;
use crate::ops::NativeJson;
use crate::served_by::ServedBy;

/// Bytes of a generated signing key (Uplynk API key).
const SIGNING_KEY_BYTES: usize = 24;
/// Largest native request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Most audit entries one request returns.
const MAX_AUDIT_PAGE: usize = 1_000;

/// The identity, audit and group-control routes.
pub fn routes<C: Coordinator>() -> Router<AppState<C>> {
    Router::new()
        .route("/identities", post(create_identity::<C>).get(list_identities::<C>))
        .route("/identities/{name}", get(get_identity::<C>).delete(revoke_identity::<C>))
        .route("/identities/{name}/rotate", post(rotate_identity::<C>))
        .route("/audit", get(audit::<C>))
        .route("/groups", get(all_groups::<C>))
        .route("/groups/{tenant}/{namespace}", post(create_group::<C>).get(list_groups::<C>))
        .route(
            "/groups/{tenant}/{namespace}/{group}",
            get(show_group::<C>).delete(delete_group::<C>),
        )
        .route("/groups/{tenant}/{namespace}/{group}/failover", post(force_failover::<C>))
        .route("/groups/{tenant}/{namespace}/{group}/allowed-owners", put(set_allowed_owners::<C>))
}

/// Authenticates every native request except the probes, answering [`ApiError`]'s 401/429.
pub async fn authenticate<C: Coordinator>(
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
    ApiError::from(denied).into_response()
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Throttled { .. } => ApiError::TooManyRequests(denied.retry_after_secs()),
            Denied::BadRequestKey => ApiError::BadRequest(denied.to_string()),
            other => ApiError::Unauthorized(other.to_string()),
        }
    }
}

/// The authenticated caller.
pub struct Authenticated(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Authenticated)
            .ok_or_else(|| ApiError::Unauthorized("the request carries no credential".into()))
    }
}

/// An authenticated cluster administrator.
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Authenticated(caller) = Authenticated::from_request_parts(parts, state).await?;
        if caller.principal.is_admin() {
            Ok(Admin(caller))
        } else {
            Err(ApiError::Forbidden("this endpoint is for cluster administrators".into()))
        }
    }
}

/// Body of `POST /identities`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentity {
    /// The new identity's name.
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    /// The tenant, for a member.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Also issue a request-signing key (Uplynk's API key).
    #[serde(default)]
    pub signing_key: bool,
}

/// An identity as the native API shows it: no digests, no sealed keys.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdentityView {
    /// Its name.
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    /// Its tenant, for a member.
    pub tenant: Option<String>,
    /// Whether it has a request-signing key.
    pub signing_key: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Last rotation time, if any.
    pub rotated_at: Option<u64>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<u64>,
    /// The token: present only in the answer that issued it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The signing key: present only in the answer that issued it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl IdentityView {
    fn of(identity: &Identity) -> Self {
        let (role, tenant) = match &identity.role {
            AccessRole::Admin => ("admin", None),
            AccessRole::Member { tenant } => ("member", Some(tenant.to_string())),
        };
        Self {
            name: identity.name.to_string(),
            role: role.into(),
            tenant,
            signing_key: identity.signing_key.is_some(),
            created_at: identity.created_at.0,
            rotated_at: identity.rotated_at.map(|t| t.0),
            revoked_at: identity.revoked_at.map(|t| t.0),
            token: None,
            api_key: None,
        }
    }
}

fn bad(e: baton_core::Error) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// Fresh secrets: the token text and, if asked for, the signing key text, with what to store.
fn issue(
    sealer: &Sealer,
    name: &IdentityName,
    signing_key: bool,
) -> (String, Option<String>, baton_core::Credential, Option<baton_core::Sealed>) {
    let (token, credential) = baton_auth::issue_token(name);
    let key = signing_key.then(|| baton_auth::random_secret(SIGNING_KEY_BYTES));
    let sealed = key.as_ref().map(|k| sealer.seal(k.as_bytes()));
    (token, key, credential, sealed)
}

async fn create_identity<C: Coordinator>(
    State(s): State<AppState<C>>,
    Admin(caller): Admin,
    NativeJson(body): NativeJson<CreateIdentity>,
) -> Result<Response, ApiError> {
    let name = IdentityName::new(body.name).map_err(bad)?;
    let role = match (body.role.as_str(), body.tenant) {
        ("admin", None) => AccessRole::Admin,
        ("admin", Some(_)) => {
            return Err(ApiError::BadRequest("an admin belongs to no tenant".into()));
        }
        ("member", Some(tenant)) if tenant.starts_with('_') => {
            return Err(ApiError::BadRequest(format!(
                "tenant {tenant:?} is reserved: names starting with '_' belong to Baton"
            )));
        }
        ("member", Some(tenant)) => {
            AccessRole::Member { tenant: TenantId::new(tenant).map_err(bad)? }
        }
        ("member", None) => return Err(ApiError::BadRequest("a member needs a tenant".into())),
        (other, _) => {
            return Err(ApiError::BadRequest(format!(
                "role {other:?} is not known; use \"admin\" or \"member\""
            )));
        }
    };
    let (token, api_key, credential, sealed) = issue(&s.sealer, &name, body.signing_key);
    let identity = Identity {
        name,
        role,
        token: credential,
        signing_key: sealed,
        created_at: Timestamp(0),
        rotated_at: None,
        revoked_at: None,
    };
    let Served { value, by } =
        s.coordinator.write(Command::CreateIdentity { identity }, Some(caller.actor())).await?;
    let identity = identity_of(value)?;
    let view = IdentityView { token: Some(token), api_key, ..IdentityView::of(&identity) };
    Ok((StatusCode::CREATED, ServedBy(by), Json(view)).into_response())
}

fn identity_of(response: CoreResponse) -> Result<Identity, ApiError> {
    match response {
        CoreResponse::Identity(identity) => Ok(*identity),
        CoreResponse::Rejected(r) => Err(refused(r)),
        other => {
            tracing::error!(?other, "an identity command got another kind of answer");
            Err(ApiError::Internal)
        }
    }
}

fn refused(rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::IdentityExists(_) | Rejection::Superseded(_) => {
            ApiError::Conflict(rejection.to_string())
        }
        Rejection::IdentityNotFound(_) | Rejection::GroupNotFound(_) => {
            ApiError::NotFound(rejection.to_string())
        }
        Rejection::Forbidden(_) => ApiError::Forbidden(rejection.to_string()),
        Rejection::OverLimit(_) => ApiError::TooLarge(rejection.to_string()),
        Rejection::Unauthenticated(_) => {
            ApiError::Unauthorized("the credential is not valid".into())
        }
        other => ApiError::Conflict(other.to_string()),
    }
}

async fn list_identities<C: Coordinator>(
    State(s): State<AppState<C>>,
    Admin(_): Admin,
) -> Result<Response, ApiError> {
    let Served { value, by } =
        s.coordinator.read(Query::Identities, Consistency::Linearizable).await?;
    let QueryResult::Identities(all) = value else { return Err(ApiError::Internal) };
    let views: Vec<_> = all.iter().map(IdentityView::of).collect();
    Ok((ServedBy(by), Json(views)).into_response())
}

fn name_in_path(raw: String) -> Result<IdentityName, ApiError> {
    IdentityName::new(raw).map_err(bad)
}

/// The caller may act on `name` if it is an administrator or `name` itself. Anyone else gets
/// the same 404 as for a name that does not exist.
fn may_see(caller: &Caller, name: &IdentityName) -> Result<(), ApiError> {
    if caller.principal.is_admin() || &caller.principal.name == name {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("there is no active identity named {name}")))
    }
}

async fn get_identity<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let name = name_in_path(raw)?;
    may_see(&caller, &name)?;
    let Served { value, by } =
        s.coordinator.read(Query::Identity(name.clone()), Consistency::Linearizable).await?;
    match value {
        QueryResult::Identity(Some(identity)) => {
            Ok((ServedBy(by), Json(IdentityView::of(&identity))).into_response())
        }
        _ => Err(ApiError::NotFound(format!("there is no identity named {name}"))),
    }
}

async fn rotate_identity<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let name = name_in_path(raw)?;
    may_see(&caller, &name)?;
    let Served { value: current, .. } =
        s.coordinator.read(Query::Identity(name.clone()), Consistency::Linearizable).await?;
    let signs = match current {
        QueryResult::Identity(Some(identity)) if identity.is_active() => {
            identity.signing_key.is_some()
        }
        _ => return Err(ApiError::NotFound(format!("there is no active identity named {name}"))),
    };
    let (token, api_key, credential, sealed) = issue(&s.sealer, &name, signs);
    let command = Command::RotateIdentity { name, token: credential, signing_key: sealed };
    let Served { value, by } = s.coordinator.write(command, Some(caller.actor())).await?;
    let identity = identity_of(value)?;
    let view = IdentityView { token: Some(token), api_key, ..IdentityView::of(&identity) };
    Ok((ServedBy(by), Json(view)).into_response())
}

async fn revoke_identity<C: Coordinator>(
    State(s): State<AppState<C>>,
    Admin(caller): Admin,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let name = name_in_path(raw)?;
    let command = Command::RevokeIdentity { name };
    let Served { value, by } = s.coordinator.write(command, Some(caller.actor())).await?;
    Ok((ServedBy(by), Json(IdentityView::of(&identity_of(value)?))).into_response())
}

/// Query of `GET /audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// `tenant/namespace/group`: only that group's entries.
    pub group: Option<String>,
    /// Entries after this sequence number.
    #[serde(default)]
    pub after: u64,
    /// At most this many (default and maximum 1000).
    pub limit: Option<usize>,
}

pub(crate) fn parse_group_key(text: &str) -> Result<GroupKey, ApiError> {
    let mut parts = text.splitn(3, '/');
    let (Some(t), Some(n), Some(g)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ApiError::BadRequest(format!("group {text:?} is not tenant/namespace/group")));
    };
    key(t.into(), n.into(), g.into())
}

pub(crate) fn key(tenant: String, namespace: String, group: String) -> Result<GroupKey, ApiError> {
    Ok(GroupKey {
        scope: Scope {
            tenant: TenantId::new(tenant).map_err(bad)?,
            namespace: NamespaceId::new(namespace).map_err(bad)?,
        },
        group: GroupId::new(group).map_err(bad)?,
    })
}

#[derive(Serialize)]
struct AuditPage {
    entries: Vec<AuditView>,
}

/// An audit entry on the wire: `action` names what happened, `details` holds its fields.
#[derive(Serialize)]
struct AuditView {
    seq: u64,
    at: u64,
    actor: Option<baton_core::Actor>,
    group: Option<String>,
    action: String,
    details: serde_json::Value,
}

impl AuditView {
    fn of(entry: AuditEntry) -> Self {
        // Serde writes a unit variant as its name and another as {name: fields}.
        let (action, details) = match serde_json::to_value(&entry.action) {
            Ok(serde_json::Value::String(name)) => (name, serde_json::Value::Null),
            Ok(serde_json::Value::Object(map)) => match map.into_iter().next() {
                Some((name, fields)) => (name, fields),
                None => ("unknown".into(), serde_json::Value::Null),
            },
            _ => ("unknown".into(), serde_json::Value::Null),
        };
        // A configuration change keeps the names it had when entries held whole
        // configurations: `group_created` or `group_updated`, its details now the changes.
        let (action, details) = match (action.as_str(), details) {
            ("group_configured", serde_json::Value::Object(mut fields)) => {
                let created = fields.remove("created").and_then(|c| c.as_bool()).unwrap_or(false);
                let name = if created { "group_created" } else { "group_updated" };
                (name.to_string(), serde_json::Value::Object(fields))
            }
            (_, details) => (action, details),
        };
        Self {
            seq: entry.seq,
            at: entry.at.0,
            actor: entry.actor,
            group: entry.group.map(|g| g.to_string()),
            action,
            details,
        }
    }
}

async fn audit<C: Coordinator>(
    State(s): State<AppState<C>>,
    Admin(_): Admin,
    query: Result<UrlQuery<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let group = q.group.as_deref().map(parse_group_key).transpose()?;
    let limit = q.limit.unwrap_or(MAX_AUDIT_PAGE).min(MAX_AUDIT_PAGE);
    let query = Query::Audit { group, after: q.after, limit };
    let Served { value, by } = s.coordinator.read(query, Consistency::Linearizable).await?;
    let QueryResult::Audit(entries) = value else { return Err(ApiError::Internal) };
    let entries = entries.into_iter().map(AuditView::of).collect();
    Ok((ServedBy(by), Json(AuditPage { entries })).into_response())
}

/// Reads a group the caller may use; 404 for one it may not see at all.
pub(crate) async fn usable_group<C: Coordinator>(
    c: &C,
    caller: &Caller,
    key: &GroupKey,
) -> Result<baton_core::Group, ApiError> {
    let not_found = || ApiError::NotFound(format!("failover group {key} does not exist"));
    if !caller.principal.may_enter(&key.scope.tenant) {
        return Err(not_found());
    }
    let Served { value, .. } = c.read(Query::Group(key.clone()), Consistency::Linearizable).await?;
    match value {
        QueryResult::Group(Some(group)) if caller.principal.may_use(&group) => Ok(*group),
        QueryResult::Group(Some(group)) if caller.principal.may_know(&group) => {
            Err(ApiError::Forbidden(format!("this identity is not an allowed owner of {key}")))
        }
        _ => Err(not_found()),
    }
}

#[derive(Serialize)]
struct FailoverStarted {
    group: String,
    from: String,
    epoch: u64,
}

/// Query of `POST .../failover` (other parameters, such as `redirect`, are not its business).
#[derive(Debug, Deserialize)]
struct FailoverQuery {
    /// The member to hand the baton to (default: the best other one).
    to: Option<String>,
}

async fn force_failover<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    Path((tenant, namespace, group)): Path<(String, String, String)>,
    query: Result<UrlQuery<FailoverQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let key = key(tenant, namespace, group)?;
    let to = q.to.map(baton_core::SessionId::new).transpose().map_err(bad)?;
    let group = usable_group(&*s.coordinator, &caller, &key).await?;
    if let Some(to) = to.as_ref().filter(|to| !group.sessions.contains_key(*to)) {
        return Err(ApiError::NotFound(format!("failover group {key} has no member {to}")));
    }
    let command = match group.forced_handover(to.clone()) {
        Ok(Some(command)) => command,
        Ok(None) => {
            return Err(ApiError::Conflict(format!(
                "{} already holds the baton of {key}",
                to.map(|t| t.to_string()).unwrap_or_default()
            )));
        }
        Err(ForceRefused::NoHolder) => {
            return Err(ApiError::Conflict(format!(
                "failover group {key} has no Primary to fail over"
            )));
        }
        // A keyed retry may be this very request: the core answers its first outcome, or
        // refuses it as superseded.
        Err(ForceRefused::AlreadyMoving) if caller.request_key.is_some() => {
            group.forced_handover_unchecked(to).ok_or(ApiError::Internal)?
        }
        Err(ForceRefused::AlreadyMoving) => {
            return Err(ApiError::Conflict(format!("a hand-over is already under way in {key}")));
        }
    };
    let holder = group.holder.as_ref().expect("a forced failover needs a holder");
    let Served { value, by } = s.coordinator.write(command, Some(caller.actor())).await?;
    match value {
        CoreResponse::Group { .. } => Ok((
            StatusCode::ACCEPTED,
            ServedBy(by),
            Json(FailoverStarted {
                group: key.to_string(),
                from: holder.session.to_string(),
                epoch: holder.epoch.0,
            }),
        )
            .into_response()),
        CoreResponse::Rejected(r) => Err(refused(r)),
        _ => Err(ApiError::Internal),
    }
}

/// Body of `POST /groups/{tenant}/{namespace}`: any dialect's group, with its first members.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// The group's id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Failover timeout in milliseconds.
    pub failover_timeout_ms: u64,
    /// First members.
    #[serde(default)]
    pub members: Vec<NewMemberIn>,
    /// How the baton is assigned (default: AVEVA's rules).
    #[serde(default)]
    pub policy: Option<PolicyIn>,
    /// Descriptive fields (Uplynk's `hot_warm`, HCX's `serviceMeshId`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Only the owner, allowed owners and administrators may see the group (default: true in
    /// namespace `uplynk`, as Uplynk's model is, false elsewhere).
    #[serde(default)]
    pub owners_only: Option<bool>,
}

/// A member in [`CreateGroup`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMemberIn {
    /// Its id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Priority (lower first in a prioritized group).
    #[serde(default)]
    pub priority: u32,
    /// Whether it may hold the baton (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A policy in [`CreateGroup`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    /// Score points a member must beat the holder by to preempt it; `null`: never.
    pub preemption_margin: Option<u8>,
    /// Rank by priority first.
    #[serde(default)]
    pub prioritized: bool,
    /// Give the baton back to a higher-priority member.
    #[serde(default)]
    pub failback: bool,
}

async fn create_group<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    Path((tenant, namespace)): Path<(String, String)>,
    NativeJson(body): NativeJson<CreateGroup>,
) -> Result<Response, ApiError> {
    let key = key(tenant, namespace, body.id)?;
    if !caller.principal.may_enter(&key.scope.tenant) {
        return Err(ApiError::Forbidden(format!(
            "this identity is not a member of {}",
            key.scope.tenant
        )));
    }
    let mut members: Vec<baton_core::NewMember> = Vec::new();
    for m in body.members {
        let id = baton_core::SessionId::new(m.id).map_err(bad)?;
        if members.iter().any(|x| x.id == id) {
            return Err(ApiError::BadRequest(format!("member {id} is listed twice")));
        }
        members.push(baton_core::NewMember {
            id,
            name: m.name,
            priority: m.priority,
            enabled: m.enabled,
        });
    }
    let policy = body.policy.map_or_else(baton_core::Policy::default, |p| baton_core::Policy {
        preemption_margin: p.preemption_margin.map(|points| u16::from(points) * 100),
        prioritized: p.prioritized,
        failback: p.failback,
        suspended: false,
    });
    let mut config =
        baton_core::GroupConfig::new(body.name, body.description, body.failover_timeout_ms)
            .and_then(|c| c.with_labels(body.labels))
            .map_err(bad)?
            .with_policy(policy);
    config.owners_only =
        body.owners_only.unwrap_or(key.scope.namespace.as_str() == crate::uplynk::NAMESPACE);
    let command = Command::CreateGroup { key, config, members };
    let Served { value, by } = s.coordinator.write(command, Some(caller.actor())).await?;
    match value {
        CoreResponse::Group { group, change } => {
            let status = if change == baton_core::Change::Created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, ServedBy(by), Json(group)).into_response())
        }
        CoreResponse::Rejected(Rejection::GroupExists { key }) => {
            Err(ApiError::Conflict(format!("failover group {key} already exists")))
        }
        CoreResponse::Rejected(r) => Err(refused(r)),
        _ => Err(ApiError::Internal),
    }
}

async fn all_groups<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    // A member reads only its own tenant's groups: the others are none of its business, and
    // reading every group for each call would let one member make every read cost the
    // whole state.
    let query = match &caller.principal.role {
        AccessRole::Admin => Query::AllGroups,
        AccessRole::Member { tenant } => Query::TenantGroups(tenant.clone()),
    };
    groups_answer(&*s.coordinator, &caller, query).await
}

/// `{"groups": [...]}`: the groups `query` finds that the caller may use.
async fn groups_answer<C: Coordinator>(
    c: &C,
    caller: &Caller,
    query: Query,
) -> Result<Response, ApiError> {
    let Served { value, by } = c.read(query, Consistency::Linearizable).await?;
    let QueryResult::Groups(groups) = value else { return Err(ApiError::Internal) };
    let groups: Vec<_> = groups.into_iter().filter(|g| caller.principal.may_use(g)).collect();
    Ok((ServedBy(by), Json(serde_json::json!({ "groups": groups }))).into_response())
}

async fn list_groups<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    Path((tenant, namespace)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let scope = Scope {
        tenant: TenantId::new(tenant).map_err(bad)?,
        namespace: NamespaceId::new(namespace).map_err(bad)?,
    };
    if !caller.principal.may_enter(&scope.tenant) {
        return Err(ApiError::Forbidden(format!(
            "this identity is not a member of {}",
            scope.tenant
        )));
    }
    groups_answer(&*s.coordinator, &caller, Query::Groups(scope)).await
}

async fn delete_group<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    Path((tenant, namespace, group)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let key = key(tenant, namespace, group)?;
    usable_group(&*s.coordinator, &caller, &key).await?;
    let command = Command::DeleteGroup { key, refuse_if_active: false, active: Vec::new() };
    let Served { value, by } = s.coordinator.write(command, Some(caller.actor())).await?;
    match value {
        CoreResponse::Deleted => Ok((StatusCode::NO_CONTENT, ServedBy(by), ()).into_response()),
        CoreResponse::Rejected(r) => Err(refused(r)),
        _ => Err(ApiError::Internal),
    }
}

async fn show_group<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    Path((tenant, namespace, group)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let key = key(tenant, namespace, group)?;
    let group = usable_group(&*s.coordinator, &caller, &key).await?;
    Ok(Json(group).into_response())
}

/// Body of `PUT .../allowed-owners`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedOwners {
    /// Identity names; empty admits every member of the group's tenant again.
    pub owners: Vec<String>,
}

async fn set_allowed_owners<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    Path((tenant, namespace, group)): Path<(String, String, String)>,
    NativeJson(body): NativeJson<AllowedOwners>,
) -> Result<Response, ApiError> {
    let key = key(tenant, namespace, group)?;
    let owners: BTreeSet<IdentityName> =
        body.owners.into_iter().map(IdentityName::new).collect::<Result<_, _>>().map_err(bad)?;
    usable_group(&*s.coordinator, &caller, &key).await?;
    let command = Command::SetAllowedOwners { group: key, owners };
    let Served { value, by } = s.coordinator.write(command, Some(caller.actor())).await?;
    match value {
        CoreResponse::Group { group, .. } => {
            let owners: Vec<String> =
                group.allowed_owners.iter().map(ToString::to_string).collect();
            Ok((ServedBy(by), Json(serde_json::json!({ "owners": owners }))).into_response())
        }
        CoreResponse::Rejected(r) => Err(refused(r)),
        _ => Err(ApiError::Internal),
    }
}
