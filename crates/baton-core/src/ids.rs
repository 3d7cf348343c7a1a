//! Validated identifiers and the leader-assigned timestamp.
//!
//! Ids are client-supplied strings, matched exactly (case-sensitive), 1 to
//! [`MAX_ID_LEN`] characters, with no control characters. Validation happens once, at
//! construction; a value of these types is always valid, including after decoding from the log
//! (deserialization runs the same check). Ids of up to 24 bytes are kept inline, without an
//! allocation of their own: a node holds several per group and per member.

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest id accepted, in characters.
pub const MAX_ID_LEN: usize = 256;

/// Checks the id rules shared by every identifier: 1 to [`MAX_ID_LEN`] characters, no control
/// characters.
fn validate(kind: &'static str, value: &str) -> Result<()> {
    let len = value.chars().count();
    if len == 0 {
        return Err(Error::InvalidId { kind, reason: "it is empty".into() });
    }
    if len > MAX_ID_LEN {
        return Err(Error::InvalidId {
            kind,
            reason: format!("it has {len} characters, more than the {MAX_ID_LEN} allowed"),
        });
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Error::InvalidId {
            kind,
            reason: format!("it contains the control character U+{:04X}", c as u32),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "CompactString", into = "CompactString")]
        pub struct $name(CompactString);

        impl $name {
            /// Validates `value` as this kind of id.
            /// Borrowed, not taken: a short id is kept inline, so a `String` made only to be
            /// passed here (one per heartbeat's path) would be an allocation for nothing.
            pub fn new(value: impl AsRef<str>) -> Result<Self> {
                Self::try_from(CompactString::new(value.as_ref()))
            }

            /// The id as the client wrote it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self> {
                Self::new(value)
            }
        }

        impl TryFrom<CompactString> for $name {
            type Error = Error;
            fn try_from(value: CompactString) -> Result<Self> {
                validate($kind, &value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.into_string()
            }
        }

        impl From<$name> for CompactString {
            fn from(id: $name) -> CompactString {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

id_type!(
    /// A tenant, the unit of isolation (AVEVA's `tenantId`).
    TenantId,
    "tenant id"
);
id_type!(
    /// A namespace inside a tenant (AVEVA's `namespaceId`).
    NamespaceId,
    "namespace id"
);
id_type!(
    /// A failover group, unique within its [`Scope`].
    GroupId,
    "group id"
);

id_type!(
    /// A client session (a member of a group), unique within its group.
    SessionId,
    "session id"
);

/// Where a group lives: a tenant and a namespace inside it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// The owning tenant.
    pub tenant: TenantId,
    /// The namespace inside the tenant.
    pub namespace: NamespaceId,
}

/// The full address of a group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    /// The tenant and namespace the group belongs to.
    pub scope: Scope,
    /// The group's id inside that scope.
    pub group: GroupId,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.namespace)
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.scope, self.group)
    }
}

/// A group's fencing token: incremented by every grant of the baton, never decreasing.
/// Downstream systems can refuse writes that carry an older epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

/// A time the client wrote (its `HeartbeatTime` or `LastDataProcessedTime`), in milliseconds
/// since the Unix epoch. Only echoed back and compared between clients; never used to judge
/// liveness, because client clocks differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientTime(pub i64);

/// Milliseconds since the Unix epoch, chosen by the Raft leader when it proposes a command and
/// stored in the command, so every replica applies the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;

    #[test_case("a" ; "one character")]
    #[test_case("group 1/ü" ; "spaces slashes and unicode")]
    fn valid_ids_are_accepted(value: &str) {
        assert_eq!(GroupId::new(value).expect("valid").as_str(), value);
    }

    #[test_case("" ; "empty")]
    #[test_case("a\u{0}b" ; "nul")]
    #[test_case("line\nbreak" ; "newline")]
    fn invalid_ids_are_refused(value: &str) {
        assert!(matches!(GroupId::new(value), Err(Error::InvalidId { .. })));
    }

    #[test]
    fn id_length_limit_counts_characters_not_bytes() {
        assert!(GroupId::new("é".repeat(MAX_ID_LEN)).is_ok());
        assert!(GroupId::new("a".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn decoding_an_invalid_id_fails() {
        let bytes = postcard::to_allocvec(&String::from("bad\u{7}")).expect("encode");
        assert!(postcard::from_bytes::<GroupId>(&bytes).is_err());
    }
}
