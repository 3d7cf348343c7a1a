//! One heartbeat, from receipt to answer: the only place where a heartbeat's observe, plan,
//! propose and answer are put in order. The leader (`baton-server`), the API tests' in-memory
//! coordinator and the scenario scripts all drive a [`HeartbeatStep`]; none decides anything of
//! its own.
//!
//! The step is sans-IO, like raft-rs's `Ready`: each call to [`HeartbeatStep::ready`] looks at
//! the state and the leader's [`Detector`] at one instant and says what to do next, and the
//! caller does only that (commits a command, confirms its lease) and reports back.
//!
//! ```text
//!  ready(state, detector, now, leased)
//!    ├─ Answer(outcome)   refused (unknown group or session, not allowed, too fast) or answered
//!    ├─ Propose(command)  commit it, then `committed(response)`, then `ready` again
//!    ├─ ConfirmLease      confirm leadership with a quorum, then `ready` again with leased
//!    └─ GiveUp            re-planned too often (every plan was superseded): no answer
//! ```
//!
//! ## Invariants
//! - A heartbeat is observed once, at its first plan: re-planning after a superseded command
//!   never counts it again (nor refuses it as too fast for itself).
//! - Nothing that grants the baton is answered without a confirmed lease: a leader that is not
//!   sure it leads answers nobody.
//! - The answer is computed from the state as it is when the answer is recorded, under the
//!   caller's locks: no grant can be applied between them.

use serde::{Deserialize, Serialize};

use crate::command::{Command, Rejection, Response};
use crate::detector::{Detector, Refusal};
use crate::identity::IdentityName;
use crate::ids::{Epoch, GroupKey, SessionId, Timestamp};
use crate::session::{HeartbeatAnswer, HeartbeatIn};
use crate::state::State;

/// How often a heartbeat re-plans after its command lost a race with another decision.
pub const MAX_PLANS: usize = 5;

/// A heartbeat as the leader receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// The group.
    pub group: GroupKey,
    /// The session.
    pub session: SessionId,
    /// What it reported.
    pub heartbeat: HeartbeatIn,
    /// Who sent it.
    pub caller: IdentityName,
    /// The proof that the session let go: the epoch of the Secondary answer it last took (sent
    /// by Baton-aware clients, which keep one heartbeat in flight and ignore the answers of
    /// heartbeats they gave up on). It ends the session's earlier grant at once instead of
    /// when the grant lapses (see [`Detector::release`]).
    pub released: Option<Epoch>,
}

/// What became of a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatOutcome {
    /// Answered with the session's role.
    Answered(HeartbeatAnswer),
    /// The group does not exist.
    GroupNotFound,
    /// The session is not a member of the group.
    SessionNotFound,
    /// The caller may not use the group.
    Forbidden,
    /// Sent sooner than its group allows.
    TooFast {
        /// How long to wait before the next heartbeat is accepted.
        retry_after_ms: u64,
    },
    /// The session held the baton and its successor is being committed: it is told nothing
    /// until that decision is applied or refused (its grant has lapsed already).
    Deciding {
        /// How long to wait before heartbeating again.
        retry_after_ms: u64,
    },
}

/// How long a session whose role is being decided waits before its next heartbeat: about two
/// leader ticks, the time a decision takes to commit.
pub const DECIDING_RETRY_MS: u64 = 50;

/// The outcome of an answer the detector gave, or withheld.
fn answered(answer: Option<HeartbeatAnswer>) -> HeartbeatOutcome {
    answer.map_or(HeartbeatOutcome::Deciding { retry_after_ms: DECIDING_RETRY_MS }, |a| {
        HeartbeatOutcome::Answered(a)
    })
}

/// What the caller of [`HeartbeatStep::ready`] does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    /// Answer this; the step is over.
    Answer(HeartbeatOutcome),
    /// Commit this command, then report its response with [`HeartbeatStep::committed`].
    Propose(Command),
    /// Confirm leadership with a quorum, then call `ready` again with `leased` true.
    ConfirmLease,
    /// Every plan was superseded by another decision: answer that no leader could serve it.
    GiveUp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Observe (the first time) and plan.
    Plan,
    /// A planned command is being committed.
    Committing,
    /// Nothing left to commit: answer once the lease holds.
    Answer,
    /// Decided by a commit's refusal.
    Done(HeartbeatOutcome),
    /// Re-planned [`MAX_PLANS`] times, superseded each time.
    GaveUp,
}

/// One heartbeat's way through the leader. See the module documentation.
#[derive(Clone, Debug)]
pub struct HeartbeatStep {
    beat: Beat,
    phase: Phase,
    plans: usize,
}

impl HeartbeatStep {
    /// The step of a heartbeat just received.
    pub fn new(beat: Beat) -> Self {
        Self { beat, phase: Phase::Plan, plans: 0 }
    }

    /// The heartbeat.
    pub fn beat(&self) -> &Beat {
        &self.beat
    }

    /// What to do next, judged from `state` and `detector` at `now`. `leased`: the caller's
    /// leadership is confirmed by a quorum (its lease holds) in the term whose detector this is.
    pub fn ready(
        &mut self,
        state: &State,
        detector: &mut Detector,
        now: Timestamp,
        leased: bool,
    ) -> Ready {
        let Beat { group: key, session, .. } = &self.beat;
        let group = match state.group(key) {
            None => return Ready::Answer(HeartbeatOutcome::GroupNotFound),
            Some(g) if !state.may_use(&self.beat.caller, g) => {
                return Ready::Answer(HeartbeatOutcome::Forbidden);
            }
            Some(g) if !g.sessions.contains_key(session) => {
                return Ready::Answer(HeartbeatOutcome::SessionNotFound);
            }
            Some(g) => g,
        };
        match &self.phase {
            Phase::Done(outcome) => Ready::Answer(outcome.clone()),
            Phase::GaveUp => Ready::GiveUp,
            Phase::Committing => {
                panic!("a heartbeat step is asked what to do while its command is being committed")
            }
            Phase::Answer if !leased => Ready::ConfirmLease,
            Phase::Answer => Ready::Answer(answered(detector.answer(group, session, now))),
            Phase::Plan => {
                if self.plans == 0 {
                    if let Err(Refusal::TooFast { retry_after_ms }) =
                        detector.observe(group, session, self.beat.heartbeat.clone(), now)
                    {
                        return Ready::Answer(HeartbeatOutcome::TooFast { retry_after_ms });
                    }
                    if let Some(epoch) = self.beat.released {
                        detector.release(group, session, epoch);
                    }
                }
                self.plans += 1;
                match detector.plan_heartbeat(group, session, now) {
                    // Most heartbeats: nothing to replicate, answered in the same visit.
                    None if leased => Ready::Answer(answered(detector.answer(group, session, now))),
                    None => {
                        self.phase = Phase::Answer;
                        Ready::ConfirmLease
                    }
                    Some(command) => {
                        self.phase = Phase::Committing;
                        Ready::Propose(command)
                    }
                }
            }
        }
    }

    /// Reports the response of the command [`Ready::Propose`] asked for.
    pub fn committed(&mut self, response: &Response) {
        assert_eq!(
            self.phase,
            Phase::Committing,
            "a heartbeat step got a response it never asked for"
        );
        self.phase = match response {
            Response::Rejected(Rejection::Superseded(_)) if self.plans >= MAX_PLANS => {
                Phase::GaveUp
            }
            Response::Rejected(Rejection::Superseded(_)) => Phase::Plan,
            Response::Rejected(Rejection::SessionNotFound { .. }) => {
                Phase::Done(HeartbeatOutcome::SessionNotFound)
            }
            Response::Rejected(Rejection::GroupNotFound(_)) => {
                Phase::Done(HeartbeatOutcome::GroupNotFound)
            }
            _ => Phase::Answer,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Request;
    use crate::group::GroupConfig;
    use crate::identity::{AccessRole, Credential, Identity};
    use crate::ids::{GroupId, NamespaceId, Scope, TenantId};
    use crate::session::{Role, Score};

    fn key() -> GroupKey {
        let scope = Scope {
            tenant: TenantId::new("t").expect("an id"),
            namespace: NamespaceId::new("ns").expect("an id"),
        };
        GroupKey { scope, group: GroupId::new("g").expect("an id") }
    }

    /// A state with an administrator and the group `g` of members `a` and `b`.
    fn world() -> State {
        let mut state = State::default();
        let name = IdentityName::new("admin").expect("a name");
        let identity =
            Identity::new(name, AccessRole::Admin, Credential { salt: vec![1], digest: vec![2] });
        let config = GroupConfig::new(None, None, 10_000).expect("a timeout in range");
        let mut apply = |command| state.apply(&Request { at: Timestamp(0), command, actor: None });
        apply(Command::BootstrapAdmin { identity });
        apply(Command::CreateGroup { key: key(), config, members: vec![] });
        for s in ["a", "b"] {
            let session = SessionId::new(s).expect("an id");
            apply(Command::CreateSession { group: key(), session, name: None });
        }
        state
    }

    fn beat(session: &str) -> Beat {
        Beat {
            group: key(),
            session: SessionId::new(session).expect("an id"),
            heartbeat: HeartbeatIn {
                score: Score::new(100.0).expect("a score"),
                heartbeat_time: None,
                last_data_processed_time: None,
            },
            caller: IdentityName::new("admin").expect("a name"),
            released: None,
        }
    }

    #[test]
    fn a_leader_without_a_confirmed_lease_answers_nobody_until_it_confirms() {
        let mut state = world();
        let mut detector = Detector::new(&state, Timestamp(1_000));
        // a holds the baton.
        let mut first = HeartbeatStep::new(beat("a"));
        let Ready::Propose(grant) = first.ready(&state, &mut detector, Timestamp(1_000), true)
        else {
            panic!("the first member of an empty group is granted");
        };
        state.apply(&Request { at: Timestamp(1_000), command: grant, actor: None });
        // b's heartbeat needs nothing replicated, but is not answered without the lease.
        let mut step = HeartbeatStep::new(beat("b"));
        assert_eq!(step.ready(&state, &mut detector, Timestamp(1_000), false), Ready::ConfirmLease);
        assert_eq!(step.ready(&state, &mut detector, Timestamp(1_001), false), Ready::ConfirmLease);
        let Ready::Answer(HeartbeatOutcome::Answered(answer)) =
            step.ready(&state, &mut detector, Timestamp(1_002), true)
        else {
            panic!("answered once the lease holds");
        };
        assert_eq!(answer.role, Role::Secondary);
    }

    #[test]
    fn a_superseded_plan_is_planned_again_without_counting_the_heartbeat_twice() {
        let mut state = world();
        let mut detector = Detector::new(&state, Timestamp(1_000));
        let mut step = HeartbeatStep::new(beat("a"));
        let Ready::Propose(grant) = step.ready(&state, &mut detector, Timestamp(1_000), true)
        else {
            panic!("the first member of an empty group is granted");
        };
        // Another decision got there first: the plan's epoch no longer matches.
        let superseded = Response::Rejected(Rejection::Superseded(key()));
        step.committed(&superseded);
        // Re-planned at once: not refused as too fast for its own first visit.
        let Ready::Propose(again) = step.ready(&state, &mut detector, Timestamp(1_001), true)
        else {
            panic!("planned again");
        };
        assert_eq!(again, grant);
        let response = state.apply(&Request { at: Timestamp(1_001), command: again, actor: None });
        step.committed(&response);
        let Ready::Answer(HeartbeatOutcome::Answered(answer)) =
            step.ready(&state, &mut detector, Timestamp(1_001), true)
        else {
            panic!("answered after its grant committed");
        };
        assert_eq!(answer.role, Role::Primary);
    }

    #[test]
    fn a_heartbeat_superseded_every_time_gives_up() {
        let state = world();
        let mut detector = Detector::new(&state, Timestamp(1_000));
        let mut step = HeartbeatStep::new(beat("a"));
        for plan in 0..MAX_PLANS {
            let ready = step.ready(&state, &mut detector, Timestamp(1_000 + plan as u64), true);
            assert!(matches!(ready, Ready::Propose(_)), "plan {plan}: {ready:?}");
            step.committed(&Response::Rejected(Rejection::Superseded(key())));
        }
        assert_eq!(step.ready(&state, &mut detector, Timestamp(2_000), true), Ready::GiveUp);
    }
}
