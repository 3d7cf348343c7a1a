//! A node's Raft port runs forwarded requests with `RaftCoordinator::execute`, exactly as if
//! they had arrived at the node itself. A peer holding the cluster secret must still not be
//! able to make the leader propose a decision only the leader makes (a grant of the baton,
//! an expiry, a checkpoint, the bootstrap administrator), nor a write that names no caller.

use std::time::Duration;

use baton_api::Coordinator as _;
use baton_core::{
    Command, Epoch, GroupId, GroupKey, NamespaceId, Query, QueryResult, Reason, Scope, SessionId,
    Stage, TenantId,
};
use baton_net::RpcClient;
use baton_server::config::{Config, InitialMember};
use baton_server::leader::Clock;
use baton_server::proxy::{LeaderAnswer, LeaderRequest, Outcome};

const SECRET: &str = "leaders-own-test-secret-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_grant_or_a_write_without_a_caller_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (raft, api) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let config = Config {
        id: 1,
        cluster_secret: SECRET.into(),
        insecure_transport: true,
        raft_addr: raft.clone(),
        api_addr: api.clone(),
        data_dir: dir.path().join("node1"),
        initial_members: vec![InitialMember { id: 1, raft_addr: raft, api_addr: api }],
        ..Config::default()
    };
    let rpc = RpcClient::new(SECRET, None, None);
    let started = baton_server::node::start(&config, rpc, Clock::default()).await.expect("start");
    baton_server::node::form_cluster(&config, &started.raft).await.expect("formed");
    let node = started.coordinator.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let scope = Scope {
        tenant: TenantId::new("t1").expect("an id"),
        namespace: NamespaceId::new("ns").expect("an id"),
    };
    let key = GroupKey { scope, group: GroupId::new("g").expect("an id") };
    let grant = Command::Grant {
        group: key.clone(),
        session: SessionId::new("intruder").expect("an id"),
        stage: Stage::Primary,
        expected_epoch: Epoch(0),
        replaces: None,
        last_data_processed_time: None,
        reason: Reason::Vacant,
        considered: Vec::new(),
    };
    // Until the node leads, it answers NotLeader; then the refusal.
    let outcome = loop {
        match node.execute(LeaderRequest::Write(grant.clone(), None)).await {
            Outcome::NotLeader if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other,
        }
    };
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    let delete = Command::DeleteGroup { key: key.clone(), refuse_if_active: false, active: vec![] };
    let outcome = node.execute(LeaderRequest::Write(delete, None)).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "a write naming no caller: {outcome:?}");
    let checkpoint = Command::Checkpoint { groups: Vec::new() };
    let actor = baton_core::Actor {
        identity: baton_core::IdentityName::new("root").expect("a name"),
        from: None,
        request_key: None,
    };
    let outcome = node.execute(LeaderRequest::Write(checkpoint, Some(actor.clone()))).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "the leader's own, with a caller: {outcome:?}");
    // A hand-over only the detector asks for (a preemption, without a ready standby).
    let preempt = Command::RequestHandover {
        group: key.clone(),
        expected_epoch: Epoch(0),
        reason: Reason::Preempted,
        to: None,
        require_standby: false,
        standby_ready: false,
    };
    let outcome = node.execute(LeaderRequest::Write(preempt, Some(actor))).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "a detector's hand-over: {outcome:?}");
    // Nothing was proposed: the log holds only what the node wrote when it formed.
    let before = node.status().last_log_index;
    let outcome = node.execute(LeaderRequest::Write(grant, None)).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert_eq!(node.status().last_log_index, before);
    let read = node.execute(LeaderRequest::Read(Query::AllGroups)).await;
    let Outcome::Done(answer) = read else { panic!("{read:?}") };
    assert!(matches!(*answer, LeaderAnswer::Read(QueryResult::Groups(ref g)) if g.is_empty()));
    started.close(Duration::from_secs(5)).await;
}
