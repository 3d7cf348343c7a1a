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
//! - Judged on the leader's applied state plus the growth it admitted and has not yet seen
//!   applied ([`Pending`]), so that writes racing each other cannot pass a limit together.
//!   A write whose outcome is unknown (its leader lost office) gives its reservation back and
//!   may still commit later: the only way past a limit, by the few writes caught so.
//! - An allowed owner must be an active identity of the group's tenant (or an administrator)
//!   when it is added.

use std::collections::{BTreeMap, BTreeSet};

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
    /// Bytes of one group's text: name, description, labels, members' ids and names,
    /// channels, owners.
    GroupBytes,
    /// Bytes of the text of all of one tenant's groups together: what one of its list reads
    /// answers at most, and what it keeps in the replicated state. (Last, so that earlier
    /// answers keep their encoding.)
    TenantBytes,
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
            Limit::GroupBytes => "max_group_bytes",
            Limit::TenantBytes => "max_tenant_bytes",
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
            Limit::GroupBytes => "bytes of the group's text (names, labels, members, channels)",
            Limit::TenantBytes => "bytes of the text of the tenant's groups",
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
    /// See [`Limit::GroupBytes`].
    pub group_bytes: u64,
    /// See [`Limit::TenantBytes`].
    pub tenant_bytes: u64,
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
            group_bytes: 64 * 1024,
            tenant_bytes: 32 * 1024 * 1024,
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
            Limit::GroupBytes => self.group_bytes,
            Limit::TenantBytes => self.tenant_bytes,
        }
    }

    /// Whether `command`, sent by `actor`, keeps the state within the limits (and names only
    /// active identities of the group's tenant as allowed owners), judged on `state` plus the
    /// growth already admitted and not yet applied (`pending`). Admitted: the growth to
    /// reserve in `pending` until the command is applied or has failed ([`Pending::hold`]).
    /// Refused: [`Rejection::OverLimit`] or [`Rejection::IdentityNotFound`], and the command
    /// must not be proposed. A caller that may not run the command at all is refused by the
    /// access rules first (its answer tells nothing about what a limit would say).
    pub fn admit(
        &self,
        state: &State,
        pending: &Pending,
        command: &Command,
        actor: Option<&crate::Actor>,
    ) -> Result<Vec<(Growth, u64)>, Rejection> {
        if let Some(actor) = actor {
            state.check_access(actor, command)?;
        }
        let mut judge = Judge { limits: self, pending, grown: Vec::new() };
        let group = command.group().and_then(|key| state.group(key));
        let members = |key: &GroupKey| Growth::Members(key.clone());
        match command {
            Command::CreateGroup { key, config, members: first } => {
                self.labels(group.map(|g| &g.config), config)?;
                if group.is_none() {
                    judge.grow(Limit::MembersPerGroup, members(key), 0, first.len())?;
                }
                judge.room_for_group(state, key, group)?;
            }
            Command::PutGroup { key, config } => {
                self.labels(group.map(|g| &g.config), config)?;
                judge.room_for_group(state, key, group)?;
            }
            Command::CreateSession { session, .. } | Command::PutSession { session, .. } => {
                if let Some(g) = group.filter(|g| !g.sessions.contains_key(session)) {
                    let now = g.sessions.len();
                    judge.grow(Limit::MembersPerGroup, members(&g.key), now, now + 1)?;
                }
            }
            // Changes name existing members only, but may repeat them: one command names no
            // more than a group may hold, so that its audit entry is bounded.
            Command::SetMembers { members, .. } => {
                judge.within(Limit::MembersPerGroup, members.len())?;
            }
            Command::SetChannels { add, remove, .. } => {
                if let Some(g) = group {
                    // One command names no more than a group may hold, so that its audit
                    // entry is bounded too.
                    judge.within(Limit::ChannelsPerGroup, add.len().max(remove.len()))?;
                    let after = changed(&g.channels, add, remove).len();
                    let growth = Growth::Channels(g.key.clone());
                    judge.grow(Limit::ChannelsPerGroup, growth, g.channels.len(), after)?;
                }
            }
            Command::SetAllowedOwners { group: key, owners } => {
                let before = group.map_or(0, |g| g.allowed_owners.len());
                let new = owners.iter().filter(|o| group.is_none_or(|g| !is_owner(g, o)));
                tenant_members(state, key, new)?;
                let growth = Growth::AllowedOwners(key.clone());
                judge.grow(Limit::AllowedOwnersPerGroup, growth, before, owners.len())?;
            }
            Command::ChangeAllowedOwners { add, remove, .. } => {
                if let Some(g) = group {
                    judge.within(Limit::AllowedOwnersPerGroup, add.len().max(remove.len()))?;
                    tenant_members(state, &g.key, add.iter().filter(|o| !is_owner(g, o)))?;
                    let after = changed(&g.allowed_owners, add, remove).len();
                    let before = g.allowed_owners.len();
                    let growth = Growth::AllowedOwners(g.key.clone());
                    judge.grow(Limit::AllowedOwnersPerGroup, growth, before, after)?;
                }
            }
            // A retry of a create that succeeded is not growth (the state answers it).
            Command::CreateIdentity { identity } if state.identity(&identity.name).is_none() => {
                let count = state.identity_count();
                judge.grow(Limit::Identities, Growth::Identities, count, count + 1)?;
            }
            _ => {}
        }
        if let Some(key) = command.group() {
            let before = group.map_or(0, Group::text_bytes);
            let after = text_bytes_after(group, command).unwrap_or(before);
            judge.grow(Limit::GroupBytes, Growth::GroupBytes(key.clone()), before, after)?;
            let tenant = &key.scope.tenant;
            let now = state.tenant_text_bytes(tenant) as usize;
            let growth = Growth::TenantBytes(tenant.clone());
            judge.grow(Limit::TenantBytes, growth, now, (now + after).saturating_sub(before))?;
        }
        Ok(judge.grown)
    }

    /// A configuration replaces the whole of the one before it, so its labels are judged on
    /// their own: nothing pending adds to them.
    fn labels(&self, before: Option<&GroupConfig>, after: &GroupConfig) -> Result<(), Rejection> {
        let count = (before.map_or(0, |c| c.labels.len()), after.labels.len());
        over(self, Limit::LabelsPerGroup, count.0 as u64, count.1 as u64, 0)?;
        let bytes = (before.map_or(0, label_bytes), label_bytes(after));
        over(self, Limit::LabelBytesPerGroup, bytes.0 as u64, bytes.1 as u64, 0)
    }
}

/// Refuses going from `before` to `after` of `limit`, with `pending` more already admitted,
/// when the command grows it and the total would be over the limit.
fn over(
    limits: &Limits,
    limit: Limit,
    before: u64,
    after: u64,
    pending: u64,
) -> Result<(), Rejection> {
    let (wanted, max) = (after.saturating_add(pending), limits.max(limit));
    if after > before && wanted > max {
        return Err(Rejection::OverLimit(OverLimit { limit, wanted, max }));
    }
    Ok(())
}

/// What a count limit is counted for: the growth the leader admitted and reserves until it is
/// applied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Growth {
    /// Members of a group.
    Members(GroupKey),
    /// Channels of a group.
    Channels(GroupKey),
    /// Allowed owners of a group.
    AllowedOwners(GroupKey),
    /// Groups of a tenant.
    Groups(crate::TenantId),
    /// Namespaces of a tenant (each create in a new namespace counts one, even two in the
    /// same one: erring on the side of the limit).
    Namespaces(crate::TenantId),
    /// Identities of the cluster.
    Identities,
    /// Bytes of a group's text.
    GroupBytes(GroupKey),
    /// Bytes of a tenant's groups' text.
    TenantBytes(crate::TenantId),
}

/// Growth the leader admitted and has not yet seen applied. Judged with the state, so that
/// writes in flight at once cannot pass a limit together (each would see the same state).
#[derive(Debug, Default)]
pub struct Pending(BTreeMap<Growth, u64>);

impl Pending {
    fn of(&self, growth: &Growth) -> u64 {
        self.0.get(growth).copied().unwrap_or(0)
    }

    /// Reserves what [`Limits::admit`] admitted.
    pub fn hold(&mut self, grown: &[(Growth, u64)]) {
        for (growth, by) in grown {
            *self.0.entry(growth.clone()).or_default() += by;
        }
    }

    /// Gives back a reservation once its command is applied (the state counts it then) or
    /// has failed.
    pub fn release(&mut self, grown: &[(Growth, u64)]) {
        for (growth, by) in grown {
            if let Some(held) = self.0.get_mut(growth) {
                *held = held.saturating_sub(*by);
                if *held == 0 {
                    self.0.remove(growth);
                }
            }
        }
    }

    /// Whether nothing is reserved.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One judgement: the limits, what is pending, and the growth admitted so far.
struct Judge<'a> {
    limits: &'a Limits,
    pending: &'a Pending,
    grown: Vec<(Growth, u64)>,
}

impl Judge<'_> {
    /// Admits going from `before` to `after` of `limit` for `growth`, counting what is pending.
    fn grow(
        &mut self,
        limit: Limit,
        growth: Growth,
        before: usize,
        after: usize,
    ) -> Result<(), Rejection> {
        let (before, after) = (before as u64, after as u64);
        over(self.limits, limit, before, after, self.pending.of(&growth))?;
        if after > before {
            self.grown.push((growth, after - before));
        }
        Ok(())
    }

    /// Admits a command that names `count` items of what `limit` counts.
    fn within(&self, limit: Limit, count: usize) -> Result<(), Rejection> {
        over(self.limits, limit, 0, count as u64, 0)
    }

    /// A group created at `key` (unless it exists) fits its tenant's limits.
    fn room_for_group(
        &mut self,
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
        let tenant = key.scope.tenant.clone();
        self.grow(Limit::GroupsPerTenant, Growth::Groups(tenant.clone()), groups, groups + 1)?;
        if !scope_exists {
            let growth = Growth::Namespaces(tenant);
            self.grow(Limit::NamespacesPerTenant, growth, namespaces, namespaces + 1)?;
        }
        Ok(())
    }
}

/// The bytes of text `group` (`None`: not yet created) would hold after `command`; `None` if
/// the command adds no text to it.
fn text_bytes_after(group: Option<&Group>, command: &Command) -> Option<usize> {
    let now = group.map_or(0, Group::text_bytes);
    let config_bytes = |c: &GroupConfig| {
        c.name.as_ref().map_or(0, String::len)
            + c.description.as_ref().map_or(0, String::len)
            + label_bytes(c)
    };
    let name_bytes = |name: &Option<String>| name.as_ref().map_or(0, String::len);
    Some(match command {
        Command::CreateGroup { config, members, .. } if group.is_none() => {
            let members: usize =
                members.iter().map(|m| m.id.as_str().len() + name_bytes(&m.name)).sum();
            config_bytes(config) + members
        }
        Command::PutGroup { config, .. } => {
            now - group.map_or(0, |g| config_bytes(&g.config)) + config_bytes(config)
        }
        Command::CreateSession { session, name, .. }
        | Command::PutSession { session, name, .. } => {
            let g = group?;
            let old = g.sessions.get(session).map(|s| session.as_str().len() + name_bytes(&s.name));
            now - old.unwrap_or(0) + session.as_str().len() + name_bytes(name)
        }
        Command::SetChannels { add, remove, .. } => {
            let g = group?;
            now - g.channels.iter().map(String::len).sum::<usize>()
                + changed(&g.channels, add, remove).iter().map(|c| c.len()).sum::<usize>()
        }
        Command::SetAllowedOwners { owners, .. } => {
            let before =
                group.map_or(0, |g| g.allowed_owners.iter().map(|o| o.as_str().len()).sum());
            now - before + owners.iter().map(|o| o.as_str().len()).sum::<usize>()
        }
        Command::ChangeAllowedOwners { add, remove, .. } => {
            let g = group?;
            now - g.allowed_owners.iter().map(|o| o.as_str().len()).sum::<usize>()
                + changed(&g.allowed_owners, add, remove)
                    .iter()
                    .map(|o| o.as_str().len())
                    .sum::<usize>()
        }
        _ => return None,
    })
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
        self.admit(state, &Pending::default(), command, None).map(drop)
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

    fn apply(state: &mut State, command: Command) {
        state.apply(&Request { at: Timestamp(0), command, actor: None });
    }

    fn join(group: &GroupKey, id: &str, name: Option<String>) -> Command {
        let session = SessionId::new(id).expect("an id");
        Command::CreateSession { group: group.clone(), session, name }
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
        let (mut state, group) = (State::default(), key("ns", "g"));
        apply(&mut state, Command::PutGroup { key: group.clone(), config: labelled(0) });
        let join = |id: &str| join(&group, id, None);
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
    fn growth_admitted_and_not_yet_applied_counts_against_the_limit() {
        let (mut state, group) = (State::default(), key("ns", "g"));
        apply(&mut state, Command::PutGroup { key: group.clone(), config: labelled(0) });
        let join = |id: &str| join(&group, id, None);
        let limits = Limits { members_per_group: 2, groups_per_tenant: 2, ..Limits::default() };
        let mut pending = Pending::default();
        // Two joins in flight at once fill the group; the third is refused before any applies.
        let mut joins = Vec::new();
        for id in ["a", "b"] {
            let grown = limits.admit(&state, &pending, &join(id), None).expect("admitted");
            pending.hold(&grown);
            joins.push(grown);
        }
        assert_eq!(
            over(limits.admit(&state, &pending, &join("c"), None).map(drop)),
            Limit::MembersPerGroup
        );
        // So with groups of a tenant.
        let create = |g: &str| Command::PutGroup { key: key("ns", g), config: labelled(0) };
        let grown = limits.admit(&state, &pending, &create("h"), None).expect("admitted");
        pending.hold(&grown);
        assert_eq!(
            over(limits.admit(&state, &pending, &create("i"), None).map(drop)),
            Limit::GroupsPerTenant
        );
        // Given back (applied or failed), the room is free again.
        pending.release(&grown);
        assert!(limits.admit(&state, &pending, &create("i"), None).is_ok());
        for grown in &joins {
            pending.release(grown);
        }
        assert!(pending.is_empty());
    }

    #[test]
    fn one_command_may_not_name_more_channels_than_a_group_holds() {
        let (mut state, group) = (State::default(), key("ns", "g"));
        apply(&mut state, Command::PutGroup { key: group.clone(), config: labelled(0) });
        let names: BTreeSet<String> = (0..5).map(|i| format!("c{i}")).collect();
        // Adding and removing the same five leaves the group as it was, but would be audited.
        let churn = Command::SetChannels { group, add: names.clone(), remove: names };
        let limits = Limits { channels_per_group: 4, ..Limits::default() };
        assert_eq!(over(limits.admit_unchecked(&state, &churn)), Limit::ChannelsPerGroup);
    }

    #[test]
    fn long_member_names_cannot_make_a_group_larger_than_its_byte_limit() {
        let (mut state, group) = (State::default(), key("ns", "g"));
        apply(&mut state, Command::PutGroup { key: group.clone(), config: labelled(0) });
        let limits = Limits { group_bytes: 10_000, ..Limits::default() };
        let join = |id: &str, name: usize| join(&group, id, Some("n".repeat(name)));
        let mut pending = Pending::default();
        for id in ["a", "b"] {
            let grown = limits.admit(&state, &pending, &join(id, 4_000), None).expect("admitted");
            pending.hold(&grown);
        }
        // The third would take the group past 10,000 bytes, counting the two not yet applied.
        let third = limits.admit(&state, &pending, &join("c", 4_000), None).map(drop);
        assert_eq!(over(third), Limit::GroupBytes);
        assert!(limits.admit(&state, &pending, &join("c", 100), None).is_ok());
        // Labels count too.
        assert_eq!(
            over(limits.admit_unchecked(&state, &put(group.clone(), labelled_with(20, 600)))),
            Limit::GroupBytes
        );
    }

    /// A tenant of many groups, each within its own limit, cannot together hold more text than
    /// its tenant limit; what a group gives back (a member leaving, a group deleted) is room
    /// again. The leader's count is kept by every apply, and rebuilt from the records.
    #[test]
    fn a_tenants_groups_together_hold_no_more_text_than_its_limit() {
        let mut state = State::default();
        let limits = Limits { tenant_bytes: 10_000, ..Limits::default() };
        let tenant = TenantId::new("t").expect("an id");
        for g in ["a", "b"] {
            let config = labelled_with(4, 1_000);
            apply(&mut state, put(key("ns", g), config));
        }
        let held = state.tenant_text_bytes(&tenant);
        assert_eq!(held, 2 * (4 * 1_000 + 4 * 2), "two groups of four 1,000-byte labels");
        let third = put(key("other-ns", "c"), labelled_with(2, 1_000));
        assert_eq!(over(limits.admit_unchecked(&state, &third)), Limit::TenantBytes);
        // A member joining with a long name is growth too; a small one fits.
        let long = join(&key("ns", "a"), "m", Some("n".repeat(2_000)));
        assert_eq!(over(limits.admit_unchecked(&state, &long)), Limit::TenantBytes);
        assert!(limits.admit_unchecked(&state, &join(&key("ns", "a"), "m", None)).is_ok());
        // Another tenant has its own room.
        let elsewhere = GroupKey {
            scope: Scope { tenant: TenantId::new("u").expect("an id"), ..key("ns", "x").scope },
            group: GroupId::new("x").expect("an id"),
        };
        assert!(limits.admit_unchecked(&state, &put(elsewhere, labelled_with(4, 1_000))).is_ok());
        // Deleting a group gives its room back.
        apply(
            &mut state,
            Command::DeleteGroup { key: key("ns", "b"), refuse_if_active: false, active: vec![] },
        );
        assert_eq!(state.tenant_text_bytes(&tenant), held / 2);
        assert!(limits.admit_unchecked(&state, &third).is_ok());
        // A state rebuilt from its records counts the same.
        let rebuilt = State::from_records(state.records());
        assert_eq!(rebuilt.tenant_text_bytes(&tenant), held / 2);
    }

    fn labelled_with(n: usize, value: usize) -> GroupConfig {
        let labels: BTreeMap<_, _> = (0..n).map(|i| (format!("k{i}"), "v".repeat(value))).collect();
        GroupConfig::new(None, None, 10_000).expect("valid").with_labels(labels).expect("valid")
    }

    #[test]
    fn over_limit_messages_name_the_setting() {
        let over = OverLimit { limit: Limit::GroupsPerTenant, wanted: 11, max: 10 };
        let text = over.to_string();
        assert!(text.contains("max_groups_per_tenant") && text.contains("11"), "{text}");
    }
}
