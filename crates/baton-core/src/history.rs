//! Decisions about the baton: a bounded history per group, and the events nodes publish.
//!
//! Every applied command that moves the baton, starts or ends a hand-over, or deletes a group
//! yields exactly one [`Decision`]. It is derived by comparing the group's baton before and
//! after the command ([`Decision::between`]), so no command can change a role without a
//! decision being recorded. The state keeps the last [`HISTORY_CAPACITY`] decisions of each
//! group as replicated state (every node answers the same history); each node also publishes
//! a decision as an event when it applies it, identified by the Raft log index it came from.
//!
//! A grant carries the candidates the leader's detector considered, each with why it was or
//! was not chosen ([`Verdict`]).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::group::Group;
use crate::ids::{Epoch, GroupKey, SessionId, Timestamp};
use crate::session::{Handover, Holder, Reason, Role, Score, Stage};

/// How many decisions each group keeps.
pub const HISTORY_CAPACITY: usize = 32;

/// What a decision did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// The baton was given to a member: PendingPrimary, or Primary for a group's first grant.
    Granted,
    /// A PendingPrimary became Primary.
    Promoted,
    /// A hand-over began: the holder must let go.
    HandoverStarted,
    /// A forced hand-over nobody could complete was called off; the holder keeps the baton.
    HandoverCancelled,
    /// The holder let go during a hand-over and was told Secondary.
    Relinquished,
    /// The holder's grant lapsed with nobody to take over.
    Expired,
    /// The group was deleted.
    GroupDeleted,
}

/// A member's new role.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoleChange {
    /// The member.
    pub session: SessionId,
    /// Its role from this decision on.
    pub role: Role,
}

/// Why a member was or was not given the baton.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It was given the baton.
    Chosen,
    /// It is not eligible (Uplynk's `enabled: false`).
    Disabled,
    /// It has not heartbeated to the current leader.
    NotHeard,
    /// Its heartbeats stopped for longer than the failover timeout.
    Stale,
    /// Another member is pinned by a role override.
    NotPinned,
    /// The hand-over asked for another member.
    NotRequested,
    /// The baton is moving away from it.
    Leaving,
    /// A better member was chosen (pinned, higher priority, score, fresher data, lower id).
    Outranked,
}

/// A member the detector considered for a grant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    /// The member.
    pub session: SessionId,
    /// The verdict.
    pub verdict: Verdict,
    /// Its last reported score, if the leader heard it.
    pub score: Option<Score>,
    /// Its priority (lower first, in prioritized groups).
    pub priority: u32,
}

/// One decision about a group's baton.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decision {
    /// The group.
    pub group: GroupKey,
    /// When it was applied (leader time).
    pub at: Timestamp,
    /// What it did.
    pub kind: DecisionKind,
    /// Why.
    pub reason: Reason,
    /// The group's epoch after it.
    pub epoch: Epoch,
    /// The members whose role changed, with their new roles.
    pub roles: Vec<RoleChange>,
    /// For [`DecisionKind::HandoverStarted`]: the hand-over.
    pub handover: Option<Handover>,
    /// For [`DecisionKind::Granted`]: the members considered, each with its verdict.
    pub candidates: Vec<Candidate>,
}

/// The part of a group a decision is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Baton {
    holder: Option<Holder>,
    handover: Option<Handover>,
    epoch: Epoch,
}

impl Baton {
    pub(crate) fn of(group: &Group) -> Self {
        Baton { holder: group.holder.clone(), handover: group.handover.clone(), epoch: group.epoch }
    }
}

fn role_of(stage: Stage) -> Role {
    match stage {
        Stage::Pending => Role::PendingPrimary,
        Stage::Primary => Role::Primary,
    }
}

fn secondary(session: &SessionId) -> RoleChange {
    RoleChange { session: session.clone(), role: Role::Secondary }
}

impl Decision {
    /// The decision `command` made about group `key`, given its baton before and after
    /// (`None`: the group does not exist); `None` if the baton is as it was.
    pub(crate) fn between(
        key: &GroupKey,
        before: Option<&Baton>,
        after: Option<&Baton>,
        command: &Command,
        at: Timestamp,
    ) -> Option<Decision> {
        let decision = |kind, reason, epoch, roles| Decision {
            group: key.clone(),
            at,
            kind,
            reason,
            epoch,
            roles,
            handover: None,
            candidates: Vec::new(),
        };
        let (before, after) = match (before, after) {
            (Some(b), None) => {
                let roles = b.holder.iter().map(|h| secondary(&h.session)).collect();
                return Some(decision(DecisionKind::GroupDeleted, Reason::Deleted, b.epoch, roles));
            }
            (b, Some(a)) if b != Some(a) => (b, a),
            _ => return None,
        };
        let old = before.and_then(|b| b.holder.as_ref());
        let leaving_reason = before.and_then(|b| b.handover.as_ref()).map(|h| h.reason);
        match (old, &after.holder) {
            (old, Some(new)) if old.is_none_or(|o| o.epoch != new.epoch) => {
                let mut roles: Vec<_> = old
                    .filter(|o| o.session != new.session)
                    .map(|o| secondary(&o.session))
                    .into_iter()
                    .collect();
                roles.push(RoleChange { session: new.session.clone(), role: role_of(new.stage) });
                let mut d = decision(DecisionKind::Granted, new.reason, after.epoch, roles);
                if let Command::Grant { considered, .. } = command {
                    d.candidates = considered.clone();
                }
                Some(d)
            }
            (Some(old), Some(new)) if old.stage != new.stage => Some(decision(
                DecisionKind::Promoted,
                new.reason,
                after.epoch,
                vec![RoleChange { session: new.session.clone(), role: role_of(new.stage) }],
            )),
            (Some(old), None) => {
                let kind = match command {
                    Command::Relinquish { .. } => DecisionKind::Relinquished,
                    _ => DecisionKind::Expired,
                };
                let reason = leaving_reason.unwrap_or(Reason::Stale);
                Some(decision(kind, reason, after.epoch, vec![secondary(&old.session)]))
            }
            _ => match (before.and_then(|b| b.handover.as_ref()), &after.handover) {
                (None, Some(handover)) => {
                    let mut d = decision(
                        DecisionKind::HandoverStarted,
                        handover.reason,
                        after.epoch,
                        vec![],
                    );
                    d.handover = Some(handover.clone());
                    Some(d)
                }
                (Some(handover), None) if after.holder.is_some() => Some(decision(
                    DecisionKind::HandoverCancelled,
                    handover.reason,
                    after.epoch,
                    vec![],
                )),
                _ => None,
            },
        }
    }
}

/// A group's last decisions, oldest first, at most [`HISTORY_CAPACITY`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct History(VecDeque<Decision>);

impl History {
    /// Adds a decision, dropping the oldest beyond the capacity.
    pub(crate) fn push(&mut self, decision: Decision) {
        if self.0.len() == HISTORY_CAPACITY {
            self.0.pop_front();
        }
        self.0.push_back(decision);
    }

    /// The decisions, oldest first.
    pub fn decisions(&self) -> impl DoubleEndedIterator<Item = &Decision> + '_ {
        self.0.iter()
    }

    /// Whether it holds no decision.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
