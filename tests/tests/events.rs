//! Live decisions end to end on three real `baton` processes: every node streams the same
//! role changes (same ids, same order), a follower included, and serves the group's history.

use std::time::{Duration, Instant};

use baton_e2e::{TestCluster, admin_client, send};
use serde_json::{Value, json};

const ELECTION: Duration = Duration::from_secs(10);
const GROUPS: &str = "/api/v1/tenants/e2e/namespaces/ns/clientfailover/groups";

/// An open SSE response, read event by event.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn open(http: &reqwest::Client, url: &str) -> Self {
        let response = http.get(url).send().await.expect("the stream opens");
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: String::new() }
    }

    /// The next event as (id, name, data), waiting at most `within`.
    async fn next(&mut self, within: Duration) -> Option<(u64, String, Value)> {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string())
                };
                if let (Some(id), Some(name), Some(data)) =
                    (field("id:"), field("event:"), field("data:"))
                {
                    let data = serde_json::from_str(&data).expect("JSON data");
                    return Some((id.parse().expect("numeric id"), name, data));
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let chunk = tokio::time::timeout(left, self.response.chunk()).await.ok()?.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn heartbeat(http: &reqwest::Client, base: &str, session: &str) -> Option<u64> {
    let url = format!("{base}{GROUPS}/g/clientsessions/{session}/heartbeat");
    let reply = send(http, "POST", &url, Some(json!({"FailoverStatus": 100}))).await.ok()?;
    reply.body["Role"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_streams_the_same_failover_and_serves_its_history() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    cluster.create_failover_group(leader, GROUPS, "g", Duration::from_secs(1), &["a", "b"]).await;
    let http = admin_client(Duration::from_secs(60));
    let mut streams = Vec::new();
    for node in [follower, leader] {
        let url = format!("{}/groups/e2e/ns/g/events", cluster.url(node));
        streams.push(EventStream::open(&http, &url).await);
    }

    // a takes the baton, then goes silent; b keeps heartbeating until it is Primary.
    let base = cluster.url(follower);
    assert_eq!(heartbeat(&http, &base, "a").await, Some(1), "a is the first member");
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(15), "b never became Primary");
        if heartbeat(&http, &base, "b").await == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    let mut seen = Vec::new();
    for stream in &mut streams {
        let mut events = Vec::new();
        while events.len() < 3 {
            let event = stream.next(Duration::from_secs(5)).await.expect("an event");
            events.push(event);
        }
        seen.push(events);
    }
    assert_eq!(seen[0], seen[1], "follower and leader publish the same decisions");
    let summary: Vec<_> = seen[0]
        .iter()
        .map(|(_, name, data)| (name.as_str(), data["reason"].clone(), data["roles"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("granted", json!("Vacant"), json!([{"session": "a", "role": "Primary"}])),
            (
                "granted",
                json!("Stale"),
                json!([{"session": "a", "role": "Secondary"}, {"session": "b", "role": "PendingPrimary"}])
            ),
            ("promoted", json!("Stale"), json!([{"session": "b", "role": "Primary"}])),
        ]
    );
    assert!(seen[0].windows(2).all(|w| w[0].0 < w[1].0), "ids increase");

    // The follower serves the same decisions as history, with the candidates of each grant.
    let history = send(&http, "GET", &format!("{base}/groups/e2e/ns/g/history"), None)
        .await
        .expect("history");
    assert_eq!(history.status, 200, "{history:?}");
    let decisions = history.body["decisions"].as_array().expect("decisions");
    assert_eq!(decisions.len(), 3);
    let handover = &decisions[1]["candidates"];
    assert_eq!(handover[0]["session"], json!("a"));
    assert_eq!(handover[0]["verdict"], json!("stale"));
    assert_eq!(handover[1]["verdict"], json!("chosen"));
}
