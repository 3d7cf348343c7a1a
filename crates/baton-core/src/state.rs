//! The replicated state and the deterministic `apply`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::command::{
    Change, Command, GroupCheckpoint, Query, QueryResult, RecordKey, Rejection, Request, Response,
};
use crate::group::{Group, GroupConfig, Tombstone};
use crate::history::{Baton, Decision, History};
use crate::idempotency::{REMEMBER_CAPACITY, REMEMBER_PER_IDENTITY, Remembered};
use crate::identity::{
    AUDIT_CAPACITY, AUDIT_PER_TRAIL, Actor, AuditAction, AuditEntry, ConfigChange, Identity,
    IdentityName, Principal,
};
use crate::ids::{Epoch, GroupKey, Scope, SessionId, TenantId, Timestamp};
use crate::session::{Handover, Holder, Reason, RoleOverride, Session, Stage};

/// One stored unit of state, addressed by a [`RecordKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A group, with its sessions and baton.
    Group(Group),
    /// What is left of a deleted group.
    Tombstone(GroupKey, Tombstone),
    /// An identity.
    Identity(Identity),
    /// An audit entry.
    Audit(AuditEntry),
    /// A group's decision history.
    History(GroupKey, History),
    /// The outcome of a keyed write.
    Remembered(IdentityName, String, Remembered),
    /// The highest epoch of a tenant's pruned tombstones.
    EpochFloor(TenantId, Epoch),
}

/// Everything Baton replicates, apart from Raft's own metadata.
///
/// Invariants:
/// - every group is stored under its own key;
/// - no scope maps to an empty set of groups;
/// - `apply` changes at most the record named by `Command::record_key`, the audit trail
///   (one entry added; beyond [`AUDIT_PER_TRAIL`] in its trail, that trail's oldest dropped;
///   beyond [`AUDIT_CAPACITY`] in all, the oldest of the longest trail) and the group's history
///   (one decision added; dropped with the group); [`State::apply_tracked`] names every record
///   it changed;
/// - every group with a history exists;
/// - a keyed write (see [`crate::idempotency`]) is applied once: repeated within the window, it
///   changes nothing and answers the first outcome;
/// - audit sequence numbers increase by one per entry added (entries dropped leave gaps), and
///   the newest entry is never the one dropped;
/// - a group's epoch never decreases, and each grant of the baton increments it;
/// - a group has at most one holder, and a grant is only applied when the group has no holder
///   or when the grant names the holder it replaces, at the epoch the decision saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    groups: BTreeMap<Scope, BTreeMap<crate::GroupId, Slot>>,
    tombstones: BTreeMap<GroupKey, Tombstone>,
    identities: BTreeMap<IdentityName, Identity>,
    audit: BTreeMap<u64, AuditEntry>,
    histories: BTreeMap<GroupKey, History>,
    remembered: BTreeMap<(IdentityName, String), Remembered>,
    /// Per tenant, the highest epoch of its pruned tombstones: a group created where none of
    /// its tombstones is left still starts past every epoch its key may have had.
    epoch_floors: BTreeMap<TenantId, Epoch>,
    #[serde(skip)]
    trails: Trails,
    #[serde(skip)]
    tenant_bytes: TenantBytes,
    #[serde(skip)]
    group_set: Generation,
    /// Counts the groups handed out to be changed; each is stamped with the count (its
    /// revision).
    #[serde(skip)]
    group_changes: Generation,
}

/// A group as the state keeps it. Boxed: a map node holds room for eleven values and is often
/// only half full, so its slack is pointers, not whole groups. Its revision sits beside the
/// pointer, so a detector pass tells whether a group changed without reading the group (a
/// cache miss per group, most of a pass over 100,000 steady groups). Stored as the group alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct Slot {
    group: Box<Group>,
    #[serde(skip)]
    revision: Revision,
}

/// When, in this process, a group was last handed out to be changed: a number from the
/// state's own counter (see [`State::revised_groups_from`]). Not replicated, and not part of
/// the state's value: equal states may carry different revisions.
#[derive(Clone, Copy, Debug, Default)]
struct Revision(u64);

impl PartialEq for Revision {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Revision {}

/// The audit's entries by trail ([`trail`]), so that keeping each trail within its budget
/// costs a lookup, not a walk over the whole audit on every audited write. Built from the
/// audit when first needed after a restore; not replicated, and not part of the state's value.
#[derive(Clone, Debug, Default)]
struct Trails(Option<BTreeMap<Option<TenantId>, BTreeSet<u64>>>);

impl Trails {
    fn of(
        &mut self,
        audit: &BTreeMap<u64, AuditEntry>,
        identities: &BTreeMap<IdentityName, Identity>,
    ) -> &mut BTreeMap<Option<TenantId>, BTreeSet<u64>> {
        self.0.get_or_insert_with(|| {
            let mut trails: BTreeMap<_, BTreeSet<u64>> = BTreeMap::new();
            for entry in audit.values() {
                trails.entry(trail(entry, identities).cloned()).or_default().insert(entry.seq);
            }
            trails
        })
    }
}

/// Per tenant, the bytes of its groups' text ([`Group::text_bytes`]), which
/// `max_tenant_bytes` bounds: kept up to date by every apply and restore, so that the leader
/// judges a write without walking the tenant's groups. Not replicated, and not part of the
/// state's value: a state taken whole from a snapshot has none until rebuilt from its records
/// ([`State::from_records`]).
#[derive(Clone, Debug, Default)]
struct TenantBytes(BTreeMap<TenantId, u64>);

impl TenantBytes {
    fn change(&mut self, tenant: &TenantId, before: usize, after: usize) {
        if before == after {
            return;
        }
        let bytes = self.0.entry(tenant.clone()).or_default();
        *bytes = (*bytes + after as u64).saturating_sub(before as u64);
        if *bytes == 0 {
            self.0.remove(tenant);
        }
    }
}

impl PartialEq for TenantBytes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for TenantBytes {}

impl PartialEq for Trails {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Trails {}

/// How many times this process has seen the set of groups change (a group created, restored
/// or removed). The detector re-pairs its watches with the groups only when it moved. Not
/// replicated, and not part of the state's value: equal states may have counted differently.
#[derive(Clone, Copy, Debug, Default)]
struct Generation(u64);

impl Generation {
    fn bump(&mut self) {
        self.0 = self.0.wrapping_add(1);
    }

    /// Counts one more change, and names it: a group's next revision.
    fn next(&mut self) -> Revision {
        self.bump();
        Revision(self.0)
    }
}

impl PartialEq for Generation {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Generation {}

/// What applying one request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effects {
    /// The answer to the request.
    pub response: Response,
    /// Every record the request may have changed, for storage to persist.
    pub touched: Vec<RecordKey>,
    /// The decision about a group's baton it made, if any (also added to the group's history).
    pub decision: Option<Decision>,
}

type Outcome = Result<Response, Rejection>;

fn superseded(group: &Group) -> Rejection {
    Rejection::Superseded(group.key.clone())
}

fn session_not_found(group: &Group, session: &SessionId) -> Rejection {
    Rejection::SessionNotFound { group: group.key.clone(), session: session.clone() }
}

fn updated(group: &Group) -> Outcome {
    Ok(Response::Group { group: Box::new(group.clone()), change: Change::Updated })
}

impl State {
    /// Applies one command at the leader-chosen time in `request.at`.
    pub fn apply(&mut self, request: &Request) -> Response {
        self.apply_tracked(request).response
    }

    /// Applies one command, names every record it may have changed (for storage to persist)
    /// and the decision it made about a group's baton.
    pub fn apply_tracked(&mut self, request: &Request) -> Effects {
        let keyed =
            request.actor.as_ref().and_then(|a| Some((a.identity.clone(), a.request_key.clone()?)));
        if let Some(remembered) = keyed.as_ref().and_then(|k| self.remembered.get(k))
            && remembered.fresh(request.at)
        {
            let same = remembered.command == request.command.name()
                && remembered.group.as_ref() == request.command.group();
            let response = if same {
                remembered.answer(self)
            } else {
                Response::Rejected(Rejection::IdempotencyKeyReused)
            };
            return Effects { response, touched: Vec::new(), decision: None };
        }
        let mut effects = self.apply_once(request);
        if let Some((identity, key)) = keyed {
            // Outcomes past the window are dead weight (each may hold a whole group): drop
            // them whenever a keyed write comes, so they never outlive it by much.
            let expired: Vec<_> = self
                .remembered
                .iter()
                .filter(|(_, r)| !r.fresh(request.at))
                .map(|(k, _)| k.clone())
                .collect();
            for (who, old) in expired {
                self.remembered.remove(&(who.clone(), old.clone()));
                effects.touched.push(RecordKey::Remembered(who, old));
            }
            let remembered = Remembered {
                at: request.at,
                command: request.command.name().to_string(),
                group: request.command.group().cloned(),
                response: Remembered::slim(effects.response.clone()),
            };
            self.remembered.insert((identity.clone(), key.clone()), remembered);
            // The caller's own budget first: its oldest goes, not another caller's.
            let own = self
                .remembered
                .range((identity.clone(), String::new())..)
                .take_while(|((who, _), _)| who == &identity);
            let (count, oldest) = own.fold((0, None), |(n, oldest), (k, r)| {
                if k.1 == key {
                    return (n + 1, oldest);
                }
                let older = oldest.filter(|(_, at)| *at <= r.at).unwrap_or((k, r.at));
                (n + 1, Some(older))
            });
            if count > REMEMBER_PER_IDENTITY
                && let Some(((who, old), _)) = oldest.map(|(k, at)| (k.clone(), at))
            {
                self.remembered.remove(&(who.clone(), old.clone()));
                effects.touched.push(RecordKey::Remembered(who, old));
            }
            effects.touched.push(RecordKey::Remembered(identity, key));
            if self.remembered.len() > REMEMBER_CAPACITY
                && let Some(oldest) =
                    self.remembered.iter().min_by_key(|(_, r)| r.at).map(|(k, _)| k.clone())
            {
                self.remembered.remove(&oldest);
                effects.touched.push(RecordKey::Remembered(oldest.0, oldest.1));
            }
        }
        effects
    }

    fn apply_once(&mut self, request: &Request) -> Effects {
        let key = request.command.group();
        let before = key.and_then(|k| self.group(k)).map(Baton::of);
        let text_before = key
            .filter(|_| request.command.may_change_text())
            .map(|k| self.group(k).map_or(0, Group::text_bytes));
        // Only a configuration change is audited by what it changed.
        let config_before = match &request.command {
            Command::PutGroup { key, .. } => self.group(key).map(|g| g.config.clone()),
            _ => None,
        };
        let response = self.apply_command(request);
        if let (Some(key), Some(before)) = (key, text_before) {
            let after = self.group(key).map_or(0, Group::text_bytes);
            self.tenant_bytes.change(&key.scope.tenant, before, after);
        }
        let mut touched = request.command.record_keys();
        // A group created over a deleted one: its tombstone is written again under its own key,
        // so that one an earlier version stored under the group's key is not lost when the new
        // group takes that key.
        if let Command::CreateGroup { key, .. } | Command::PutGroup { key, .. } = &request.command
            && self.tombstones.contains_key(key)
        {
            touched.push(RecordKey::Tombstone(key.clone()));
        }
        let decision = key.and_then(|key| {
            let after = self.group(key).map(Baton::of);
            let decision = Decision::between(
                key,
                before.as_ref(),
                after.as_ref(),
                &request.command,
                request.at,
            )?;
            // A deleted group's history goes with it; the decision is still published.
            if after.is_some() {
                self.histories.entry(key.clone()).or_default().push(decision.clone());
                touched.push(RecordKey::History(key.clone()));
            } else if self.histories.remove(key).is_some() {
                touched.push(RecordKey::History(key.clone()));
            }
            Some(decision)
        });
        if let Some(action) = audit_action(&request.command, &response, config_before.as_ref()) {
            let seq = self.audit.last_key_value().map_or(1, |(seq, _)| seq + 1);
            let entry = AuditEntry {
                seq,
                at: request.at,
                actor: request.actor.clone(),
                group: request.command.group().cloned(),
                action,
            };
            let tenant = trail(&entry, &self.identities).cloned();
            let trails = self.trails.of(&self.audit, &self.identities);
            self.audit.insert(seq, entry);
            trails.entry(tenant.clone()).or_default().insert(seq);
            touched.push(RecordKey::Audit(seq));
            if let Some((from, dropped)) = audit_overflow(trails, self.audit.len(), &tenant) {
                self.audit.remove(&dropped);
                if let Some(entries) = trails.get_mut(&from) {
                    entries.remove(&dropped);
                    if entries.is_empty() {
                        trails.remove(&from);
                    }
                }
                touched.push(RecordKey::Audit(dropped));
            }
        }
        Effects { response, touched, decision }
    }

    fn apply_command(&mut self, request: &Request) -> Response {
        if let Some(actor) = &request.actor
            && let Err(refusal) = self.check_access(actor, &request.command)
        {
            return Response::Rejected(refusal);
        }
        let at = request.at;
        let outcome = match &request.command {
            Command::CreateGroup { key, config, members } => Ok(match self.group(key) {
                Some(group) if &group.config == config && members.is_empty() => {
                    Response::Group { group: Box::new(group.clone()), change: Change::Unchanged }
                }
                Some(_) => Response::Rejected(Rejection::GroupExists { key: key.clone() }),
                None => {
                    let created = self.insert_new(key, config, request);
                    let group = self.group_mut(key).expect("just inserted");
                    for m in members {
                        insert_session(group, &m.id, &m.name, request.at);
                        let s = group.sessions.get_mut(&m.id).expect("just inserted");
                        s.priority = m.priority;
                        s.enabled = m.enabled;
                    }
                    match created {
                        Response::Group { change, .. } => {
                            Response::Group { group: Box::new(group.clone()), change }
                        }
                        other => other,
                    }
                }
            }),
            Command::PutGroup { key, config } => Ok(match self.group_mut(key) {
                Some(group) if &group.config == config => {
                    Response::Group { group: Box::new(group.clone()), change: Change::Unchanged }
                }
                Some(group) => {
                    if group.last_holder().is_some() {
                        group.grace_ms = group.grace_ms.max(group.config.failover_timeout_ms());
                    }
                    group.config = config.clone();
                    group.updated_at = at;
                    Response::Group { group: Box::new(group.clone()), change: Change::Updated }
                }
                None => self.insert_new(key, config, request),
            }),
            Command::DeleteGroup { key, refuse_if_active, active } => {
                if self.group(key).is_none() {
                    Err(Rejection::GroupNotFound(key.clone()))
                } else if *refuse_if_active && !active.is_empty() {
                    Err(Rejection::GroupHasActiveSessions(key.clone()))
                } else {
                    if let Some(group) = self.remove(key) {
                        let mut tombstone = group.tombstone();
                        // Deleted again before anything was granted since the last deletion:
                        // that group's last holder may still hold its grant.
                        if let Some(earlier) = self.tombstones.get(key)
                            && earlier.epoch == tombstone.epoch
                        {
                            tombstone.holder = tombstone.holder.or(earlier.holder.clone());
                            tombstone.failover_timeout_ms =
                                tombstone.failover_timeout_ms.max(earlier.failover_timeout_ms);
                        }
                        self.tombstones.insert(key.clone(), tombstone);
                    }
                    Ok(Response::Deleted)
                }
            }
            Command::BootstrapAdmin { identity } => {
                if self.identities.is_empty() {
                    self.insert_identity(identity, at)
                } else {
                    Err(Rejection::AlreadyBootstrapped)
                }
            }
            Command::CreateIdentity { identity } => {
                if self.identities.contains_key(&identity.name) {
                    Err(Rejection::IdentityExists(identity.name.clone()))
                } else {
                    self.insert_identity(identity, at)
                }
            }
            Command::RotateIdentity { name, token, signing_key } => {
                self.active_identity_mut(name).map(|identity| {
                    identity.token = token.clone();
                    identity.signing_key = signing_key.clone();
                    identity.rotated_at = Some(at);
                    Response::Identity(Box::new(identity.clone()))
                })
            }
            Command::RevokeIdentity { name } => self.active_identity_mut(name).map(|identity| {
                identity.revoked_at = Some(at);
                Response::Identity(Box::new(identity.clone()))
            }),
            Command::SetChannels { group, add, remove } => self.set_channels(group, add, remove),
            Command::Checkpoint { groups } => {
                for checkpoint in groups {
                    if let Some(group) = self.group_mut(&checkpoint.group) {
                        checkpoint_group(group, checkpoint);
                    }
                }
                Ok(Response::Checkpointed)
            }
            Command::PruneTombstones { tombstones } => {
                for (key, epoch) in tombstones {
                    if self.tombstones.get(key).is_some_and(|t| t.epoch == *epoch) {
                        self.tombstones.remove(key);
                        let floor = self.epoch_floors.entry(key.scope.tenant.clone()).or_default();
                        *floor = (*floor).max(*epoch);
                    }
                }
                Ok(Response::Checkpointed)
            }
            command => {
                let key = command.group().expect("every other command addresses a group");
                match self.group_mut(key) {
                    Some(group) => apply_to_group(group, command, at),
                    None => Err(Rejection::GroupNotFound(key.clone())),
                }
            }
        };
        outcome.unwrap_or_else(Response::Rejected)
    }

    /// Whether `actor` may run `command`, judged at apply time so that a revocation or an
    /// allowed-owners change committed before the command always wins (and by the leader's
    /// [`crate::Limits::admit`] first, so a limit's answer is only given to a caller allowed
    /// to hear it).
    pub fn check_access(&self, actor: &Actor, command: &Command) -> Result<(), Rejection> {
        let principal = self
            .principal(&actor.identity)
            .ok_or_else(|| Rejection::Unauthenticated(actor.identity.clone()))?;
        let allowed = match command {
            Command::RotateIdentity { name, .. } => principal.is_admin() || &principal.name == name,
            Command::BootstrapAdmin { .. }
            | Command::CreateIdentity { .. }
            | Command::RevokeIdentity { .. }
            | Command::Checkpoint { .. }
            | Command::PruneTombstones { .. } => principal.is_admin(),
            Command::SetAllowedOwners { group, .. }
            | Command::ChangeAllowedOwners { group, .. } => {
                self.group(group).is_none_or(|g| principal.may_share(g))
            }
            command => {
                let key = command.group().expect("every other command addresses a group");
                match self.group(key) {
                    Some(group) => principal.may_use(group),
                    None => principal.may_enter(&key.scope.tenant),
                }
            }
        };
        if allowed { Ok(()) } else { Err(Rejection::Forbidden(actor.identity.clone())) }
    }

    /// Attaches and detaches channels, refusing a channel that another group of the scope has.
    fn set_channels(
        &mut self,
        key: &GroupKey,
        add: &BTreeSet<String>,
        remove: &BTreeSet<String>,
    ) -> Outcome {
        if self.group(key).is_none() {
            return Err(Rejection::GroupNotFound(key.clone()));
        }
        for other in self.groups_in(&key.scope).filter(|g| &g.key != key) {
            if let Some(channel) = add.iter().find(|c| other.channels.contains(*c)) {
                return Err(Rejection::ChannelTaken {
                    channel: channel.clone(),
                    group: other.key.group.clone(),
                });
            }
        }
        let group = self.group_mut(key).expect("checked above");
        group.channels.extend(add.iter().cloned());
        group.channels.retain(|c| !remove.contains(c));
        Ok(Response::Group { group: Box::new(group.clone()), change: Change::Updated })
    }

    fn insert_identity(&mut self, identity: &Identity, at: Timestamp) -> Outcome {
        let mut identity = identity.clone();
        identity.created_at = at;
        identity.rotated_at = None;
        identity.revoked_at = None;
        self.identities.insert(identity.name.clone(), identity.clone());
        Ok(Response::Identity(Box::new(identity)))
    }

    fn active_identity_mut(&mut self, name: &IdentityName) -> Result<&mut Identity, Rejection> {
        self.identities
            .get_mut(name)
            .filter(|identity| identity.is_active())
            .ok_or_else(|| Rejection::IdentityNotFound(name.clone()))
    }

    /// Answers a read-only query.
    pub fn query(&self, query: &Query) -> QueryResult {
        match query {
            Query::Group(key) => QueryResult::Group(self.group(key).cloned().map(Box::new)),
            Query::Groups(scope) => QueryResult::Groups(self.groups_in(scope).cloned().collect()),
            Query::AllGroups => QueryResult::Groups(self.all_groups().cloned().collect()),
            Query::TenantGroups(tenant) => QueryResult::Groups(
                self.scopes_of(tenant)
                    .flat_map(|(scope, _)| self.groups_in(scope))
                    .cloned()
                    .collect(),
            ),
            Query::Identities => {
                QueryResult::Identities(self.identities.values().cloned().collect())
            }
            Query::Identity(name) => {
                QueryResult::Identity(self.identity(name).cloned().map(Box::new))
            }
            Query::History(key) => QueryResult::History(
                self.histories
                    .get(key)
                    .map(|h| h.decisions().cloned().collect())
                    .unwrap_or_default(),
            ),
            Query::Audit { group, after, limit } => QueryResult::Audit(
                self.audit
                    .range(after.saturating_add(1)..)
                    .map(|(_, entry)| entry)
                    .filter(|entry| group.is_none() || entry.group.as_ref() == group.as_ref())
                    .take(*limit)
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// The caller an active identity authenticates as; `None` if unknown or revoked.
    pub fn principal(&self, name: &IdentityName) -> Option<Principal> {
        self.identities.get(name).filter(|i| i.is_active()).map(Identity::principal)
    }

    /// Whether the active identity `name` may use `group`.
    pub fn may_use(&self, name: &IdentityName, group: &Group) -> bool {
        self.identities.get(name).is_some_and(|identity| identity.may_use(group))
    }

    /// The scopes of `tenant` that hold groups, each with its number of groups.
    pub fn scopes_of<'a>(
        &'a self,
        tenant: &'a crate::TenantId,
    ) -> impl Iterator<Item = (&'a Scope, usize)> + 'a {
        self.groups
            .iter()
            .skip_while(move |(scope, _)| &scope.tenant < tenant)
            .take_while(move |(scope, _)| &scope.tenant == tenant)
            .map(|(scope, groups)| (scope, groups.len()))
    }

    /// One identity, revoked or not.
    pub fn identity(&self, name: &IdentityName) -> Option<&Identity> {
        self.identities.get(name)
    }

    /// One group, if it exists.
    pub fn group(&self, key: &GroupKey) -> Option<&Group> {
        self.groups.get(&key.scope)?.get(&key.group).map(|slot| &*slot.group)
    }

    /// The groups of one scope, ordered by id.
    pub fn groups_in<'a>(&'a self, scope: &Scope) -> impl Iterator<Item = &'a Group> + 'a {
        self.groups.get(scope).into_iter().flat_map(|groups| groups.values().map(|s| &*s.group))
    }

    /// Every group, in key order.
    pub fn all_groups(&self) -> impl Iterator<Item = &Group> + '_ {
        self.groups.values().flat_map(|groups| groups.values().map(|slot| &*slot.group))
    }

    /// Every group from `from` on (itself included if it exists; every group with `None`), in
    /// key order.
    pub fn groups_from<'a>(
        &'a self,
        from: Option<&GroupKey>,
    ) -> impl Iterator<Item = &'a Group> + 'a {
        self.revised_groups_from(from).map(|(_, group)| group)
    }

    /// [`State::groups_from`], each group with its revision: a number that changes whenever
    /// the state may have changed the group, and never otherwise (it is stamped each time the
    /// group is created, restored or handed out to be changed). Counted in this process only,
    /// and read without reading the group: the leader's detector skips a group whose revision,
    /// watch and deadlines are as they were when it last found nothing to do there.
    pub fn revised_groups_from<'a>(
        &'a self,
        from: Option<&GroupKey>,
    ) -> impl Iterator<Item = (u64, &'a Group)> + 'a {
        let first = from.cloned();
        let lower = first.as_ref().map_or(Bound::Unbounded, |k| Bound::Included(k.scope.clone()));
        self.groups.range((lower, Bound::Unbounded)).flat_map(move |(scope, groups)| {
            let lower = match &first {
                Some(k) if k.scope == *scope => Bound::Included(k.group.clone()),
                _ => Bound::Unbounded,
            };
            groups.range((lower, Bound::Unbounded)).map(|(_, slot)| (slot.revision.0, &*slot.group))
        })
    }

    /// The current value of one record, for storage to persist after `apply`: the group, or
    /// its tombstone once deleted.
    pub fn record(&self, key: &RecordKey) -> Option<Record> {
        match key {
            RecordKey::Group(k) => self.group(k).map(|g| Record::Group(g.clone())),
            RecordKey::Tombstone(k) => {
                self.tombstones.get(k).map(|t| Record::Tombstone(k.clone(), t.clone()))
            }
            RecordKey::Identity(name) => self.identity(name).cloned().map(Record::Identity),
            RecordKey::Audit(seq) => self.audit.get(seq).cloned().map(Record::Audit),
            RecordKey::History(k) => {
                self.histories.get(k).map(|h| Record::History(k.clone(), h.clone()))
            }
            RecordKey::Remembered(who, key) => self
                .remembered
                .get(&(who.clone(), key.clone()))
                .map(|r| Record::Remembered(who.clone(), key.clone(), r.clone())),
            RecordKey::EpochFloor(tenant) => {
                self.epoch_floors.get(tenant).map(|e| Record::EpochFloor(tenant.clone(), *e))
            }
        }
    }

    /// The bytes of the text of `tenant`'s groups ([`Group::text_bytes`]).
    pub fn tenant_text_bytes(&self, tenant: &TenantId) -> u64 {
        self.tenant_bytes.0.get(tenant).copied().unwrap_or(0)
    }

    /// A state from its records, as storage reloads it (and as a snapshot, taken whole, must
    /// be rebuilt: only `restore` keeps the state's indexes).
    pub fn from_records(records: impl IntoIterator<Item = (RecordKey, Record)>) -> Self {
        let mut state = State::default();
        for (key, record) in records {
            state.restore(key, record);
        }
        state
    }

    /// The tombstone of the group deleted under `key`, if it is kept.
    pub fn tombstone(&self, key: &GroupKey) -> Option<&Tombstone> {
        self.tombstones.get(key)
    }

    /// Deleted groups' tombstones.
    pub fn tombstones(&self) -> impl Iterator<Item = (&GroupKey, &Tombstone)> + '_ {
        self.tombstones.iter()
    }

    /// Every record, in key order, for snapshots and digests.
    pub fn records(&self) -> impl Iterator<Item = (RecordKey, Record)> + '_ {
        let groups =
            self.all_groups().map(|g| (RecordKey::Group(g.key.clone()), Record::Group(g.clone())));
        let tombstones = self.tombstones.iter().map(|(k, t)| {
            (RecordKey::Tombstone(k.clone()), Record::Tombstone(k.clone(), t.clone()))
        });
        let identities = self
            .identities
            .values()
            .map(|i| (RecordKey::Identity(i.name.clone()), Record::Identity(i.clone())));
        let audit =
            self.audit.values().map(|e| (RecordKey::Audit(e.seq), Record::Audit(e.clone())));
        let histories = self
            .histories
            .iter()
            .map(|(k, h)| (RecordKey::History(k.clone()), Record::History(k.clone(), h.clone())));
        let remembered = self.remembered.iter().map(|((who, key), r)| {
            (
                RecordKey::Remembered(who.clone(), key.clone()),
                Record::Remembered(who.clone(), key.clone(), r.clone()),
            )
        });
        let floors = self
            .epoch_floors
            .iter()
            .map(|(t, e)| (RecordKey::EpochFloor(t.clone()), Record::EpochFloor(t.clone(), *e)));
        groups
            .chain(tombstones)
            .chain(identities)
            .chain(audit)
            .chain(histories)
            .chain(remembered)
            .chain(floors)
    }

    /// Puts a record back when storage reloads the state. Panics if the record is not stored
    /// under its own key, which would mean corrupt storage.
    pub fn restore(&mut self, key: RecordKey, record: Record) {
        match (key, record) {
            (RecordKey::Group(k), Record::Group(g)) => {
                assert_eq!(k, g.key, "a stored group must live under its own key");
                let replaced = self.group(&k).map_or(0, Group::text_bytes);
                self.tenant_bytes.change(&k.scope.tenant, replaced, g.text_bytes());
                let slot = Slot { group: Box::new(g), revision: self.group_changes.next() };
                self.groups.entry(k.scope).or_default().insert(k.group, slot);
                self.group_set.bump();
            }
            // Under the group's key: as versions before tombstones had keys of their own stored
            // them (and lost them once the group was re-created).
            (RecordKey::Tombstone(k) | RecordKey::Group(k), Record::Tombstone(key, t)) => {
                assert_eq!(k, key, "a stored tombstone must live under its own key");
                self.tombstones.insert(k, t);
            }
            (RecordKey::Identity(name), Record::Identity(identity)) => {
                assert_eq!(name, identity.name, "a stored identity must live under its own key");
                self.identities.insert(name, identity);
                self.trails = Trails::default();
            }
            (RecordKey::Audit(seq), Record::Audit(entry)) => {
                assert_eq!(seq, entry.seq, "a stored audit entry must live under its own key");
                self.audit.insert(seq, entry);
                self.trails = Trails::default();
            }
            (RecordKey::Remembered(who, key), Record::Remembered(w, k, r)) => {
                assert_eq!((&who, &key), (&w, &k), "a stored outcome must live under its own key");
                self.remembered.insert((who, key), r);
            }
            (RecordKey::History(k), Record::History(key, history)) => {
                assert_eq!(k, key, "a stored history must live under its own key");
                self.histories.insert(k, history);
            }
            (RecordKey::EpochFloor(tenant), Record::EpochFloor(t, epoch)) => {
                assert_eq!(tenant, t, "a stored epoch floor must live under its own key");
                self.epoch_floors.insert(tenant, epoch);
            }
            (key, _) => panic!("a stored record does not match its key {key:?}"),
        }
    }

    /// A fingerprint of the whole state: equal states give equal digests. Nodes compare it to
    /// show they converged. It uses std's `DefaultHasher`, whose algorithm is fixed for a given
    /// build, so compare digests only between nodes running the same binary.
    pub fn digest(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        for group in self.all_groups() {
            group.hash(&mut hasher);
        }
        self.tombstones.hash(&mut hasher);
        self.epoch_floors.hash(&mut hasher);
        self.identities.hash(&mut hasher);
        self.audit.hash(&mut hasher);
        self.histories.hash(&mut hasher);
        for ((who, key), r) in &self.remembered {
            (who, key, r.at, &r.command, &r.group).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// Number of identities, revoked ones included.
    pub fn identity_count(&self) -> usize {
        self.identities.len()
    }

    /// Changes whenever a group is created, restored or removed in this process (and only
    /// then): while it stays the same, so does the set of group keys.
    pub fn group_set_generation(&self) -> u64 {
        self.group_set.0
    }

    /// Number of groups, across all scopes.
    pub fn group_count(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    /// The group, to be changed: the only way to change one in place, so that its revision
    /// moves with every change.
    fn group_mut(&mut self, key: &GroupKey) -> Option<&mut Group> {
        let slot = self.groups.get_mut(&key.scope)?.get_mut(&key.group)?;
        slot.revision = self.group_changes.next();
        Some(&mut slot.group)
    }

    fn insert_new(&mut self, key: &GroupKey, config: &GroupConfig, request: &Request) -> Response {
        let owner = request.actor.as_ref().map(|actor| actor.identity.clone());
        let mut group = Group::new(key.clone(), config.clone(), request.at, owner);
        // A group re-created under a deleted one's key continues its epoch: from the tombstone
        // (kept, for the detector, until its last grant has lapsed), which is the key's latest
        // epoch, or, once that is pruned, from the tenant's floor. Exactly the tombstone's, not
        // more: the detector takes a group whose epoch moved past its tombstone's as one whose
        // baton was granted since, which must have waited out the tombstone's grant.
        group.epoch = match self.tombstones.get(key) {
            Some(t) => t.epoch,
            None => self.epoch_floors.get(&key.scope.tenant).copied().unwrap_or_default(),
        };
        let group = Box::new(group);
        // Not the revision of a group deleted under this key, whose watch may still be kept.
        let slot = Slot { group: group.clone(), revision: self.group_changes.next() };
        self.groups.entry(key.scope.clone()).or_default().insert(key.group.clone(), slot);
        self.group_set.bump();
        Response::Group { group, change: Change::Created }
    }

    fn remove(&mut self, key: &GroupKey) -> Option<Group> {
        let scope = self.groups.get_mut(&key.scope)?;
        let removed = scope.remove(&key.group);
        if scope.is_empty() {
            self.groups.remove(&key.scope);
        }
        self.group_set.bump();
        removed.map(|slot| *slot.group)
    }
}

/// Records one group's checkpointed heartbeats (of sessions that still exist) and its last
/// processed time.
fn checkpoint_group(group: &mut Group, checkpoint: &GroupCheckpoint) {
    for (id, record) in &checkpoint.heartbeats {
        if let Some(s) = group.sessions.get_mut(id) {
            s.last_heartbeat = Some(record.clone());
        }
    }
    if checkpoint.last_data_processed_time.is_some() {
        group.last_data_processed_time = checkpoint.last_data_processed_time;
    }
}

/// Applies a session or baton command to its group. On `Err` the group is unchanged: every
/// check happens before the first change.
fn apply_to_group(group: &mut Group, command: &Command, at: Timestamp) -> Outcome {
    match command {
        Command::CreateSession { session, name, .. } => match group.sessions.get(session) {
            Some(s) if &s.name == name => {
                Ok(Response::Session { session: s.clone(), change: Change::Unchanged })
            }
            Some(_) => Err(Rejection::SessionExists { session: session.clone() }),
            None => Ok(insert_session(group, session, name, at)),
        },
        Command::PutSession { session, name, .. } => match group.sessions.get_mut(session) {
            Some(s) if &s.name == name => {
                Ok(Response::Session { session: s.clone(), change: Change::Unchanged })
            }
            Some(s) => {
                s.name = name.clone();
                Ok(Response::Session { session: s.clone(), change: Change::Updated })
            }
            None => Ok(insert_session(group, session, name, at)),
        },
        Command::DeleteSession { session, .. } => {
            if group.sessions.remove(session).is_none() {
                return Err(session_not_found(group, session));
            }
            // A deleted holder keeps the baton until its last grant lapses; the detector then
            // hands it over.
            if group.holder.as_ref().is_some_and(|h| &h.session == session) {
                group.handover =
                    Some(Handover { from: session.clone(), reason: Reason::Deleted, to: None });
            }
            Ok(Response::Deleted)
        }
        Command::Grant {
            session,
            stage,
            expected_epoch,
            replaces,
            last_data_processed_time,
            reason,
            ..
        } => {
            let holder_matches = match (&group.holder, replaces) {
                (None, None) => true,
                (Some(h), Some(old)) => &h.session == old && h.epoch == *expected_epoch,
                _ => false,
            };
            if !holder_matches || group.epoch != *expected_epoch {
                return Err(superseded(group));
            }
            if !group.sessions.contains_key(session) {
                return Err(session_not_found(group, session));
            }
            group.epoch = Epoch(group.epoch.0 + 1);
            group.grace_ms = 0;
            group.holder = Some(Holder {
                session: session.clone(),
                stage: *stage,
                epoch: group.epoch,
                since: at,
                reason: *reason,
            });
            group.handover = None;
            if last_data_processed_time.is_some() {
                group.last_data_processed_time = *last_data_processed_time;
            }
            updated(group)
        }
        Command::Promote { session, epoch, .. } => match &mut group.holder {
            Some(h) if &h.session == session && h.epoch == *epoch && h.stage == Stage::Pending => {
                h.stage = Stage::Primary;
                updated(group)
            }
            _ => Err(superseded(group)),
        },
        Command::Relinquish { session, epoch, last_data_processed_time, .. }
        | Command::Expire { session, epoch, last_data_processed_time, .. } => {
            if !group.holder.as_ref().is_some_and(|h| &h.session == session && h.epoch == *epoch) {
                return Err(superseded(group));
            }
            group.holder = None;
            if last_data_processed_time.is_some() {
                group.last_data_processed_time = *last_data_processed_time;
            }
            updated(group)
        }
        Command::RequestHandover {
            expected_epoch,
            reason,
            to,
            require_standby,
            standby_ready,
            ..
        } => {
            let Some(holder) = &group.holder else { return Err(superseded(group)) };
            if holder.epoch != *expected_epoch || group.handover.is_some() {
                return Err(superseded(group));
            }
            if *require_standby && !*standby_ready {
                return Err(Rejection::NoStandby(group.key.clone()));
            }
            if let Some(to) = to
                && !group.sessions.contains_key(to)
            {
                return Err(session_not_found(group, to));
            }
            group.handover =
                Some(Handover { from: holder.session.clone(), reason: *reason, to: to.clone() });
            updated(group)
        }
        Command::CancelHandover { epoch, .. } => {
            if group.holder.as_ref().is_none_or(|h| h.epoch != *epoch) || group.handover.is_none() {
                return Err(superseded(group));
            }
            group.handover = None;
            updated(group)
        }
        Command::SetMembers { members, .. } => {
            if let Some(missing) = members.iter().find(|m| !group.sessions.contains_key(&m.session))
            {
                return Err(session_not_found(group, &missing.session));
            }
            for m in members {
                let s = group.sessions.get_mut(&m.session).expect("checked above");
                if let Some(p) = m.priority {
                    s.priority = p;
                }
                if let Some(e) = m.enabled {
                    s.enabled = e;
                }
            }
            updated(group)
        }
        Command::ChangeAllowedOwners { add, remove, .. } => {
            group.allowed_owners.extend(add.iter().cloned());
            group.allowed_owners.retain(|o| !remove.contains(o));
            updated(group)
        }

        Command::SetOverride { session, primary_for_ms, .. } => {
            let Some(s) = group.sessions.get_mut(session) else {
                return Err(session_not_found(group, session));
            };
            s.role_override = primary_for_ms.map(|period| RoleOverride {
                set_at: at,
                expires_at: period.map(|ms| Timestamp(at.0.saturating_add(ms))),
            });
            // Only one member can be pinned: pinning another clears the others' overrides. The
            // detector moves the baton to the pinned member once it is eligible.
            if s.role_override.is_some() {
                for other in group.sessions.iter_mut().map(|(_, o)| o).filter(|o| &o.id != session)
                {
                    other.role_override = None;
                }
            }
            let session = group.sessions[session].clone();
            Ok(Response::Session { session, change: Change::Updated })
        }
        Command::ClearExpiredOverride { session, set_at, .. } => {
            let Some(s) = group.sessions.get_mut(session) else {
                return Err(session_not_found(group, session));
            };
            if s.role_override.as_ref().is_none_or(|o| o.set_at != *set_at) {
                return Err(superseded(group));
            }
            s.role_override = None;
            updated(group)
        }
        Command::SetAllowedOwners { owners, .. } => {
            group.allowed_owners = owners.clone();
            updated(group)
        }
        Command::CreateGroup { .. }
        | Command::PutGroup { .. }
        | Command::DeleteGroup { .. }
        | Command::SetChannels { .. }
        | Command::Checkpoint { .. }
        | Command::BootstrapAdmin { .. }
        | Command::CreateIdentity { .. }
        | Command::RotateIdentity { .. }
        | Command::RevokeIdentity { .. }
        | Command::PruneTombstones { .. } => {
            unreachable!("group and identity commands are applied by State::apply_command")
        }
    }
}

/// Whose part of the audit trail an entry is: the tenant of the group it concerns, or of the
/// member identity it concerns (a member may rotate its own token as often as it likes, and
/// pushes out only its own tenant's entries); `None` for the cluster's own (administrators'
/// identities). Each part has a budget of its own, so that one tenant's changes cannot push
/// out another's, or the administrators' identity events.
fn trail<'a>(
    entry: &'a AuditEntry,
    identities: &'a BTreeMap<IdentityName, Identity>,
) -> Option<&'a crate::TenantId> {
    if let Some(group) = &entry.group {
        return Some(&group.scope.tenant);
    }
    let subject = match &entry.action {
        AuditAction::IdentityCreated { name, .. }
        | AuditAction::IdentityRotated { name, .. }
        | AuditAction::IdentityRevoked { name, .. } => name,
        _ => return None,
    };
    match identities.get(subject).map(|i| &i.role) {
        Some(crate::AccessRole::Member { tenant }) => Some(tenant),
        _ => None,
    }
}

/// The entry to drop from an audit of `total` entries, kept in `trails`, after one was added
/// to the trail `added`, with the trail it is in: that trail's oldest when it holds more than
/// [`AUDIT_PER_TRAIL`]; else, when the whole audit holds more than [`AUDIT_CAPACITY`], the
/// oldest entry of the longest trail (of the longest, the one whose oldest entry is oldest).
/// Never the entry just added: its trail's oldest is another whenever that trail is over a
/// budget, and so is the longest trail's.
fn audit_overflow(
    trails: &BTreeMap<Option<TenantId>, BTreeSet<u64>>,
    total: usize,
    added: &Option<TenantId>,
) -> Option<(Option<TenantId>, u64)> {
    let oldest = |entries: &BTreeSet<u64>| entries.first().copied();
    if let Some(own) = trails.get(added)
        && own.len() > AUDIT_PER_TRAIL
    {
        return oldest(own).map(|seq| (added.clone(), seq));
    }
    if total as u64 <= AUDIT_CAPACITY {
        return None;
    }
    trails
        .iter()
        .filter_map(|(trail, entries)| Some((trail, entries.len(), oldest(entries)?)))
        .max_by(|(_, a, a_oldest), (_, b, b_oldest)| a.cmp(b).then(b_oldest.cmp(a_oldest)))
        .map(|(trail, _, seq)| (trail.clone(), seq))
}

/// The audit entry a command's response calls for: operator changes that took effect.
/// What the audit records of a command that answered `response`; `config_before`: the
/// group's configuration before a [`Command::PutGroup`].
fn audit_action(
    command: &Command,
    response: &Response,
    config_before: Option<&GroupConfig>,
) -> Option<AuditAction> {
    let changed = match response {
        Response::Rejected(_) | Response::Checkpointed => return None,
        Response::Group { change, .. } | Response::Session { change, .. } => {
            *change != Change::Unchanged
        }
        Response::Deleted | Response::Identity(_) => true,
    };
    if !changed {
        return None;
    }
    Some(match command {
        Command::CreateGroup { config, .. } => AuditAction::GroupConfigured {
            created: true,
            changes: ConfigChange::between(None, config),
        },
        Command::PutGroup { config, .. } => {
            let created = matches!(response, Response::Group { change: Change::Created, .. });
            let before = if created { None } else { config_before };
            AuditAction::GroupConfigured { created, changes: ConfigChange::between(before, config) }
        }
        Command::DeleteGroup { .. } => AuditAction::GroupDeleted,
        Command::CreateSession { session, .. } | Command::PutSession { session, .. } => {
            match response {
                Response::Session { change: Change::Created, .. } => {
                    AuditAction::SessionCreated { session: session.clone() }
                }
                _ => return None,
            }
        }
        Command::DeleteSession { session, .. } => {
            AuditAction::SessionDeleted { session: session.clone() }
        }
        Command::SetOverride { session, primary_for_ms, .. } => {
            AuditAction::OverrideSet { session: session.clone(), primary_for_ms: *primary_for_ms }
        }
        Command::ClearExpiredOverride { session, .. } => {
            AuditAction::OverrideExpired { session: session.clone() }
        }
        Command::RequestHandover { reason: reason @ Reason::Forced, to, .. } => {
            AuditAction::FailoverForced { reason: *reason, to: to.clone() }
        }
        Command::SetMembers { members, .. } => AuditAction::MembersSet { members: members.clone() },
        Command::ChangeAllowedOwners { add, remove, .. } => {
            AuditAction::AllowedOwnersChanged { add: add.clone(), remove: remove.clone() }
        }
        Command::SetChannels { add, remove, .. } => {
            AuditAction::ChannelsSet { add: add.clone(), remove: remove.clone() }
        }
        Command::SetAllowedOwners { owners, .. } => {
            AuditAction::AllowedOwnersSet { owners: owners.clone() }
        }
        Command::BootstrapAdmin { identity } | Command::CreateIdentity { identity } => {
            AuditAction::IdentityCreated {
                name: identity.name.clone(),
                role: identity.role.clone(),
            }
        }
        Command::RotateIdentity { name, .. } => AuditAction::IdentityRotated { name: name.clone() },
        Command::RevokeIdentity { name } => AuditAction::IdentityRevoked { name: name.clone() },
        Command::RequestHandover { .. }
        | Command::CancelHandover { .. }
        | Command::Grant { .. }
        | Command::Promote { .. }
        | Command::Relinquish { .. }
        | Command::Expire { .. }
        | Command::Checkpoint { .. }
        | Command::PruneTombstones { .. } => return None,
    })
}

fn insert_session(
    group: &mut Group,
    session: &SessionId,
    name: &Option<String>,
    at: Timestamp,
) -> Response {
    let s = Session {
        id: session.clone(),
        name: name.clone(),
        created_at: at,
        role_override: None,
        last_heartbeat: None,
        priority: 0,
        enabled: true,
    };
    group.sessions.insert(session.clone(), s.clone());
    Response::Session { session: s, change: Change::Created }
}
