//! Failover groups and their configuration.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::ids::{ClientTime, Epoch, GroupKey, SessionId, Timestamp};
use crate::session::{Handover, HeartbeatAnswer, Holder, Role, Session, Stage};

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
        Ok(Self { name, description, failover_timeout_ms })
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
    pub sessions: BTreeMap<SessionId, Session>,
    /// Who holds the baton, if anyone.
    pub holder: Option<Holder>,
    /// The hand-over under way, if any.
    pub handover: Option<Handover>,
    /// The latest epoch granted; 0 before the first grant.
    pub epoch: Epoch,
    /// The last data processed time the Primary reported (checkpointed).
    pub last_data_processed_time: Option<ClientTime>,
    /// The longest failover timeout the current holder may have been answered with, when the
    /// timeout was lowered while it held the baton (0 otherwise). A new leader re-arms grants
    /// with the longer of this and the current timeout.
    pub grace_ms: u64,
}

/// What is left of a deleted group: enough that a group re-created under the same key continues
/// its epoch and does not hand the baton on while the deleted group's last grant may be valid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tombstone {
    /// The deleted group's last epoch.
    pub epoch: Epoch,
    /// Its holder when it was deleted, if any.
    pub holder: Option<SessionId>,
    /// The longest timeout that holder may have been answered with.
    pub failover_timeout_ms: u64,
}

impl Group {
    /// A new, empty group.
    pub fn new(key: GroupKey, config: GroupConfig, at: Timestamp) -> Self {
        Self {
            key,
            config,
            created_at: at,
            updated_at: at,
            sessions: BTreeMap::new(),
            holder: None,
            handover: None,
            epoch: Epoch(0),
            last_data_processed_time: None,
            grace_ms: 0,
        }
    }

    /// The longest timeout a grant of the current holder may carry (see `grace_ms`).
    pub fn rearm_ms(&self) -> u64 {
        self.config.failover_timeout_ms.max(self.grace_ms)
    }

    /// The tombstone this group leaves when deleted.
    pub fn tombstone(&self) -> Tombstone {
        Tombstone {
            epoch: self.epoch,
            holder: self.holder.as_ref().map(|h| h.session.clone()),
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
