//! Leader forwarding over real loopback sockets: a `Forwarder` on one side, a `RaftPort`
//! answering FORWARD batches with `answer_batch` on the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_net::{BATCHES_IN_FLIGHT, CallError, FORWARD, PREFACE, Peer, RaftPort, RpcClient, Rpcs};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

const SECRET: &str = "a-cluster-secret-of-some-length";
const DEADLINE: Duration = Duration::from_secs(5);

/// Answers each forwarded number with its double, after `delay`; counts the frames and the
/// requests it was sent.
struct Doubler {
    delay: Duration,
    frames: AtomicUsize,
    requests: AtomicUsize,
}

impl Rpcs for Doubler {
    async fn answer(&self, kind: u8, body: Vec<u8>) -> Result<Vec<u8>, String> {
        if kind != FORWARD {
            return Err(format!("unexpected kind {kind}"));
        }
        self.frames.fetch_add(1, Ordering::SeqCst);
        baton_net::answer_batch(&body, |n: u64| async move {
            self.requests.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            n * 2
        })
        .await
    }
}

/// A leader's Raft port on loopback. Sending `true` on the returned channel ends every open
/// connection between two requests, as a port does when its node stops; the port keeps
/// accepting new ones. The counter counts connections that ended.
async fn leader(delay: Duration) -> (Peer, Arc<Doubler>, watch::Sender<bool>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = Peer { id: 1, addr: listener.local_addr().expect("addr").to_string() };
    let doubler =
        Arc::new(Doubler { delay, frames: AtomicUsize::new(0), requests: AtomicUsize::new(0) });
    let port = Arc::new(RaftPort::new(doubler.clone(), 1, &[SECRET.into()], DEADLINE));
    let (close, closing) = watch::channel(false);
    let ended = Arc::new(AtomicUsize::new(0));
    let (serving, counted) = (port.clone(), ended.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, from)) = listener.accept().await {
            let (port, counted, mut closing) = (serving.clone(), counted.clone(), closing.clone());
            tokio::spawn(async move {
                let mut first = vec![0u8; PREFACE.len()];
                if stream.read_exact(&mut first).await.is_ok() && first == PREFACE {
                    let stop = async move {
                        let _ = closing.wait_for(|closed| *closed).await;
                    };
                    port.serve(stream, from, stop).await;
                }
                counted.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, doubler, close, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_together_share_frames_and_each_caller_gets_its_own_answer() {
    let (addr, port, _close, _) = leader(Duration::from_millis(50)).await;
    let forwarder = Arc::new(RpcClient::new(SECRET, None, None).forwarder::<u64, u64>());
    let callers: Vec<_> = (0..200u64)
        .map(|n| {
            let (forwarder, addr) = (forwarder.clone(), addr.clone());
            tokio::spawn(async move { (n, forwarder.send(&addr, n, DEADLINE).await) })
        })
        .collect();
    for caller in callers {
        let (n, answer) = caller.await.expect("joined");
        assert_eq!(answer.expect("answered"), n * 2, "request {n}");
    }
    let (frames, requests) = (port_frames(&port), port_requests(&port));
    assert_eq!(requests, 200, "each request sent once");
    // At most BATCHES_IN_FLIGHT frames leave before the first answer; everything queued
    // behind them leaves in the next few.
    assert!(frames <= 3 * BATCHES_IN_FLIGHT, "200 requests in {frames} frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_leaves_at_once() {
    let (addr, port, _close, _) = leader(Duration::ZERO).await;
    let forwarder = RpcClient::new(SECRET, None, None).forwarder::<u64, u64>();
    for n in 0..20u64 {
        assert_eq!(forwarder.send(&addr, n, DEADLINE).await.expect("answered"), n * 2);
    }
    assert_eq!(port_frames(&port), 20, "one frame each, none waiting for company");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_leader_closed_while_idle_is_not_used_again() {
    let (addr, port, close, ended) = leader(Duration::ZERO).await;
    let forwarder = RpcClient::new(SECRET, None, None).forwarder::<u64, u64>();
    assert_eq!(forwarder.send(&addr, 1, DEADLINE).await.expect("answered"), 2);
    // The leader ends its connections (the one now pooled on this side) and keeps listening.
    close.send(true).expect("the port listens");
    let closed = tokio::time::timeout(DEADLINE, async {
        while ended.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    closed.await.expect("the connection ended");
    close.send(false).expect("the port listens");
    // Sending on the closed connection would fail after the request was written, leaving its
    // outcome unknown; a new connection carries it instead.
    assert_eq!(forwarder.send(&addr, 2, DEADLINE).await.expect("answered"), 4);
    assert_eq!(port_requests(&port), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_port_nobody_listens_on_is_unreachable_and_never_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = Peer { id: 1, addr: listener.local_addr().expect("addr").to_string() };
    drop(listener);
    let forwarder = RpcClient::new(SECRET, None, None).forwarder::<u64, u64>();
    let err = forwarder.send(&addr, 1, DEADLINE).await.expect_err("nobody listens");
    assert!(matches!(err, CallError::Unreachable { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_outlasts_its_deadline_fails_each_of_its_callers_with_a_timeout() {
    let (addr, _port, _close, _) = leader(Duration::from_millis(500)).await;
    let forwarder = Arc::new(RpcClient::new(SECRET, None, None).forwarder::<u64, u64>());
    let short = Duration::from_millis(100);
    let callers: Vec<_> = (0..3u64)
        .map(|n| {
            let (forwarder, addr) = (forwarder.clone(), addr.clone());
            tokio::spawn(async move { forwarder.send(&addr, n, short).await })
        })
        .collect();
    for caller in callers {
        let err = caller.await.expect("joined").expect_err("too slow");
        assert!(matches!(err, CallError::Timeout { .. }), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cluster_secret_is_rejected_before_anything_is_sent() {
    let (addr, port, _close, _) = leader(Duration::ZERO).await;
    let forwarder = RpcClient::new("not-the-secret", None, None).forwarder::<u64, u64>();
    let err = forwarder.send(&addr, 1, DEADLINE).await.expect_err("refused");
    // Nothing was sent, so the request may go elsewhere.
    assert!(matches!(err, CallError::Unreachable { .. }), "{err}");
    assert_eq!(port_requests(&port), 0);
}

fn port_frames(doubler: &Doubler) -> usize {
    doubler.frames.load(Ordering::SeqCst)
}

fn port_requests(doubler: &Doubler) -> usize {
    doubler.requests.load(Ordering::SeqCst)
}
