//! `baton run`, the self-fencing runner, as the real binary against a real cluster. Each
//! runner's COMMAND is a shell loop that logs when it starts (with BATON_EPOCH) and when it is
//! stopped, on one shared file, with nanosecond wall-clock times of this host: the tests check
//! the child starts on promotion, stops on demotion and when Baton cannot be reached, never
//! runs on two sessions of one group at once, and dies with a runner killed outright.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_e2e::{ADMIN_TOKEN, TestCluster, admin_client, baton_bin, send};
use serde_json::json;

const ELECTION: Duration = Duration::from_secs(10);
const GROUPS: &str = "/api/v1/tenants/e2e/namespaces/ns/clientfailover/groups";

/// A COMMAND that logs `start SESSION EPOCH NANOS` and, on SIGTERM, `stop SESSION NANOS`.
fn child_script(log: &Path) -> String {
    let log = log.display();
    format!(
        "echo start $BATON_SESSION $BATON_EPOCH $(date +%s%N) >> {log}; \
         trap 'echo stop $BATON_SESSION $(date +%s%N) >> {log}; exit 0' TERM; \
         while true; do sleep 0.02; done"
    )
}

struct Runner(Child);

impl Runner {
    fn start(urls: &str, session: &str, log: &Path) -> Self {
        Self::start_script(urls, session, &child_script(log))
    }

    fn start_script(urls: &str, session: &str, script: &str) -> Self {
        let child = Command::new(baton_bin())
            .args(["run", "--group", "e2e/ns/g", "--session", session, "--grace-seconds", "1"])
            .args(["--", "sh", "-c", script])
            .env("BATON_URL", urls)
            .env("BATON_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("baton run starts");
        Self(child)
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the runner did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Line {
    Start { session: String, epoch: u64, at: u128 },
    Stop { session: String, at: u128 },
}

fn lines(log: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                ["start", s, e, at] => Some(Line::Start {
                    session: s.into(),
                    epoch: e.parse().ok()?,
                    at: at.parse().ok()?,
                }),
                ["stop", s, at] => Some(Line::Stop { session: s.into(), at: at.parse().ok()? }),
                _ => None,
            }
        })
        .collect()
}

/// At most one child runs at any time: starts and stops alternate, each stop ending the
/// child that started before it.
fn assert_never_two_at_once(log: &Path) {
    let mut running: Option<String> = None;
    for line in lines(log) {
        match line {
            Line::Start { session, .. } => {
                assert!(
                    running.is_none(),
                    "{session} started while {running:?} ran: {:#?}",
                    lines(log)
                );
                running = Some(session);
            }
            Line::Stop { session, .. } => {
                assert_eq!(running.as_deref(), Some(session.as_str()), "{:#?}", lines(log));
                running = None;
            }
        }
    }
}

async fn wait_for(log: &Path, within: Duration, what: &str, check: impl Fn(&[Line]) -> bool) {
    let deadline = Instant::now() + within;
    while !check(&lines(log)) {
        assert!(Instant::now() < deadline, "{what}: {:#?}", lines(log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn started(session: &str) -> impl Fn(&[Line]) -> bool + '_ {
    move |l| l.iter().any(|x| matches!(x, Line::Start { session: s, .. } if s == session))
}

fn stops_of(l: &[Line], session: &str) -> usize {
    l.iter().filter(|x| matches!(x, Line::Stop { session: s, .. } if s == session)).count()
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

async fn setup(timeout: Duration) -> (TestCluster, String, PathBuf, tempfile::TempDir) {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let http = admin_client(Duration::from_secs(10));
    let body = json!({"Id": "g", "FailoverTimeout": timeout.as_millis() as u64});
    let created = send(&http, "POST", &format!("{}{GROUPS}", cluster.url(leader)), Some(body))
        .await
        .expect("create");
    assert_eq!(created.status, 201);
    let urls: Vec<String> = cluster.ids().iter().map(|id| cluster.url(*id)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("children.log");
    (cluster, urls.join(","), log, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_runs_only_on_the_holder_and_moves_on_demotion() {
    let (cluster, urls, log, _dir) = setup(Duration::from_secs(1)).await;
    let mut a = Runner::start(&urls, "a", &log);
    wait_for(&log, Duration::from_secs(10), "a's command starts", started("a")).await;
    let mut b = Runner::start(&urls, "b", &log);
    // b has joined and heartbeats, but a holds the baton: b's command must not start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!started("b")(&lines(&log)), "{:#?}", lines(&log));

    // An operator fails a over: a is told Secondary and stops its command; then b starts its
    // own, at a newer epoch.
    let http = admin_client(Duration::from_secs(10));
    let failover = format!("{}/groups/e2e/ns/g/failover", cluster.url(cluster.ids()[0]));
    let forced = send(&http, "POST", &failover, None).await.expect("failover");
    assert_eq!(forced.status, 202, "{forced:?}");
    wait_for(&log, Duration::from_secs(10), "b's command starts", started("b")).await;
    let l = lines(&log);
    let epoch = |who: &str| {
        l.iter().find_map(|x| match x {
            Line::Start { session, epoch, .. } if session == who => Some(*epoch),
            _ => None,
        })
    };
    assert!(epoch("b") > epoch("a"), "b runs at a newer epoch: {l:#?}");
    assert_eq!(stops_of(&l, "a"), 1, "a's command was stopped: {l:#?}");

    // SIGTERM to b's runner stops its command, and the runner exits 0.
    assert!(b.terminate().success());
    assert_eq!(stops_of(&lines(&log), "b"), 1);
    // a then gets the baton back once b's grant lapses.
    wait_for(&log, Duration::from_secs(10), "a's command starts again", |l| {
        l.iter().filter(|x| matches!(x, Line::Start { session, .. } if session == "a")).count() == 2
    })
    .await;
    assert!(a.terminate().success());
    assert_never_two_at_once(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_stops_before_the_grant_lapses_when_baton_is_unreachable() {
    let (cluster, urls, log, _dir) = setup(Duration::from_secs(2)).await;
    let _a = Runner::start(&urls, "a", &log);
    wait_for(&log, Duration::from_secs(10), "a's command starts", started("a")).await;
    let _b = Runner::start(&urls, "b", &log);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Baton disappears: every node frozen. a's last grant was answered at most half a timeout
    // ago (1 s) and is valid for the timeout (2 s); a's command must be gone before it lapses.
    let frozen_at = now_nanos();
    for id in cluster.ids() {
        cluster.pause(id);
    }
    wait_for(&log, Duration::from_secs(5), "a's command stops", |l| stops_of(l, "a") == 1).await;
    let stopped_at = lines(&log)
        .iter()
        .find_map(|x| match x {
            Line::Stop { session, at } if session == "a" => Some(*at),
            _ => None,
        })
        .expect("a stop");
    let after_freeze = Duration::from_nanos((stopped_at - frozen_at) as u64);
    assert!(after_freeze < Duration::from_secs(2), "stopped {after_freeze:?} after the freeze");

    // Baton comes back; a new leader re-arms every grant, and exactly one command runs again.
    for id in cluster.ids() {
        cluster.resume(id);
    }
    wait_for(&log, Duration::from_secs(20), "a command runs again", |l| {
        l.iter().filter(|x| matches!(x, Line::Start { .. })).count() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_never_two_at_once(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_exits_with_its_commands_status() {
    let (_cluster, urls, _log, _dir) = setup(Duration::from_secs(1)).await;
    let status = tokio::task::spawn_blocking(move || {
        Command::new(baton_bin())
            .args(["run", "--group", "e2e/ns/g", "--session", "once", "--", "sh", "-c"])
            .arg("test \"$BATON_EPOCH\" -ge 1 && test \"$BATON_GROUP\" = e2e/ns/g && exit 3")
            .env("BATON_URL", urls)
            .env("BATON_TOKEN", ADMIN_TOKEN)
            .status()
            .expect("runs")
    })
    .await
    .expect("joined");
    assert_eq!(
        status.code(),
        Some(3),
        "the command saw its epoch and group, and its status came back"
    );
}

/// Whether process `pid` has ended (gone, or a zombie nobody has reaped yet).
fn ended(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// A runner killed with SIGKILL cannot stop its command itself; left running, the command
/// would act as Primary with nobody heartbeating, while the group hands the baton on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_dies_with_a_runner_killed_outright() {
    let (_cluster, urls, _log, dir) = setup(Duration::from_secs(1)).await;
    let pid_file = dir.path().join("command.pid");
    let script = format!("echo $$ > {}; while true; do sleep 0.02; done", pid_file.display());
    let mut runner = Runner::start_script(&urls, "doomed", &script);
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let pid = std::fs::read_to_string(&pid_file).unwrap_or_default().trim().to_string();
        if !pid.is_empty() {
            break pid;
        }
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!ended(&pid), "the command runs");

    runner.0.kill().expect("SIGKILL the runner");
    runner.0.wait().expect("reap the runner");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !ended(&pid) {
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("the command {pid} outlived its runner");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
