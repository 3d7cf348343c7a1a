//! Logs and metrics of real nodes: JSON log lines carrying the node id, the request id (the
//! client's own `x-request-id`, echoed back) and the group of a write; Prometheus metrics for
//! decisions and hand-over durations, the same on every node.

use std::time::{Duration, Instant};

use baton_e2e::{TestCluster, admin_client, send};
use serde_json::{Value, json};

const ELECTION: Duration = Duration::from_secs(10);
const GROUPS: &str = "/api/v1/tenants/e2e/namespaces/ns/clientfailover/groups";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_metrics_count_decisions() {
    // Successful writes are logged at debug.
    let cluster = TestCluster::start_with(
        3,
        &[
            ("log_format", "\"json\""),
            ("log_level", "\"info,openraft=warn,baton_server::coordinator=debug\""),
        ],
    );
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    let base = cluster.url(follower);
    let http = admin_client(Duration::from_secs(10));

    // A write through the follower, named by the client.
    let response = http
        .post(format!("{base}{GROUPS}"))
        .header("x-request-id", "obs-req-1")
        .header("content-type", "application/json")
        .body(json!({"Id": "g", "FailoverTimeout": 1000}).to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "obs-req-1");
    let made_up = http.get(format!("{base}/healthz")).send().await.expect("answered");
    assert_eq!(made_up.headers()["x-request-id"].len(), 16, "one is made up when none is sent");

    let log = cluster.log(follower);
    let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty() && lines.len() * 2 > log.lines().count(), "JSON lines:\n{log}");
    let write = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == json!("write")
                && l["fields"]["command"] == json!("CreateGroup")
        })
        .unwrap_or_else(|| panic!("the write is logged:\n{log}"));
    assert_eq!(write["fields"]["group"], json!("e2e/ns/g"));
    let request = &write["span"];
    assert_eq!(request["name"], json!("request"), "{write}");
    assert_eq!(request["id"], json!("obs-req-1"), "{write}");
    assert_eq!(request["node"], json!(follower), "{write}");
    assert_eq!(request["group"], json!("e2e/ns/g"), "{write}");

    // A forced failover, then the metrics of another node count it.
    for s in ["a", "b"] {
        let url = format!("{base}{GROUPS}/g/clientsessions");
        send(&http, "POST", &url, Some(json!({"Id": s}))).await.expect("join");
    }
    let beat = |s: &'static str| {
        let (http, url) = (http.clone(), format!("{base}{GROUPS}/g/clientsessions/{s}/heartbeat"));
        async move { send(&http, "POST", &url, Some(json!({"FailoverStatus": 100}))).await.ok() }
    };
    beat("a").await;
    beat("b").await;
    let forced = send(&http, "POST", &format!("{base}/groups/e2e/ns/g/failover"), None).await;
    assert_eq!(forced.expect("answered").status, 202);
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(10), "b never became Primary");
        beat("a").await;
        if beat("b").await.is_some_and(|r| r.body["Role"] == json!(1)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let other = cluster.ids().into_iter().find(|id| *id != follower).expect("another node");
    let metrics = cluster
        .wait_until(Duration::from_secs(5), "the metrics count the hand-over", || {
            let http = http.clone();
            let url = format!("{}/metrics", cluster.url(other));
            async move {
                let text = http.get(url).send().await.ok()?.text().await.ok()?;
                text.contains("baton_handover_seconds_count 1").then_some(text)
            }
        })
        .await;
    for needle in [
        "baton_decisions_total{kind=\"handover_started\",reason=\"Forced\"} 1",
        "baton_decisions_total{kind=\"promoted\",reason=\"Forced\"} 1",
        "baton_decisions_total{kind=\"granted\",reason=\"Vacant\"} 1",
        "baton_raft_term",
        "baton_http_requests_total",
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
}
