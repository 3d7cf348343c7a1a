//! # baton-net: the internal Raft network
//!
//! Raft RPCs (append entries, vote, install snapshot) travel between nodes on each node's
//! internal listener (`raft_addr`), never on the public API port. They use framed connections
//! (see `frame.rs`): a peer opens a TCP connection (mutual TLS when configured, see [`tls`]),
//! proves the cluster secret once without sending it (see `handshake.rs`), then sends postcard-encoded requests one at a time, each
//! answered by the connection's own task. openraft keeps one request in flight per follower, so
//! each replication stream owns one connection; idle ones are pooled per peer. Each RPC has a
//! deadline taken from openraft's `RPCOption` but never shorter than the one [`Network`] is
//! built with (openraft 0.9 gives an AppendEntries the heartbeat interval, too short for a
//! large batch on a busy node; its replication also enforces that interval itself, around this
//! network, so the floor does not lengthen an AppendEntries).
//!
//! Early replication ([`Followers`], `early.rs`): the leader's log store hands a new append to
//! the network before syncing it, and it goes to every follower whose last successful answer
//! left its log ending just before the append, on a pooled connection; that answer is dropped.
//!
//! Requests only the leader may serve travel the same way: a [`Forwarder`] batches them per
//! peer, [`BATCHES_IN_FLIGHT`] batches at once, each a FORWARD frame on a pooled connection,
//! and the leader's port answers a batch with [`answer_batch`] (see `forward.rs`). A framed
//! connection begins with [`PREFACE`], which no HTTP request does (a node closes any
//! connection to its Raft port that begins otherwise).
//!
//! ```text
//!  openraft ─▶ Network::new_client ─▶ Connection ─┐  PREFACE + handshake, then frames
//!  callers  ─▶ Forwarder::send (batches) ─────────┤  (kind, length, postcard body)
//!                                                 │
//!  peer: RaftPort::serve(rpcs) ◀──────────────────┘  refused without a proven secret
//! ```
//!
//! Why not HTTP for Raft too (it was, until measured): on this project's 2-core benchmark
//! machine an AppendEntries over reqwest, HTTP/2 and axum cost about 200 µs more than the
//! follower's own handling, and openraft 0.9 sends two per write to each follower (the entries,
//! then the new commit index), one after the other. See BENCHMARKS.md.
//!
//! ## Contract
//! - Every framed connection begins with a challenge and response each way (`handshake.rs`):
//!   without proof of one of the accepted secrets a connection is refused before any request
//!   is read, and a dialing node sends nothing to a peer that has not proven the secret. So a
//!   host that is not a member can neither append to, vote in, read, nor install a snapshot
//!   on the log, nor receive a forwarded request. The secret never crosses the wire, and a
//!   captured handshake proves nothing on another connection. Proofs are compared in constant
//!   time; secrets are never logged.
//! - Connection failures, a handshake that broke off, and a peer that did not prove the
//!   secret or is not the node meant (nothing was sent to it), are reported to openraft as
//!   `Unreachable` (it backs off); timeouts
//!   and other transport faults as `NetworkError` (it retries at once); the peer's Raft errors
//!   as `RemoteError`. A connection that timed out or broke is never reused.
//! - An AppendEntries carries at most [`MAX_APPEND_BYTES`] of entries (always its first
//!   entry); the follower's success then counts only up to the last entry sent
//!   (`PartialSuccess`), and openraft sends the rest next. openraft 0.9 gives each
//!   AppendEntries the heartbeat interval and resends the same range after a timeout, so a
//!   follower that missed megabytes of log would otherwise never catch up.
//! - A forwarded request is sent once, never again on another connection. Its error is
//!   `Unreachable` only when no connection could be made, so the peer never saw it; after
//!   any other error the peer may have run it. A pooled connection that the peer has closed
//!   is not used. Each caller gets its own request's answer; a failed batch fails each of its
//!   requests alike.
//! - An early AppendEntries is an ordinary one, under the leader's vote; nothing is decided on
//!   its answer. Only a follower whose last answer to openraft's own AppendEntries, under the
//!   same vote, was a success ending at the entry before the append is sent one.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

pub mod batch;
mod client;
mod early;
mod forward;
mod frame;
pub mod handshake;
mod server;
pub mod tls;

pub use client::{
    BoxError, CallError, Connect, Connection, MAX_APPEND_BYTES, Network, Peer, RpcClient,
    bound_entries,
};
pub use early::Followers;
pub use forward::{
    BATCHES_IN_FLIGHT, Forwarder, MOST_BYTES_PER_BATCH, MOST_PER_BATCH, answer_batch,
};
pub use frame::{ACCEPTED, AsyncIo, FORWARD, PREFACE, REFUSED, VOTE};
pub use server::{MAX_RPC_BODY, RaftPort, Rpcs};
