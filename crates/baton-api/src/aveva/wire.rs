//! AVEVA wire formats: the request extractors (case-insensitive JSON, validated path) and the
//! response DTOs in AVEVA's casing.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use baton_core::{Group, GroupId, GroupKey, NamespaceId, Scope, TenantId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::AvevaError;
use super::timespan;
use crate::auth::Caller;

/// Largest AVEVA request body.
pub const MAX_BODY: usize = 64 * 1024;

/// The two AVEVA API versions Baton serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `/api/v1-preview/...`: the seed document's status codes (200 on every success).
    V1Preview,
    /// `/api/v1/...`: the GA status codes (201, 204, 409, `Total-Count`, ...).
    V1,
}

/// The validated path of a request: version, scope and, where the route has one, group id.
pub struct AvevaPath {
    /// Which API version the path named.
    pub version: Version,
    /// Tenant and namespace.
    pub scope: Scope,
    /// The group id, for routes under `groups/{groupId}`.
    pub group: Option<GroupId>,
    /// The authenticated caller, who may enter the path's tenant.
    pub caller: Caller,
}

impl AvevaPath {
    /// The group key; only call on routes that have a group id.
    pub fn group_key(&self) -> GroupKey {
        GroupKey {
            scope: self.scope.clone(),
            group: self.group.clone().expect("group routes always capture {group}"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AvevaPath {
    type Rejection = AvevaError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AvevaError> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| AvevaError::bad_request(format!("The request path is not valid: {e}")))?;
        let param =
            |name: &str| params.get(name).map(String::as_str).unwrap_or_default().to_string();
        let version = match param("version").as_str() {
            "v1-preview" => Version::V1Preview,
            "v1" => Version::V1,
            other => {
                return Err(AvevaError::not_found(format!(
                    "API version {other:?} does not exist; use v1 or v1-preview."
                )));
            }
        };
        let bad = |e: baton_core::Error| AvevaError::bad_request(e.to_string());
        let scope = Scope {
            tenant: TenantId::new(param("tenant")).map_err(bad)?,
            namespace: NamespaceId::new(param("namespace")).map_err(bad)?,
        };
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| AvevaError::unauthorized("The request is not authenticated."))?;
        if !caller.principal.may_enter(&scope.tenant) {
            return Err(AvevaError::other_tenant(&scope.tenant));
        }
        let group = match params.get("group") {
            Some(g) => Some(GroupId::new(g).map_err(bad)?),
            None => None,
        };
        Ok(Self { version, scope, group, caller })
    }
}

/// A JSON body whose property names are matched case-insensitively (ASP.NET's behaviour), with
/// every failure reported in AVEVA's error body. `T` names its fields in lowercase.
pub struct AvevaJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AvevaJson<T> {
    type Rejection = AvevaError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AvevaError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default();
            let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            if !(mime == "application/json" || mime.ends_with("+json") || mime == "text/json") {
                return Err(AvevaError::unsupported_media_type(ct));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_)
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                AvevaError::payload_too_large(MAX_BODY)
            }
            other => {
                AvevaError::bad_request(format!("The request body could not be read: {other}"))
            }
        })?;
        decode(&bytes).map(AvevaJson)
    }
}

/// Parses `bytes` as JSON, folds property names to lowercase, and decodes `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AvevaError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AvevaError::bad_request(
            "The request body is empty; a JSON object is required.",
        ));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        AvevaError::bad_request(format!("The request body is not valid JSON: {e}."))
    })?;
    if !value.is_object() {
        return Err(AvevaError::bad_request("The request body must be a JSON object."));
    }
    let value = fold_keys(value)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        AvevaError::bad_request(format!("Property {path} is not valid: {}.", e.into_inner()))
    })
}

/// Lowercases every object key, refusing two keys that differ only in case.
fn fold_keys(value: Value) -> Result<Value, AvevaError> {
    Ok(match value {
        Value::Object(map) => {
            let mut folded = Map::with_capacity(map.len());
            for (key, v) in map {
                let lower = key.to_lowercase();
                if folded.contains_key(&lower) {
                    return Err(AvevaError::bad_request(format!(
                        "Property {key} appears more than once."
                    )));
                }
                folded.insert(lower, fold_keys(v)?);
            }
            Value::Object(folded)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(fold_keys).collect::<Result<_, _>>()?)
        }
        other => other,
    })
}

/// `GroupConfiguration` as clients send it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct GroupConfigurationIn {
    /// `Id`.
    pub id: Option<String>,
    /// `Name`.
    pub name: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `FailoverTimeout`, parsed by [`timespan::parse`].
    pub failovertimeout: Option<Value>,
}

impl GroupConfigurationIn {
    /// The configuration, validated. `path_id` is the id in the path for PUT; a body id that
    /// disagrees with it is refused.
    pub fn into_config(
        self,
        path_id: Option<&GroupId>,
    ) -> Result<(GroupId, baton_core::GroupConfig), AvevaError> {
        let id = match (self.id, path_id) {
            (Some(body), Some(path)) if body != path.as_str() => {
                return Err(AvevaError::bad_request(format!(
                    "The Id in the body ({body:?}) differs from the id in the path ({:?}).",
                    path.as_str()
                )));
            }
            (_, Some(path)) => path.clone(),
            (Some(body), None) => {
                GroupId::new(body).map_err(|e| AvevaError::bad_request(e.to_string()))?
            }
            (None, None) => return Err(AvevaError::bad_request("Property Id is required.")),
        };
        let timeout = self
            .failovertimeout
            .filter(|v| !v.is_null())
            .ok_or_else(|| AvevaError::bad_request("Property FailoverTimeout is required."))?;
        let ms = timespan::parse(&timeout).map_err(AvevaError::bad_request)?;
        let config = baton_core::GroupConfig::new(self.name, self.description, ms)
            .map_err(|e| AvevaError::bad_request(e.to_string()))?;
        Ok((id, config))
    }
}

/// `GroupConfiguration` as Baton answers it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupConfigurationOut {
    /// `Id`.
    pub id: String,
    /// `Name`.
    pub name: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `FailoverTimeout` as a .NET time-span.
    pub failover_timeout: String,
}

impl From<&Group> for GroupConfigurationOut {
    fn from(g: &Group) -> Self {
        Self {
            id: g.key.group.to_string(),
            name: g.config.name.clone(),
            description: g.config.description.clone(),
            failover_timeout: timespan::format(g.config.failover_timeout_ms()),
        }
    }
}

/// `skip` and `count` of the v1 list endpoints.
#[derive(Debug)]
pub struct Paging {
    /// Items to skip.
    pub skip: usize,
    /// Most items to return.
    pub count: usize,
}

/// Default page size of v1 lists.
pub const DEFAULT_COUNT: usize = 100;

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = AvevaError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AvevaError> {
        let mut paging = Paging { skip: 0, count: DEFAULT_COUNT };
        for pair in parts.uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let target = match key.to_ascii_lowercase().as_str() {
                "skip" => &mut paging.skip,
                "count" => &mut paging.count,
                _ => continue,
            };
            *target = value.parse().map_err(|_| {
                AvevaError::bad_request(format!(
                    "Query parameter {key} must be a non-negative integer, not {value:?}."
                ))
            })?;
        }
        Ok(paging)
    }
}

/// Parses an RFC 3339 / ISO 8601 date-time (`2019-08-24T14:15:22Z`, with or without fraction
/// and offset; without an offset it is taken as UTC, as .NET clients often send it).
pub fn client_time(value: &str) -> Option<baton_core::ClientTime> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|t| t.and_utc().timestamp_millis())
        })
        .ok()
        .map(baton_core::ClientTime)
}

/// [`client_time`] of the body's property `field`, or AVEVA's error naming it.
pub fn parse_time(field: &str, value: &str) -> Result<baton_core::ClientTime, AvevaError> {
    client_time(value).ok_or_else(|| {
        AvevaError::bad_request(format!("Property {field} must be an ISO 8601 date-time such as 2019-08-24T14:15:22Z, not {value:?}."))
    })
}

/// Formats a client time as `2019-08-24T14:15:22.000Z`.
pub fn format_time(time: baton_core::ClientTime) -> String {
    chrono::DateTime::from_timestamp_millis(time.0).map_or_else(
        || time.0.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// AVEVA's integer for a role: Secondary 0, Primary 1, PendingPrimary 2.
pub fn role_number(role: baton_core::Role) -> u8 {
    match role {
        baton_core::Role::Secondary => 0,
        baton_core::Role::Primary => 1,
        baton_core::Role::PendingPrimary => 2,
    }
}

/// The path of a session route: the group path plus the session id.
pub struct SessionPath {
    /// Version, scope, group.
    pub path: AvevaPath,
    /// The session id.
    pub session: baton_core::SessionId,
}

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = AvevaError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AvevaError> {
        let path = AvevaPath::from_request_parts(parts, state).await?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| AvevaError::bad_request(format!("The request path is not valid: {e}")))?;
        let session =
            baton_core::SessionId::new(params.get("session").cloned().unwrap_or_default())
                .map_err(|e| AvevaError::bad_request(e.to_string()))?;
        Ok(Self { path, session })
    }
}

/// `ClientSession` as clients send it (seed: the full session; 2022+: `Id` and `Name`). Role
/// and heartbeat fields are accepted and ignored: roles are Baton's to decide.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct ClientSessionIn {
    /// `Id`.
    pub id: Option<String>,
    /// `Name`.
    pub name: Option<String>,
    /// `Role` (ignored).
    pub role: Option<Value>,
    /// `Heartbeat` (ignored).
    pub heartbeat: Option<Value>,
}

/// `ClientSession` as Baton answers it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClientSessionOut {
    /// `Id`.
    pub id: String,
    /// `Name`.
    pub name: Option<String>,
    /// `Role` as AVEVA's integer.
    pub role: u8,
    /// `Heartbeat`: the last one checkpointed, or null.
    pub heartbeat: Option<HeartbeatOut>,
    /// `HeartbeatPosted` (v1).
    pub heartbeat_posted: bool,
    /// `RoleOverride` (v1): 1 Primary, 0 Off.
    pub role_override: u8,
    /// `RoleOverrideExpirationTime` (v1).
    pub role_override_expiration_time: Option<String>,
}

/// The `Heartbeat` inside a `ClientSession`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HeartbeatOut {
    /// `FailoverStatus`.
    pub failover_status: f64,
    /// `HeartbeatTime`.
    pub heartbeat_time: Option<String>,
    /// `LastDataProcessedTime`.
    pub last_data_processed_time: Option<String>,
}

impl ClientSessionOut {
    /// The view of `session` in `group`.
    pub fn new(group: &Group, session: &baton_core::Session) -> Self {
        let heartbeat = session.last_heartbeat.as_ref().map(|r| HeartbeatOut {
            failover_status: r.heartbeat.score.value(),
            heartbeat_time: r.heartbeat.heartbeat_time.map(format_time),
            last_data_processed_time: r.heartbeat.last_data_processed_time.map(format_time),
        });
        Self {
            id: session.id.to_string(),
            name: session.name.clone(),
            role: role_number(group.role_of(&session.id)),
            heartbeat_posted: heartbeat.is_some(),
            heartbeat,
            role_override: u8::from(session.role_override.is_some()),
            role_override_expiration_time: session
                .role_override
                .as_ref()
                .and_then(|o| o.expires_at)
                .map(|t| {
                    format_time(baton_core::ClientTime(i64::try_from(t.0).unwrap_or(i64::MAX)))
                }),
        }
    }
}

/// `FailoverHeartbeat` as clients send it: the seed's `FailoverStatus` or v1's `FailoverScore`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct HeartbeatIn {
    /// `HeartbeatTime`.
    pub heartbeattime: Option<String>,
    /// `LastDataProcessedTime`.
    pub lastdataprocessedtime: Option<String>,
    /// `FailoverStatus` (seed).
    pub failoverstatus: Option<f64>,
    /// `FailoverScore` (v1).
    pub failoverscore: Option<f64>,
    /// `ReleasedEpoch` (Baton's own): the `Epoch` of the last answer the client took, when that
    /// answer was Secondary; proves that the client holds no grant (see
    /// `baton_core::Beat::released`).
    pub releasedepoch: Option<u64>,
}

impl HeartbeatIn {
    /// The core heartbeat. A missing score counts as 100 (healthy), as adapters that send only
    /// times expect.
    pub fn into_core(self) -> Result<baton_core::HeartbeatIn, AvevaError> {
        let score = self.failoverscore.or(self.failoverstatus).unwrap_or(100.0);
        let score =
            baton_core::Score::new(score).map_err(|e| AvevaError::bad_request(e.to_string()))?;
        Ok(baton_core::HeartbeatIn {
            score,
            heartbeat_time: self
                .heartbeattime
                .as_deref()
                .map(|t| parse_time("HeartbeatTime", t))
                .transpose()?,
            last_data_processed_time: self
                .lastdataprocessedtime
                .as_deref()
                .map(|t| parse_time("LastDataProcessedTime", t))
                .transpose()?,
        })
    }
}

/// `FailoverResponse`, with Baton's `Epoch` and `ValidFor` beside AVEVA's fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FailoverResponseOut {
    /// `Role` as AVEVA's integer.
    pub role: u8,
    /// `LastDataProcessedTime`.
    pub last_data_processed_time: Option<String>,
    /// The group's fencing epoch.
    pub epoch: u64,
    /// For Primary and PendingPrimary: how long the grant is valid from when the heartbeat was
    /// sent, as a time-span.
    pub valid_for: Option<String>,
}

impl From<&baton_core::HeartbeatAnswer> for FailoverResponseOut {
    fn from(a: &baton_core::HeartbeatAnswer) -> Self {
        Self {
            role: role_number(a.role),
            last_data_processed_time: a.last_data_processed_time.map(format_time),
            epoch: a.epoch.0,
            valid_for: a.valid_for_ms.map(timespan::format),
        }
    }
}

/// `GET .../groups/{id}/status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupStatusOut {
    /// The Primary's session id.
    pub primary: Option<String>,
    /// The PendingPrimary's session id.
    pub pending_primary: Option<String>,
    /// The last data processed time the Primary reported.
    pub last_data_processed_time: Option<String>,
    /// The group's epoch.
    pub epoch: u64,
}

impl From<&Group> for GroupStatusOut {
    fn from(g: &Group) -> Self {
        let holder =
            |stage| g.holder.as_ref().filter(|h| h.stage == stage).map(|h| h.session.to_string());
        Self {
            primary: holder(baton_core::Stage::Primary),
            pending_primary: holder(baton_core::Stage::Pending),
            last_data_processed_time: g.last_data_processed_time.map(format_time),
            epoch: g.epoch.0,
        }
    }
}

/// `roleoverride` body: `Value` 0/1 or "Off"/"Primary", optional `ExpirationPeriod` time-span.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct RoleOverrideIn {
    /// `Value`.
    pub value: Option<Value>,
    /// `ExpirationPeriod`.
    pub expirationperiod: Option<Value>,
}

impl RoleOverrideIn {
    /// `None`: Off; `Some(period)`: Primary, for `period` ms if given.
    pub fn into_override(self) -> Result<Option<Option<u64>>, AvevaError> {
        let primary = match self.value {
            Some(Value::Number(n)) if n.as_u64() == Some(0) => false,
            Some(Value::Number(n)) if n.as_u64() == Some(1) => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("off") => false,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("primary") => true,
            None | Some(Value::Null) => {
                return Err(AvevaError::bad_request(
                    "Property Value is required (0 Off, 1 Primary).",
                ));
            }
            Some(other) => {
                return Err(AvevaError::bad_request(format!(
                    "Property Value must be 0 (Off) or 1 (Primary), not {other}."
                )));
            }
        };
        if !primary {
            return Ok(None);
        }
        let period = match self.expirationperiod {
            None | Some(Value::Null) => None,
            Some(v) => {
                let ms = timespan::parse(&v).map_err(|e| {
                    AvevaError::bad_request(e.replace("FailoverTimeout", "ExpirationPeriod"))
                })?;
                if ms == 0 {
                    return Err(AvevaError::bad_request(
                        "Property ExpirationPeriod must be positive.",
                    ));
                }
                Some(ms)
            }
        };
        Ok(Some(period))
    }
}
