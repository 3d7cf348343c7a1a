//! The server side: the Raft RPCs and forwarded requests on framed connections
//! ([`RaftPort`]), each proven by the cluster-secret handshake first.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_raft::typ::{AppendEntriesRequest, InstallSnapshotRequest, Raft, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::BufReader;
use tokio::time::Instant;

use crate::frame::{self, AsyncIo};
use crate::handshake::{self, Failed};

/// Largest internal request body: a batch of log entries or one snapshot chunk.
pub const MAX_RPC_BODY: usize = 64 * 1024 * 1024;

/// What answers the requests of a framed connection: openraft, or a stand-in in tests.
pub trait Rpcs: Send + Sync + 'static {
    /// Answers a request of `kind` (a `frame` kind) with its postcard-encoded body, or says why
    /// it cannot.
    fn answer(
        &self,
        kind: u8,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, String>> + Send;
}

impl Rpcs for Raft {
    async fn answer(&self, kind: u8, body: Vec<u8>) -> Result<Vec<u8>, String> {
        fn decoded<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
            postcard::from_bytes(body).map_err(|e| format!("cannot decode the body: {e}"))
        }
        let encoded = match kind {
            frame::APPEND => {
                encode(&self.append_entries(decoded::<AppendEntriesRequest>(&body)?).await)
            }
            frame::VOTE => encode(&self.vote(decoded::<VoteRequest>(&body)?).await),
            frame::SNAPSHOT => {
                encode(&self.install_snapshot(decoded::<InstallSnapshotRequest>(&body)?).await)
            }
            other => return Err(format!("unknown request kind {other}")),
        };
        Ok(encoded)
    }
}

/// A shared `Rpcs` answers as the one it shares (a test keeps a handle to its stand-in).
impl<R: Rpcs> Rpcs for Arc<R> {
    fn answer(
        &self,
        kind: u8,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, String>> + Send {
        R::answer(self, kind, body)
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encodes Baton's RPC types without failing")
}

/// Serves Raft RPCs on framed connections (see `frame.rs`): the peer presents the cluster
/// secret once per connection (`handshake.rs`), then sends requests one at a time, each answered in turn by
/// the connection's own task, straight from openraft.
pub struct RaftPort<R> {
    rpcs: R,
    id: u64,
    secrets: Vec<Vec<u8>>,
    handshake: Duration,
    last_append: Mutex<Instant>,
}

impl<R: Rpcs> RaftPort<R> {
    /// Node `id`'s port, answering with `rpcs`, for peers that mean to reach `id` and prove
    /// one of `secrets` (the current one and any still accepted during a rotation) within
    /// `handshake` of their first bytes.
    pub fn new(rpcs: R, id: u64, secrets: &[String], handshake: Duration) -> Self {
        Self {
            rpcs,
            id,
            secrets: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            handshake,
            last_append: Mutex::new(Instant::now()),
        }
    }

    /// When the last AppendEntries arrived (a leader's entries or heartbeat), or when the port
    /// was made if none has.
    pub fn last_append(&self) -> Instant {
        *self.last_append.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serves one connection whose first bytes, [`frame::PREFACE`], the caller has read (it
    /// told this connection from HTTP by them), until the peer closes it, it breaks, or `stop`
    /// resolves between two requests.
    pub async fn serve(&self, io: impl AsyncIo, peer: SocketAddr, stop: impl Future<Output = ()>) {
        let mut io = BufReader::new(io);
        match tokio::time::timeout(
            self.handshake,
            handshake::answer(&mut io, self.id, &self.secrets),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(Failed::Unproven)) => {
                tracing::warn!(%peer, "refused a Raft connection without the cluster secret");
                return;
            }
            Ok(Err(Failed::OtherNode)) => {
                // A member with a stale address for another node: it backs off, and says so.
                tracing::debug!(%peer, "refused a Raft connection meant for another node");
                return;
            }
            Ok(Err(Failed::Io(e))) => {
                tracing::debug!(%peer, error = %e, "a Raft connection broke off its handshake");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "a Raft connection did not finish its handshake in time");
                return;
            }
        }
        tokio::pin!(stop);
        loop {
            let (kind, body) = tokio::select! {
                biased;
                _ = &mut stop => return,
                request = frame::read(&mut io, MAX_RPC_BODY) => match request {
                    Ok(request) => request,
                    Err(e) => {
                        if e.kind() != std::io::ErrorKind::UnexpectedEof {
                            tracing::debug!(%peer, error = %e, "closing a broken Raft connection");
                        }
                        return;
                    }
                },
            };
            if kind == frame::APPEND {
                *self.last_append.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Instant::now();
            }
            let answer = match self.rpcs.answer(kind, body).await {
                Ok(answer) => frame::encode_bytes(frame::ANSWER, &answer),
                Err(reason) => {
                    tracing::warn!(%peer, %reason, "rejected a Raft request");
                    frame::encode_bytes(frame::REJECTED, reason.as_bytes())
                }
            };
            if frame::write(&mut io, &answer).await.is_err() {
                return;
            }
        }
    }
}
