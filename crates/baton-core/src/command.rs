//! Commands (the replicated log's payload), their responses, and read-only queries.

use serde::{Deserialize, Serialize};

use crate::group::{Group, GroupConfig};
use crate::ids::{GroupKey, Scope, Timestamp};

/// One entry of the replicated log: a command plus the time the leader chose for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Leader time at proposal. Every replica applies the command "at" this time.
    pub at: Timestamp,
    /// What to do.
    pub command: Command,
}

/// A state change. Each command touches exactly one [`RecordKey`], which lets storage persist
/// the change incrementally and lets a request commit whole or not at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a group, or confirms an identical one (AVEVA POST).
    CreateGroup {
        /// The group's address.
        key: GroupKey,
        /// Its configuration.
        config: GroupConfig,
    },
    /// Creates or replaces a group's configuration (AVEVA v1-preview PUT).
    PutGroup {
        /// The group's address.
        key: GroupKey,
        /// The new configuration.
        config: GroupConfig,
    },
    /// Deletes a group.
    DeleteGroup {
        /// The group's address.
        key: GroupKey,
    },
}

/// The unit of replicated state a command may touch; storage keeps one record per key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordKey {
    /// A group with everything inside it.
    Group(GroupKey),
}

impl Command {
    /// The one record this command may change.
    pub fn record_key(&self) -> RecordKey {
        match self {
            Command::CreateGroup { key, .. }
            | Command::PutGroup { key, .. }
            | Command::DeleteGroup { key } => RecordKey::Group(key.clone()),
        }
    }
}

/// How a group write changed the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The group did not exist and now does.
    Created,
    /// The group existed and its configuration changed.
    Updated,
    /// The group existed with exactly this configuration; nothing changed.
    Unchanged,
}

/// The deterministic outcome of applying a [`Request`]; identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A group was created, updated or confirmed.
    Group {
        /// The group after the command.
        group: Group,
        /// What happened to it.
        change: Change,
    },
    /// The addressed record was removed.
    Deleted,
    /// The command was refused; the state did not change.
    Rejected(Rejection),
}

/// Why a command was refused. Rejections are results, not failures: they are committed and
/// returned identically by every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// No group at that address.
    #[error("failover group {0} does not exist")]
    GroupNotFound(GroupKey),
    /// A group with that id exists with another configuration.
    #[error("failover group {} already exists with a different configuration", .key.group)]
    GroupExists {
        /// The group's address.
        key: GroupKey,
        /// The configuration it has.
        existing: GroupConfig,
    },
}

/// A read-only question about the state. Queries are values so that a follower can forward
/// them to the leader for a linearizable answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// One group.
    Group(GroupKey),
    /// Every group of a scope, ordered by id.
    Groups(Scope),
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryResult {
    /// The group, if it exists.
    Group(Option<Group>),
    /// The groups of the scope.
    Groups(Vec<Group>),
}
