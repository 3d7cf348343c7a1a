//! The OpenStack Cinder (Block Storage v3) dialect: version documents at `/` and `/v3/`,
//! `OpenStack-API-Version` negotiation (3.0 to 3.71; the answer's version on every response,
//! 406 outside the range), `X-Auth-Token`, generic groups (3.13+), group types and their specs
//! (3.11+), and group replication (3.38+) with Cinder's `replication_status` state machine.
//!
//! Mapping onto the core: a project is a tenant; its groups live in namespace `cinder`, its
//! group types in namespace `cinder-group-types` (stored as member-less groups whose labels
//! are the specs). A group's members are its storage backends (they join and heartbeat through
//! the AVEVA session endpoints of the project's `cinder` namespace); the holder is the active
//! backend, the others are the replication targets. Enabling replication records the active
//! backend as the primary; failing over moves the baton to the named target (a forced
//! hand-over that needs that target healthy), and `secondary_backend_id: "default"` moves it
//! back to the primary. `replication_status` is `disabled` or, once enabled, derived from the
//! baton: `failing-over` while a hand-over runs, `failed-over` while a target holds it,
//! `enabled` while the primary does. Cinder has no volumes here: groups list none, and adding
//! volumes is refused.
//!
//! Errors are Cinder's fault bodies: `{"badRequest": {"code": 400, "message": ...}}`.
//!
//! So that stock OpenStack clients work with their usual token or password authentication,
//! a node also serves the two Keystone v3 calls they make: `GET /identity/v3` (discovery) and
//! `POST /identity/v3/auth/tokens` (method `token` with a Baton token, or `password` with an
//! identity's name and its token as the password, scoped to a project the identity may
//! enter). The answer's `X-Subject-Token` is a session token (an hour long, or as long as the
//! session token it was asked with; ended by a rotation or revocation of the identity), and
//! its catalog lists this node's `/v3/{project}` as the `volumev3` and `block-storage`
//! endpoint.

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use baton_core::{
    AccessRole, Command, ForceRefused, Group, GroupConfig, GroupId, GroupKey, NamespaceId, Policy,
    Query, QueryResult, Reason, Rejection, Response as CoreResponse, Scope, SessionId, TenantId,
};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::{Caller, Denied};
use crate::coordinator::{Consistency, Coordinator, CoordinatorError, Served};
use crate::served_by::ServedBy;

/// Namespace of a project's groups.
pub const GROUPS_NAMESPACE: &str = "cinder";
/// Namespace of a project's group types.
pub const TYPES_NAMESPACE: &str = "cinder-group-types";
/// The microversion header.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("openstack-api-version");
/// Oldest and newest microversions served.
const MIN: Version = Version(3, 0);
const MAX: Version = Version(3, 71);
/// Failover timeout of a Cinder group's backends.
const FAILOVER_TIMEOUT_MS: u64 = 30_000;
const MAX_BODY: usize = 64 * 1024;

/// A microversion, `3.x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u16, u16);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The Cinder routes, at the root (they own `/` and `/v3`).
pub fn routes<C: Coordinator>(state: AppState<C>) -> Router<AppState<C>> {
    let p = "/v3/{project}";
    let api = Router::new()
        .route(&format!("{p}/groups"), get(list_groups::<C>).post(create_group::<C>))
        .route(&format!("{p}/groups/detail"), get(list_groups_detail::<C>))
        .route(&format!("{p}/groups/{{group}}"), get(show_group::<C>).put(update_group::<C>))
        .route(&format!("{p}/groups/{{group}}/action"), post(group_action::<C>))
        .route(&format!("{p}/group_types"), get(list_types::<C>).post(create_type::<C>))
        .route(
            &format!("{p}/group_types/{{gtype}}"),
            get(show_type::<C>).put(update_type::<C>).delete(delete_type::<C>),
        )
        .route(
            &format!("{p}/group_types/{{gtype}}/group_specs"),
            get(list_specs::<C>).post(set_specs::<C>),
        )
        .route(
            &format!("{p}/group_types/{{gtype}}/group_specs/{{key}}"),
            get(show_spec::<C>).put(put_spec::<C>).delete(delete_spec::<C>),
        )
        .route_layer(axum::middleware::from_fn_with_state(state, authenticate::<C>));
    Router::new()
        .route("/identity/v3", get(identity_version))
        .route("/identity/v3/", get(identity_version))
        .route("/identity/v3/auth/tokens", post(issue_token::<C>))
        .route("/", get(versions))
        .route("/v3", get(version_v3))
        .route("/v3/", get(version_v3))
        .merge(api)
        .route_layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .route_layer(axum::middleware::from_fn(negotiate))
}

/// A failed Cinder request, answered with Cinder's fault body.
#[derive(Debug)]
pub struct CinderError {
    status: StatusCode,
    message: String,
}

impl CinderError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// The 404 of a method that does not exist at the requested microversion: no body.
    fn not_at_this_version() -> Self {
        Self::new(StatusCode::NOT_FOUND, "")
    }
    fn fault_name(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            409 => "conflictingRequest",
            413 => "overLimit",
            415 => "badMediaType",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "computeFault",
        }
    }
}

impl IntoResponse for CinderError {
    fn into_response(self) -> Response {
        if self.message.is_empty() {
            return self.status.into_response();
        }
        let body =
            json!({ self.fault_name(): {"code": self.status.as_u16(), "message": self.message} });
        (self.status, Json(body)).into_response()
    }
}

impl From<CoordinatorError> for CinderError {
    fn from(e: CoordinatorError) -> Self {
        let (status, message) = crate::error::unserved(e, "cinder");
        Self::new(status, message)
    }
}

type Result<T> = std::result::Result<T, CinderError>;

fn parse_version(headers: &HeaderMap) -> std::result::Result<Version, CinderError> {
    let Some(value) = headers.get(VERSION_HEADER) else { return Ok(MIN) };
    let text = value.to_str().unwrap_or_default().trim();
    let requested = text
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("volume "))
        .map(str::trim)
        .ok_or_else(|| {
            CinderError::bad_request(format!("Invalid OpenStack-API-Version {text:?}."))
        })?;
    if requested.eq_ignore_ascii_case("latest") {
        return Ok(MAX);
    }
    let (major, minor) = requested
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            CinderError::bad_request(format!("Invalid microversion {requested:?}; use volume 3.x."))
        })?;
    let version = Version(major, minor);
    if !(MIN..=MAX).contains(&version) {
        return Err(CinderError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "Version {version} is not supported by the API. Minimum is {MIN} and maximum is {MAX}."
            ),
        ));
    }
    Ok(version)
}

/// Negotiates the microversion and stamps it (and `Vary`) on every answer, faults included.
async fn negotiate(mut request: Request, next: Next) -> Response {
    let (version, mut response) = match parse_version(request.headers()) {
        Ok(v) => {
            request.extensions_mut().insert(v);
            (v, next.run(request).await)
        }
        Err(e) => (MIN, e.into_response()),
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("volume {version}")) {
        headers.insert(VERSION_HEADER, v);
    }
    headers.insert(axum::http::header::VARY, HeaderValue::from_static("OpenStack-API-Version"));
    response
}

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v3.0",
        "status": "CURRENT",
        "version": MAX.to_string(),
        "min_version": MIN.to_string(),
        "updated": "2023-05-01T00:00:00Z",
        "links": [{"href": format!("{base}/v3/"), "rel": "self"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    })
}

fn base_url(headers: &HeaderMap) -> String {
    format!("http://{}", host(headers))
}

async fn versions(headers: HeaderMap) -> Response {
    (StatusCode::MULTIPLE_CHOICES, Json(json!({"versions": [version_doc(&base_url(&headers))]})))
        .into_response()
}

async fn version_v3(headers: HeaderMap) -> Response {
    Json(json!({"versions": [version_doc(&base_url(&headers))]})).into_response()
}

fn keystone_error(status: StatusCode, message: &str) -> Response {
    let title = if status == StatusCode::UNAUTHORIZED { "Unauthorized" } else { "Bad Request" };
    let body = json!({"error": {"code": status.as_u16(), "title": title, "message": message}});
    (status, Json(body)).into_response()
}

async fn identity_version(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    Json(json!({"version": {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/identity/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }}))
    .into_response()
}

/// Keystone v3 `auth/tokens` for Baton identities (see the module documentation).
async fn issue_token<C: Coordinator>(
    State(s): State<AppState<C>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return keystone_error(StatusCode::BAD_REQUEST, "The request body is not valid JSON.");
    };
    let identity = &request["auth"]["identity"];
    let methods: Vec<&str> = identity["methods"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let (token, claimed) = if methods.contains(&"token") {
        (identity["token"]["id"].as_str(), None)
    } else if methods.contains(&"password") {
        let user = &identity["password"]["user"];
        (user["password"].as_str(), user["name"].as_str().or(user["id"].as_str()))
    } else {
        return keystone_error(StatusCode::UNAUTHORIZED, "Use the token or password method.");
    };
    let Ok(caller) = crate::auth::authenticate(
        &*s.coordinator,
        &s.gate,
        crate::auth::Accepts::OwnTokensOrSessions(&s.sessions),
        token,
        None,
    ) else {
        return keystone_error(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        );
    };
    if claimed.is_some_and(|name| name != caller.principal.name.as_str()) {
        return keystone_error(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        );
    }
    let project = &request["auth"]["scope"]["project"];
    let Some(project) = project["id"].as_str().or(project["name"].as_str()) else {
        return keystone_error(
            StatusCode::BAD_REQUEST,
            "Scope the token to a project (a Baton tenant).",
        );
    };
    let Ok(tenant) = TenantId::new(project) else {
        return keystone_error(StatusCode::BAD_REQUEST, "The project id is not valid.");
    };
    if !caller.principal.may_enter(&tenant) {
        return keystone_error(
            StatusCode::UNAUTHORIZED,
            "This identity has no role on the project.",
        );
    }
    let (session, expires) = crate::auth::session_for(&s.sessions, &caller, token.unwrap_or(""));
    let now = chrono::Utc::now();
    let expires_at = chrono::DateTime::from_timestamp(expires, 0).unwrap_or(now);
    let iso =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let url = format!("{}://{}/v3/{project}", s.scheme, host(&headers));
    let endpoint = |kind: &str| {
        json!({"id": format!("baton-{kind}"), "type": kind, "name": "cinderv3", "endpoints": [
            {"id": format!("baton-{kind}-public"), "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": url},
            {"id": format!("baton-{kind}-internal"), "interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": url},
        ]})
    };
    let role = if caller.principal.is_admin() { "admin" } else { "member" };
    let domain = json!({"id": "default", "name": "Default"});
    let body = json!({"token": {
        "methods": methods,
        "issued_at": iso(now),
        "expires_at": iso(expires_at),
        "user": {"id": caller.principal.name.as_str(), "name": caller.principal.name.as_str(), "domain": domain},
        "project": {"id": project, "name": project, "domain": domain},
        "roles": [{"id": role, "name": role}],
        "catalog": [endpoint("volumev3"), endpoint("block-storage")],
    }});
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&session) {
        response.headers_mut().insert("x-subject-token", value);
    }
    response
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string()
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
        crate::auth::Tokens::OwnOrSession(auth_token),
        denied_answer,
    )
    .await
}

/// This API's answer to a request that was not let in.
fn denied_answer(denied: Denied) -> Response {
    match denied {
        denied @ Denied::Throttled { .. } => {
            let mut response = CinderError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "This request was rate-limited; retry after {} s.",
                    denied.retry_after_secs()
                ),
            )
            .into_response();
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(denied.retry_after_secs()),
            );
            response
        }
        _ => CinderError::new(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        )
        .into_response(),
    }
}

/// The token of a request: `X-Auth-Token`.
fn auth_token(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-auth-token").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// What every Cinder handler starts from: the caller, its project and the microversion.
struct Ctx {
    caller: Caller,
    project: TenantId,
    version: Version,
}

impl Ctx {
    fn from_parts(parts: &axum::http::request::Parts, project: &str) -> Result<Self> {
        let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            CinderError::new(
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.",
            )
        })?;
        let version = parts.extensions.get::<Version>().copied().unwrap_or(MIN);
        let project =
            TenantId::new(project).map_err(|e| CinderError::bad_request(e.to_string()))?;
        if !caller.principal.may_enter(&project) {
            return Err(CinderError::new(
                StatusCode::FORBIDDEN,
                format!("Policy doesn't allow this identity to act on project {project}."),
            ));
        }
        Ok(Self { caller, project, version })
    }

    fn require(&self, min: Version) -> Result<()> {
        if self.version < min { Err(CinderError::not_at_this_version()) } else { Ok(()) }
    }

    fn scope(&self, namespace: &str) -> Scope {
        Scope {
            tenant: self.project.clone(),
            namespace: NamespaceId::new(namespace).expect("a valid namespace"),
        }
    }

    fn key(&self, namespace: &str, id: &str) -> Result<GroupKey> {
        let group = GroupId::new(id)
            .map_err(|_| CinderError::not_found(format!("{id} could not be found.")))?;
        Ok(GroupKey { scope: self.scope(namespace), group })
    }

    fn is_admin(&self) -> bool {
        matches!(self.caller.principal.role, AccessRole::Admin)
    }
}

/// Extracts a [`Ctx`] from the path's `{project}`.
struct Project(Ctx);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Project {
    type Rejection = CinderError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self> {
        let Path(params) = Path::<BTreeMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| CinderError::bad_request(format!("The request path is not valid: {e}")))?;
        let project = params.get("project").cloned().unwrap_or_default();
        Ctx::from_parts(parts, &project).map(Project)
    }
}

/// A JSON body with exactly one top-level key, whose value is returned.
fn body_of(bytes: &[u8], key: &str) -> Result<Map<String, Value>> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|_| CinderError::bad_request("Malformed request body"))?;
    match value {
        Value::Object(mut top) if top.len() == 1 => match top.remove(key) {
            Some(Value::Object(inner)) => Ok(inner),
            _ => Err(CinderError::bad_request(format!(
                "Missing required element '{key}' in request body."
            ))),
        },
        _ => Err(CinderError::bad_request("Malformed request body")),
    }
}

fn text(map: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= 255 => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(CinderError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value is too long."
        ))),
        Some(_) => Err(CinderError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value is not a string."
        ))),
    }
}

fn boolean(map: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(Some(true)),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(Some(false)),
            _ => Err(CinderError::bad_request(format!(
                "Invalid input for field/attribute {key}. Value is not a boolean."
            ))),
        },
        Some(_) => Err(CinderError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value is not a boolean."
        ))),
    }
}

fn only(map: &Map<String, Value>, allowed: &[&str]) -> Result<()> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(CinderError::bad_request(format!(
            "Additional properties are not allowed ('{k}' was unexpected)"
        ))),
        None => Ok(()),
    }
}

async fn read<C: Coordinator>(
    c: &C,
    ctx: &Ctx,
    key: &GroupKey,
    what: &str,
) -> Result<Served<Group>> {
    let Served { value, by } = c.read(Query::Group(key.clone()), Consistency::Linearizable).await?;
    match value {
        QueryResult::Group(Some(group)) if ctx.caller.principal.may_use(&group) => {
            Ok(Served { value: *group, by })
        }
        QueryResult::Group(Some(group)) if ctx.caller.principal.may_know(&group) => {
            Err(CinderError::new(StatusCode::FORBIDDEN, "Policy doesn't allow this operation."))
        }
        _ => Err(CinderError::not_found(format!("{what} {} could not be found.", key.group))),
    }
}

async fn list_in<C: Coordinator>(c: &C, ctx: &Ctx, namespace: &str) -> Result<(Vec<Group>, u64)> {
    let Served { value, by } =
        c.read(Query::Groups(ctx.scope(namespace)), Consistency::Linearizable).await?;
    let QueryResult::Groups(groups) = value else {
        return Err(CoordinatorError::Internal("a groups query got another answer".into()).into());
    };
    Ok((groups.into_iter().filter(|g| ctx.caller.principal.may_use(g)).collect(), by))
}

async fn write<C: Coordinator>(c: &C, ctx: &Ctx, command: Command) -> Result<Served<CoreResponse>> {
    Ok(c.write(command, Some(ctx.caller.actor())).await?)
}

fn rejected(response: CoreResponse, what: &str) -> CinderError {
    match response {
        CoreResponse::Rejected(Rejection::GroupNotFound(key)) => {
            CinderError::not_found(format!("{what} {} could not be found.", key.group))
        }
        CoreResponse::Rejected(Rejection::GroupExists { key }) => {
            CinderError::new(StatusCode::CONFLICT, format!("{what} {} already exists.", key.group))
        }
        CoreResponse::Rejected(Rejection::NoStandby(key)) => CinderError::bad_request(format!(
            "Invalid group: {}: the replication target is not healthy enough to take over.",
            key.group
        )),
        CoreResponse::Rejected(Rejection::Superseded(key)) => CinderError::bad_request(format!(
            "Invalid group: {}: its replication state changed while the request was applied.",
            key.group
        )),
        CoreResponse::Rejected(Rejection::Forbidden(_)) => {
            CinderError::new(StatusCode::FORBIDDEN, "Policy doesn't allow this operation.")
        }
        CoreResponse::Rejected(Rejection::Unauthenticated(_)) => CinderError::new(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        ),
        // Cinder answers a quota it would exceed with 413 overLimit.
        CoreResponse::Rejected(Rejection::OverLimit(over)) => CinderError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            crate::error::capitalized(&over.to_string()),
        ),
        other => {
            tracing::error!(?other, "unexpected answer to a Cinder command");
            CoordinatorError::Internal("unexpected answer".into()).into()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Group types (3.11+): member-less groups in the project's `cinder-group-types` namespace.

/// Label keys a group type keeps besides its specs.
const IS_PUBLIC: &str = "baton:is_public";

fn type_view(t: &Group) -> Value {
    let specs: Map<String, Value> = t
        .config
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("baton:"))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "id": t.key.group.as_str(),
        "name": t.config.name,
        "description": t.config.description,
        "is_public": t.config.labels.get(IS_PUBLIC).is_none_or(|v| v == "true"),
        "group_specs": specs,
    })
}

fn specs_of(map: &Map<String, Value>) -> Result<BTreeMap<String, String>> {
    let Some(specs) = map.get("group_specs") else { return Ok(BTreeMap::new()) };
    let Value::Object(specs) = specs else {
        return Err(CinderError::bad_request(
            "Invalid input for field/attribute group_specs. Value is not an object.",
        ));
    };
    specs
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) if !k.is_empty() && k.len() <= 255 && !k.starts_with("baton:") => {
                Ok((k.clone(), s.clone()))
            }
            _ => Err(CinderError::bad_request(format!(
                "Invalid group spec {k:?}: keys and values are strings."
            ))),
        })
        .collect()
}

/// Finds a group type by id, then by name.
async fn find_type<C: Coordinator>(c: &C, ctx: &Ctx, id_or_name: &str) -> Result<Group> {
    if let Ok(key) = ctx.key(TYPES_NAMESPACE, id_or_name)
        && let Ok(Served { value, .. }) = read(c, ctx, &key, "Group type").await
    {
        return Ok(value);
    }
    let (types, _) = list_in(c, ctx, TYPES_NAMESPACE).await?;
    types.into_iter().find(|t| t.config.name.as_deref() == Some(id_or_name)).ok_or_else(|| {
        CinderError::not_found(format!("Group type {id_or_name} could not be found."))
    })
}

async fn create_type<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    body: axum::body::Bytes,
) -> Result<Response> {
    ctx.require(Version(3, 11))?;
    let map = body_of(&body, "group_type")?;
    only(&map, &["name", "description", "is_public", "group_specs"])?;
    let name = text(&map, "name")?.filter(|n| !n.trim().is_empty()).ok_or_else(|| {
        CinderError::bad_request("Invalid input for field/attribute name. Value is required.")
    })?;
    let (existing, _) = list_in(&*s.coordinator, &ctx, TYPES_NAMESPACE).await?;
    if existing.iter().any(|t| t.config.name.as_deref() == Some(name.as_str())) {
        return Err(CinderError::new(
            StatusCode::CONFLICT,
            format!("Group Type {name} already exists."),
        ));
    }
    let mut labels = specs_of(&map)?;
    let public = boolean(&map, "is_public")?.unwrap_or(true);
    labels.insert(IS_PUBLIC.into(), public.to_string());
    let config = GroupConfig::new(Some(name), text(&map, "description")?, FAILOVER_TIMEOUT_MS)
        .and_then(|c| c.with_labels(labels))
        .map_err(|e| CinderError::bad_request(e.to_string()))?;
    let key = ctx.key(TYPES_NAMESPACE, &baton_auth::hex::random_uuid())?;
    let Served { value, by } =
        write(&*s.coordinator, &ctx, Command::CreateGroup { key, config, members: vec![] }).await?;
    match value {
        CoreResponse::Group { group, .. } => {
            Ok((StatusCode::ACCEPTED, ServedBy(by), Json(json!({"group_type": type_view(&group)})))
                .into_response())
        }
        other => Err(rejected(other, "Group type")),
    }
}

async fn list_types<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
) -> Result<Response> {
    ctx.require(Version(3, 11))?;
    let (types, by) = list_in(&*s.coordinator, &ctx, TYPES_NAMESPACE).await?;
    let views: Vec<Value> = types.iter().map(type_view).collect();
    Ok((ServedBy(by), Json(json!({"group_types": views}))).into_response())
}

async fn show_type<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, gtype)): Path<(String, String)>,
) -> Result<Response> {
    ctx.require(Version(3, 11))?;
    if gtype == "default" {
        return Err(CinderError::not_found("Default group type could not be found."));
    }
    let t = find_type(&*s.coordinator, &ctx, &gtype).await?;
    Ok(Json(json!({"group_type": type_view(&t)})).into_response())
}

async fn put_type_config<C: Coordinator>(
    s: &AppState<C>,
    ctx: &Ctx,
    t: Group,
    config: GroupConfig,
) -> Result<Group> {
    let Served { value, .. } =
        write(&*s.coordinator, ctx, Command::PutGroup { key: t.key, config }).await?;
    match value {
        CoreResponse::Group { group, .. } => Ok(*group),
        other => Err(rejected(other, "Group type")),
    }
}

async fn update_type<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, gtype)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    ctx.require(Version(3, 11))?;
    let map = body_of(&body, "group_type")?;
    only(&map, &["name", "description", "is_public"])?;
    let t = find_type(&*s.coordinator, &ctx, &gtype).await?;
    let mut config = t.config.clone();
    if let Some(name) = text(&map, "name")? {
        config.name = Some(name);
    }
    if map.contains_key("description") {
        config.description = text(&map, "description")?;
    }
    if let Some(public) = boolean(&map, "is_public")? {
        config.labels.insert(IS_PUBLIC.into(), public.to_string());
    }
    let updated = put_type_config(&s, &ctx, t, config).await?;
    Ok(Json(json!({"group_type": type_view(&updated)})).into_response())
}

async fn delete_type<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, gtype)): Path<(String, String)>,
) -> Result<Response> {
    ctx.require(Version(3, 11))?;
    let t = find_type(&*s.coordinator, &ctx, &gtype).await?;
    let (groups, _) = list_in(&*s.coordinator, &ctx, GROUPS_NAMESPACE).await?;
    if groups
        .iter()
        .any(|g| g.config.labels.get(GROUP_TYPE).map(String::as_str) == Some(t.key.group.as_str()))
    {
        return Err(CinderError::bad_request(format!(
            "Target group type with id {} is still in use.",
            t.key.group
        )));
    }
    let command = Command::DeleteGroup { key: t.key, refuse_if_active: false, active: vec![] };
    match write(&*s.coordinator, &ctx, command).await?.value {
        CoreResponse::Deleted => Ok(StatusCode::ACCEPTED.into_response()),
        other => Err(rejected(other, "Group type")),
    }
}

async fn list_specs<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, gtype)): Path<(String, String)>,
) -> Result<Response> {
    ctx.require(Version(3, 11))?;
    let t = find_type(&*s.coordinator, &ctx, &gtype).await?;
    Ok(Json(json!({"group_specs": type_view(&t)["group_specs"]})).into_response())
}

async fn set_specs<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, gtype)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    ctx.require(Version(3, 11))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| CinderError::bad_request("Malformed request body"))?;
    let map = value.as_object().cloned().unwrap_or_default();
    only(&map, &["group_specs"])?;
    let specs = specs_of(&map)?;
    if specs.is_empty() {
        return Err(CinderError::bad_request("group_specs must hold at least one key."));
    }
    let t = find_type(&*s.coordinator, &ctx, &gtype).await?;
    let mut config = t.config.clone();
    let mut labels = config.labels.clone();
    labels.extend(specs);
    config = config.with_labels(labels).map_err(|e| CinderError::bad_request(e.to_string()))?;
    let updated = put_type_config(&s, &ctx, t, config).await?;
    Ok(Json(json!({"group_specs": type_view(&updated)["group_specs"]})).into_response())
}

async fn show_spec<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, gtype, key)): Path<(String, String, String)>,
) -> Result<Response> {
    ctx.require(Version(3, 11))?;
    let t = find_type(&*s.coordinator, &ctx, &gtype).await?;
    match t.config.labels.get(&key).filter(|_| !key.starts_with("baton:")) {
        Some(v) => Ok(Json(json!({ key: v })).into_response()),
        None => Err(CinderError::not_found(format!(
            "Group Type {} has no specs with key {key}.",
            t.key.group
        ))),
    }
}

async fn put_spec<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, gtype, key)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    ctx.require(Version(3, 11))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| CinderError::bad_request("Malformed request body"))?;
    let map = value.as_object().cloned().unwrap_or_default();
    if map.len() != 1 || !map.contains_key(&key) {
        return Err(CinderError::bad_request("Request body and URI mismatch"));
    }
    let specs = specs_of(&Map::from_iter([("group_specs".to_string(), Value::Object(map))]))?;
    let t = find_type(&*s.coordinator, &ctx, &gtype).await?;
    let mut labels = t.config.labels.clone();
    labels.extend(specs);
    let config = t
        .config
        .clone()
        .with_labels(labels)
        .map_err(|e| CinderError::bad_request(e.to_string()))?;
    let updated = put_type_config(&s, &ctx, t, config).await?;
    Ok(Json(json!({ key.clone(): updated.config.labels.get(&key) })).into_response())
}

async fn delete_spec<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, gtype, key)): Path<(String, String, String)>,
) -> Result<Response> {
    ctx.require(Version(3, 11))?;
    let t = find_type(&*s.coordinator, &ctx, &gtype).await?;
    if key.starts_with("baton:") || !t.config.labels.contains_key(&key) {
        return Err(CinderError::not_found(format!(
            "Group Type {} has no specs with key {key}.",
            t.key.group
        )));
    }
    let mut config = t.config.clone();
    config.labels.remove(&key);
    put_type_config(&s, &ctx, t, config).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

// ---------------------------------------------------------------------------------------------
// Groups (3.13+) and replication (3.38+).

const GROUP_TYPE: &str = "baton:group_type";
const VOLUME_TYPES: &str = "baton:volume_types";
const ZONE: &str = "baton:availability_zone";
const STATUS: &str = "baton:status";
const REPLICATION: &str = "baton:replication";
const PRIMARY: &str = "baton:primary_backend";

fn replication_status(g: &Group) -> &'static str {
    if g.config.labels.get(REPLICATION).map(String::as_str) != Some("enabled") {
        return "disabled";
    }
    let primary = g.config.labels.get(PRIMARY);
    match (&g.holder, &g.handover) {
        (_, Some(h)) if h.reason == Reason::Forced => "failing-over",
        (Some(h), _) if Some(&h.session.to_string()) != primary => "failed-over",
        _ => "enabled",
    }
}

fn group_summary(g: &Group) -> Value {
    json!({"id": g.key.group.as_str(), "name": g.config.name})
}

fn group_detail(g: &Group, version: Version) -> Value {
    let label = |k: &str| g.config.labels.get(k).cloned();
    let volume_types: Vec<String> =
        label(VOLUME_TYPES).map(|v| v.split(',').map(str::to_string).collect()).unwrap_or_default();
    let created = crate::aveva::wire::format_time(baton_core::ClientTime(
        i64::try_from(g.created_at.0).unwrap_or(i64::MAX),
    ));
    let mut view = json!({
        "id": g.key.group.as_str(),
        "status": label(STATUS).unwrap_or_else(|| "available".into()),
        "availability_zone": label(ZONE).unwrap_or_else(|| "nova".into()),
        "created_at": created,
        "name": g.config.name,
        "description": g.config.description,
        "group_type": label(GROUP_TYPE),
        "volume_types": volume_types,
        "group_snapshot_id": null,
        "source_group_id": null,
    });
    if version >= Version(3, 38) {
        view["replication_status"] = json!(replication_status(g));
    }
    if version >= Version(3, 58) {
        view["project_id"] = json!(g.key.scope.tenant.as_str());
    }
    view
}

async fn create_group<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    body: axum::body::Bytes,
) -> Result<Response> {
    ctx.require(Version(3, 13))?;
    let map = body_of(&body, "group")?;
    only(&map, &["name", "description", "group_type", "volume_types", "availability_zone"])?;
    let gtype = text(&map, "group_type")?.ok_or_else(|| {
        CinderError::bad_request("Invalid input for field/attribute group_type. Value is required.")
    })?;
    let volume_types: Vec<String> = match map.get("volume_types") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= 64 => items
            .iter()
            .map(|v| {
                v.as_str()
                    .filter(|s| !s.is_empty() && !s.contains(',') && s.len() <= 255)
                    .map(str::to_string)
            })
            .collect::<Option<_>>()
            .ok_or_else(|| {
                CinderError::bad_request("volume_types must be a list of volume type ids.")
            })?,
        _ => {
            return Err(CinderError::bad_request(
                "Invalid input for field/attribute volume_types. Value is required.",
            ));
        }
    };
    let t = find_type(&*s.coordinator, &ctx, &gtype).await?;
    let mut labels = BTreeMap::from([
        (GROUP_TYPE.to_string(), t.key.group.to_string()),
        (VOLUME_TYPES.to_string(), volume_types.join(",")),
        (STATUS.to_string(), "available".to_string()),
    ]);
    if let Some(zone) = text(&map, "availability_zone")? {
        labels.insert(ZONE.into(), zone);
    }
    // Replication failover is an explicit action: no preemption.
    let policy = Policy { preemption_margin: None, ..Policy::default() };
    let config =
        GroupConfig::new(text(&map, "name")?, text(&map, "description")?, FAILOVER_TIMEOUT_MS)
            .and_then(|c| c.with_labels(labels))
            .map_err(|e| CinderError::bad_request(e.to_string()))?
            .with_policy(policy);
    let key = ctx.key(GROUPS_NAMESPACE, &baton_auth::hex::random_uuid())?;
    let Served { value, by } =
        write(&*s.coordinator, &ctx, Command::CreateGroup { key, config, members: vec![] }).await?;
    match value {
        CoreResponse::Group { group, .. } => {
            Ok((StatusCode::ACCEPTED, ServedBy(by), Json(json!({"group": group_summary(&group)})))
                .into_response())
        }
        other => Err(rejected(other, "Group")),
    }
}

async fn list_groups<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
) -> Result<Response> {
    ctx.require(Version(3, 13))?;
    let (groups, by) = list_in(&*s.coordinator, &ctx, GROUPS_NAMESPACE).await?;
    let views: Vec<Value> = groups.iter().map(group_summary).collect();
    Ok((ServedBy(by), Json(json!({"groups": views}))).into_response())
}

async fn list_groups_detail<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
) -> Result<Response> {
    ctx.require(Version(3, 13))?;
    let (groups, by) = list_in(&*s.coordinator, &ctx, GROUPS_NAMESPACE).await?;
    let views: Vec<Value> = groups.iter().map(|g| group_detail(g, ctx.version)).collect();
    Ok((ServedBy(by), Json(json!({"groups": views}))).into_response())
}

async fn show_group<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, group)): Path<(String, String)>,
) -> Result<Response> {
    ctx.require(Version(3, 13))?;
    let key = ctx.key(GROUPS_NAMESPACE, &group)?;
    let Served { value, by } = read(&*s.coordinator, &ctx, &key, "Group").await?;
    Ok((ServedBy(by), Json(json!({"group": group_detail(&value, ctx.version)}))).into_response())
}

async fn put_group_config<C: Coordinator>(
    s: &AppState<C>,
    ctx: &Ctx,
    g: &Group,
    config: GroupConfig,
) -> Result<u64> {
    let Served { value, by } =
        write(&*s.coordinator, ctx, Command::PutGroup { key: g.key.clone(), config }).await?;
    match value {
        CoreResponse::Group { .. } => Ok(by),
        other => Err(rejected(other, "Group")),
    }
}

async fn update_group<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, group)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    ctx.require(Version(3, 13))?;
    let map = body_of(&body, "group")?;
    only(&map, &["name", "description", "add_volumes", "remove_volumes"])?;
    for field in ["add_volumes", "remove_volumes"] {
        if let Some(ids) = text(&map, field)?.filter(|v| !v.trim().is_empty()) {
            return Err(CinderError::bad_request(format!(
                "Invalid volume: cannot add or remove volumes {ids}: Baton groups hold no volumes."
            )));
        }
    }
    if !map.contains_key("name") && !map.contains_key("description") {
        return Err(CinderError::bad_request(
            "Name, description, add_volumes, and remove_volumes can not be all empty in the request body.",
        ));
    }
    let key = ctx.key(GROUPS_NAMESPACE, &group)?;
    let Served { value: g, .. } = read(&*s.coordinator, &ctx, &key, "Group").await?;
    let mut config = g.config.clone();
    if map.contains_key("name") {
        config.name = text(&map, "name")?;
    }
    if map.contains_key("description") {
        config.description = text(&map, "description")?;
    }
    let by = put_group_config(&s, &ctx, &g, config).await?;
    Ok((StatusCode::ACCEPTED, ServedBy(by), ()).into_response())
}

/// Whether the group's type is a replication type (`<is> True` for either replication spec).
async fn check_replication_type<C: Coordinator>(
    s: &AppState<C>,
    ctx: &Ctx,
    g: &Group,
) -> Result<()> {
    let type_id = g.config.labels.get(GROUP_TYPE).cloned().unwrap_or_default();
    let t = find_type(&*s.coordinator, ctx, &type_id).await?;
    let on = |k: &str| {
        t.config.labels.get(k).is_some_and(|v| v.trim().eq_ignore_ascii_case("<is> true"))
    };
    if on("group_replication_enabled") || on("consistent_group_replication_enabled") {
        Ok(())
    } else {
        Err(CinderError::bad_request(format!(
            "Group {} is not a replication group type.",
            g.key.group
        )))
    }
}

async fn group_action<C: Coordinator>(
    State(s): State<AppState<C>>,
    Project(ctx): Project,
    Path((_, group)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    ctx.require(Version(3, 13))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| CinderError::bad_request("Malformed request body"))?;
    let Value::Object(top) = value else {
        return Err(CinderError::bad_request("Malformed request body"));
    };
    if top.len() != 1 {
        return Err(CinderError::bad_request(
            "Malformed request body: exactly one action is expected.",
        ));
    }
    let (action, args) = top.into_iter().next().expect("one key");
    let args = match args {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return Err(CinderError::bad_request("Malformed request body")),
    };
    let key = ctx.key(GROUPS_NAMESPACE, &group)?;
    let replication = [
        "enable_replication",
        "disable_replication",
        "failover_replication",
        "list_replication_targets",
    ];
    if replication.contains(&action.as_str()) {
        ctx.require(Version(3, 38))?;
    }
    let Served { value: g, .. } = read(&*s.coordinator, &ctx, &key, "Group").await?;
    match action.as_str() {
        "delete" => {
            only(&args, &["delete-volumes"])?;
            boolean(&args, "delete-volumes")?;
            let command = Command::DeleteGroup { key, refuse_if_active: false, active: vec![] };
            match write(&*s.coordinator, &ctx, command).await?.value {
                CoreResponse::Deleted => Ok(StatusCode::ACCEPTED.into_response()),
                other => Err(rejected(other, "Group")),
            }
        }
        "reset_status" => {
            ctx.require(Version(3, 20))?;
            if !ctx.is_admin() {
                return Err(CinderError::new(
                    StatusCode::FORBIDDEN,
                    "Policy doesn't allow group:reset_status to be performed.",
                ));
            }
            only(&args, &["status"])?;
            let status = text(&args, "status")?
                .filter(|st| {
                    [
                        "available",
                        "error",
                        "creating",
                        "deleting",
                        "updating",
                        "in-use",
                        "error_deleting",
                    ]
                    .contains(&st.as_str())
                })
                .ok_or_else(|| {
                    CinderError::bad_request("Invalid input for field/attribute status.")
                })?;
            let mut config = g.config.clone();
            config.labels.insert(STATUS.into(), status);
            put_group_config(&s, &ctx, &g, config).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "enable_replication" => {
            only(&args, &[])?;
            check_replication_type(&s, &ctx, &g).await?;
            let status = replication_status(&g);
            if g.config.labels.get(STATUS).map(String::as_str) != Some("available")
                || !["disabled", "enabled"].contains(&status)
            {
                return Err(CinderError::bad_request(format!(
                    "Invalid group: Group {} is not in a state to enable replication ({status}).",
                    g.key.group
                )));
            }
            let Some(holder) = &g.holder else {
                return Err(CinderError::bad_request(format!(
                    "Invalid group: Group {} has no active backend to replicate from.",
                    g.key.group
                )));
            };
            let mut config = g.config.clone();
            config.labels.insert(REPLICATION.into(), "enabled".into());
            config.labels.insert(PRIMARY.into(), holder.session.to_string());
            put_group_config(&s, &ctx, &g, config).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "disable_replication" => {
            only(&args, &[])?;
            check_replication_type(&s, &ctx, &g).await?;
            let status = replication_status(&g);
            if !["enabled", "error"].contains(&status) {
                return Err(CinderError::bad_request(format!(
                    "Invalid group: Group {} replication is {status}; it can be disabled only when enabled.",
                    g.key.group
                )));
            }
            let mut config = g.config.clone();
            config.labels.insert(REPLICATION.into(), "disabled".into());
            put_group_config(&s, &ctx, &g, config).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "failover_replication" => {
            only(&args, &["allow_attached_volume", "secondary_backend_id"])?;
            boolean(&args, "allow_attached_volume")?;
            check_replication_type(&s, &ctx, &g).await?;
            let status = replication_status(&g);
            if !["enabled", "failed-over"].contains(&status) {
                return Err(CinderError::bad_request(format!(
                    "Invalid group: Group {} replication is {status}; failover needs it enabled or failed-over.",
                    g.key.group
                )));
            }
            let target = match text(&args, "secondary_backend_id")? {
                Some(id) if id == "default" => g.config.labels.get(PRIMARY).cloned(),
                other => other,
            };
            let to = match target {
                Some(id) => Some(
                    SessionId::new(&id)
                        .ok()
                        .filter(|t| g.sessions.contains_key(t))
                        .ok_or_else(|| CinderError::bad_request(format!("Invalid secondary_backend_id {id}: it is not a replication target of this group.")))?,
                ),
                None => None,
            };
            let command = match g.forced_handover(to) {
                Ok(Some(command)) => command,
                // The target already holds the baton.
                Ok(None) => return Ok(StatusCode::ACCEPTED.into_response()),
                Err(ForceRefused::NoHolder) => {
                    return Err(CinderError::bad_request(format!(
                        "Invalid group: Group {} has no active backend.",
                        g.key.group
                    )));
                }
                Err(ForceRefused::AlreadyMoving) => {
                    return Err(CinderError::bad_request(format!(
                        "Invalid group: Group {} is already changing its active backend.",
                        g.key.group
                    )));
                }
            };
            match write(&*s.coordinator, &ctx, command).await?.value {
                CoreResponse::Group { .. } => Ok(StatusCode::ACCEPTED.into_response()),
                other => Err(rejected(other, "Group")),
            }
        }
        "list_replication_targets" => {
            only(&args, &[])?;
            check_replication_type(&s, &ctx, &g).await?;
            let holder = g.holder.as_ref().map(|h| &h.session);
            let admin = ctx.is_admin();
            let targets: Vec<Value> = g
                .sessions
                .keys()
                .filter(|id| Some(*id) != holder)
                .map(|id| {
                    if admin {
                        json!({"backend_id": id.as_str(), "unique_key": id.as_str()})
                    } else {
                        json!({"backend_id": id.as_str()})
                    }
                })
                .collect();
            Ok(Json(json!({"replication_targets": targets})).into_response())
        }
        other => Err(CinderError::bad_request(format!(
            "There is no such action: {other}. Verify the request body and Content-Type header and try again."
        ))),
    }
}
