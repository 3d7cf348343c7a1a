//! The state machine on RocksDB: `baton_core::State` in memory, every applied change and the
//! applied log id written to RocksDB in one batch, and the current snapshot kept beside them.
//!
//! Durability: apply batches are not synced on their own. RocksDB has a single write-ahead log,
//! and its next synced write (a vote, a snapshot, and the purge point, which is written before
//! any of the log is deleted) makes them durable. After a crash the state machine is therefore
//! behind the log by what it applied since, and openraft re-applies that from the log (whose
//! entries are synced before they are acknowledged, so an entry is always on disk before it is
//! applied). It never runs ahead of the log, and the log is never purged past what the state
//! machine has made durable, because the purge point is a synced write that comes after the
//! applies it covers.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use baton_core::{Decision, Query, QueryResult, Record, Response, State};
use baton_raft::TypeConfig;
use baton_raft::typ::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{DB, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::db::{CF_SM, CF_SM_META, cf, synced, unsynced};
use crate::error::{Error, Result};

const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";

/// What the state machine has applied: the state and the Raft position it reflects.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    /// The replicated state.
    pub state: State,
    /// The last log id applied to `state`.
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership,
}

/// Read access to the applied state, shared with the API layer.
#[derive(Clone)]
pub struct StateReader {
    inner: Arc<RwLock<Applied>>,
}

impl StateReader {
    /// Answers a query against the locally applied state.
    pub fn query(&self, query: &Query) -> QueryResult {
        self.read().state.query(query)
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.read().last_applied
    }

    /// Read access to everything applied. Keep the guard short: `apply` waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.inner
            .read()
            .expect("the state lock is never poisoned: apply does not panic while holding it")
    }
}

/// Told what the state machine decides, after it is written: the node publishes it as events.
pub trait Observer: Send + Sync + 'static {
    /// A decision applied from request `position` of the entry at log index `index` (an entry
    /// holds the requests the leader proposed together).
    fn decided(&self, index: u64, position: usize, decision: Decision);
    /// Nothing at or below log index `index` will be reported: it was applied before this
    /// process started, or a snapshot replaced it.
    fn skipped_to(&self, index: u64);
}

/// Baton's Raft state machine.
pub struct StateMachine {
    db: Arc<DB>,
    inner: Arc<RwLock<Applied>>,
    snapshot_seq: u64,
    observer: Option<Arc<dyn Observer>>,
}

fn decode<T: for<'a> Deserialize<'a>>(what: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| Error::Decode { what, source })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encodes Baton's in-memory types without failing")
}

impl StateMachine {
    /// Loads the applied state from `db`.
    pub(crate) fn load(db: Arc<DB>) -> Result<Self> {
        let mut applied = Applied::default();
        for item in db.iterator_cf(cf(&db, CF_SM), IteratorMode::Start) {
            let (key, value) = item?;
            applied.state.restore(decode("record key", &key)?, decode("record", &value)?);
        }
        let meta = cf(&db, CF_SM_META);
        if let Some(bytes) = db.get_cf(meta, KEY_APPLIED)? {
            applied.last_applied = decode("applied log id", &bytes)?;
        }
        if let Some(bytes) = db.get_cf(meta, KEY_MEMBERSHIP)? {
            applied.membership = decode("membership", &bytes)?;
        }
        Ok(Self { db, inner: Arc::new(RwLock::new(applied)), snapshot_seq: 0, observer: None })
    }

    /// Reports every decision applied from now on to `observer` (which is told first that
    /// everything applied so far will not be).
    pub fn observe(&mut self, observer: Arc<dyn Observer>) {
        if let Some(applied) = self.read_lock().last_applied {
            observer.skipped_to(applied.index);
        }
        self.observer = Some(observer);
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, Applied> {
        self.inner.read().expect("the state lock is never poisoned")
    }

    /// A reader sharing this state machine's applied state.
    pub fn reader(&self) -> StateReader {
        StateReader { inner: self.inner.clone() }
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.inner
            .write()
            .expect("the state lock is never poisoned: apply does not panic while holding it")
    }

    fn current_snapshot(&self) -> std::result::Result<Option<Snapshot>, StorageError> {
        let meta_cf = cf(&self.db, CF_SM_META);
        fn read_err<E: std::error::Error + 'static>(e: &E) -> StorageIOError<baton_raft::NodeId> {
            StorageIOError::read_snapshot(None, e)
        }
        let Some(meta) = self.db.get_cf(meta_cf, KEY_SNAPSHOT_META).map_err(|e| read_err(&e))?
        else {
            return Ok(None);
        };
        let meta: SnapshotMeta = postcard::from_bytes(&meta).map_err(|e| read_err(&e))?;
        let data = self
            .db
            .get_cf(meta_cf, KEY_SNAPSHOT_DATA)
            .map_err(|e| read_err(&e))?
            .unwrap_or_default();
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

/// Writes a snapshot's meta and data (synced), so `get_current_snapshot` finds it after a
/// restart and the log can be purged up to it.
fn save_snapshot(db: &DB, batch: &mut WriteBatch, meta: &SnapshotMeta, data: &[u8]) {
    let meta_cf = cf(db, CF_SM_META);
    batch.put_cf(meta_cf, KEY_SNAPSHOT_META, encode(meta));
    batch.put_cf(meta_cf, KEY_SNAPSHOT_DATA, data);
}

/// Builds snapshots from a copy of the state taken when the builder was created.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    applied: Applied,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot, StorageError> {
        let data = encode(&self.applied.state);
        let snapshot_id = match self.applied.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, self.seq),
            None => format!("empty-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.membership.clone(),
            snapshot_id,
        };
        let mut batch = WriteBatch::default();
        save_snapshot(&self.db, &mut batch, &meta, &data);
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.read_lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> std::result::Result<Vec<Vec<Response>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let db = self.db.clone();
        let mut batch = WriteBatch::default();
        let mut responses = Vec::new();
        let mut decisions = Vec::new();
        // Every record a request changed, written once with its value after the whole apply
        // (an entry's requests, and consecutive entries, often touch the same group).
        let mut touched = BTreeSet::new();
        let mut applied = self.write_lock();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let answers = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(requests) => {
                    let mut answers = Vec::with_capacity(requests.len());
                    for (position, request) in requests.iter().enumerate() {
                        let effects = applied.state.apply_tracked(request);
                        if let Some(decision) = effects.decision {
                            decisions.push((entry.log_id.index, position, decision));
                        }
                        touched.extend(effects.touched);
                        answers.push(effects.response);
                    }
                    answers
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    batch.put_cf(cf(&db, CF_SM_META), KEY_MEMBERSHIP, encode(&applied.membership));
                    Vec::new()
                }
            };
            responses.push(answers);
        }
        let sm = cf(&db, CF_SM);
        for key in touched {
            match applied.state.record(&key) {
                Some(record) => batch.put_cf(sm, encode(&key), encode::<Record>(&record)),
                None => batch.delete_cf(sm, encode(&key)),
            }
        }
        batch.put_cf(cf(&db, CF_SM_META), KEY_APPLIED, encode(&applied.last_applied));
        db.write_opt(batch, &unsynced()).map_err(|e| StorageIOError::write_state_machine(&e))?;
        drop(applied);
        if let Some(observer) = &self.observer {
            for (index, position, decision) in decisions {
                observer.decided(index, position, decision);
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        let applied = self.read_lock().clone();
        SnapshotBuilder { db: self.db.clone(), applied, seq: self.snapshot_seq }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), StorageError> {
        let data = snapshot.into_inner();
        let whole: State = postcard::from_bytes(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // Rebuilt from its records, as a restart loads it, so that its indexes are built too.
        let state = State::from_records(whole.records());
        let signature = meta.signature();
        let write_err =
            |e: &rocksdb::Error| StorageIOError::write_snapshot(Some(signature.clone()), e);

        // Replace the stored records, the applied position and the snapshot in one synced batch.
        let sm = cf(&self.db, CF_SM);
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(sm, IteratorMode::Start) {
            let (key, _) = item.map_err(|e| write_err(&e))?;
            batch.delete_cf(sm, key);
        }
        for (key, record) in state.records() {
            batch.put_cf(sm, encode(&key), encode(&record));
        }
        let meta_cf = cf(&self.db, CF_SM_META);
        batch.put_cf(meta_cf, KEY_APPLIED, encode(&meta.last_log_id));
        batch.put_cf(meta_cf, KEY_MEMBERSHIP, encode(&meta.last_membership));
        save_snapshot(&self.db, &mut batch, meta, &data);
        self.db.write_opt(batch, &synced()).map_err(|e| write_err(&e))?;

        *self.write_lock() = Applied {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        if let (Some(observer), Some(last)) = (&self.observer, meta.last_log_id) {
            observer.skipped_to(last.index);
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot>, StorageError> {
        self.current_snapshot()
    }
}
