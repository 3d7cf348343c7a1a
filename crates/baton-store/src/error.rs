//! Errors of opening the store (and of preparing it for Raft). Errors during Raft operation are openraft `StorageError`s,
//! which stop the Raft node (a storage fault must never be answered and ignored).

use std::path::PathBuf;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB refused to open the directory (permissions, lock held, corruption).
    #[error("cannot open the database in {path}: {source}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// RocksDB's reason.
        source: rocksdb::Error,
    },
    /// The log's segment files could not be opened or read, or are damaged.
    #[error("cannot open the Raft log in {path}: {source}")]
    Log {
        /// The log's directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A read while loading the state failed.
    #[error("cannot read the database: {0}")]
    Read(#[from] rocksdb::Error),
    /// A write while preparing the store for Raft failed.
    #[error("cannot write the database: {0}")]
    Write(rocksdb::Error),
    /// A stored value could not be decoded.
    #[error("stored {what} cannot be decoded: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's reason.
        source: postcard::Error,
    },
}

/// Result alias for opening the store.
pub type Result<T> = std::result::Result<T, Error>;
