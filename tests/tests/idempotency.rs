//! A write retried with its `Idempotency-Key` through another node, as a client does after a
//! timeout, is applied once: the cluster answers the first outcome from replicated state.

use std::time::Duration;

use baton_e2e::{TestCluster, admin_client, send};
use serde_json::json;

const ELECTION: Duration = Duration::from_secs(10);
const GROUPS: &str = "/api/v1/tenants/e2e/namespaces/ns/clientfailover/groups";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_write_retried_through_another_node_applies_once() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    cluster.create_failover_group(leader, GROUPS, "g", Duration::from_secs(5), &["a", "b"]).await;
    let http = admin_client(Duration::from_secs(10));
    for s in ["a", "b"] {
        let url = format!("{}{GROUPS}/g/clientsessions/{s}/heartbeat", cluster.url(leader));
        send(&http, "POST", &url, Some(json!({"FailoverStatus": 100}))).await.expect("heartbeat");
    }
    let keyed = |node: u64| {
        let request = http
            .post(format!("{}/groups/e2e/ns/g/failover", cluster.url(node)))
            .header("idempotency-key", "e2e-failover-1");
        async move {
            let r = request.send().await.expect("answered");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    let [first_node, second_node] = {
        let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
        [others[0], others[1]]
    };
    let first = keyed(first_node).await;
    assert_eq!(first.0, 202, "{first:?}");
    assert_eq!(keyed(second_node).await, first, "the retry answers the first outcome");
    assert_eq!(keyed(leader).await, first);
    let unkeyed =
        send(&http, "POST", &format!("{}/groups/e2e/ns/g/failover", cluster.url(leader)), None)
            .await
            .expect("answered");
    assert_eq!(unkeyed.status, 409, "a second, unkeyed failover is another request: {unkeyed:?}");
    let audit =
        send(&http, "GET", &format!("{}/audit", cluster.url(leader)), None).await.expect("audit");
    let forced = audit.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == json!("failover_forced"))
        .count();
    assert_eq!(forced, 1, "applied once");
}
