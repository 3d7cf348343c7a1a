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
//! Each load runs a warm-up, then a fixed duration, bounded by a request count. This is a
//! measuring tool, not a test: it asserts nothing and always exits 0 unless the cluster fails.
//! `scripts/bench.sh` runs it and writes `BENCHMARKS.md`.
//!
//! Usage: bench [--seconds N] [--quick] [--markdown FILE] [--plot FILE.svg]
//!              [--scale-groups N] [--log-entries N] [--scale-only] [--plot-from TABLE]
//!              [--only heartbeat,write,read,failover,kill,scale]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_e2e::{ADMIN_TOKEN, TestCluster, admin_client, send};
use serde_json::json;

mod machine;
use machine::MachineSpeed;

const ELECTION: Duration = Duration::from_secs(10);
/// The most requests one load sends, whatever its duration.
const MAX_REQUESTS: u64 = 2_000_000;
/// Leader kills in a full run: enough for a median and a worst case worth reporting.
const KILL_ROUNDS: usize = 20;
const GROUPS: &str = "/api/v1/tenants/bench/namespaces/ns/clientfailover/groups";

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
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                args.seconds = it.next().and_then(|v| v.parse().ok()).ok_or("--seconds N")?
            }
            "--quick" => args.quick = true,
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
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// One measured load.
struct Row {
    name: String,
    clients: usize,
    ops: u64,
    errors: u64,
    /// How the failed requests failed (an HTTP status, a timeout, a lost connection...), and
    /// how many of each.
    failures: BTreeMap<String, u64>,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1_000.0
    }

    fn line(&self) -> String {
        format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.name,
            self.clients,
            self.rate(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.errors_cell()
        )
    }

    /// The error count, with what the failures were: `14 (HTTP 503: 12, timeout: 2)`.
    fn errors_cell(&self) -> String {
        if self.failures.is_empty() {
            return self.errors.to_string();
        }
        let kinds: Vec<String> = self.failures.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        format!("{} ({})", self.errors, kinds.join(", "))
    }
}

/// How a request failed, as the table names it.
type Failure = String;

/// Runs `clients` concurrent loops of `op` for `warmup` then `duration`, and measures the
/// second part. `op(client, i)` returns whether the request succeeded, and if not, how not.
async fn load<F, Fut>(
    name: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> Row
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send,
{
    let op = Arc::new(op);
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (op, count) = (op.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = BTreeMap::<Failure, u64>::new();
            let (mut ok, mut i) = (0u64, 0u64);
            while Instant::now() < end && count.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS {
                let sent = Instant::now();
                let outcome = op(client, i).await;
                i += 1;
                if sent >= measure_from {
                    match outcome {
                        Ok(()) => {
                            ok += 1;
                            latencies.push(sent.elapsed().as_micros() as u64);
                        }
                        Err(failure) => *failures.entry(failure).or_default() += 1,
                    }
                }
            }
            (ok, failures, latencies)
        }));
    }
    let mut row = Row {
        name: name.into(),
        clients,
        ops: 0,
        errors: 0,
        failures: BTreeMap::new(),
        seconds: duration.as_secs_f64(),
        latencies_us: Vec::new(),
    };
    for task in tasks {
        let (ok, failures, latencies) = task.await.expect("a load task");
        row.ops += ok;
        for (failure, n) in failures {
            row.errors += n;
            *row.failures.entry(failure).or_default() += n;
        }
        row.latencies_us.extend(latencies);
    }
    row.latencies_us.sort_unstable();
    row
}

/// One simulated caller's keep-alive HTTP/1.1 connection, on hyper directly: the load
/// generator shares the two cores with the three nodes, so each request should cost it as
/// little as possible. Reconnects after a failed request.
struct Conn {
    addr: String,
    authorization: String,
    send: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
}

impl Conn {
    fn new(base_url: &str) -> Self {
        Self {
            addr: base_url.trim_start_matches("http://").to_string(),
            authorization: format!("Bearer {ADMIN_TOKEN}"),
            send: None,
        }
    }

    async fn connect(&mut self) -> Option<()> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let (send, connection) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(connection);
        self.send = Some(send);
        Some(())
    }

    /// Sends a request with the admin token: `Ok` if it answered 2xx, else how it failed.
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&'static str>,
    ) -> Result<(), Failure> {
        if self.send.is_none() && self.connect().await.is_none() {
            return Err("cannot connect".into());
        }
        let Some(send) = self.send.as_mut() else { return Err("cannot connect".into()) };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("authorization", &self.authorization);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let body = http_body_util::Full::new(bytes::Bytes::from_static(
            body.unwrap_or_default().as_bytes(),
        ));
        let request = request.body(body).map_err(|e| format!("bad request: {e}"))?;
        let answered =
            match tokio::time::timeout(Duration::from_secs(10), send.send_request(request)).await {
                Ok(Ok(response)) => {
                    let status = response.status();
                    match http_body_util::BodyExt::collect(response.into_body()).await {
                        Ok(_) if status.is_success() => Ok(()),
                        Ok(_) => Err(format!("HTTP {}", status.as_u16())),
                        Err(_) => Err("connection lost".into()),
                    }
                }
                Ok(Err(_)) => Err("connection lost".into()),
                Err(_) => Err("timeout".into()),
            };
        if answered.as_ref().is_err_and(|f| !f.starts_with("HTTP")) {
            self.send = None;
        }
        answered
    }
}

/// A connection per simulated caller.
fn conns(n: usize, base_url: &str) -> Arc<Vec<tokio::sync::Mutex<Conn>>> {
    conns_over(n, &[base_url.to_string()])
}

/// `n` connections dealt over `base_urls` in turn (client `c` talks to `base_urls[c % len]`).
fn conns_over(n: usize, base_urls: &[String]) -> Arc<Vec<tokio::sync::Mutex<Conn>>> {
    Arc::new(
        (0..n)
            .map(|c| tokio::sync::Mutex::new(Conn::new(&base_urls[c % base_urls.len()])))
            .collect(),
    )
}

/// One simulated caller's heartbeat stream (`GET /heartbeats`, a WebSocket), opened on first
/// use and again after a failure.
struct HeartbeatStream {
    url: String,
    stream: Option<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
}

impl HeartbeatStream {
    async fn open(&mut self) -> Option<()> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = self.url.as_str().into_client_request().ok()?;
        let token = format!("Bearer {ADMIN_TOKEN}").parse().ok()?;
        request.headers_mut().insert("authorization", token);
        // A small read buffer: the default 128 KiB is zeroed before every read.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(8 * 1024);
        let (stream, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await.ok()?;
        self.stream = Some(stream);
        Some(())
    }

    /// Sends one heartbeat and waits for its answer: `Ok` if it was answered with a role, else
    /// how it failed.
    async fn heartbeat(&mut self, message: &str) -> Result<(), Failure> {
        use futures::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        if self.stream.is_none() && self.open().await.is_none() {
            return Err("cannot connect".into());
        }
        let Some(stream) = self.stream.as_mut() else { return Err("cannot connect".into()) };
        let exchange = async {
            stream.send(Message::Text(message.into())).await.ok()?;
            loop {
                match stream.next().await?.ok()? {
                    Message::Text(answer) => return Some(answer),
                    Message::Close(_) => return None,
                    _ => continue,
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(Some(answer)) if answer.as_str().contains(r#""role""#) => Ok(()),
            // A refusal names its kind: `{"id":..,"error":"not_found","message":..}`.
            Ok(Some(answer)) => {
                let refusal = serde_json::from_str::<serde_json::Value>(answer.as_str()).ok();
                let code = refusal.as_ref().and_then(|r| r["error"].as_str()).unwrap_or("?");
                Err(format!("refused: {code}"))
            }
            Ok(None) => {
                self.stream = None;
                Err("stream lost".into())
            }
            Err(_) => {
                self.stream = None;
                Err("timeout".into())
            }
        }
    }
}

/// A heartbeat stream per simulated caller.
fn streams(n: usize, base_url: &str) -> Arc<Vec<tokio::sync::Mutex<HeartbeatStream>>> {
    let url = format!("{}/heartbeats", base_url.replacen("http://", "ws://", 1));
    Arc::new(
        (0..n)
            .map(|_| tokio::sync::Mutex::new(HeartbeatStream { url: url.clone(), stream: None }))
            .collect(),
    )
}

async fn post(http: &reqwest::Client, url: &str, body: &serde_json::Value) -> bool {
    http.post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
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
        let points: Vec<Point> = rows.iter().map(Row::point).collect();
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
    let mut cluster = TestCluster::start_with(3, &[("rate_limit_per_second", "0")]);
    let leader = cluster.wait_for_leader(ELECTION).await;
    eprintln!("bench: cluster up, leader {leader}");
    let leader_url = cluster.url(leader);
    let mut rows = Vec::new();
    let many = if args.quick { vec![1, 16] } else { vec![1, 16, 64, 256] };
    let admin = admin_client(Duration::from_secs(10));

    // Heartbeats that change no role: one-session groups with the shortest timeout (1 s, so
    // the per-session rate limit is 50 ms), each session holding the baton throughout. A
    // load's clients share its groups: 4,096 sessions are each heard every 50 ms to 1 s at any
    // rate from 4,100/s to 82,000/s (2,048 for one client). 256 clients use 8,192: at 39,000/s
    // over 4,096 each session was heard every 105 ms on average, and a few, from clients that
    // ran ahead, sooner than 50 ms (refused with 429). Before each load its groups are
    // primed (two heartbeats each: granted, then Primary), since a group left silent by the
    // previous load has lapsed; the warm-up then sees no role change either.
    // Streams carry more heartbeats per second: with 8,192 groups each session is heard about
    // every 150 ms, well above its pace even when one client runs ahead of the others.
    let stream_groups = 8192;
    let groups_for = |n: usize| match n {
        1 => 2048usize,
        n if n >= 256 => stream_groups,
        _ => 4096,
    };
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
        rows.push(row);
    }
    if args.runs("heartbeat") {
        // The writes below run beside the 4,096 groups of the request loads, as in every
        // earlier table: delete the groups only the streams used (writes run slower beside
        // more lapsed groups; see BENCHMARKS.md).
        let first = groups_for(16) as u64;
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

/// A node's resident memory, in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs `total` requests of `op` over `workers` concurrent workers.
async fn drive<F, Fut>(total: u64, workers: u64, op: F)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                op(i).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a worker");
    }
}

/// A fresh cluster that keeps its whole log (no snapshots): `groups` groups of 3 sessions, RSS
/// per node, then the log filled to `entries` entries (writes that change nothing), and a
/// follower killed and restarted: time until it is ready again.
/// Clients filling the log for the restart measurement.
const FILL_CLIENTS: u64 = 4;

async fn scale_measurements(groups: usize, entries: u64) -> Vec<String> {
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss: Vec<String> = cluster
        .ids()
        .iter()
        .map(|id| format!("{:.0}", cluster.pid(*id).map_or(f64::NAN, rss_mib)))
        .collect();
    eprintln!("bench: {groups} groups in {created:?}; RSS {rss:?} MiB");
    lines.push(format!(
        "| RSS per node (MiB) with {groups} groups of 3 sessions (nodes 1, 2, 3) | {} |",
        rss.join(", ")
    ));
    lines.push(format!(
        "| creating {groups} groups with 3 members each, 64 clients | {:.0} groups/s |",
        groups as f64 / created.as_secs_f64()
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
    let rss: Vec<String> = cluster
        .ids()
        .iter()
        .map(|id| format!("{:.0}", cluster.pid(*id).map_or(f64::NAN, rss_mib)))
        .collect();
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

/// One load's figures, as the plot needs them.
struct Point {
    name: String,
    clients: usize,
    rate: f64,
    p50: f64,
    p99: f64,
}

impl Row {
    fn point(&self) -> Point {
        Point {
            name: self.name.clone(),
            clients: self.clients,
            rate: self.rate(),
            p50: self.percentile_ms(0.50),
            p99: self.percentile_ms(0.99),
        }
    }
}

/// The load rows of a table [`Row::line`] wrote (for re-plotting a saved run).
fn points_of_table(text: &str) -> Vec<Point> {
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> =
                line.trim().trim_matches('|').split('|').map(str::trim).collect();
            match cells[..] {
                [name, clients, rate, p50, p99, _, _] => Some(Point {
                    name: name.to_string(),
                    clients: clients.parse().ok()?,
                    rate: rate.parse().ok()?,
                    p50: p50.parse().ok()?,
                    p99: p99.parse().ok()?,
                }),
                _ => None,
            }
        })
        .collect()
}

/// Latency against throughput, as an SVG: p50 (solid) and p99 (dashed) of every load, one
/// series per kind, latency on a log scale.
fn plot(points: &[Point]) -> String {
    let (w, h, left, bottom, top, right) = (840.0, 440.0, 70.0, 50.0, 30.0, 270.0);
    let kinds = [
        "heartbeat (",
        "heartbeat, streamed",
        "durable write (",
        "durable write, clients",
        "linearizable",
    ];
    let loads: Vec<&Point> =
        points.iter().filter(|p| kinds.iter().any(|k| p.name.starts_with(k))).collect();
    let max_rate = loads.iter().map(|p| p.rate).fold(1.0, f64::max) * 1.1;
    let max_ms = loads.iter().map(|p| p.p99).filter(|v| v.is_finite()).fold(1.0, f64::max);
    let (lo, hi) = (0.1f64.log10(), (max_ms * 1.5).log10());
    let x = |rate: f64| left + (w - left - right) * rate / max_rate;
    let y = |ms: f64| h - bottom - (h - bottom - top) * (ms.max(0.1).log10() - lo) / (hi - lo);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let axis = h - bottom;
    svg.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{axis}\" x2=\"{}\" y2=\"{axis}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{axis}\" stroke=\"black\"/>\n",
        w - right
    ));
    let mid_y = (axis + top) / 2.0;
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">throughput (ops/s)</text><text x=\"15\" y=\"{mid_y}\" transform=\"rotate(-90 15 {mid_y})\" text-anchor=\"middle\">latency (ms, log scale)</text>\n",
        left + (w - left - right) / 2.0,
        h - 12.0
    ));
    for i in 0..=4 {
        let rate = max_rate * f64::from(i) / 4.0;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{rate:.0}</text>\n",
            x(rate),
            axis + 16.0
        ));
    }
    let mut tick = 0.1;
    while tick <= max_ms * 1.5 {
        let ty = y(tick);
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{tick}</text><line x1=\"{left}\" y1=\"{ty:.1}\" x2=\"{}\" y2=\"{ty:.1}\" stroke=\"#ddd\"/>\n",
            left - 6.0,
            ty + 4.0,
            w - right
        ));
        tick *= 10.0;
    }
    let colors = ["#2457c5", "#7b3fbf", "#1a7f37", "#6b8e23", "#b35900"];
    for (k, (kind, color)) in kinds.iter().zip(colors).enumerate() {
        let series: Vec<&&Point> = loads.iter().filter(|p| p.name.starts_with(kind)).collect();
        for (p99, dash) in [(false, ""), (true, " stroke-dasharray=\"4 3\"")] {
            let at = |p: &Point| if p99 { p.p99 } else { p.p50 };
            let line: Vec<String> = series
                .iter()
                .filter(|p| at(p).is_finite())
                .map(|p| format!("{:.1},{:.1}", x(p.rate), y(at(p))))
                .collect();
            svg.push_str(&format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\"{dash}/>\n",
                line.join(" ")
            ));
            for p in series.iter().filter(|p| at(p).is_finite()) {
                let (px, py) = (x(p.rate), y(at(p)));
                svg.push_str(&format!(
                    "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>\n",
                    px + 4.0,
                    py - 4.0,
                    p.clients
                ));
            }
        }
        let ly = top + 20.0 * k as f64;
        let name = series.first().map_or(*kind, |p| p.name.as_str());
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{ly}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            w - right + 10.0,
            w - right + 25.0,
            ly + 9.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" font-size=\"10\">solid p50, dashed p99; labels: clients</text>\n</svg>\n",
        w - right + 10.0,
        top + 20.0 * kinds.len() as f64 + 10.0
    ));
    svg
}

/// Heartbeats every url twice, 60 ms apart (beyond the rate limit), 256 at a time: a session
/// whose grant lapsed is granted the baton again and made Primary.
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
