//! Leader forwarding on framed connections: a node hands the requests only the leader may
//! serve to the leader in batches, and the leader answers each batch in one frame.
//!
//! ```text
//!  callers ─▶ Forwarder::send ─▶ one queue per peer ─▶ batches, BATCHES_IN_FLIGHT at once,
//!                                                       each on a framed connection of its own
//!  peer:  RaftPort ─▶ FORWARD frame ─▶ answer_batch: every request at once, answers in order
//! ```
//!
//! A caller's request leaves at once while fewer than [`BATCHES_IN_FLIGHT`] batches are
//! outstanding; when that many are, what arrives meanwhile waits and leaves together, as one
//! frame, as soon as one answers. So a lone request costs one exchange, and a busy follower
//! sends a few frames a round instead of one request (and one wake-up on each end) per caller.
//! Before this, each forwarded request was an HTTP/2 request of its own: on the 2-core
//! benchmark machine, clients dealt over all three nodes wrote a third less than clients of
//! the leader alone (see BENCHMARKS.md).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use crate::batch::{Batches, send_in_batches};
use crate::client::{CallError, Dialer, Peer, decode_answer};
use crate::frame;

/// Batches outstanding to one peer at once, each on its own connection. The peer answers a
/// batch when its last request is answered, so a request that arrives while a slow batch (a
/// write waiting for its commit) is out leaves in another.
pub const BATCHES_IN_FLIGHT: usize = 8;
/// The most requests in one batch.
pub const MOST_PER_BATCH: usize = 256;
/// The most bytes of requests (postcard-encoded) in one batch, unless its first request alone
/// is larger.
pub const MOST_BYTES_PER_BATCH: usize = 1024 * 1024;

struct Pending<Req, Resp> {
    request: Req,
    size: usize,
    timeout: Duration,
    answer: oneshot::Sender<Result<Resp, CallError>>,
}

/// Sends requests of type `Req` to peers in batches and hands each caller its own answer of
/// type `Resp`. Made by [`crate::RpcClient::forwarder`]; the batching tasks (one per peer
/// addressed) end when it is dropped.
pub struct Forwarder<Req, Resp> {
    dialer: Arc<Dialer>,
    peers: Mutex<BTreeMap<Peer, mpsc::UnboundedSender<Pending<Req, Resp>>>>,
}

impl<Req, Resp> Forwarder<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    pub(crate) fn new(dialer: Arc<Dialer>) -> Self {
        Self { dialer, peers: Mutex::default() }
    }

    /// Sends `request` to `peer` (in a batch with others) and waits for its answer, at most
    /// `timeout` once its batch has left.
    ///
    /// [`CallError::Unreachable`] means no connection could be made, so the peer never saw the
    /// request. Any other error leaves open whether the peer ran it.
    pub async fn send(
        &self,
        peer: &Peer,
        request: Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let stopped = || CallError::Transport {
            addr: peer.addr.clone(),
            source: "the forwarding task stopped".into(),
        };
        let size = postcard::experimental::serialized_size(&request).unwrap_or(0);
        let (answer, answered) = oneshot::channel();
        self.queue(peer).send(Pending { request, size, timeout, answer }).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// The queue of `peer`, and its batching task, made on first use.
    fn queue(&self, peer: &Peer) -> mpsc::UnboundedSender<Pending<Req, Resp>> {
        let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        peers
            .entry(peer.clone())
            .or_insert_with(|| {
                let (queue, queued) = mpsc::unbounded_channel();
                let batches =
                    Batches::new(MOST_PER_BATCH, MOST_BYTES_PER_BATCH, |p: &Pending<Req, Resp>| {
                        p.size
                    });
                let (dialer, peer) = (self.dialer.clone(), peer.clone());
                tokio::spawn(send_in_batches(
                    queued,
                    BATCHES_IN_FLIGHT,
                    batches,
                    move |batch, slot| {
                        tokio::spawn(exchange(dialer.clone(), peer.clone(), batch, slot));
                    },
                ));
                queue
            })
            .clone()
    }
}

/// Sends one batch and gives each caller its answer, or the batch's error.
async fn exchange<Req: Serialize, Resp: DeserializeOwned>(
    dialer: Arc<Dialer>,
    peer: Peer,
    batch: Vec<Pending<Req, Resp>>,
    _slot: OwnedSemaphorePermit,
) {
    let timeout = batch.iter().map(|p| p.timeout).max().unwrap_or_default();
    let (requests, callers): (Vec<Req>, Vec<_>) =
        batch.into_iter().map(|p| (p.request, p.answer)).unzip();
    let request = frame::encode(frame::FORWARD, &requests);
    drop(requests);
    // A batch that outlasts its deadline is abandoned with its connection (out of step).
    let addr = peer.addr.clone();
    let answered = tokio::time::timeout(timeout, dialer.exchange(&peer, &request))
        .await
        .unwrap_or_else(|_| Err(CallError::Timeout { addr: addr.clone(), timeout }));
    let answers = answered.and_then(|answer| decode_answer::<Vec<Resp>>(&addr, answer));
    match answers {
        Ok(answers) if answers.len() == callers.len() => {
            for (caller, answer) in callers.into_iter().zip(answers) {
                // A caller that gave up is not waiting any more.
                let _ = caller.send(Ok(answer));
            }
        }
        Ok(answers) => {
            let reason = format!("{} answers to {} requests", answers.len(), callers.len());
            let e = CallError::Rejected { addr, reason };
            for caller in callers {
                let _ = caller.send(Err(e.duplicate()));
            }
        }
        Err(e) => {
            for caller in callers {
                let _ = caller.send(Err(e.duplicate()));
            }
        }
    }
}

/// Answers a batch of forwarded requests (a FORWARD frame's body): runs `answer` on all of
/// them at once and encodes their answers, in order. For a port's [`crate::Rpcs`].
pub async fn answer_batch<Req, Resp, F, Fut>(body: &[u8], answer: F) -> Result<Vec<u8>, String>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Resp>,
{
    let requests: Vec<Req> =
        postcard::from_bytes(body).map_err(|e| format!("cannot decode the body: {e}"))?;
    let answers = futures::future::join_all(requests.into_iter().map(answer)).await;
    Ok(postcard::to_allocvec(&answers).expect("postcard encodes Baton's RPC types without failing"))
}
