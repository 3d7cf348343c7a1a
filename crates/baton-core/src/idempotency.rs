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

use crate::command::{Rejection, Response};
use crate::group::Group;
use crate::ids::{GroupKey, Timestamp};
use crate::state::State;

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
    /// What it answered; a group's answer with the group's key only (see
    /// [`Remembered::answer`]).
    pub response: Response,
}

impl Remembered {
    /// What to remember of `response`: a group's answer keeps the group's key and what
    /// happened to it, not the group, which may hold kilobytes (thousands of remembered
    /// answers of a large group would otherwise be most of the state).
    pub fn slim(response: Response) -> Response {
        match response {
            Response::Group { group, change } => {
                let config = group.config.clone();
                let at = group.created_at;
                Response::Group {
                    group: Box::new(Group::new(group.key, config.without_text(), at, None)),
                    change,
                }
            }
            other => other,
        }
    }

    /// The answer to a retry: the first answer, a group's filled in with the group as it is
    /// now (as a read after the first answer would show it), or "not found" if it was deleted
    /// since.
    pub fn answer(&self, state: &State) -> Response {
        match &self.response {
            Response::Group { group, change } => match state.group(&group.key) {
                Some(now) => Response::Group { group: Box::new(now.clone()), change: *change },
                None => Response::Rejected(Rejection::GroupNotFound(group.key.clone())),
            },
            other => other.clone(),
        }
    }

    /// Whether it still counts at `now`.
    pub fn fresh(&self, now: Timestamp) -> bool {
        now.0 < self.at.0.saturating_add(REMEMBER_MS)
    }
}
