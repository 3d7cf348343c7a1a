//! # baton-store: Baton's Raft storage on RocksDB
//!
//! One RocksDB database per node holds the Raft log ([`LogStore`], generic over the openraft
//! type configuration) and the state machine ([`StateMachine`], which applies committed
//! commands to `baton_core::State`).
//!
//! ```text
//!            ┌──────────── one RocksDB, one write-ahead log ────────────┐
//!  openraft ─┤ logs    index(be u64) → Entry          append: one synced batch
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_raft::TypeConfig;

pub use error::{Error, Result};
pub use log_store::{CommittedIndex, LogReader, LogStore};
pub use state_machine::{Applied, Observer, SnapshotBuilder, StateMachine, StateReader};

/// A node's opened storage: the log store and state machine to hand to openraft, and the
/// handle that closes the database once openraft has let go of them.
pub struct Store {
    /// The Raft log.
    pub log: LogStore<TypeConfig>,
    /// The state machine.
    pub state_machine: StateMachine,
    /// Closes the database at shutdown.
    pub closer: Closer,
}

/// Closes RocksDB in an orderly way. A process must not exit while another thread is still
/// closing RocksDB (RocksDB's mutexes are destroyed under it and the process aborts), so the
/// node waits for everyone else to let go and closes the database itself.
pub struct Closer {
    db: Arc<rocksdb::DB>,
}

impl Closer {
    /// Waits up to `within` until openraft has dropped the log store and state machine (after
    /// `Raft::shutdown`), then closes the database. Returns false if something still held the
    /// database when time ran out (it is then closed by the last holder).
    pub fn close(self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        // Ours, the log store's, the state machine's, and any reader's.
        while Arc::strong_count(&self.db) > 1 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(self.db);
        true
    }
}

/// Opens (or creates) the node's database in `dir`.
pub fn open(dir: &Path) -> Result<Store> {
    let db = db::open(dir)?;
    let state_machine = StateMachine::load(db.clone())?;
    let log = LogStore::new(db.clone());
    Ok(Store { log, state_machine, closer: Closer { db } })
}
