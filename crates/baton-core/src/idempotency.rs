//! Idempotency keys: a write that carries one (in its [`crate::Actor`]) is applied once; the
//! same identity sending the same key again, for the same command on the same group, within
//! [`REMEMBER_MS`], gets the first outcome back and changes nothing. A client whose write
//! timed out can therefore retry it, on any node, without applying it twice.
//!
//! The outcomes are replicated state (every node, and a new leader, remembers them), at most
//! [`REMEMBER_PER_IDENTITY`] of one identity's (beyond that its own oldest is forgotten, so
//! one caller's stream of keyed writes never pushes out another's) and [`REMEMBER_CAPACITY`]
//! in all (beyond that the oldest is forgotten); outcomes past the window are dropped at the
//! next keyed write.

use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::ids::{GroupKey, Timestamp};

/// How long an outcome is remembered (leader time).
pub const REMEMBER_MS: u64 = 10 * 60 * 1000;
/// How many outcomes are remembered at most.
pub const REMEMBER_CAPACITY: usize = 10_000;
/// How many of one identity's outcomes are remembered at most.
pub const REMEMBER_PER_IDENTITY: usize = 1_000;
/// The longest key.
pub const MAX_KEY_LEN: usize = 128;

/// Whether `key` may be an idempotency key: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The outcome of a keyed write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// When it was applied.
    pub at: Timestamp,
    /// The command's name ([`crate::Command::name`]).
    pub command: String,
    /// The group it addressed.
    pub group: Option<GroupKey>,
    /// What it answered.
    pub response: Response,
}

impl Remembered {
    /// Whether it still counts at `now`.
    pub fn fresh(&self, now: Timestamp) -> bool {
        now.0 < self.at.0.saturating_add(REMEMBER_MS)
    }
}
