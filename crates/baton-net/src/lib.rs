//! # baton-net: the internal Raft network
//!
//! Raft RPCs (append entries, vote, install snapshot) travel between nodes on each node's
//! internal listener (`raft_addr`), never on the public API port. Bodies are postcard-encoded;
//! the transport is HTTP/2 (over mutual TLS when configured, see [`tls`]) on pooled, reused
//! connections, with a deadline per RPC taken from openraft's `RPCOption` but never shorter
//! than the one [`Network`] is built with (openraft 0.9 gives an AppendEntries the
//! heartbeat interval, too short for a large batch on a busy node; its replication also
//! enforces that interval itself, around this network, so the floor does not lengthen an
//! AppendEntries).
//!
//! ```text
//!  openraft ─▶ Network::new_client ─▶ Connection ─┐  POST /raft/{append,vote,snapshot}
//!                                                 │  x-baton-cluster-secret, postcard body
//!  peer: secured(raft_routes(raft)) ◀─────────────┘  401 without the secret
//! ```
//!
//! The server crate adds its own routes (leader forwarding) beside [`raft_routes`] and wraps
//! them all with [`secured`], and calls other nodes with [`RpcClient::call`].
//!
//! ## Contract
//! - Every request carries the cluster secret; a request without it is refused with 401 before
//!   any handler runs, so a host that is not a member can neither append to, vote in, read, nor
//!   install a snapshot on the log. The secret is compared in constant time and never logged.
//! - Connection failures and timeouts are reported to openraft as `Unreachable` (it backs
//!   off); other transport faults as `NetworkError`; the peer's Raft errors as `RemoteError`.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod client;
mod server;
pub mod tls;

pub use client::{CallError, Connection, Network, RpcClient};
pub use server::{MAX_RPC_BODY, Postcard, raft_routes, secured};

/// Header carrying the cluster's shared secret on every internal request.
pub const SECRET_HEADER: &str = "x-baton-cluster-secret";
/// Content type of internal bodies.
pub const CONTENT_TYPE: &str = "application/x-postcard";
/// AppendEntries RPC path.
pub const PATH_APPEND: &str = "/raft/append";
/// Vote RPC path.
pub const PATH_VOTE: &str = "/raft/vote";
/// InstallSnapshot RPC path.
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";
