//! Opening the RocksDB database and the column families Baton keeps in it.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, MemtableFactory, Options, WriteOptions};

use crate::error::{Error, Result};

/// Where versions before the log's segment files kept its entries, keyed by big-endian index;
/// opening moves any into the files and leaves it empty.
pub(crate) const CF_LOGS: &str = "logs";
/// Raft metadata: vote, committed log id, last purged log id.
pub(crate) const CF_META: &str = "meta";
/// State-machine records, keyed by encoded `RecordKey`.
pub(crate) const CF_SM: &str = "sm";
/// State-machine metadata: applied log id, membership, current snapshot.
pub(crate) const CF_SM_META: &str = "sm_meta";

const ALL_CFS: [&str; 4] = [CF_LOGS, CF_META, CF_SM, CF_SM_META];

/// Bytes of memtables across all column families before the largest is flushed.
const MEMTABLE_BUDGET: usize = 16 * 1024 * 1024;

/// Opens (or creates) the database at `dir`.
pub(crate) fn open(dir: &Path) -> Result<Arc<DB>> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // One memtable budget for all column families (RocksDB's default is 64 MiB for each, up to
    // two of them): a node's memory should be its state, not RocksDB's buffers.
    opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
    // The vector memtable below inserts from one writer at a time.
    opts.set_allow_concurrent_memtable_write(false);
    let cfs = ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name)));
    let db = DB::open_cf_descriptors(&opts, dir, cfs)
        .map_err(|source| Error::Open { path: dir.to_path_buf(), source })?;
    Ok(Arc::new(db))
}

/// A column family's options. The state machine's records are written on every apply and read
/// only by iterating (at start-up and when a snapshot is installed): their memtable is a vector,
/// where a write is an append, sorted once when it is flushed or iterated. In the default skip
/// list, each write landed at a random place among many versions of the same few keys (groups
/// rewritten, audit entries added and dropped), and finding that place was 15 % of a follower's
/// CPU under durable writes (see BENCHMARKS.md).
fn cf_options(name: &str) -> Options {
    let mut opts = Options::default();
    if name == CF_SM {
        opts.set_memtable_factory(MemtableFactory::Vector);
    }
    opts
}

/// The handle of a column family that `open` always creates.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} is created by open()"))
}

/// Write options for a write that must be on disk before we acknowledge it.
pub(crate) fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// Write options for a write whose durability is provided by a later synced write (RocksDB has
/// one write-ahead log for all column families, and syncing it syncs every earlier write): a
/// vote, a snapshot or a purge point.
pub(crate) fn unsynced() -> WriteOptions {
    WriteOptions::default()
}
