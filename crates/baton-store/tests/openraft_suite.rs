//! openraft's own storage conformance suite, run against the RocksDB store.

use baton_raft::TypeConfig;
use baton_store::{LogStore, StateMachine};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<TypeConfig>, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = baton_store::open(dir.path()).expect("a fresh store opens");
        Ok((dir, store.log, store.state_machine))
    }
}

#[test]
fn rocksdb_store_passes_the_openraft_storage_suite() {
    Suite::test_all(RocksBuilder).expect("every suite case passes");
}
