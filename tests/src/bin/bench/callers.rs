//! The simulated callers' connections: keep-alive HTTP/1.1 connections and heartbeat streams
//! (WebSockets), each opened on first use and again after a failure, with the admin token.

use std::sync::Arc;
use std::time::Duration;

use baton_e2e::ADMIN_TOKEN;

use crate::load::Failure;

/// One simulated caller's keep-alive HTTP/1.1 connection, spoken directly on the socket: the
/// load generator shares the two cores with the three nodes, so each request should cost it as
/// little as possible. A request is written with one `write` and its answer read in the same
/// task (hyper's client hands each request to a connection task and the answer back); the
/// answer's head is parsed with `httparse` and its body, sized by `Content-Length`, read
/// whole. Reconnects after a failed request.
pub(crate) struct Conn {
    addr: String,
    authorization: String,
    stream: Option<tokio::net::TcpStream>,
    /// The request being written, then its answer being read (kept from request to request).
    buf: Vec<u8>,
}

/// The most an answer's head may take.
const MAX_HEAD: usize = 16 * 1024;

impl Conn {
    fn new(base_url: &str) -> Self {
        Self {
            addr: base_url.trim_start_matches("http://").to_string(),
            authorization: format!("Bearer {ADMIN_TOKEN}"),
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends a request with the admin token: `Ok` if it answered 2xx, else how it failed.
    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&'static str>,
    ) -> Result<(), Failure> {
        if self.stream.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|_| Failure::from("cannot connect"))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let exchange = self.exchange(method, path, body.unwrap_or_default());
        let answered = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| Err("timeout".into()));
        match answered {
            Ok(Answer { status, keep_alive }) => {
                if !keep_alive {
                    self.stream = None;
                }
                if (200..300).contains(&status) { Ok(()) } else { Err(format!("HTTP {status}")) }
            }
            // The connection is in an unknown state: a new one for the next request.
            Err(failure) => {
                self.stream = None;
                Err(failure)
            }
        }
    }

    /// Writes one request and reads its whole answer.
    async fn exchange(&mut self, method: &str, path: &str, body: &str) -> Result<Answer, Failure> {
        use std::io::Write as _;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let lost = |_| Failure::from("connection lost");
        let Some(stream) = self.stream.as_mut() else { return Err("cannot connect".into()) };
        let buf = &mut self.buf;
        buf.clear();
        let (addr, authorization) = (&self.addr, &self.authorization);
        let _ = write!(buf, "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n");
        let _ = write!(buf, "authorization: {authorization}\r\ncontent-length: {}\r\n", body.len());
        if !body.is_empty() {
            buf.extend_from_slice(b"content-type: application/json\r\n");
        }
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(body.as_bytes());
        stream.write_all(buf).await.map_err(lost)?;
        buf.clear();
        let (answer, whole) = loop {
            if stream.read_buf(buf).await.map_err(lost)? == 0 {
                return Err("connection lost".into());
            }
            if let Some(head) = Answer::parse(buf)? {
                break head;
            }
            if buf.len() >= MAX_HEAD {
                return Err("answer head too long".into());
            }
        };
        while buf.len() < whole {
            if stream.read_buf(buf).await.map_err(lost)? == 0 {
                return Err("connection lost".into());
            }
        }
        // One request is in flight at a time: nothing may follow its answer.
        if buf.len() > whole {
            return Err("bytes after the answer".into());
        }
        Ok(answer)
    }
}

/// What the load needs of an answer.
struct Answer {
    status: u16,
    /// Whether the server keeps the connection open after it.
    keep_alive: bool,
}

impl Answer {
    /// The answer whose head `buf` starts with, and the length of the whole answer (head and
    /// body); `None` while the head is incomplete.
    fn parse(buf: &[u8]) -> Result<Option<(Answer, usize)>, Failure> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("bad answer: {e}")),
        };
        let header = |name: &str| head.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name));
        // The API answers every request with a sized body.
        if header("transfer-encoding").is_some() {
            return Err("chunked answer".into());
        }
        let body_len = match header("content-length") {
            None => 0,
            Some(h) => std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| Failure::from("bad content-length"))?,
        };
        let keep_alive =
            header("connection").is_none_or(|h| !h.value.eq_ignore_ascii_case(b"close"));
        let status = head.code.unwrap_or(0);
        Ok(Some((Answer { status, keep_alive }, head_len + body_len)))
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
