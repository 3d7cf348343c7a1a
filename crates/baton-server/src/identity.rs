//! The data directory's identity: which cluster and node wrote it. A node refuses a directory
//! written by another cluster or another node, or one it cannot write, before touching it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File in the data directory naming its cluster and node.
pub const IDENTITY_FILE: &str = "IDENTITY";
/// Subdirectory holding the RocksDB database.
pub const DB_DIR: &str = "db";

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    cluster_name: String,
    node_id: u64,
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The directory belongs to another cluster or node.
    #[error(
        "data directory {dir} belongs to cluster {found_cluster:?} node {found_node}, but this node is cluster {cluster:?} node {node}; \
         refusing to start (nothing was changed). Point data_dir at this node's own directory."
    )]
    Foreign {
        /// The directory.
        dir: PathBuf,
        /// Cluster named in the directory.
        found_cluster: String,
        /// Node named in the directory.
        found_node: u64,
        /// This node's cluster.
        cluster: String,
        /// This node's id.
        node: u64,
    },
    /// The directory has files but no identity.
    #[error(
        "data directory {0} is not empty and is not a Baton data directory; refusing to start (nothing was changed)"
    )]
    NotBaton(PathBuf),
    /// The identity file is unreadable.
    #[error("data directory {dir} has an unreadable {IDENTITY_FILE} file: {reason}")]
    Unreadable {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The directory cannot be created or written.
    #[error("data directory {dir} cannot be written: {source}")]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Checks (and on first start, creates) the data directory. Returns the RocksDB path.
pub fn prepare(dir: &Path, cluster_name: &str, node_id: u64) -> Result<PathBuf, IdentityError> {
    let expected = Identity { cluster_name: cluster_name.into(), node_id };
    let not_writable = |source| IdentityError::NotWritable { dir: dir.to_path_buf(), source };
    let identity_path = dir.join(IDENTITY_FILE);
    let fresh = match std::fs::read_to_string(&identity_path) {
        Ok(text) => {
            let found: Identity = toml::from_str(&text).map_err(|e| IdentityError::Unreadable {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            })?;
            if found != expected {
                return Err(IdentityError::Foreign {
                    dir: dir.to_path_buf(),
                    found_cluster: found.cluster_name,
                    found_node: found.node_id,
                    cluster: expected.cluster_name,
                    node: node_id,
                });
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.is_dir() && std::fs::read_dir(dir).map_err(not_writable)?.next().is_some() {
                return Err(IdentityError::NotBaton(dir.to_path_buf()));
            }
            true
        }
        Err(e) => return Err(not_writable(e)),
    };

    // Prove we can write before RocksDB creates anything.
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    let probe = dir.join(".write-probe");
    std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(b"probe").and_then(|_| f.sync_all()))
        .map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)?;

    if fresh {
        let text = toml::to_string(&expected).expect("the identity serializes");
        let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(not_writable)?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(not_writable)?;
        std::fs::rename(&tmp, &identity_path).map_err(not_writable)?;
    }
    Ok(dir.join(DB_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_writes_identity_and_restart_accepts_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("n1");
        prepare(&data, "c", 1).expect("fresh directory");
        prepare(&data, "c", 1).expect("same identity on restart");
    }

    #[test]
    fn another_clusters_directory_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(dir.path(), "other", 1).expect("fresh");
        let before: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        let err = prepare(dir.path(), "mine", 1).expect_err("foreign").to_string();
        assert!(err.contains("\"other\"") && err.contains("\"mine\""), "{err}");
        let after: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn another_nodes_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(dir.path(), "c", 1).expect("fresh");
        assert!(matches!(
            prepare(dir.path(), "c", 2),
            Err(IdentityError::Foreign { found_node: 1, .. })
        ));
    }

    #[test]
    fn non_empty_directory_without_identity_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("precious.txt"), "data").expect("write");
        assert!(matches!(prepare(dir.path(), "c", 1), Err(IdentityError::NotBaton(_))));
    }

    #[test]
    fn unwritable_location_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").expect("write");
        // A path below a regular file cannot be created, even by root.
        assert!(matches!(
            prepare(&file.join("data"), "c", 1),
            Err(IdentityError::NotWritable { .. })
        ));
    }
}
