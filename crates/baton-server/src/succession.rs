//! A follower whose leader's process is gone campaigns without waiting out its timeouts.
//!
//! openraft 0.9 starts an election only after the leader has been silent for its lease
//! (`election_timeout_max`) plus the follower's own election timeout: 240 to 320 ms with the
//! default timings, plus up to a tick. When the leader's process has died but its host is up,
//! a follower can know sooner: the leader's Raft port refuses connections. So when no
//! AppendEntries has arrived for `election_timeout_min` plus a heartbeat interval (105 ms by
//! default), a follower tries to connect to its leader's Raft port, and when the connection is
//! refused it starts an election at once (`Trigger::elect`). A leader that is alive, merely
//! slow, or cut off by a partition (where a connection times out instead of being refused) is
//! left to the usual timeouts.
//!
//! The survivors notice together, and two candidates at once split the vote: each votes for
//! itself, and the election waits out a randomized timeout for a second round (about 150 ms
//! more). A lone early candidate is often refused too: openraft 0.9's followers refuse votes
//! until `election_timeout_max` after they last heard from the leader. So the survivors take
//! turns: the voter with the lowest id among the leader's other voters campaigns at once, the
//! next half a silence later (by when the first has won, or the others' refusal has run out),
//! and so on, each only if no candidate or new leader has been heard meanwhile. Measured on 20
//! leader kills each (BENCHMARKS.md): all at once, median 132 ms and worst 266 ms (a third of
//! the elections split); in turn, median 161 ms and worst 177 ms.
//!
//! The leader lease (see `leader.rs`) still holds, whatever the votes do: a leader trusts a
//! quorum confirmation that started at `t` until `t + election_timeout_min`. The followers of
//! that quorum heard from it after `t`; each refuses other candidates until it has been silent
//! for `election_timeout_max`, or until it campaigns itself, which this module does only after a
//! silence longer than `election_timeout_min`. So no other leader can be elected before the
//! lease has run out, even if the old leader is alive and only its Raft port refuses
//! connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_net::RpcClient;
use baton_raft::NodeId;
use baton_raft::typ::{Raft, RaftMetrics};
use openraft::ServerState;
use tokio::time::Instant;

/// How long a connection attempt to the leader's Raft port may take before the leader is
/// taken to be alive (only a refusal counts as gone).
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);

/// Whom to probe: the leader's id and Raft address, when this node is a follower that has
/// heard no AppendEntries for `silence` and has not probed in the last `silence`.
pub fn leader_to_probe(
    metrics: &RaftMetrics,
    since_append: Duration,
    since_probe: Duration,
    silence: Duration,
) -> Option<(NodeId, String)> {
    if metrics.state != ServerState::Follower || since_append < silence || since_probe < silence {
        return None;
    }
    let leader = metrics.current_leader.filter(|leader| *leader != metrics.id)?;
    let node = metrics.membership_config.membership().get_node(&leader)?;
    Some((leader, node.raft_addr.clone()))
}

/// How long this node waits before campaigning, once `leader` is known to be gone: its rank
/// among the other voters, by id, times `step`.
pub fn campaign_delay(metrics: &RaftMetrics, leader: NodeId, step: Duration) -> Duration {
    let membership = metrics.membership_config.membership();
    let rank = membership.voter_ids().filter(|id| *id != leader && *id < metrics.id).count();
    step * u32::try_from(rank).unwrap_or(u32::MAX)
}

/// Runs until `stop` resolves: every `silence / 4`, a follower that has heard no AppendEntries
/// on `port` for `silence` probes its leader's Raft port (with `rpc`, so from this node's Raft
/// address) and campaigns when it is refused.
pub async fn campaign_when_leader_is_gone(
    raft: Raft,
    port: Arc<crate::port::Port>,
    rpc: RpcClient,
    silence: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(silence / 4);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probed = Instant::now();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let since_append = port.last_append().elapsed();
        let target =
            leader_to_probe(&raft.metrics().borrow(), since_append, probed.elapsed(), silence);
        let Some((leader, addr)) = target else { continue };
        probed = Instant::now();
        if !rpc.refuses_connections(&addr, PROBE_TIMEOUT).await {
            continue;
        }
        let delay = campaign_delay(&raft.metrics().borrow(), leader, silence / 2);
        if !delay.is_zero() {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        // Still the same leader and still silent: nothing arrived while probing or waiting
        // (a vote granted to another candidate clears the leader).
        let same_leader = raft.metrics().borrow().current_leader == Some(leader);
        let silent = port.last_append().elapsed();
        if !same_leader || silent < silence {
            continue;
        }
        tracing::info!(
            leader,
            silent_ms = silent.as_millis(),
            waited_turn_ms = delay.as_millis(),
            "the leader's Raft port refuses connections; campaigning at once"
        );
        if raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_raft::NodeInfo;
    use openraft::{Membership, StoredMembership};
    use std::collections::{BTreeMap, BTreeSet};

    const SILENCE: Duration = Duration::from_millis(50);

    fn metrics(state: ServerState, leader: Option<NodeId>) -> RaftMetrics {
        let mut m = RaftMetrics::new_initial(1);
        m.state = state;
        m.current_leader = leader;
        let nodes: BTreeMap<NodeId, NodeInfo> = (1..=3)
            .map(|id| {
                let raft_addr = format!("127.0.0.1:{}", 7000 + id);
                (id, NodeInfo { raft_addr, api_addr: String::new() })
            })
            .collect();
        let voters = BTreeSet::from([1, 2, 3]);
        let membership = Membership::new(vec![voters], nodes);
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m
    }

    fn probe(m: &RaftMetrics, since_append: u64, since_probe: u64) -> Option<(NodeId, String)> {
        let ms = Duration::from_millis;
        leader_to_probe(m, ms(since_append), ms(since_probe), SILENCE)
    }

    #[test]
    fn a_follower_whose_leader_went_silent_probes_the_leaders_raft_port() {
        let follower = metrics(ServerState::Follower, Some(2));
        assert_eq!(probe(&follower, 60, 1_000), Some((2, "127.0.0.1:7002".into())));
    }

    #[test]
    fn a_follower_that_heard_from_its_leader_lately_does_not_probe() {
        assert_eq!(probe(&metrics(ServerState::Follower, Some(2)), 20, 1_000), None);
    }

    #[test]
    fn probes_are_at_least_a_silence_apart() {
        assert_eq!(probe(&metrics(ServerState::Follower, Some(2)), 500, 10), None);
    }

    #[test]
    fn the_survivors_campaign_in_turn_by_id_so_they_do_not_split_the_vote() {
        let step = Duration::from_millis(50);
        let as_node = |id: NodeId| {
            let mut m = metrics(ServerState::Follower, Some(2));
            m.id = id;
            m
        };
        assert_eq!(campaign_delay(&as_node(1), 2, step), Duration::ZERO);
        assert_eq!(campaign_delay(&as_node(3), 2, step), step, "after node 1, not node 2");
        assert_eq!(campaign_delay(&as_node(2), 1, step), Duration::ZERO, "node 1 is the one gone");
        assert_eq!(campaign_delay(&as_node(3), 1, step), step, "after node 2");
    }

    #[test]
    fn leaders_candidates_and_followers_without_a_leader_never_probe() {
        assert_eq!(probe(&metrics(ServerState::Leader, Some(1)), 500, 1_000), None);
        assert_eq!(probe(&metrics(ServerState::Candidate, Some(2)), 500, 1_000), None);
        assert_eq!(probe(&metrics(ServerState::Follower, None), 500, 1_000), None);
        assert_eq!(probe(&metrics(ServerState::Follower, Some(1)), 500, 1_000), None);
    }
}
