//! Failover groups and their configuration.

use serde::{Deserialize, Serialize};

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::identity::IdentityName;
use crate::ids::{ClientTime, Epoch, GroupKey, SessionId, Timestamp};
use crate::session::{Handover, HeartbeatAnswer, Holder, Role, Session, Stage};

/// A group's members by id: a sorted vector, not a tree. Groups have a handful of members, and
/// a `BTreeMap` allocates room for eleven in its first node, which made sessions most of the
/// memory of a node holding 100,000 groups. Stored and encoded exactly like a map.
pub type Sessions = litemap::LiteMap<SessionId, Session>;

/// Shortest failover timeout a group may have.
pub const MIN_FAILOVER_TIMEOUT_MS: u64 = 1_000;
/// Longest failover timeout a group may have (one day).
pub const MAX_FAILOVER_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1_000;
/// Longest name or description, in characters.
pub const MAX_TEXT_LEN: usize = 4_096;
/// What a client configures on a group. Two configurations are "the same" exactly when they are
/// equal; AVEVA's idempotent POST compares them this way.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupConfig {
    /// Display name (nullable on the AVEVA wire).
    pub name: Option<String>,
    /// Free-text description (nullable on the AVEVA wire).
    pub description: Option<String>,
    /// How long a member may stay silent before it is stale, in milliseconds.
    failover_timeout_ms: u64,
    /// How the baton is assigned (each dialect's rules map onto this).
    pub policy: Policy,
    /// Descriptive fields a dialect keeps for the group (HCX's service mesh, Uplynk's name).
    /// Never used to decide anything.
    pub labels: BTreeMap<String, String>,
    /// Only the owner, the allowed owners and administrators may see or use the group, in
    /// every API (Uplynk's model); otherwise every member of the tenant may while the group
    /// has no allowed owners.
    pub owners_only: bool,
}

/// Score margin (in hundredths of a point) a member must beat the holder by to preempt it, as
/// AVEVA groups use by default: 10 points.
pub const DEFAULT_PREEMPTION_MARGIN: u16 = 1_000;

/// How a group assigns the baton. The default is AVEVA's (rules 1 to 6 of the product
/// decisions); the other dialects set what they document.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// A healthy holder is preempted by a member whose score beats its own by this many
    /// hundredths of a point (for half a failover timeout); `None`: never by score (HCX:
    /// "no preemption").
    pub preemption_margin: Option<u16>,
    /// Members are ranked by their priority (lower first) before their score (Uplynk's
    /// prioritized mode).
    pub prioritized: bool,
    /// In prioritized mode, a healthy member of higher priority takes the baton back from the
    /// holder (Uplynk's `auto_failback`), gracefully.
    pub failback: bool,
    /// Nobody holds the baton: the holder is asked to let go and nobody is granted it
    /// (Uplynk's `no_slicer`).
    pub suspended: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            preemption_margin: Some(DEFAULT_PREEMPTION_MARGIN),
            prioritized: false,
            failback: false,
            suspended: false,
        }
    }
}

impl GroupConfig {
    /// Builds a configuration, checking the timeout range and text lengths.
    pub fn new(
        name: Option<String>,
        description: Option<String>,
        failover_timeout_ms: u64,
    ) -> Result<Self> {
        if !(MIN_FAILOVER_TIMEOUT_MS..=MAX_FAILOVER_TIMEOUT_MS).contains(&failover_timeout_ms) {
            return Err(Error::FailoverTimeoutOutOfRange { ms: failover_timeout_ms });
        }
        check_text("name", name.as_deref())?;
        check_text("description", description.as_deref())?;
        Ok(Self {
            name,
            description,
            failover_timeout_ms,
            policy: Policy::default(),
            labels: BTreeMap::new(),
            owners_only: false,
        })
    }

    /// This configuration with another policy.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// This configuration with these labels, each checked like a name. How many a group may
    /// have, and how large they may be together, are the leader's [`crate::Limits`].
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Result<Self> {
        for (key, value) in &labels {
            check_text("label", Some(key))?;
            check_text("label", Some(value))?;
        }
        self.labels = labels;
        Ok(self)
    }

    /// This configuration without its free text (name, description, labels).
    pub fn without_text(self) -> Self {
        Self { name: None, description: None, labels: BTreeMap::new(), ..self }
    }

    /// The group's failover timeout in milliseconds.
    pub fn failover_timeout_ms(&self) -> u64 {
        self.failover_timeout_ms
    }
}

fn check_text(field: &'static str, text: Option<&str>) -> Result<()> {
    let len = text.map_or(0, |t| t.chars().count());
    if len > MAX_TEXT_LEN {
        return Err(Error::TextTooLong { field, len, max: MAX_TEXT_LEN });
    }
    Ok(())
}

/// A failover group as replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Group {
    /// Where the group lives and its id.
    pub key: GroupKey,
    /// The client-supplied configuration.
    pub config: GroupConfig,
    /// When the group was first created (leader time).
    pub created_at: Timestamp,
    /// When the configuration last changed (leader time).
    pub updated_at: Timestamp,
    /// The members, by id.
    pub sessions: Sessions,
    /// Who holds the baton, if anyone.
    pub holder: Option<Holder>,
    /// The hand-over under way, if any.
    pub handover: Option<Handover>,
    /// The latest epoch granted; 0 before the first grant.
    pub epoch: Epoch,
    /// The last data processed time the Primary reported (checkpointed).
    pub last_data_processed_time: Option<ClientTime>,
    /// The longest failover timeout the current holder (or the member a hand-over is moving
    /// away from) may have been answered with, when the timeout was lowered while it held the
    /// baton (0 otherwise). A new leader re-arms grants
    /// with the longer of this and the current timeout.
    pub grace_ms: u64,
    /// The identity that created the group, if it was created by a caller.
    pub owner: Option<IdentityName>,
    /// Identities besides the owner that may use the group. Empty: every member of the
    /// group's tenant may.
    pub allowed_owners: BTreeSet<IdentityName>,
    /// Channels attached to the group (resources that follow its holder); each belongs to at
    /// most one group of a scope.
    pub channels: BTreeSet<String>,
}

/// What is left of a deleted group: enough that a group re-created under the same key continues
/// its epoch and does not hand the baton on while the deleted group's last grant may be valid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tombstone {
    /// The deleted group's last epoch.
    pub epoch: Epoch,
    /// The member that may have held its last grant when it was deleted (its holder, or the
    /// member a hand-over was moving away from), if any.
    pub holder: Option<SessionId>,
    /// The longest timeout that holder may have been answered with.
    pub failover_timeout_ms: u64,
}

/// Why an operator's forced failover cannot even be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForceRefused {
    /// Nobody holds the baton: there is nothing to fail over from.
    NoHolder,
    /// A hand-over is already under way.
    AlreadyMoving,
}

impl Group {
    /// The command for an operator's forced failover away from the holder (to `to`, if named),
    /// refused whole by the leader unless a standby (or `to`) is ready to take over. `Ok(None)`
    /// when `to` already holds the baton: there is nothing to do.
    pub fn forced_handover(
        &self,
        to: Option<SessionId>,
    ) -> std::result::Result<Option<crate::Command>, ForceRefused> {
        let holder = self.holder.as_ref().ok_or(ForceRefused::NoHolder)?;
        if to.as_ref() == Some(&holder.session) {
            return Ok(None);
        }
        if self.handover.is_some() {
            return Err(ForceRefused::AlreadyMoving);
        }
        Ok(self.forced_handover_unchecked(to))
    }

    /// The forced-failover command as [`Group::forced_handover`] builds it, without its checks
    /// (the core refuses it if they fail): for a retry carrying an idempotency key, which may
    /// find its own first outcome. `None` without a holder.
    pub fn forced_handover_unchecked(&self, to: Option<SessionId>) -> Option<crate::Command> {
        let holder = self.holder.as_ref()?;
        Some(crate::Command::RequestHandover {
            group: self.key.clone(),
            expected_epoch: holder.epoch,
            reason: crate::Reason::Forced,
            to,
            require_standby: true,
            standby_ready: false,
        })
    }

    /// The bytes of text the group holds: its name, description and labels, its members' ids
    /// and names, its channels and its allowed owners (what [`crate::Limit::GroupBytes`]
    /// bounds; the rest of a group is of fixed size).
    pub fn text_bytes(&self) -> usize {
        let c = &self.config;
        let config = c.name.as_ref().map_or(0, String::len)
            + c.description.as_ref().map_or(0, String::len)
            + c.labels.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let sessions: usize = self
            .sessions
            .iter()
            .map(|(id, s)| id.as_str().len() + s.name.as_ref().map_or(0, String::len))
            .sum();
        config
            + sessions
            + self.channels.iter().map(String::len).sum::<usize>()
            + self.allowed_owners.iter().map(|o| o.as_str().len()).sum::<usize>()
    }

    /// A new, empty group.
    pub fn new(
        key: GroupKey,
        config: GroupConfig,
        at: Timestamp,
        owner: Option<IdentityName>,
    ) -> Self {
        Self {
            key,
            config,
            created_at: at,
            updated_at: at,
            sessions: Sessions::new(),
            holder: None,
            handover: None,
            epoch: Epoch(0),
            last_data_processed_time: None,
            grace_ms: 0,
            owner,
            allowed_owners: BTreeSet::new(),
            channels: BTreeSet::new(),
        }
    }

    /// The longest timeout a grant of the current holder may carry (see `grace_ms`).
    pub fn rearm_ms(&self) -> u64 {
        self.config.failover_timeout_ms.max(self.grace_ms)
    }

    /// The member that may hold the group's last grant: the holder, or the member a hand-over
    /// is moving away from (it may not have heard that it let go).
    pub fn last_holder(&self) -> Option<&SessionId> {
        self.holder.as_ref().map(|h| &h.session).or(self.handover.as_ref().map(|h| &h.from))
    }

    /// The tombstone this group leaves when deleted.
    pub fn tombstone(&self) -> Tombstone {
        Tombstone {
            epoch: self.epoch,
            holder: self.last_holder().cloned(),
            failover_timeout_ms: self.rearm_ms(),
        }
    }

    /// The role of `session` in this group.
    pub fn role_of(&self, session: &SessionId) -> Role {
        match &self.holder {
            Some(h) if &h.session == session => match h.stage {
                Stage::Pending => Role::PendingPrimary,
                Stage::Primary => Role::Primary,
            },
            _ => Role::Secondary,
        }
    }

    /// The answer to a heartbeat of `session`, with the group's last processed time as given
    /// (the leader may know a fresher one than the checkpoint).
    pub fn answer(
        &self,
        session: &SessionId,
        last_data_processed_time: Option<ClientTime>,
    ) -> HeartbeatAnswer {
        let role = self.role_of(session);
        HeartbeatAnswer {
            role,
            last_data_processed_time: last_data_processed_time.or(self.last_data_processed_time),
            epoch: self.epoch,
            valid_for_ms: (role != Role::Secondary).then_some(self.config.failover_timeout_ms),
        }
    }
}
