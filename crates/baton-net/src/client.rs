//! The client side: the openraft network, which sends Raft RPCs over framed connections (see
//! `frame.rs`), and the dialer and pool of those connections, which leader forwarding
//! (`forward.rs`) shares.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_raft::typ::{
    AppendEntriesRequest, AppendEntriesResponse, Entry, InstallSnapshotRequest,
    InstallSnapshotResponse, LogId, RPCError, RaftError, VoteRequest, VoteResponse,
};
use baton_raft::{NodeId, NodeInfo, TypeConfig};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use openraft::error::{InstallSnapshotError, NetworkError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpSocket;

use crate::MAX_RPC_BODY;
use crate::early::Followers;
use crate::forward::{BATCHES_IN_FLIGHT, Forwarder};
use crate::frame::{self, AsyncIo};
use crate::handshake::{self, Failed};

/// How long opening a TCP connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Idle framed connections kept per peer for the next user: openraft makes one per replication
/// stream and per vote, and forwarding uses up to [`BATCHES_IN_FLIGHT`] at once.
const IDLE_PER_PEER: usize = BATCHES_IN_FLIGHT + 4;
/// Bytes read from a framed connection at once: most answers arrive in one read.
const READ_BUFFER: usize = 16 * 1024;
/// Most bytes of entries one AppendEntries carries (its first entry always goes, whatever its
/// size). openraft 0.9 gives each AppendEntries only the heartbeat interval to be answered and
/// sends the same range again after a timeout; a range that a follower cannot decode and sync
/// in that time (a new leader's first probe starts in the middle of the log with up to
/// `max_payload_entries` entries, and a lagging follower is sent as many) would time out for
/// ever, and the follower never catch up. See [`bound_entries`].
pub const MAX_APPEND_BYTES: usize = 256 * 1024;

/// Keeps the longest prefix of `entries` whose postcard encoding fits in `budget` bytes (at
/// least the first entry) and returns the log id of the last entry kept when any were left
/// out, so the caller can report the rest as not sent (openraft's
/// `AppendEntriesResponse::PartialSuccess`) and openraft sends it next.
pub fn bound_entries(entries: &mut Vec<Entry>, budget: usize) -> Option<LogId> {
    if entries.len() < 2 {
        return None;
    }
    let mut total = 0usize;
    let fits = entries
        .iter()
        .take_while(|entry| {
            let size = postcard::experimental::serialized_size(*entry).unwrap_or(usize::MAX);
            total = total.saturating_add(size);
            total <= budget
        })
        .count()
        .max(1);
    if fits == entries.len() {
        return None;
    }
    entries.truncate(fits);
    entries.last().map(|entry| entry.log_id)
}

/// Why an internal RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made (refused, unroutable, connect timeout, or the TLS or
    /// cluster-secret handshake failed): the peer saw no request.
    #[error("cannot connect to {addr}: {source}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// The transport's reason.
        source: BoxError,
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
    /// The connection broke while sending or receiving.
    #[error("transport error talking to {addr}: {source}")]
    Transport {
        /// The peer's address.
        addr: String,
        /// The transport's reason.
        source: BoxError,
    },
    /// The peer did not handle the request and said why (a wrong cluster secret, an
    /// undecodable body, a kind of request it does not serve).
    #[error("{addr} rejected the request: {reason}")]
    Rejected {
        /// The peer's address.
        addr: String,
        /// The peer's reason.
        reason: String,
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

/// A transport fault's cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl CallError {
    /// The same error again, for each caller whose request shared a failed exchange (a
    /// source's text stands for the source).
    pub(crate) fn duplicate(&self) -> Self {
        let text = |source: &BoxError| -> BoxError { source.to_string().into() };
        match self {
            Self::Unreachable { addr, source } => {
                Self::Unreachable { addr: addr.clone(), source: text(source) }
            }
            Self::Timeout { addr, timeout } => {
                Self::Timeout { addr: addr.clone(), timeout: *timeout }
            }
            Self::Transport { addr, source } => {
                Self::Transport { addr: addr.clone(), source: text(source) }
            }
            Self::Rejected { addr, reason } => {
                Self::Rejected { addr: addr.clone(), reason: reason.clone() }
            }
            Self::Decode { addr, source } => {
                Self::Decode { addr: addr.clone(), source: source.clone() }
            }
        }
    }
}

/// A client for the Raft port of other nodes. Cheap to clone; clones share one pool of
/// framed connections per peer.
#[derive(Clone)]
pub struct RpcClient {
    dialer: Arc<Dialer>,
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
        let tls = tls.map(|mut config| {
            config.alpn_protocols = vec![frame::ALPN.to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(config))
        });
        Self::over(secret, Arc::new(Tcp { source }), tls)
    }

    /// A client that opens its connections with `connect` instead of TCP, without TLS (a
    /// simulated network: see `baton-server`'s whole-cluster simulation).
    pub fn with_connect(secret: &str, connect: Arc<dyn Connect>) -> Self {
        Self::over(secret, connect, None)
    }

    fn over(
        secret: &str,
        connect: Arc<dyn Connect>,
        tls: Option<tokio_rustls::TlsConnector>,
    ) -> Self {
        let dialer =
            Arc::new(Dialer { secret: secret.into(), connect, tls, idle: Mutex::default() });
        Self { dialer }
    }

    /// A forwarder of `Req` requests to peers, answered with `Resp`, over this client's
    /// connections (see [`Forwarder`]).
    pub fn forwarder<Req, Resp>(&self) -> Forwarder<Req, Resp>
    where
        Req: Serialize + Send + 'static,
        Resp: DeserializeOwned + Send + 'static,
    {
        Forwarder::new(self.dialer.clone())
    }

    /// Whether nothing listens at `addr`: a TCP connection, opened from this node's address
    /// like every other to a peer, was refused (not timed out within `within`, not unroutable).
    pub async fn refuses_connections(&self, addr: &str, within: Duration) -> bool {
        match tokio::time::timeout(within, self.dialer.connect.connect(addr)).await {
            Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
            Ok(Ok(_)) | Err(_) => false,
        }
    }
}

/// Opens the byte streams that framed connections run over: TCP in a node, a simulated
/// network's streams in a simulation.
pub trait Connect: Send + Sync + 'static {
    /// A stream to `addr` (`host:port`). A refused connection is an error of kind
    /// `ConnectionRefused` (the leader's port is gone: see `succession.rs` in `baton-server`).
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, std::io::Result<Box<dyn AsyncIo>>>;
}

/// TCP connections, opened from `source` when given.
struct Tcp {
    source: Option<IpAddr>,
}

impl Connect for Tcp {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, std::io::Result<Box<dyn AsyncIo>>> {
        async move {
            let mut last = None;
            for target in tokio::net::lookup_host(addr).await? {
                let socket =
                    if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
                if let Some(ip) = self.source.filter(|ip| ip.is_ipv4() == target.is_ipv4()) {
                    socket.bind(SocketAddr::new(ip, 0))?;
                }
                match socket.connect(target).await {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(Box::new(stream) as Box<dyn AsyncIo>);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last
                .unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to nothing"))))
        }
        .boxed()
    }
}

/// A node as a connection is opened to it: its id, which the handshake binds (a host that
/// answers at one member's address cannot pass a handshake on to another member), and its
/// Raft address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// Its node id.
    pub id: NodeId,
    /// Its Raft address (`host:port`).
    pub addr: String,
}

/// Opens framed connections to peers (from the node's own address, over TLS when configured,
/// proving the cluster secret) and keeps a few idle ones per peer.
pub(crate) struct Dialer {
    secret: Arc<str>,
    connect: Arc<dyn Connect>,
    tls: Option<tokio_rustls::TlsConnector>,
    idle: Mutex<BTreeMap<Peer, Vec<Stream>>>,
}

/// One framed connection to a peer, after its preface was accepted.
struct Stream {
    io: BufReader<Box<dyn AsyncIo>>,
}

impl Stream {
    /// Sends one request frame and reads its answer.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u8, Vec<u8>)> {
        frame::write(&mut self.io, request).await?;
        frame::read(&mut self.io, MAX_RPC_BODY).await
    }
}

impl Dialer {
    fn idle(&self) -> std::sync::MutexGuard<'_, BTreeMap<Peer, Vec<Stream>>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_idle(&self, peer: &Peer) -> Option<Stream> {
        self.idle().get_mut(peer).and_then(Vec::pop)
    }

    /// An idle connection to `peer` that the peer has not closed, if one is pooled. A
    /// connection with anything to read between exchanges is closed (by the peer, or broken).
    fn take_open(&self, peer: &Peer) -> Option<Stream> {
        while let Some(mut stream) = self.take_idle(peer) {
            if stream.io.fill_buf().now_or_never().is_none() {
                return Some(stream);
            }
        }
        None
    }

    /// One exchange on an open pooled connection to `peer`, or a new one, which is pooled
    /// again afterwards. Not repeated on another connection: the request may have been run.
    pub(crate) async fn exchange(
        &self,
        peer: &Peer,
        request: &[u8],
    ) -> Result<(u8, Vec<u8>), CallError> {
        let mut stream = match self.take_open(peer) {
            Some(stream) => stream,
            None => self.open(peer).await?,
        };
        let answer = stream
            .exchange(request)
            .await
            .map_err(|e| CallError::Transport { addr: peer.addr.clone(), source: e.into() })?;
        self.keep_idle(peer, stream);
        Ok(answer)
    }

    fn keep_idle(&self, peer: &Peer, stream: Stream) {
        let mut idle = self.idle();
        let streams = idle.entry(peer.clone()).or_default();
        if streams.len() < IDLE_PER_PEER {
            streams.push(stream);
        }
    }

    /// Connects to `peer`, speaks TLS if configured, and proves the cluster secret both ways,
    /// for that peer's id (`handshake.rs`).
    async fn open(&self, peer: &Peer) -> Result<Stream, CallError> {
        let addr = peer.addr.as_str();
        let unreachable = |source: BoxError| CallError::Unreachable { addr: addr.into(), source };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, self.connect.connect(addr))
            .await
            .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}").into()))?
            .map_err(|e| unreachable(e.into()))?;
        let io: Box<dyn AsyncIo> = match &self.tls {
            None => stream,
            Some(connector) => {
                // The peer's certificate must name the node meant, wherever it answers.
                let name = rustls::pki_types::ServerName::try_from(crate::tls::node_name(peer.id))
                    .map_err(|e| unreachable(e.into()))?;
                Box::new(connector.connect(name, stream).await.map_err(|e| unreachable(e.into()))?)
            }
        };
        let mut io = BufReader::with_capacity(READ_BUFFER, io);
        // A peer that did not prove itself was sent nothing: like one that cannot be reached,
        // openraft backs off from it and a forwarded request goes elsewhere.
        // Nor was one whose connection broke during the handshake (something else listens
        // there, or the node is going away): retried at once, it would be dialed in a loop.
        match handshake::dial(&mut io, self.secret.as_bytes(), peer.id).await {
            Ok(()) => Ok(Stream { io }),
            Err(Failed::Io(e)) => Err(unreachable(format!("handshake broke off: {e}").into())),
            Err(failed @ (Failed::Unproven | Failed::OtherNode)) => {
                Err(unreachable(format!("{failed} (node {})", peer.id).into()))
            }
        }
    }
}

/// A peer's answer to an exchange: the decoded body of an [`frame::ANSWER`], or the reason it
/// gave for rejecting the request.
pub(crate) fn decode_answer<T: DeserializeOwned>(
    addr: &str,
    (status, body): (u8, Vec<u8>),
) -> Result<T, CallError> {
    match status {
        frame::ANSWER => postcard::from_bytes(&body)
            .map_err(|source| CallError::Decode { addr: addr.into(), source }),
        _ => Err(CallError::Rejected {
            addr: addr.into(),
            reason: String::from_utf8_lossy(&body).into_owned(),
        }),
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
    followers: Followers,
}

impl Network {
    /// A network whose RPCs go through `client`, each with a deadline of at least
    /// `min_deadline`.
    pub fn new(client: RpcClient, min_deadline: Duration) -> Self {
        let followers = Followers::new(client.dialer.clone(), min_deadline);
        Self { client, min_deadline, followers }
    }

    /// The client this network's RPCs go through.
    pub fn client(&self) -> &RpcClient {
        &self.client
    }

    /// What this network learns of the followers' logs, for early replication.
    pub fn followers(&self) -> Followers {
        self.followers.clone()
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Connection {
        Connection {
            dialer: self.client.dialer.clone(),
            target,
            peer: Peer { id: target, addr: node.raft_addr.clone() },
            min_deadline: self.min_deadline,
            stream: None,
            followers: self.followers.clone(),
        }
    }
}

/// Sends Raft RPCs to one peer, one at a time, over one framed connection (opened on first
/// use, reopened after a fault, handed back to the pool when dropped).
pub struct Connection {
    dialer: Arc<Dialer>,
    target: NodeId,
    peer: Peer,
    min_deadline: Duration,
    stream: Option<Stream>,
    followers: Followers,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.dialer.keep_idle(&self.peer, stream);
        }
    }
}

impl Connection {
    async fn rpc<Req, Resp, E>(
        &mut self,
        kind: u8,
        request: Req,
        option: RPCOption,
    ) -> Result<Resp, RPCError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let deadline = option.hard_ttl().max(self.min_deadline);
        let request = frame::encode(kind, &request);
        // Only a peer that cannot be reached sends openraft's replication into its back-off
        // (500 ms without sending); a slow answer is retried at once.
        let answer: Result<Resp, RaftError<E>> =
            match tokio::time::timeout(deadline, self.call(&request)).await {
                Ok(answer) => answer,
                Err(_) => {
                    // The answer may still arrive: the connection is out of step, drop it.
                    self.stream = None;
                    Err(CallError::Timeout { addr: self.peer.addr.clone(), timeout: deadline })
                }
            }
            .map_err(|e| match e {
                CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// One exchange on this connection's stream (or an idle one, or a new one). A reused
    /// stream that fails is replaced once by a new one: the peer may have closed it while it
    /// was idle, and every Raft RPC can be repeated.
    async fn call<Resp: DeserializeOwned>(&mut self, request: &[u8]) -> Result<Resp, CallError> {
        let reused = self.stream.take().or_else(|| self.dialer.take_idle(&self.peer));
        let (stream, answer) = match reused {
            Some(mut stream) => match stream.exchange(request).await {
                Ok(answer) => (stream, answer),
                Err(_) => self.exchange_on_new(request).await?,
            },
            None => self.exchange_on_new(request).await?,
        };
        // Only a stream whose exchange completed is in step for the next one.
        self.stream = Some(stream);
        decode_answer(&self.peer.addr, answer)
    }

    async fn exchange_on_new(
        &mut self,
        request: &[u8],
    ) -> Result<(Stream, (u8, Vec<u8>)), CallError> {
        let mut stream = self.dialer.open(&self.peer).await?;
        let answer = stream
            .exchange(request)
            .await
            .map_err(|e| CallError::Transport { addr: self.peer.addr.clone(), source: e.into() })?;
        Ok((stream, answer))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    /// Sends at most [`MAX_APPEND_BYTES`] of the entries; when some were left out, the
    /// follower's success covers only those sent. The follower commits no further than the
    /// entries it accepted, whatever the request's commit index says.
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        let sent_up_to = bound_entries(&mut rpc.entries, MAX_APPEND_BYTES);
        let vote = rpc.vote;
        let last_sent = rpc.entries.last().map(|entry| entry.log_id).or(rpc.prev_log_id);
        let answer = self.rpc(frame::APPEND, rpc, option).await;
        let answer = match (answer, sent_up_to) {
            (Ok(AppendEntriesResponse::Success), Some(last)) => {
                Ok(AppendEntriesResponse::PartialSuccess(Some(last)))
            }
            (answer, _) => answer,
        };
        let holds = match &answer {
            Ok(AppendEntriesResponse::Success) => last_sent,
            Ok(AppendEntriesResponse::PartialSuccess(last)) => *last,
            _ => None,
        };
        self.followers.record(&self.peer, &vote, holds);
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<InstallSnapshotError>> {
        self.rpc(frame::SNAPSHOT, rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.rpc(frame::VOTE, rpc, option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn blanks(n: u64) -> Vec<Entry> {
        (1..=n)
            .map(|index| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    fn size(entry: &Entry) -> usize {
        postcard::experimental::serialized_size(entry).expect("sized")
    }

    #[test]
    fn entries_within_the_budget_all_go() {
        let mut entries = blanks(5);
        let budget = entries.iter().map(size).sum();
        assert_eq!(bound_entries(&mut entries, budget), None);
        assert_eq!(entries.len(), 5);
    }

    #[test]
    fn entries_beyond_the_budget_are_left_for_the_next_request() {
        let mut entries = blanks(10);
        let budget = entries[..3].iter().map(size).sum::<usize>() + 1;
        let last = bound_entries(&mut entries, budget).expect("some were left out");
        assert_eq!(entries.len(), 3);
        assert_eq!(last.index, 3);
    }

    #[test]
    fn the_first_entry_goes_even_when_it_alone_is_over_the_budget() {
        let mut entries = blanks(4);
        assert_eq!(bound_entries(&mut entries, 1).map(|l| l.index), Some(1));
        assert_eq!(entries.len(), 1);
        let mut one = blanks(1);
        assert_eq!(bound_entries(&mut one, 0), None);
        assert_eq!(one.len(), 1);
    }
}
