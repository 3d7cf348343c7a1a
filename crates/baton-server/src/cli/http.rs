//! How client commands call a cluster: any of the given nodes (a node that cannot be reached or
//! has no leader is passed over for the next; while the cluster is between leaders, the nodes are
//! tried again until the deadline), a bearer token, a deadline, and an exit code for every way a
//! call can fail.

use std::time::{Duration, Instant};

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

/// The first pause before going round the nodes again; each pause doubles, up to
/// [`LONGEST_PAUSE`]. An election takes a few hundred milliseconds.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// A cluster to call: its nodes' API URLs, tried in order, and the caller's token.
pub struct Client {
    urls: Vec<String>,
    token: String,
    timeout: Duration,
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
        Ok(Self { http: builder(Some(timeout))?, streaming: builder(None)?, urls, token, timeout })
    }

    /// The nodes' base URLs, in the order they are tried.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Calls `method path` with an optional JSON body on the first node that answers with a
    /// leader, and returns the JSON of a 2xx (`null` for an empty body).
    ///
    /// A cluster between leaders answers 503 (no leader yet) or 504 (a write's outcome is not
    /// known yet): while some node answers so, the nodes are tried again after a pause, until
    /// the client's timeout has passed. Every attempt of a write carries the same idempotency
    /// key, so a write is applied at most once however often it is sent. When no node can be
    /// reached at all, the call fails at once. Nothing, a node that accepts connections but
    /// never answers included, makes the call last longer than the client's timeout.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
        let key =
            (method != reqwest::Method::GET).then(|| format!("{:032x}", rand::random::<u128>()));
        let give_up = Instant::now() + self.timeout;
        let mut pause = FIRST_PAUSE;
        // Each request may take the whole timeout, and a round asks every node in turn: the
        // round is cut off where the call's time ends.
        let mut last: Option<Failure> = None;
        loop {
            let round = self.round(&method, path, body.as_ref(), key.as_deref());
            let round = match tokio::time::timeout_at(give_up.into(), round).await {
                Ok(round) => round,
                Err(_) => {
                    return Err(last.unwrap_or_else(|| {
                        let waited = self.timeout.as_secs_f64();
                        Failure::new(exit::UNAVAILABLE, format!("no answer within {waited} s"))
                    }));
                }
            };
            let failure = match round {
                Round::Answered(result) => return result,
                Round::Unreachable(failure) => return Err(failure),
                Round::BetweenLeaders(failure) => failure,
            };
            if Instant::now() + pause >= give_up {
                return Err(failure);
            }
            last = Some(failure);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }

    /// Tries each node once, in order.
    async fn round(
        &self,
        method: &reqwest::Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Round {
        let mut last = Failure::new(exit::UNAVAILABLE, "no node was tried");
        // A node's 503 or 504 says more than another node's silence.
        let mut between_leaders: Option<Failure> = None;
        for base in &self.urls {
            let url = format!("{base}{path}");
            let mut request = self.http.request(method.clone(), &url).bearer_auth(&self.token);
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            if let Some(body) = body {
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
                return Round::Answered(Ok(value));
            }
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_owned);
            let failure = Failure::new(code_of(status), format!("{status}: {message}"));
            // Another node may have a leader (503) or know the outcome (504, retried with the
            // same key); anything else is the cluster's answer.
            if status != reqwest::StatusCode::SERVICE_UNAVAILABLE
                && status != reqwest::StatusCode::GATEWAY_TIMEOUT
            {
                return Round::Answered(Err(failure));
            }
            between_leaders = Some(failure);
        }
        match between_leaders {
            Some(failure) => Round::BetweenLeaders(failure),
            None => Round::Unreachable(last),
        }
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

/// How one round over the nodes ended.
enum Round {
    /// A node answered for the cluster: success, or a refusal that asking again will not change.
    Answered(Result<Value, Failure>),
    /// Some node answered 503 or 504: worth asking again shortly.
    BetweenLeaders(Failure),
    /// No node could be reached.
    Unreachable(Failure),
}

/// Runs `work` on a fresh single-threaded runtime (client commands are one-shot).
pub fn block_on<T>(work: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::UNAVAILABLE, format!("cannot start the runtime: {e}")))?
        .block_on(work)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    use super::*;

    /// A node that answers `script` in turn (then 200), recording each idempotency key.
    async fn scripted_node(script: Vec<StatusCode>) -> (String, Arc<Mutex<Vec<String>>>) {
        let keys = Arc::new(Mutex::new(Vec::new()));
        let seen = keys.clone();
        let app = axum::Router::new().route(
            "/write",
            post(move |headers: HeaderMap| {
                let seen = seen.clone();
                let script = script.clone();
                async move {
                    let mut seen = seen.lock().expect("not poisoned");
                    let key = headers.get("idempotency-key").and_then(|k| k.to_str().ok());
                    seen.push(key.unwrap_or_default().to_string());
                    let status = script.get(seen.len() - 1).copied().unwrap_or(StatusCode::OK);
                    (status, r#"{"message":"scripted"}"#)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (url, keys)
    }

    fn client(urls: &str, timeout: Duration) -> Client {
        Client::new(urls, "baton_t.00".into(), timeout).expect("client")
    }

    /// The failure of a call that must fail.
    async fn failure(urls: &str, timeout: Duration, method: &str, path: &str) -> Failure {
        client(urls, timeout).call(method, path, None).await.expect_err("the call fails")
    }

    #[tokio::test]
    async fn a_write_during_an_election_is_sent_again_with_its_key_until_a_leader_answers() {
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        let (url, keys) =
            scripted_node(vec![unavailable, StatusCode::GATEWAY_TIMEOUT, unavailable]).await;
        let answer = client(&url, Duration::from_secs(5)).call("POST", "/write", None).await;
        assert_eq!(answer.expect("written")["message"], "scripted");
        let keys = keys.lock().expect("not poisoned").clone();
        assert_eq!(keys.len(), 4, "three refusals, then the answer");
        assert!(keys.iter().all(|k| k.len() == 32 && *k == keys[0]), "{keys:?}");
    }

    #[tokio::test]
    async fn a_cluster_without_a_leader_fails_with_its_503_once_the_timeout_has_passed() {
        let (url, keys) = scripted_node(vec![StatusCode::SERVICE_UNAVAILABLE; 1_000]).await;
        let started = Instant::now();
        let failure = failure(&url, Duration::from_secs(1), "POST", "/write").await;
        assert_eq!(failure.code, exit::UNAVAILABLE);
        assert!(failure.message.contains("503"), "{}", failure.message);
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert!(keys.lock().expect("not poisoned").len() >= 3, "asked again meanwhile");
    }

    #[tokio::test]
    async fn a_refusal_is_the_clusters_answer_and_is_not_sent_again() {
        let (url, keys) = scripted_node(vec![StatusCode::CONFLICT]).await;
        let failure = failure(&url, Duration::from_secs(5), "POST", "/write").await;
        assert_eq!(failure.code, exit::REFUSED);
        assert_eq!(keys.lock().expect("not poisoned").len(), 1);
    }

    #[tokio::test]
    async fn nodes_that_accept_but_never_answer_fail_the_call_within_its_timeout() {
        // Two nodes whose connections are accepted (by the kernel's backlog) and never read.
        let silent = [
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
        ];
        let urls: Vec<String> =
            silent.iter().map(|l| format!("http://{}", l.local_addr().expect("addr"))).collect();
        let started = Instant::now();
        let failure = failure(&urls.join(","), Duration::from_secs(1), "POST", "/write").await;
        let took = started.elapsed();
        assert_eq!(failure.code, exit::UNAVAILABLE);
        // Each node alone would have taken the whole second.
        assert!(took < Duration::from_millis(1_500), "{took:?}: {}", failure.message);
        assert!(took >= Duration::from_millis(900), "{took:?}: waited for an answer");
    }

    #[tokio::test]
    async fn nodes_that_cannot_be_reached_fail_at_once_instead_of_waiting_out_the_timeout() {
        let started = Instant::now();
        let unreachable = "http://127.0.0.1:1,http://127.0.0.1:2";
        let failure = failure(unreachable, Duration::from_secs(30), "GET", "/cluster/status").await;
        assert_eq!(failure.code, exit::UNAVAILABLE);
        assert!(failure.message.contains("cannot reach"), "{}", failure.message);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
