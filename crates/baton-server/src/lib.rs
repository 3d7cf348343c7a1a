//! # baton-server: the `baton` binary's library
//!
//! The only crate that sees every other: it reads the [`config::Config`], checks the data
//! directory's [`identity`], opens `baton-store`, starts openraft with `baton-net`, implements
//! `baton-api`'s `Coordinator` over Raft ([`coordinator::RaftCoordinator`], with leader
//! forwarding), serves both listeners and shuts down in order ([`node::run`]).
//!
//! ```text
//!  client ─▶ api_addr ─▶ baton-api ─▶ RaftCoordinator ─┬─ leader here: Proposer (group commit) / lease read
//!                                                     └─ else: Forwarder ─▶ FORWARD batches to the leader
//!  peers  ─▶ raft_addr ─▶ baton-net (secret handshake) ─▶ port::PortRpcs: append, vote, snapshot (openraft),
//!                                                     FORWARD (RaftCoordinator::execute)
//! ```

pub mod cli;
pub mod config;
pub mod coordinator;
pub mod identity;
pub mod leader;
pub mod listener;
pub mod members;
pub mod node;
pub mod open_files;
pub mod port;
pub mod proposer;
pub mod proxy;
pub mod replication;
pub mod succession;
