//! The stock OpenStack client (`python-cinderclient`'s `cinder` command, from PyPI) against a
//! real three-node cluster, with token authentication pointed at a Baton node: it creates a
//! group type and a group, enables replication, lists the targets, fails over, fails back and
//! disables replication, while two storage backends heartbeat. `scripts/setup.sh` installs the
//! client.

use std::process::Command;
use std::time::Duration;

use baton_e2e::{TestCluster, client_with_token, send};
use serde_json::json;

const ELECTION: Duration = Duration::from_secs(10);
const PROJECT: &str = "7ccf4863071f44aeb8f141f65780c51b";

struct Cinder {
    auth_url: String,
    token: String,
}

impl Cinder {
    /// Runs `cinder ARGS` at microversion 3.38 and returns its standard output.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("cinder")
            .args(args)
            .env("OS_AUTH_TYPE", "token")
            .env("OS_TOKEN", &self.token)
            .env("OS_AUTH_URL", &self.auth_url)
            .env("OS_PROJECT_ID", PROJECT)
            .env("OS_VOLUME_API_VERSION", "3.38")
            .output()
            .expect("the cinder command runs (scripts/setup.sh installs python-cinderclient)");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "cinder {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The value of `field` in a `cinder ...-show` table.
    fn field(&self, args: &[&str], field: &str) -> String {
        let table = self.run(args);
        table
            .lines()
            .find_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() > 2 && cells[1] == field).then(|| cells[2].to_string())
            })
            .unwrap_or_else(|| panic!("no {field} in\n{table}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_cinder_client_fails_over_and_back_a_replicated_group() {
    // This test is about the stock client's wire compatibility, not about how fast Baton
    // elects. The stock client retries nothing, and each of its runs is a second of Python
    // start-up on two cores that also run three debug nodes: with the default 80-160 ms
    // election timeouts, full suite runs twice failed a step with 503 (no leader) or 504
    // (outcome unknown), which is what an election mid-step answers. Timings that ride out
    // 400 ms of starvation (still valid for groups with a 1 s failover timeout) keep the test
    // about the client.
    let cluster = TestCluster::start_with(
        3,
        &[
            ("heartbeat_interval_ms", "50"),
            ("election_timeout_min_ms", "200"),
            ("election_timeout_max_ms", "400"),
        ],
    );
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    let r = send(
        cluster.http(),
        "POST",
        &format!("{}/identities", cluster.url(1)),
        Some(json!({"name": "storage-ops", "role": "member", "tenant": PROJECT})),
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 201, "{r:?}");
    let token = r.body["token"].as_str().expect("token").to_string();
    // Pointed at a follower: it forwards every write to the leader.
    let cinder =
        Cinder { auth_url: format!("{}/identity/v3", cluster.url(follower)), token: token.clone() };

    cinder.run(&["group-type-create", "replicated"]);
    cinder.run(&[
        "group-type-key",
        "replicated",
        "set",
        "consistent_group_replication_enabled=<is> True",
    ]);
    let specs = cinder.field(&["group-type-show", "replicated"], "group_specs");
    assert!(specs.contains("consistent_group_replication_enabled : <is> True"), "{specs}");
    let group = cinder.field(&["group-create", "--name", "db", "replicated", "vt-1"], "id");
    assert_eq!(cinder.field(&["group-show", &group], "replication_status"), "disabled");

    // Two storage backends join the group and heartbeat (AVEVA's session endpoints).
    let http = client_with_token(Some(&token), Duration::from_secs(10));
    let sessions = format!(
        "{}/api/v1/tenants/{PROJECT}/namespaces/cinder/clientfailover/groups/{group}/clientsessions",
        cluster.url(leader)
    );
    for backend in ["array-a", "array-b"] {
        let r = send(&http, "POST", &sessions, Some(json!({"Id": backend}))).await.expect("answer");
        assert_eq!(r.status, 201, "{r:?}");
    }
    let heartbeat = |backend: &'static str| {
        let (http, url) = (http.clone(), format!("{sessions}/{backend}/heartbeat"));
        async move {
            let r = send(&http, "POST", &url, Some(json!({"FailoverScore": 100})))
                .await
                .expect("answer");
            assert_eq!(r.status, 200, "{r:?}");
            r.body["Role"].as_u64().expect("a role")
        }
    };
    assert_eq!(heartbeat("array-a").await, 1, "the first backend becomes active");
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    heartbeat("array-b").await;

    cinder.run(&["group-enable-replication", &group]);
    assert_eq!(cinder.field(&["group-show", &group], "replication_status"), "enabled");
    let targets = cinder.run(&["group-list-replication-targets", &group]);
    assert!(targets.contains("array-b") && !targets.contains("array-a"), "{targets}");

    // Fail over to array-b: the hand-over completes as the backends heartbeat.
    cinder.run(&["group-failover-replication", "--secondary-backend-id", "array-b", &group]);
    assert_eq!(cinder.field(&["group-show", &group], "replication_status"), "failing-over");
    let status = wait_for(&cinder, &group, "failed-over", &heartbeat).await;
    assert_eq!(status, "failed-over");
    let targets = cinder.run(&["group-list-replication-targets", &group]);
    assert!(targets.contains("array-a") && !targets.contains("array-b"), "{targets}");

    // Fail back to the primary with "default".
    cinder.run(&["group-failover-replication", "--secondary-backend-id", "default", &group]);
    assert_eq!(wait_for(&cinder, &group, "enabled", &heartbeat).await, "enabled");

    cinder.run(&["group-disable-replication", &group]);
    assert_eq!(cinder.field(&["group-show", &group], "replication_status"), "disabled");
    cluster.wait_converged(ELECTION).await;
}

/// Heartbeats both backends (as real ones would, every 1.6 s) until `group-show` reports
/// `want`, for at most 30 s; returns the last status.
async fn wait_for<F, Fut>(cinder: &Cinder, group: &str, want: &str, heartbeat: &F) -> String
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let mut status = String::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        heartbeat("array-a").await;
        heartbeat("array-b").await;
        status = cinder.field(&["group-show", group], "replication_status");
        if status == want {
            break;
        }
    }
    status
}
