//! Commands (the replicated log's payload), their responses, and read-only queries.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::group::{Group, GroupConfig};
use crate::history::{Candidate, Decision};
use crate::identity::{Actor, AuditEntry, Credential, Identity, IdentityName, Sealed};
use crate::ids::{ClientTime, Epoch, GroupKey, Scope, SessionId, TenantId, Timestamp};
use crate::session::{HeartbeatRecord, Reason, Session, Stage};

/// One entry of the replicated log: a command plus the time the leader chose for it and who
/// asked for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Leader time at proposal. Every replica applies the command "at" this time.
    pub at: Timestamp,
    /// What to do.
    pub command: Command,
    /// The authenticated caller; `None` for Baton's own decisions. A group created by a caller
    /// is owned by it, and audited changes record it.
    pub actor: Option<Actor>,
}

/// A state change. Each command touches exactly one [`RecordKey`], which lets storage persist
/// the change incrementally and lets a request commit whole or not at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a group, or confirms an identical one (AVEVA POST). With `members`, the group
    /// is created with them in the same step (HCX's appliances), and an existing group is a
    /// conflict.
    CreateGroup {
        /// The group's address.
        key: GroupKey,
        /// Its configuration.
        config: GroupConfig,
        /// Its first members.
        members: Vec<NewMember>,
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
        /// Every member the detector considered, with why it was or was not chosen (recorded
        /// in the group's history).
        considered: Vec<Candidate>,
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
        /// The member asked for, if any (see [`crate::Handover::to`]).
        to: Option<SessionId>,
        /// Refuse unless another member could take the baton now (HCX's "no healthy
        /// standby"); the leader fills `standby_ready` from its observations.
        require_standby: bool,
        /// Whether the leader saw a member ready to take over.
        standby_ready: bool,
    },
    /// Ends a forced hand-over that nobody can complete: the holder keeps the baton, so a
    /// failing forced failover leaves the group as it was.
    CancelHandover {
        /// The group.
        group: GroupKey,
        /// The holder's epoch.
        epoch: Epoch,
    },
    /// Changes members' priorities or eligibility, all or none (every member must exist).
    SetMembers {
        /// The group.
        group: GroupKey,
        /// The changes.
        members: Vec<MemberChange>,
    },
    /// Adds and removes allowed owners (Uplynk's delta form of [`Command::SetAllowedOwners`]).
    ChangeAllowedOwners {
        /// The group.
        group: GroupKey,
        /// Identities to add.
        add: BTreeSet<IdentityName>,
        /// Identities to remove.
        remove: BTreeSet<IdentityName>,
    },
    /// Attaches and detaches channels (resources that follow the holder, Uplynk's live
    /// channels). A channel belongs to at most one group of a scope.
    SetChannels {
        /// The group.
        group: GroupKey,
        /// Channels to attach.
        add: BTreeSet<String>,
        /// Channels to detach.
        remove: BTreeSet<String>,
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
    /// Records sessions' latest heartbeats and groups' last processed times, for many groups
    /// at once (one log entry per leader tick, not one per group). Groups deleted meanwhile
    /// are skipped.
    Checkpoint {
        /// One checkpoint per group.
        groups: Vec<GroupCheckpoint>,
    },
    /// Replaces the identities allowed to use a group besides its owner (empty: every member
    /// of the group's tenant).
    SetAllowedOwners {
        /// The group.
        group: GroupKey,
        /// The allowed owners.
        owners: BTreeSet<IdentityName>,
    },
    /// Creates the first administrator; refused once any identity exists.
    BootstrapAdmin {
        /// The administrator.
        identity: Identity,
    },
    /// Creates an identity; refused if the name was ever used.
    CreateIdentity {
        /// The identity.
        identity: Identity,
    },
    /// Replaces an active identity's secrets; the old ones stop working.
    RotateIdentity {
        /// Whose.
        name: IdentityName,
        /// The new token digest.
        token: Credential,
        /// The new sealed signing key, if the identity signs requests.
        signing_key: Option<Sealed>,
    },
    /// Revokes an identity for good.
    RevokeIdentity {
        /// Whose.
        name: IdentityName,
    },
    /// Forgets deleted groups' tombstones, each only at the epoch named (a key deleted again
    /// since has a newer one), once the leader knows their last grants have lapsed. Each
    /// epoch stays in its tenant's epoch floor, so a group created later under any of its keys
    /// still continues past it.
    PruneTombstones {
        /// The deleted groups and their tombstones' epochs.
        tombstones: Vec<(GroupKey, Epoch)>,
    },
}

/// A member a group is created with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMember {
    /// Its id.
    pub id: SessionId,
    /// Its display name.
    pub name: Option<String>,
    /// Its priority (see [`crate::Session::priority`]).
    pub priority: u32,
    /// Whether it may hold the baton.
    pub enabled: bool,
}

impl NewMember {
    /// A member with defaults: no name, priority 0, enabled.
    pub fn new(id: SessionId) -> Self {
        Self { id, name: None, priority: 0, enabled: true }
    }
}

/// A change to one member.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberChange {
    /// The member.
    pub session: SessionId,
    /// Its new priority, if it changes.
    pub priority: Option<u32>,
    /// Whether it may hold the baton, if that changes.
    pub enabled: Option<bool>,
}

/// The unit of replicated state a command may touch; storage keeps one record per key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordKey {
    /// A group with everything inside it.
    Group(GroupKey),
    /// An identity.
    Identity(IdentityName),
    /// One audit entry, by sequence number.
    Audit(u64),
    /// A group's decision history.
    History(GroupKey),
    /// The outcome of a keyed write: the identity and its key.
    Remembered(IdentityName, String),
    /// What is left of a deleted group: its own key, apart from a group re-created under the
    /// same key, so that both survive a restart and a snapshot.
    Tombstone(GroupKey),
    /// The highest epoch of a tenant's pruned tombstones.
    EpochFloor(TenantId),
}

impl Command {
    /// Whether only the leader itself may issue this command (its detector's grants, promotions,
    /// releases, expiries and checkpoints; the bootstrap administrator; a hand-over for any
    /// reason but an operator's forced failover, or one that does not require a ready standby):
    /// a caller's write, from the API or forwarded by another node, never may.
    pub fn is_leaders_own(&self) -> bool {
        if let Command::RequestHandover { reason, require_standby, .. } = self {
            return *reason != crate::Reason::Forced || !*require_standby;
        }
        matches!(
            self,
            Command::Grant { .. }
                | Command::Promote { .. }
                | Command::Relinquish { .. }
                | Command::Expire { .. }
                | Command::CancelHandover { .. }
                | Command::ClearExpiredOverride { .. }
                | Command::Checkpoint { .. }
                | Command::BootstrapAdmin { .. }
                | Command::PruneTombstones { .. }
        )
    }

    /// The command's name, for logs (which must never show its fields: some carry credentials).
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateGroup { .. } => "CreateGroup",
            Command::PutGroup { .. } => "PutGroup",
            Command::DeleteGroup { .. } => "DeleteGroup",
            Command::CreateSession { .. } => "CreateSession",
            Command::PutSession { .. } => "PutSession",
            Command::DeleteSession { .. } => "DeleteSession",
            Command::Grant { .. } => "Grant",
            Command::Promote { .. } => "Promote",
            Command::Relinquish { .. } => "Relinquish",
            Command::Expire { .. } => "Expire",
            Command::RequestHandover { .. } => "RequestHandover",
            Command::CancelHandover { .. } => "CancelHandover",
            Command::SetMembers { .. } => "SetMembers",
            Command::ChangeAllowedOwners { .. } => "ChangeAllowedOwners",
            Command::SetChannels { .. } => "SetChannels",
            Command::SetOverride { .. } => "SetOverride",
            Command::ClearExpiredOverride { .. } => "ClearExpiredOverride",
            Command::Checkpoint { .. } => "Checkpoint",
            Command::SetAllowedOwners { .. } => "SetAllowedOwners",
            Command::BootstrapAdmin { .. } => "BootstrapAdmin",
            Command::CreateIdentity { .. } => "CreateIdentity",
            Command::RotateIdentity { .. } => "RotateIdentity",
            Command::RevokeIdentity { .. } => "RevokeIdentity",
            Command::PruneTombstones { .. } => "PruneTombstones",
        }
    }

    /// The group this command addresses, if it addresses one.
    pub fn group(&self) -> Option<&GroupKey> {
        Some(match self {
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
            | Command::SetMembers { group, .. }
            | Command::ChangeAllowedOwners { group, .. }
            | Command::SetChannels { group, .. }
            | Command::CancelHandover { group, .. }
            | Command::SetOverride { group, .. }
            | Command::ClearExpiredOverride { group, .. }
            | Command::SetAllowedOwners { group, .. } => group,
            Command::Checkpoint { .. }
            | Command::BootstrapAdmin { .. }
            | Command::CreateIdentity { .. }
            | Command::RotateIdentity { .. }
            | Command::RevokeIdentity { .. }
            | Command::PruneTombstones { .. } => return None,
        })
    }

    /// Whether this command may change the text of the group it addresses (what
    /// [`crate::Group::text_bytes`] counts).
    pub fn may_change_text(&self) -> bool {
        matches!(
            self,
            Command::CreateGroup { .. }
                | Command::PutGroup { .. }
                | Command::DeleteGroup { .. }
                | Command::CreateSession { .. }
                | Command::PutSession { .. }
                | Command::DeleteSession { .. }
                | Command::SetChannels { .. }
                | Command::SetAllowedOwners { .. }
                | Command::ChangeAllowedOwners { .. }
        )
    }

    /// The records this command changes besides the audit trail and histories: its group
    /// (sessions and baton live inside it), its identity, or a checkpoint's groups.
    pub fn record_keys(&self) -> Vec<RecordKey> {
        match self {
            Command::BootstrapAdmin { identity } | Command::CreateIdentity { identity } => {
                vec![RecordKey::Identity(identity.name.clone())]
            }
            Command::RotateIdentity { name, .. } | Command::RevokeIdentity { name } => {
                vec![RecordKey::Identity(name.clone())]
            }
            Command::Checkpoint { groups } => {
                groups.iter().map(|c| RecordKey::Group(c.group.clone())).collect()
            }
            Command::DeleteGroup { key, .. } => {
                vec![RecordKey::Group(key.clone()), RecordKey::Tombstone(key.clone())]
            }
            // The group's own key too: a version before tombstones had keys of their own stored
            // one there, which would otherwise come back at the next restart.
            Command::PruneTombstones { tombstones } => tombstones
                .iter()
                .flat_map(|(key, _)| {
                    [
                        RecordKey::Tombstone(key.clone()),
                        RecordKey::Group(key.clone()),
                        RecordKey::EpochFloor(key.scope.tenant.clone()),
                    ]
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            command => vec![RecordKey::Group(
                command.group().expect("every other command addresses a group").clone(),
            )],
        }
    }
}

/// One group's part of a [`Command::Checkpoint`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCheckpoint {
    /// The group.
    pub group: GroupKey,
    /// Latest heartbeat per session.
    pub heartbeats: Vec<(SessionId, HeartbeatRecord)>,
    /// The Primary's latest last-data-processed time.
    pub last_data_processed_time: Option<ClientTime>,
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
        /// The group after the command (boxed: it is much larger than the other answers).
        group: Box<Group>,
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
    /// Heartbeats were checkpointed, or tombstones pruned: the leader's own housekeeping.
    Checkpointed,
    /// An identity was created, rotated or revoked.
    Identity(Box<Identity>),
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
    /// An identity with that name exists or existed (names are never reused).
    #[error("an identity named {0} already exists or existed")]
    IdentityExists(IdentityName),
    /// No active identity with that name.
    #[error("there is no active identity named {0}")]
    IdentityNotFound(IdentityName),
    /// The caller is not an active identity (revoked after it was authenticated).
    #[error("identity {0} is not active")]
    Unauthenticated(IdentityName),
    /// The caller may not do this (another tenant's group, not an allowed owner, not an
    /// administrator).
    #[error("identity {0} is not allowed to do this")]
    Forbidden(IdentityName),
    /// A channel to attach already belongs to another group.
    #[error("channel {channel} already belongs to failover group {group}")]
    ChannelTaken {
        /// The channel.
        channel: String,
        /// The group it belongs to.
        group: crate::GroupId,
    },
    /// A forced failover found no member ready to take the baton; nothing changed.
    #[error("no healthy standby in failover group {} can take over", .0.group)]
    NoStandby(GroupKey),
    /// Identities exist already; the bootstrap administrator is not needed.
    #[error("the cluster already has identities")]
    AlreadyBootstrapped,
    /// The idempotency key was used for another command or group.
    #[error("this idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// The state would go over one of the leader's [`crate::limits::Limits`]; refused before
    /// it was proposed. (Last, so that stored answers decode as before.)
    #[error("{0}")]
    OverLimit(crate::limits::OverLimit),
}

/// A read-only question about the state. Queries are values so that a follower can forward
/// them to the leader for a linearizable answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// One group.
    Group(GroupKey),
    /// Every group of a scope, ordered by id.
    Groups(Scope),
    /// Every group, ordered by key.
    AllGroups,
    /// Every identity, revoked ones included, ordered by name.
    Identities,
    /// One identity.
    Identity(IdentityName),
    /// Audit entries with `seq > after`, oldest first, at most `limit`, optionally only those
    /// of one group.
    Audit {
        /// Only this group's entries.
        group: Option<GroupKey>,
        /// Entries after this sequence number.
        after: u64,
        /// At most this many.
        limit: usize,
    },
    /// A group's last decisions, oldest first (empty for a group that has none, or none
    /// left).
    History(GroupKey),
    /// Every group of one tenant, in all its namespaces, ordered by key. (Last, so that
    /// earlier queries keep their encoding between nodes of two versions.)
    TenantGroups(crate::TenantId),
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryResult {
    /// The group, if it exists.
    Group(Option<Box<Group>>),
    /// The groups of the scope.
    Groups(Vec<Group>),
    /// Identities.
    Identities(Vec<Identity>),
    /// The identity, if it exists.
    Identity(Option<Box<Identity>>),
    /// Audit entries.
    Audit(Vec<AuditEntry>),
    /// Decisions, oldest first.
    History(Vec<Decision>),
}
