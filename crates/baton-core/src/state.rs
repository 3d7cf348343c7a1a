//! The replicated state and the deterministic `apply`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{
    Change, Command, Query, QueryResult, RecordKey, Rejection, Request, Response,
};
use crate::group::{Group, GroupConfig, Tombstone};
use crate::ids::{Epoch, GroupKey, Scope, SessionId, Timestamp};
use crate::session::{Handover, Holder, Reason, RoleOverride, Session, Stage};

/// One stored unit of state, addressed by a [`RecordKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A group, with its sessions and baton.
    Group(Group),
    /// What is left of a deleted group.
    Tombstone(GroupKey, Tombstone),
}

/// Everything Baton replicates, apart from Raft's own metadata.
///
/// Invariants:
/// - every group is stored under its own key;
/// - no scope maps to an empty set of groups;
/// - `apply` changes at most the record named by `Command::record_key`;
/// - a group's epoch never decreases, and each grant of the baton increments it;
/// - a group has at most one holder, and a grant is only applied when the group has no holder
///   or when the grant names the holder it replaces, at the epoch the decision saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    groups: BTreeMap<Scope, BTreeMap<crate::GroupId, Group>>,
    tombstones: BTreeMap<GroupKey, Tombstone>,
}

type Outcome = Result<Response, Rejection>;

fn superseded(group: &Group) -> Rejection {
    Rejection::Superseded(group.key.clone())
}

fn session_not_found(group: &Group, session: &SessionId) -> Rejection {
    Rejection::SessionNotFound { group: group.key.clone(), session: session.clone() }
}

fn updated(group: &Group) -> Outcome {
    Ok(Response::Group { group: group.clone(), change: Change::Updated })
}

impl State {
    /// Applies one command at the leader-chosen time in `request.at`.
    pub fn apply(&mut self, request: &Request) -> Response {
        let at = request.at;
        let outcome = match &request.command {
            Command::CreateGroup { key, config } => Ok(match self.group(key) {
                Some(group) if &group.config == config => {
                    Response::Group { group: group.clone(), change: Change::Unchanged }
                }
                Some(_) => Response::Rejected(Rejection::GroupExists { key: key.clone() }),
                None => self.insert_new(key, config, at),
            }),
            Command::PutGroup { key, config } => Ok(match self.group_mut(key) {
                Some(group) if &group.config == config => {
                    Response::Group { group: group.clone(), change: Change::Unchanged }
                }
                Some(group) => {
                    if group.holder.is_some() {
                        group.grace_ms = group.grace_ms.max(group.config.failover_timeout_ms());
                    }
                    group.config = config.clone();
                    group.updated_at = at;
                    Response::Group { group: group.clone(), change: Change::Updated }
                }
                None => self.insert_new(key, config, at),
            }),
            Command::DeleteGroup { key, refuse_if_active, active } => {
                if self.group(key).is_none() {
                    Err(Rejection::GroupNotFound(key.clone()))
                } else if *refuse_if_active && !active.is_empty() {
                    Err(Rejection::GroupHasActiveSessions(key.clone()))
                } else {
                    if let Some(group) = self.remove(key) {
                        self.tombstones.insert(key.clone(), group.tombstone());
                    }
                    Ok(Response::Deleted)
                }
            }
            command => match self.group_mut(command.group()) {
                Some(group) => apply_to_group(group, command, at),
                None => Err(Rejection::GroupNotFound(command.group().clone())),
            },
        };
        outcome.unwrap_or_else(Response::Rejected)
    }

    /// Answers a read-only query.
    pub fn query(&self, query: &Query) -> QueryResult {
        match query {
            Query::Group(key) => QueryResult::Group(self.group(key).cloned().map(Box::new)),
            Query::Groups(scope) => QueryResult::Groups(self.groups_in(scope).cloned().collect()),
        }
    }

    /// One group, if it exists.
    pub fn group(&self, key: &GroupKey) -> Option<&Group> {
        self.groups.get(&key.scope)?.get(&key.group)
    }

    /// The groups of one scope, ordered by id.
    pub fn groups_in<'a>(&'a self, scope: &Scope) -> impl Iterator<Item = &'a Group> + 'a {
        self.groups.get(scope).into_iter().flat_map(|groups| groups.values())
    }

    /// Every group, in key order.
    pub fn all_groups(&self) -> impl Iterator<Item = &Group> + '_ {
        self.groups.values().flat_map(BTreeMap::values)
    }

    /// The current value of one record, for storage to persist after `apply`: the group, or
    /// its tombstone once deleted.
    pub fn record(&self, key: &RecordKey) -> Option<Record> {
        match key {
            RecordKey::Group(k) => match self.group(k) {
                Some(g) => Some(Record::Group(g.clone())),
                None => self.tombstones.get(k).map(|t| Record::Tombstone(k.clone(), t.clone())),
            },
        }
    }

    /// Deleted groups' tombstones.
    pub fn tombstones(&self) -> impl Iterator<Item = (&GroupKey, &Tombstone)> + '_ {
        self.tombstones.iter()
    }

    /// Every record, in key order, for snapshots and digests.
    pub fn records(&self) -> impl Iterator<Item = (RecordKey, Record)> + '_ {
        let groups =
            self.all_groups().map(|g| (RecordKey::Group(g.key.clone()), Record::Group(g.clone())));
        let tombstones =
            self.tombstones.iter().filter(|(k, _)| self.group(k).is_none()).map(|(k, t)| {
                (RecordKey::Group(k.clone()), Record::Tombstone(k.clone(), t.clone()))
            });
        groups.chain(tombstones)
    }

    /// Puts a record back when storage reloads the state. Panics if the record is not stored
    /// under its own key, which would mean corrupt storage.
    pub fn restore(&mut self, key: RecordKey, record: Record) {
        match (key, record) {
            (RecordKey::Group(k), Record::Group(g)) => {
                assert_eq!(k, g.key, "a stored group must live under its own key");
                self.groups.entry(k.scope).or_default().insert(k.group, g);
            }
            (RecordKey::Group(k), Record::Tombstone(key, t)) => {
                assert_eq!(k, key, "a stored tombstone must live under its own key");
                self.tombstones.insert(k, t);
            }
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
        hasher.finish()
    }

    /// Number of groups, across all scopes.
    pub fn group_count(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    fn group_mut(&mut self, key: &GroupKey) -> Option<&mut Group> {
        self.groups.get_mut(&key.scope)?.get_mut(&key.group)
    }

    fn insert_new(&mut self, key: &GroupKey, config: &GroupConfig, at: Timestamp) -> Response {
        let mut group = Group::new(key.clone(), config.clone(), at);
        // A group re-created under a deleted one's key continues its epoch (the tombstone stays,
        // for the detector, until the key is deleted again).
        if let Some(t) = self.tombstones.get(key) {
            group.epoch = t.epoch;
        }
        self.groups.entry(key.scope.clone()).or_default().insert(key.group.clone(), group.clone());
        Response::Group { group, change: Change::Created }
    }

    fn remove(&mut self, key: &GroupKey) -> Option<Group> {
        let scope = self.groups.get_mut(&key.scope)?;
        let removed = scope.remove(&key.group);
        if scope.is_empty() {
            self.groups.remove(&key.scope);
        }
        removed
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
                group.handover = Some(Handover { from: session.clone(), reason: Reason::Deleted });
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
        Command::RequestHandover { expected_epoch, reason, .. } => {
            let Some(holder) = &group.holder else { return Err(superseded(group)) };
            if holder.epoch != *expected_epoch || group.handover.is_some() {
                return Err(superseded(group));
            }
            group.handover = Some(Handover { from: holder.session.clone(), reason: *reason });
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
                for other in group.sessions.values_mut().filter(|o| &o.id != session) {
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
        Command::Checkpoint { heartbeats, last_data_processed_time, .. } => {
            for (id, record) in heartbeats {
                if let Some(s) = group.sessions.get_mut(id) {
                    s.last_heartbeat = Some(record.clone());
                }
            }
            if last_data_processed_time.is_some() {
                group.last_data_processed_time = *last_data_processed_time;
            }
            updated(group)
        }
        Command::CreateGroup { .. } | Command::PutGroup { .. } | Command::DeleteGroup { .. } => {
            unreachable!("group commands are applied by State::apply")
        }
    }
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
    };
    group.sessions.insert(session.clone(), s.clone());
    Response::Session { session: s, change: Change::Created }
}
