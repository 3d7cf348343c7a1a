//! TLS end to end: a cluster whose public API is HTTPS and whose Raft port requires mutual TLS
//! elects a leader, forwards and replicates over it; plain HTTP is not served; a peer without a
//! certificate from the cluster's CA, or with one that names no node, cannot even reach the
//! cluster-secret check; a node answering with another node's certificate is not talked to.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_e2e::{SECRET, TestCluster, TestTls, client_builder, groups_url, send};
use serde_json::json;

const ELECTION: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_works_end_to_end_and_refuses_peers_without_the_cas_certificate() {
    let (cluster, tls) = TestCluster::start_tls(3);
    // Electing a leader needs votes over the mutual-TLS Raft port.
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");

    // Over HTTPS, through a follower (forwarded to the leader over mutual TLS), then read back
    // from the third node once replicated.
    let created = send(
        cluster.http(),
        "POST",
        &groups_url(&cluster.url(follower), "v1"),
        Some(json!({"Id": "secure", "FailoverTimeout": "00:00:10"})),
    )
    .await
    .expect("answer");
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.served_by, Some(leader));
    let digest = cluster.wait_converged(ELECTION).await;
    assert_eq!(digest["groups"], 1);

    // Plain HTTP on the API port gets no answer.
    let api = &cluster.node(leader).api_addr;
    let plain = reqwest::Client::new().get(format!("http://{api}/healthz")).send().await;
    assert!(plain.is_err() || !plain.expect("reply").status().is_success());

    // The Raft port: with the cluster's CA trusted but no client certificate, or with a
    // certificate from another CA, the TLS handshake fails before any HTTP.
    let raft = &cluster.node(leader).raft_addr;
    let url = format!("https://{raft}/forward");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).expect("ca")).expect("pem");
    let dir = tempfile::tempdir().expect("tempdir");
    let intruder = TestTls::make(dir.path(), "intruder");
    let no_cert = client_builder(None, Duration::from_secs(5))
        .add_root_certificate(ca.clone())
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let foreign_cert = client_builder(None, Duration::from_secs(5))
        .add_root_certificate(ca.clone())
        .identity(intruder.node(1).identity())
        .http2_prior_knowledge()
        .build()
        .expect("client");
    // The cluster's CA signed it, but for something else than a node (an operator's tool).
    let not_a_node = client_builder(None, Duration::from_secs(5))
        .add_root_certificate(ca.clone())
        .identity(tls.issue("operator", "DNS:localhost,IP:127.0.0.1").identity())
        .http2_prior_knowledge()
        .build()
        .expect("client");
    for (what, client) in [
        ("no certificate", &no_cert),
        ("another CA's certificate", &foreign_cert),
        ("a certificate that names no node", &not_a_node),
    ] {
        let answer = client
            .post(&url)
            .header("x-baton-cluster-secret", SECRET)
            .body(vec![0u8; 8])
            .send()
            .await;
        assert!(answer.is_err(), "{what}: the Raft port answered {:?}", answer.map(|r| r.status()));
    }
    // With the cluster's certificate but not speaking the framed protocol (whose handshake
    // proves the cluster secret: cluster_ops.rs): both layers hold, and the port closes it.
    let member_cert = client_builder(None, Duration::from_secs(5))
        .add_root_certificate(ca)
        .identity(tls.node(1).identity())
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let answer = member_cert.post(&url).body(vec![0u8; 8]).send().await;
    assert!(answer.is_err(), "the Raft port answered HTTP: {:?}", answer.map(|r| r.status()));
    assert_eq!(cluster.wait_converged(ELECTION).await, digest, "nothing changed");
}

/// A host answering at a member's address with another member's certificate (both from the
/// cluster's CA) is not talked to: the leader, dialing node 4, expects a certificate naming
/// node 4, so the TLS handshake fails before the cluster secret is proven or anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_nodes_certificate_is_not_talked_to() {
    let (cluster, tls) = TestCluster::start_tls(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    // The impostor: node 2's certificate, on an address the cluster is told is node 4's.
    let node2 = tls.node(2);
    let files = baton_net::tls::TlsFiles { cert: node2.cert, key: node2.key, ca: tls.ca.clone() };
    let config = baton_net::tls::raft_server_config(&files).expect("TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let impostor = listener.local_addr().expect("addr").to_string();
    let (dialed, completed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (d, c) = (dialed.clone(), completed.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            d.fetch_add(1, Ordering::SeqCst);
            if acceptor.accept(stream).await.is_ok() {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    // Blocks until the learner catches up, which it never does: the answer is not awaited.
    let body = json!({"id": 4, "raft_addr": impostor, "api_addr": "127.0.0.1:9"});
    let add = cluster
        .http()
        .post(format!("{}/cluster/learners", cluster.url(leader)))
        .header("content-type", "application/json")
        .body(body.to_string());
    let _ = tokio::time::timeout(Duration::from_secs(3), add.send()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dialed.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dialed.load(Ordering::SeqCst) > 0, "the leader dialed node 4's address");
    // Time for the handshakes begun to end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(completed.load(Ordering::SeqCst), 0, "no TLS session with the impostor");
    // The cluster serves on.
    let created = send(
        cluster.http(),
        "POST",
        &groups_url(&cluster.url(leader), "v1"),
        Some(json!({"Id": "after-impostor", "FailoverTimeout": "00:00:10"})),
    )
    .await
    .expect("answer");
    assert_eq!(created.status, 201, "{created:?}");
}
