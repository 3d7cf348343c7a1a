//! The leader's failure detector: pure, with time as an input.
//!
//! Liveness is measured at heartbeat receipt by the Raft leader and is not replicated; only its
//! consequences are, as commands. The detector keeps, per group, when each session was last
//! heard, what it reported, and until when the holder's latest answered grant is valid; from
//! that it decides:
//!
//! ```text
//!  heartbeat ─▶ observe ─▶ plan_heartbeat ─▶ Command? ─(Raft)─▶ apply ─▶ answer (records the grant)
//!  every tick ────────────▶ tick ──────────▶ Commands ─(Raft)─▶ apply
//!  new leader ────────────▶ rearm: every deadline and grant := now + FailoverTimeout
//! ```
//!
//! ## Rules (PRODUCT-DECISIONS "Roles and the baton")
//! 1. A session is *stale* once no heartbeat arrived for the group's failover timeout; one that
//!    never heartbeated (to this leader) is not eligible.
//! 2. A vacant group gives the baton to its best eligible member: pinned by override first,
//!    then highest score, then latest last-data-processed time, then lowest id. A group's first
//!    grant goes straight to Primary; later grants go through PendingPrimary.
//! 3. The holder is told PendingPrimary (with the group's last data time) and becomes Primary
//!    at its next heartbeat after that. A hand-over (stale, deleted, forced, preempted,
//!    override) completes only when the holder's last answered grant has lapsed, or when a
//!    later heartbeat of the holder proves that it took a Secondary answer
//!    ([`Detector::release`]).
//! 4. A healthy Primary is preempted only by a member whose score beats its own by
//!    [`PREEMPTION_MARGIN`] for half a failover timeout (one heartbeat interval).
//! 5. A holder pinned by a role override keeps the baton even when stale; a member pinned while
//!    another holds the baton gets it (through a hand-over) once it is eligible, and nobody else
//!    may take the baton meanwhile.
//! 6. A deleted group's last grant, and a grant whose holder was relinquished but may not have
//!    heard so, are honoured until they lapse: computing a Secondary answer releases nobody
//!    (the answer may be lost on its way); only the member's proof that it took one does.
//! 7. A grant is answered valid for less than the failover timeout the leader waits
//!    ([`valid_for_ms`]): a client whose clock runs slower than the leader's still lets go
//!    first.
//!
//! ## Invariants
//! - The detector never proposes a grant while the holder's last answered grant may be valid,
//!   and never answers a holder whose replacement it has proposed (it is told Secondary until
//!   the proposal is applied or [`Detector::refused`]).
//! - After `rearm(now)`, nothing is judged stale or lapsed before `now + FailoverTimeout`.
//! - A pass skips a group only while nothing it would look at has moved since a pass found
//!   nothing to do there: the group's revision ([`State::revised_groups_from`]), its watch (a
//!   heartbeat, an answer or a refusal clears the mark) and the clock, before the first time
//!   at which a comparison that pass made would turn. A skipped group is decided exactly as a
//!   visit would decide it (debug builds check each skip).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::command::{Command, GroupCheckpoint};
use crate::group::Group;
use crate::history::{Candidate, Verdict};
use crate::ids::{ClientTime, Epoch, GroupId, GroupKey, Scope, SessionId, Timestamp};
use crate::session::{HeartbeatAnswer, HeartbeatIn, HeartbeatRecord, Reason, Role, Score, Stage};
use crate::state::State;

/// How much a member's score must beat the Primary's to take the baton (10 points).
pub const PREEMPTION_MARGIN: Score =
    Score::from_hundredths(crate::group::DEFAULT_PREEMPTION_MARGIN);
/// Heartbeats from one session closer together than `FailoverTimeout / RATE_LIMIT_DIVISOR`
/// are refused (AVEVA's 429). Clients are expected every `FailoverTimeout / 2`.
pub const RATE_LIMIT_DIVISOR: u64 = 20;

/// Why a heartbeat was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The session heartbeats faster than its group allows.
    TooFast {
        /// How long to wait before the next heartbeat is accepted.
        retry_after_ms: u64,
    },
}

#[derive(Clone, Debug)]
struct Heard {
    at: Timestamp,
    heartbeat: HeartbeatIn,
}

#[derive(Clone, Debug)]
struct Seen {
    /// The session is stale from this time on.
    deadline: Timestamp,
    /// Its last heartbeat to this leader, if any.
    heard: Option<Heard>,
    /// Whether `heard` is newer than the last checkpoint.
    dirty: bool,
}

#[derive(Clone, Debug, Default)]
struct Watch {
    /// Few per group: a sorted vector, like the group's own sessions.
    sessions: litemap::LiteMap<SessionId, Seen>,
    /// The holder's latest answered grant: (session, epoch, valid until).
    grant: Option<(SessionId, Epoch, Timestamp)>,
    /// The PendingPrimary this leader has told so, with its epoch: its next heartbeat
    /// promotes it. (This and the other rarely set fields are boxed: a leader keeps a watch for
    /// every group, and most groups are steady.)
    told_pending: Option<Box<(SessionId, Epoch)>>,
    /// A member whose score beats the Primary's by the margin, and since when.
    better_since: Option<Box<(SessionId, Timestamp)>>,
    /// The Primary's latest last-data-processed time.
    last_data_processed_time: Option<ClientTime>,
    /// When the group was last checkpointed.
    last_checkpoint: Option<Timestamp>,
    /// A holder (with its epoch) that a proposed `Grant` or `Expire` is replacing. Until the
    /// proposal is applied or refused, the holder is answered Secondary: a grant answered now
    /// could overlap its successor's.
    retiring: Option<Box<(SessionId, Epoch)>>,
    /// Set when a pass found nothing to do here and left the watch as it was: the group's
    /// revision then, and the earliest time at which anything the pass compared with the
    /// clock turns ([`Detector::quiet_until`]). Passes skip the group until either moves or
    /// something is heard, answered or refused here (which clears it).
    quiet: Option<(u64, Timestamp)>,
}

/// One watch per group (and per deleted group whose last grant may still be valid), keyed by
/// scope and then id like the state's groups, so a scope's name is kept once, not per group.
#[derive(Clone, Debug, Default)]
struct Watches {
    scopes: BTreeMap<Scope, BTreeMap<GroupId, Watch>>,
    len: usize,
}

impl Watches {
    fn get(&self, key: &GroupKey) -> Option<&Watch> {
        self.scopes.get(&key.scope)?.get(&key.group)
    }

    fn get_mut(&mut self, key: &GroupKey) -> Option<&mut Watch> {
        self.scopes.get_mut(&key.scope)?.get_mut(&key.group)
    }

    /// The group's watch, created (empty) if it has none, and whether it was created. One
    /// search among a scope's groups (every heartbeat comes here twice): a group id of up to
    /// 24 bytes is kept inline, so the key copied for `entry` costs no allocation (a longer
    /// one costs one, about as much as the second search it saves).
    fn entry(&mut self, key: &GroupKey) -> (&mut Watch, bool) {
        if !self.scopes.contains_key(&key.scope) {
            self.scopes.insert(key.scope.clone(), BTreeMap::new());
        }
        let scope = self.scopes.get_mut(&key.scope).expect("inserted above");
        let mut created = false;
        let watch = scope.entry(key.group.clone()).or_insert_with(|| {
            created = true;
            Watch::default()
        });
        if created {
            self.len += 1;
        }
        (watch, created)
    }

    fn remove(&mut self, key: &GroupKey) {
        let Some(scope) = self.scopes.get_mut(&key.scope) else { return };
        if scope.remove(&key.group).is_some() {
            self.len -= 1;
        }
        if scope.is_empty() {
            self.scopes.remove(&key.scope);
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    /// Every watch in key order (the order of `State::all_groups`).
    fn iter(&self) -> impl Iterator<Item = (GroupRef<'_>, &Watch)> {
        self.scopes.iter().flat_map(|(scope, ws)| ws.iter().map(move |(id, w)| ((scope, id), w)))
    }

    /// Every watch from `from` on (all with `None`), in key order, mutably.
    fn iter_mut_from(
        &mut self,
        from: Option<&GroupKey>,
    ) -> impl Iterator<Item = (GroupRef<'_>, &mut Watch)> {
        let first = from.cloned();
        let lower = first.as_ref().map_or(Bound::Unbounded, |k| Bound::Included(k.scope.clone()));
        self.scopes.range_mut((lower, Bound::Unbounded)).flat_map(move |(scope, ws)| {
            let lower = match &first {
                Some(k) if k.scope == *scope => Bound::Included(k.group.clone()),
                _ => Bound::Unbounded,
            };
            ws.range_mut((lower, Bound::Unbounded)).map(move |(id, w)| ((&*scope, id), w))
        })
    }
}

/// Whether two sorted maps hold exactly the same keys.
fn same_keys<V, W>(a: &litemap::LiteMap<SessionId, V>, b: &litemap::LiteMap<SessionId, W>) -> bool {
    a.len() == b.len() && a.keys().eq(b.keys())
}

/// A group's key as the watches hold it; compares like `GroupKey` (scope, then id).
type GroupRef<'a> = (&'a Scope, &'a GroupId);

/// How an eligible member ranks for the baton, the best first: pinned, then (in a prioritized
/// group) lowest priority, then highest score, latest last-data-processed time, lowest id.
type Rank<'a> = (Reverse<bool>, u32, Reverse<Score>, Reverse<Option<ClientTime>>, &'a SessionId);

fn key_ref(key: &GroupKey) -> GroupRef<'_> {
    (&key.scope, &key.group)
}

/// The leader-local failure detector. See the module documentation.
#[derive(Clone, Debug)]
pub struct Detector {
    groups: Watches,
    /// The state's group-set generation when watches were last paired with groups.
    paired_at: Option<u64>,
    /// How far apart two clocks' rates may be, in parts per million (see [`valid_for_ms`]).
    clock_drift_ppm: u32,
    /// Tombstones proposed for pruning, and when: not proposed again until
    /// [`PRUNE_RETRY_MS`] later (the proposal may have been lost).
    pruning: BTreeMap<(GroupKey, Epoch), Timestamp>,
}

impl Default for Detector {
    fn default() -> Self {
        Self {
            groups: Watches::default(),
            paired_at: None,
            clock_drift_ppm: DEFAULT_CLOCK_DRIFT_PPM,
            pruning: BTreeMap::new(),
        }
    }
}

/// How long a tombstone proposed for pruning waits before it is proposed again.
pub const PRUNE_RETRY_MS: u64 = 5_000;

/// The default bound on how far the rates of two clocks (a client's and a Baton node's, or two
/// nodes') may differ: 1,000 parts per million, 0.1 %. NTP keeps healthy clocks within 500 ppm
/// of true time; a suspended VM's clock can lose far more, which no bound covers.
pub const DEFAULT_CLOCK_DRIFT_PPM: u32 = 1_000;

/// How long a grant answered now is valid for on the client's clock, counted from when it sent
/// its heartbeat: the failover timeout, less what clocks running up to `drift_ppm` apart can
/// gain on it, less a millisecond for the leader's millisecond timestamps.
///
/// The leader treats the grant as valid until its answer + `failover_timeout_ms` on its own
/// clock; a client that counts `valid_for_ms` from its send time (earlier than the answer) on a
/// clock that runs up to `drift_ppm` slower than the leader's lets go before that.
pub fn valid_for_ms(failover_timeout_ms: u64, drift_ppm: u32) -> u64 {
    let margin = (failover_timeout_ms * u64::from(drift_ppm)).div_ceil(1_000_000);
    failover_timeout_ms.saturating_sub(margin).saturating_sub(1)
}

/// The most groups one [`Command::Checkpoint`] carries; a tick with more proposes several. A
/// part of a pass ([`Detector::tick_part`]) of at most this many groups proposes one at most.
pub const CHECKPOINT_GROUPS: usize = 1_000;

fn after(t: Timestamp, ms: u64) -> Timestamp {
    Timestamp(t.0.saturating_add(ms))
}

impl Detector {
    /// A detector for a node that has just become leader at `now`: see [`Detector::rearm`].
    pub fn new(state: &State, now: Timestamp) -> Self {
        let mut d = Detector::default();
        d.rearm(state, now);
        d
    }

    /// Forgets everything heard and treats every session as heard at `now` and every holder's
    /// grant as valid until `now + FailoverTimeout`: a new leader never fails a client over
    /// because of heartbeats its predecessor received, and never hands the baton on while a
    /// grant its predecessor answered could still be valid.
    pub fn rearm(&mut self, state: &State, now: Timestamp) {
        self.groups.clear();
        self.paired_at = None;
        for group in state.all_groups() {
            let until = after(now, group.rearm_ms());
            let (watch, _) = self.groups.entry(&group.key);
            for id in group.sessions.keys() {
                watch
                    .sessions
                    .insert(id.clone(), Seen { deadline: until, heard: None, dirty: false });
            }
            // The holder, or the member a hand-over is moving away from (it may not have been
            // told Secondary), may hold a grant answered by the previous leader.
            let last_holder = group.last_holder();
            watch.grant = last_holder.map(|s| (s.clone(), group.epoch, until));
            watch.last_data_processed_time = group.last_data_processed_time;
        }
        // A deleted group's holder may still hold a grant; a group re-created under its key
        // must not give the baton away before it lapses.
        for (key, tombstone) in state.tombstones() {
            let Some(holder) = &tombstone.holder else { continue };
            let until = after(now, tombstone.failover_timeout_ms);
            let (watch, _) = self.groups.entry(key);
            if state.group(key).is_some_and(|g| g.epoch != tombstone.epoch) {
                // Granted since in a group re-created under the key: the member granted waited
                // the tombstone's grant out, unless it is the tombstone's own holder, granted
                // again at once, which may still trust the deleted group's (longer) grant.
                if let Some((session, _, last)) = &mut watch.grant
                    && session == holder
                {
                    *last = (*last).max(until);
                }
                continue;
            }
            if watch.grant.is_none() {
                watch.grant = Some((holder.clone(), tombstone.epoch, until));
            }
        }
    }

    /// Records a heartbeat of `session` received at `now`, or refuses it as too fast.
    pub fn observe(
        &mut self,
        group: &Group,
        session: &SessionId,
        heartbeat: HeartbeatIn,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        let ft = group.config.failover_timeout_ms();
        let watch = self.watch_mut(&group.key);
        let min_gap = ft / RATE_LIMIT_DIVISOR;
        if let Some(heard) = watch.sessions.get(session).and_then(|s| s.heard.as_ref()) {
            let earliest = after(heard.at, min_gap);
            if now < earliest {
                return Err(Refusal::TooFast { retry_after_ms: earliest.0 - now.0 });
            }
        }
        let primary = group
            .holder
            .as_ref()
            .is_some_and(|h| &h.session == session && h.stage == Stage::Primary);
        if primary && heartbeat.last_data_processed_time.is_some() {
            watch.last_data_processed_time = heartbeat.last_data_processed_time;
        }
        watch.sessions.insert(
            session.clone(),
            Seen {
                deadline: after(now, ft),
                heard: Some(Heard { at: now, heartbeat }),
                dirty: true,
            },
        );
        watch.quiet = None;
        Ok(())
    }

    /// The command a heartbeat of `session` calls for, if any (after [`Detector::observe`]).
    pub fn plan_heartbeat(
        &self,
        group: &Group,
        session: &SessionId,
        now: Timestamp,
    ) -> Option<Command> {
        let watch = self.groups.get(&group.key)?;
        let ldpt = watch.last_data_processed_time;
        match &group.holder {
            Some(h) if &h.session == session => {
                // A forced hand-over nobody can complete now ends, and the holder stays.
                if group.handover.as_ref().is_some_and(|o| o.reason == Reason::Forced)
                    && Self::successor_of(group, watch, now).is_none_or(|s| &s == session)
                {
                    Some(Command::CancelHandover { group: group.key.clone(), epoch: h.epoch })
                } else if group.handover.is_some() {
                    Some(Command::Relinquish {
                        group: group.key.clone(),
                        session: session.clone(),
                        epoch: h.epoch,
                        last_data_processed_time: ldpt,
                    })
                } else if h.stage == Stage::Pending
                    && watch
                        .told_pending
                        .as_deref()
                        .is_some_and(|(s, e)| s == session && *e == h.epoch)
                {
                    Some(Command::Promote {
                        group: group.key.clone(),
                        session: session.clone(),
                        epoch: h.epoch,
                    })
                } else {
                    None
                }
            }
            Some(_) => None,
            None => (Self::successor_of(group, watch, now).as_ref() == Some(session)
                && !Self::grant_live_for_other(watch, session, now))
            .then(|| Self::grant_of(group, watch, session, None, now)),
        }
    }

    /// The answer to `session`'s heartbeat from `group` as it stands after any command; records
    /// the grant it carries (valid until `now + FailoverTimeout`, counted from the answer, which
    /// is after the client sent its heartbeat).
    ///
    /// `None` for a holder whose replacement is being committed: it may hold the baton no
    /// longer, and may hold it again at the same epoch if the replacement is refused, so it is
    /// told nothing now. (Telling it Secondary would hand it a proof of letting go that a later
    /// Primary answer at the same epoch would not revoke: see [`Detector::release`].)
    pub fn answer(
        &mut self,
        group: &Group,
        session: &SessionId,
        now: Timestamp,
    ) -> Option<HeartbeatAnswer> {
        let drift_ppm = self.clock_drift_ppm;
        let watch = self.watch_mut(&group.key);
        watch.quiet = None;
        let holder_epoch = group.holder.as_ref().map(|h| h.epoch);
        if watch.retiring.as_deref().is_some_and(|(s, e)| s == session && Some(*e) == holder_epoch)
        {
            return None;
        }
        let mut answer = group.answer(session, watch.last_data_processed_time);
        if answer.role == Role::Secondary {
            // Computing a Secondary answer ends nothing: the answer may never arrive (a lost
            // connection, a forward that timed out), and the member then trusts its last grant
            // until it lapses. Only the member's proof that it took such an answer
            // (`Detector::release`) ends the grant early.
            return Some(answer);
        }
        let epoch = group.holder.as_ref().map_or(group.epoch, |h| h.epoch);
        let ft = group.config.failover_timeout_ms();
        // An earlier answer may reach the member after this one is lost: its grant, answered
        // under a longer timeout before the timeout was lowered, may end later than this one.
        let until = match &watch.grant {
            Some((s, _, earlier)) if s == session => after(now, ft).max(*earlier),
            _ => after(now, ft),
        };
        watch.grant = Some((session.clone(), epoch, until));
        answer.valid_for_ms = Some(valid_for_ms(ft, drift_ppm));
        if answer.role == Role::PendingPrimary {
            watch.told_pending = Some(Box::new((session.clone(), epoch)));
        }
        Some(answer)
    }

    /// Ends `session`'s grant on its proof that the last answer it took was Secondary at epoch
    /// `released` (a later heartbeat than the one whose answer granted it, from a client that
    /// keeps one heartbeat in flight and ignores answers it gave up waiting for).
    ///
    /// Sound because no member is ever answered Primary or PendingPrimary at an epoch it was
    /// answered Secondary at: a member told Secondary at epoch E is not the holder at E then,
    /// and can become the holder again only through a grant, at a later epoch (a holder whose
    /// replacement is in flight is told nothing, see [`Detector::answer`]). So a grant of a
    /// later epoch is kept (the proof may be a late duplicate of a heartbeat sent before that
    /// grant), as is the grant of the member holding the baton at an epoch up to `released`,
    /// and a proof of an epoch the group has not reached proves nothing.
    pub fn release(&mut self, group: &Group, session: &SessionId, released: Epoch) {
        if released > group.epoch
            || group.holder.as_ref().is_some_and(|h| &h.session == session && h.epoch <= released)
        {
            return;
        }
        let Some(watch) = self.groups.get_mut(&group.key) else { return };
        if watch.grant.as_ref().is_some_and(|(s, e, _)| s == session && *e <= released) {
            watch.grant = None;
            watch.quiet = None;
        }
    }

    /// The same detector, with answers' validity shortened for clocks whose rates differ by up
    /// to `ppm` parts per million (see [`valid_for_ms`]).
    pub fn with_clock_drift(mut self, ppm: u32) -> Self {
        self.clock_drift_ppm = ppm;
        self
    }

    /// Reports that a proposed command was refused (not applied), so a holder it was retiring
    /// may be answered as holder again.
    pub fn refused(&mut self, command: &Command) {
        if let Command::Grant { group, replaces: Some(session), expected_epoch, .. }
        | Command::Expire { group, session, epoch: expected_epoch, .. } = command
            && let Some(watch) = self.groups.get_mut(group)
            && watch.retiring.as_deref().is_some_and(|(s, e)| s == session && e == expected_epoch)
        {
            watch.retiring = None;
            watch.quiet = None;
        }
    }

    /// Fills in what a client command needs from the leader's observations (the active
    /// sessions of a group being deleted).
    pub fn prepare(&self, command: Command, state: &State, now: Timestamp) -> Command {
        match command {
            Command::DeleteGroup { key, refuse_if_active: true, .. } => {
                let active =
                    state.group(&key).map(|g| self.active_sessions(g, now)).unwrap_or_default();
                Command::DeleteGroup { key, refuse_if_active: true, active }
            }
            Command::RequestHandover {
                group,
                expected_epoch,
                reason,
                to,
                require_standby: true,
                ..
            } => {
                // Ready: the member asked for, or any member but the holder, can take over now.
                let standby_ready = state.group(&group).is_some_and(|g| {
                    let holder = g.holder.as_ref().map(|h| &h.session);
                    self.groups.get(&group).is_some_and(|watch| {
                        let ranked = Self::ranked(g, watch, now);
                        match &to {
                            Some(t) => Some(t) != holder && ranked.contains(t),
                            None => ranked.iter().any(|s| Some(s) != holder),
                        }
                    })
                });
                Command::RequestHandover {
                    group,
                    expected_epoch,
                    reason,
                    to,
                    require_standby: true,
                    standby_ready,
                }
            }
            other => other,
        }
    }

    /// Sessions fresh now: heard within the failover timeout, or re-armed by a new leader.
    pub fn active_sessions(&self, group: &Group, now: Timestamp) -> Vec<SessionId> {
        let Some(watch) = self.groups.get(&group.key) else { return Vec::new() };
        group.sessions.keys().filter(|id| Self::fresh(watch, id, now)).cloned().collect()
    }

    /// Whether `session` is fresh (heard, or re-armed, within the failover timeout).
    pub fn is_fresh(&self, group: &GroupKey, session: &SessionId, now: Timestamp) -> bool {
        self.groups
            .get(group)
            .and_then(|w| w.sessions.get(session))
            .is_some_and(|s| now < s.deadline)
    }

    /// The group's watch, created if it has none; a watch created outside a tick makes the
    /// next tick pair watches with groups again, whatever the group-set generation says.
    fn watch_mut(&mut self, key: &GroupKey) -> &mut Watch {
        let (watch, created) = self.groups.entry(key);
        if created {
            self.paired_at = None;
        }
        watch
    }

    /// The commands time calls for: overrides that expired, holders whose grant lapsed,
    /// vacant groups, preemption, and checkpoints of heartbeats. At most one decision per group
    /// per tick (the rest follow on later ticks); the checkpoints of every group that has
    /// none are batched into as few commands as [`CHECKPOINT_GROUPS`] allows.
    pub fn tick(&mut self, state: &State, now: Timestamp) -> Vec<Command> {
        self.tick_part(state, now, None, usize::MAX).0
    }

    /// Part of a [`Detector::tick`]: at most `most` groups, from the group `from` on (from
    /// the first with `None`), and the key of the group the next part starts at (`None` once
    /// every group had its turn). A pass in parts decides what one tick decides, group by
    /// group, and whoever holds the state for it can let go between parts, so that applies
    /// and heartbeats need not wait for a whole pass over many groups.
    pub fn tick_part(
        &mut self,
        state: &State,
        now: Timestamp,
        from: Option<&GroupKey>,
        most: usize,
    ) -> (Vec<Command>, Option<GroupKey>) {
        // Pair watches with groups again only when the set of groups changed since the last
        // tick: drop the watches of deleted groups (each kept while its last grant may be
        // valid) and add one for every new group.
        let generation = state.group_set_generation();
        if self.paired_at != Some(generation) || self.groups.len() != state.group_count() {
            // The state's groups and the watches are both in key order: one walk side by side
            // finds both (a lookup per group per tick was most of a leader's CPU with 100,000
            // groups).
            let (mut gone, mut missing) = (Vec::new(), Vec::new());
            let mut groups = state.all_groups().peekable();
            for (key, watch) in self.groups.iter() {
                while let Some(group) = groups.next_if(|g| key_ref(&g.key) < key) {
                    missing.push(group.key.clone());
                }
                let deleted = groups.next_if(|g| key_ref(&g.key) == key).is_none();
                if deleted && watch.grant.as_ref().is_none_or(|(_, _, until)| *until <= now) {
                    gone.push(GroupKey { scope: key.0.clone(), group: key.1.clone() });
                }
            }
            missing.extend(groups.map(|g| g.key.clone()));
            for key in gone {
                self.groups.remove(&key);
            }
            for key in missing {
                self.groups.entry(&key);
            }
            self.paired_at = Some(generation);
        }
        // With exactly one watch per group, the n-th watch is the n-th group's: no key need be
        // compared (comparing them was most of a tick with thousands of groups).
        let paired = self.groups.len() == state.group_count();
        let mut commands = Vec::new();
        if from.is_none()
            && let Some(prune) = self.prune(state, now)
        {
            commands.push(prune);
        }
        let mut checkpoints = Vec::new();
        let mut watches = self.groups.iter_mut_from(from).peekable();
        let mut groups = state.revised_groups_from(from);
        for (revision, group) in groups.by_ref().take(most) {
            if !paired {
                while watches.next_if(|(key, _)| *key < key_ref(&group.key)).is_some() {}
            }
            let Some((key, watch)) = watches.next() else {
                debug_assert!(false, "every group has a watch after the pairing above");
                break;
            };
            debug_assert_eq!(key, key_ref(&group.key), "watches and groups walk in the same order");
            // Nothing moved since a pass found nothing to do here: neither the group, nor the
            // watch, nor the clock past any time the pass compared with. Told without reading
            // the group (most groups are steady; a pass over all of them was mostly waiting
            // on memory).
            if watch.quiet.is_some_and(|(quiet_at, until)| quiet_at == revision && now < until) {
                debug_assert!(
                    Self::still_quiet(group, watch, now),
                    "a pass skipped {:?}, which had something to do",
                    group.key
                );
                continue;
            }
            // Forget sessions that left (checked cheaply first: members rarely change).
            if !same_keys(&watch.sessions, &group.sessions) {
                watch.sessions.retain(|id, _| group.sessions.contains_key(id));
            }
            let before = (watch.retiring.clone(), watch.better_since.clone());
            if let Some(command) = Self::decide(group, watch, now) {
                watch.quiet = None;
                commands.push(command);
            } else if let Some(checkpoint) = Self::checkpoint(group, watch, now) {
                watch.quiet = None;
                checkpoints.push(checkpoint);
            } else {
                let unchanged = (&watch.retiring, &watch.better_since) == (&before.0, &before.1);
                watch.quiet = unchanged.then(|| (revision, Self::quiet_until(group, watch, now)));
            }
        }
        while !checkpoints.is_empty() {
            let rest = checkpoints.split_off(checkpoints.len().min(CHECKPOINT_GROUPS));
            commands.push(Command::Checkpoint { groups: checkpoints });
            checkpoints = rest;
        }
        (commands, groups.next().map(|(_, g)| g.key.clone()))
    }

    /// Once a pass (at its first part): the tombstones whose last grant this leader knows to
    /// have lapsed, as it would know before granting the baton to anyone else under their
    /// keys. A tombstone the leader's watches hold no live grant of its epoch or earlier (or of
    /// its holder) for is prunable: its group's watch is gone (dropped once the grant lapsed),
    /// never held one (no holder, or none since this leader re-armed), or has moved on to
    /// another member's grant in a group re-created under its key (which waited the
    /// tombstone's grant out).
    fn prune(&mut self, state: &State, now: Timestamp) -> Option<Command> {
        self.pruning
            .retain(|(key, epoch), _| state.tombstone(key).is_some_and(|t| t.epoch == *epoch));
        let mut tombstones = Vec::new();
        for (key, tombstone) in state.tombstones() {
            if tombstones.len() == CHECKPOINT_GROUPS {
                break;
            }
            // Of its epoch or earlier, or its own holder's at any epoch: granted again at once
            // in a group re-created under the key, it may still trust the deleted group's grant,
            // and its watch keeps the later end.
            let live = self.groups.get(key).and_then(|w| w.grant.as_ref()).is_some_and(
                |(session, epoch, until)| {
                    now < *until
                        && (*epoch <= tombstone.epoch || tombstone.holder.as_ref() == Some(session))
                },
            );
            let pending = (key.clone(), tombstone.epoch);
            let proposed =
                self.pruning.get(&pending).is_some_and(|at| now < after(*at, PRUNE_RETRY_MS));
            if !live && !proposed {
                self.pruning.insert(pending.clone(), now);
                tombstones.push(pending);
            }
        }
        (!tombstones.is_empty()).then_some(Command::PruneTombstones { tombstones })
    }

    fn decide(group: &Group, watch: &mut Watch, now: Timestamp) -> Option<Command> {
        let key = &group.key;
        for s in group.sessions.values() {
            if let Some(o) = &s.role_override
                && o.expires_at.is_some_and(|e| e <= now)
            {
                return Some(Command::ClearExpiredOverride {
                    group: key.clone(),
                    session: s.id.clone(),
                    set_at: o.set_at,
                });
            }
        }
        let Some(holder) = &group.holder else {
            watch.retiring = None;
            let successor = Self::successor_of(group, watch, now)?;
            if Self::grant_live_for_other(watch, &successor, now) {
                return None;
            }
            return Some(Self::grant_of(group, watch, &successor, None, now));
        };
        match watch.retiring.as_deref() {
            // A proposal replacing this holder is in flight: wait for it.
            Some((s, e)) if *s == holder.session && *e == holder.epoch => return None,
            _ => watch.retiring = None,
        }
        let exists = group.sessions.get(&holder.session);
        let pinned = exists.is_some_and(|s| s.role_override.is_some());
        let stale = exists.is_none() || !Self::fresh(watch, &holder.session, now);
        // No grant of any member may still be valid: neither the holder's nor one left over
        // from a deleted group or a relinquish the member may not have heard.
        let lapsed = watch.grant.as_ref().is_none_or(|(_, _, until)| *until <= now);
        let leaving = group.handover.is_some();
        // A suspended group lets its holder go, gracefully, and grants nobody.
        if group.config.policy.suspended && !leaving && !stale {
            return Some(Command::RequestHandover {
                group: key.clone(),
                expected_epoch: holder.epoch,
                reason: Reason::Suspended,
                to: None,
                require_standby: false,
                standby_ready: false,
            });
        }
        if (leaving || (stale && !pinned)) && lapsed {
            let command = match Self::successor_of(group, watch, now) {
                Some(next) if next != holder.session => {
                    Self::grant_of(group, watch, &next, Some(holder.session.clone()), now)
                }
                _ if leaving => Command::Expire {
                    group: key.clone(),
                    session: holder.session.clone(),
                    epoch: holder.epoch,
                    last_data_processed_time: watch.last_data_processed_time,
                },
                // Stale with nobody to take over: it keeps the baton and gets it back if it returns.
                _ => return None,
            };
            watch.retiring = Some(Box::new((holder.session.clone(), holder.epoch)));
            return Some(command);
        }
        if stale || leaving || pinned {
            watch.better_since = None;
            return None;
        }
        // Another member is pinned and ready: the baton moves to it.
        if Self::pinned(group).is_some_and(|p| {
            p.id != holder.session && p.enabled && Self::eligible(watch, &p.id, now)
        }) {
            return Some(Command::RequestHandover {
                group: key.clone(),
                expected_epoch: holder.epoch,
                reason: Reason::Override,
                to: None,
                require_standby: false,
                standby_ready: false,
            });
        }
        if holder.stage != Stage::Primary {
            watch.better_since = None;
            return None;
        }
        Self::preemption(group, watch, &holder.session, holder.epoch, now)
    }

    /// The member pinned by a role override, if any (at most one is).
    fn pinned(group: &Group) -> Option<&crate::session::Session> {
        group.sessions.values().find(|s| s.role_override.is_some())
    }

    /// Whether a member other than `candidate` may still hold a valid grant.
    fn grant_live_for_other(watch: &Watch, candidate: &SessionId, now: Timestamp) -> bool {
        watch.grant.as_ref().is_some_and(|(s, _, until)| s != candidate && *until > now)
    }

    fn preemption(
        group: &Group,
        watch: &mut Watch,
        primary: &SessionId,
        epoch: Epoch,
        now: Timestamp,
    ) -> Option<Command> {
        let policy = &group.config.policy;
        let failback = policy.prioritized && policy.failback;
        let score = |id: &SessionId| {
            watch.sessions.get(id).and_then(|s| s.heard.as_ref()).map(|h| h.heartbeat.score)
        };
        let priority = |id: &SessionId| group.sessions.get(id).map_or(u32::MAX, |s| s.priority);
        // With neither preemption nor failback, nobody takes the baton from a healthy holder:
        // no challenger is looked for.
        let challenger = if failback || policy.preemption_margin.is_some() {
            Self::best_other(group, watch, primary, now)
        } else {
            None
        };
        let better = match (challenger, score(primary)) {
            // Failback: a healthy member of higher priority takes the baton back.
            (Some(c), _) if failback && priority(c) < priority(primary) => Some(c.clone()),
            (Some(c), Some(p))
                if policy.preemption_margin.is_some_and(|margin| {
                    score(c)
                        .is_some_and(|cs| cs.hundredths() >= p.hundredths().saturating_add(margin))
                }) && (!policy.prioritized || priority(c) == priority(primary)) =>
            {
                Some(c.clone())
            }
            _ => None,
        };
        let Some(c) = better else {
            watch.better_since = None;
            return None;
        };
        let since = match watch.better_since.as_deref() {
            Some((id, since)) if *id == c => *since,
            _ => {
                watch.better_since = Some(Box::new((c, now)));
                now
            }
        };
        (now.0 >= since.0 + group.config.failover_timeout_ms() / 2).then(|| {
            Command::RequestHandover {
                group: group.key.clone(),
                expected_epoch: epoch,
                reason: Reason::Preempted,
                to: None,
                require_standby: false,
                standby_ready: false,
            }
        })
    }

    fn checkpoint(group: &Group, watch: &mut Watch, now: Timestamp) -> Option<GroupCheckpoint> {
        let interval = group.config.failover_timeout_ms() / 2;
        if watch.last_checkpoint.is_some_and(|t| now.0 < t.0 + interval) {
            return None;
        }
        let mut heartbeats = Vec::new();
        for (id, seen) in watch.sessions.iter_mut().filter(|(_, s)| s.dirty) {
            seen.dirty = false;
            if let Some(h) = &seen.heard {
                heartbeats.push((
                    id.clone(),
                    HeartbeatRecord { heartbeat: h.heartbeat.clone(), received_at: h.at },
                ));
            }
        }
        let ldpt_changed = watch.last_data_processed_time.is_some()
            && watch.last_data_processed_time != group.last_data_processed_time;
        if heartbeats.is_empty() && !ldpt_changed {
            return None;
        }
        watch.last_checkpoint = Some(now);
        Some(GroupCheckpoint {
            group: group.key.clone(),
            heartbeats,
            last_data_processed_time: watch.last_data_processed_time,
        })
    }

    /// The first time after `now` at which a comparison with the clock in [`Detector::decide`]
    /// or [`Detector::checkpoint`] can turn for this group: a member's deadline (stale,
    /// eligible), the end of the last grant, a role override's expiry, a challenger's half
    /// timeout, a due checkpoint of what was heard. Before it, with the group and the watch as
    /// they are, a pass decides what it decided at `now`.
    fn quiet_until(group: &Group, watch: &Watch, now: Timestamp) -> Timestamp {
        let ft = group.config.failover_timeout_ms();
        let deadlines = watch.sessions.values().map(|s| s.deadline);
        let grant = watch.grant.as_ref().map(|(_, _, until)| *until);
        let expiries = group.sessions.values().filter_map(|s| s.role_override.as_ref()?.expires_at);
        let challenger = watch.better_since.as_deref().map(|(_, since)| after(*since, ft / 2));
        let unsaved = watch.sessions.values().any(|s| s.dirty)
            || (watch.last_data_processed_time.is_some()
                && watch.last_data_processed_time != group.last_data_processed_time);
        let checkpoint = watch.last_checkpoint.filter(|_| unsaved).map(|t| after(t, ft / 2));
        deadlines
            .chain(grant)
            .chain(expiries)
            .chain(challenger)
            .chain(checkpoint)
            .filter(|t| *t > now)
            .min()
            .unwrap_or(Timestamp(u64::MAX))
    }

    /// Whether a pass at `now` would find nothing to do at the group and leave its watch as
    /// it is: what skipping a quiet group takes for granted (checked in debug builds).
    fn still_quiet(group: &Group, watch: &Watch, now: Timestamp) -> bool {
        let mut probe = watch.clone();
        Self::decide(group, &mut probe, now).is_none()
            && Self::checkpoint(group, &mut probe, now).is_none()
            && probe.retiring == watch.retiring
            && probe.better_since == watch.better_since
    }

    fn fresh(watch: &Watch, session: &SessionId, now: Timestamp) -> bool {
        watch.sessions.get(session).is_some_and(|s| now < s.deadline)
    }

    /// Heard by this leader and fresh.
    fn eligible(watch: &Watch, session: &SessionId, now: Timestamp) -> bool {
        watch.sessions.get(session).is_some_and(|s| s.heard.is_some() && now < s.deadline)
    }

    /// Enabled, eligible members, best first: pinned, then (in a prioritized group) lowest
    /// priority, then score, last-data-processed time, lowest id.
    fn ranked(group: &Group, watch: &Watch, now: Timestamp) -> Vec<SessionId> {
        let mut ranks: Vec<Rank<'_>> = Self::ranks(group, watch, now).collect();
        ranks.sort_unstable();
        ranks.into_iter().map(|rank| rank.4.clone()).collect()
    }

    /// The best of the enabled, eligible members other than `except`, as [`Detector::ranked`]
    /// orders them, found without building the ranking (every pass asks this of every group
    /// with a Primary).
    fn best_other<'a>(
        group: &'a Group,
        watch: &'a Watch,
        except: &SessionId,
        now: Timestamp,
    ) -> Option<&'a SessionId> {
        let best =
            Self::ranks(group, watch, now).filter(|rank| rank.4 != except).min().map(|rank| rank.4);
        // Debug builds (every test) check the shortcut against the whole ranking.
        debug_assert_eq!(best, Self::ranked(group, watch, now).iter().find(|id| *id != except));
        best
    }

    /// The rank of every enabled, eligible member, in no particular order.
    fn ranks<'a>(
        group: &'a Group,
        watch: &'a Watch,
        now: Timestamp,
    ) -> impl Iterator<Item = Rank<'a>> {
        let prioritized = group.config.policy.prioritized;
        group.sessions.values().filter(|s| s.enabled).filter_map(move |s| {
            let seen = watch.sessions.get(&s.id).filter(|seen| now < seen.deadline)?;
            let hb = &seen.heard.as_ref()?.heartbeat;
            Some((
                Reverse(s.role_override.is_some()),
                if prioritized { s.priority } else { 0 },
                Reverse(hb.score),
                Reverse(hb.last_data_processed_time),
                &s.id,
            ))
        })
    }

    /// Who should get the baton next: the best eligible member, passing over the member a
    /// hand-over is moving away from unless nobody else is eligible.
    fn successor_of(group: &Group, watch: &Watch, now: Timestamp) -> Option<SessionId> {
        if group.config.policy.suspended {
            return None;
        }
        // Nobody heard from and fresh, nobody eligible: said without looking members up by id
        // (a vacant group whose members have not started is visited every tick).
        if !watch.sessions.values().any(|s| s.heard.is_some() && now < s.deadline) {
            return None;
        }
        // A pinned member is the only successor; until it is eligible, nobody is.
        if let Some(pinned) = Self::pinned(group) {
            return (pinned.enabled && Self::eligible(watch, &pinned.id, now))
                .then(|| pinned.id.clone());
        }
        let ranked = Self::ranked(group, watch, now);
        // The member a hand-over asked for, and nobody else: if it cannot take the baton, the
        // hand-over is cancelled when the holder next heartbeats (or, if the holder went
        // silent, ends and the group is vacant).
        // The member a hand-over asked for gets the baton if it can take it. While the holder
        // still has the baton, nobody else does (the hand-over is cancelled when the holder
        // next heartbeats). Once the group is vacant (the holder let go, expired or left), a
        // member asked for that cannot take the baton leaves it to the best eligible one, or
        // the group would stay without a holder until that member came back.
        if let Some(to) = group.handover.as_ref().and_then(|h| h.to.as_ref()) {
            if ranked.contains(to) {
                return Some(to.clone());
            }
            if group.holder.is_some() {
                return None;
            }
        }
        // A suspension that has let go is over once the group is resumed: its last holder may
        // have the baton back (the hand-over record stays until the next grant, so that a new
        // leader still waits out that holder's last grant).
        let resumed = group.holder.is_none()
            && group.handover.as_ref().is_some_and(|h| h.reason == Reason::Suspended);
        let leaving = if resumed {
            None
        } else {
            group.handover.as_ref().map(|h| &h.from).or(group.holder.as_ref().map(|h| &h.session))
        };
        ranked.iter().find(|id| Some(*id) != leaving).or(ranked.first()).cloned()
    }

    /// Every member of `group` with why it was or was not given the baton, `chosen` being the
    /// successor [`Detector::successor_of`] picked.
    fn considered(
        group: &Group,
        watch: &Watch,
        chosen: &SessionId,
        now: Timestamp,
    ) -> Vec<Candidate> {
        let pinned = Self::pinned(group).map(|s| &s.id);
        let requested = group.handover.as_ref().and_then(|h| h.to.as_ref());
        let leaving =
            group.handover.as_ref().map(|h| &h.from).or(group.holder.as_ref().map(|h| &h.session));
        group
            .sessions
            .values()
            .map(|s| {
                let heard = watch.sessions.get(&s.id).and_then(|seen| seen.heard.as_ref());
                let verdict = if &s.id == chosen {
                    Verdict::Chosen
                } else if !s.enabled {
                    Verdict::Disabled
                } else if heard.is_none() {
                    Verdict::NotHeard
                } else if !Self::fresh(watch, &s.id, now) {
                    Verdict::Stale
                } else if pinned.is_some_and(|p| p != &s.id) {
                    Verdict::NotPinned
                } else if requested.is_some_and(|r| r != &s.id) {
                    Verdict::NotRequested
                } else if leaving == Some(&s.id) {
                    Verdict::Leaving
                } else {
                    Verdict::Outranked
                };
                Candidate {
                    session: s.id.clone(),
                    verdict,
                    score: heard.map(|h| h.heartbeat.score),
                    priority: s.priority,
                }
            })
            .collect()
    }

    fn grant_of(
        group: &Group,
        watch: &Watch,
        session: &SessionId,
        replaces: Option<SessionId>,
        now: Timestamp,
    ) -> Command {
        Command::Grant {
            considered: Self::considered(group, watch, session, now),
            group: group.key.clone(),
            session: session.clone(),
            stage: if group.epoch == Epoch(0) { Stage::Primary } else { Stage::Pending },
            expected_epoch: group.epoch,
            replaces,
            last_data_processed_time: watch.last_data_processed_time,
            // After a suspension let go, the baton is simply vacant again.
            reason: group
                .handover
                .as_ref()
                .filter(|h| group.holder.is_some() || h.reason != Reason::Suspended)
                .map_or(if group.holder.is_some() { Reason::Stale } else { Reason::Vacant }, |h| {
                    h.reason
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Request;
    use crate::group::{DEFAULT_PREEMPTION_MARGIN, GroupConfig, Policy};
    use crate::ids::{NamespaceId, TenantId};
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    fn apply(state: &mut State, at: Timestamp, command: Command) {
        state.apply(&Request { at, command, actor: None });
    }

    fn create(state: &mut State, at: Timestamp, key: &GroupKey, g: usize, members: &[SessionId]) {
        let policy = Policy {
            preemption_margin: (g != 1).then_some(DEFAULT_PREEMPTION_MARGIN),
            prioritized: g == 2,
            failback: g == 2,
            suspended: false,
        };
        let config = GroupConfig::new(None, None, 1_000).expect("a timeout in range");
        let command = Command::CreateGroup {
            key: key.clone(),
            config: config.with_policy(policy),
            members: vec![],
        };
        apply(state, at, command);
        for session in members {
            let command =
                Command::CreateSession { group: key.clone(), session: session.clone(), name: None };
            apply(state, at, command);
        }
    }

    /// A heartbeat received by both detectors: both must refuse, plan and answer it alike
    /// (`answered`: or leave it unanswered, as a leader that cannot confirm its lease does).
    fn heartbeat(
        both: [&mut Detector; 2],
        state: &mut State,
        (key, session): (&GroupKey, &SessionId),
        score: u64,
        now: Timestamp,
        answered: bool,
    ) {
        let [skipping, visiting] = both;
        let Some(group) = state.group(key).cloned() else { return };
        let heartbeat = HeartbeatIn {
            score: Score::new(score as f64).expect("a score in range"),
            heartbeat_time: None,
            last_data_processed_time: Some(ClientTime(now.0 as i64)),
        };
        let refused = skipping.observe(&group, session, heartbeat.clone(), now);
        assert_eq!(refused, visiting.observe(&group, session, heartbeat, now));
        if refused.is_err() {
            return;
        }
        let planned = skipping.plan_heartbeat(&group, session, now);
        assert_eq!(planned, visiting.plan_heartbeat(&group, session, now));
        if let Some(command) = planned {
            apply(state, now, command);
        }
        if !answered {
            return;
        }
        let group = state.group(key).expect("heartbeats change no group set");
        assert_eq!(skipping.answer(group, session, now), visiting.answer(group, session, now));
    }

    /// Over random histories of heartbeats, silences, scores, role overrides, forced
    /// hand-overs, members leaving and joining, groups deleted and re-created and new leaders,
    /// a detector whose passes skip quiet groups decides, answers and refuses exactly what one
    /// whose every pass visits every group does.
    #[test]
    fn skipping_quiet_groups_decides_what_visiting_every_group_decides() {
        let scope = Scope {
            tenant: TenantId::new("t").expect("an id"),
            namespace: NamespaceId::new("ns").expect("an id"),
        };
        let keys: Vec<GroupKey> = (0..4)
            .map(|g| GroupKey {
                scope: scope.clone(),
                group: GroupId::new(format!("g{g}")).expect("an id"),
            })
            .collect();
        let members: Vec<SessionId> =
            ["a", "b", "c"].iter().map(|s| SessionId::new(s).expect("an id")).collect();
        let (mut skipped, mut passes) = (0usize, 0usize);
        for seed in 1..=40u64 {
            // Seeded: every run sees the same histories.
            let mut dice = StdRng::seed_from_u64(seed);
            let mut state = State::default();
            let mut now = Timestamp(1_000);
            for (g, key) in keys.iter().enumerate() {
                create(&mut state, now, key, g, &members);
            }
            let mut skipping = Detector::new(&state, now);
            let mut visiting = skipping.clone();
            let mut scores = [[100u64; 3]; 4];
            let mut silent = [[false; 3]; 4];
            for step in 0..500 {
                now = after(now, 1 + dice.random_range(0..80));
                let (g, m) = (dice.random_range(0..4) as usize, dice.random_range(0..3) as usize);
                let (key, session) = (&keys[g], &members[m]);
                let epoch = state.group(key).map_or(Epoch(0), |group| group.epoch);
                match dice.random_range(0..40) {
                    0..=3 => silent[g][m] = !silent[g][m],
                    4..=6 => scores[g][m] = dice.random_range(0..101),
                    7 => {
                        let primary_for_ms = match dice.random_range(0..3) {
                            0 => None,
                            1 => Some(None),
                            _ => Some(Some(dice.random_range(0..3_000))),
                        };
                        let session = session.clone();
                        apply(
                            &mut state,
                            now,
                            Command::SetOverride { group: key.clone(), session, primary_for_ms },
                        );
                    }
                    8 => {
                        let command = Command::RequestHandover {
                            group: key.clone(),
                            expected_epoch: epoch,
                            reason: Reason::Forced,
                            to: (dice.random_range(0..2) == 0).then(|| session.clone()),
                            require_standby: false,
                            standby_ready: false,
                        };
                        apply(&mut state, now, command);
                    }
                    9 => {
                        let session = session.clone();
                        apply(
                            &mut state,
                            now,
                            Command::DeleteSession { group: key.clone(), session },
                        );
                    }
                    10 => {
                        let session = session.clone();
                        apply(
                            &mut state,
                            now,
                            Command::CreateSession { group: key.clone(), session, name: None },
                        );
                    }
                    11 if dice.random_range(0..4) == 0 => {
                        let command = Command::DeleteGroup {
                            key: key.clone(),
                            refuse_if_active: false,
                            active: vec![],
                        };
                        apply(&mut state, now, command);
                        create(&mut state, now, key, g, &members);
                    }
                    12 if dice.random_range(0..8) == 0 => {
                        skipping = Detector::new(&state, now);
                        visiting = skipping.clone();
                    }
                    _ => {}
                }
                for (g, key) in keys.iter().enumerate() {
                    for (m, session) in members.iter().enumerate() {
                        if !silent[g][m] && dice.random_range(0..6) == 0 {
                            let both = [&mut skipping, &mut visiting];
                            let answered = dice.random_range(0..10) != 0;
                            let to = (key, session);
                            heartbeat(both, &mut state, to, scores[g][m], now, answered);
                        }
                    }
                }
                skipped += skipping.groups.iter().filter(|(_, w)| w.quiet.is_some()).count();
                passes += keys.len();
                for (_, watch) in visiting.groups.iter_mut_from(None) {
                    watch.quiet = None;
                }
                let decided = skipping.tick(&state, now);
                assert_eq!(decided, visiting.tick(&state, now), "seed {seed}, step {step}");
                for command in decided {
                    apply(&mut state, now, command);
                }
            }
        }
        // The histories must give the shortcut work: many visits found a quiet group.
        assert!(skipped * 5 > passes, "only {skipped} quiet groups in {passes} visits");
    }
}
