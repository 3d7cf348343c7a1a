//! The `baton` client commands, as the real binary, against a real three-node cluster: output
//! for people and `--json` for scripts, exit codes, a forced failover that waits, following
//! events across a node that cannot be reached, identities, and help with examples.

use std::process::Output;
use std::time::Duration;

use baton_e2e::{ADMIN_TOKEN, TestCluster, admin_client, baton_bin, send};
use serde_json::{Value, json};

const ELECTION: Duration = Duration::from_secs(10);
const AVEVA_G: &str = "/api/v1/tenants/e2e/namespaces/ns/clientfailover/groups/g";

/// Runs `baton ARGS` with `url` and the administrator's token (unless `token` replaces it),
/// off the async runtime.
async fn baton(url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let (url, token) = (url.to_string(), token.unwrap_or(ADMIN_TOKEN).to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(baton_bin())
            .args(&args)
            .env("BATON_URL", url)
            .env("BATON_TOKEN", token)
            .output()
            .expect("baton runs")
    })
    .await
    .expect("joined")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

fn expect(out: &Output, want: i32) -> String {
    assert_eq!(
        code(out),
        want,
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

/// Heartbeats `session` of group g every 150 ms, for `rounds` rounds, in the background.
fn keep_alive(base: String, session: &'static str, rounds: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = admin_client(Duration::from_secs(5));
        let url = format!("{base}{AVEVA_G}/clientsessions/{session}/heartbeat");
        for _ in 0..rounds {
            let _ = send(&http, "POST", &url, Some(json!({"FailoverStatus": 100}))).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_run_the_cluster_from_the_command_line() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    let url = cluster.url(follower);

    // Cluster status through a follower: every member, the leader named.
    let status = expect(&baton(&url, None, &["cluster", "status"]).await, 0);
    assert_eq!(status.matches("voter").count(), 3, "{status}");
    assert!(status.contains(&format!("leader {leader}")), "{status}");

    // Groups: create, conflict, show (table and JSON), list.
    let created = baton(
        &url,
        None,
        &["groups", "create", "e2e/ns/g", "--timeout-ms", "1000", "--member", "a", "--member", "b"],
    )
    .await;
    assert!(expect(&created, 0).contains("holder      -"));
    let same = baton(&url, None, &["groups", "create", "e2e/ns/g", "--timeout-ms", "1000"]).await;
    expect(&same, 0); // the same configuration again: nothing to do
    let other = baton(&url, None, &["groups", "create", "e2e/ns/g", "--timeout-ms", "2000"]).await;
    assert_eq!(code(&other), 4, "another configuration under the same id conflicts");
    keep_alive(url.clone(), "a", 4).await.expect("a heartbeated");
    // a keeps heartbeating until the forced failover: were it silent for the group's 1 s
    // timeout, the detector would hand the baton to b on its own before the operator asks.
    let a = keep_alive(url.clone(), "a", 200);
    let b = keep_alive(url.clone(), "b", 200);
    let show = expect(&baton(&url, None, &["groups", "show", "e2e/ns/g", "--json"]).await, 0);
    let group: Value = serde_json::from_str(&show).expect("JSON");
    assert_eq!(group["holder"]["session"], json!("a"));
    let list = expect(&baton(&url, None, &["groups", "list", "e2e/ns"]).await, 0);
    assert!(list.lines().any(|l| l.starts_with("g ") && l.contains("a (Primary)")), "{list}");

    // Sessions.
    let sessions = expect(&baton(&url, None, &["sessions", "list", "e2e/ns/g"]).await, 0);
    assert!(sessions.lines().any(|l| l.starts_with("a ") && l.contains("Primary")), "{sessions}");
    let one = expect(&baton(&url, None, &["sessions", "show", "e2e/ns/g", "b"]).await, 0);
    assert!(one.contains("role        Secondary"), "{one}");

    // A forced failover that waits: both heartbeat, and the operator moves the baton to b.
    let url_for_events = format!("http://127.0.0.1:1,{url}");
    let follow = {
        let url = url_for_events.clone();
        tokio::spawn(async move {
            baton(&url, None, &["events", "follow", "e2e/ns/g", "--count", "2", "--seconds", "20"])
                .await
        })
    };
    // The stream carries only what is applied after it connects, and nothing says when it has:
    // give the process time to start and connect (500 ms was too little on a loaded machine,
    // where the hand-over's first event came before the stream).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let moved = baton(&url, None, &["failover", "e2e/ns/g", "--wait", "15"]).await;
    a.abort();
    assert!(expect(&moved, 0).contains("b holds the baton of e2e/ns/g"));
    let events = expect(&follow.await.expect("followed"), 0);
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(lines.len(), 2, "{events}");
    assert!(lines[0].contains("handover_started") && lines[0].contains("Forced"), "{events}");
    assert!(lines[1].contains("b→PendingPrimary") || lines[1].contains("relinquished"), "{events}");
    b.abort();

    // History names the candidates.
    let history = expect(&baton(&url, None, &["groups", "history", "e2e/ns/g"]).await, 0);
    assert!(history.contains("granted") && history.contains("chosen"), "{history}");

    // Override, then delete.
    let pinned =
        baton(&url, None, &["override", "e2e/ns/g", "a", "primary", "--for-seconds", "60"]).await;
    expect(&pinned, 0);
    expect(&baton(&url, None, &["groups", "delete", "e2e/ns/g"]).await, 0);

    // Exit codes.
    assert_eq!(code(&baton(&url, None, &["groups", "show", "e2e/ns/g"]).await), 3, "deleted");
    assert_eq!(code(&baton(&url, None, &["groups", "show", "nonsense"]).await), 2, "usage");
    assert_eq!(code(&baton(&url, Some("baton_x.00"), &["cluster", "status"]).await), 5, "token");
    let nowhere = baton("http://127.0.0.1:1", None, &["cluster", "status"]).await;
    assert_eq!(code(&nowhere), 1, "unreachable");

    // Identities.
    let alice = baton(
        &url,
        None,
        &["tokens", "create", "--name", "alice", "--role", "member", "--tenant", "e2e"],
    )
    .await;
    let alice = expect(&alice, 0);
    let token = alice.lines().last().expect("the token").trim().to_string();
    assert!(token.starts_with("baton_alice."), "{alice}");
    let denied = baton(&url, Some(&token), &["cluster", "status"]).await;
    assert_eq!(code(&denied), 5, "members do not administer the cluster");
    let listed = expect(&baton(&url, None, &["tokens", "list", "--json"]).await, 0);
    let listed: Value = serde_json::from_str(&listed).expect("JSON");
    assert!(listed.as_array().is_some_and(|ids| ids.iter().any(|i| i["name"] == json!("alice"))));
    let revoked = expect(&baton(&url, None, &["tokens", "revoke", "alice"]).await, 0);
    assert!(revoked.contains("revoked"), "{revoked}");

    // Help, with examples and exit codes.
    for args in [&["--help"][..], &["groups", "--help"], &["failover", "--help"]] {
        let help = expect(&baton(&url, None, args).await, 0);
        assert!(help.contains("Example"), "{args:?}: {help}");
    }
    let help = expect(&baton(&url, None, &["events", "--help"]).await, 0);
    assert!(help.contains("Exit codes"), "{help}");
}
