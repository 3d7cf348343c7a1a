//! The Raft log: entries in segment files of our own ([`crate::log_file`]); vote, committed
//! and purged log ids in RocksDB.
//!
//! Durability: `append` writes the entries and syncs them (one `pwrite`, one `fdatasync`)
//! before it reports them flushed to openraft. The sync happens on the caller's task, not on a
//! thread of its own: openraft 0.9's core awaits every append's flush before it does anything
//! else (`append_to_log`), so a separate sync thread could never batch two appends and only
//! added two thread hand-offs to every write (measured in BENCHMARKS.md). Vote, truncate and
//! purge are synced before they return too.
//!
//! Purging writes the purge point to RocksDB, synced, before it deletes any segment. That
//! synced write is also what makes the state machine's earlier (unsynced) applies durable, so
//! the log is never purged past what the state machine has on disk.
//!
//! Early replication ([`LogStore::replicate_early`]): a leader's new entries can be handed to
//! an [`EarlyReplication`] before they are synced, so that a follower syncs them while the
//! leader does (the Raft thesis, §10.2.1, allows it: a leader counts itself towards a quorum
//! only once its own sync is done, and openraft waits for that flush before it counts the
//! leader). What it must then rule out is a leader that crashed before its sync coming back as
//! leader of the same term with a different entry at the same index: openraft 0.9 restores a
//! node whose stored vote is its own and committed as leader at once, without an election. So
//! once early replication is on, such a vote is stored back uncommitted (synced) before Raft
//! starts, and the node has to win a new election, in a higher term, to lead again.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    LogId, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig, StorageError, StorageIOError,
    Vote,
};
use rocksdb::{DB, IteratorMode, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{CF_LOGS, CF_META, cf, synced, unsynced};
use crate::error::Error;
use crate::log_file::{LogFiles, LogFilesReader};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Entries in RocksDB (before the log had files of its own) were keyed by big-endian index.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
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

/// Where a leader's new entries go before they are synced (see [`LogStore::replicate_early`]).
/// A follower takes them as any AppendEntries from the leader; its answer is not waited for,
/// since openraft sends the same entries again once the leader's sync is done and counts only
/// the answer to that.
pub trait EarlyReplication<C: RaftTypeConfig>: Send + Sync {
    /// Whether some follower was last known to hold exactly the log up to `prev`, under
    /// `vote`: only such a follower can take entries that follow `prev` at once.
    fn wants(&self, vote: &Vote<C::NodeId>, prev: &LogId<C::NodeId>) -> bool;

    /// Sends `entries`, which follow `prev`, to those followers under `vote`, with
    /// `committed` as the leader's commit index. Returns at once.
    fn send(
        &self,
        vote: Vote<C::NodeId>,
        prev: LogId<C::NodeId>,
        entries: Vec<C::Entry>,
        committed: Option<LogId<C::NodeId>>,
    );
}

/// Early replication as configured: this node's id and where its entries go.
struct Early<C: RaftTypeConfig> {
    id: C::NodeId,
    to: Arc<dyn EarlyReplication<C>>,
}

/// Where one append goes early, and the vote and previous log id it goes under.
struct EarlyAppend<C: RaftTypeConfig> {
    to: Arc<dyn EarlyReplication<C>>,
    vote: Vote<C::NodeId>,
    prev: LogId<C::NodeId>,
}

/// Raft log storage, generic over the type configuration.
pub struct LogStore<C: RaftTypeConfig> {
    db: Arc<DB>,
    files: LogFiles,
    committed: CommittedIndex,
    /// The last vote saved (or read on opening).
    vote: Option<Vote<C::NodeId>>,
    /// The last committed log id saved (or read on opening).
    committed_id: Option<LogId<C::NodeId>>,
    /// The id of the last entry appended since opening or the last truncation: the `prev` of
    /// the next append when that follows it.
    last_appended: Option<LogId<C::NodeId>>,
    early: Option<Early<C>>,
    _c: PhantomData<C>,
}

/// A read-only view of the log for replication tasks.
pub struct LogReader<C: RaftTypeConfig> {
    files: LogFilesReader,
    _c: PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        Self { files: self.files.clone(), _c: PhantomData }
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// A log store with its entries in `dir` and everything else in `db`. Entries an earlier
    /// version kept in RocksDB move to the files first.
    pub(crate) fn open(db: Arc<DB>, dir: &Path) -> crate::error::Result<Self> {
        let log_error = |source| Error::Log { path: dir.to_path_buf(), source };
        let purged: Option<LogId<C::NodeId>> =
            get_meta(&db, KEY_LAST_PURGED).map_err(|e| e.opening("the purge point"))?;
        let files = LogFiles::open(dir, purged.map(|id| id.index)).map_err(log_error)?;
        let vote = get_meta(&db, KEY_VOTE).map_err(|e| e.opening("the vote"))?;
        let mut store = Self {
            db,
            files,
            committed: CommittedIndex::default(),
            vote,
            committed_id: None,
            last_appended: None,
            early: None,
            _c: PhantomData,
        };
        store.move_entries_from_rocksdb().map_err(log_error)?;
        if let Ok(Some(Some(id))) = get_meta::<Option<LogId<C::NodeId>>>(&store.db, KEY_COMMITTED) {
            store.committed.set(Some(id.index));
            store.committed_id = Some(id);
        }
        Ok(store)
    }

    /// Hands every entry this node appends as leader (node `id`) to `to` before syncing it,
    /// when `to` wants it (see the module docs). Call before giving the store to openraft: a
    /// stored vote that would restore this node as leader without an election is stored back
    /// uncommitted (synced) first.
    pub fn replicate_early(
        &mut self,
        id: C::NodeId,
        to: Arc<dyn EarlyReplication<C>>,
    ) -> crate::error::Result<()> {
        if let Some(vote) = self.vote.clone().filter(|v| v.is_committed() && self.leads(v, &id)) {
            let uncommitted = Vote::new(vote.leader_id().get_term(), id.clone());
            self.write_vote(&uncommitted).map_err(Error::Write)?;
        }
        self.early = Some(Early { id, to });
        Ok(())
    }

    /// Whether `vote` is node `id`'s own.
    fn leads(&self, vote: &Vote<C::NodeId>, id: &C::NodeId) -> bool {
        vote.leader_id().voted_for().as_ref() == Some(id)
    }

    /// Stores `vote`, synced, and keeps it as the last vote.
    fn write_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), rocksdb::Error> {
        let bytes = postcard::to_allocvec(vote).expect("a vote always encodes");
        self.db.put_cf_opt(cf(&self.db, CF_META), KEY_VOTE, bytes, &synced())?;
        self.vote = Some(vote.clone());
        Ok(())
    }

    /// Where an append that starts at `first` goes early, with the vote and `prev` to send it
    /// under: only this node's appends as the committed leader, following the last entry
    /// appended, and only when some follower wants them.
    fn early_target(&self, first: u64) -> Option<EarlyAppend<C>> {
        let early = self.early.as_ref()?;
        let vote = self.vote.as_ref().filter(|v| v.is_committed() && self.leads(v, &early.id))?;
        let prev = self.last_appended.as_ref().filter(|prev| prev.index + 1 == first)?;
        early.to.wants(vote, prev).then(|| EarlyAppend {
            to: early.to.clone(),
            vote: vote.clone(),
            prev: prev.clone(),
        })
    }

    /// Moves entries from RocksDB's `logs` column family, where versions before the log files
    /// kept them, into the files (synced), then deletes them there (synced).
    fn move_entries_from_rocksdb(&mut self) -> std::io::Result<()> {
        let logs = cf(&self.db, CF_LOGS);
        // A move cut short by a crash left some entries in both places.
        let present = self.files.next_index();
        let mut moved = 0;
        let mut chunk: Vec<Vec<u8>> = Vec::new();
        let mut chunk_first = None;
        for item in self.db.iterator_cf(logs, IteratorMode::Start) {
            let (key, value) = item.map_err(std::io::Error::other)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(std::io::Error::other)?);
            if present.is_some_and(|next| index < next) {
                moved += 1;
                continue;
            }
            let first = *chunk_first.get_or_insert(index);
            if index != first + chunk.len() as u64 || chunk.len() == 4096 {
                self.files.append(first, &chunk)?;
                moved += chunk.len();
                chunk.clear();
                chunk_first = Some(index);
            }
            chunk.push(value.to_vec());
        }
        if let Some(first) = chunk_first.filter(|_| !chunk.is_empty()) {
            self.files.append(first, &chunk)?;
            moved += chunk.len();
        }
        if moved > 0 {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(logs, index_key(0), index_key(u64::MAX));
            batch.delete_cf(logs, index_key(u64::MAX));
            self.db.write_opt(batch, &synced()).map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// A handle that follows the committed index.
    pub fn committed_index(&self) -> CommittedIndex {
        self.committed.clone()
    }

    fn last_purged(&self) -> Result<Option<LogId<C::NodeId>>, StorageIOError<C::NodeId>> {
        get_meta(&self.db, KEY_LAST_PURGED).map_err(|e| StorageIOError::read(&e))
    }
}

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
enum MetaError {
    #[error(transparent)]
    Db(#[from] rocksdb::Error),
    #[error(transparent)]
    Decode(#[from] postcard::Error),
}

impl MetaError {
    /// The error of opening the store, `what` naming the value.
    fn opening(self, what: &'static str) -> Error {
        match self {
            MetaError::Db(e) => Error::Read(e),
            MetaError::Decode(source) => Error::Decode { what, source },
        }
    }
}

fn get_meta<T: DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, MetaError> {
    let Some(bytes) = db.get_cf(cf(db, CF_META), key)? else { return Ok(None) };
    Ok(Some(postcard::from_bytes(&bytes)?))
}

fn read_range<C>(
    files: &LogFilesReader,
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
    let end = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    let records = files.read(start, end).map_err(|e| StorageIOError::read_logs(&e))?;
    records
        .iter()
        .map(|r| postcard::from_bytes(r).map_err(|e| StorageIOError::read_logs(&e).into()))
        .collect()
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
        read_range::<C>(&self.files, range)
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
        read_range::<C>(&self.files.reader(), range)
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
        let last_log_id = match self.files.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((_, record)) => {
                let entry: C::Entry =
                    postcard::from_bytes(&record).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.get_log_id().clone())
            }
            None => last_purged_log_id.clone(),
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { files: self.files.reader(), _c: PhantomData }
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.write_vote(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.vote.clone())
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
        self.committed.set(committed.as_ref().map(|id| id.index));
        self.committed_id = committed;
        Ok(())
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        let committed = get_meta::<Option<LogId<C::NodeId>>>(&self.db, KEY_COMMITTED)
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(committed.flatten())
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
        let mut entries = entries.into_iter().peekable();
        let Some(first) = entries.peek().map(|entry| entry.get_log_id().index) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let early = self.early_target(first);
        let mut records = Vec::new();
        let mut copies = Vec::new();
        let mut last = None;
        for entry in entries {
            records
                .push(postcard::to_allocvec(&entry).map_err(|e| StorageIOError::write_logs(&e))?);
            last = Some(entry.get_log_id().clone());
            if early.is_some() {
                copies.push(entry);
            }
        }
        if let Some(EarlyAppend { to, vote, prev }) = early {
            to.send(vote, prev, copies, self.committed_id.clone());
        }
        self.files.append(first, &records).map_err(|e| StorageIOError::write_logs(&e))?;
        self.last_appended = last;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.last_appended = None;
        self.files.truncate(log_id.index).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        // The purge point is durable before any segment goes: a crash in between leaves
        // segments that the next opening removes, never a hole below the first entry. The
        // synced write also makes every earlier state-machine apply durable.
        let marker = postcard::to_allocvec(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.db
            .put_cf_opt(cf(&self.db, CF_META), KEY_LAST_PURGED, marker, &synced())
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.files.purge(log_id.index).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use baton_raft::TypeConfig;
    use baton_raft::typ::Entry;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    type Id = LogId<u64>;
    /// What one early append carried: vote, previous log id, entry indexes, commit index.
    type Sent = (Vote<u64>, Id, Vec<u64>, Option<Id>);

    /// Records what it is handed; wants entries when `wanted`.
    #[derive(Default)]
    struct Recorder {
        wanted: bool,
        sent: Mutex<Vec<Sent>>,
    }

    impl EarlyReplication<TypeConfig> for Recorder {
        fn wants(&self, _: &Vote<u64>, _: &Id) -> bool {
            self.wanted
        }

        fn send(&self, vote: Vote<u64>, prev: Id, entries: Vec<Entry>, committed: Option<Id>) {
            let indexes = entries.iter().map(|e| e.log_id.index).collect();
            self.sent.lock().expect("lock").push((vote, prev, indexes, committed));
        }
    }

    /// A store of node 1 that hands its early appends to a recorder wanting them when `wanted`.
    fn early_store(dir: &Path, wanted: bool) -> (LogStore<TypeConfig>, Arc<Recorder>) {
        let mut log = crate::open(dir).expect("open").log;
        let recorder = Arc::new(Recorder { wanted, ..Recorder::default() });
        log.replicate_early(1, recorder.clone()).expect("early replication");
        (log, recorder)
    }

    fn sent(recorder: &Recorder) -> Vec<Sent> {
        recorder.sent.lock().expect("lock").clone()
    }

    #[tokio::test]
    async fn a_leaders_appends_go_early_once_the_entry_before_them_is_known() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, recorder) = early_store(dir.path(), true);
        let leader = Vote::new_committed(1, 1);
        log.save_vote(&leader).await.expect("vote");
        log.blocking_append([entry(1)]).await.expect("append");
        assert_eq!(sent(&recorder), vec![], "the entry before the first is not known");
        log.blocking_append([entry(2), entry(3)]).await.expect("append");
        log.save_committed(Some(entry(2).log_id)).await.expect("committed");
        log.blocking_append([entry(4)]).await.expect("append");
        assert_eq!(
            sent(&recorder),
            vec![
                (leader, entry(1).log_id, vec![2, 3], None),
                (leader, entry(3).log_id, vec![4], Some(entry(2).log_id)),
            ]
        );
        let read = log.try_get_log_entries(1..=4).await.expect("read");
        assert_eq!(read, (1..=4).map(entry).collect::<Vec<_>>(), "and are written as ever");
    }

    #[tokio::test]
    async fn appends_under_another_nodes_vote_or_an_uncommitted_one_do_not_go_early() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, recorder) = early_store(dir.path(), true);
        log.save_vote(&Vote::new_committed(1, 2)).await.expect("vote");
        log.blocking_append([entry(1)]).await.expect("append");
        log.blocking_append([entry(2)]).await.expect("append");
        log.save_vote(&Vote::new(2, 1)).await.expect("vote");
        log.blocking_append([entry(3)]).await.expect("append");
        assert_eq!(sent(&recorder), vec![]);
    }

    #[tokio::test]
    async fn nothing_goes_early_when_no_follower_wants_it_or_after_a_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, unwanted) = early_store(dir.path(), false);
        log.save_vote(&Vote::new_committed(1, 1)).await.expect("vote");
        log.blocking_append([entry(1)]).await.expect("append");
        log.blocking_append([entry(2)]).await.expect("append");
        assert_eq!(sent(&unwanted), vec![]);
        drop(log);

        let (mut log, recorder) = early_store(dir.path(), true);
        log.save_vote(&Vote::new_committed(2, 1)).await.expect("vote");
        log.blocking_append([entry(3)]).await.expect("append");
        log.truncate(entry(3).log_id).await.expect("truncate");
        log.blocking_append([entry(3)]).await.expect("append");
        assert_eq!(sent(&recorder), vec![], "after opening or truncating, the prev is not known");
        log.blocking_append([entry(4)]).await.expect("append");
        assert_eq!(sent(&recorder).len(), 1);
    }

    #[tokio::test]
    async fn a_leader_restarted_with_early_replication_must_win_a_new_election() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, _) = early_store(dir.path(), true);
            log.save_vote(&Vote::new_committed(3, 1)).await.expect("vote");
        }
        let (mut log, _) = early_store(dir.path(), true);
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 1)));
        drop(log);
        let mut plain = crate::open(dir.path()).expect("open").log;
        assert_eq!(
            plain.read_vote().await.expect("vote"),
            Some(Vote::new(3, 1)),
            "stored uncommitted, not only reported so"
        );
        plain.save_vote(&Vote::new_committed(4, 2)).await.expect("vote");
        drop(plain);
        let (mut log, _) = early_store(dir.path(), true);
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(Vote::new_committed(4, 2)),
            "another leader's vote is left as it is"
        );
    }

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn entries_an_earlier_version_kept_in_rocksdb_move_to_the_log_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = crate::db::open(dir.path()).expect("open");
            for index in 1..=10 {
                let bytes = postcard::to_allocvec(&entry(index)).expect("encode");
                db.put_cf(cf(&db, CF_LOGS), index_key(index), bytes).expect("put");
            }
        }
        let store = crate::open(dir.path()).expect("open and move");
        let mut log = store.log;
        let read = log.try_get_log_entries(1..=10).await.expect("read");
        assert_eq!(read, (1..=10).map(entry).collect::<Vec<_>>());
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id.map(|id| id.index), Some(10));
        let left = log.db.iterator_cf(cf(&log.db, CF_LOGS), IteratorMode::Start).count();
        assert_eq!(left, 0, "nothing is left behind in RocksDB");
    }
}
