//! Early replication over real loopback sockets: what `Followers` learns from openraft's own
//! AppendEntries (sent through a `Connection`), and the early AppendEntries it sends to a
//! follower in step, received by `RaftPort` with a stand-in for openraft.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_net::{Followers, Network, PREFACE, RaftPort, RpcClient, Rpcs};
use baton_raft::typ::{AppendEntriesRequest, AppendEntriesResponse, Entry, LogId, RaftError, Vote};
use baton_raft::{NodeInfo, TypeConfig};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::{CommittedLeaderId, EntryPayload};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const SECRET: &str = "a-cluster-secret-of-some-length";
const DEADLINE: Duration = Duration::from_millis(500);

/// What a stand-in follower was sent: its previous log id, entry indexes and commit index.
type Received = (Option<LogId>, Vec<u64>, Option<LogId>);

/// Records each AppendEntries; answers success, or a conflict while `refusing`.
#[derive(Default)]
struct Follower {
    received: Mutex<Vec<Received>>,
    refusing: AtomicBool,
}

impl Rpcs for Follower {
    async fn answer(&self, _kind: u8, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let request: AppendEntriesRequest =
            postcard::from_bytes(&body).map_err(|e| e.to_string())?;
        let indexes = request.entries.iter().map(|e| e.log_id.index).collect();
        self.received.lock().expect("lock").push((
            request.prev_log_id,
            indexes,
            request.leader_commit,
        ));
        let answer: Result<AppendEntriesResponse, RaftError> =
            Ok(if self.refusing.load(Ordering::SeqCst) {
                AppendEntriesResponse::Conflict
            } else {
                AppendEntriesResponse::Success
            });
        Ok(postcard::to_allocvec(&answer).expect("encode"))
    }
}

/// A follower on a loopback port, serving framed connections as the node's listener does.
async fn follower() -> (String, Arc<Follower>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let follower = Arc::new(Follower::default());
    let port = Arc::new(RaftPort::new(follower.clone(), 2, &[SECRET.into()], DEADLINE));
    tokio::spawn(async move {
        while let Ok((mut stream, from)) = listener.accept().await {
            let port = port.clone();
            tokio::spawn(async move {
                let mut first = vec![0u8; PREFACE.len()];
                if stream.read_exact(&mut first).await.is_ok() && first == PREFACE {
                    port.serve(stream, from, std::future::pending()).await;
                }
            });
        }
    });
    (addr, follower)
}

fn id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(2, 1), index)
}

fn entry(index: u64) -> Entry {
    Entry { log_id: id(index), payload: EntryPayload::Blank }
}

fn append(vote: Vote, prev: Option<u64>, entries: &[u64]) -> AppendEntriesRequest {
    AppendEntriesRequest {
        vote,
        prev_log_id: prev.map(id),
        entries: entries.iter().copied().map(entry).collect(),
        leader_commit: None,
    }
}

/// A leader's network to one follower at `addr` (node 2), and what it knows of followers.
async fn leader_to(addr: &str) -> (baton_net::Connection, Followers) {
    let client = RpcClient::new(SECRET, None, None);
    let mut network = Network::new(client, DEADLINE);
    let node = NodeInfo { raft_addr: addr.into(), api_addr: String::new() };
    let connection = RaftNetworkFactory::<TypeConfig>::new_client(&mut network, 2, &node).await;
    (connection, network.followers())
}

fn option() -> RPCOption {
    RPCOption::new(DEADLINE)
}

/// Waits (at most 2 s) until the follower has received `n` requests; returns them.
async fn received(follower: &Follower, n: usize) -> Vec<Received> {
    for _ in 0..200 {
        let got = follower.received.lock().expect("lock").clone();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    follower.received.lock().expect("lock").clone()
}

#[tokio::test]
async fn a_follower_is_in_step_exactly_where_its_last_success_left_it() {
    let (addr, follower) = follower().await;
    let (mut connection, followers) = leader_to(&addr).await;
    let vote = Vote::new_committed(2, 1);
    assert!(!followers.wants(&vote, &id(3)), "nothing is known before any answer");

    connection.append_entries(append(vote, Some(1), &[2, 3]), option()).await.expect("sent");
    assert!(followers.wants(&vote, &id(3)));
    assert!(!followers.wants(&vote, &id(2)), "only at the end of its log");
    assert!(!followers.wants(&Vote::new_committed(3, 1), &id(3)), "only under the same vote");

    follower.refusing.store(true, Ordering::SeqCst);
    connection.append_entries(append(vote, Some(3), &[4]), option()).await.expect("sent");
    assert!(!followers.wants(&vote, &id(3)), "a refusal leaves nothing known");
    assert!(!followers.wants(&vote, &id(4)));
}

#[tokio::test]
async fn entries_sent_early_reach_a_follower_in_step_and_no_other() {
    let (addr, follower) = follower().await;
    let (mut connection, followers) = leader_to(&addr).await;
    let vote = Vote::new_committed(2, 1);
    connection.append_entries(append(vote, None, &[1]), option()).await.expect("sent");

    followers.send(vote, id(5), vec![entry(6)], Some(id(1)));
    followers.send(vote, id(1), vec![entry(2), entry(3)], Some(id(1)));
    let got = received(&follower, 2).await;
    assert_eq!(got, vec![(None, vec![1], None), (Some(id(1)), vec![2, 3], Some(id(1)))]);
    assert_eq!(followers.sent_early(), 1, "the append after 5 had no follower in step");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(follower.received.lock().expect("lock").len(), 2, "nothing else arrives");
}
