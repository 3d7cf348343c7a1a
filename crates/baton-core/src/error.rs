//! Errors from constructing core values out of untrusted input.

/// Why a value could not be constructed. Dialects translate these into their own 400 bodies;
/// the message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An id broke the id rules.
    #[error("the {kind} is not valid: {reason}")]
    InvalidId {
        /// Which id ("group id", "tenant id", ...).
        kind: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A failover timeout outside [`crate::MIN_FAILOVER_TIMEOUT_MS`]..=[`crate::MAX_FAILOVER_TIMEOUT_MS`].
    #[error("the failover timeout must be between 1 second and 1 day; {ms} ms is not")]
    FailoverTimeoutOutOfRange {
        /// The rejected timeout in milliseconds.
        ms: u64,
    },
    /// A health score outside 0 to 100.
    #[error("the failover score must be a number from 0 to 100; {value} is not")]
    ScoreOutOfRange {
        /// The rejected value.
        value: String,
    },
    /// A free-text field longer than [`crate::MAX_TEXT_LEN`].
    #[error("the {field} has {len} characters, more than the {max} allowed")]
    TextTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Result alias for core constructors.
pub type Result<T> = std::result::Result<T, Error>;
