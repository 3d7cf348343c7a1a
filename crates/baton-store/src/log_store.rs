//! The Raft log on RocksDB: entries, vote, committed and purged log ids.
//!
//! Durability: `append` writes one synced batch and only then reports the entries flushed to
//! openraft. The sync happens on the caller's task, not on a thread of its own: openraft 0.9's
//! core awaits every append's flush before it does anything else (`append_to_log`), so a
//! separate sync thread could never batch two appends and only added two thread hand-offs to
//! every write (measured in BENCHMARKS.md). Vote, truncate and purge are synced before they
//! return too.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    LogId, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig, StorageError, StorageIOError,
    Vote,
};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{CF_LOGS, CF_META, cf, synced, unsynced};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Log entries are keyed by index in big-endian, so byte order is index order.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> u64 {
    let bytes: [u8; 8] = key.try_into().expect("log keys are written as 8 bytes by index_key");
    u64::from_be_bytes(bytes)
}

/// The highest log index this node knows committed, as last saved by openraft. Shared with
/// the server for status and readiness (openraft 0.9's metrics do not carry it).
#[derive(Clone, Debug, Default)]
pub struct CommittedIndex(Arc<AtomicU64>);

impl CommittedIndex {
    /// The committed index, if any entry is known committed.
    pub fn get(&self) -> Option<u64> {
        self.0.load(Ordering::Acquire).checked_sub(1)
    }

    fn set(&self, index: Option<u64>) {
        self.0.store(index.map_or(0, |i| i + 1), Ordering::Release);
    }
}

/// Raft log storage, generic over the type configuration.
pub struct LogStore<C: RaftTypeConfig> {
    db: Arc<DB>,
    committed: CommittedIndex,
    _c: PhantomData<C>,
}

/// A read-only view of the log for replication tasks.
pub struct LogReader<C: RaftTypeConfig> {
    db: Arc<DB>,
    _c: PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        Self { db: self.db.clone(), _c: PhantomData }
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// A log store over `db`.
    pub(crate) fn new(db: Arc<DB>) -> Self {
        let store = Self { db, committed: CommittedIndex::default(), _c: PhantomData };
        if let Ok(Some(Some(id))) = store.get_meta::<Option<LogId<C::NodeId>>>(KEY_COMMITTED) {
            store.committed.set(Some(id.index));
        }
        store
    }

    /// A handle that follows the committed index.
    pub fn committed_index(&self) -> CommittedIndex {
        self.committed.clone()
    }

    fn get_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageIOError<C::NodeId>> {
        let Some(bytes) =
            self.db.get_cf(cf(&self.db, CF_META), key).map_err(|e| StorageIOError::read(&e))?
        else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes).map(Some).map_err(|e| StorageIOError::read(&e))
    }

    fn last_purged(&self) -> Result<Option<LogId<C::NodeId>>, StorageIOError<C::NodeId>> {
        self.get_meta(KEY_LAST_PURGED)
    }
}

fn read_range<C>(
    db: &DB,
    range: impl RangeBounds<u64>,
) -> Result<Vec<C::Entry>, StorageError<C::NodeId>>
where
    C: RaftTypeConfig,
    C::Entry: DeserializeOwned,
{
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let mut entries = Vec::new();
    let iter =
        db.iterator_cf(cf(db, CF_LOGS), IteratorMode::From(&index_key(start), Direction::Forward));
    for item in iter {
        let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
        if !range.contains(&key_index(&key)) {
            break;
        }
        entries.push(postcard::from_bytes(&value).map_err(|e| StorageIOError::read_logs(&e))?);
    }
    Ok(entries)
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    C::Entry: DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        read_range::<C>(&self.db, range)
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        read_range::<C>(&self.db, range)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let last_purged_log_id = self.last_purged()?;
        let last = self.db.iterator_cf(cf(&self.db, CF_LOGS), IteratorMode::End).next();
        let last_log_id = match last {
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: C::Entry =
                    postcard::from_bytes(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.get_log_id().clone())
            }
            None => last_purged_log_id.clone(),
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { db: self.db.clone(), _c: PhantomData }
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let bytes = postcard::to_allocvec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.db
            .put_cf_opt(cf(&self.db, CF_META), KEY_VOTE, bytes, &synced())
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.get_meta(KEY_VOTE).map_err(|e| StorageIOError::read_vote(&e))?)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        // Not synced: a lost committed id only delays re-applying entries after a crash until
        // the leader repeats it; it never makes the node apply an uncommitted entry.
        let bytes = postcard::to_allocvec(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.db
            .put_cf_opt(cf(&self.db, CF_META), KEY_COMMITTED, bytes, &unsynced())
            .map_err(|e| StorageIOError::write(&e))?;
        self.committed.set(committed.map(|id| id.index));
        Ok(())
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.get_meta::<Option<LogId<C::NodeId>>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let logs = cf(&self.db, CF_LOGS);
        let mut batch = WriteBatch::default();
        for entry in entries {
            let index = entry.get_log_id().index;
            let bytes =
                postcard::to_allocvec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(logs, index_key(index), bytes);
        }
        self.db.write_opt(batch, &synced()).map_err(|e| StorageIOError::write_logs(&e))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_LOGS), index_key(log_id.index), index_key(u64::MAX));
        batch.delete_cf(cf(&self.db, CF_LOGS), index_key(u64::MAX));
        self.db.write_opt(batch, &synced()).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        // The purge marker and the deletion commit together, so a crash never leaves a hole
        // between the marker and the first present entry.
        let mut batch = WriteBatch::default();
        let marker = postcard::to_allocvec(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        batch.put_cf(cf(&self.db, CF_META), KEY_LAST_PURGED, marker);
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS),
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        self.db.write_opt(batch, &synced()).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
