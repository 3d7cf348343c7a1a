//! Signed request parameters, as Uplynk's public `api_auth` sample makes them:
//! `msg = base64(zlib(json {"_owner": <user>, "_timestamp": <unix seconds>}))` and
//! `sig = hex(HMAC-SHA256(key = the owner's API key, data = msg))`, both in the query string.

use std::io::Read as _;

use base64::Engine as _;
use baton_core::IdentityName;
use ring::hmac;

/// How far behind the node's clock a request's timestamp may be, in seconds.
pub const MAX_SKEW_SECS: i64 = 300;
/// How far ahead of the node's clock a request's timestamp may be, in seconds: a signature
/// made for the future would stay usable (and replayable) that much longer than
/// [`MAX_SKEW_SECS`].
pub const MAX_AHEAD_SECS: i64 = 30;
/// Most bytes a decompressed `msg` may have (a zlib bomb stops here).
const MAX_MSG_BYTES: u64 = 4 * 1024;

/// Why signed parameters were refused. Messages never repeat a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    /// `msg` is not base64 of zlib-compressed JSON with `_owner` and `_timestamp`.
    #[error("msg is malformed: {0}")]
    Malformed(&'static str),
    /// The timestamp is more than [`MAX_SKEW_SECS`] behind now or [`MAX_AHEAD_SECS`] ahead.
    #[error(
        "the timestamp is more than {MAX_SKEW_SECS} seconds behind or {MAX_AHEAD_SECS} seconds ahead of the server's clock"
    )]
    Stale,
    /// `sig` is not the signature of `msg` with the owner's key.
    #[error("the signature does not match")]
    BadSignature,
}

/// What a `msg` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedParams {
    /// `_owner`: the identity the request claims to come from.
    pub owner: IdentityName,
    /// `_timestamp`: when it was made, in Unix seconds.
    pub timestamp: i64,
}

/// Decodes `msg` (without checking any signature) and checks its timestamp against `now`.
pub fn decode_msg(msg: &str, now_secs: i64) -> Result<SignedParams, SignedError> {
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(msg.trim())
        .map_err(|_| SignedError::Malformed("not base64"))?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .take(MAX_MSG_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|_| SignedError::Malformed("not zlib-compressed"))?;
    if json.len() as u64 > MAX_MSG_BYTES {
        return Err(SignedError::Malformed("too long"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| SignedError::Malformed("not JSON"))?;
    let owner = value
        .get("_owner")
        .and_then(serde_json::Value::as_str)
        .and_then(|o| IdentityName::new(o).ok())
        .ok_or(SignedError::Malformed("no valid _owner"))?;
    let timestamp = value
        .get("_timestamp")
        .and_then(|t| t.as_i64().or_else(|| t.as_f64().map(|f| f as i64)))
        .ok_or(SignedError::Malformed("no _timestamp"))?;
    let age = i128::from(now_secs) - i128::from(timestamp);
    if age > i128::from(MAX_SKEW_SECS) || -age > i128::from(MAX_AHEAD_SECS) {
        return Err(SignedError::Stale);
    }
    Ok(SignedParams { owner, timestamp })
}

/// Whether `sig` (hex) is the HMAC-SHA256 of the `msg` text under `key`, compared in constant
/// time.
pub fn verify_sig(key: &[u8], msg: &str, sig: &str) -> Result<(), SignedError> {
    let sig = sig.trim();
    if sig.len() != 64 {
        return Err(SignedError::BadSignature);
    }
    let bytes = crate::hex::decode(sig).ok_or(SignedError::BadSignature)?;
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), msg.as_bytes(), &bytes)
        .map_err(|_| SignedError::BadSignature)
}

/// Makes `msg` and `sig` for `owner` at `timestamp` (what a client library does).
pub fn sign(owner: &str, timestamp: i64, key: &[u8]) -> (String, String) {
    use std::io::Write as _;
    let json = serde_json::json!({"_owner": owner, "_timestamp": timestamp}).to_string();
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
    encoder.write_all(json.as_bytes()).expect("writing to memory cannot fail");
    let compressed = encoder.finish().expect("compressing in memory cannot fail");
    let msg = base64::engine::general_purpose::STANDARD.encode(compressed);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg.as_bytes());
    let sig = crate::hex::encode(tag.as_ref());
    (msg, sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"the-owners-api-key";

    #[test]
    fn a_signed_request_verifies() {
        let (msg, sig) = sign("e8d6b5cb940c40cc9ec6ad081a38f3f0", 1_000_000, KEY);
        let params = decode_msg(&msg, 1_000_010).expect("decodes");
        assert_eq!(params.owner.as_str(), "e8d6b5cb940c40cc9ec6ad081a38f3f0");
        assert_eq!(verify_sig(KEY, &msg, &sig), Ok(()));
    }

    #[test]
    fn a_wrong_key_or_tampered_msg_is_refused() {
        let (msg, sig) = sign("alice", 1_000_000, KEY);
        assert_eq!(verify_sig(b"another-key", &msg, &sig), Err(SignedError::BadSignature));
        let (other, _) = sign("mallory", 1_000_000, KEY);
        assert_eq!(verify_sig(KEY, &other, &sig), Err(SignedError::BadSignature));
        assert_eq!(verify_sig(KEY, &msg, "zz"), Err(SignedError::BadSignature));
    }

    #[test]
    fn timestamps_five_minutes_behind_or_half_a_minute_ahead_are_refused() {
        let (msg, _) = sign("alice", 1_000_000, KEY);
        assert!(decode_msg(&msg, 1_000_000 + MAX_SKEW_SECS).is_ok());
        assert_eq!(decode_msg(&msg, 1_000_000 + MAX_SKEW_SECS + 1), Err(SignedError::Stale));
        // Made for the future: at most half a minute ahead.
        assert!(decode_msg(&msg, 1_000_000 - MAX_AHEAD_SECS).is_ok());
        assert_eq!(decode_msg(&msg, 1_000_000 - MAX_AHEAD_SECS - 1), Err(SignedError::Stale));
        // Timestamps at the ends of the range neither overflow nor pass.
        for extreme in [i64::MIN, i64::MAX] {
            let (msg, _) = sign("alice", extreme, KEY);
            assert_eq!(decode_msg(&msg, 1_000_000), Err(SignedError::Stale));
        }
    }

    #[test]
    fn malformed_msgs_are_refused() {
        let not_zlib = base64::engine::general_purpose::STANDARD.encode(b"{}");
        for bad in ["%%%", not_zlib.as_str(), ""] {
            assert!(matches!(decode_msg(bad, 0), Err(SignedError::Malformed(_))), "{bad:?}");
        }
        // A zlib bomb is cut off.
        use std::io::Write as _;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
        e.write_all(&vec![b' '; 1 << 20]).expect("write");
        let bomb = base64::engine::general_purpose::STANDARD.encode(e.finish().expect("finish"));
        assert_eq!(decode_msg(&bomb, 0), Err(SignedError::Malformed("too long")));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Short fuzz passes: nothing a client sends as `msg` or `sig` panics the decoder.
    #[test]
    fn arbitrary_and_mutated_msgs_never_panic() {
        let (valid, _) = sign("owner", 1_000, b"key");
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let mut bytes = valid.clone().into_bytes();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % bytes.len();
                bytes[i] = b"ABCxyz019+/=%"[(next() % 13) as usize];
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = decode_msg(&text, 1_000);
            let _ = verify_sig(b"key", &text, &text);
        }
    }
}
