//! Who may call Baton: identities, their roles, the access rules, and the audit trail.
//!
//! An [`Identity`] is replicated state like a group, so every node can check a caller without
//! asking the leader. The core never sees a secret: it stores a [`Credential`] (a salted digest
//! of the token, computed by `baton-auth`) and, for identities that must sign requests, a
//! [`Sealed`] key (encrypted by `baton-auth` with a key that never enters the log).
//!
//! Access rules, in one place ([`Principal`]):
//! - an administrator may do everything, including managing identities and reading the audit;
//! - a tenant member may use only its own tenant's groups and, of those, only groups without
//!   allowed owners or whose owner or allowed owners include it.

use std::collections::BTreeSet;
use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::GroupConfig;
use crate::error::{Error, Result};
use crate::group::Group;
use crate::ids::{GroupKey, SessionId, TenantId, Timestamp};
use crate::session::Reason;

/// Longest identity name, in characters.
pub const MAX_NAME_LEN: usize = 64;
/// How many audit entries the state keeps in all; beyond it, the oldest entry of the longest
/// trail (a tenant's, or the cluster's) is dropped.
pub const AUDIT_CAPACITY: u64 = 10_000;
/// How many audit entries one trail keeps: those of one tenant's groups, or the cluster's own
/// (identities, and changes that concern no group). Beyond it the trail's oldest is dropped,
/// so one tenant's changes never push out another's.
pub const AUDIT_PER_TRAIL: usize = 1_000;

/// The name of an identity: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-`, `_`, `.` or `@`.
/// It is the Uplynk `_owner`, the HCX user name, and appears in tokens and audit entries.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "CompactString", into = "CompactString")]
pub struct IdentityName(CompactString);

impl IdentityName {
    /// Validates `value` as an identity name.
    pub fn new(value: impl AsRef<str>) -> Result<Self> {
        Self::try_from(CompactString::new(value.as_ref()))
    }

    fn check(value: &str) -> Result<()> {
        let invalid = |reason: String| Error::InvalidId { kind: "identity name", reason };
        if value.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        if value.len() > MAX_NAME_LEN {
            return Err(invalid(format!("it is longer than {MAX_NAME_LEN} characters")));
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')))
        {
            return Err(invalid(format!(
                "it contains {c:?}; only ASCII letters, digits, '-', '_', '.' and '@' are allowed"
            )));
        }
        Ok(())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdentityName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::new(value)
    }
}

impl TryFrom<CompactString> for IdentityName {
    type Error = Error;
    fn try_from(value: CompactString) -> Result<Self> {
        Self::check(&value)?;
        Ok(Self(value))
    }
}

impl From<IdentityName> for String {
    fn from(name: IdentityName) -> String {
        name.0.into_string()
    }
}

impl From<IdentityName> for CompactString {
    fn from(name: IdentityName) -> CompactString {
        name.0
    }
}

impl fmt::Display for IdentityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdentityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What an identity may do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
// Externally tagged (serde's default): postcard, the log's encoding, cannot decode internally
// tagged enums.
#[serde(rename_all = "snake_case")]
pub enum AccessRole {
    /// Everything: every tenant, cluster administration, identities, audit.
    Admin,
    /// The groups of one tenant (AVEVA's "Tenant Member").
    Member {
        /// The tenant.
        tenant: TenantId,
    },
}

/// A salted digest of a token's secret. Opaque to the core; `baton-auth` makes and checks it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Credential {
    /// Random salt.
    pub salt: Vec<u8>,
    /// The digest of the salted secret.
    pub digest: Vec<u8>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(..)")
    }
}

/// A secret encrypted with a key that is not in the replicated state (Uplynk API keys, which
/// must be recovered to check signatures). Opaque to the core.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sealed(pub Vec<u8>);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed(..)")
    }
}

/// A caller Baton knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// Its unique name; never reused, even after revocation.
    pub name: IdentityName,
    /// What it may do.
    pub role: AccessRole,
    /// Its token's digest.
    pub token: Credential,
    /// Its request-signing key (Uplynk's API key), sealed.
    pub signing_key: Option<Sealed>,
    /// When it was created (leader time).
    pub created_at: Timestamp,
    /// When its secrets were last replaced, if ever.
    pub rotated_at: Option<Timestamp>,
    /// When it was revoked; a revoked identity is refused everywhere.
    pub revoked_at: Option<Timestamp>,
}

impl Identity {
    /// A new identity, to be created by a command: no signing key, never rotated or revoked.
    /// Its creation time is the creating command's (the state stamps it when applying).
    pub fn new(name: IdentityName, role: AccessRole, token: Credential) -> Self {
        Self {
            name,
            role,
            token,
            signing_key: None,
            created_at: Timestamp(0),
            rotated_at: None,
            revoked_at: None,
        }
    }

    /// Whether the identity may still be used.
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }

    /// Whether this identity is active and may read and change `group`.
    pub fn may_use(&self, group: &Group) -> bool {
        self.is_active() && may_use(&self.name, &self.role, group)
    }

    /// The caller this identity authenticates as.
    pub fn principal(&self) -> Principal {
        Principal { name: self.name.clone(), role: self.role.clone() }
    }
}

/// An authenticated caller, and the access rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// Who.
    pub name: IdentityName,
    /// What it may do.
    pub role: AccessRole,
}

impl Principal {
    /// Whether the caller is a cluster administrator.
    pub fn is_admin(&self) -> bool {
        self.role == AccessRole::Admin
    }

    /// Whether the caller may address groups of `tenant` at all. The answer does not depend on
    /// what exists, so a refusal reveals nothing.
    pub fn may_enter(&self, tenant: &TenantId) -> bool {
        self.role.enters(tenant)
    }

    /// Whether the caller may read and change `group`.
    pub fn may_use(&self, group: &Group) -> bool {
        may_use(&self.name, &self.role, group)
    }

    /// Whether the caller may learn that `group` exists (be told 403 rather than 404): anyone
    /// who may use it, and fellow tenant members unless it is `owners_only`.
    pub fn may_know(&self, group: &Group) -> bool {
        self.may_use(group)
            || (self.may_enter(&group.key.scope.tenant) && !group.config.owners_only)
    }

    /// Whether the caller may decide who else uses `group`: its owner or an administrator
    /// (anyone who may use it, for a group created by Baton itself).
    pub fn may_share(&self, group: &Group) -> bool {
        self.is_admin()
            || match &group.owner {
                Some(owner) => owner == &self.name,
                None => self.may_use(group),
            }
    }
}

impl AccessRole {
    /// Whether this role may address groups of `tenant` at all.
    fn enters(&self, tenant: &TenantId) -> bool {
        match self {
            AccessRole::Admin => true,
            AccessRole::Member { tenant: mine } => mine == tenant,
        }
    }
}

/// The one access rule, on borrowed parts (the heartbeat path checks it without copying).
fn may_use(name: &IdentityName, role: &AccessRole, group: &Group) -> bool {
    let open_to_tenant = group.allowed_owners.is_empty() && !group.config.owners_only;
    role.enters(&group.key.scope.tenant)
        && (*role == AccessRole::Admin
            || open_to_tenant
            || group.owner.as_ref() == Some(name)
            || group.allowed_owners.contains(name))
}

/// Who asked for a change, and from where, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The authenticated identity.
    pub identity: IdentityName,
    /// The client's address as the node saw it.
    pub from: Option<String>,
    /// The request's idempotency key, if the client sent one (see [`crate::idempotency`]).
    pub request_key: Option<String>,
}

/// One change recorded in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the trail; increases by one per entry.
    pub seq: u64,
    /// When it was applied (leader time).
    pub at: Timestamp,
    /// Who asked; `None` for Baton's own decisions (an override expiring).
    pub actor: Option<Actor>,
    /// The group it concerns, if any.
    pub group: Option<GroupKey>,
    /// What changed.
    pub action: AuditAction,
}

/// What an audited change did.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A group was created with this configuration. Recorded by earlier versions only (now
    /// [`AuditAction::GroupConfigured`]); still read from their trails.
    GroupCreated {
        /// The configuration.
        config: GroupConfig,
    },
    /// A group's configuration changed to this. Recorded by earlier versions only.
    GroupUpdated {
        /// The new configuration.
        config: GroupConfig,
    },
    /// A group was deleted.
    GroupDeleted,
    /// A session joined a group.
    SessionCreated {
        /// The session.
        session: SessionId,
    },
    /// A session was removed from a group.
    SessionDeleted {
        /// The session.
        session: SessionId,
    },
    /// A role override was set or turned off.
    OverrideSet {
        /// The session.
        session: SessionId,
        /// `None`: off. `Some(None)`: Primary until turned off. `Some(Some(ms))`: for `ms`.
        primary_for_ms: Option<Option<u64>>,
    },
    /// A role override expired.
    OverrideExpired {
        /// The session.
        session: SessionId,
    },
    /// An operator forced the baton away from its holder.
    FailoverForced {
        /// Why (always `Forced` for operator requests).
        reason: Reason,
        /// The member asked for, if any.
        to: Option<SessionId>,
    },
    /// Members' priorities or eligibility changed.
    MembersSet {
        /// The changes.
        members: Vec<crate::command::MemberChange>,
    },
    /// Allowed owners were added or removed.
    AllowedOwnersChanged {
        /// Added.
        add: BTreeSet<IdentityName>,
        /// Removed.
        remove: BTreeSet<IdentityName>,
    },
    /// Channels were attached or detached.
    ChannelsSet {
        /// Attached.
        add: BTreeSet<String>,
        /// Detached.
        remove: BTreeSet<String>,
    },
    /// A group's allowed owners were replaced.
    AllowedOwnersSet {
        /// The new list.
        owners: BTreeSet<IdentityName>,
    },
    /// An identity was created.
    IdentityCreated {
        /// Its name.
        name: IdentityName,
        /// Its role.
        role: AccessRole,
    },
    /// An identity's secrets were replaced.
    IdentityRotated {
        /// Its name.
        name: IdentityName,
    },
    /// An identity was revoked.
    IdentityRevoked {
        /// Its name.
        name: IdentityName,
    },
    /// A group was created, or its configuration changed: what changed, never the whole
    /// configuration (a group's labels may hold kilobytes, and the trail keeps thousands of
    /// entries). (Last, so that earlier entries keep their encoding.)
    GroupConfigured {
        /// Whether the group was created (every field set is then a change).
        created: bool,
        /// The fields that changed.
        changes: Vec<ConfigChange>,
    },
}

/// One field of a group's configuration that an audited change set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigChange {
    /// The display name.
    Name,
    /// The description.
    Description,
    /// The failover timeout, to this many milliseconds.
    FailoverTimeoutMs(u64),
    /// The policy, to this.
    Policy(crate::Policy),
    /// Whether only owners may see the group, to this.
    OwnersOnly(bool),
    /// Labels added, removed or changed: the first [`AUDITED_LABELS`] keys (each cut to
    /// [`AUDITED_KEY_CHARS`] characters), and how many more.
    Labels {
        /// Their keys.
        keys: Vec<String>,
        /// How many more changed.
        more: u64,
    },
}

/// Most label keys an audit entry names.
pub const AUDITED_LABELS: usize = 16;
/// Most characters of a label key an audit entry keeps.
pub const AUDITED_KEY_CHARS: usize = 64;

impl ConfigChange {
    /// The changes from `before` (`None`: a group created) to `after`.
    pub fn between(before: Option<&GroupConfig>, after: &GroupConfig) -> Vec<ConfigChange> {
        let mut changes = Vec::new();
        let differs = |f: &dyn Fn(&GroupConfig) -> bool| before.is_none_or(|b| !f(b));
        if differs(&|b| b.name == after.name) && (before.is_some() || after.name.is_some()) {
            changes.push(ConfigChange::Name);
        }
        if differs(&|b| b.description == after.description)
            && (before.is_some() || after.description.is_some())
        {
            changes.push(ConfigChange::Description);
        }
        if differs(&|b| b.failover_timeout_ms() == after.failover_timeout_ms()) {
            changes.push(ConfigChange::FailoverTimeoutMs(after.failover_timeout_ms()));
        }
        if differs(&|b| b.policy == after.policy) {
            changes.push(ConfigChange::Policy(after.policy.clone()));
        }
        if differs(&|b| b.owners_only == after.owners_only)
            && (before.is_some() || after.owners_only)
        {
            changes.push(ConfigChange::OwnersOnly(after.owners_only));
        }
        let empty = std::collections::BTreeMap::new();
        let old = before.map_or(&empty, |b| &b.labels);
        let mut keys = old
            .iter()
            .filter(|(k, v)| after.labels.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .chain(after.labels.keys().filter(|k| !old.contains_key(*k)));
        let named: Vec<String> = keys
            .by_ref()
            .take(AUDITED_LABELS)
            .map(|k| k.chars().take(AUDITED_KEY_CHARS).collect())
            .collect();
        let more = keys.count() as u64;
        if !named.is_empty() {
            changes.push(ConfigChange::Labels { keys: named, more });
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;

    #[test_case("alice" ; "plain")]
    #[test_case("e8d6b5cb940c40cc9ec6ad081a38f3f0" ; "uplynk owner id")]
    #[test_case("ops.bot-1_x@example.com" ; "punctuation")]
    fn valid_names_are_accepted(value: &str) {
        assert_eq!(IdentityName::new(value).expect("valid").as_str(), value);
    }

    #[test_case("" ; "empty")]
    #[test_case("a b" ; "space")]
    #[test_case("a:b" ; "colon")]
    #[test_case("é" ; "non ascii")]
    #[test_case(&"a".repeat(MAX_NAME_LEN + 1) ; "too long")]
    fn invalid_names_are_refused(value: &str) {
        assert!(IdentityName::new(value).is_err());
    }
}
