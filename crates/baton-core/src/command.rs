//! Commands (the replicated log's payload), their responses, and read-only queries.

use serde::{Deserialize, Serialize};

use crate::group::{Group, GroupConfig};
use crate::ids::{ClientTime, Epoch, GroupKey, Scope, SessionId, Timestamp};
use crate::session::{HeartbeatRecord, Reason, Session, Stage};

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
        /// Refuse while any session is active (AVEVA v1); the leader fills `active`.
        refuse_if_active: bool,
        /// The sessions the leader saw heartbeat within the failover timeout.
        active: Vec<SessionId>,
    },
    /// Adds a session to a group, or confirms an identical one.
    CreateSession {
        /// The group.
        group: GroupKey,
        /// The session's id.
        session: SessionId,
        /// Its display name.
        name: Option<String>,
    },
    /// Creates or renames a session (AVEVA v1-preview PUT).
    PutSession {
        /// The group.
        group: GroupKey,
        /// The session's id.
        session: SessionId,
        /// Its display name.
        name: Option<String>,
    },
    /// Removes a session. If it holds the baton, a hand-over starts; the baton moves on when
    /// its last grant lapses.
    DeleteSession {
        /// The group.
        group: GroupKey,
        /// The session.
        session: SessionId,
    },
    /// Gives the baton to `session`. Decided by the leader's detector; applied only if the
    /// group is still as the decision saw it (`expected_epoch`, `replaces`).
    Grant {
        /// The group.
        group: GroupKey,
        /// The new holder.
        session: SessionId,
        /// Pending (a hand-over) or Primary (the first grant of a group).
        stage: Stage,
        /// The group's epoch when the decision was made.
        expected_epoch: Epoch,
        /// The holder whose grant has lapsed and is replaced, if any.
        replaces: Option<SessionId>,
        /// The freshest last-data-processed time the leader knows.
        last_data_processed_time: Option<ClientTime>,
        /// Why.
        reason: Reason,
    },
    /// Makes a PendingPrimary Primary (its heartbeat after the grant).
    Promote {
        /// The group.
        group: GroupKey,
        /// The holder.
        session: SessionId,
        /// The grant's epoch.
        epoch: Epoch,
    },
    /// The holder lets go during a hand-over; it is told Secondary.
    Relinquish {
        /// The group.
        group: GroupKey,
        /// The holder.
        session: SessionId,
        /// The grant's epoch.
        epoch: Epoch,
        /// The freshest last-data-processed time the leader knows.
        last_data_processed_time: Option<ClientTime>,
    },
    /// The holder's grant has lapsed and nobody can take the baton yet.
    Expire {
        /// The group.
        group: GroupKey,
        /// The holder.
        session: SessionId,
        /// The grant's epoch.
        epoch: Epoch,
        /// The freshest last-data-processed time the leader knows.
        last_data_processed_time: Option<ClientTime>,
    },
    /// Starts a hand-over away from the current holder (forced, preempted).
    RequestHandover {
        /// The group.
        group: GroupKey,
        /// The grant's epoch.
        expected_epoch: Epoch,
        /// Why.
        reason: Reason,
    },
    /// Sets (`Some(expiry)`) or removes (`None`) a Primary role override.
    SetOverride {
        /// The group.
        group: GroupKey,
        /// The session.
        session: SessionId,
        /// `None`: Off. `Some(None)`: Primary until turned off. `Some(Some(ms))`: Primary
        /// for `ms` milliseconds from the command's time.
        primary_for_ms: Option<Option<u64>>,
    },
    /// Removes an override that has expired (only the one set at `set_at`).
    ClearExpiredOverride {
        /// The group.
        group: GroupKey,
        /// The session.
        session: SessionId,
        /// Identifies the override.
        set_at: Timestamp,
    },
    /// Records sessions' latest heartbeats and the group's last processed time.
    Checkpoint {
        /// The group.
        group: GroupKey,
        /// Latest heartbeat per session.
        heartbeats: Vec<(SessionId, HeartbeatRecord)>,
        /// The Primary's latest last-data-processed time.
        last_data_processed_time: Option<ClientTime>,
    },
}

/// The unit of replicated state a command may touch; storage keeps one record per key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordKey {
    /// A group with everything inside it.
    Group(GroupKey),
}

impl Command {
    /// The group this command addresses.
    pub fn group(&self) -> &GroupKey {
        match self {
            Command::CreateGroup { key, .. }
            | Command::PutGroup { key, .. }
            | Command::DeleteGroup { key, .. } => key,
            Command::CreateSession { group, .. }
            | Command::PutSession { group, .. }
            | Command::DeleteSession { group, .. }
            | Command::Grant { group, .. }
            | Command::Promote { group, .. }
            | Command::Relinquish { group, .. }
            | Command::Expire { group, .. }
            | Command::RequestHandover { group, .. }
            | Command::SetOverride { group, .. }
            | Command::ClearExpiredOverride { group, .. }
            | Command::Checkpoint { group, .. } => group,
        }
    }

    /// The one record this command may change: its group (sessions and baton live inside it).
    pub fn record_key(&self) -> RecordKey {
        RecordKey::Group(self.group().clone())
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
    /// A session was created, renamed or confirmed.
    Session {
        /// The session after the command.
        session: Session,
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
    },
    /// The group still has active sessions (AVEVA v1 refuses to delete it).
    #[error("failover group {} has active sessions and cannot be deleted", .0.group)]
    GroupHasActiveSessions(GroupKey),
    /// No session with that id in the group.
    #[error("client session {session} does not exist in failover group {}", .group.group)]
    SessionNotFound {
        /// The group.
        group: GroupKey,
        /// The session.
        session: SessionId,
    },
    /// A session with that id exists with another configuration.
    #[error("client session {session} already exists with a different configuration")]
    SessionExists {
        /// The session.
        session: SessionId,
    },
    /// The group changed after the leader decided this command; it was not applied, and the
    /// leader decides again.
    #[error("failover group {} changed since this decision was made", .0.group)]
    Superseded(GroupKey),
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
    Group(Option<Box<Group>>),
    /// The groups of the scope.
    Groups(Vec<Group>),
}
