//! The replicated state and the deterministic `apply`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{
    Change, Command, Query, QueryResult, RecordKey, Rejection, Request, Response,
};
use crate::group::{Group, GroupConfig};
use crate::ids::{GroupKey, Scope, Timestamp};

/// One stored unit of state, addressed by a [`RecordKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A group.
    Group(Group),
}

/// Everything Baton replicates, apart from Raft's own metadata.
///
/// Invariants:
/// - every group is stored under its own key;
/// - no scope maps to an empty set of groups;
/// - `apply` changes at most the record named by `Command::record_key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    groups: BTreeMap<Scope, BTreeMap<crate::GroupId, Group>>,
}

impl State {
    /// Applies one command at the leader-chosen time in `request.at`.
    pub fn apply(&mut self, request: &Request) -> Response {
        let at = request.at;
        match &request.command {
            Command::CreateGroup { key, config } => match self.group(key) {
                Some(group) if &group.config == config => {
                    Response::Group { group: group.clone(), change: Change::Unchanged }
                }
                Some(group) => Response::Rejected(Rejection::GroupExists {
                    key: key.clone(),
                    existing: group.config.clone(),
                }),
                None => self.insert_new(key, config, at),
            },
            Command::PutGroup { key, config } => match self.group_mut(key) {
                Some(group) if &group.config == config => {
                    Response::Group { group: group.clone(), change: Change::Unchanged }
                }
                Some(group) => {
                    group.config = config.clone();
                    group.updated_at = at;
                    Response::Group { group: group.clone(), change: Change::Updated }
                }
                None => self.insert_new(key, config, at),
            },
            Command::DeleteGroup { key } => match self.remove(key) {
                Some(_) => Response::Deleted,
                None => Response::Rejected(Rejection::GroupNotFound(key.clone())),
            },
        }
    }

    /// Answers a read-only query.
    pub fn query(&self, query: &Query) -> QueryResult {
        match query {
            Query::Group(key) => QueryResult::Group(self.group(key).cloned()),
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

    /// The current value of one record, for storage to persist after `apply`.
    pub fn record(&self, key: &RecordKey) -> Option<Record> {
        match key {
            RecordKey::Group(k) => self.group(k).cloned().map(Record::Group),
        }
    }

    /// Every record, in key order, for snapshots and digests.
    pub fn records(&self) -> impl Iterator<Item = (RecordKey, Record)> + '_ {
        self.groups
            .values()
            .flat_map(|groups| groups.values())
            .map(|g| (RecordKey::Group(g.key.clone()), Record::Group(g.clone())))
    }

    /// Puts a record back when storage reloads the state. Panics if the record is not stored
    /// under its own key, which would mean corrupt storage.
    pub fn restore(&mut self, key: RecordKey, record: Record) {
        match (key, record) {
            (RecordKey::Group(k), Record::Group(g)) => {
                assert_eq!(k, g.key, "a stored group must live under its own key");
                self.groups.entry(k.scope).or_default().insert(k.group, g);
            }
        }
    }

    /// A fingerprint of the whole state: equal states give equal digests. Nodes compare it to
    /// show they converged. It uses std's `DefaultHasher`, whose algorithm is fixed for a given
    /// build, so compare digests only between nodes running the same binary.
    pub fn digest(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        for group in self.groups.values().flat_map(BTreeMap::values) {
            group.hash(&mut hasher);
        }
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
        let group =
            Group { key: key.clone(), config: config.clone(), created_at: at, updated_at: at };
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
