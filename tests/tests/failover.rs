//! AVEVA failover end to end on three real `baton` processes, with three simulated adapters
//! heartbeating every FailoverTimeout / 2: a silent Primary hands over through PendingPrimary,
//! and killing (SIGKILL) or freezing (SIGSTOP) the Baton leader causes no false failover and
//! never two valid grants. The invariants are the core's checkers, over what the adapters saw.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_core::Role;
use baton_core::invariants::{
    at_most_one_valid_grant, epochs_only_grow, failover_only_after_silence,
};
use baton_e2e::TestCluster;
use baton_e2e::adapter::{Adapter, AdapterConfig, Journal, answers_of, observations};
use serde_json::json;

const FAILOVER_TIMEOUT: Duration = Duration::from_secs(2);
const ELECTION: Duration = Duration::from_secs(10);
const GROUP_PATH: &str = "/api/v1/tenants/e2e/namespaces/plant/clientfailover/groups/collectors";

fn assert_invariants(journal: &Journal) {
    let seen = observations(journal);
    at_most_one_valid_grant(&seen).unwrap_or_else(|v| panic!("{v:?}"));
    epochs_only_grow(&seen).unwrap_or_else(|v| panic!("{v:?}"));
    failover_only_after_silence(&seen, FAILOVER_TIMEOUT.as_millis() as u64, &[])
        .unwrap_or_else(|v| panic!("{v:?}"));
}

/// The role and epoch of a session's last answer.
fn last_role(journal: &Journal, session: &str) -> Option<(Role, u64)> {
    answers_of(journal, session).last().map(|a| (a.observation.role, a.observation.epoch.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_fail_over_and_survive_baton_leader_kill_and_pause() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let groups = "/api/v1/tenants/e2e/namespaces/plant/clientfailover/groups";
    let path = cluster
        .create_failover_group(leader, groups, "collectors", FAILOVER_TIMEOUT, &["a", "b", "c"])
        .await;
    assert_eq!(path, GROUP_PATH);

    let journal: Journal = Arc::new(Mutex::new(Vec::new()));
    let config = AdapterConfig::new(
        &cluster,
        &cluster.ids(),
        GROUP_PATH,
        "collectors",
        FAILOVER_TIMEOUT,
        Instant::now(),
    );
    // a joins first and becomes Primary; b (95) and c (80) follow.
    let a = Adapter::start(config.clone(), "a", 100.0, journal.clone());
    cluster
        .wait_until(ELECTION, "a is Primary", || async {
            (last_role(&journal, "a")?.0 == Role::Primary).then_some(())
        })
        .await;
    // b scores within the preemption margin of a, so a returning later does not preempt it.
    let b = Adapter::start(config.clone(), "b", 95.0, journal.clone());
    let c = Adapter::start(config.clone(), "c", 80.0, journal.clone());
    tokio::time::sleep(FAILOVER_TIMEOUT * 2).await;
    assert_eq!(last_role(&journal, "a"), Some((Role::Primary, 1)));
    assert_eq!(last_role(&journal, "b").map(|r| r.0), Some(Role::Secondary));

    // 1. The Primary adapter stops: b (best score) becomes PendingPrimary, told a's last data
    //    time, then Primary.
    a.stop().await;
    let a_last = answers_of(&journal, "a").last().cloned().expect("a answered");
    let pending = cluster
        .wait_until(FAILOVER_TIMEOUT * 4, "b is PendingPrimary", || async {
            answers_of(&journal, "b")
                .into_iter()
                .find(|x| x.observation.role == Role::PendingPrimary)
        })
        .await;
    assert_eq!(
        pending.last_data_processed_time.as_deref(),
        Some(a_last.sent_last_data.as_str()),
        "b resumes from a's data"
    );
    assert_eq!(pending.observation.epoch.0, 2);
    let handover = pending.observation.received_at - a_last.observation.sent_at;
    assert!(
        handover >= FAILOVER_TIMEOUT.as_millis() as u64,
        "b got the baton {handover} ms after a's last heartbeat: before a's grant lapsed"
    );
    assert!(handover < FAILOVER_TIMEOUT.as_millis() as u64 + 2_000, "hand-over took {handover} ms");
    cluster
        .wait_until(FAILOVER_TIMEOUT * 2, "b is Primary", || async {
            (last_role(&journal, "b")? == (Role::Primary, 2)).then_some(())
        })
        .await;

    // 2. a comes back: it is told Secondary.
    let answered_before = answers_of(&journal, "a").len();
    let a = Adapter::start(config.clone(), "a", 100.0, journal.clone());
    cluster
        .wait_until(FAILOVER_TIMEOUT * 2, "a answered again", || async {
            (answers_of(&journal, "a").len() > answered_before).then_some(())
        })
        .await;
    assert_eq!(last_role(&journal, "a").map(|r| r.0), Some(Role::Secondary));

    // 3. SIGKILL the Baton leader while the adapters heartbeat: no failover.
    let before_kill = journal.lock().expect("journal").len();
    let leader = cluster.wait_for_leader(ELECTION).await;
    cluster.kill(leader);
    cluster.wait_for_leader(ELECTION).await;
    tokio::time::sleep(FAILOVER_TIMEOUT * 2).await;
    let after_kill: Vec<_> = journal.lock().expect("journal")[before_kill..].to_vec();
    assert!(after_kill.iter().any(|x| x.observation.session == "b"), "b kept heartbeating");
    for x in &after_kill {
        let expected = if x.observation.session == "b" { Role::Primary } else { Role::Secondary };
        assert_eq!(
            (x.observation.role, x.observation.epoch.0),
            (expected, 2),
            "after the leader's SIGKILL: {x:?}"
        );
    }
    cluster.restart(leader);
    cluster.wait_converged(ELECTION).await;

    // 4. SIGSTOP the Baton leader for longer than an election timeout, then resume it.
    let before_pause = journal.lock().expect("journal").len();
    let leader = cluster.wait_for_leader(ELECTION).await;
    cluster.pause(leader);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster.resume(leader);
    tokio::time::sleep(FAILOVER_TIMEOUT * 2).await;
    let after_pause: Vec<_> = journal.lock().expect("journal")[before_pause..].to_vec();
    for x in &after_pause {
        let expected = if x.observation.session == "b" { Role::Primary } else { Role::Secondary };
        assert_eq!(
            (x.observation.role, x.observation.epoch.0),
            (expected, 2),
            "after the leader's SIGSTOP: {x:?}"
        );
    }

    // Every node reports the same status, while the adapters still run (once they stop, the
    // baton moves on to whichever heartbeated last, after the timeout).
    let digest = cluster.wait_converged(ELECTION).await;
    assert_eq!(digest["groups"], json!(1));
    for id in cluster.live() {
        let (code, status) =
            cluster.get_json(id, &format!("{GROUP_PATH}/status")).await.expect("answers");
        assert_eq!(
            (code, &status["Primary"], &status["Epoch"]),
            (200, &json!("b"), &json!(2)),
            "node {id}: {status}"
        );
    }
    for adapter in [a, b, c] {
        adapter.stop().await;
    }
    assert_invariants(&journal);
}
