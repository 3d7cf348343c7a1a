//! Serving a router on a TCP listener with the limits a hostile network calls for: a cap on
//! open connections, a deadline for request headers, a cap on header bytes, a deadline for
//! whole requests, and a graceful stop. Each request carries the client's address
//! (`ConnectInfo`) for the audit trail. With a TLS configuration, each connection is a TLS
//! handshake first (bounded by the header deadline), then HTTP.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt as _};

/// Limits on what one client may hold or send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at once; further connections are closed on accept.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Bytes of request line and headers (HTTP/1) or of the header list (HTTP/2).
    pub max_header_bytes: usize,
    /// How long a whole request, body included, may take before it is answered 408.
    pub request_timeout: Duration,
    /// How long a graceful stop waits for open requests.
    pub drain: Duration,
}

/// Serves `service` on `listener` (over TLS when `tls` is given) until `stop` resolves, then
/// stops accepting and waits (up to [`Limits::drain`]) for open connections.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
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
    let graceful = GracefulShutdown::new();
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, max = limits.max_connections, "connection limit reached; closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let timeout = limits.request_timeout;
        let hyper_service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(addr));
                let service = service.clone();
                async move {
                    let request = request.map(axum::body::Body::new);
                    let answer = tokio::time::timeout(timeout, service.oneshot(request)).await;
                    Ok::<_, Infallible>(match answer {
                        Ok(Ok(response)) => response,
                        Ok(Err(never)) => match never {},
                        Err(_) => request_timeout(),
                    })
                }
            },
        );
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let handshake = limits.header_read_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%addr, "TLS handshake timed out");
                                return;
                            }
                        };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("open connections did not finish in time; closing them");
    }
}

fn request_timeout() -> Response {
    (axum::http::StatusCode::REQUEST_TIMEOUT, "the request took too long\n").into_response()
}
