//! The framed Raft transport over real loopback sockets: openraft's `Connection` on one side,
//! `RaftPort` with a stand-in for openraft on the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_net::handshake::{self, Challenge, NONCE_LEN, PROOF_LEN, Side};
use baton_net::{ACCEPTED, Network, PREFACE, REFUSED, RaftPort, RpcClient, Rpcs};
use baton_raft::typ::{RPCError, RaftError, VoteRequest, VoteResponse};
use baton_raft::{NodeInfo, TypeConfig};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::{LeaderId, LogId, Vote};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "a-cluster-secret-of-some-length";
const DEADLINE: Duration = Duration::from_millis(300);

/// Grants every vote; counts the requests it answered. Its first answer takes `first_delay`.
#[derive(Default)]
struct StandIn {
    answered: AtomicUsize,
    first_delay: Option<Duration>,
}

impl Rpcs for StandIn {
    async fn answer(&self, _kind: u8, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let request: VoteRequest = postcard::from_bytes(&body).map_err(|e| e.to_string())?;
        if self.answered.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(delay) = self.first_delay
        {
            tokio::time::sleep(delay).await;
        }
        let answer: Result<VoteResponse, RaftError> =
            Ok(VoteResponse::new(request.vote, request.last_log_id, true));
        Ok(postcard::to_allocvec(&answer).expect("encode"))
    }
}

struct Peer {
    addr: String,
    stand_in: Arc<StandIn>,
    connections: Arc<AtomicUsize>,
}

/// A peer on a loopback port, serving framed connections the way the node's listener does
/// (reading the preface first). With `one_answer_each`, each connection ends after its first
/// request, as if the peer restarted in between.
async fn peer(stand_in: StandIn, one_answer_each: bool) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let stand_in = Arc::new(stand_in);
    let connections = Arc::new(AtomicUsize::new(0));
    let port = Arc::new(RaftPort::new(stand_in.clone(), 2, &[SECRET.into()], DEADLINE));
    let counted = connections.clone();
    let answered = stand_in.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, from)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let port = port.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut first = vec![0u8; PREFACE.len()];
                if stream.read_exact(&mut first).await.is_err() || first != PREFACE {
                    return;
                }
                if one_answer_each {
                    let before = answered.answered.load(Ordering::SeqCst);
                    // Checked each time the port waits for a request, so after the first
                    // answer the next wait ends the connection.
                    let stop = std::future::poll_fn(move |_| {
                        if answered.answered.load(Ordering::SeqCst) == before {
                            std::task::Poll::Pending
                        } else {
                            std::task::Poll::Ready(())
                        }
                    });
                    port.serve(stream, from, stop).await;
                } else {
                    port.serve(stream, from, std::future::pending()).await;
                }
            });
        }
    });
    Peer { addr, stand_in, connections }
}

async fn connection(secret: &str, addr: &str) -> baton_net::Connection {
    connect(&mut Network::new(RpcClient::new(secret, None, None), DEADLINE), addr).await
}

/// A new openraft client for the peer at `addr`, as openraft makes one for each replication
/// stream and each vote.
async fn connect(network: &mut Network, addr: &str) -> baton_net::Connection {
    let node = NodeInfo { raft_addr: addr.into(), api_addr: String::new() };
    RaftNetworkFactory::<TypeConfig>::new_client(network, 2, &node).await
}

fn vote_request(term: u64) -> VoteRequest {
    VoteRequest::new(Vote::new(term, 1), Some(LogId::new(LeaderId::new(1, 1), 9)))
}

async fn vote(connection: &mut baton_net::Connection, term: u64) -> Result<VoteResponse, RPCError> {
    connection.vote(vote_request(term), RPCOption::new(DEADLINE)).await
}

#[tokio::test]
async fn votes_round_trip_on_one_reused_connection() {
    let peer = peer(StandIn::default(), false).await;
    let mut network = Network::new(RpcClient::new(SECRET, None, None), DEADLINE);
    let mut connection = connect(&mut network, &peer.addr).await;
    for term in 1..=3 {
        let answer = vote(&mut connection, term).await.expect("granted");
        assert!(answer.vote_granted);
        assert_eq!(answer.vote, Vote::new(term, 1));
    }
    assert_eq!(peer.stand_in.answered.load(Ordering::SeqCst), 3);
    assert_eq!(peer.connections.load(Ordering::SeqCst), 1, "one connection for all three");

    // A later client for the same peer takes the idle connection the first one left.
    drop(connection);
    let mut again = connect(&mut network, &peer.addr).await;
    vote(&mut again, 4).await.expect("granted");
    assert_eq!(peer.connections.load(Ordering::SeqCst), 1, "the idle connection was reused");
}

#[tokio::test]
async fn a_peer_without_the_cluster_secret_is_refused_before_any_request_is_read_and_backed_off_from()
 {
    let peer = peer(StandIn::default(), false).await;
    let mut connection = connection("not-the-secret", &peer.addr).await;
    let err = vote(&mut connection, 1).await.expect_err("refused");
    // Nothing was sent: openraft backs off as from a peer it cannot reach.
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("cluster secret"), "{err}");
    assert_eq!(peer.stand_in.answered.load(Ordering::SeqCst), 0);
}

/// Opens a raw connection to `addr` and sends the preface, `client_nonce` and node 2's id (the
/// peer's); returns the stream and the server's nonce.
async fn challenged(addr: &str, client_nonce: &[u8; NONCE_LEN]) -> (TcpStream, [u8; NONCE_LEN]) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&[PREFACE, client_nonce, &2u64.to_be_bytes()].concat()).await.expect("send");
    let mut server_nonce = [0u8; NONCE_LEN];
    stream.read_exact(&mut server_nonce).await.expect("a challenge");
    (stream, server_nonce)
}

#[tokio::test]
async fn a_captured_handshake_replayed_on_a_new_connection_is_refused() {
    let peer = peer(StandIn::default(), false).await;
    let client_nonce = [7u8; NONCE_LEN];
    // A member's handshake, as an eavesdropper would have captured it.
    let (mut first, server_nonce) = challenged(&peer.addr, &client_nonce).await;
    let challenge = Challenge { node: 2, client_nonce, server_nonce };
    let captured = handshake::proof(SECRET.as_bytes(), Side::Client, &challenge);
    first.write_all(&captured).await.expect("send");
    assert_eq!(first.read_u8().await.expect("an answer"), ACCEPTED, "the member is accepted");
    // The same bytes on another connection: the server's challenge is new, so they fail.
    let (mut replay, fresh) = challenged(&peer.addr, &client_nonce).await;
    assert_ne!(fresh, server_nonce, "every connection gets a new challenge");
    replay.write_all(&captured).await.expect("send");
    assert_eq!(replay.read_u8().await.expect("an answer"), REFUSED);
    assert_eq!(replay.read(&mut [0u8; 8]).await.expect("closed"), 0, "then closed");
    assert_eq!(peer.stand_in.answered.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_listener_that_cannot_prove_the_secret_is_sent_no_request() {
    // An impostor at a member's address: it accepts any proof and answers with a made-up one.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let impostor = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut opening = vec![0u8; PREFACE.len() + NONCE_LEN + 8];
        stream.read_exact(&mut opening).await.expect("preface and nonce");
        stream.write_all(&[9u8; NONCE_LEN]).await.expect("challenge");
        let mut proof = [0u8; PROOF_LEN];
        stream.read_exact(&mut proof).await.expect("the client's proof");
        stream.write_all(&[&[ACCEPTED][..], &[0u8; PROOF_LEN]].concat()).await.expect("accept");
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(DEADLINE * 2, stream.read_to_end(&mut rest)).await;
        rest
    });
    let mut connection = connection(SECRET, &addr).await;
    let err = vote(&mut connection, 1).await.expect_err("not proven");
    assert!(err.to_string().contains("cluster secret"), "{err}");
    drop(connection);
    assert!(impostor.await.expect("impostor").is_empty(), "no request reached the impostor");
}

#[tokio::test]
async fn an_unreachable_peer_is_reported_unreachable_so_openraft_backs_off() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let mut connection = connection(SECRET, &addr).await;
    let err = vote(&mut connection, 1).await.expect_err("nobody listens");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
}

/// Something at a member's address that accepts connections and closes them at once (another
/// service, a node shutting down): nothing was sent to it, so it counts as unreachable and
/// openraft backs off. As a transport fault it was retried at once: a leader dialed such an
/// address hundreds of times a second.
#[tokio::test]
async fn a_peer_that_closes_during_the_handshake_is_reported_unreachable_so_openraft_backs_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let mut connection = connection(SECRET, &addr).await;
    let err = vote(&mut connection, 1).await.expect_err("closed at once");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn a_slow_answer_times_out_and_its_connection_is_never_reused() {
    let stand_in = StandIn { first_delay: Some(DEADLINE * 3), ..StandIn::default() };
    let peer = peer(stand_in, false).await;
    let mut connection = connection(SECRET, &peer.addr).await;
    let err = vote(&mut connection, 1).await.expect_err("too slow");
    assert!(matches!(err, RPCError::Network(_)), "{err:?}");
    assert!(err.to_string().contains("did not answer"), "{err}");
    // The late answer to term 1 must not be taken for the answer to term 2.
    let answer = vote(&mut connection, 2).await.expect("answered on a new connection");
    assert_eq!(answer.vote, Vote::new(2, 1));
    assert_eq!(peer.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_peer_closed_while_idle_is_replaced_without_an_error() {
    let peer = peer(StandIn::default(), true).await;
    let mut connection = connection(SECRET, &peer.addr).await;
    for term in 1..=3 {
        let answer = vote(&mut connection, term).await.expect("answered");
        assert_eq!(answer.vote, Vote::new(term, 1));
    }
    assert_eq!(peer.connections.load(Ordering::SeqCst), 3, "a new connection for each");
}

#[tokio::test]
async fn only_a_refused_connection_counts_as_nothing_listening() {
    let client = RpcClient::new(SECRET, Some("127.0.0.1".parse().expect("ip")), None);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let open = listener.local_addr().expect("addr").to_string();
    assert!(!client.refuses_connections(&open, DEADLINE).await, "something listens");
    drop(listener);
    assert!(client.refuses_connections(&open, DEADLINE).await, "nothing listens any more");
}
