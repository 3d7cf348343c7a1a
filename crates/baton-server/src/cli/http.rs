//! How client commands call a cluster: any of the given nodes (a node that cannot be reached or
//! has no leader is passed over for the next), a bearer token, a deadline per request, and an
//! exit code for every way a call can fail.

use std::time::Duration;

use serde_json::Value;

/// Exit codes of the client commands.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// No node could be reached, none had a leader, or a write's outcome is unknown.
    pub const UNAVAILABLE: u8 = 1;
    /// Bad usage (also clap's code for a bad command line).
    pub const USAGE: u8 = 2;
    /// What was named does not exist (404).
    pub const NOT_FOUND: u8 = 3;
    /// The cluster refused: a conflict or an invalid request (400, 409, 413, 422).
    pub const REFUSED: u8 = 4;
    /// The token is missing, wrong or not allowed to do this (401, 403).
    pub const DENIED: u8 = 5;
    /// A command that waits gave up (`--wait`).
    pub const TIMED_OUT: u8 = 6;
}

/// A failed command: what to print, and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// The message for stderr.
    pub message: String,
    /// One of [`exit`].
    pub code: u8,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self { message: message.into(), code }
    }
}

fn code_of(status: reqwest::StatusCode) -> u8 {
    match status.as_u16() {
        404 => exit::NOT_FOUND,
        401 | 403 => exit::DENIED,
        400 | 409 | 412 | 413 | 422 => exit::REFUSED,
        _ => exit::UNAVAILABLE,
    }
}

/// A cluster to call: its nodes' API URLs, tried in order, and the caller's token.
pub struct Client {
    urls: Vec<String>,
    token: String,
    http: reqwest::Client,
    streaming: reqwest::Client,
}

impl Client {
    /// A client for `urls` (comma-separated base URLs of any nodes) as `token`.
    pub fn new(urls: &str, token: String, timeout: Duration) -> Result<Self, Failure> {
        let urls: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(Failure::new(exit::USAGE, "give at least one node URL with --url"));
        }
        let builder = |timeout: Option<Duration>| {
            let mut b = reqwest::Client::builder().connect_timeout(Duration::from_secs(3));
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            if urls.iter().all(|u| u.starts_with("http://")) {
                // No CA store needed (nor, in a bare container, available).
                b = b.tls_backend_preconfigured(baton_net::tls::plain_http_only());
            }
            b.build().map_err(|e| Failure::new(exit::USAGE, e.to_string()))
        };
        Ok(Self { http: builder(Some(timeout))?, streaming: builder(None)?, urls, token })
    }

    /// The nodes' base URLs, in the order they are tried.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Calls `method path` with an optional JSON body on the first node that answers with a
    /// leader, and returns the JSON of a 2xx (`null` for an empty body).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
        let mut last = Failure::new(exit::UNAVAILABLE, "no node was tried");
        // Every write carries one idempotency key on every attempt, so trying the next node
        // after a timeout cannot apply it twice.
        let key =
            (method != reqwest::Method::GET).then(|| format!("{:032x}", rand::random::<u128>()));
        for base in &self.urls {
            let url = format!("{base}{path}");
            let mut request = self.http.request(method.clone(), &url).bearer_auth(&self.token);
            if let Some(key) = &key {
                request = request.header("idempotency-key", key);
            }
            if let Some(body) = &body {
                request = request.header("content-type", "application/json").body(body.to_string());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = Failure::new(exit::UNAVAILABLE, format!("cannot reach {base}: {e}"));
                    continue;
                }
            };
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let value: Value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            if status.is_success() {
                return Ok(value);
            }
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_owned);
            last = Failure::new(code_of(status), format!("{status}: {message}"));
            // Another node may have a leader (503) or know the outcome (504, retried with the
            // same key); anything else is the cluster's answer.
            if status != reqwest::StatusCode::SERVICE_UNAVAILABLE
                && status != reqwest::StatusCode::GATEWAY_TIMEOUT
            {
                break;
            }
        }
        Err(last)
    }

    /// Opens a long-lived GET (an event stream) on node `base`, with extra headers.
    pub async fn open_stream(
        &self,
        base: &str,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<reqwest::Response, Failure> {
        let mut request = self.streaming.get(format!("{base}{path}")).bearer_auth(&self.token);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::new(exit::UNAVAILABLE, format!("cannot reach {base}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(Failure::new(code_of(status), format!("{status}: {text}")))
    }
}

/// Runs `work` on a fresh single-threaded runtime (client commands are one-shot).
pub fn block_on<T>(work: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::UNAVAILABLE, format!("cannot start the runtime: {e}")))?
        .block_on(work)
}
