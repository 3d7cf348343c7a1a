//! Serving a router on a TCP listener with the limits a hostile network calls for: a cap on
//! open connections, a deadline for request headers, a cap on header bytes, a deadline for
//! whole requests, an idle deadline for connections of either HTTP version, and a graceful
//! stop. Each request carries the client's address
//! (`ConnectInfo`) for the audit trail. With a TLS configuration, each connection is a TLS
//! handshake first (bounded by the header deadline), then HTTP. On the Raft port, a connection
//! that opens with `baton_net::PREFACE` carries framed Raft RPCs instead and is handed to the
//! node's Raft port (`port.rs`); there, connections from the members' addresses have slots of
//! their own (`members.rs`), and opening and proving the cluster secret must each be over
//! within [`RAFT_HANDSHAKE`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use baton_net::{AsyncIo, PREFACE};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::{Service, ServiceExt as _};

use crate::members::{MEMBER_SLOTS, Members};

/// Limits on what one client may hold or send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at once; further connections are closed on accept.
    pub max_connections: usize,
    /// Open connections at once from one IP address, so that one host cannot take every
    /// slot; its further connections are closed on accept.
    pub max_connections_per_address: usize,
    /// How long a client may take to send a request's headers; also how long a connection,
    /// of either HTTP version, may sit with no request open (from when it was opened or its
    /// last answer was sent) before it is closed. A connection that never sends a whole
    /// request (silent, or an HTTP/2 header block never finished) is closed after it too.
    pub header_read_timeout: Duration,
    /// Bytes of request line and headers (HTTP/1) or of the header list (HTTP/2).
    pub max_header_bytes: usize,
    /// How long a whole request, body included, may take before it is answered 408.
    pub request_timeout: Duration,
    /// How long a graceful stop waits for open requests.
    pub drain: Duration,
}

/// What the Raft listener serves besides HTTP: framed connections, on `port`, with
/// [`MEMBER_SLOTS`] more connections kept for the addresses of `members`, and a handshake that
/// must be over within [`RAFT_HANDSHAKE`].
pub struct Framed {
    /// Answers framed connections.
    pub port: Arc<crate::port::Port>,
    /// The members' addresses.
    pub members: Members,
}

/// How long a connection to the Raft port may take to open (TLS, then the preface) and then
/// to prove the cluster secret, each; members do it in well under a millisecond. Shorter than
/// the header deadline, so that hosts that are not members hold a slot as briefly as may be.
pub const RAFT_HANDSHAKE: Duration = Duration::from_secs(1);

/// Serves `service` on `listener` (over TLS when `tls` is given) until `stop` resolves; then
/// stops accepting, ends framed connections between two requests, asks HTTP connections to
/// close, and waits (up to [`Limits::drain`]) for every connection to end. With `framed` (the
/// Raft port) it serves framed Raft RPCs instead, and closes any connection that does not open
/// with `baton_net::PREFACE`: `service` is never reached there.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    framed: Option<Framed>,
    stop: impl Future<Output = ()>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(20)));
    let builder = Arc::new(builder);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let member_slots = Arc::new(Semaphore::new(MEMBER_SLOTS));
    let per_address = PerAddress::default();
    let (mut over_address_cap, mut over_cap) = (RefusalLog::default(), RefusalLog::default());
    let (raft, members) = match framed {
        Some(Framed { port, members }) => (Some(port), Some(members)),
        None => (None, None),
    };
    let (closing, closed) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(held) = per_address.take(addr.ip(), limits.max_connections_per_address) else {
            if let Some(unlogged) = over_address_cap.log(Instant::now()) {
                tracing::warn!(%addr, max = limits.max_connections_per_address, unlogged, "connection limit of one address reached; closing a new connection");
            }
            drop(stream);
            continue;
        };
        let member = members.as_ref().is_some_and(|m| m.contains(addr.ip()));
        let slot = match member {
            true => member_slots
                .clone()
                .try_acquire_owned()
                .or_else(|_| slots.clone().try_acquire_owned()),
            false => slots.clone().try_acquire_owned(),
        };
        let Ok(slot) = slot else {
            if let Some(unlogged) = over_cap.log(Instant::now()) {
                tracing::warn!(%addr, max = limits.max_connections, member, unlogged, "connection limit reached; closing a new connection");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The connection's place in the caps: held by its task, and lent to each request, so
        // that a WebSocket upgraded from it keeps the place while it runs.
        let place: Arc<dyn std::any::Any + Send + Sync> = Arc::new((slot, held));
        let lent = baton_api::streams::ConnectionPlace(place.clone());
        let service = service.clone();
        let timeout = limits.request_timeout;
        let activity = Arc::new(Activity::new());
        let counted = activity.clone();
        let hyper_service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                let open = counted.begin();
                request.extensions_mut().insert(ConnectInfo(addr));
                request.extensions_mut().insert(lent.clone());
                let service = service.clone();
                async move {
                    let request = request.map(axum::body::Body::new);
                    let answer = tokio::time::timeout(timeout, service.oneshot(request)).await;
                    let response = match answer {
                        Ok(Ok(response)) => response,
                        Ok(Err(never)) => match never {},
                        Err(_) => request_timeout(),
                    };
                    Ok::<_, Infallible>(
                        response.map(|body| axum::body::Body::new(Counted { body, open })),
                    )
                }
            },
        );
        let builder = builder.clone();
        let tls = tls.clone();
        let raft = raft.clone();
        let mut closed = closed.clone();
        let header_deadline = limits.header_read_timeout;
        let handshake = match raft {
            Some(_) => header_deadline.min(RAFT_HANDSHAKE),
            None => header_deadline,
        };
        let drain = limits.drain;
        let stall = STALL.max(limits.request_timeout);
        tokio::spawn(async move {
            let _place = place;
            let io: Box<dyn AsyncIo> = match tls {
                None => Box::new(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => Box::new(stream),
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let opening = match &raft {
                Some(_) => opening(io, handshake).await,
                None => Opening::Http(Rewind { first: Vec::new(), at: 0, io }),
            };
            match (opening, raft) {
                (Opening::Framed(io), Some(raft)) => {
                    let stop = async move {
                        let _ = closed.wait_for(|closed| *closed).await;
                    };
                    raft.serve(io, addr, stop).await;
                }
                (Opening::Http(_), Some(_)) => {
                    tracing::debug!(%addr, "closed a connection to the Raft port that is not framed");
                }
                (Opening::Http(io), None) => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
                    tokio::pin!(connection);
                    // Closing is polite (HTTP/2's GOAWAY, and the ping it waits on), but
                    // bounded: a stopping listener allows its drain; an idle connection as
                    // long again as it sat idle.
                    let (ending, grace) = tokio::select! {
                        _ = connection.as_mut() => return,
                        _ = closed.wait_for(|closed| *closed) => ("the listener is stopping", drain),
                        why = activity.idle_past(header_deadline, stall) => {
                            (why, header_deadline.min(drain))
                        }
                    };
                    tracing::debug!(%addr, "closing a connection: {ending}");
                    connection.as_mut().graceful_shutdown();
                    if tokio::time::timeout(grace, connection).await.is_err() {
                        tracing::debug!(%addr, "a closing connection did not finish in time");
                    }
                }
                (Opening::Framed(_) | Opening::Silent, _) => {}
            }
        });
    }
    let _ = closing.send(true);
    drop(listener);
    // Every connection holds a slot until it ends; each ends within `drain` of the signal.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let members_all = u32::try_from(MEMBER_SLOTS).unwrap_or(u32::MAX);
    let ended =
        async { (slots.acquire_many(all).await, member_slots.acquire_many(members_all).await) };
    if tokio::time::timeout(limits.drain, ended).await.is_err() {
        tracing::warn!("open connections did not finish in time; closing them");
    }
}

fn request_timeout() -> Response {
    (axum::http::StatusCode::REQUEST_TIMEOUT, "the request took too long\n").into_response()
}

/// How a connection opens.
enum Opening {
    /// With [`PREFACE`]: framed Raft RPCs follow (the preface itself is consumed).
    Framed(Box<dyn AsyncIo>),
    /// With anything else: HTTP, replayed from its first byte.
    Http(Rewind),
    /// With nothing before the deadline, or closed.
    Silent,
}

/// Reads the first bytes of a connection, as many as [`PREFACE`] has, within `deadline`
/// (every HTTP request, of either version, is longer than that).
async fn opening(mut io: Box<dyn AsyncIo>, deadline: Duration) -> Opening {
    let mut first = vec![0u8; PREFACE.len()];
    let mut read = 0;
    let started = tokio::time::timeout(deadline, async {
        while read < first.len() {
            match io.read(&mut first[read..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
    first.truncate(read);
    if first == PREFACE {
        Opening::Framed(io)
    } else if started.is_err() && read == 0 {
        Opening::Silent
    } else {
        // A short or late start is still HTTP's to answer (or time out) in its own way.
        Opening::Http(Rewind { first, at: 0, io })
    }
}

/// A connection whose first bytes were already read, handed to HTTP with them put back.
struct Rewind {
    first: Vec<u8>,
    at: usize,
    io: Box<dyn AsyncIo>,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.first.len() {
            let n = buf.remaining().min(this.first.len() - this.at);
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Open connections by client address. Each connection holds a [`Held`] for its address; the
/// count goes when the last is dropped, so the map holds only addresses with open connections.
#[derive(Clone, Default)]
struct PerAddress(Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>);

/// One connection's place in its address's count.
struct Held {
    counts: PerAddress,
    ip: IpAddr,
}

impl PerAddress {
    /// A place for one more connection from `ip`, if it has fewer than `max` open.
    fn take(&self, ip: IpAddr, max: usize) -> Option<Held> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let open = counts.entry(ip).or_default();
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(Held { counts: self.clone(), ip })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = counts.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// How long a request may go without progress (its answer sending something) before its
/// connection is closed, at least: a client that stops reading (or an HTTP/2 client that never
/// opens its flow-control window) would otherwise keep its request, and its connection, open
/// for ever. An event stream sends a keep-alive well within it; a request still being handled
/// is given [`Limits::request_timeout`] if that is longer.
pub const STALL: Duration = Duration::from_secs(60);

/// What one HTTP connection is doing: its open requests (from their headers until their
/// answer's body is sent or dropped), each with when it last made progress (began, or sent
/// part of its answer), and since when none has been open.
struct Activity {
    state: std::sync::Mutex<Doing>,
}

struct Doing {
    open: BTreeMap<u64, tokio::time::Instant>,
    next: u64,
    since: tokio::time::Instant,
}

/// One open request's place in its connection's [`Activity`].
struct Open {
    activity: Arc<Activity>,
    id: u64,
}

impl Activity {
    fn new() -> Self {
        let now = tokio::time::Instant::now();
        Self { state: std::sync::Mutex::new(Doing { open: BTreeMap::new(), next: 0, since: now }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Doing> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn begin(self: &Arc<Self>) -> Open {
        let mut state = self.state();
        let id = state.next;
        state.next += 1;
        state.open.insert(id, tokio::time::Instant::now());
        Open { activity: self.clone(), id }
    }

    /// Resolves once the connection has had no request open for `limit`, or one of its open
    /// requests has made no progress for `stall`; says which.
    async fn idle_past(&self, limit: Duration, stall: Duration) -> &'static str {
        loop {
            let wake = {
                let state = self.state();
                let now = tokio::time::Instant::now();
                let deadline = match state.open.values().min() {
                    None => state.since + limit,
                    Some(oldest_progress) => *oldest_progress + stall,
                };
                if now >= deadline {
                    return match state.open.is_empty() {
                        true => "it sat with no request open",
                        false => "an answer made no progress",
                    };
                }
                deadline
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

impl Open {
    fn progressed(&self) {
        if let Some(at) = self.activity.state().open.get_mut(&self.id) {
            *at = tokio::time::Instant::now();
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut state = self.activity.state();
        state.open.remove(&self.id);
        state.since = tokio::time::Instant::now();
    }
}

/// A response body that keeps its request open in the connection's [`Activity`] until it is
/// sent or dropped (an event stream is an open request for as long as it runs).
struct Counted {
    body: axum::body::Body,
    open: Open,
}

impl hyper::body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.open.progressed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How often a refused connection is logged at most: a flood of refused connections must not
/// become a flood of log lines (a disk filled with them would outlast the attack).
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// Which refusals of one kind are logged: the first, then at most one per
/// [`REFUSAL_LOG_EVERY`], each saying how many went unlogged since the last.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    /// `Some(refusals unlogged before this one)` when this refusal, at `now`, is to be logged.
    fn log(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + REFUSAL_LOG_EVERY) {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(40);
    const SHORT_STALL: Duration = Duration::from_millis(80);

    async fn idle_within(activity: &Activity, within: Duration) -> Option<&'static str> {
        tokio::time::timeout(within, activity.idle_past(LIMIT, SHORT_STALL)).await.ok()
    }

    /// A flood of a thousand refused connections in one second is one log line, and the next
    /// line, a second later, says how many went unlogged.
    #[test]
    fn a_flood_of_refused_connections_is_logged_once_a_second() {
        let (mut log, t0) = (RefusalLog::default(), Instant::now());
        let logged: Vec<u64> =
            (0..1_000).filter_map(|i| log.log(t0 + REFUSAL_LOG_EVERY * i / 1_000)).collect();
        assert_eq!(logged, [0], "the first only");
        assert_eq!(log.log(t0 + REFUSAL_LOG_EVERY), Some(999));
        assert_eq!(log.log(t0 + REFUSAL_LOG_EVERY * 3), Some(0));
    }

    #[tokio::test]
    async fn a_connection_with_no_request_open_is_idle_once_the_limit_has_passed() {
        let activity = Arc::new(Activity::new());
        let open = activity.begin();
        assert_eq!(idle_within(&activity, LIMIT / 2).await, None, "a request is open");
        drop(open);
        assert_eq!(idle_within(&activity, LIMIT / 2).await, None, "not yet");
        let why = idle_within(&activity, LIMIT * 4).await;
        assert_eq!(why, Some("it sat with no request open"));
    }

    #[tokio::test]
    async fn an_answer_that_makes_no_progress_stalls_its_connection_and_one_that_does_not() {
        let activity = Arc::new(Activity::new());
        let open = activity.begin();
        for _ in 0..4 {
            tokio::time::sleep(SHORT_STALL / 2).await;
            open.progressed();
            assert_eq!(idle_within(&activity, Duration::ZERO).await, None, "progressing");
        }
        let why = idle_within(&activity, SHORT_STALL * 4).await;
        assert_eq!(why, Some("an answer made no progress"));
    }

    #[tokio::test]
    async fn one_stalled_answer_stalls_its_connection_whatever_the_others_do() {
        let activity = Arc::new(Activity::new());
        let _stalled = activity.begin();
        let lively = activity.begin();
        for _ in 0..4 {
            tokio::time::sleep(SHORT_STALL / 3).await;
            lively.progressed();
            let _another = activity.begin();
        }
        assert_eq!(
            idle_within(&activity, Duration::ZERO).await,
            Some("an answer made no progress")
        );
    }
}
