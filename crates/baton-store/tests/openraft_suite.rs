//! openraft's own storage conformance suite, run against the store (log segment files and RocksDB).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_raft::TypeConfig;
use baton_store::{Closer, LogStore, StateMachine};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

/// Builds a fresh store per suite case, keeping each store's closer: the databases are closed
/// here, in order, before the process exits (a database left to close on another thread while
/// the process exits can abort it).
#[derive(Clone, Default)]
struct FreshStores {
    closers: Arc<Mutex<Vec<Closer>>>,
}

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, TempDir> for FreshStores {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<TypeConfig>, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = baton_store::open(dir.path()).expect("a fresh store opens");
        self.closers.lock().expect("lock").push(store.closer);
        Ok((dir, store.log, store.state_machine))
    }
}

#[test]
fn the_store_passes_the_openraft_storage_suite() {
    let builder = FreshStores::default();
    Suite::test_all(builder.clone()).expect("every suite case passes");
    let closers = std::mem::take(&mut *builder.closers.lock().expect("lock"));
    for closer in closers {
        assert!(closer.close(Duration::from_secs(10)), "a store was still in use after its case");
    }
}
