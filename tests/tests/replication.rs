//! Three real `baton` processes: writes through a follower, leader killed with SIGKILL, every
//! acknowledged write read back from every survivor, and restarted nodes catching up from the
//! log and from a snapshot.

use std::time::Duration;

use baton_e2e::{TestCluster, groups_url, send};
use serde_json::{Value, json};

const ELECTION: Duration = Duration::from_secs(10);
const CATCH_UP: Duration = Duration::from_secs(20);

fn group(id: &str) -> Value {
    json!({ "Id": id, "Name": format!("group {id}"), "FailoverTimeout": "00:00:30" })
}

/// Creates groups `prefix0..prefix{n}` through `via`, asserting each is acknowledged (201).
async fn create_groups(cluster: &TestCluster, via: u64, prefix: &str, n: usize) -> Vec<String> {
    let url = groups_url(&cluster.url(via), "v1");
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let reply =
            send(cluster.http(), "POST", &url, Some(group(&id))).await.expect("node answers");
        assert_eq!(reply.status, 201, "creating {id} via node {via}: {reply:?}");
        ids.push(id);
    }
    ids
}

/// Asserts every group in `ids` reads back from node `id`.
async fn assert_groups_readable(cluster: &TestCluster, id: u64, ids: &[String]) {
    let url = groups_url(&cluster.url(id), "v1");
    for g in ids {
        let reply =
            send(cluster.http(), "GET", &format!("{url}/{g}"), None).await.expect("node answers");
        assert_eq!(reply.status, 200, "group {g} via node {id}: {reply:?}");
        assert_eq!(reply.body["Id"], json!(g));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_follower_survives_leader_sigkill() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");

    // A write through a follower is forwarded to the leader, which serves it.
    let url = groups_url(&cluster.url(follower), "v1");
    let reply = send(cluster.http(), "POST", &url, Some(group("forwarded"))).await.expect("answer");
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.served_by, Some(leader), "the leader served the forwarded write");
    let mut acknowledged = vec!["forwarded".to_string()];
    acknowledged.extend(create_groups(&cluster, follower, "before-kill-", 20).await);

    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(ELECTION).await;
    assert_ne!(new_leader, leader);

    let survivor =
        cluster.live().into_iter().find(|id| *id != new_leader).expect("a surviving follower");
    acknowledged.extend(create_groups(&cluster, survivor, "after-kill-", 10).await);
    for id in cluster.live() {
        assert_groups_readable(&cluster, id, &acknowledged).await;
    }
    let digest = cluster.wait_converged(CATCH_UP).await;
    assert_eq!(digest["groups"], json!(acknowledged.len()), "nothing more, nothing less: {digest}");

    // The killed node comes back and catches up from the log.
    cluster.restart(leader);
    cluster.wait_for_leader(ELECTION).await;
    let digest = cluster.wait_converged(CATCH_UP).await;
    assert_eq!(digest["groups"], json!(acknowledged.len()));
    assert_groups_readable(&cluster, leader, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up_from_the_log() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    create_groups(&cluster, leader, "a-", 5).await;
    cluster.kill(follower);
    let written = create_groups(&cluster, leader, "b-", 30).await;
    cluster.restart(follower);
    cluster.wait_converged(CATCH_UP).await;
    let status = cluster.status(follower).await.expect("status");
    assert!(
        status["snapshot_index"].is_null(),
        "caught up from the log, no snapshot was needed: {status}"
    );
    assert_groups_readable(&cluster, follower, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up_from_a_snapshot_after_the_log_was_purged() {
    let mut cluster = TestCluster::start_with(
        3,
        &[("snapshot_logs_since_last", "20"), ("max_in_snapshot_log_to_keep", "0")],
    );
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    create_groups(&cluster, leader, "a-", 3).await;
    let follower_last =
        cluster.status(follower).await.expect("status")["last_log_index"].as_u64().expect("index");
    cluster.kill(follower);

    let written = create_groups(&cluster, leader, "b-", 60).await;
    // Wait until the leader has purged past everything the follower has.
    cluster
        .wait_until(
            CATCH_UP,
            "the leader purged its log past the follower's last entry",
            || async {
                let purged = cluster.status(leader).await?["purged_index"].as_u64()?;
                (purged > follower_last).then_some(())
            },
        )
        .await;

    cluster.restart(follower);
    cluster.wait_converged(CATCH_UP).await;
    let status = cluster.status(follower).await.expect("status");
    assert!(
        status["snapshot_index"].as_u64().is_some_and(|i| i > follower_last),
        "the follower installed a snapshot: {status}"
    );
    assert_groups_readable(&cluster, follower, &written).await;
}
