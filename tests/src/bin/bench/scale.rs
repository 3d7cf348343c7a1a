//! Scale, on a fresh cluster that keeps its whole log: RSS per node with many groups of 3
//! sessions, and a node holding a long log SIGKILLed and restarted, to ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_e2e::{TestCluster, admin_client, send};
use serde_json::json;

use crate::load::drive;
use crate::{ELECTION, GROUPS};

/// Clients filling the log for the restart measurement.
const FILL_CLIENTS: u64 = 4;
/// How long the cluster is left idle after the groups are created.
const IDLE: Duration = Duration::from_secs(4);
/// Readings of the leader's last detector pass, 100 ms apart, after the idle time.
const PASS_SAMPLES: usize = 10;

/// A fresh cluster that keeps its whole log (no snapshots): `groups` groups of 3 sessions, RSS
/// per node, then the log filled to `entries` entries (writes that change nothing), and a
/// follower killed and restarted: time until it is ready again. Returns the table's lines.
pub(crate) async fn scale_measurements(groups: usize, entries: u64) -> Vec<String> {
    let keep = (entries * 2).to_string();
    let mut cluster = TestCluster::start_with(
        3,
        &[
            ("rate_limit_per_second", "0"),
            ("snapshot_logs_since_last", keep.as_str()),
            ("max_in_snapshot_log_to_keep", keep.as_str()),
        ],
    );
    let leader = cluster.wait_for_leader(ELECTION).await;
    let url = cluster.url(leader);
    let mut lines = Vec::new();
    let started = Instant::now();
    let http = Arc::new(admin_client(Duration::from_secs(30)));
    {
        let (http, url) = (http.clone(), url.clone());
        drive(groups as u64, 64, move |i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let body = json!({
                    "id": format!("m{i}"),
                    "failover_timeout_ms": 30_000,
                    "members": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
                });
                let _ = send(&http, "POST", &format!("{url}/groups/bench/mem"), Some(body)).await;
            }
        })
        .await;
    }
    let created = started.elapsed();
    // Idle: what the leader spends with nothing asked of it (its detector's passes over every
    // group, the lease), measured while the memory settles.
    let leader_pid = cluster.pid(leader);
    let cpu_before = leader_pid.map(cpu_seconds);
    tokio::time::sleep(IDLE).await;
    let idle_cpu =
        leader_pid.map(cpu_seconds).zip(cpu_before).map(|(after, before)| after - before);
    let mut passes = Vec::new();
    for _ in 0..PASS_SAMPLES {
        let status = cluster.status(leader).await;
        passes.extend(status.and_then(|s| s["detector_pass_us"].as_u64()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    passes.sort_unstable();
    let rss = rss_per_node(&cluster);
    eprintln!("bench: {groups} groups in {created:?}; RSS {rss:?} MiB");
    lines.push(format!(
        "| RSS per node (MiB) with {groups} groups of 3 sessions (nodes 1, 2, 3) | {} |",
        rss.join(", ")
    ));
    lines.push(format!(
        "| creating {groups} groups with 3 members each, 64 clients | {:.0} groups/s |",
        groups as f64 / created.as_secs_f64()
    ));
    lines.push(format!(
        "| leader's detector pass over {groups} steady groups (busy time, median of {PASS_SAMPLES}) | {} |",
        passes.get(passes.len() / 2).map_or("not measured".into(), |us| {
            format!("{:.2} ms", *us as f64 / 1_000.0)
        })
    ));
    lines.push(format!(
        "| leader's CPU while idle with {groups} groups of 3 sessions ({} s) | {} |",
        IDLE.as_secs(),
        idle_cpu.map_or("not measured".into(), |cpu| {
            format!("{:.1} % of a core", cpu / IDLE.as_secs_f64() * 100.0)
        })
    ));

    // Fill the log: re-creating an existing group with its own configuration changes nothing
    // but is a committed, synced request like any other. The leader proposes concurrent
    // requests as one entry, so few clients fill the log with the most entries: keep going
    // until it holds `entries`.
    let fill_started = Instant::now();
    let from = cluster.status(leader).await.expect("status")["last_log_index"].as_u64();
    let mut written = 0;
    let log = loop {
        let status = cluster.status(leader).await.expect("status");
        let have = status["last_log_index"].as_u64().unwrap_or_default();
        if have >= entries {
            break have;
        }
        let round = (entries - have).min(50_000);
        let (http, url) = (http.clone(), url.clone());
        drive(round, FILL_CLIENTS, move |i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let body = json!({"Id": format!("f{}", i % 64), "FailoverTimeout": 30_000});
                let _ = send(&http, "POST", &format!("{url}{GROUPS}"), Some(body)).await;
            }
        })
        .await;
        written += round;
    };
    let filled = fill_started.elapsed();
    eprintln!("bench: log at {log} entries after {filled:?} and {written} writes");
    lines.push(format!(
        "| filling the log to {log} entries ({written} no-op writes, {FILL_CLIENTS} clients) | {:.0} entries/s |",
        log.saturating_sub(from.unwrap_or_default()) as f64 / filled.as_secs_f64()
    ));
    let rss = rss_per_node(&cluster);
    lines.push(format!("| RSS per node (MiB) after {log} log entries | {} |", rss.join(", ")));

    // A follower holding the whole log is killed and restarted: time until /readyz says ready.
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    cluster.kill(follower);
    let restarted = Instant::now();
    cluster.restart(follower);
    let ready = loop {
        if cluster.get_json(follower, "/readyz").await.is_some_and(|(code, _)| code == 200) {
            break Some(restarted.elapsed());
        }
        if restarted.elapsed() > Duration::from_secs(120) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    lines.push(format!(
        "| restart (SIGKILL) of a node holding {log} log entries → ready | {} |",
        ready.map_or("not ready in 120 s".into(), |d| format!("{} ms", d.as_millis()))
    ));
    lines
}

/// Every node's resident memory, in whole MiB.
fn rss_per_node(cluster: &TestCluster) -> Vec<String> {
    let pids = cluster.ids().into_iter().map(|id| cluster.pid(id));
    pids.map(|pid| format!("{:.0}", pid.map_or(f64::NAN, rss_mib))).collect()
}

/// The CPU time a process has used so far (user and system), in seconds, from /proc (counted
/// in the kernel's USER_HZ, 100 per second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses: utime and stime are
    // the 12th and 13th of them.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// A node's resident memory, in MiB, from /proc.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
