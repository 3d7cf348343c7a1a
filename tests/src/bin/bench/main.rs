//! `bench`: Baton's benchmark harness. Starts a local three-node cluster (real processes on
//! loopback, rate limits off), drives it over HTTP with many concurrent simulated clients on
//! keep-alive connections, and reports ops/s and latency p50/p99/p999 for:
//! - AVEVA heartbeats that change no role (1, 16, 64, 256 clients), and the same heartbeats
//!   streamed on WebSockets (16, 64 clients);
//! - durable writes: session creation, each synced on a quorum (1, 64, 256 clients), and the
//!   same from clients dealt over all three nodes (64, 256 clients);
//! - linearizable reads (64 clients);
//! - failover detection: from a Primary's last heartbeat to its successor being told
//!   PendingPrimary, over many groups;
//! - Baton leader SIGKILL to the first successful write (repeated);
//! - scale, on a fresh cluster that keeps its whole log: RSS per node with 100,000 groups of 3
//!   sessions, and a node holding 1,000,000 log entries SIGKILLed and restarted, to ready.
//!
//! Before and after the measurements it measures the machine itself, a disk sync and a wake-up
//! over loopback (`machine.rs`): this machine kind's speed changes from day to day, and the
//! table says which speed its figures were taken at.
//!
//! Each load runs a warm-up, then a fixed duration, bounded by a request count (`load.rs`),
//! over connections of the simulated callers' own (`callers.rs`); `scale.rs` holds the scale
//! measurements and `plot.rs` draws the plot. This file reads the arguments, runs the loads on
//! a cluster and writes the table. This is a measuring tool, not a test: it asserts nothing
//! and always exits 0 unless the cluster fails. `scripts/bench.sh` runs it and writes
//! `BENCHMARKS.md`. A load that failed requests leaves the nodes' logs behind, in
//! `baton-bench-<pid>/` in the system's temporary directory.
//!
//! With `--abuse`, it runs only the hostile-input suite instead (`abuse.rs`): three phases of
//! `--seconds` each, before, during and after the attacks, written to `--markdown FILE`.
//!
//! Usage: bench [--seconds N] [--quick] [--markdown FILE] [--plot FILE.svg] [--abuse]
//!              [--scale-groups N] [--log-entries N] [--scale-only] [--plot-from TABLE]
//!              [--only heartbeat,write,read,failover,kill,scale] [--node KEY=VALUE]...
//!
//! `--node` sets a key of the load cluster's node configuration (e.g.
//! `--node early_replication=false`), to compare settings on one build.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_e2e::{TestCluster, admin_client, send};
use serde_json::json;

mod abuse;
mod callers;
mod load;
mod machine;
mod plot;
mod scale;

use callers::{conns, conns_over, post, streams};
use load::{Row, drive, load};
use machine::MachineSpeed;
use plot::{plot, points_of_table};
use scale::scale_measurements;

const ELECTION: Duration = Duration::from_secs(10);
/// Leader kills in a full run: enough for a median and a worst case worth reporting.
const KILL_ROUNDS: usize = 20;
const GROUPS: &str = "/api/v1/tenants/bench/namespaces/ns/clientfailover/groups";
/// The heartbeat groups kept while the writes are measured.
const WRITE_NEIGHBOURS: u64 = 4096;

struct Args {
    seconds: u64,
    quick: bool,
    markdown: Option<std::path::PathBuf>,
    plot: Option<std::path::PathBuf>,
    /// Groups (of 3 sessions) for the memory measurement.
    scale_groups: usize,
    /// Log entries for the restart measurement.
    log_entries: u64,
    /// Only re-plot the load rows of a saved table (BENCHMARKS.md).
    plot_from: Option<std::path::PathBuf>,
    /// Only these measurements (all when empty).
    only: Vec<String>,
    /// Node configuration keys set for the load cluster.
    node: Vec<(String, String)>,
    /// Run the hostile-input suite instead.
    abuse: bool,
}

impl Args {
    fn runs(&self, measurement: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|m| m == measurement)
    }
}

const MEASUREMENTS: [&str; 6] = ["heartbeat", "write", "read", "failover", "kill", "scale"];

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 5,
        quick: false,
        markdown: None,
        plot: None,
        scale_groups: 100_000,
        log_entries: 1_000_000,
        plot_from: None,
        only: Vec::new(),
        node: Vec::new(),
        abuse: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                args.seconds = it.next().and_then(|v| v.parse().ok()).ok_or("--seconds N")?
            }
            "--quick" => args.quick = true,
            "--abuse" => args.abuse = true,
            "--scale-only" => args.only = vec!["scale".into()],
            "--only" => {
                let list = it.next().ok_or("--only LIST")?;
                args.only = list.split(',').map(str::to_string).collect();
                if let Some(bad) = args.only.iter().find(|m| !MEASUREMENTS.contains(&m.as_str())) {
                    return Err(format!("--only: unknown measurement {bad}"));
                }
            }
            "--plot-from" => args.plot_from = Some(it.next().ok_or("--plot-from TABLE")?.into()),
            "--markdown" => args.markdown = Some(it.next().ok_or("--markdown FILE")?.into()),
            "--plot" => args.plot = Some(it.next().ok_or("--plot FILE")?.into()),
            "--scale-groups" => {
                args.scale_groups =
                    it.next().and_then(|v| v.parse().ok()).ok_or("--scale-groups N")?
            }
            "--log-entries" => {
                args.log_entries =
                    it.next().and_then(|v| v.parse().ok()).ok_or("--log-entries N")?
            }
            "--node" => {
                let pair = it.next().ok_or("--node KEY=VALUE")?;
                let (key, value) = pair.split_once('=').ok_or("--node KEY=VALUE")?;
                args.node.push((key.into(), value.into()));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    if let Some(table) = &args.plot_from {
        let text = std::fs::read_to_string(table).expect("read the table");
        let out = args.plot.clone().unwrap_or_else(|| "BENCHMARKS.svg".into());
        std::fs::write(out, plot(&points_of_table(&text))).expect("write the plot");
        return;
    }
    let duration = Duration::from_secs(args.seconds);
    let warmup = Duration::from_secs(1);
    let before = machine_speed("before the measurements").await;
    if args.abuse {
        let report = abuse::abuse(duration).await;
        let after = machine_speed("after them").await;
        let text = format!("Machine speed: {before}; {after}.\n\n{report}");
        match &args.markdown {
            Some(path) => std::fs::write(path, text).expect("write the markdown table"),
            None => print!("{text}"),
        }
        return;
    }
    let mut rows = Vec::new();
    let loads = MEASUREMENTS.iter().filter(|m| **m != "scale" && args.runs(m)).count();
    if loads > 0 {
        rows = loads_on_a_cluster(&args, warmup, duration).await;
    }

    // Scale: memory with many groups, and a restart over a long log.
    let mut scale = Vec::new();
    if args.runs("scale") {
        let (groups, entries) = if args.quick {
            (args.scale_groups.min(5_000), args.log_entries.min(50_000))
        } else {
            (args.scale_groups, args.log_entries)
        };
        scale = scale_measurements(groups, entries).await;
        for line in &scale {
            println!("{line}");
        }
    }

    let after = machine_speed("after them").await;

    if let Some(path) = &args.plot {
        let points: Vec<_> = rows.iter().map(Row::point).collect();
        std::fs::write(path, plot(&points)).expect("write the plot");
    }
    if let Some(path) = args.markdown {
        let mut text = format!("Machine speed: {before}; {after}.\n\n");
        text.push_str(
            "| measurement | clients | ops/s | p50 ms | p99 ms | p999 ms | errors |\n|---|---|---|---|---|---|---|\n",
        );
        for row in &rows {
            text.push_str(&row.line());
            text.push('\n');
        }
        text.push_str("\n| scale measurement | value |\n|---|---|\n");
        for line in &scale {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&path, text).expect("write the markdown table");
    }
}

/// The machine's speed now (see `machine.rs`), printed and returned as `<when>: <speeds>`.
async fn machine_speed(when: &'static str) -> String {
    // The nodes keep their data in temporary directories: the probe syncs on the same disk.
    let probe = tokio::task::spawn_blocking(|| MachineSpeed::measure(&std::env::temp_dir()));
    let line = match probe.await {
        Ok(Ok(speed)) => format!("{when}: {}", speed.line()),
        Ok(Err(e)) => format!("{when}: not measured ({e})"),
        Err(e) => format!("{when}: not measured ({e})"),
    };
    eprintln!("bench: machine speed {line}");
    line
}

/// The loads, on one three-node cluster: heartbeats, writes, reads, failover detection and
/// leader kills, as `args` selects.
async fn loads_on_a_cluster(args: &Args, warmup: Duration, duration: Duration) -> Vec<Row> {
    let mut config = vec![("rate_limit_per_second", "0")];
    config.extend(args.node.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut cluster = TestCluster::start_with(3, &config);
    let leader = cluster.wait_for_leader(ELECTION).await;
    eprintln!("bench: cluster up, leader {leader}");
    let leader_url = cluster.url(leader);
    let mut rows = Vec::new();
    let many = if args.quick { vec![1, 16] } else { vec![1, 16, 64, 256] };
    let admin = admin_client(Duration::from_secs(10));

    // Heartbeats that change no role: one-session groups with the shortest timeout (1 s, so
    // the per-session rate limit is 50 ms), each session holding the baton throughout. A
    // load's clients share its groups, each client going round its own share: with 8,192
    // groups, each session is heard about every 150 ms at 55,000/s, well above its pace even
    // when one client runs ahead of the others (over 4,096, a client 1.6 times faster than
    // the average at 50,000/s came back to a session within 50 ms and was refused with 429).
    // One client uses 2,048, each heard about every 200 ms at 11,000/s (a group unheard for
    // its whole timeout would lapse). Streams use the same 8,192: at 100,000/s a client
    // running well ahead is now and then refused (twice in 535,000 heartbeats); 16,384 would
    // avoid it, but every load ran slower in the one run tried (streams by a fifth): the
    // leader's detector visits every group each pass. Before each load its groups are
    // primed (two heartbeats each: granted, then Primary), since a group left silent by the
    // previous load has lapsed; the warm-up then sees no role change either.
    let stream_groups = 8192;
    let groups_for = |n: usize| if n == 1 { 2048usize } else { stream_groups };
    let hb_path = |g: usize| format!("{GROUPS}/hb{g}/clientsessions/s/heartbeat");
    if args.runs("heartbeat") {
        setup_heartbeat_groups(&leader_url, stream_groups).await;
        eprintln!("bench: {stream_groups} heartbeat groups ready");
    }
    for &n in many.iter().filter(|_| args.runs("heartbeat")) {
        let groups = groups_for(n);
        let urls: Arc<Vec<String>> =
            Arc::new((0..groups).map(|g| format!("{leader_url}{}", hb_path(g))).collect());
        prime(&urls).await;
        let paths: Arc<Vec<String>> = Arc::new((0..groups).map(hb_path).collect());
        let pool = conns(n, &leader_url);
        let per = (groups / n).max(1);
        let row = load("heartbeat (no role change)", n, warmup, duration, move |c, i| {
            let (pool, paths) = (pool.clone(), paths.clone());
            async move {
                let path = &paths[(c * per + (i as usize % per)) % paths.len()];
                pool[c].lock().await.call("POST", path, Some(r#"{"FailoverScore":100}"#)).await
            }
        })
        .await;
        println!("{}", row.line());
        keep_logs_of_failures(&cluster, &row);
        rows.push(row);
    }
    // The same heartbeats, each a message on a long-lived stream (`GET /heartbeats`, a
    // WebSocket) instead of an HTTP request: one stream per client, one heartbeat in flight.
    let streamed = if args.quick { vec![16] } else { vec![16, 64] };
    for &n in streamed.iter().filter(|_| args.runs("heartbeat")) {
        let groups = stream_groups;
        let urls: Arc<Vec<String>> =
            Arc::new((0..groups).map(|g| format!("{leader_url}{}", hb_path(g))).collect());
        prime(&urls).await;
        let messages: Arc<Vec<String>> = Arc::new(
            (0..groups)
                .map(|g| format!(r#"{{"group":"bench/ns/hb{g}","session":"s","score":100}}"#))
                .collect(),
        );
        let pool = streams(n, &leader_url);
        let per = (groups / n).max(1);
        let name = "heartbeat, streamed (no role change)";
        let row = load(name, n, warmup, duration, move |c, i| {
            let (pool, messages) = (pool.clone(), messages.clone());
            async move {
                let message = &messages[(c * per + (i as usize % per)) % messages.len()];
                pool[c].lock().await.heartbeat(message).await
            }
        })
        .await;
        println!("{}", row.line());
        keep_logs_of_failures(&cluster, &row);
        rows.push(row);
    }
    if args.runs("heartbeat") {
        // The writes below run beside 4,096 lapsed heartbeat groups, as in every earlier
        // table: delete the rest (writes run slower beside more lapsed groups; see
        // BENCHMARKS.md).
        let first = WRITE_NEIGHBOURS;
        drive(stream_groups as u64 - first, 32, {
            let (admin, leader_url) = (admin.clone(), leader_url.clone());
            move |i| {
                let url = format!("{leader_url}/groups/bench/ns/hb{}", first + i);
                let admin = admin.clone();
                async move {
                    let r = send(&admin, "DELETE", &url, None).await.expect("an answer");
                    assert!(r.status < 300, "deleting {url}: {r:?}");
                }
            }
        })
        .await;
        // Let the heartbeat groups lapse (their expiries are writes) before measuring writes.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // Durable writes: each client adds a session to its own group and removes it again, so
    // every request is one Raft entry synced on a quorum and applied to a small group.
    let writes = if args.quick { vec![1, 64] } else { vec![1, 64, 256] };
    let most = writes.iter().copied().max().unwrap_or(1);
    if args.runs("write") {
        drive(most as u64, 32, {
            let (admin, leader_url) = (admin.clone(), leader_url.clone());
            move |c| {
                let (admin, url) = (admin.clone(), format!("{leader_url}{GROUPS}"));
                async move {
                    let body = json!({"Id": format!("w{c}"), "FailoverTimeout": "00:01:00"});
                    send(&admin, "POST", &url, Some(body)).await.expect("create a write group");
                }
            }
        })
        .await;
    }
    // The same writes from clients dealt over all three nodes, as clients given the cluster's
    // addresses connect (etcd's benchmark deals its clients over its endpoints the same way):
    // a follower serves the HTTP request and forwards the write to the leader.
    let every_node: Vec<String> = cluster.ids().into_iter().map(|id| cluster.url(id)).collect();
    let spread = if args.quick { vec![64] } else { vec![64, 256] };
    let write_loads = writes
        .iter()
        .map(|&n| (n, "durable write (session add/remove)", vec![leader_url.clone()]))
        .chain(
            spread
                .iter()
                .map(|&n| (n, "durable write, clients on all three nodes", every_node.clone())),
        );
    for (n, name, urls) in write_loads.filter(|_| args.runs("write")) {
        let pool = conns_over(n, &urls);
        let row = load(name, n, warmup, duration, move |c, i| {
            let (pool, path) = (pool.clone(), format!("{GROUPS}/w{c}/clientsessions"));
            async move {
                let mut conn = pool[c].lock().await;
                if i % 2 == 0 {
                    conn.call("POST", &path, Some(r#"{"Id":"s"}"#)).await
                } else {
                    conn.call("DELETE", &format!("{path}/s"), None).await
                }
            }
        })
        .await;
        println!("{}", row.line());
        keep_logs_of_failures(&cluster, &row);
        rows.push(row);
    }

    // Linearizable reads.
    if args.runs("read") {
        let body = json!({"Id": "r", "FailoverTimeout": "00:01:00"});
        send(&admin, "POST", &format!("{leader_url}{GROUPS}"), Some(body)).await.expect("create r");
        let n = 64;
        let pool = conns(n, &leader_url);
        let row = load("linearizable read (group)", n, warmup, duration, move |c, _| {
            let pool = pool.clone();
            async move { pool[c].lock().await.call("GET", &format!("{GROUPS}/r"), None).await }
        })
        .await;
        println!("{}", row.line());
        keep_logs_of_failures(&cluster, &row);
        rows.push(row);
    }

    // Failover detection: groups with a 1 s timeout and two members; the Primary stops, the
    // other keeps heartbeating every 100 ms; measure from the Primary's last heartbeat to the
    // successor's first PendingPrimary answer.
    if args.runs("failover") {
        let detection = failover_detection(&cluster, leader, if args.quick { 5 } else { 20 }).await;
        println!("{}", detection.line());
        rows.push(detection);
    }

    // Leader SIGKILL to first successful write (through the survivors).
    if args.runs("kill") {
        let mut kill = Row {
            name: "leader SIGKILL → first successful write".into(),
            clients: 1,
            ops: 0,
            errors: 0,
            failures: BTreeMap::new(),
            seconds: 1.0,
            latencies_us: Vec::new(),
        };
        for round in 0..(if args.quick { 2 } else { KILL_ROUNDS }) {
            let leader = cluster.wait_for_leader(ELECTION).await;
            let survivors: Vec<u64> =
                cluster.live().into_iter().filter(|id| *id != leader).collect();
            let killed = Instant::now();
            cluster.kill(leader);
            let mut i = 0u64;
            loop {
                let url =
                    format!("{}{GROUPS}", cluster.url(survivors[(i as usize) % survivors.len()]));
                let body = json!({"Id": format!("k{round}-{i}"), "FailoverTimeout": "00:01:00"});
                if send(&admin, "POST", &url, Some(body)).await.is_ok_and(|r| r.status == 201) {
                    break;
                }
                i += 1;
                if killed.elapsed() > Duration::from_secs(30) {
                    kill.errors += 1;
                    *kill.failures.entry("no write within 30 s".into()).or_default() += 1;
                    break;
                }
            }
            let took = killed.elapsed();
            kill.latencies_us.push(took.as_micros() as u64);
            kill.ops += 1;
            let successor = cluster.wait_for_leader(ELECTION).await;
            eprintln!(
                "bench: kill {round}: node {leader} killed, node {successor} leads, first write after {took:?} ({i} refused)"
            );
            cluster.restart(leader);
            cluster.wait_converged(ELECTION).await;
        }
        kill.latencies_us.sort_unstable();
        println!("{}", kill.line());
        rows.push(kill);
    }
    rows
}

/// Heartbeats every url twice, 60 ms apart (beyond the rate limit), 256 at a time: a session
/// whose grant lapsed is granted the baton again and made Primary.
/// Keeps the nodes' logs when a load failed requests (the cluster's temporary directory goes
/// with the cluster), in the system's temporary directory, and says where.
fn keep_logs_of_failures(cluster: &TestCluster, row: &Row) {
    if row.errors == 0 {
        return;
    }
    let load = format!("{}-{}-clients", row.name, row.clients)
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let dir = std::env::temp_dir().join(format!("baton-bench-{}", std::process::id())).join(load);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("bench: cannot keep the nodes' logs in {}: {e}", dir.display());
        return;
    }
    for id in cluster.ids() {
        let _ = std::fs::write(dir.join(format!("node{id}.log")), cluster.log(id));
    }
    eprintln!(
        "bench: {} requests failed; the nodes' logs are kept in {}",
        row.errors,
        dir.display()
    );
}

async fn prime(urls: &Arc<Vec<String>>) {
    let http = Arc::new(admin_client(Duration::from_secs(30)));
    let urls = urls.clone();
    drive(urls.len() as u64, 256, move |i| {
        let (http, urls) = (http.clone(), urls.clone());
        async move {
            let url = &urls[i as usize];
            let _ = post(&http, url, &json!({"FailoverScore": 100})).await;
            tokio::time::sleep(Duration::from_millis(60)).await;
            let _ = post(&http, url, &json!({"FailoverScore": 100})).await;
        }
    })
    .await;
}

/// Creates `groups` one-session groups `hb{i}` with a 1 s timeout, 32 at a time, and makes
/// each session Primary.
async fn setup_heartbeat_groups(leader_url: &str, groups: usize) {
    let mut tasks = Vec::new();
    for worker in 0..32usize {
        let leader_url = leader_url.to_string();
        tasks.push(tokio::spawn(async move {
            let http = admin_client(Duration::from_secs(30));
            for g in (worker..groups).step_by(32) {
                let body = json!({"Id": format!("hb{g}"), "FailoverTimeout": 1000});
                send(&http, "POST", &format!("{leader_url}{GROUPS}"), Some(body))
                    .await
                    .expect("create");
                let url = format!("{leader_url}{GROUPS}/hb{g}/clientsessions");
                send(&http, "POST", &url, Some(json!({"Id": "s"}))).await.expect("join");
                let hb = format!("{url}/s/heartbeat");
                send(&http, "POST", &hb, Some(json!({"FailoverScore": 100})))
                    .await
                    .expect("heartbeat");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a setup task");
    }
}

async fn failover_detection(cluster: &TestCluster, leader: u64, groups: usize) -> Row {
    let admin = admin_client(Duration::from_secs(10));
    let url = cluster.url(leader);
    let mut row = Row {
        name: "failover detection beyond the 1 s timeout".into(),
        clients: groups * 2,
        ops: 0,
        errors: 0,
        failures: BTreeMap::new(),
        seconds: 1.0,
        latencies_us: Vec::new(),
    };
    let mut tasks = Vec::new();
    for g in 0..groups {
        let base = format!("{url}{GROUPS}/fd{g}");
        send(
            &admin,
            "POST",
            &format!("{url}{GROUPS}"),
            Some(json!({"Id": format!("fd{g}"), "FailoverTimeout": 1000})),
        )
        .await
        .expect("create");
        for s in ["p", "q"] {
            send(&admin, "POST", &format!("{base}/clientsessions"), Some(json!({"Id": s})))
                .await
                .expect("join");
        }
        let http = admin.clone();
        tasks.push(tokio::spawn(async move {
            let hb = |s: &str| format!("{base}/clientsessions/{s}/heartbeat");
            let beat = |s: &'static str| {
                let (http, url) = (http.clone(), hb(s));
                async move {
                    send(&http, "POST", &url, Some(json!({"FailoverScore": 100})))
                        .await
                        .ok()
                        .and_then(|r| r.body["Role"].as_u64())
                }
            };
            // p becomes Primary; both heartbeat a while; then p stops.
            beat("p").await;
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                beat("p").await;
                beat("q").await;
            }
            let last = Instant::now();
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if beat("q").await == Some(2) {
                    // Beyond the timeout itself: what Baton adds to it.
                    let beyond = last.elapsed().saturating_sub(Duration::from_millis(1000));
                    return Some(beyond.as_micros() as u64);
                }
            }
            None
        }));
    }
    for task in tasks {
        match task.await.expect("a detection task") {
            Some(us) => {
                row.ops += 1;
                row.latencies_us.push(us);
            }
            None => {
                row.errors += 1;
                *row.failures.entry("not PendingPrimary within 5 s".into()).or_default() += 1;
            }
        }
    }
    row.latencies_us.sort_unstable();
    row
}
