//! Client sessions (the members of a group), their roles, and the baton.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{ClientTime, Epoch, SessionId, Timestamp};

/// A session's role, as AVEVA numbers them (Secondary 0, Primary 1, PendingPrimary 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Does not hold the baton.
    Secondary,
    /// Holds the baton.
    Primary,
    /// Has been given the baton and should resume from the group's last processed time; its
    /// next heartbeat makes it Primary.
    PendingPrimary,
}

/// A health score (AVEVA's `FailoverStatus` / `FailoverScore`), 0 to 100, kept in hundredths so
/// that it compares and hashes exactly.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Score(u16);

impl Score {
    /// Highest score.
    pub const MAX: Score = Score(10_000);

    /// A score from hundredths (1000 = 10 points); values above 10 000 are capped.
    pub const fn from_hundredths(hundredths: u16) -> Self {
        Score(if hundredths > 10_000 { 10_000 } else { hundredths })
    }

    /// A score from a client's number, which must be finite and within 0 to 100.
    pub fn new(value: f64) -> Result<Self> {
        if !value.is_finite() || !(0.0..=100.0).contains(&value) {
            return Err(Error::ScoreOutOfRange { value: value.to_string() });
        }
        Ok(Score((value * 100.0).round() as u16))
    }

    /// The score as a number from 0 to 100.
    pub fn value(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// The score in hundredths.
    pub fn hundredths(self) -> u16 {
        self.0
    }
}

/// What a heartbeat reports, as the leader received it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeartbeatIn {
    /// The client's health score.
    pub score: Score,
    /// When the client says it sent the heartbeat (echoed, never trusted for liveness).
    pub heartbeat_time: Option<ClientTime>,
    /// The last time the client processed data.
    pub last_data_processed_time: Option<ClientTime>,
}

/// The last heartbeat of a session, as checkpointed in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeartbeatRecord {
    /// What the heartbeat said.
    pub heartbeat: HeartbeatIn,
    /// When the leader received it.
    pub received_at: Timestamp,
}

/// A role override (AVEVA v1 `roleoverride` with `Value` Primary): the session is given the
/// baton and keeps it, even when stale, until the override is turned off or expires.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoleOverride {
    /// When it was set (leader time); identifies this override.
    pub set_at: Timestamp,
    /// When it expires, if ever.
    pub expires_at: Option<Timestamp>,
}

/// A member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session {
    /// Its id, unique in the group.
    pub id: SessionId,
    /// Display name.
    pub name: Option<String>,
    /// When it was created (leader time).
    pub created_at: Timestamp,
    /// Its role override, if one is in effect.
    pub role_override: Option<RoleOverride>,
    /// Its last checkpointed heartbeat; `None` until it has heartbeated.
    pub last_heartbeat: Option<HeartbeatRecord>,
    /// Rank in a prioritized group (lower first; Uplynk's `order`).
    pub priority: u32,
    /// Whether it may be given the baton at all (Uplynk's slicer `enabled`).
    pub enabled: bool,
}

/// How far along a grant of the baton is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// Granted; the holder is told PendingPrimary until its next heartbeat.
    Pending,
    /// The holder is Primary.
    Primary,
}

/// Why the baton moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The group had no holder (first member, or the previous holder went away).
    Vacant,
    /// The holder stopped heartbeating.
    Stale,
    /// The holder's session was deleted.
    Deleted,
    /// An operator forced a failover.
    Forced,
    /// A member's score beat the holder's by the preemption margin.
    Preempted,
    /// A role override pinned the baton to another member.
    Override,
    /// The group was suspended: nobody may hold the baton.
    Suspended,
}

/// The member that holds the baton.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Holder {
    /// The holding session. It may have been deleted since (then a hand-over is under way).
    pub session: SessionId,
    /// Pending or Primary.
    pub stage: Stage,
    /// The epoch of this grant.
    pub epoch: Epoch,
    /// When it was granted (leader time).
    pub since: Timestamp,
    /// Why it was granted.
    pub reason: Reason,
}

/// A hand-over under way: the holder must let go (at its next heartbeat, or when its grant
/// lapses), and the baton then goes to the best member other than `from`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Handover {
    /// The member letting go.
    pub from: SessionId,
    /// Why.
    pub reason: Reason,
    /// The member asked for (Uplynk's `activate_slicer`, Cinder's failover target), if any;
    /// it gets the baton if it is eligible when the holder's grant has lapsed, else the best
    /// eligible member does.
    pub to: Option<SessionId>,
}

/// A heartbeat's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// The session's role.
    pub role: Role,
    /// The group's last data processed time (the previous Primary's, for a PendingPrimary).
    pub last_data_processed_time: Option<ClientTime>,
    /// The group's epoch.
    pub epoch: Epoch,
    /// For Primary and PendingPrimary: how long the grant is valid, counted from when the
    /// client sent the heartbeat (the group's failover timeout).
    pub valid_for_ms: Option<u64>,
}
