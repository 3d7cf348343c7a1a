//! HCX forced failover end to end: three simulated appliances heartbeat an HA group on three
//! real `baton` processes while an operator forces failovers through the HCX API and the Baton
//! leader is killed. Every task ends in SUCCESS, the active appliance changes each time, and
//! the core's invariant checkers find no two valid grants, no shrinking epoch, and no move
//! that was neither a silence nor one of the forced failovers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_core::invariants::{
    at_most_one_valid_grant, epochs_only_grow, failover_only_after_silence,
};
use baton_core::{Epoch, Role};
use baton_e2e::adapter::{Adapter, AdapterConfig, Journal, answers_of, observations};
use baton_e2e::{ADMIN_TOKEN, TestCluster, send};
use serde_json::{Value, json};

const FAILOVER_TIMEOUT: Duration = Duration::from_secs(2);
const ELECTION: Duration = Duration::from_secs(10);
const HA: &str = "/hybridity/api/interconnect/appliances/ha/groups";
/// Where an administrator's HCX groups live, for the appliances' AVEVA heartbeats.
const GROUP_PATH: &str = "/api/v1/tenants/_admin/namespaces/hcx/clientfailover/groups/hg";

async fn hcx(
    cluster: &TestCluster,
    node: u64,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> baton_e2e::Reply {
    let http = baton_e2e::client_builder(None, Duration::from_secs(10))
        .default_headers(
            [(
                reqwest::header::HeaderName::from_static("x-hm-authorization"),
                ADMIN_TOKEN.parse().expect("header"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .expect("client");
    send(&http, method, &format!("{}{path}", cluster.url(node)), body).await.expect("answer")
}

fn active(journal: &Journal) -> Option<(String, u64)> {
    ["ne-a", "ne-b", "ne-c"]
        .iter()
        .filter_map(|s| {
            answers_of(journal, s).last().map(|a| (s.to_string(), a.observation.clone()))
        })
        .filter(|(_, o)| o.role != Role::Secondary)
        .max_by_key(|(_, o)| o.epoch)
        .map(|(s, o)| (s, o.epoch.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_failovers_hand_over_cleanly_even_across_a_leader_kill() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let body = json!({"groupId": "hg", "appliances": ["ne-a", "ne-b", "ne-c"], "failoverTimeoutSeconds": 2});
    let r = hcx(&cluster, leader, "POST", HA, Some(body)).await;
    assert_eq!(r.status, 202, "{r:?}");

    let journal: Journal = Arc::new(Mutex::new(Vec::new()));
    let config = AdapterConfig::new(
        &cluster,
        &cluster.ids(),
        GROUP_PATH,
        "hg",
        FAILOVER_TIMEOUT,
        Instant::now(),
    );
    let adapters: Vec<Adapter> = ["ne-a", "ne-b", "ne-c"]
        .iter()
        .map(|s| Adapter::start(config.clone(), s, 100.0, journal.clone()))
        .collect();
    cluster
        .wait_until(ELECTION, "an appliance is active", || async {
            active(&journal).filter(|(_, e)| *e >= 1)
        })
        .await;
    tokio::time::sleep(FAILOVER_TIMEOUT).await;

    let mut excused = Vec::new();
    for round in 0..3 {
        if round == 1 {
            // The Baton leader dies between two forced failovers.
            let leader = cluster.wait_for_leader(ELECTION).await;
            cluster.kill(leader);
            cluster.wait_for_leader(ELECTION).await;
            // A new leader knows a standby is healthy only once it has heard it: until the
            // appliances' next heartbeats, a forced failover answers 409 (no healthy standby).
            tokio::time::sleep(FAILOVER_TIMEOUT).await;
        }
        let (before, epoch) = active(&journal).expect("an active appliance");
        let node = cluster.live()[round % cluster.live().len()];
        let r = hcx(&cluster, node, "POST", &format!("{HA}/hg/forceFailover"), None).await;
        assert_eq!(r.status, 202, "round {round}: {r:?}");
        let task = r.body["data"]["interconnectTaskId"].as_str().expect("a task").to_string();
        let status = cluster
            .wait_until(FAILOVER_TIMEOUT * 6, "the task finishes", || async {
                let r = hcx(
                    &cluster,
                    node,
                    "GET",
                    &format!("/hybridity/api/interconnect/tasks/{task}"),
                    None,
                )
                .await;
                let status = r.body["status"].as_str()?.to_string();
                (status != "RUNNING").then_some(status)
            })
            .await;
        assert_eq!(status, "SUCCESS", "round {round}");
        let (after, new_epoch) = cluster
            .wait_until(FAILOVER_TIMEOUT * 4, "a new appliance is active", || async {
                active(&journal).filter(|(_, e)| *e > epoch)
            })
            .await;
        assert_ne!(after, before, "round {round}: the active appliance changed");
        excused.push(("hg".to_string(), Epoch(new_epoch)));
        tokio::time::sleep(FAILOVER_TIMEOUT).await;
    }
    for adapter in adapters {
        adapter.stop().await;
    }
    let seen = observations(&journal);
    at_most_one_valid_grant(&seen).unwrap_or_else(|v| panic!("{v:?}"));
    epochs_only_grow(&seen).unwrap_or_else(|v| panic!("{v:?}"));
    failover_only_after_silence(&seen, FAILOVER_TIMEOUT.as_millis() as u64, &excused)
        .unwrap_or_else(|v| panic!("{v:?}"));
}
