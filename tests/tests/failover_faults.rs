//! Failover under Baton faults on real processes: a leader that loses its quorum grants
//! nothing, and a Primary that dies together with the Baton leader is still replaced in time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_core::Role;
use baton_core::invariants::{
    at_most_one_valid_grant, epochs_only_grow, failover_only_after_silence,
};
use baton_e2e::adapter::{Adapter, AdapterConfig, Journal, answers_of, observations};
use baton_e2e::{TestCluster, send};
use serde_json::json;

const FAILOVER_TIMEOUT: Duration = Duration::from_secs(2);
const ELECTION: Duration = Duration::from_secs(10);
const GROUPS: &str = "/api/v1/tenants/e2e/namespaces/plant/clientfailover/groups";

/// Creates group `g` (2 s timeout) with sessions `a` and `b` through node `via`.
async fn group_with_two_sessions(cluster: &TestCluster, via: u64) -> String {
    cluster.create_failover_group(via, GROUPS, "g", FAILOVER_TIMEOUT, &["a", "b"]).await
}

fn adapter_config(cluster: &TestCluster, nodes: &[u64], group_path: &str) -> AdapterConfig {
    AdapterConfig::new(cluster, nodes, group_path, "g", FAILOVER_TIMEOUT, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_cut_off_from_its_quorum_grants_nothing() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let group_path = group_with_two_sessions(&cluster, leader).await;
    let url = format!("{}{group_path}/clientsessions/a/heartbeat", cluster.url(leader));
    let first = send(cluster.http(), "POST", &url, Some(json!({"FailoverScore": 100})))
        .await
        .expect("answer");
    assert_eq!((first.status, &first.body["Role"]), (200, &json!(1)), "{first:?}");

    // The leader loses both followers: it can no longer confirm that it leads.
    for id in cluster.ids() {
        if id != leader {
            cluster.kill(id);
        }
    }
    // Past its lease (half an election timeout) it must not answer a grant, whatever it
    // believes. Heartbeats are spaced beyond the group's rate limit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let r = send(cluster.http(), "POST", &url, Some(json!({"FailoverScore": 100})))
            .await
            .expect("answer");
        assert_ne!(r.status, 200, "a leader without a quorum answered {r:?}");
        assert_eq!(r.status, 503, "{r:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_dying_with_the_baton_leader_is_replaced_in_time() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let group_path = group_with_two_sessions(&cluster, leader).await;
    let journal: Journal = Arc::new(Mutex::new(Vec::new()));
    // The adapters talk to the followers only, so that killing the leader does not also cut
    // them off from Baton.
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    let config = adapter_config(&cluster, &followers, &group_path);
    let a = Adapter::start(config.clone(), "a", 100.0, journal.clone());
    cluster
        .wait_until(ELECTION, "a is Primary", || async {
            (answers_of(&journal, "a").last()?.observation.role == Role::Primary).then_some(())
        })
        .await;
    let b = Adapter::start(config.clone(), "b", 90.0, journal.clone());
    tokio::time::sleep(FAILOVER_TIMEOUT).await;

    // The Primary adapter and the Baton leader die together.
    a.stop().await;
    cluster.kill(leader);
    let a_last = answers_of(&journal, "a").last().cloned().expect("a answered");
    let pending = cluster
        .wait_until(FAILOVER_TIMEOUT * 5, "b gets the baton", || async {
            answers_of(&journal, "b").into_iter().find(|x| x.observation.role != Role::Secondary)
        })
        .await;
    let took = pending.observation.received_at - a_last.observation.sent_at;
    // FailoverTimeout + an election + 1 s, plus one heartbeat interval for b to hear of it.
    let bound = FAILOVER_TIMEOUT + ELECTION_BOUND + Duration::from_secs(1) + FAILOVER_TIMEOUT / 2;
    assert!(took <= bound.as_millis() as u64, "b got the baton {took} ms after a's last heartbeat");
    assert!(
        took >= FAILOVER_TIMEOUT.as_millis() as u64,
        "b got the baton before a's grant lapsed ({took} ms)"
    );
    b.stop().await;

    let seen = observations(&journal);
    at_most_one_valid_grant(&seen).unwrap_or_else(|v| panic!("{v:?}"));
    epochs_only_grow(&seen).unwrap_or_else(|v| panic!("{v:?}"));
    failover_only_after_silence(&seen, FAILOVER_TIMEOUT.as_millis() as u64, &[])
        .unwrap_or_else(|v| panic!("{v:?}"));
}

/// An election with the default timings (400 ms max election timeout) settles well within this.
const ELECTION_BOUND: Duration = Duration::from_millis(1_000);
