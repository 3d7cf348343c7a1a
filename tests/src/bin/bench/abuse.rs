//! The hostile-input run (`bench --abuse`, `scripts/abuse.sh`): a victim tenant heartbeats
//! steadily while one hostile tenant member and an unauthenticated host attack a three-node
//! cluster with its default limits (rate limits on). Each phase, before, during and after the
//! attacks, reports the victim's heartbeat latency, each node's largest RSS and data
//! directory size, and the leader's applied index; then what each attack was answered.
//!
//! The attacks, all at once, each loop bounded by the phase's end and a request count:
//! - `specs`: Cinder group specs of 55 KB each, new keys every time (the attack that once
//!   took a cluster down);
//! - `joins`: sessions joined to one group, past the member limit;
//! - `methods`: unauthenticated requests with invented HTTP methods (metric series);
//! - `silent`: TCP connections to every API and Raft port that never send a byte, more than
//!   one address may hold;
//! - `streams`: event streams opened past the per-identity cap;
//! - `bodies`: 8 MiB request bodies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_e2e::{TestCluster, admin_client, client_with_token, send};
use serde_json::json;

/// Most requests one attack loop sends in a phase.
const MAX_PER_LOOP: u64 = 50_000;
/// The victim's groups, each with one session heartbeating every [`VICTIM_PERIOD`] (a group
/// takes one heartbeat per session every FailoverTimeout / 20 at most).
const VICTIM_GROUPS_COUNT: usize = 40;
const VICTIM_PERIOD: Duration = Duration::from_secs(1);
const VICTIM_GROUPS: &str = "/api/v1/tenants/victim/namespaces/ns/clientfailover/groups";
const HOSTILE_GROUPS: &str = "/api/v1/tenants/hostile/namespaces/ns/clientfailover/groups";

/// What each attack was answered: status (or failure) and count.
type Answers = Arc<Mutex<BTreeMap<&'static str, BTreeMap<String, u64>>>>;

/// Runs the three phases of `phase` each and returns the Markdown report.
pub(crate) async fn abuse(phase: Duration) -> String {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let admin = admin_client(Duration::from_secs(10));
    let url = cluster.url(leader);
    let victim = identity(&admin, &url, "victim-ops", "victim").await;
    let hostile = identity(&admin, &url, "hostile-ops", "hostile").await;
    let victim_http = client_with_token(Some(&victim), Duration::from_secs(10));
    for g in 0..VICTIM_GROUPS_COUNT {
        let body = json!({"Id": format!("v{g}"), "FailoverTimeout": "00:00:10"});
        expect_2xx(send(&victim_http, "POST", &format!("{url}{VICTIM_GROUPS}"), Some(body)).await);
        let join = format!("{url}{VICTIM_GROUPS}/v{g}/clientsessions");
        expect_2xx(send(&victim_http, "POST", &join, Some(json!({"Id": "s"}))).await);
    }
    let hostile_http = client_with_token(Some(&hostile), Duration::from_secs(10));
    let body = json!({"Id": "h", "FailoverTimeout": "00:00:10"});
    expect_2xx(send(&hostile_http, "POST", &format!("{url}{HOSTILE_GROUPS}"), Some(body)).await);

    let mut lines = vec![
        "| phase | victim heartbeats/s | p50 ms | p99 ms | errors | largest RSS per node, MiB | data per node, MiB | applied index |".to_string(),
        "|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let answers = Answers::default();
    for name in ["before", "during", "after"] {
        let until = Instant::now() + phase;
        let attacks = if name == "during" {
            attack(&cluster, &hostile, until, answers.clone()).await
        } else {
            tokio::task::JoinSet::new()
        };
        let sampler = tokio::spawn(largest_rss(pids(&cluster), until));
        let (ok, errors, mut latencies) = victim_heartbeats(&cluster, &victim, until).await;
        let rss = sampler.await.unwrap_or_default();
        attacks.join_all().await;
        latencies.sort_unstable();
        let at = |p: f64| {
            latencies
                .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
                .map_or(f64::NAN, |us| *us as f64 / 1000.0)
        };
        let applied =
            cluster.status(leader).await.and_then(|s| s["applied_index"].as_u64()).unwrap_or(0);
        let data: Vec<String> = cluster
            .ids()
            .iter()
            .map(|id| format!("{:.1}", dir_mib(&cluster.data_dir(*id))))
            .collect();
        let rss: Vec<String> = rss.iter().map(|m| format!("{m:.0}")).collect();
        lines.push(format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {errors} | {} | {} | {applied} |",
            ok as f64 / phase.as_secs_f64(),
            at(0.5),
            at(0.99),
            rss.join(" / "),
            data.join(" / "),
        ));
        eprintln!("abuse: {}", lines.last().map_or("", String::as_str));
    }
    lines.push(String::new());
    lines.push("| attack (during) | answers |".into());
    lines.push("|---|---|".into());
    let answers = answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (attack, counts) in answers.iter() {
        let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        lines.push(format!("| {attack} | {} |", counts.join(", ")));
    }
    lines.join("\n") + "\n"
}

async fn identity(admin: &reqwest::Client, url: &str, name: &str, tenant: &str) -> String {
    let body = json!({"name": name, "role": "member", "tenant": tenant});
    let r = send(admin, "POST", &format!("{url}/identities"), Some(body)).await.expect("answer");
    r.body["token"].as_str().expect("a token").to_string()
}

fn expect_2xx(reply: Result<baton_e2e::Reply, reqwest::Error>) {
    let reply = reply.expect("an answer");
    assert!(reply.status < 300, "setting up: {reply:?}");
}

/// One client per victim group, each heartbeating every [`VICTIM_PERIOD`] against the nodes
/// in turn, until `until`: successes, failures and the latencies of the successes.
async fn victim_heartbeats(
    cluster: &TestCluster,
    token: &str,
    until: Instant,
) -> (u64, u64, Vec<u64>) {
    let urls: Vec<String> = cluster.ids().iter().map(|id| cluster.url(*id)).collect();
    let mut clients = tokio::task::JoinSet::new();
    for g in 0..VICTIM_GROUPS_COUNT {
        let (urls, http) = (urls.clone(), client_with_token(Some(token), Duration::from_secs(5)));
        clients.spawn(async move {
            let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
            // Not at once: the previous phase's last heartbeat may have just been sent.
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + VICTIM_PERIOD,
                VICTIM_PERIOD,
            );
            // A heartbeat held up past its turn is not made up for in a burst, and its latency
            // counts from when it was due, so a stall shows in the figures.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut i = 0usize;
            while Instant::now() < until {
                let due = tick.tick().await;
                let url = format!(
                    "{}{VICTIM_GROUPS}/v{g}/clientsessions/s/heartbeat",
                    urls[i % urls.len()]
                );
                i += 1;
                match send(&http, "POST", &url, Some(json!({"FailoverScore": 100}))).await {
                    Ok(r) if r.status < 300 => {
                        ok += 1;
                        latencies.push(due.elapsed().as_micros() as u64);
                    }
                    other => {
                        if failed == 0 {
                            eprintln!("abuse: a victim heartbeat failed: {other:?}");
                        }
                        failed += 1
                    }
                }
            }
            (ok, failed, latencies)
        });
    }
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
    for (o, f, l) in clients.join_all().await {
        (ok, failed) = (ok + o, failed + f);
        latencies.extend(l);
    }
    (ok, failed, latencies)
}

/// Starts every attack, each ending at `until`.
async fn attack(
    cluster: &TestCluster,
    hostile: &str,
    until: Instant,
    answers: Answers,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    let urls: Vec<String> = cluster.ids().iter().map(|id| cluster.url(*id)).collect();
    let count = move |answers: &Answers, attack: &'static str, outcome: String| {
        let mut answers = answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *answers.entry(attack).or_default().entry(outcome).or_default() += 1;
    };
    let outcome = |r: Result<reqwest::Response, reqwest::Error>| match r {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(_) => "connection failed".into(),
    };
    let hostile_http = client_with_token(Some(hostile), Duration::from_secs(10));
    // A Cinder group type of the hostile tenant, its specs grown 55 KB at a time.
    let types = format!("{}/v3/hostile/group_types", urls[0]);
    let created = hostile_http
        .post(types)
        .header("x-auth-token", hostile.to_string())
        .header("openstack-api-version", "volume 3.38")
        .header("content-type", "application/json")
        .body(json!({"group_type": {"name": "grow"}}).to_string())
        .send()
        .await
        .expect("a group type");
    let created: serde_json::Value =
        serde_json::from_str(&created.text().await.expect("a body")).expect("json");
    let gtype = created["group_type"]["id"].as_str().expect("an id").to_string();
    {
        let (http, answers, urls, count, outcome) =
            (hostile_http.clone(), answers.clone(), urls.clone(), count, outcome);
        let hostile = hostile.to_string();
        set.spawn(async move {
            for i in 0..MAX_PER_LOOP {
                if Instant::now() >= until {
                    break;
                }
                let specs: serde_json::Map<String, serde_json::Value> =
                    (0..55).map(|k| (format!("k{i}-{k}"), json!("x".repeat(1_000)))).collect();
                let url = format!(
                    "{}/v3/hostile/group_types/{gtype}/group_specs",
                    urls[i as usize % urls.len()]
                );
                let r = http
                    .post(url)
                    .header("x-auth-token", hostile.clone())
                    .header("openstack-api-version", "volume 3.38")
                    .header("content-type", "application/json")
                    .body(json!({"group_specs": specs}).to_string())
                    .send()
                    .await;
                count(&answers, "specs: 55 KB of new group specs", outcome(r));
            }
        });
    }
    {
        let (http, answers, urls) = (hostile_http.clone(), answers.clone(), urls.clone());
        set.spawn(async move {
            for i in 0..MAX_PER_LOOP {
                if Instant::now() >= until {
                    break;
                }
                let url =
                    format!("{}{HOSTILE_GROUPS}/h/clientsessions", urls[i as usize % urls.len()]);
                let body = json!({"Id": format!("s{i}")}).to_string();
                let r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                count(&answers, "joins: past the member limit", outcome(r));
            }
        });
    }
    {
        let (answers, urls) = (answers.clone(), urls.clone());
        let http = client_with_token(None, Duration::from_secs(10));
        set.spawn(async move {
            for i in 0..MAX_PER_LOOP {
                if Instant::now() >= until {
                    break;
                }
                let method =
                    reqwest::Method::from_bytes(format!("INVENT{i}").as_bytes()).expect("a method");
                let r = http
                    .request(method, format!("{}/made-up/{i}", urls[i as usize % urls.len()]))
                    .send()
                    .await;
                count(&answers, "methods: invented, unauthenticated", outcome(r));
            }
        });
    }
    {
        let answers = answers.clone();
        let body = vec![b'{'; 8 * 1024 * 1024];
        let (http, urls) = (hostile_http.clone(), urls.clone());
        set.spawn(async move {
            for i in 0..MAX_PER_LOOP.min(200) {
                if Instant::now() >= until {
                    break;
                }
                let url = format!("{}{HOSTILE_GROUPS}", urls[i as usize % urls.len()]);
                let r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                count(&answers, "bodies: 8 MiB", outcome(r));
            }
        });
    }
    // Event streams past the per-identity cap, on one node, held to the end.
    {
        let (answers, url) = (answers.clone(), urls[0].clone());
        let http = client_with_token(Some(hostile), Duration::from_secs(3600));
        set.spawn(async move {
            let mut held = Vec::new();
            for _ in 0..300 {
                let r = http.get(format!("{url}/groups/hostile/ns/h/events")).send().await;
                let r = r.map(|r| {
                    let status = r.status();
                    held.push(r);
                    status
                });
                count(
                    &answers,
                    "streams: 300 from one identity",
                    r.map_or("failed".into(), |s| s.as_u16().to_string()),
                );
            }
            tokio::time::sleep_until(until.into()).await;
            drop(held);
        });
    }
    // Silent connections from one address, more than it may hold, to every port.
    let ports: Vec<String> = cluster
        .ids()
        .iter()
        .flat_map(|id| {
            let node = cluster.node(*id);
            [node.api_addr.clone(), node.raft_addr.clone()]
        })
        .collect();
    for port in ports {
        let answers = answers.clone();
        set.spawn(async move {
            let mut held = Vec::new();
            let target: std::net::SocketAddr = port.parse().expect("an address");
            for _ in 0..600 {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket.bind("127.0.0.77:0".parse().expect("an address")).expect("bind");
                match socket.connect(target).await {
                    Ok(stream) => held.push(stream),
                    Err(_) => {
                        count(&answers, "silent: 600 per port from one address", "refused".into())
                    }
                }
            }
            let open = |held: &[tokio::net::TcpStream]| {
                let waiting = |s: &tokio::net::TcpStream| {
                    matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                };
                held.iter().filter(|s| waiting(s)).count()
            };
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let attack = "silent: 600 per port from one address";
            count(&answers, attack, format!("still open after 1.5 s: {}", open(&held)));
            tokio::time::sleep_until(until.into()).await;
            count(&answers, attack, format!("still open at the end: {}", open(&held)));
            drop(held);
        });
    }
    set
}

fn pids(cluster: &TestCluster) -> Vec<u32> {
    cluster.ids().iter().filter_map(|id| cluster.pid(*id)).collect()
}

/// Each process's largest RSS, in MiB, sampled every 200 ms until `until`.
async fn largest_rss(pids: Vec<u32>, until: Instant) -> Vec<f64> {
    let mut largest = vec![0f64; pids.len()];
    while Instant::now() < until {
        for (i, pid) in pids.iter().enumerate() {
            largest[i] = largest[i].max(crate::scale::rss_mib(*pid));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    largest
}

/// Bytes under `dir`, in MiB.
fn dir_mib(dir: &std::path::Path) -> f64 {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) as f64 / (1024.0 * 1024.0)
}
