//! Safety properties, checked over what clients observed. Each checker is one small function
//! so that scenario tests, end-to-end tests and chaos runs share them.
//!
//! Times are the observing clients' clock (one clock for all clients of a test), in
//! milliseconds.

use std::collections::BTreeMap;

use crate::detector::PREEMPTION_MARGIN;
use crate::ids::Epoch;
use crate::session::{Role, Score};

/// One heartbeat exchange as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The group (any stable name).
    pub group: String,
    /// The session that heartbeated.
    pub session: String,
    /// When the client sent the heartbeat.
    pub sent_at: u64,
    /// When the answer arrived.
    pub received_at: u64,
    /// The role answered.
    pub role: Role,
    /// The epoch answered.
    pub epoch: Epoch,
    /// For Primary and PendingPrimary: validity counted from `sent_at`.
    pub valid_for_ms: Option<u64>,
    /// The score the client reported in this heartbeat.
    pub score: Score,
}

/// A broken property, with the observations that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which property.
    pub property: &'static str,
    /// What happened.
    pub detail: String,
}

/// The interval in which a client held a valid grant: from the answer's arrival until the
/// grant lapsed (`sent_at + valid_for`) or the session was told Secondary, whichever is first.
fn grant_intervals(observations: &[Observation]) -> BTreeMap<&str, Vec<(u64, u64, &Observation)>> {
    let mut by_session: BTreeMap<(&str, &str), Vec<&Observation>> = BTreeMap::new();
    for o in observations {
        by_session.entry((&o.group, &o.session)).or_default().push(o);
    }
    let mut intervals: BTreeMap<&str, Vec<(u64, u64, &Observation)>> = BTreeMap::new();
    for ((group, _), mut seen) in by_session {
        seen.sort_by_key(|o| o.received_at);
        for (i, o) in seen.iter().enumerate() {
            let Some(valid) = o.valid_for_ms.filter(|_| o.role != Role::Secondary) else {
                continue;
            };
            let lapse = o.sent_at + valid;
            let told_secondary = seen[i + 1..]
                .iter()
                .find(|later| later.role == Role::Secondary)
                .map_or(u64::MAX, |l| l.received_at);
            intervals.entry(group).or_default().push((o.received_at, lapse.min(told_secondary), o));
        }
    }
    intervals
}

/// No two sessions of a group ever hold a valid Primary or PendingPrimary grant at the same
/// time.
pub fn at_most_one_valid_grant(observations: &[Observation]) -> Result<(), Violation> {
    for (group, mut intervals) in grant_intervals(observations) {
        intervals.sort_by_key(|(start, _, _)| *start);
        for (i, (start, end, a)) in intervals.iter().enumerate() {
            for (other_start, other_end, b) in &intervals[i + 1..] {
                if other_start >= end {
                    break;
                }
                if a.session != b.session && start < other_end {
                    return Err(Violation {
                        property: "at most one valid grant per group",
                        detail: format!("group {group}: {a:?} and {b:?} overlap"),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A group's epoch never goes backwards: an answer sent after another answer arrived carries
/// an epoch at least as high.
pub fn epochs_only_grow(observations: &[Observation]) -> Result<(), Violation> {
    let mut by_group: BTreeMap<&str, Vec<&Observation>> = BTreeMap::new();
    for o in observations {
        by_group.entry(&o.group).or_default().push(o);
    }
    for (group, seen) in by_group {
        for a in &seen {
            if let Some(b) = seen.iter().find(|b| b.sent_at > a.received_at && b.epoch < a.epoch) {
                return Err(Violation {
                    property: "epochs only grow",
                    detail: format!("group {group}: {b:?} came after {a:?} with a lower epoch"),
                });
            }
        }
    }
    Ok(())
}

/// The baton moves to another session only after the previous holder was silent for the
/// failover timeout (sent no answered heartbeat), or when the new holder's score beat the old
/// one's by the preemption margin, or when the move is excused (an explicit action: forced
/// failover, override, deletion), named by the epoch it produced.
pub fn failover_only_after_silence(
    observations: &[Observation],
    failover_timeout_ms: u64,
    excused: &[(String, Epoch)],
) -> Result<(), Violation> {
    let mut by_group: BTreeMap<&str, Vec<&Observation>> = BTreeMap::new();
    for o in observations.iter().filter(|o| o.role != Role::Secondary) {
        by_group.entry(&o.group).or_default().push(o);
    }
    for (group, mut grants) in by_group {
        grants.sort_by_key(|o| (o.epoch, o.received_at));
        for pair in grants.windows(2) {
            let (old, new) = (pair[0], pair[1]);
            let preempted =
                new.score.hundredths() >= old.score.hundredths() + PREEMPTION_MARGIN.hundredths();
            if old.session == new.session
                || preempted
                || excused.iter().any(|(g, e)| g == group && *e == new.epoch)
            {
                continue;
            }
            let last_sent = observations
                .iter()
                .filter(|o| {
                    o.group == group && o.session == old.session && o.sent_at <= new.received_at
                })
                .map(|o| o.sent_at)
                .max()
                .unwrap_or(0);
            if new.received_at < last_sent + failover_timeout_ms {
                return Err(Violation {
                    property: "failover only after silence",
                    detail: format!(
                        "group {group}: {} got the baton at {} but {} had heartbeated at {last_sent}",
                        new.session, new.received_at, old.session
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(session: &str, sent_at: u64, received_at: u64, role: Role, epoch: u64) -> Observation {
        Observation {
            group: "g".into(),
            session: session.into(),
            sent_at,
            received_at,
            role,
            epoch: Epoch(epoch),
            valid_for_ms: (role != Role::Secondary).then_some(1000),
            score: Score::MAX,
        }
    }

    #[test]
    fn overlapping_grants_of_two_sessions_are_a_violation() {
        let o = [obs("a", 0, 5, Role::Primary, 1), obs("b", 500, 505, Role::PendingPrimary, 2)];
        assert!(at_most_one_valid_grant(&o).is_err());
    }

    #[test]
    fn a_grant_ends_when_it_lapses_or_the_holder_is_told_secondary() {
        let lapsed =
            [obs("a", 0, 5, Role::Primary, 1), obs("b", 1000, 1005, Role::PendingPrimary, 2)];
        assert!(at_most_one_valid_grant(&lapsed).is_ok());
        let revoked = [
            obs("a", 0, 5, Role::Primary, 1),
            obs("a", 400, 405, Role::Secondary, 1),
            obs("b", 500, 505, Role::PendingPrimary, 2),
        ];
        assert!(at_most_one_valid_grant(&revoked).is_ok());
    }

    #[test]
    fn a_lower_epoch_after_a_higher_one_is_a_violation() {
        let o = [obs("a", 0, 5, Role::Primary, 2), obs("b", 10, 15, Role::Secondary, 1)];
        assert!(epochs_only_grow(&o).is_err());
        let concurrent = [obs("a", 0, 20, Role::Primary, 2), obs("b", 10, 15, Role::Secondary, 1)];
        assert!(epochs_only_grow(&concurrent).is_ok(), "answers in flight together may cross");
    }

    #[test]
    fn failover_while_the_holder_heartbeats_is_a_violation_unless_excused() {
        let o = [
            obs("a", 0, 5, Role::Primary, 1),
            obs("a", 500, 505, Role::Primary, 1),
            obs("b", 900, 905, Role::PendingPrimary, 2),
        ];
        assert!(failover_only_after_silence(&o, 1000, &[]).is_err());
        assert!(failover_only_after_silence(&o, 1000, &[("g".into(), Epoch(2))]).is_ok());
        let silent =
            [obs("a", 0, 5, Role::Primary, 1), obs("b", 1100, 1105, Role::PendingPrimary, 2)];
        assert!(failover_only_after_silence(&silent, 1000, &[]).is_ok());
    }

    #[test]
    fn preemption_by_the_margin_is_not_a_violation() {
        let mut o = vec![
            obs("a", 0, 5, Role::Primary, 1),
            obs("a", 500, 505, Role::Primary, 1),
            obs("b", 900, 905, Role::PendingPrimary, 2),
        ];
        for x in &mut o[..2] {
            x.score = Score::new(80.0).expect("valid");
        }
        o[2].score = Score::new(90.0).expect("valid");
        assert!(failover_only_after_silence(&o, 1000, &[]).is_ok(), "10 points above: preemption");
        o[2].score = Score::new(85.0).expect("valid");
        assert!(
            failover_only_after_silence(&o, 1000, &[]).is_err(),
            "5 points is below the margin"
        );
    }
}

/// A simulated client's (or node's) clock: `local = offset + real × rate`, in milliseconds.
/// The simulations draw `offset` and `rate` from their seed.
#[derive(Clone, Copy, Debug)]
pub struct DriftingClock {
    /// Its reading at real time zero.
    pub offset: f64,
    /// How fast it runs against real time.
    pub rate: f64,
}

impl DriftingClock {
    /// Its reading at `real`.
    pub fn local(&self, real: f64) -> f64 {
        self.offset + real * self.rate
    }

    /// The real time at which it reads `local`.
    pub fn real(&self, local: f64) -> f64 {
        (local - self.offset) / self.rate
    }
}

/// The grants the members of one group hold, as their clients took them, in real time
/// (milliseconds), checked as each is taken: no other member holds a valid grant then, and a
/// grant that moves to another member has a higher epoch than the last one taken.
#[derive(Clone, Debug)]
pub struct GroupGrants {
    group: String,
    members: Vec<String>,
    /// Per member: the epoch of the grant it holds and when that ends.
    held: Vec<Option<(Epoch, f64)>>,
    /// The member that last took a grant, and its epoch.
    last: Option<(usize, Epoch)>,
    handovers: usize,
}

impl GroupGrants {
    /// No grants yet in `group`, among `members` (named for the messages).
    pub fn new(group: impl Into<String>, members: Vec<String>) -> Self {
        let held = vec![None; members.len()];
        Self { group: group.into(), members, held, last: None, handovers: 0 }
    }

    /// Member `m` took a Secondary answer: it holds nothing from now on.
    pub fn release(&mut self, m: usize) {
        self.held[m] = None;
    }

    /// Member `m` took a `role` answer (Primary or PendingPrimary) at `epoch` at real time
    /// `now`, valid until `until`; an error says which property it breaks.
    pub fn take(
        &mut self,
        m: usize,
        role: Role,
        epoch: Epoch,
        until: f64,
        now: f64,
    ) -> Result<(), String> {
        self.held[m] = Some((epoch, until));
        let (group, member) = (&self.group, &self.members[m]);
        for (o, other) in self.held.iter().enumerate() {
            if let Some((held, held_until)) = other
                && o != m
                && *held_until > now
            {
                return Err(format!(
                    "at {now:.1} ms {member} took {role:?} epoch {} in {group} while {} held epoch {} until {held_until:.1} ms",
                    epoch.0, self.members[o], held.0
                ));
            }
        }
        match self.last {
            Some((last, last_epoch)) if last != m && epoch <= last_epoch => {
                return Err(format!(
                    "at {now:.1} ms {member} took epoch {} in {group} after {} was granted epoch {}",
                    epoch.0, self.members[last], last_epoch.0
                ));
            }
            Some((last, _)) if last != m => self.handovers += 1,
            _ => {}
        }
        self.last = Some((m, epoch));
        Ok(())
    }

    /// Whether some member holds a valid grant at real time `now`.
    pub fn held_at(&self, now: f64) -> bool {
        self.held.iter().flatten().any(|(_, until)| *until > now)
    }

    /// How many times a grant moved from one member to another.
    pub fn handovers(&self) -> usize {
        self.handovers
    }
}

#[cfg(test)]
mod group_grants_tests {
    use super::*;

    fn grants() -> GroupGrants {
        GroupGrants::new("g", vec!["a".into(), "b".into()])
    }

    #[test]
    fn a_grant_taken_while_another_member_holds_one_is_a_violation() {
        let mut g = grants();
        g.take(0, Role::Primary, Epoch(1), 1_000.0, 0.0).expect("the first grant");
        let e = g.take(1, Role::PendingPrimary, Epoch(2), 1_500.0, 999.0).expect_err("overlap");
        assert!(e.contains("while a held epoch 1"), "{e}");
    }

    #[test]
    fn a_grant_moving_to_another_member_must_have_a_higher_epoch() {
        let mut g = grants();
        g.take(0, Role::Primary, Epoch(3), 1_000.0, 0.0).expect("the first grant");
        let e = g.take(1, Role::Primary, Epoch(3), 3_000.0, 2_000.0).expect_err("same epoch");
        assert!(e.contains("after a was granted epoch 3"), "{e}");
        let mut g = grants();
        g.take(0, Role::Primary, Epoch(3), 1_000.0, 0.0).expect("the first grant");
        g.release(0);
        g.take(1, Role::Primary, Epoch(4), 3_000.0, 500.0).expect("released, higher epoch");
        assert_eq!(g.handovers(), 1);
        assert!(g.held_at(2_999.0) && !g.held_at(3_000.0));
    }
}
