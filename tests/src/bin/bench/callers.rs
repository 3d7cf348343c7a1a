//! The simulated callers' connections: keep-alive HTTP/1.1 connections and heartbeat streams
//! (WebSockets), each opened on first use and again after a failure, with the admin token.

use std::sync::Arc;
use std::time::Duration;

use baton_e2e::ADMIN_TOKEN;

use crate::load::Failure;

/// One simulated caller's keep-alive HTTP/1.1 connection, on hyper directly: the load
/// generator shares the two cores with the three nodes, so each request should cost it as
/// little as possible. Reconnects after a failed request.
pub(crate) struct Conn {
    addr: String,
    authorization: String,
    send: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
}

impl Conn {
    fn new(base_url: &str) -> Self {
        Self {
            addr: base_url.trim_start_matches("http://").to_string(),
            authorization: format!("Bearer {ADMIN_TOKEN}"),
            send: None,
        }
    }

    async fn connect(&mut self) -> Option<()> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let (send, connection) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(connection);
        self.send = Some(send);
        Some(())
    }

    /// Sends a request with the admin token: `Ok` if it answered 2xx, else how it failed.
    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&'static str>,
    ) -> Result<(), Failure> {
        if self.send.is_none() && self.connect().await.is_none() {
            return Err("cannot connect".into());
        }
        let Some(send) = self.send.as_mut() else { return Err("cannot connect".into()) };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("authorization", &self.authorization);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let body = http_body_util::Full::new(bytes::Bytes::from_static(
            body.unwrap_or_default().as_bytes(),
        ));
        let request = request.body(body).map_err(|e| format!("bad request: {e}"))?;
        let answered =
            match tokio::time::timeout(Duration::from_secs(10), send.send_request(request)).await {
                Ok(Ok(response)) => {
                    let status = response.status();
                    match http_body_util::BodyExt::collect(response.into_body()).await {
                        Ok(_) if status.is_success() => Ok(()),
                        Ok(_) => Err(format!("HTTP {}", status.as_u16())),
                        Err(_) => Err("connection lost".into()),
                    }
                }
                Ok(Err(_)) => Err("connection lost".into()),
                Err(_) => Err("timeout".into()),
            };
        if answered.as_ref().is_err_and(|f| !f.starts_with("HTTP")) {
            self.send = None;
        }
        answered
    }
}

/// A connection per simulated caller.
pub(crate) fn conns(n: usize, base_url: &str) -> Arc<Vec<tokio::sync::Mutex<Conn>>> {
    conns_over(n, &[base_url.to_string()])
}

/// `n` connections dealt over `base_urls` in turn (client `c` talks to `base_urls[c % len]`).
pub(crate) fn conns_over(n: usize, base_urls: &[String]) -> Arc<Vec<tokio::sync::Mutex<Conn>>> {
    Arc::new(
        (0..n)
            .map(|c| tokio::sync::Mutex::new(Conn::new(&base_urls[c % base_urls.len()])))
            .collect(),
    )
}

/// One simulated caller's heartbeat stream (`GET /heartbeats`, a WebSocket), opened on first
/// use and again after a failure.
pub(crate) struct HeartbeatStream {
    url: String,
    stream: Option<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
}

impl HeartbeatStream {
    async fn open(&mut self) -> Option<()> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = self.url.as_str().into_client_request().ok()?;
        let token = format!("Bearer {ADMIN_TOKEN}").parse().ok()?;
        request.headers_mut().insert("authorization", token);
        // A small read buffer: the default 128 KiB is zeroed before every read.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(8 * 1024);
        let (stream, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await.ok()?;
        self.stream = Some(stream);
        Some(())
    }

    /// Sends one heartbeat and waits for its answer: `Ok` if it was answered with a role, else
    /// how it failed.
    pub(crate) async fn heartbeat(&mut self, message: &str) -> Result<(), Failure> {
        use futures::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        if self.stream.is_none() && self.open().await.is_none() {
            return Err("cannot connect".into());
        }
        let Some(stream) = self.stream.as_mut() else { return Err("cannot connect".into()) };
        let exchange = async {
            stream.send(Message::Text(message.into())).await.ok()?;
            loop {
                match stream.next().await?.ok()? {
                    Message::Text(answer) => return Some(answer),
                    Message::Close(_) => return None,
                    _ => continue,
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(Some(answer)) if answer.as_str().contains(r#""role""#) => Ok(()),
            // A refusal names its kind: `{"id":..,"error":"not_found","message":..}`.
            Ok(Some(answer)) => {
                let refusal = serde_json::from_str::<serde_json::Value>(answer.as_str()).ok();
                let code = refusal.as_ref().and_then(|r| r["error"].as_str()).unwrap_or("?");
                Err(format!("refused: {code}"))
            }
            Ok(None) => {
                self.stream = None;
                Err("stream lost".into())
            }
            Err(_) => {
                self.stream = None;
                Err("timeout".into())
            }
        }
    }
}

/// A heartbeat stream per simulated caller.
pub(crate) fn streams(n: usize, base_url: &str) -> Arc<Vec<tokio::sync::Mutex<HeartbeatStream>>> {
    let url = format!("{}/heartbeats", base_url.replacen("http://", "ws://", 1));
    Arc::new(
        (0..n)
            .map(|_| tokio::sync::Mutex::new(HeartbeatStream { url: url.clone(), stream: None }))
            .collect(),
    )
}

/// POSTs `body` as JSON with `http` (whose default headers carry the token): whether it was
/// answered 2xx.
pub(crate) async fn post(http: &reqwest::Client, url: &str, body: &serde_json::Value) -> bool {
    http.post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
