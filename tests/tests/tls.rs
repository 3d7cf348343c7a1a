//! TLS end to end: a cluster whose public API is HTTPS and whose Raft port requires mutual TLS
//! elects a leader, forwards and replicates over it; plain HTTP is not served; a peer without a
//! certificate from the cluster's CA cannot even reach the cluster-secret check.

use std::time::Duration;

use baton_e2e::{SECRET, TestCluster, TestTls, client_builder, groups_url, send};
use serde_json::json;

const ELECTION: Duration = Duration::from_secs(10);

fn identity_of(tls: &TestTls) -> reqwest::Identity {
    let mut pem = std::fs::read(&tls.cert).expect("cert");
    pem.extend(std::fs::read(&tls.key).expect("key"));
    reqwest::Identity::from_pem(&pem).expect("a PEM identity")
}

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
        .identity(identity_of(&intruder))
        .http2_prior_knowledge()
        .build()
        .expect("client");
    for (what, client) in
        [("no certificate", &no_cert), ("another CA's certificate", &foreign_cert)]
    {
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
        .identity(identity_of(&tls))
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let answer = member_cert.post(&url).body(vec![0u8; 8]).send().await;
    assert!(answer.is_err(), "the Raft port answered HTTP: {:?}", answer.map(|r| r.status()));
    assert_eq!(cluster.wait_converged(ELECTION).await, digest, "nothing changed");
}
