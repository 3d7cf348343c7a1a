//! The wire format of the Raft port's framed connections, shared by both ends.
//!
//! ```text
//! client ─▶ PREFACE, then the handshake of `handshake.rs`: each side proves the cluster
//!           secret without sending it, and the server answers ACCEPTED with its proof, or
//!           REFUSED and closes
//! then, one exchange at a time:
//! client ─▶ kind (u8: APPEND, VOTE, SNAPSHOT, FORWARD), body length (u32, big-endian),
//!           postcard body
//! server ─▶ status (u8: ANSWER, or REJECTED with a UTF-8 reason), body length, body
//! ```
//!
//! An HTTP client's first bytes (`POST /…`, or HTTP/2's `PRI * HTTP/2.0`) never equal
//! [`PREFACE`], so the same port serves both.

use std::io;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first bytes a framed client sends.
pub const PREFACE: &[u8] = b"BATON-RAFT/2\n";
/// The TLS application protocol a framed client asks for (the Raft port offers it beside
/// HTTP/2).
pub(crate) const ALPN: &[u8] = b"baton-raft/1";
/// Kind of a request frame: AppendEntries.
pub(crate) const APPEND: u8 = 1;
/// Kind of a request frame: Vote.
pub const VOTE: u8 = 2;
/// Kind of a request frame: InstallSnapshot.
pub(crate) const SNAPSHOT: u8 = 3;
/// Kind of a request frame: a batch of requests forwarded to the leader (`forward.rs`); the
/// body is a sequence of requests, the answer's body the sequence of their answers.
pub const FORWARD: u8 = 4;
/// The server's answer to a client that proved an accepted secret.
pub const ACCEPTED: u8 = 0;
/// The server's answer to a client that did not.
pub const REFUSED: u8 = 1;
/// Status of a response frame: the body is the postcard-encoded RPC result.
pub(crate) const ANSWER: u8 = 0;
/// Status of a response frame: the request was not handled; the body says why.
pub(crate) const REJECTED: u8 = 1;

/// Anything a framed connection can run over: TCP, or TLS over TCP.
pub trait AsyncIo: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> AsyncIo for T {}

/// A whole frame, ready to write in one call: `tag`, length, then `value` in postcard.
pub(crate) fn encode<T: Serialize>(tag: u8, value: &T) -> Vec<u8> {
    let header = vec![tag, 0, 0, 0, 0];
    let mut frame = postcard::to_extend(value, header)
        .expect("postcard encodes Baton's RPC types without failing");
    set_length(&mut frame);
    frame
}

/// A whole frame carrying raw `body` bytes.
pub(crate) fn encode_bytes(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.extend_from_slice(&[tag, 0, 0, 0, 0]);
    frame.extend_from_slice(body);
    set_length(&mut frame);
    frame
}

fn set_length(frame: &mut [u8]) {
    let length = u32::try_from(frame.len() - 5).unwrap_or(u32::MAX);
    frame[1..5].copy_from_slice(&length.to_be_bytes());
}

/// Writes a frame made by [`encode`] and flushes it (TLS holds writes until flushed).
pub(crate) async fn write<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}

/// Reads one frame: its tag and body. A body longer than `max` bytes is an error (the
/// connection cannot be resynchronised after it, so the caller closes it).
pub(crate) async fn read<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    r.read_exact(&mut header).await?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if length > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes is over the limit of {max}"),
        ));
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).await?;
    Ok((header[0], body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_reads_back_as_written() {
        let frame = encode(VOTE, &("term", 7u64));
        let mut read_side = &frame[..];
        let (tag, body) = read(&mut read_side, 1024).await.expect("a whole frame");
        assert_eq!(tag, VOTE);
        assert_eq!(postcard::from_bytes::<(String, u64)>(&body).expect("body"), ("term".into(), 7));
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_before_its_body_is_read() {
        let frame = encode_bytes(APPEND, &[7u8; 100]);
        let err = read(&mut &frame[..], 99).await.expect_err("over the limit");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_cut_frame_is_an_error_not_a_short_body() {
        let frame = encode_bytes(APPEND, &[7u8; 100]);
        let err = read(&mut &frame[..50], 1024).await.expect_err("cut");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn http_requests_never_begin_with_the_preface() {
        for first in [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], b"POST /forward HTTP/1.1\r\n"] {
            assert_ne!(&first[..PREFACE.len()], PREFACE);
        }
    }
}
