//! Operating a cluster of real processes: redirects, no-leader answers, membership changes,
//! operational endpoints, and refusals at start-up and on the Raft port.

use std::time::Duration;

use baton_e2e::{SECRET, TestCluster, groups_url, send};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ELECTION: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_param_answers_307_to_the_leader() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    let url = format!("{}?redirect", groups_url(&cluster.url(follower), "v1"));
    let reply =
        send(cluster.http(), "POST", &url, Some(json!({"Id": "g", "FailoverTimeout": "00:00:10"})))
            .await
            .expect("answer");
    assert_eq!(reply.status, 307, "{reply:?}");
    let location = reply.location.expect("a Location header");
    assert_eq!(location, format!("{}?redirect", groups_url(&cluster.url(leader), "v1")));
    // Following it (same method and body) works.
    let reply = send(
        cluster.http(),
        "POST",
        &location,
        Some(json!({"Id": "g", "FailoverTimeout": "00:00:10"})),
    )
    .await
    .expect("answer");
    assert_eq!(reply.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_writes_answer_503_with_a_json_body() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let survivor = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    for id in cluster.ids() {
        if id != survivor {
            cluster.kill(id);
        }
    }
    // The survivor's view of the old leader times out, then it can never win an election.
    let reply = cluster
        .wait_until(ELECTION, "the lone survivor answers 503", || async {
            let url = groups_url(&cluster.url(survivor), "v1");
            let r = send(
                cluster.http(),
                "POST",
                &url,
                Some(json!({"Id": "x", "FailoverTimeout": 10000})),
            )
            .await
            .ok()?;
            (r.status == 503).then_some(r)
        })
        .await;
    assert_eq!(reply.body["Error"], json!("The service is unavailable."), "{reply:?}");
    assert!(reply.body["Reason"].as_str().is_some_and(|r| r.contains("no leader")), "{reply:?}");
    // Once its election timeout passes it knows it has no leader, and says it is not ready.
    let ready = cluster
        .wait_until(ELECTION, "the survivor reports not ready", || async {
            let (code, body) = cluster.get_json(survivor, "/readyz").await?;
            (code == 503).then_some(body)
        })
        .await;
    assert_eq!(ready["reason"], json!("no leader is known"), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_is_added_promoted_and_a_node_removed() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let url = groups_url(&cluster.url(leader), "v1");
    send(
        cluster.http(),
        "POST",
        &url,
        Some(json!({"Id": "before-join", "FailoverTimeout": 10000})),
    )
    .await
    .expect("ok");

    let joiner = cluster.start_joiner(4);
    cluster
        .wait_until(ELECTION, "the new node answers", || async {
            cluster.get_json(joiner, "/healthz").await
        })
        .await;
    let follower =
        cluster.ids().into_iter().find(|id| *id != leader && *id != joiner).expect("a follower");
    let body = json!({"id": joiner, "raft_addr": cluster.node(joiner).raft_addr, "api_addr": cluster.node(joiner).api_addr});
    // Through a follower: admin writes are forwarded too.
    let added = send(
        cluster.http(),
        "POST",
        &format!("{}/cluster/learners", cluster.url(follower)),
        Some(body),
    )
    .await
    .expect("answer");
    assert_eq!(added.status, 200, "{added:?}");
    let learner = added.body["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["id"] == json!(joiner))
        .cloned();
    assert_eq!(learner.expect("listed")["voter"], json!(false));

    let promoted = send(
        cluster.http(),
        "POST",
        &format!("{}/cluster/nodes/{joiner}/promote", cluster.url(leader)),
        None,
    )
    .await
    .expect("answer");
    assert_eq!(promoted.status, 200, "{promoted:?}");
    let voters = promoted.body["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["voter"] == json!(true))
        .count();
    assert_eq!(voters, 4, "{promoted:?}");

    let removed = send(
        cluster.http(),
        "DELETE",
        &format!("{}/cluster/nodes/{follower}", cluster.url(joiner)),
        None,
    )
    .await
    .expect("answer");
    assert_eq!(removed.status, 200, "{removed:?}");
    let ids: Vec<u64> = removed.body["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["id"].as_u64().expect("id"))
        .collect();
    assert!(!ids.contains(&follower) && ids.contains(&joiner), "{ids:?}");

    // Removing it again is refused with a clear message.
    let again = send(
        cluster.http(),
        "DELETE",
        &format!("{}/cluster/nodes/{follower}", cluster.url(leader)),
        None,
    )
    .await
    .expect("answer");
    assert_eq!(again.status, 409, "{again:?}");

    // The joiner has the data written before it joined.
    let (code, g) = cluster
        .get_json(joiner, "/api/v1/tenants/e2e/namespaces/ns/clientfailover/groups/before-join")
        .await
        .expect("answers");
    assert_eq!(code, 200, "{g}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints_describe_the_node() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    for id in cluster.ids() {
        let (code, health) = cluster.get_json(id, "/healthz").await.expect("answers");
        assert_eq!((code, &health["id"]), (200, &json!(id)));
        let status = cluster.status(id).await.expect("answers");
        assert_eq!(status["leader"], json!(leader));
        assert_eq!(status["members"].as_array().expect("members").len(), 3);
        let expected_role = if id == leader { "leader" } else { "follower" };
        assert_eq!(status["role"], json!(expected_role));
        let (_, nodes) = cluster.get_json(id, "/cluster/nodes").await.expect("answers");
        assert_eq!(
            nodes.as_array().expect("list").iter().filter(|n| n["leader"] == json!(true)).count(),
            1
        );
    }
    cluster
        .wait_until(ELECTION, "every node is ready", || async {
            for id in cluster.ids() {
                if cluster.get_json(id, "/readyz").await?.0 != 200 {
                    return None;
                }
            }
            Some(())
        })
        .await;
    let url = groups_url(&cluster.url(leader), "v1");
    send(cluster.http(), "GET", &url, None).await.expect("answer");
    let metrics = cluster
        .http()
        .get(format!("{}/metrics", cluster.url(leader)))
        .send()
        .await
        .expect("answer");
    let text = metrics.text().await.expect("text");
    for needle in [
        "baton_raft_term",
        "baton_raft_leader",
        "baton_raft_committed_index",
        "baton_raft_applied_index",
        "baton_raft_apply_lag",
        "baton_http_requests_total{route=\"/api/{version}/tenants/{tenant}/namespaces/{namespace}/clientfailover/groups\",method=\"GET\",status=\"200\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_port_refuses_requests_without_the_cluster_secret() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let raft = &cluster.node(leader).raft_addr;
    let before = cluster.wait_converged(ELECTION).await;
    // HTTP: the Raft port speaks none; the connection is closed, whatever the headers say.
    for secret in [None, Some("wrong-secret-0123456789"), Some(SECRET)] {
        let mut req = cluster.http().post(format!("http://{raft}/forward")).body(vec![0u8; 16]);
        if let Some(s) = secret {
            req = req.header("x-baton-cluster-secret", s);
        }
        let answer = req.send().await;
        assert!(answer.is_err(), "/forward with {secret:?}: {answer:?}");
    }
    // Framed connections: refused before any request is read.
    for secret in [&b""[..], b"wrong-secret-0123456789", &SECRET.as_bytes()[..SECRET.len() - 1]] {
        let mut stream = raft_connection(raft, leader, secret).await;
        let answer = stream.read_u8().await.expect("an answer to the proof");
        assert_eq!(answer, baton_net::REFUSED);
        assert_eq!(stream.read(&mut [0u8; 8]).await.expect("closed"), 0, "then closed");
    }
    // With the secret but garbage in the body, of an AppendEntries and of a forwarded batch:
    // rejected with a reason, nothing applied.
    let mut stream = raft_connection(raft, leader, SECRET.as_bytes()).await;
    assert_eq!(stream.read_u8().await.expect("an answer to the proof"), baton_net::ACCEPTED);
    let mut servers_proof = [0u8; baton_net::handshake::PROOF_LEN];
    stream.read_exact(&mut servers_proof).await.expect("the node's own proof");
    for kind in [1u8, baton_net::FORWARD] {
        let mut frame = vec![kind];
        frame.extend_from_slice(&64u32.to_be_bytes());
        frame.extend_from_slice(&[0xffu8; 64]);
        stream.write_all(&frame).await.expect("send");
        assert_eq!(stream.read_u8().await.expect("status"), 1, "kind {kind} rejected");
        let mut reason = vec![0u8; stream.read_u32().await.expect("length") as usize];
        stream.read_exact(&mut reason).await.expect("reason");
        assert!(String::from_utf8_lossy(&reason).contains("cannot decode"), "{reason:?}");
    }
    assert_eq!(cluster.wait_converged(ELECTION).await, before, "the state did not change");
    // The public port does not serve Raft.
    let resp = cluster
        .http()
        .post(format!("{}/raft/append", cluster.url(leader)))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_open_files_limit_cannot_hold_its_connections_refuses_to_start() {
    // Two listeners of ten million connections each: no hard limit allows that many files.
    let mut cluster = TestCluster::start_with(1, &[("max_connections", "10000000")]);
    let status = cluster.wait_exit(1, Duration::from_secs(10));
    assert!(!status.success());
    let log = cluster.log(1);
    assert!(log.contains("open-files limit") && log.contains("max_connections"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_refuses_another_clusters_data_directory_and_touches_nothing() {
    let mut cluster = TestCluster::start(1);
    cluster.wait_for_leader(ELECTION).await;
    cluster.kill(1);
    let listing = |dir: &std::path::Path| {
        let mut entries: Vec<_> = walk(dir);
        entries.sort();
        entries
    };
    let before = listing(&cluster.data_dir(1));
    cluster
        .rewrite_config(1, |c| c.replace("cluster_name = \"e2e\"", "cluster_name = \"another\""));
    cluster.restart(1);
    let status = cluster.wait_exit(1, Duration::from_secs(10));
    assert!(!status.success());
    let log = cluster.log(1);
    assert!(log.contains("belongs to cluster \"e2e\"") && log.contains("\"another\""), "{log}");
    assert_eq!(listing(&cluster.data_dir(1)), before, "the directory was not touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_refuses_a_data_directory_it_cannot_write() {
    let mut cluster = TestCluster::start(1);
    cluster.wait_for_leader(ELECTION).await;
    cluster.kill(1);
    let blocker = cluster.data_dir(1).with_extension("file");
    std::fs::write(&blocker, "not a directory").expect("write");
    let bad = blocker.join("data");
    cluster.rewrite_config(1, |c| {
        c.lines()
            .map(|l| {
                if l.starts_with("data_dir") {
                    format!("data_dir = \"{}\"", bad.display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    cluster.restart(1);
    assert!(!cluster.wait_exit(1, Duration::from_secs(10)).success());
    assert!(cluster.log(1).contains("cannot be written"), "{}", cluster.log(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_timings_are_refused_naming_the_key() {
    let mut cluster = TestCluster::start_with(1, &[("heartbeat_interval_ms", "300")]);
    let status = cluster.wait_exit(1, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let log = cluster.log(1);
    assert!(
        log.contains("election_timeout_min_ms") && log.contains("heartbeat_interval_ms"),
        "{log}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        if meta.is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            let modified = meta
                .modified()
                .expect("mtime")
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after epoch");
            out.push((entry.path().display().to_string(), modified.as_nanos() as u64 ^ meta.len()));
        }
    }
    out
}

/// A framed connection to node `node`'s Raft port that has answered its challenge with a proof
/// made with `secret` (the port's answer is left to read).
async fn raft_connection(raft: &str, node: u64, secret: &[u8]) -> tokio::net::TcpStream {
    use baton_net::handshake::{Challenge, NONCE_LEN, Side, proof};
    let mut stream = tokio::net::TcpStream::connect(raft).await.expect("connect");
    let client_nonce = [3u8; NONCE_LEN];
    let opening = [baton_net::PREFACE, &client_nonce, &node.to_be_bytes()].concat();
    stream.write_all(&opening).await.expect("preface");
    let mut server_nonce = [0u8; NONCE_LEN];
    stream.read_exact(&mut server_nonce).await.expect("the node's challenge");
    let answer = proof(secret, Side::Client, &Challenge { node, client_nonce, server_nonce });
    stream.write_all(&answer).await.expect("send the proof");
    stream
}
