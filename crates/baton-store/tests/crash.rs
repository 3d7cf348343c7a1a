//! Crash safety: a child process appends and applies entries, acknowledging each on stdout
//! once `append` reports it flushed; the parent kills it with SIGKILL mid-stream, reopens the
//! store and checks that every acknowledged entry survived and that the state machine is
//! exactly the state at its stored applied index.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use baton_core::{
    Command as CoreCommand, GroupConfig, GroupId, GroupKey, NamespaceId, Query, QueryResult,
    Request, Scope, TenantId, Timestamp,
};
use baton_raft::typ::{Entry, LogId};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

const CHILD_ENV: &str = "BATON_STORE_CRASH_CHILD_DIR";
/// The child never writes more than this many entries; the parent kills it long before.
const MAX_ENTRIES: u64 = 100_000;
/// How many acknowledgements the parent waits for before it kills the child.
const KILL_AFTER_ACKS: u64 = 300;

fn scope() -> Scope {
    Scope {
        tenant: TenantId::new("tenant").expect("valid"),
        namespace: NamespaceId::new("ns").expect("valid"),
    }
}

fn entry(index: u64) -> Entry {
    let key = GroupKey { scope: scope(), group: GroupId::new(format!("g{index}")).expect("valid") };
    let config = GroupConfig::new(None, None, 10_000).expect("valid");
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(vec![Request {
            at: Timestamp(index),
            command: CoreCommand::CreateGroup { key, config, members: vec![] },
            actor: None,
        }]),
    }
}

/// The child: append one entry at a time, acknowledge it once flushed, then apply it.
async fn child(dir: &Path) {
    let store = baton_store::open(dir).expect("open");
    let (mut log, mut sm) = (store.log, store.state_machine);
    let mut out = std::io::stdout().lock();
    for index in 1..=MAX_ENTRIES {
        log.blocking_append([entry(index)]).await.expect("append");
        writeln!(out, "acked {index}").expect("stdout");
        out.flush().expect("stdout");
        sm.apply([entry(index)]).await.expect("apply");
    }
}

#[tokio::test]
async fn sigkill_mid_write_stream_loses_no_acknowledged_entry() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir)).await;
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "sigkill_mid_write_stream_loses_no_acknowledged_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut last_acked = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child stdout");
        if let Some(n) = line.strip_prefix("acked ") {
            last_acked = n.parse().expect("a number");
            if last_acked >= KILL_AFTER_ACKS {
                child.kill().expect("SIGKILL the child");
                break;
            }
        }
    }
    child.wait().expect("reap child");
    assert!(last_acked >= KILL_AFTER_ACKS, "the child stopped before it was killed");

    let store = baton_store::open(dir.path()).expect("reopen after crash");
    let (mut log, mut sm, closer) = (store.log, store.state_machine, store.closer);
    let state = log.get_log_state().await.expect("log state");
    let last = state.last_log_id.expect("entries survived").index;
    assert!(last >= last_acked, "acknowledged up to {last_acked} but the log ends at {last}");
    let entries = log.try_get_log_entries(1..=last).await.expect("read log");
    assert_eq!(entries.len() as u64, last, "the log has a hole");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.log_id.index, i as u64 + 1);
    }

    let (applied, _) = sm.applied_state().await.expect("applied state");
    let applied = applied.map_or(0, |id| id.index);
    assert!(applied <= last, "the state machine ran ahead of the log");
    let reader = sm.reader();
    let QueryResult::Groups(groups) = reader.query(&Query::Groups(scope())) else {
        panic!("a groups query answers with groups")
    };
    assert_eq!(
        groups.len() as u64,
        applied,
        "the state machine must match its applied index exactly"
    );
    for index in 1..=applied {
        let key =
            GroupKey { scope: scope(), group: GroupId::new(format!("g{index}")).expect("valid") };
        assert!(
            matches!(reader.query(&Query::Group(key)), QueryResult::Group(Some(_))),
            "group g{index} is missing"
        );
    }
    // Close the database here, not on another thread while the process exits.
    drop((log, sm, reader));
    assert!(closer.close(std::time::Duration::from_secs(10)), "the store is still in use");
}
