//! # baton-store: Baton's Raft storage
//!
//! Each node's storage is the Raft log ([`LogStore`], generic over the openraft type
//! configuration) and the state machine ([`StateMachine`], which applies committed commands to
//! `baton_core::State`). The log's entries are in segment files of our own ([`LOG_DIR`]);
//! everything else is in one RocksDB database.
//!
//! ```text
//!            ┌─ raft-log/: segment files, allocated whole ──────────────┐
//!  openraft ─┤ length | chained CRC | Entry, ...        append: one pwrite + fdatasync
//!            │                                          truncate: synced; purge: whole files
//!            ├──────────── one RocksDB, one write-ahead log ────────────┤
//!            │ meta    vote, committed, last_purged   vote/purge point: synced
//!            │ sm      RecordKey → Record             apply: one batch per apply call
//!            │ sm_meta applied, membership, snapshot  snapshot build/install: synced batch
//!            └──────────────────────────────────────────────────────────┘
//! ```
//!
//! Why files of our own: an append to RocksDB's write-ahead log grows the file, and on ext4
//! `fdatasync` then also writes the inode before the device flush. Segments are allocated
//! when made, so a sync is one data write and one flush (see `log_file.rs`).
//!
//! ## Invariants
//! - openraft is told a log append is done only after the entries are synced to disk; a vote,
//!   truncate or purge returns only after it is synced.
//! - The log never has a hole: truncation removes a suffix, purge a prefix, and the purge
//!   point is synced before any segment is deleted (an opening removes what a crash left).
//! - The log's end is unambiguous after a crash: each record's CRC continues the previous
//!   record's, so the remains of a torn write end the log; truncation zeroes what it removes.
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
mod log_file;
pub mod log_store;
pub mod state_machine;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_raft::TypeConfig;

pub use error::{Error, Result};
pub use log_store::{CommittedIndex, EarlyReplication, LogReader, LogStore};
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

/// Where in a node's data directory the log's segment files are.
pub const LOG_DIR: &str = "raft-log";

/// Opens (or creates) the node's storage in `dir`: RocksDB there, the log's entries in
/// [`LOG_DIR`] inside it.
pub fn open(dir: &Path) -> Result<Store> {
    let db = db::open(dir)?;
    let state_machine = StateMachine::load(db.clone())?;
    let log = LogStore::open(db.clone(), &dir.join(LOG_DIR))?;
    Ok(Store { log, state_machine, closer: Closer { db } })
}
