//! # baton-client: a typed async client for Baton
//!
//! [`Client`] calls a cluster through any of its nodes, finds the leader and sends to it,
//! bounds every request by a deadline, and retries only what is safe to retry (see the
//! README). [`Agent`] keeps a session alive and reports its role, epoch and grant validity.
//!
//! ```text
//!  Client::send ─▶ leader (if known) ─▶ each configured node in turn
//!      307 (?redirect) ─▶ remember the leader's address, send there
//!      not sent / 503  ─▶ next node            sent, no answer ─▶ retry only if safe
//! ```
//!
//! ## Invariants
//! - A request that may have executed is never repeated unless it is marked safe to repeat.
//! - A grant is reported valid only until `sent + ValidFor` of the heartbeat that earned it.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]
#![deny(missing_docs)]

mod agent;

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use agent::{Agent, AgentConfig, Status};
use baton_api::ClusterStatus;
use baton_core::{Decision, Epoch, Group, GroupKey, Role, SessionId};
use serde_json::{Value, json};

/// How a [`Client`] reaches a cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base URLs of any nodes (`http://10.0.0.1:7001`), tried in order.
    pub nodes: Vec<String>,
    /// The caller's token.
    pub token: String,
    /// Deadline of each request.
    pub timeout: Duration,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No node could be reached or none had a leader.
    #[error("no node could serve the request: {0}")]
    Unavailable(String),
    /// The request may or may not have been executed; read back before deciding.
    #[error("the outcome is unknown: {0}")]
    OutcomeUnknown(String),
    /// The token is missing, wrong or not allowed to do this (401, 403).
    #[error("not authorized: {0}")]
    Denied(String),
    /// What was named does not exist (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// Too many requests (429); try again after the given time.
    #[error("too many requests; retry after {0:?}")]
    TooFast(Duration),
    /// The cluster refused the request (400, 409, ...).
    #[error("refused ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The configuration cannot work (no nodes, an unusable URL).
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Whether a request changes nothing when it is executed twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Reads, heartbeats, and writes that change nothing when repeated.
    Safe,
    /// Writes that must apply once: sent with an idempotency key, so a retry after an
    /// unknown outcome (a timeout, a lost connection, a 504) is still applied once.
    Once,
}

/// A heartbeat's answer, with the grant's validity on this client's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The session's role.
    pub role: Role,
    /// The group's epoch (a fencing token that grows with every grant).
    pub epoch: Epoch,
    /// For Primary and PendingPrimary: the grant holds until then (from when the heartbeat was
    /// sent), unless renewed.
    pub valid_until: Option<Instant>,
    /// The group's last data processed time (the previous Primary's, for a PendingPrimary).
    pub last_data_processed_time: Option<String>,
}

/// A typed client for one cluster. Cheap to share behind an `Arc`.
pub struct Client {
    config: ClientConfig,
    http: reqwest::Client,
    /// The leader's base URL, once a node named it.
    leader: Mutex<Option<String>>,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

fn origin(location: &str) -> Option<String> {
    let (scheme, rest) = location.split_once("://")?;
    let host = rest.split('/').next()?;
    Some(format!("{scheme}://{host}"))
}

impl Client {
    /// A client for `config`. Plain-HTTP nodes need no certificates; for HTTPS give a
    /// configured `reqwest::Client` to [`Client::with_http`].
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none());
        if config.nodes.iter().all(|n| n.starts_with("http://")) {
            builder = builder.tls_backend_preconfigured(plain_http_only());
        }
        let http = builder.build().map_err(|e| Error::Config(e.to_string()))?;
        Self::with_http(config, http)
    }

    /// A client for `config` that sends through `http` (which must not follow redirects).
    pub fn with_http(mut config: ClientConfig, http: reqwest::Client) -> Result<Self, Error> {
        config.nodes = config
            .nodes
            .iter()
            .map(|n| n.trim().trim_end_matches('/').to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if config.nodes.is_empty() {
            return Err(Error::Config("no node URLs".into()));
        }
        Ok(Self { config, http, leader: Mutex::new(None) })
    }

    fn leader(&self) -> Option<String> {
        self.leader.lock().map(|l| l.clone()).unwrap_or(None)
    }

    fn set_leader(&self, leader: Option<String>) {
        if let Ok(mut l) = self.leader.lock() {
            *l = leader;
        }
    }

    /// Sends `method path` to the leader if known, else to each node in turn (asking it to
    /// redirect to the leader), and returns the first answer that is not "no leader here".
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        repeat: Repeat,
    ) -> Result<Answer, Error> {
        // A write that must apply once carries a key of its own, the same on every attempt:
        // the cluster applies it once and answers retries with the first outcome.
        let key = (repeat == Repeat::Once).then(new_request_key);
        let mut bases: Vec<String> = self.leader().into_iter().collect();
        bases.extend(self.config.nodes.iter().cloned());
        let mut last = Error::Unavailable("no node was tried".into());
        let mut redirects = 0;
        let mut i = 0;
        while i < bases.len() {
            let base = bases[i].clone();
            i += 1;
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = format!("{base}{path}{sep}redirect");
            let mut request =
                self.http.request(method.clone(), &url).bearer_auth(&self.config.token);
            if let Some(body) = body {
                request = request.header("content-type", "application/json").body(body.to_string());
            }
            if let Some(key) = &key {
                request = request.header("idempotency-key", key);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    if self.leader().as_deref() == Some(base.as_str()) {
                        self.set_leader(None);
                    }
                    // Safe to send elsewhere: it never left, it is safe to repeat, or it
                    // carries its idempotency key.
                    last = Error::Unavailable(format!("{base}: {e}"));
                    if !e.is_connect() && key.is_some() {
                        last = Error::OutcomeUnknown(format!("{base}: {e}"));
                    }
                    continue;
                }
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            if status == 307 && redirects < 3 {
                redirects += 1;
                if let Some(leader) =
                    headers.get("location").and_then(|l| l.to_str().ok()).and_then(origin)
                {
                    self.set_leader(Some(leader.clone()));
                    bases.insert(i, leader);
                }
                continue;
            }
            let text = response.text().await.unwrap_or_default();
            let body = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            if status == 503 {
                last = Error::Unavailable(format!("{base}: {}", message(&body)));
                continue;
            }
            if status == 504 {
                last = Error::Unavailable(format!("{base}: {}", message(&body)));
                continue;
            }
            return Ok(Answer { status, headers, body });
        }
        Err(last)
    }

    /// Sends and maps a non-2xx answer to an [`Error`].
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        repeat: Repeat,
    ) -> Result<Value, Error> {
        let answer = self.send(method, path, body.as_ref(), repeat).await?;
        let text = message(&answer.body);
        match answer.status {
            200..=299 => Ok(answer.body),
            401 | 403 => Err(Error::Denied(text)),
            404 => Err(Error::NotFound(text)),
            429 => {
                let secs = answer
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                Err(Error::TooFast(Duration::from_secs(secs)))
            }
            status => Err(Error::Refused { status, message: text }),
        }
    }

    /// This node's view of the cluster (administrators).
    pub async fn cluster_status(&self) -> Result<ClusterStatus, Error> {
        decode(self.call(reqwest::Method::GET, "/cluster/status", None, Repeat::Safe).await?)
    }

    /// One group, as the native API shows it.
    pub async fn group(&self, key: &GroupKey) -> Result<Group, Error> {
        decode(self.call(reqwest::Method::GET, &native(key), None, Repeat::Safe).await?)
    }

    /// A group's last decisions, oldest first.
    pub async fn history(&self, key: &GroupKey) -> Result<Vec<Decision>, Error> {
        let page = self
            .call(reqwest::Method::GET, &format!("{}/history", native(key)), None, Repeat::Safe)
            .await?;
        decode(page["decisions"].clone())
    }

    /// Joins `group` as `session` (the same id again is a no-op, so this is safe to repeat).
    pub async fn join(&self, key: &GroupKey, session: &SessionId) -> Result<(), Error> {
        let body = json!({ "Id": session.as_str() });
        self.call(
            reqwest::Method::POST,
            &format!("{}/clientsessions", aveva(key)),
            Some(body),
            Repeat::Safe,
        )
        .await
        .map(|_| ())
    }

    /// Heartbeats `session` with `score` (0-100) and returns its grant. Safe to repeat.
    /// `released`: the epoch of the last answer the caller took, when it was Secondary (the
    /// caller's proof that it holds no grant; see `baton_core::Beat::released`). Only a caller
    /// that keeps one heartbeat in flight and never takes an answer it gave up on may send it.
    pub async fn heartbeat(
        &self,
        key: &GroupKey,
        session: &SessionId,
        score: f64,
        released: Option<Epoch>,
    ) -> Result<Grant, Error> {
        let sent = Instant::now();
        let path = format!("{}/clientsessions/{session}/heartbeat", aveva(key));
        let mut body = json!({ "FailoverScore": score });
        if let Some(epoch) = released {
            body["ReleasedEpoch"] = json!(epoch.0);
        }
        let answer = self.call(reqwest::Method::POST, &path, Some(body), Repeat::Safe).await?;
        let role = match answer["Role"].as_u64() {
            Some(0) => Role::Secondary,
            Some(1) => Role::Primary,
            Some(2) => Role::PendingPrimary,
            _ => return Err(Error::Decode(format!("no Role in {answer}"))),
        };
        let epoch = Epoch(answer["Epoch"].as_u64().unwrap_or_default());
        let valid_until = match &answer["ValidFor"] {
            Value::Null => None,
            v => {
                let ms = baton_api::aveva::timespan::parse(v).map_err(Error::Decode)?;
                Some(sent + Duration::from_millis(ms))
            }
        };
        let last_data_processed_time = answer["LastDataProcessedTime"].as_str().map(str::to_owned);
        Ok(Grant { role, epoch, valid_until, last_data_processed_time })
    }

    /// Forces the baton away from the holder (to `to`, if given). Retried on another node when
    /// its outcome is unknown, with one idempotency key, so it starts at most one hand-over.
    pub async fn failover(&self, key: &GroupKey, to: Option<&SessionId>) -> Result<(), Error> {
        let mut path = format!("{}/failover", native(key));
        if let Some(to) = to {
            path.push_str(&format!("?to={to}"));
        }
        self.call(reqwest::Method::POST, &path, None, Repeat::Once).await.map(|_| ())
    }
}

/// A fresh idempotency key: 128 random bits in hex.
fn new_request_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn message(body: &Value) -> String {
    body.get("message")
        .or_else(|| body.get("Reason"))
        .or_else(|| body.get("Error"))
        .and_then(Value::as_str)
        .map_or_else(|| body.to_string(), str::to_owned)
}

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| Error::Decode(e.to_string()))
}

fn native(key: &GroupKey) -> String {
    format!("/groups/{}/{}/{}", key.scope.tenant, key.scope.namespace, key.group)
}

fn aveva(key: &GroupKey) -> String {
    format!(
        "/api/v1/tenants/{}/namespaces/{}/clientfailover/groups/{}",
        key.scope.tenant, key.scope.namespace, key.group
    )
}

/// A TLS configuration that trusts nothing: the client then needs no CA store for plain HTTP.
fn plain_http_only() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth()
}
