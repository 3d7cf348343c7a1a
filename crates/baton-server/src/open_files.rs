//! The process's open-files limit, raised at start-up to what the configured connection caps
//! need, or the node refuses to start. Without this, a node whose soft limit is the common
//! default of 1,024 would accept connections up to that and then fail at random: accepts
//! erroring in a loop, RocksDB unable to open a table file, a peer unable to connect.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::config::Config;
use crate::members::MEMBER_SLOTS;

/// Descriptors kept for everything but connections: RocksDB's table and log files, the
/// runtime, outbound connections to peers, name lookups.
pub const BESIDES_CONNECTIONS: u64 = 1_024;

/// Why the limit cannot be met.
#[derive(Debug, thiserror::Error)]
pub enum OpenFilesError {
    /// The hard limit is below what the configuration needs; only the operator can raise it.
    #[error(
        "the open-files limit (hard {hard}) is below the {needed} that max_connections = \
         {max_connections} needs (two listeners, {MEMBER_SLOTS} member slots and \
         {BESIDES_CONNECTIONS} besides): raise it (`ulimit -n`, systemd's LimitNOFILE=, \
         docker's --ulimit nofile=) or lower max_connections"
    )]
    TooLow {
        /// The process's hard limit.
        hard: u64,
        /// What the configuration needs.
        needed: u64,
        /// The configured cap per listener.
        max_connections: usize,
    },
    /// The limit could not be read or set.
    #[error("cannot read or raise the open-files limit: {0}")]
    System(#[from] nix::Error),
}

/// Descriptors a node configured with `config` may hold at once: a full API listener (its
/// upgraded WebSockets among its connections), a full Raft listener with its member slots, and
/// [`BESIDES_CONNECTIONS`].
pub fn needed(config: &Config) -> u64 {
    let connections = config.max_connections.saturating_mul(2).saturating_add(MEMBER_SLOTS);
    u64::try_from(connections).unwrap_or(u64::MAX).saturating_add(BESIDES_CONNECTIONS)
}

/// The soft limit to set for `needed` descriptors, given the current `soft` and `hard`
/// limits: `None` when `soft` already suffices.
pub fn soft_limit_for(needed: u64, soft: u64, hard: u64) -> Result<Option<u64>, (u64, u64)> {
    match (soft >= needed, hard >= needed) {
        (true, _) => Ok(None),
        (false, true) => Ok(Some(needed)),
        (false, false) => Err((hard, needed)),
    }
}

/// Raises the soft open-files limit to what `config` needs, and returns the limit in force,
/// or refuses when the hard limit is below it.
pub fn ensure(config: &Config) -> Result<u64, OpenFilesError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    match soft_limit_for(needed(config), soft, hard) {
        Ok(None) => Ok(soft),
        Ok(Some(raised)) => {
            setrlimit(Resource::RLIMIT_NOFILE, raised, hard)?;
            Ok(raised)
        }
        Err((hard, needed)) => {
            Err(OpenFilesError::TooLow { hard, needed, max_connections: config.max_connections })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_only_when_short_and_only_as_far_as_the_hard_one_allows() {
        assert_eq!(soft_limit_for(9_000, 20_000, 20_000), Ok(None), "already enough");
        assert_eq!(soft_limit_for(9_000, 1_024, 524_288), Ok(Some(9_000)), "raised to the need");
        assert_eq!(soft_limit_for(9_000, 1_024, 4_096), Err((4_096, 9_000)), "refused");
    }

    #[test]
    fn the_default_configuration_needs_both_listeners_full_and_some_room() {
        let config = Config::default();
        let connections = 2 * config.max_connections + MEMBER_SLOTS;
        assert_eq!(needed(&config), connections as u64 + BESIDES_CONNECTIONS);
    }
}
