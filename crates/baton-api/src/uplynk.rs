//! The Uplynk v4 "failover groups" dialect under `/api/v4/failover-groups`: the nine documented
//! endpoints. Live slicers are the group's members; the active slicer is the holder. Modes map
//! onto the core's policy: `flat` ranks healthy slicers by score, `prioritized` by `order`
//! first, and `auto_failback` hands the baton back to a healthier higher-priority slicer.
//! `no_slicer` suspends the group (nobody holds the baton: slate). Groups are created through
//! the native API (`POST /groups/{tenant}/uplynk`), as Uplynk has no create endpoint.
//!
//! Authentication: every request carries `msg` and `sig` in its query string, exactly as
//! Uplynk's public `api_auth` sample makes them; `_owner` is a Baton identity with a signing
//! key (its API key). A member's groups live in its tenant, namespace `uplynk`; an
//! administrator's in tenant `_admin` (tenant names starting with `_` are reserved). Uplynk
//! groups are `owners_only`: only a group's owner, its allowed owners and administrators see
//! it, in every API; for anyone else it does not exist (404).
//!
//! Errors (Uplynk does not document its error body): `{"@type": "Error", "status", "message"}`.

use std::collections::BTreeSet;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use baton_core::{
    AccessRole, Command, ForceRefused, Group, GroupId, GroupKey, IdentityName, MemberChange,
    NamespaceId, Principal, Query, QueryResult, Rejection, Response as CoreResponse, Scope,
    SessionId, TenantId,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Caller, Denied};
use crate::coordinator::{Consistency, Coordinator, CoordinatorError, Served};
use crate::served_by::ServedBy;

/// The namespace Uplynk groups live in.
pub const NAMESPACE: &str = "uplynk";
/// The tenant an administrator's Uplynk groups live in.
pub const ADMIN_TENANT: &str = "_admin";
/// Largest request body.
const MAX_BODY: usize = 64 * 1024;
/// Most items in one list of a request body.
const MAX_ITEMS: usize = 1_000;

/// The Uplynk routes, to be nested under `/api/v4`.
pub fn routes<C: Coordinator>(state: AppState<C>) -> Router<AppState<C>> {
    let g = "/failover-groups/{group}";
    Router::new()
        .route("/failover-groups", get(list::<C>))
        .route(g, get(show::<C>).patch(configure::<C>))
        .route(&format!("{g}/activate_slicer"), put(activate_slicer::<C>))
        .route(&format!("{g}/set_no_slicer"), put(set_no_slicer::<C>))
        .route(&format!("{g}/slicers"), put(slicers::<C>))
        .route(&format!("{g}/channels"), put(channels::<C>))
        .route(&format!("{g}/allowed-owners"), get(allowed_owners::<C>).put(change_owners::<C>))
        .fallback(|| async { UplynkError::not_found("No Uplynk resource exists at this path.") })
        .method_not_allowed_fallback(|| async {
            UplynkError::new(StatusCode::METHOD_NOT_ALLOWED, "The method is not allowed here.")
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state, authenticate::<C>))
}

/// A failed Uplynk request.
#[derive(Debug)]
pub struct UplynkError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl UplynkError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for UplynkError {
    fn into_response(self) -> Response {
        let body =
            json!({"@type": "Error", "status": self.status.as_u16(), "message": self.message});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<CoordinatorError> for UplynkError {
    fn from(e: CoordinatorError) -> Self {
        let (status, message) = crate::error::unserved(e, "uplynk");
        Self::new(status, message)
    }
}

type Result<T> = std::result::Result<T, UplynkError>;

/// `msg` and `sig` from the query string.
#[derive(Default, Deserialize)]
struct SignedParams {
    msg: Option<String>,
    sig: Option<String>,
}

async fn authenticate<C: Coordinator>(
    State(state): State<AppState<C>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    // A query string that does not parse carries no signature.
    let SignedParams { msg, sig } =
        axum::extract::Query::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
    let from = crate::auth::client_addr(&parts);
    let checked = crate::auth::authenticate_signed(&state, msg.as_deref(), sig.as_deref(), from);
    match checked {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(denied @ Denied::Throttled { .. }) => UplynkError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("Too many requests; retry after {} s.", denied.retry_after_secs()),
            retry_after: Some(denied.retry_after_secs()),
        }
        .into_response(),
        Err(Denied::Missing) => UplynkError::new(
            StatusCode::UNAUTHORIZED,
            "The request must carry msg and sig query parameters.",
        )
        .into_response(),
        Err(Denied::Replayed) => UplynkError::new(
            StatusCode::UNAUTHORIZED,
            "This signature was already used by another client. Sign each request anew.",
        )
        .into_response(),
        Err(_) => UplynkError::new(
            StatusCode::UNAUTHORIZED,
            "The signature is not valid, the owner is unknown, or the timestamp is stale.",
        )
        .into_response(),
    }
}

/// The authenticated caller of an Uplynk route.
struct UplynkCaller(Caller);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for UplynkCaller {
    type Rejection = UplynkError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(UplynkCaller)
            .ok_or_else(|| UplynkError::new(StatusCode::UNAUTHORIZED, "Not authenticated."))
    }
}

fn scope_of(principal: &Principal) -> Scope {
    let tenant = match &principal.role {
        AccessRole::Member { tenant } => tenant.clone(),
        AccessRole::Admin => TenantId::new(ADMIN_TENANT).expect("a valid tenant id"),
    };
    Scope { tenant, namespace: NamespaceId::new(NAMESPACE).expect("a valid namespace id") }
}

fn not_found(id: &str) -> UplynkError {
    UplynkError::not_found(format!("Failover group {id} does not exist."))
}

async fn read_group<C: Coordinator>(c: &C, caller: &Caller, id: &str) -> Result<Served<Group>> {
    let group = GroupId::new(id).map_err(|_| not_found(id))?;
    let key = GroupKey { scope: scope_of(&caller.principal), group };
    let Served { value, by } = c.read(Query::Group(key), Consistency::Linearizable).await?;
    match value {
        QueryResult::Group(Some(group)) if caller.principal.may_use(&group) => {
            Ok(Served { value: *group, by })
        }
        _ => Err(not_found(id)),
    }
}

async fn write<C: Coordinator>(
    c: &C,
    caller: &Caller,
    command: Command,
    id: &str,
) -> Result<Response> {
    let Served { value, by } = c.write(command, Some(caller.actor())).await?;
    match value {
        CoreResponse::Group { .. } => {
            Ok((StatusCode::NO_CONTENT, ServedBy(by), ()).into_response())
        }
        // The other group is not named: the caller may not be allowed to see it.
        CoreResponse::Rejected(Rejection::ChannelTaken { channel, .. }) => Err(UplynkError::new(
            StatusCode::CONFLICT,
            format!("Channel {channel} already belongs to another failover group."),
        )),
        CoreResponse::Rejected(Rejection::GroupNotFound(_)) => Err(not_found(id)),
        CoreResponse::Rejected(Rejection::NoStandby(_)) => {
            Err(UplynkError::bad_request("The slicer is not healthy enough to take over now."))
        }
        CoreResponse::Rejected(Rejection::Superseded(_)) => Err(UplynkError::new(
            StatusCode::CONFLICT,
            "The group changed while the request was applied (a switch is in progress); retry.",
        )),
        CoreResponse::Rejected(Rejection::SessionNotFound { session, .. }) => {
            Err(UplynkError::bad_request(format!("Slicer {session} is not in the group.")))
        }
        CoreResponse::Rejected(Rejection::Forbidden(_) | Rejection::Unauthenticated(_)) => {
            Err(not_found(id))
        }
        CoreResponse::Rejected(Rejection::OverLimit(over)) => {
            Err(UplynkError::new(StatusCode::PAYLOAD_TOO_LARGE, over.to_string()))
        }
        CoreResponse::Rejected(Rejection::IdentityNotFound(name)) => {
            Err(UplynkError::bad_request(format!("Owner {name} is not a known, active user.")))
        }
        other => {
            tracing::error!(?other, "unexpected answer to an Uplynk command");
            Err(CoordinatorError::Internal("unexpected answer".into()).into())
        }
    }
}

fn group_view(group: &Group) -> Value {
    let id = group.key.group.as_str();
    let policy = &group.config.policy;
    let active = match (&group.holder, policy.suspended) {
        (_, true) => "no_slicer".to_string(),
        (Some(h), false) => h.session.to_string(),
        (None, false) => String::new(),
    };
    let slicers: Vec<Value> = group
        .sessions
        .values()
        .map(|s| {
            json!({
                "slicer_id": s.id.as_str(),
                "enabled": s.enabled,
                "order": s.priority,
                "active": group.holder.as_ref().is_some_and(|h| h.session == s.id),
            })
        })
        .collect();
    json!({
        "@id": format!("/api/v4/failover-groups/{id}"),
        "@type": "FailoverGroup",
        "id": id,
        "owner": group.owner.as_ref().map(ToString::to_string),
        "name": group.config.name.clone().unwrap_or_default(),
        "hot_warm": group.config.labels.get("hot_warm").and_then(|h| h.parse::<u32>().ok()).unwrap_or(0),
        "mode": if policy.prioritized { "prioritized" } else { "flat" },
        "auto_failback": policy.failback,
        "failover_time": group.holder.as_ref().map(|h| h.since.0),
        "active_slicer_id": active,
        "slicers": slicers,
        "channels": group.channels.iter().collect::<Vec<_>>(),
        "epoch": group.epoch.0,
    })
}

fn collection(id: String, items: Vec<Value>) -> Value {
    json!({"@id": id, "@type": "Collection", "total_items": items.len().to_string(), "items": items})
}

async fn list<C: Coordinator>(
    State(s): State<AppState<C>>,
    UplynkCaller(caller): UplynkCaller,
) -> Result<Response> {
    let Served { value, by } = s
        .coordinator
        .read(Query::Groups(scope_of(&caller.principal)), Consistency::Linearizable)
        .await?;
    let QueryResult::Groups(groups) = value else {
        return Err(CoordinatorError::Internal("a groups query got another answer".into()).into());
    };
    let items = groups.iter().filter(|g| caller.principal.may_use(g)).map(group_view).collect();
    let body = collection("/api/v4/failover-groups".into(), items);
    Ok((ServedBy(by), Json(body)).into_response())
}

async fn show<C: Coordinator>(
    State(s): State<AppState<C>>,
    UplynkCaller(caller): UplynkCaller,
    Path(id): Path<String>,
) -> Result<Response> {
    let Served { value, by } = read_group(&*s.coordinator, &caller, &id).await?;
    Ok((ServedBy(by), Json(group_view(&value))).into_response())
}

/// A JSON object body, or 400.
fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(UplynkError::bad_request("The body must be a JSON object.")),
        Err(e) => Err(UplynkError::bad_request(format!("The body is not valid JSON: {e}"))),
    }
}

fn only_keys(map: &serde_json::Map<String, Value>, allowed: &[&str]) -> Result<()> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(UplynkError::bad_request(format!("Unknown field {k:?}."))),
        None => Ok(()),
    }
}

fn boolean(map: &serde_json::Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(UplynkError::bad_request(format!("{key} must be true or false."))),
    }
}

async fn configure<C: Coordinator>(
    State(s): State<AppState<C>>,
    UplynkCaller(caller): UplynkCaller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let map = object(&body)?;
    only_keys(&map, &["mode", "auto_failback"])?;
    let mode = match map.get("mode") {
        None => None,
        Some(Value::String(m)) if m == "flat" => Some(false),
        Some(Value::String(m)) if m == "prioritized" => Some(true),
        Some(_) => {
            return Err(UplynkError::bad_request("mode must be \"flat\" or \"prioritized\"."));
        }
    };
    let failback = boolean(&map, "auto_failback")?;
    if mode.is_none() && failback.is_none() {
        return Err(UplynkError::bad_request("Give mode, auto_failback, or both."));
    }
    let Served { value: group, .. } = read_group(&*s.coordinator, &caller, &id).await?;
    let mut config = group.config.clone();
    if let Some(prioritized) = mode {
        config.policy.prioritized = prioritized;
    }
    if let Some(failback) = failback {
        config.policy.failback = failback;
    }
    write(&*s.coordinator, &caller, Command::PutGroup { key: group.key, config }, &id).await
}

async fn activate_slicer<C: Coordinator>(
    State(s): State<AppState<C>>,
    UplynkCaller(caller): UplynkCaller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let map = object(&body)?;
    only_keys(&map, &["slicer_id"])?;
    let Some(Value::String(slicer)) = map.get("slicer_id") else {
        return Err(UplynkError::bad_request("slicer_id is required."));
    };
    // "<userId>:<slicerId>" names another user's slicer; the group's members are what count.
    let slicer = slicer.rsplit_once(':').map_or(slicer.as_str(), |(_, s)| s);
    let Served { value: group, .. } = read_group(&*s.coordinator, &caller, &id).await?;
    if group.config.policy.failback {
        return Err(UplynkError::bad_request(
            "Manual activation is not allowed while auto_failback is enabled on the group.",
        ));
    }
    let slicer = SessionId::new(slicer)
        .ok()
        .filter(|s| group.sessions.contains_key(s))
        .ok_or_else(|| UplynkError::bad_request(format!("Slicer {slicer} is not in the group.")))?;
    match group.forced_handover(Some(slicer)) {
        Ok(Some(command)) => write(&*s.coordinator, &caller, command, &id).await,
        // The slicer is already active.
        Ok(None) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(ForceRefused::NoHolder) => Err(UplynkError::new(
            StatusCode::CONFLICT,
            "No slicer is active yet; the group activates its best healthy slicer itself.",
        )),
        Err(ForceRefused::AlreadyMoving) => Err(UplynkError::new(
            StatusCode::CONFLICT,
            "A switch to another slicer is already in progress; retry.",
        )),
    }
}

async fn set_no_slicer<C: Coordinator>(
    State(s): State<AppState<C>>,
    UplynkCaller(caller): UplynkCaller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let map = object(&body)?;
    only_keys(&map, &["no_slicer"])?;
    let no_slicer = boolean(&map, "no_slicer")?
        .ok_or_else(|| UplynkError::bad_request("no_slicer is required."))?;
    let Served { value: group, .. } = read_group(&*s.coordinator, &caller, &id).await?;
    let mut config = group.config.clone();
    config.policy.suspended = no_slicer;
    write(&*s.coordinator, &caller, Command::PutGroup { key: group.key, config }, &id).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlicersIn {
    slicers: Vec<SlicerIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlicerIn {
    slicer_id: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    order: Option<u32>,
}

async fn slicers<C: Coordinator>(
    State(s): State<AppState<C>>,
    UplynkCaller(caller): UplynkCaller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body: SlicersIn = serde_json::from_slice(&body)
        .map_err(|e| UplynkError::bad_request(format!("The body is not valid: {e}")))?;
    if body.slicers.len() > MAX_ITEMS {
        return Err(UplynkError::bad_request(format!("At most {MAX_ITEMS} slicers at once.")));
    }
    let Served { value: group, .. } = read_group(&*s.coordinator, &caller, &id).await?;
    // Slicers not in the group are ignored, as Uplynk documents.
    let members: Vec<MemberChange> = body
        .slicers
        .into_iter()
        .filter_map(|sl| {
            let session =
                SessionId::new(sl.slicer_id).ok().filter(|s| group.sessions.contains_key(s))?;
            Some(MemberChange { session, priority: sl.order, enabled: sl.enabled })
        })
        .collect();
    write(&*s.coordinator, &caller, Command::SetMembers { group: group.key, members }, &id).await
}

fn id_set(map: &serde_json::Map<String, Value>, key: &str) -> Result<BTreeSet<String>> {
    let Some(value) = map.get(key) else { return Ok(BTreeSet::new()) };
    let Value::Array(items) = value else {
        return Err(UplynkError::bad_request(format!("{key} must be a list of ids.")));
    };
    if items.len() > MAX_ITEMS {
        return Err(UplynkError::bad_request(format!("At most {MAX_ITEMS} ids in {key}.")));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => GroupId::new(s)
                .map(String::from)
                .map_err(|e| UplynkError::bad_request(format!("{key}: {e}"))),
            _ => Err(UplynkError::bad_request(format!("{key} must be a list of ids."))),
        })
        .collect()
}

async fn channels<C: Coordinator>(
    State(s): State<AppState<C>>,
    UplynkCaller(caller): UplynkCaller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let map = object(&body)?;
    only_keys(&map, &["channels_ids_to_add", "channels_ids_to_remove"])?;
    let add = id_set(&map, "channels_ids_to_add")?;
    let remove = id_set(&map, "channels_ids_to_remove")?;
    let Served { value: group, .. } = read_group(&*s.coordinator, &caller, &id).await?;
    write(&*s.coordinator, &caller, Command::SetChannels { group: group.key, add, remove }, &id)
        .await
}

/// A stable 32-hex id for an allowed-owner entry ("reserved for future use" in Uplynk).
fn entry_id(group: &str, owner: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{group}/{owner}").as_bytes());
    baton_auth::hex::encode(&digest.as_ref()[..16])
}

async fn allowed_owners<C: Coordinator>(
    State(s): State<AppState<C>>,
    UplynkCaller(caller): UplynkCaller,
    Path(id): Path<String>,
) -> Result<Response> {
    let Served { value: group, by } = read_group(&*s.coordinator, &caller, &id).await?;
    let items = group
        .allowed_owners
        .iter()
        .map(|o| json!({"id": entry_id(&id, o.as_str()), "failover_group_id": id, "owner": o.as_str()}))
        .collect();
    let body = collection(format!("/api/v4/failover-groups/{id}/allowed-owners"), items);
    Ok((ServedBy(by), Json(body)).into_response())
}

fn owner_set(map: &serde_json::Map<String, Value>, key: &str) -> Result<BTreeSet<IdentityName>> {
    id_set(map, key)?
        .into_iter()
        .map(|o| IdentityName::new(o).map_err(|e| UplynkError::bad_request(format!("{key}: {e}"))))
        .collect()
}

async fn change_owners<C: Coordinator>(
    State(s): State<AppState<C>>,
    UplynkCaller(caller): UplynkCaller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let map = object(&body)?;
    only_keys(&map, &["owners_to_add", "owners_to_remove"])?;
    let add = owner_set(&map, "owners_to_add")?;
    let remove = owner_set(&map, "owners_to_remove")?;
    let Served { value: group, .. } = read_group(&*s.coordinator, &caller, &id).await?;
    // Only the owner (or an administrator) grants or denies access.
    if !caller.principal.may_share(&group) {
        return Err(UplynkError::new(
            StatusCode::FORBIDDEN,
            "Only the group's owner may change its allowed owners.",
        ));
    }
    let command = Command::ChangeAllowedOwners { group: group.key, add, remove };
    write(&*s.coordinator, &caller, command, &id).await
}
