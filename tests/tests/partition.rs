//! A Baton leader cut off from its peers (its Raft traffic dropped by iptables) while an
//! adapter can still reach it: it stops granting within its lease, the majority elects a new
//! leader, and the baton moves only after the old holder's grant lapsed. Never two valid
//! grants, whatever each adapter was told.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_core::Role;
use baton_core::invariants::{at_most_one_valid_grant, epochs_only_grow};
use baton_e2e::TestCluster;
use baton_e2e::adapter::{Adapter, AdapterConfig, Journal, answers_of, observations};

const FAILOVER_TIMEOUT: Duration = Duration::from_secs(2);
const ELECTION: Duration = Duration::from_secs(10);
const GROUPS: &str = "/api/v1/tenants/e2e/namespaces/plant/clientfailover/groups";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_stops_granting_and_the_majority_fails_over() {
    let mut cluster = TestCluster::start_partitionable(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let path =
        cluster.create_failover_group(leader, GROUPS, "g", FAILOVER_TIMEOUT, &["a", "b"]).await;
    let journal: Journal = Arc::new(Mutex::new(Vec::new()));
    let epoch = Instant::now();
    let config =
        |nodes: Vec<u64>| AdapterConfig::new(&cluster, &nodes, &path, "g", FAILOVER_TIMEOUT, epoch);
    // a reaches only the leader (it will end up on the minority side); b reaches every node.
    let a = Adapter::start(config(vec![leader]), "a", 100.0, journal.clone());
    cluster
        .wait_until(ELECTION, "a is Primary", || async {
            (answers_of(&journal, "a").last()?.observation.role == Role::Primary).then_some(())
        })
        .await;
    let b = Adapter::start(config(cluster.ids()), "b", 100.0, journal.clone());
    tokio::time::sleep(FAILOVER_TIMEOUT).await;

    cluster.partition(leader);
    let cut = epoch.elapsed().as_millis() as u64;
    // The majority elects a new leader and, after the re-armed timeout, gives b the baton.
    let b_holds = cluster
        .wait_until(ELECTION + FAILOVER_TIMEOUT * 3, "b gets the baton", || async {
            answers_of(&journal, "b").into_iter().find(|x| x.observation.role != Role::Secondary)
        })
        .await;
    assert!(b_holds.observation.epoch.0 >= 2, "{b_holds:?}");
    // The cut-off leader granted nothing after its lease (half an election timeout) ran out.
    let late_grants: Vec<_> = answers_of(&journal, "a")
        .into_iter()
        .filter(|x| x.observation.role != Role::Secondary && x.observation.sent_at > cut + 200)
        .collect();
    assert!(late_grants.is_empty(), "the partitioned leader kept granting: {late_grants:?}");

    // Heal: the old leader rejoins as a follower; a is told Secondary.
    cluster.heal(leader);
    let new_leader = cluster.wait_for_leader(ELECTION).await;
    assert_ne!(new_leader, leader);
    cluster
        .wait_until(ELECTION, "a hears Secondary", || async {
            (answers_of(&journal, "a").last()?.observation.role == Role::Secondary).then_some(())
        })
        .await;
    a.stop().await;
    b.stop().await;
    let seen = observations(&journal);
    at_most_one_valid_grant(&seen).unwrap_or_else(|v| panic!("{v:?}"));
    epochs_only_grow(&seen).unwrap_or_else(|v| panic!("{v:?}"));
    cluster.wait_converged(ELECTION).await;
}
