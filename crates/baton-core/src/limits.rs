//! How much callers may keep in the replicated state: [`Limits`], which the leader checks
//! against its applied state before it proposes a caller's command ([`Limits::admit`]), so that
//! nothing over a limit ever reaches the log.
//!
//! Every limit bounds what one tenant member can make the cluster store and replicate: labels
//! (Cinder's group specs) travel with every change of a group's configuration, members,
//! channels and allowed owners with every copy of the group, and groups, namespaces and
//! identities are what a snapshot holds.
//!
//! ## Invariants
//! - A command is judged by what the state would hold after it, never by its own size alone:
//!   a delta (add 3 specs) is refused when the total it leads to is over the limit.
//! - Only growth is refused. A limit lowered below what a group already holds does not make
//!   the group unusable; a change that keeps it at or below its current size, or shrinks it,
//!   is refused only if the result is still over the limit and larger than before.
//! - Judged on the leader's applied state: writes already proposed and not yet applied are
//!   not counted, so a tenant racing many creates at once can pass a limit by at most the
//!   writes it has in flight (bounded by the node's connection and rate limits).
//! - An allowed owner must be an active identity of the group's tenant (or an administrator)
//!   when it is added.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::command::{Command, Rejection};
use crate::group::{Group, GroupConfig};
use crate::identity::IdentityName;
use crate::ids::GroupKey;
use crate::state::State;

/// One of the [`Limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// Labels (Cinder group specs) of one group.
    LabelsPerGroup,
    /// Bytes of one group's labels, keys and values together.
    LabelBytesPerGroup,
    /// Members (sessions, appliances, slicers) of one group.
    MembersPerGroup,
    /// Channels attached to one group.
    ChannelsPerGroup,
    /// Allowed owners of one group.
    AllowedOwnersPerGroup,
    /// Groups of one tenant, in all its namespaces.
    GroupsPerTenant,
    /// Namespaces of one tenant that hold groups.
    NamespacesPerTenant,
    /// Identities of the cluster, revoked ones included (their names are never reused).
    Identities,
}

impl Limit {
    /// The node setting that holds this limit.
    pub fn setting(self) -> &'static str {
        match self {
            Limit::LabelsPerGroup => "max_labels_per_group",
            Limit::LabelBytesPerGroup => "max_label_bytes_per_group",
            Limit::MembersPerGroup => "max_members_per_group",
            Limit::ChannelsPerGroup => "max_channels_per_group",
            Limit::AllowedOwnersPerGroup => "max_allowed_owners_per_group",
            Limit::GroupsPerTenant => "max_groups_per_tenant",
            Limit::NamespacesPerTenant => "max_namespaces_per_tenant",
            Limit::Identities => "max_identities",
        }
    }

    /// What it counts, for messages.
    fn counts(self) -> &'static str {
        match self {
            Limit::LabelsPerGroup => "labels (group specs) of the group",
            Limit::LabelBytesPerGroup => "bytes of the group's labels (group specs)",
            Limit::MembersPerGroup => "members of the group",
            Limit::ChannelsPerGroup => "channels of the group",
            Limit::AllowedOwnersPerGroup => "allowed owners of the group",
            Limit::GroupsPerTenant => "groups of the tenant",
            Limit::NamespacesPerTenant => "namespaces of the tenant",
            Limit::Identities => "identities of the cluster",
        }
    }
}

/// A command refused because the state would go over a limit; nothing was proposed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("the {} would be {wanted}, more than the limit of {max} (setting `{}`)", .limit.counts(), .limit.setting())]
pub struct OverLimit {
    /// Which limit.
    pub limit: Limit,
    /// What the state would hold.
    pub wanted: u64,
    /// The limit.
    pub max: u64,
}

/// The limits the leader holds callers' commands to. Each is a node setting named by
/// [`Limit::setting`]; the defaults are generous for every dialect's real use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// See [`Limit::LabelsPerGroup`].
    pub labels_per_group: u64,
    /// See [`Limit::LabelBytesPerGroup`].
    pub label_bytes_per_group: u64,
    /// See [`Limit::MembersPerGroup`].
    pub members_per_group: u64,
    /// See [`Limit::ChannelsPerGroup`].
    pub channels_per_group: u64,
    /// See [`Limit::AllowedOwnersPerGroup`].
    pub allowed_owners_per_group: u64,
    /// See [`Limit::GroupsPerTenant`].
    pub groups_per_tenant: u64,
    /// See [`Limit::NamespacesPerTenant`].
    pub namespaces_per_tenant: u64,
    /// See [`Limit::Identities`].
    pub identities: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            labels_per_group: 64,
            label_bytes_per_group: 16 * 1024,
            members_per_group: 64,
            channels_per_group: 256,
            allowed_owners_per_group: 64,
            groups_per_tenant: 10_000,
            namespaces_per_tenant: 1_000,
            identities: 10_000,
        }
    }
}

impl Limits {
    /// The value of one limit.
    pub fn max(&self, limit: Limit) -> u64 {
        match limit {
            Limit::LabelsPerGroup => self.labels_per_group,
            Limit::LabelBytesPerGroup => self.label_bytes_per_group,
            Limit::MembersPerGroup => self.members_per_group,
            Limit::ChannelsPerGroup => self.channels_per_group,
            Limit::AllowedOwnersPerGroup => self.allowed_owners_per_group,
            Limit::GroupsPerTenant => self.groups_per_tenant,
            Limit::NamespacesPerTenant => self.namespaces_per_tenant,
            Limit::Identities => self.identities,
        }
    }

    /// Whether `command`, sent by `actor`, keeps the state within the limits (and names only
    /// active identities of the group's tenant as allowed owners), judged on `state`.
    /// Refused: [`Rejection::OverLimit`] or [`Rejection::IdentityNotFound`], and the command
    /// must not be proposed. A caller that may not run the command at all is refused by the
    /// access rules first (its answer tells nothing about what a limit would say).
    pub fn admit(
        &self,
        state: &State,
        command: &Command,
        actor: Option<&crate::Actor>,
    ) -> Result<(), Rejection> {
        if let Some(actor) = actor {
            state.check_access(actor, command)?;
        }
        let group = command.group().and_then(|key| state.group(key));
        match command {
            Command::CreateGroup { key, config, members } => {
                self.labels(group.map(|g| &g.config), config)?;
                self.grow(Limit::MembersPerGroup, 0, members.len())?;
                self.room_for_group(state, key, group)
            }
            Command::PutGroup { key, config } => {
                self.labels(group.map(|g| &g.config), config)?;
                self.room_for_group(state, key, group)
            }
            Command::CreateSession { session, .. } | Command::PutSession { session, .. } => {
                match group {
                    Some(g) if !g.sessions.contains_key(session) => {
                        self.grow(Limit::MembersPerGroup, g.sessions.len(), g.sessions.len() + 1)
                    }
                    _ => Ok(()),
                }
            }
            Command::SetChannels { add, remove, .. } => {
                let Some(g) = group else { return Ok(()) };
                let after = changed(&g.channels, add, remove).len();
                self.grow(Limit::ChannelsPerGroup, g.channels.len(), after)
            }
            Command::SetAllowedOwners { owners, .. } => {
                let before = group.map_or(0, |g| g.allowed_owners.len());
                let key = command.group().expect("addresses a group");
                let new = owners.iter().filter(|o| group.is_none_or(|g| !is_owner(g, o)));
                tenant_members(state, key, new)?;
                self.grow(Limit::AllowedOwnersPerGroup, before, owners.len())
            }
            Command::ChangeAllowedOwners { add, remove, .. } => {
                let Some(g) = group else { return Ok(()) };
                tenant_members(state, &g.key, add.iter().filter(|o| !is_owner(g, o)))?;
                let after = changed(&g.allowed_owners, add, remove).len();
                self.grow(Limit::AllowedOwnersPerGroup, g.allowed_owners.len(), after)
            }
            Command::CreateIdentity { .. } => {
                let count = state.identity_count();
                self.grow(Limit::Identities, count, count + 1)
            }
            _ => Ok(()),
        }
    }

    /// Refuses going from `before` to `after` of `limit` when `after` is over it and larger.
    fn grow(&self, limit: Limit, before: usize, after: usize) -> Result<(), Rejection> {
        let (before, wanted, max) = (before as u64, after as u64, self.max(limit));
        if wanted > max && wanted > before {
            return Err(Rejection::OverLimit(OverLimit { limit, wanted, max }));
        }
        Ok(())
    }

    fn labels(&self, before: Option<&GroupConfig>, after: &GroupConfig) -> Result<(), Rejection> {
        self.grow(Limit::LabelsPerGroup, before.map_or(0, |c| c.labels.len()), after.labels.len())?;
        self.grow(Limit::LabelBytesPerGroup, before.map_or(0, label_bytes), label_bytes(after))
    }

    /// A group created at `key` (unless it exists) fits its tenant's limits.
    fn room_for_group(
        &self,
        state: &State,
        key: &GroupKey,
        existing: Option<&Group>,
    ) -> Result<(), Rejection> {
        if existing.is_some() {
            return Ok(());
        }
        let (mut groups, mut namespaces, mut scope_exists) = (0, 0, false);
        for (scope, count) in state.scopes_of(&key.scope.tenant) {
            groups += count;
            namespaces += 1;
            scope_exists |= scope == &key.scope;
        }
        self.grow(Limit::GroupsPerTenant, groups, groups + 1)?;
        if !scope_exists {
            self.grow(Limit::NamespacesPerTenant, namespaces, namespaces + 1)?;
        }
        Ok(())
    }
}

/// A group's labels' size: keys and values, in bytes.
fn label_bytes(config: &GroupConfig) -> usize {
    config.labels.iter().map(|(key, value)| key.len() + value.len()).sum()
}

fn changed<'a, T: Ord>(
    now: &'a BTreeSet<T>,
    add: &'a BTreeSet<T>,
    remove: &BTreeSet<T>,
) -> BTreeSet<&'a T> {
    now.iter().chain(add).filter(|item| !remove.contains(item)).collect()
}

fn is_owner(group: &Group, name: &IdentityName) -> bool {
    group.allowed_owners.contains(name)
}

/// Every name is an active identity that may enter the group's tenant. An identity of another
/// tenant is refused exactly like one that does not exist, so the answer tells nothing about
/// other tenants.
fn tenant_members<'a>(
    state: &State,
    key: &GroupKey,
    mut names: impl Iterator<Item = &'a IdentityName>,
) -> Result<(), Rejection> {
    let member =
        |name: &IdentityName| state.principal(name).is_some_and(|p| p.may_enter(&key.scope.tenant));
    match names.find(|name| !member(name)) {
        Some(name) => Err(Rejection::IdentityNotFound(name.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
impl Limits {
    fn admit_unchecked(&self, state: &State, command: &Command) -> Result<(), Rejection> {
        self.admit(state, command, None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::command::Request;
    use crate::ids::{GroupId, NamespaceId, Scope, SessionId, TenantId, Timestamp};

    fn key(namespace: &str, group: &str) -> GroupKey {
        let scope = Scope {
            tenant: TenantId::new("t").expect("an id"),
            namespace: NamespaceId::new(namespace).expect("an id"),
        };
        GroupKey { scope, group: GroupId::new(group).expect("an id") }
    }

    fn labelled(n: usize) -> GroupConfig {
        let labels: BTreeMap<_, _> = (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect();
        GroupConfig::new(None, None, 10_000).expect("valid").with_labels(labels).expect("valid")
    }

    fn put(key: GroupKey, config: GroupConfig) -> Command {
        Command::PutGroup { key, config }
    }

    fn over(result: Result<(), Rejection>) -> Limit {
        match result {
            Err(Rejection::OverLimit(over)) => over.limit,
            other => panic!("not over a limit: {other:?}"),
        }
    }

    #[test]
    fn a_group_over_a_lowered_limit_may_shrink_or_stay_but_not_grow() {
        let mut state = State::default();
        let command = put(key("ns", "g"), labelled(5));
        state.apply(&Request { at: Timestamp(0), command, actor: None });
        let limits = Limits { labels_per_group: 3, ..Limits::default() };
        assert_eq!(limits.admit_unchecked(&state, &put(key("ns", "g"), labelled(5))), Ok(()));
        assert_eq!(limits.admit_unchecked(&state, &put(key("ns", "g"), labelled(4))), Ok(()));
        assert_eq!(
            over(limits.admit_unchecked(&state, &put(key("ns", "g"), labelled(6)))),
            Limit::LabelsPerGroup
        );
        // A new group is held to the limit itself.
        assert_eq!(
            over(limits.admit_unchecked(&state, &put(key("ns", "h"), labelled(4)))),
            Limit::LabelsPerGroup
        );
        let bytes = Limits { label_bytes_per_group: 8, ..Limits::default() };
        assert_eq!(
            over(bytes.admit_unchecked(&state, &put(key("ns", "h"), labelled(4)))),
            Limit::LabelBytesPerGroup
        );
    }

    #[test]
    fn members_are_counted_with_the_group_they_join() {
        let mut state = State::default();
        let group = key("ns", "g");
        let command =
            Command::CreateGroup { key: group.clone(), config: labelled(0), members: vec![] };
        state.apply(&Request { at: Timestamp(0), command, actor: None });
        let join = |id: &str| Command::CreateSession {
            group: group.clone(),
            session: SessionId::new(id).expect("an id"),
            name: None,
        };
        state.apply(&Request { at: Timestamp(0), command: join("a"), actor: None });
        let limits = Limits { members_per_group: 1, ..Limits::default() };
        assert_eq!(
            limits.admit_unchecked(&state, &join("a")),
            Ok(()),
            "an existing member is not growth"
        );
        assert_eq!(over(limits.admit_unchecked(&state, &join("b"))), Limit::MembersPerGroup);
        // A session of a group that does not exist is refused by the state itself.
        let elsewhere = Command::CreateSession {
            group: key("ns", "nope"),
            session: SessionId::new("b").expect("an id"),
            name: None,
        };
        assert_eq!(limits.admit_unchecked(&state, &elsewhere), Ok(()));
    }

    #[test]
    fn over_limit_messages_name_the_setting() {
        let over = OverLimit { limit: Limit::GroupsPerTenant, wanted: 11, max: 10 };
        let text = over.to_string();
        assert!(text.contains("max_groups_per_tenant") && text.contains("11"), "{text}");
    }
}
