//! Three real `baton` processes: writes through a follower, leader killed with SIGKILL, every
//! acknowledged write read back from every survivor, and restarted nodes catching up from the
//! log (also megabytes of it) and from a snapshot.

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
    // The survivors found the leader's Raft port closed and campaigned without waiting out
    // their election timeouts.
    let campaigned = cluster.live().into_iter().any(|id| {
        cluster.log(id).contains("the leader's Raft port refuses connections; campaigning at once")
    });
    assert!(campaigned, "no survivor campaigned at once:\n{}", cluster.log(new_leader));

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
async fn lone_writes_reach_followers_before_the_leaders_sync_and_every_node_applies_them() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let written = create_groups(&cluster, leader, "early-", 30).await;
    let status = cluster.status(leader).await.expect("status");
    let early = status["appends_sent_early"].as_u64().expect("a count");
    // Each write waits for the one before, so a follower is in step at every append but the
    // first after a leader's election, which openraft proposes itself.
    assert!(early >= 20, "most of 30 lone writes were sent early: {status}");
    cluster.wait_converged(CATCH_UP).await;
    for id in cluster.ids() {
        assert_groups_readable(&cluster, id, &written).await;
    }
    let (_, metrics) = cluster.get_json(leader, "/metrics").await.expect("metrics");
    let counted = metrics.as_str().and_then(|text| {
        text.lines().find_map(|line| line.strip_prefix("baton_raft_early_appends_total "))
    });
    let counted = counted.and_then(|n| n.trim().parse::<u64>().ok());
    assert!(counted.is_some_and(|n| n >= early), "the metric counts them too: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_early_replication_off_a_leader_sends_nothing_before_its_sync() {
    let cluster = TestCluster::start_with(3, &[("early_replication", "false")]);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let written = create_groups(&cluster, leader, "late-", 10).await;
    let status = cluster.status(leader).await.expect("status");
    assert_eq!(status["appends_sent_early"], json!(0), "{status}");
    cluster.wait_converged(CATCH_UP).await;
    assert_groups_readable(&cluster, leader, &written).await;
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

/// openraft 0.9 gives every AppendEntries only the heartbeat interval (25 ms here) and sends the
/// same range again after a timeout. A follower that missed megabytes of log was sent hundreds
/// of large entries at once, could not take them in time, and never caught up: with the other
/// follower gone, the cluster could not commit again. Each AppendEntries now carries a bounded
/// number of bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_by_megabytes_of_log_catches_up_and_carries_the_quorum() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let followers: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    let (behind, other) = (followers[0], followers[1]);
    cluster.kill(behind);

    // 1,200 groups with 8 KB of text each, 16 at a time, so the leader proposes several per
    // entry: about 10 MB of log the stopped follower misses.
    let text = "x".repeat(4_000);
    let url = groups_url(&cluster.url(leader), "v1");
    let ids: Vec<String> = (0..1_200).map(|i| format!("big-{i}")).collect();
    for chunk in ids.chunks(16) {
        let writes = chunk.iter().map(|id| {
            let body = json!({ "Id": id, "Name": text, "Description": text, "FailoverTimeout": "00:00:30" });
            let (http, url) = (cluster.http().clone(), url.clone());
            async move { send(&http, "POST", &url, Some(body)).await }
        });
        for (id, reply) in chunk.iter().zip(futures::future::join_all(writes).await) {
            assert_eq!(reply.expect("the leader answers").status, 201, "creating {id}");
        }
    }

    // The restarted follower is the leader's only partner once the other one is killed: a
    // write commits only after it has taken the whole log.
    cluster.restart(behind);
    cluster.kill(other);
    cluster
        .wait_until(CATCH_UP, "a write commits with the follower that was behind", || async {
            let reply = send(cluster.http(), "POST", &url, Some(group("after"))).await.ok()?;
            // 200: an earlier attempt that timed out had committed it.
            matches!(reply.status, 200 | 201).then_some(())
        })
        .await;
    cluster.wait_converged(CATCH_UP).await;
    let sample: Vec<String> = ids.iter().step_by(97).cloned().chain(["after".into()]).collect();
    assert_groups_readable(&cluster, behind, &sample).await;
}
