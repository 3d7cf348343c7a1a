//! # baton-store: Baton's Raft storage on RocksDB
//!
//! One RocksDB database per node holds the Raft log ([`LogStore`], generic over the openraft
//! type configuration) and the state machine ([`StateMachine`], which applies committed
//! commands to `baton_core::State`).
//!
//! ```text
//!            ┌──────────── one RocksDB, one write-ahead log ────────────┐
//!  openraft ─┤ logs    index(be u64) → Entry          append: batch, then group-commit fsync
//!            │ meta    vote, committed, last_purged   vote/truncate/purge: synced batch
//!            │ sm      RecordKey → Record             apply: one batch per apply call
//!            │ sm_meta applied, membership, snapshot  snapshot build/install: synced batch
//!            └──────────────────────────────────────────────────────────┘
//! ```
//!
//! ## Invariants
//! - openraft is told a log append is done only after the entries are synced to disk; a vote,
//!   truncate or purge returns only after it is synced.
//! - The log never has a hole: truncation removes a suffix, purge a prefix, and the purge
//!   marker moves in the same batch as the deletion.
//! - A state-machine batch (records, applied log id, membership) is atomic, so after any crash
//!   the stored state is exactly the state at the stored applied log id.
//! - The state machine never runs ahead of the durable log, and the log is never purged past
//!   the durable state machine (see [`state_machine`] for why).
//!
//! ## Errors
//! Opening returns [`Error`]. During operation every failure is an openraft `StorageError`,
//! which stops the Raft node: a storage fault is never answered and ignored.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]
// openraft's storage traits fix the error type (`StorageError`), which is large; our helpers
// return it too rather than boxing and unboxing at every trait boundary.
#![allow(clippy::result_large_err)]

mod db;
mod error;
pub mod log_store;
pub mod state_machine;

use std::path::Path;

use baton_raft::TypeConfig;

pub use error::{Error, Result};
pub use log_store::{CommittedIndex, LogReader, LogStore};
pub use state_machine::{Applied, SnapshotBuilder, StateMachine, StateReader};

/// Opens (or creates) the node's database in `dir` and returns its log store and state machine.
pub fn open(dir: &Path) -> Result<(LogStore<TypeConfig>, StateMachine)> {
    let db = db::open(dir)?;
    let sm = StateMachine::load(db.clone())?;
    Ok((LogStore::new(db), sm))
}
