//! The client side: a pooled HTTP client that posts postcard bodies to other nodes, and the
//! openraft network built on it.

use std::sync::Arc;
use std::time::Duration;

use baton_raft::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    RPCError, RaftError, VoteRequest, VoteResponse,
};
use baton_raft::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{CONTENT_TYPE, PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE, SECRET_HEADER};

/// How long opening a TCP connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an internal RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made (refused, unroutable, connect timeout).
    #[error("cannot connect to {addr}: {source}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// The transport's reason.
        source: reqwest::Error,
    },
    /// The peer did not answer within the deadline. The request may or may not have been
    /// processed.
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout {
        /// The peer's address.
        addr: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The peer refused the request (wrong cluster secret, bad request).
    #[error("{addr} refused the request with status {status}")]
    Refused {
        /// The peer's address.
        addr: String,
        /// The HTTP status it answered with.
        status: u16,
    },
    /// The connection broke while sending or receiving.
    #[error("transport error talking to {addr}: {source}")]
    Transport {
        /// The peer's address.
        addr: String,
        /// The transport's reason.
        source: reqwest::Error,
    },
    /// The peer's answer could not be decoded.
    #[error("undecodable answer from {addr}: {source}")]
    Decode {
        /// The peer's address.
        addr: String,
        /// The decoder's reason.
        source: postcard::Error,
    },
}

/// A client for the internal listener of other nodes. Cheap to clone; clones share one
/// connection pool, so connections to a peer are reused across RPCs.
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    secret: Arc<str>,
    scheme: &'static str,
}

impl RpcClient {
    /// A client that authenticates with the cluster `secret` and, when `source` is given,
    /// opens its connections from that local address (the node's Raft address, so that
    /// firewalls, and partition tests, can tell nodes apart).
    /// With `tls`, it speaks mutual TLS (see [`crate::tls::raft_client_config`]).
    pub fn new(
        secret: &str,
        source: Option<std::net::IpAddr>,
        tls: Option<rustls::ClientConfig>,
    ) -> Self {
        let mut builder = reqwest::Client::builder()
            .local_address(source)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .http2_prior_knowledge();
        let scheme = if tls.is_some() { "https" } else { "http" };
        builder =
            builder.tls_backend_preconfigured(tls.unwrap_or_else(crate::tls::plain_http_only));
        let http = builder.build().expect("a client with a ready TLS configuration always builds");
        Self { http, secret: secret.into(), scheme }
    }

    /// Posts `request` postcard-encoded to `{http|https}://{addr}{path}` and decodes the answer.
    pub async fn call<Req, Resp>(
        &self,
        addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = postcard::to_allocvec(request)
            .expect("postcard encodes Baton's RPC types without failing");
        let send = self
            .http
            .post(format!("{}://{addr}{path}", self.scheme))
            .header(SECRET_HEADER, &*self.secret)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .timeout(timeout)
            .send();
        let response = send.await.map_err(|source| classify(addr, timeout, source))?;
        let status = response.status();
        if !status.is_success() {
            return Err(CallError::Refused { addr: addr.into(), status: status.as_u16() });
        }
        let bytes = response.bytes().await.map_err(|source| classify(addr, timeout, source))?;
        postcard::from_bytes(&bytes)
            .map_err(|source| CallError::Decode { addr: addr.into(), source })
    }
}

fn classify(addr: &str, timeout: Duration, source: reqwest::Error) -> CallError {
    let addr = addr.to_string();
    if source.is_timeout() {
        CallError::Timeout { addr, timeout }
    } else if source.is_connect() {
        CallError::Unreachable { addr, source }
    } else {
        CallError::Transport { addr, source }
    }
}

/// The openraft network factory: one [`Connection`] per peer, all sharing one pool.
///
/// openraft 0.9 gives each AppendEntries the heartbeat interval as its deadline. On a busy
/// node a batch of thousands of entries can take longer than that, and an RPC that times out
/// would be retried with the same batch, and time out again. Every RPC therefore gets at
/// least `min_deadline` (the node uses its shortest election timeout) here. But openraft 0.9's
/// replication also wraps each AppendEntries in its own timeout of the heartbeat interval,
/// outside this network, so for AppendEntries that shorter timeout still decides: one slower
/// than the heartbeat interval is abandoned (see BENCHMARKS.md, "Leader kill").
#[derive(Clone)]
pub struct Network {
    client: RpcClient,
    min_deadline: Duration,
}

impl Network {
    /// A network whose RPCs go through `client`, each with a deadline of at least
    /// `min_deadline`.
    pub fn new(client: RpcClient, min_deadline: Duration) -> Self {
        Self { client, min_deadline }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Connection {
        Connection {
            client: self.client.clone(),
            target,
            addr: node.raft_addr.clone(),
            min_deadline: self.min_deadline,
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct Connection {
    client: RpcClient,
    target: NodeId,
    addr: String,
    min_deadline: Duration,
}

impl Connection {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        request: Req,
        option: RPCOption,
    ) -> Result<Resp, RPCError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let deadline = option.hard_ttl().max(self.min_deadline);
        // Only a peer that cannot be reached sends openraft's replication into its back-off
        // (500 ms without sending); a slow answer is retried at once.
        let answer: Result<Resp, RaftError<E>> =
            self.client.call(&self.addr, path, &request, deadline).await.map_err(|e| match e {
                CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        self.rpc(PATH_APPEND, rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<InstallSnapshotError>> {
        self.rpc(PATH_SNAPSHOT, rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.rpc(PATH_VOTE, rpc, option).await
    }
}
