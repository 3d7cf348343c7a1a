//! A rolling restart of all three nodes, one at a time (SIGTERM, wait for exit, start again,
//! wait until it has caught up), while a client keeps creating groups and retries any request
//! that fails: no request fails for good and every acknowledged write is there afterwards.

use std::time::Duration;

use baton_e2e::{TestCluster, groups_url, send};
use serde_json::json;

const ELECTION: Duration = Duration::from_secs(10);
/// A client retries a failed request this many times, 100 ms apart.
const RETRIES: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_no_acknowledged_write_and_fails_no_retried_request() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(ELECTION).await;
    let nodes: Vec<String> = cluster.ids().iter().map(|id| cluster.url(*id)).collect();
    let http = cluster.http().clone();

    // The client: creates groups w0, w1, ... until told to stop, each through the next node,
    // retrying (on any node) until it is acknowledged. POST of the same group is idempotent, so
    // retrying a request whose outcome was unknown is safe.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let client = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0.. {
            if *stopped.borrow_and_update() {
                break;
            }
            let id = format!("w{i}");
            let body = json!({"Id": id, "FailoverTimeout": "00:00:10"});
            let mut done = false;
            for attempt in 0..RETRIES {
                let url = groups_url(&nodes[(i + attempt) % nodes.len()], "v1");
                if let Ok(r) = send(&http, "POST", &url, Some(body.clone())).await
                    && (r.status == 201 || r.status == 200)
                {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(done, "creating {id} failed {RETRIES} times");
            acknowledged.push(id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acknowledged
    });

    for id in cluster.ids() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.terminate(id, Duration::from_secs(15));
        cluster.restart(id);
        cluster.wait_for_leader(ELECTION).await;
        cluster.wait_converged(ELECTION).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).expect("client running");
    let acknowledged = client.await.expect("the client finished without a failed request");
    assert!(
        acknowledged.len() > 20,
        "the client kept writing through the restarts: {}",
        acknowledged.len()
    );

    let digest = cluster.wait_converged(ELECTION).await;
    assert_eq!(
        digest["groups"],
        json!(acknowledged.len()),
        "every acknowledged write, and nothing else"
    );
    for id in cluster.ids() {
        let (code, list) = cluster
            .get_json(id, "/api/v1/tenants/e2e/namespaces/ns/clientfailover/groups?count=100000")
            .await
            .expect("answers");
        assert_eq!(code, 200);
        let ids: Vec<&str> =
            list.as_array().expect("list").iter().filter_map(|g| g["Id"].as_str()).collect();
        for w in &acknowledged {
            assert!(ids.contains(&w.as_str()), "node {id} lost {w}");
        }
    }
}
