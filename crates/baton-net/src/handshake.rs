//! How the two ends of a framed connection prove to each other that they hold the cluster
//! secret without sending it: a challenge and response each way, HMAC-SHA256 over fresh
//! nonces from both sides.
//!
//! ```text
//! client ─▶ PREFACE, client nonce (32 bytes), the node id it means to reach (u64, BE)
//! server ─▶ server nonce (32 bytes), or REFUSED at once when the id is not its own
//! client ─▶ proof: HMAC(secret, "baton-raft client" ‖ id ‖ client nonce ‖ server nonce)
//! server ─▶ ACCEPTED and its own proof, HMAC(secret, "baton-raft server" ‖ id ‖ client
//!           nonce ‖ server nonce), made with the secret that matched; or REFUSED, and it
//!           closes
//! ```
//!
//! - The secret never crosses the wire, so one captured handshake gives an eavesdropper
//!   nothing to guess with offline beyond one HMAC per guess, and nothing to present.
//! - A captured client proof is bound to the server's nonce, new for every connection, so it
//!   proves nothing on another connection; a captured server proof is bound to the client's.
//! - The dialing node checks the server's proof before it sends any request, so a host that
//!   only listens at a member's address is never handed a forwarded caller's request.
//! - Both proofs name the node the dialer means to reach, and a node accepts only its own id:
//!   a host answering at one member's address (a stale address, a name it took over) cannot
//!   pass the handshake a member began with it on to another member.
//! - What it does not do: bind the proof to the channel. Someone on the path between two
//!   members can relay their handshake and then take over the connection; `raft_tls` closes
//!   that.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::frame;

/// Bytes of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;

/// Which end of a connection a proof comes from: the two are made different so that one
/// side's proof is never an answer the other side would accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The node that opened the connection.
    Client,
    /// The node that accepted it.
    Server,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Client => b"baton-raft client",
            Self::Server => b"baton-raft server",
        }
    }
}

/// The nonces and the node a connection's proofs are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The node the dialer means to reach.
    pub node: u64,
    /// The dialer's nonce.
    pub client_nonce: [u8; NONCE_LEN],
    /// The accepting node's nonce.
    pub server_nonce: [u8; NONCE_LEN],
}

/// The proof that `side` holds `secret`, for the connection of `challenge`.
pub fn proof(secret: &[u8], side: Side, challenge: &Challenge) -> [u8; PROOF_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), &message(side, challenge));
    let mut proof = [0u8; PROOF_LEN];
    proof.copy_from_slice(tag.as_ref());
    proof
}

fn message(side: Side, challenge: &Challenge) -> Vec<u8> {
    let node = challenge.node.to_be_bytes();
    [side.label(), &node, &challenge.client_nonce, &challenge.server_nonce].concat()
}

/// Which of `secrets`, if any, made `presented` (compared in constant time, and every secret
/// is tried, so the time taken does not tell which matched).
fn matching<'a>(
    secrets: &'a [Vec<u8>],
    side: Side,
    challenge: &Challenge,
    presented: &[u8],
) -> Option<&'a [u8]> {
    let message = message(side, challenge);
    secrets.iter().fold(None, |found, secret| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let matched = hmac::verify(&key, &message, presented).is_ok();
        found.or(matched.then_some(secret.as_slice()))
    })
}

/// A fresh nonce from the system's random source.
pub(crate) fn nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).expect("the system's random source works");
    nonce
}

/// Why a handshake did not end in a proven connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failed {
    /// The connection broke or closed during it.
    #[error("the handshake broke off: {0}")]
    Io(#[from] std::io::Error),
    /// The other side's proof was not made with a secret this side accepts.
    #[error("the cluster secret was not proven")]
    Unproven,
    /// The dialer meant another node than the one it reached (a stale address).
    #[error("the node reached is not the node meant")]
    OtherNode,
}

/// The dialing side, from its first byte: sends the preface, a nonce and the id of `node`,
/// the node it means to reach; answers that node's challenge; checks its proof.
pub(crate) async fn dial<Io: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io,
    secret: &[u8],
    node: u64,
) -> Result<(), Failed> {
    let client_nonce = nonce();
    frame::write(io, &[frame::PREFACE, &client_nonce, &node.to_be_bytes()].concat()).await?;
    let mut server_nonce = [0u8; NONCE_LEN];
    io.read_exact(&mut server_nonce[..1]).await?;
    io.read_exact(&mut server_nonce[1..]).await.map_err(|e| match e.kind() {
        // A refusal is one byte and a close: this node is not the one meant.
        std::io::ErrorKind::UnexpectedEof => Failed::OtherNode,
        _ => Failed::Io(e),
    })?;
    let challenge = Challenge { node, client_nonce, server_nonce };
    frame::write(io, &proof(secret, Side::Client, &challenge)).await?;
    if io.read_u8().await? != frame::ACCEPTED {
        return Err(Failed::Unproven);
    }
    let mut theirs = [0u8; PROOF_LEN];
    io.read_exact(&mut theirs).await?;
    let secrets = [secret.to_vec()];
    match matching(&secrets, Side::Server, &challenge, &theirs) {
        Some(_) => Ok(()),
        None => Err(Failed::Unproven),
    }
}

/// The accepting side of node `me`, after the preface was read: refuses a dialer that means
/// another node, challenges it, checks its proof against each of `secrets`, and proves itself
/// with the one that matched. A client refused is told so and must be closed.
pub(crate) async fn answer<Io: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io,
    me: u64,
    secrets: &[Vec<u8>],
) -> Result<(), Failed> {
    let mut client_nonce = [0u8; NONCE_LEN];
    io.read_exact(&mut client_nonce).await?;
    let node = io.read_u64().await?;
    if node != me {
        let _ = frame::write(io, &[frame::REFUSED]).await;
        return Err(Failed::OtherNode);
    }
    let challenge = Challenge { node, client_nonce, server_nonce: nonce() };
    frame::write(io, &challenge.server_nonce).await?;
    let mut theirs = [0u8; PROOF_LEN];
    io.read_exact(&mut theirs).await?;
    match matching(secrets, Side::Client, &challenge, &theirs) {
        Some(secret) => {
            let ours = proof(secret, Side::Server, &challenge);
            frame::write(io, &[&[frame::ACCEPTED][..], &ours].concat()).await?;
            Ok(())
        }
        None => {
            let _ = frame::write(io, &[frame::REFUSED]).await;
            Err(Failed::Unproven)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    /// Runs both sides over an in-memory pipe, the dialer meaning node 2 and node 2 answering;
    /// returns each side's result and every byte the client sent.
    async fn run(
        client_secret: &str,
        server_secrets: &[&str],
    ) -> (Result<(), Failed>, Result<(), Failed>, Vec<u8>) {
        run_between(client_secret, 2, server_secrets, 2).await
    }

    /// [`run`] with the node the dialer means, `dialed`, and the answering node, `me`.
    async fn run_between(
        client_secret: &str,
        dialed: u64,
        server_secrets: &[&str],
        me: u64,
    ) -> (Result<(), Failed>, Result<(), Failed>, Vec<u8>) {
        let (mut near, far) = tokio::io::duplex(4096);
        let (mut far_read, mut far_write) = tokio::io::split(far);
        let secrets = secrets(server_secrets);
        let server = tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut preface = vec![0u8; frame::PREFACE.len()];
            far_read.read_exact(&mut preface).await.expect("preface");
            sent.extend_from_slice(&preface);
            let mut recording = Recording { read: far_read, seen: &mut sent };
            let mut io = tokio::io::join(&mut recording, &mut far_write);
            let result = answer(&mut io, me, &secrets).await;
            (result, sent)
        });
        let client = dial(&mut near, client_secret.as_bytes(), dialed).await;
        drop(near);
        let (server, sent) = server.await.expect("server task");
        (client, server, sent)
    }

    /// Keeps a copy of what it reads.
    struct Recording<'a, R> {
        read: R,
        seen: &'a mut Vec<u8>,
    }

    impl<R: AsyncRead + Unpin> AsyncRead for Recording<'_, R> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let this = &mut *self;
            let polled = std::pin::Pin::new(&mut this.read).poll_read(cx, buf);
            this.seen.extend_from_slice(&buf.filled()[before..]);
            polled
        }
    }

    #[tokio::test]
    async fn both_sides_prove_the_secret_and_it_never_crosses_the_wire() {
        let secret = "a-cluster-secret-of-some-length";
        let (client, server, sent) = run(secret, &[secret]).await;
        assert!(client.is_ok() && server.is_ok(), "{client:?} {server:?}");
        assert!(!sent.windows(8).any(|w| secret.as_bytes().windows(8).any(|s| s == w)));
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_on_both_sides() {
        let (client, server, _) =
            run("not-the-secret-at-all", &["a-cluster-secret-of-some-length"]).await;
        assert!(matches!(client, Err(Failed::Unproven)), "{client:?}");
        assert!(matches!(server, Err(Failed::Unproven)), "{server:?}");
    }

    #[tokio::test]
    async fn during_a_rotation_either_secret_is_accepted() {
        for client in ["the-new-secret-of-the-cluster", "the-old-secret-of-the-cluster"] {
            let (dialed, answered, _) =
                run(client, &["the-new-secret-of-the-cluster", "the-old-secret-of-the-cluster"])
                    .await;
            assert!(dialed.is_ok() && answered.is_ok(), "{client}: {dialed:?} {answered:?}");
        }
    }

    #[tokio::test]
    async fn a_node_refuses_a_dialer_that_means_another_node() {
        let secret = "a-cluster-secret-of-some-length";
        let (client, server, sent) = run_between(secret, 3, &[secret], 2).await;
        assert!(matches!(client, Err(Failed::OtherNode)), "{client:?}");
        assert!(matches!(server, Err(Failed::OtherNode)), "{server:?}");
        assert_eq!(sent.len(), frame::PREFACE.len() + NONCE_LEN + 8, "refused before any proof");
    }

    #[test]
    fn a_proof_holds_only_for_its_own_nonces_node_and_side() {
        let secret = b"a-cluster-secret-of-some-length";
        let challenge = Challenge { node: 2, client_nonce: nonce(), server_nonce: nonce() };
        assert_ne!(challenge.client_nonce, challenge.server_nonce, "nonces are fresh");
        let client = proof(secret, Side::Client, &challenge);
        let all = secrets(&["a-cluster-secret-of-some-length"]);
        assert!(matching(&all, Side::Client, &challenge, &client).is_some());
        let other_nonce = Challenge { server_nonce: nonce(), ..challenge };
        assert!(matching(&all, Side::Client, &other_nonce, &client).is_none(), "another nonce");
        let other_node = Challenge { node: 3, ..challenge };
        assert!(matching(&all, Side::Client, &other_node, &client).is_none(), "another node");
        assert!(matching(&all, Side::Server, &challenge, &client).is_none(), "the other side");
    }
}
