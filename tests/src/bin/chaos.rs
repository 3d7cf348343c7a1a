//! `chaos`: many simulated adapters across many failover groups, and a client making durable
//! writes, against a local three-node Baton cluster (real processes), while faults are injected
//! on a bounded, seeded schedule: SIGKILL (random node, leader), SIGSTOP (leader, random node),
//! a network partition of the leader (iptables on its own loopback address; needs root),
//! rolling restarts, and adapters killed and started again; meanwhile operators force
//! failovers (two per fault), and adapters lose one answer in twenty (they take nothing from
//! it). Two of each group's three adapters prove that they let go, as Baton's client does; the
//! third is a stock adapter. Checks online and at the end:
//! - never two valid grants in a group, epochs only grow, failover only after silence
//!   (`baton_core::invariants`, over everything the adapters saw);
//! - every acknowledged write is present on every node after recovery;
//! - every group has a holder again within FailoverTimeout + election + 1 s of the faults healing;
//! - all nodes converge to the same applied state (digest).
//!
//! Prints a summary table and exits 1 on any violation. Traffic goes only to its own nodes on
//! loopback; the run is bounded by `--seconds`.
//!
//! Usage: chaos [--seconds N] [--groups N] [--seed N] [--journal FILE]
//!
//! `--journal FILE` writes every heartbeat exchange (times, role, epoch, score) and every
//! acknowledged write (first sent, acknowledged, attempts) as JSON lines.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_core::invariants::{
    at_most_one_valid_grant, epochs_only_grow, failover_only_after_silence,
};
use baton_e2e::adapter::{Adapter, AdapterConfig, Journal, Rng, observations};
use baton_e2e::{TestCluster, groups_url, send};
use serde_json::json;

const FAILOVER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the harness waits for a leader or convergence before giving up.
const ELECTION: Duration = Duration::from_secs(10);
/// An election with the default timings (400 ms max election timeout) settles within this.
const ELECTION_BOUND: Duration = Duration::from_secs(1);
/// Pause between two faults, so each one heals before the next.
const FAULT_SPACING: Duration = Duration::from_secs(4);
const SESSIONS: [(&str, f64); 3] = [("a", 100.0), ("b", 95.0), ("c", 80.0)];

struct Args {
    seconds: u64,
    groups: usize,
    seed: u64,
    /// Where to write every exchange as JSON lines, if anywhere.
    journal: Option<std::path::PathBuf>,
}

/// One acknowledged write: the group id, when it was first sent and when it was acknowledged
/// (ms since the run's start), and how many attempts it took.
#[derive(Clone, Debug)]
struct Write {
    id: String,
    sent_at: u64,
    acked_at: u64,
    attempts: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { seconds: 60, groups: 8, seed: 1, journal: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--journal" {
            args.journal = Some(value.into());
            continue;
        }
        let n: u64 = value.parse().map_err(|_| format!("{flag} {value}: not a number"))?;
        match flag.as_str() {
            "--seconds" => args.seconds = n.clamp(10, 3_600),
            "--groups" => args.groups = usize::try_from(n).unwrap_or(8).clamp(1, 200),
            "--seed" => args.seed = n,
            other => {
                return Err(format!(
                    "unknown flag {other}; use --seconds, --groups, --seed, --journal"
                ));
            }
        }
    }
    Ok(args)
}

#[derive(Default)]
struct Report {
    faults: BTreeMap<&'static str, u32>,
    violations: Vec<String>,
    /// Hand-overs an operator forced, by the epoch each produces: excused from "failover only
    /// after silence".
    forced: Vec<(String, baton_core::Epoch)>,
}

/// In how many of a thousand answers an adapter acts as if the answer were lost.
const LOST_ANSWERS_PER_MILLE: u64 = 50;

/// Every group's adapters (`a` and `b` prove that they let go as Baton's client does; `c` is a
/// stock adapter), which faults may kill and start again.
struct Adapters {
    configs: Vec<AdapterConfig>,
    running: Vec<Option<Adapter>>,
    journal: Journal,
}

impl Adapters {
    fn start(&mut self, index: usize) {
        let (g, s) = (index / SESSIONS.len(), index % SESSIONS.len());
        let (session, score) = SESSIONS[s];
        let mut config = self.configs[g].clone();
        config.proves_release = session != "c";
        self.running[index] = Some(Adapter::start(config, session, score, self.journal.clone()));
    }
}

const GROUPS: &str = "/api/v1/tenants/chaos/namespaces/ns/clientfailover/groups";

fn group_path(g: usize) -> String {
    format!("{GROUPS}/g{g}")
}

async fn setup(cluster: &TestCluster, groups: usize) -> Result<(), String> {
    let leader = cluster.wait_for_leader(ELECTION).await;
    let sessions: Vec<&str> = SESSIONS.iter().map(|(s, _)| *s).collect();
    for g in 0..groups {
        let path = cluster
            .create_failover_group(leader, GROUPS, &format!("g{g}"), FAILOVER_TIMEOUT, &sessions)
            .await;
        if path != group_path(g) {
            return Err(format!("group g{g} was created at {path}"));
        }
    }
    Ok(())
}

/// Creates groups w0, w1, ... until stopped, retrying each on any node until acknowledged.
fn start_writer(
    cluster: &TestCluster,
    epoch: Instant,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<Result<Vec<Write>, String>>) {
    let nodes: Vec<String> = cluster.ids().iter().map(|id| cluster.url(*id)).collect();
    let http = cluster.http().clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let now = move || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    let task = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0usize.. {
            if *stopped.borrow() {
                return Ok(acknowledged);
            }
            let id = format!("w{i}");
            let body = json!({"Id": id, "FailoverTimeout": "00:00:10"});
            let sent_at = now();
            let mut attempts = 0;
            let acked_at = loop {
                if attempts == 100 {
                    return Err(format!("write {id} failed 100 times"));
                }
                let url = groups_url(&nodes[(i + attempts) % nodes.len()], "v1");
                attempts += 1;
                if let Ok(r) = send(&http, "POST", &url, Some(body.clone())).await
                    && (r.status == 201 || r.status == 200)
                {
                    break now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            acknowledged.push(Write { id, sent_at, acked_at, attempts });
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(acknowledged)
    });
    (stop, task)
}

/// Writes every heartbeat exchange and every acknowledged write as one JSON object per line.
fn write_journal(
    path: &std::path::Path,
    seen: &[baton_core::invariants::Observation],
    writes: &[Write],
) -> Result<(), String> {
    use std::io::Write as _;
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for o in seen {
        let line = json!({"kind": "heartbeat", "group": o.group, "session": o.session,
            "sent_at_ms": o.sent_at, "received_at_ms": o.received_at, "role": format!("{:?}", o.role),
            "epoch": o.epoch.0, "valid_for_ms": o.valid_for_ms, "score": o.score.value()});
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    for w in writes {
        let line = json!({"kind": "write", "group": w.id, "sent_at_ms": w.sent_at,
            "acked_at_ms": w.acked_at, "attempts": w.attempts});
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

/// Forces a failover of a random group through a random node, as an operator would, and
/// excuses the hand-over it starts.
async fn force_failover(cluster: &TestCluster, rng: &mut Rng, groups: usize, report: &mut Report) {
    let g = rng.below(groups);
    let ids = cluster.live();
    let node = ids[rng.below(ids.len())];
    let url = format!("{}/groups/chaos/ns/g{g}/failover", cluster.url(node));
    // 409 when the group is already moving or nobody else is ready: nothing was started.
    if let Ok(r) = send(cluster.http(), "POST", &url, None).await
        && r.status == 202
        && let Some(epoch) = r.body["epoch"].as_u64()
    {
        report.forced.push((format!("g{g}"), baton_core::Epoch(epoch + 1)));
        *report.faults.entry("forced failover").or_default() += 1;
    }
}

/// One fault, healed before it returns.
async fn inject(
    cluster: &mut TestCluster,
    adapters: &mut Adapters,
    rng: &mut Rng,
    report: &mut Report,
) {
    let leader = cluster.wait_for_leader(ELECTION).await;
    let ids = cluster.ids();
    match rng.below(8) {
        6 | 7 => {
            // An adapter dies and comes back a while later (its last grant lapses meanwhile).
            let victim = rng.below(adapters.running.len());
            if let Some(adapter) = adapters.running[victim].take() {
                adapter.stop().await;
            }
            tokio::time::sleep(FAILOVER_TIMEOUT * 3 / 2).await;
            adapters.start(victim);
            *report.faults.entry("adapter killed 3 s").or_default() += 1;
        }
        0 => {
            let victim = ids[rng.below(ids.len())];
            cluster.kill(victim);
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            cluster.restart(victim);
            *report.faults.entry("SIGKILL random node").or_default() += 1;
        }
        1 => {
            cluster.kill(leader);
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            cluster.restart(leader);
            *report.faults.entry("SIGKILL leader").or_default() += 1;
        }
        2 => {
            cluster.pause(leader);
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            cluster.resume(leader);
            *report.faults.entry("SIGSTOP leader 1.5 s").or_default() += 1;
        }
        4 => {
            // Cut the leader's Raft traffic off while its clients can still reach it.
            cluster.partition(leader);
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            cluster.heal(leader);
            *report.faults.entry("partition leader 2.5 s").or_default() += 1;
        }
        3 => {
            let victim = ids[rng.below(ids.len())];
            cluster.pause(victim);
            tokio::time::sleep(Duration::from_millis(800)).await;
            cluster.resume(victim);
            *report.faults.entry("SIGSTOP random node 0.8 s").or_default() += 1;
        }
        _ => {
            for id in ids {
                cluster.terminate(id, Duration::from_secs(15));
                cluster.restart(id);
                cluster.wait_for_leader(ELECTION).await;
                cluster.wait_converged(ELECTION).await;
            }
            *report.faults.entry("rolling restart").or_default() += 1;
        }
    }
    cluster.wait_for_leader(ELECTION).await;
}

fn check_invariants(journal: &Journal, report: &mut Report) {
    let seen = observations(journal);
    let ft = FAILOVER_TIMEOUT.as_millis() as u64;
    for result in [
        at_most_one_valid_grant(&seen),
        epochs_only_grow(&seen),
        failover_only_after_silence(&seen, ft, &report.forced),
    ] {
        if let Err(v) = result {
            let line = format!("{}: {}", v.property, v.detail);
            if !report.violations.contains(&line) {
                eprintln!("VIOLATION {line}");
                report.violations.push(line);
            }
        }
    }
}

async fn run(args: Args) -> Result<Report, String> {
    let mut cluster = TestCluster::start_partitionable(3);
    setup(&cluster, args.groups).await?;
    let journal: Journal = Arc::new(Mutex::new(Vec::new()));
    let epoch = Instant::now();
    let configs = (0..args.groups)
        .map(|g| AdapterConfig {
            lose_per_mille: LOST_ANSWERS_PER_MILLE,
            seed: args.seed.wrapping_add(g as u64),
            ..AdapterConfig::new(
                &cluster,
                &cluster.ids(),
                &group_path(g),
                &format!("g{g}"),
                FAILOVER_TIMEOUT,
                epoch,
            )
        })
        .collect();
    let mut adapters = Adapters {
        configs,
        running: (0..args.groups * SESSIONS.len()).map(|_| None).collect(),
        journal: journal.clone(),
    };
    for index in 0..adapters.running.len() {
        adapters.start(index);
    }
    let (stop_writer, writer) = start_writer(&cluster, epoch);
    let mut report = Report::default();
    let mut rng = Rng(args.seed.max(1));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() + FAULT_SPACING < deadline {
        // Hand-overs while nodes fail: operators force a few, before and after each fault.
        for _ in 0..2 {
            tokio::time::sleep(FAULT_SPACING / 2).await;
            force_failover(&cluster, &mut rng, args.groups, &mut report).await;
        }
        inject(&mut cluster, &mut adapters, &mut rng, &mut report).await;
        check_invariants(&journal, &mut report);
    }

    // Faults are healed: every group must have a Primary again within FailoverTimeout + an
    // election + 1 s, plus one heartbeat interval for a PendingPrimary to be promoted.
    let healed = Instant::now();
    let bound = FAILOVER_TIMEOUT + ELECTION_BOUND + Duration::from_secs(1) + FAILOVER_TIMEOUT / 2;
    for g in 0..args.groups {
        let path = format!("{}/status", group_path(g));
        let primary = async {
            loop {
                let leader = cluster.wait_for_leader(ELECTION).await;
                if let Some((_, s)) = cluster.get_json(leader, &path).await
                    && s["Primary"].is_string()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let remaining = bound.saturating_sub(healed.elapsed());
        if tokio::time::timeout(remaining, primary).await.is_err() {
            report
                .violations
                .push(format!("group g{g} had no Primary {bound:?} after the faults healed"));
        }
    }
    let recovery = healed.elapsed();
    stop_writer.send(true).map_err(|_| "the writer stopped early")?;
    let acknowledged = writer.await.map_err(|e| e.to_string())??;
    for adapter in adapters.running.into_iter().flatten() {
        adapter.stop().await;
    }
    check_invariants(&journal, &mut report);

    let digest = cluster.wait_converged(ELECTION).await;
    let expected = acknowledged.len() + args.groups;
    if digest["groups"] != json!(expected) {
        report
            .violations
            .push(format!("nodes hold {} groups, expected {expected}", digest["groups"]));
    }
    for id in cluster.ids() {
        let url = format!("{}?count=1000000", groups_url(&cluster.url(id), "v1"));
        let reply = send(cluster.http(), "GET", &url, None).await.map_err(|e| e.to_string())?;
        let present: Vec<&str> =
            reply.body.as_array().into_iter().flatten().filter_map(|g| g["Id"].as_str()).collect();
        if let Some(lost) = acknowledged.iter().find(|w| !present.contains(&w.id.as_str())) {
            report.violations.push(format!("node {id} lost acknowledged write {}", lost.id));
        }
    }

    let seen = observations(&journal);
    // Hand-overs as the adapters saw them: a grant taken by another member than the last one.
    let mut handovers = 0;
    for g in 0..args.groups {
        let mut grants: Vec<_> = seen
            .iter()
            .filter(|o| o.group == format!("g{g}") && o.role != baton_core::Role::Secondary)
            .collect();
        grants.sort_by_key(|o| (o.epoch, o.received_at));
        handovers += grants.windows(2).filter(|w| w[0].session != w[1].session).count();
    }
    let failovers: u64 = (0..args.groups)
        .map(|g| {
            seen.iter()
                .filter(|o| o.group == format!("g{g}"))
                .map(|o| o.epoch.0)
                .max()
                .unwrap_or(1)
                .saturating_sub(1)
        })
        .sum();
    println!();
    println!(
        "chaos run: {} s, {} groups x {} adapters, seed {}",
        args.seconds,
        args.groups,
        SESSIONS.len(),
        args.seed
    );
    println!("{:<28} {:>8}", "fault", "count");
    for (fault, n) in &report.faults {
        println!("{fault:<28} {n:>8}");
    }
    println!("{:<28} {:>8}", "heartbeats answered", seen.len());
    println!("{:<28} {:>8}", "writes acknowledged", acknowledged.len());
    let mut latencies: Vec<u64> = acknowledged.iter().map(|w| w.acked_at - w.sent_at).collect();
    latencies.sort_unstable();
    let pick =
        |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0);
    println!("{:<28} {:>6} ms", "write latency p50", pick(0.5));
    println!("{:<28} {:>6} ms", "write latency max", pick(1.0));
    println!(
        "{:<28} {:>8}",
        "most attempts for a write",
        acknowledged.iter().map(|w| w.attempts).max().unwrap_or(0)
    );
    if let Some(path) = &args.journal {
        write_journal(path, &seen, &acknowledged)?;
        println!("{:<28} {}", "journal", path.display());
    }
    println!("{:<28} {:>8}", "failovers (epoch changes)", failovers);
    println!("{:<28} {:>8}", "hand-overs seen by adapters", handovers);
    println!("{:<28} {:>7.1}s", "recovery after healing", recovery.as_secs_f64());
    println!("{:<28} {:>8}", "violations", report.violations.len());
    Ok(report)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(args)) {
        Ok(report) if report.violations.is_empty() => ExitCode::SUCCESS,
        Ok(report) => {
            for v in &report.violations {
                eprintln!("violation: {v}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::from(1)
        }
    }
}
