//! # baton-core: the pure failover core
//!
//! Baton's replicated state and the only code that changes it. This crate has no I/O, no
//! clock, no async runtime and no knowledge of Raft or HTTP: the Raft state machine (in
//! `baton-store`) feeds it committed [`Request`]s, and the HTTP dialects (in `baton-api`)
//! translate their wire formats into [`Command`]s and [`Query`]s.
//!
//! ```text
//!  dialect (HTTP) ──Command──▶ leader stamps time ──Request──▶ Raft log ──▶ State::apply ──▶ Response
//!  dialect (HTTP) ──Query────▶ leader (linearizable) ─────────────────────▶ State::query ──▶ QueryResult
//! ```
//!
//! ## Invariants
//! - `State::apply` is deterministic: the same state and request give the same state and
//!   response on every replica. Time comes only from `Request::at`, chosen by the leader.
//! - A command changes at most the one record named by [`Command::record_key`] plus its audit
//!   entry and its group's history ([`State::apply_tracked`] names them), so a request commits whole or not at all, and
//!   storage can persist exactly those records.
//! - Identities are state like groups; the core stores only digests and sealed keys, and the
//!   access rules live in one place, [`identity::Principal`].
//! - Every change of a group's baton yields one [`history::Decision`], kept in the group's
//!   bounded history and handed to storage with the request's effects, so nodes can publish it.
//! - Domain refusals are [`Response::Rejected`] values, committed like any other outcome; they
//!   never leave a partial change.
//! - Every id is valid by construction (see [`ids`]), including ids decoded from the log.
//! - A heartbeat is sequenced in one place, [`heartbeat::HeartbeatStep`], which the leader,
//!   the API's in-memory coordinator and the scenario scripts all drive; no member is ever
//!   answered Primary at an epoch it was answered Secondary at, and a grant ends only when it
//!   lapses or the member proves it let go ([`detector::Detector::release`]).

#![cfg_attr(not(test), deny(unused_crate_dependencies))]
#![deny(missing_docs)]

mod command;
pub mod detector;
mod error;
mod group;
pub mod heartbeat;
pub mod history;
pub mod idempotency;
pub mod identity;
pub mod ids;
pub mod invariants;
pub mod limits;
mod session;
mod state;

pub use command::{
    Change, Command, GroupCheckpoint, MemberChange, NewMember, Query, QueryResult, RecordKey,
    Rejection, Request, Response,
};
pub use error::{Error, Result};
pub use group::{
    DEFAULT_PREEMPTION_MARGIN, ForceRefused, Group, GroupConfig, MAX_FAILOVER_TIMEOUT_MS,
    MAX_TEXT_LEN, MIN_FAILOVER_TIMEOUT_MS, Policy, Sessions, Tombstone,
};
pub use heartbeat::{Beat, HeartbeatOutcome, HeartbeatStep};
pub use history::{Candidate, Decision, DecisionKind, History, RoleChange, Verdict};
pub use identity::{
    AccessRole, Actor, AuditAction, AuditEntry, ConfigChange, Credential, Identity, IdentityName,
    Principal, Sealed,
};
pub use ids::{
    ClientTime, Epoch, GroupId, GroupKey, NamespaceId, Scope, SessionId, TenantId, Timestamp,
};
pub use limits::{Growth, Limit, Limits, OverLimit, Pending};
pub use session::{
    Handover, HeartbeatAnswer, HeartbeatIn, HeartbeatRecord, Holder, Reason, Role, RoleOverride,
    Score, Session, Stage,
};
pub use state::{Effects, Record, State};
