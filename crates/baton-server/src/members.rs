//! The IP addresses of the cluster's members, for the Raft listener: connections from them
//! have slots of their own ([`MEMBER_SLOTS`]), so that other hosts filling the listener cannot
//! keep the members from reaching each other.
//!
//! Kept current by a node duty ([`Members::keep_current`]) that resolves every member's
//! `raft_addr` (learners included) whenever the membership changes, and again every
//! [`RESOLVE_EVERY`], since a name may move to another address (a container restarted).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use baton_raft::typ::Raft;

/// Connections the Raft listener keeps for members' addresses, beyond `max_connections`.
/// A member opens a few per peer: one per replication stream and vote, and up to
/// `baton_net::BATCHES_IN_FLIGHT` for forwarding, plus those it pools.
pub const MEMBER_SLOTS: usize = 256;
/// How often members' names are resolved again while the membership stays the same.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(10);
/// How soon after one look at the membership the next may be.
const COALESCE: Duration = Duration::from_secs(1);
/// How long one member's name may take to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The members' IP addresses. Cheap to clone; clones share one set.
#[derive(Clone, Default)]
pub struct Members(Arc<RwLock<HashSet<IpAddr>>>);

impl Members {
    /// Whether `ip` is one of the members' addresses, as last resolved.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&ip)
    }

    fn replace(&self, ips: HashSet<IpAddr>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = ips;
    }

    /// Resolves the `raft_addr` of every member of `raft`'s membership into this set, whenever
    /// the membership changes and every [`RESOLVE_EVERY`], until `stop` resolves. A name whose
    /// lookup fails or takes longer than [`LOOKUP_TIMEOUT`] keeps the addresses it had.
    pub async fn keep_current(self, raft: Raft, stop: impl std::future::Future<Output = ()>) {
        let mut metrics = raft.metrics();
        let mut resolved: Option<(Vec<String>, tokio::time::Instant)> = None;
        // Each member's addresses as last resolved: a lookup that fails or hangs keeps them.
        let mut known: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        tokio::pin!(stop);
        loop {
            let addrs: Vec<String> = metrics
                .borrow_and_update()
                .membership_config
                .nodes()
                .map(|(_, node)| node.raft_addr.clone())
                .collect();
            let due = resolved
                .as_ref()
                .is_none_or(|(last, at)| *last != addrs || at.elapsed() >= RESOLVE_EVERY);
            if due {
                known.retain(|addr, _| addrs.contains(addr));
                for addr in &addrs {
                    let lookup = tokio::net::lookup_host(addr.as_str());
                    if let Ok(Ok(found)) = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                        known.insert(addr.clone(), found.map(|a| a.ip()).collect());
                    }
                }
                self.replace(known.values().flatten().copied().collect());
                resolved = Some((addrs, tokio::time::Instant::now()));
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(RESOLVE_EVERY) => {}
                changed = metrics.changed() => if changed.is_err() { return },
            }
            // Metrics change with every commit, the membership seldom: look at most once a
            // second.
            tokio::time::sleep(COALESCE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_a_members_only_once_resolved_into_the_set() {
        let members = Members::default();
        let ip: IpAddr = "127.0.0.2".parse().expect("an address");
        assert!(!members.contains(ip));
        members.replace(HashSet::from([ip]));
        assert!(
            members.contains(ip) && !members.contains("127.0.0.3".parse().expect("an address"))
        );
    }
}
