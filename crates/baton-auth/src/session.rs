//! Session tokens: what the HCX and Keystone logins hand out instead of the identity's own
//! token, so that a token a client keeps (in a file, in a process's memory, in a log) is
//! short-lived and the identity's own stays with its owner.
//!
//! ```text
//! baton-session_<name>.<expires: unix seconds>.<hex HMAC-SHA256(key, name ‖ expires ‖ credential)>
//! ```
//!
//! - Any node checks one without asking the others: the key is derived (HKDF) from the
//!   sealing secret, which every node has, and nothing is replicated.
//! - It is bound to the identity's credential as it was when the session began, so rotating
//!   the identity's token, or revoking it, ends every session at once.
//! - It ends at `expires`, [`SESSION_LIFETIME_SECS`] after the login at most.
//! - During a rotation of the sealing secret, sessions made under a previous one still check.

use baton_core::{Credential, IdentityName};
use ring::{hkdf, hmac};

use crate::hex;

/// The start of every session token (an identity's own token starts with
/// [`crate::TOKEN_PREFIX`]).
pub const SESSION_PREFIX: &str = "baton-session_";
/// How long a session lasts, in seconds: an hour, as Keystone's tokens do by default.
pub const SESSION_LIFETIME_SECS: i64 = 3_600;
/// Domain separation for the derived keys.
const SALT: &[u8] = b"baton-session-v1";

/// A presented session token, split but not yet checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedSession<'a> {
    /// The identity it claims.
    pub name: IdentityName,
    /// When it ends, in Unix seconds.
    pub expires: i64,
    mac: &'a str,
}

/// Splits a presented session token; `None` when it is not one.
pub fn parse_session(text: &str) -> Option<ParsedSession<'_>> {
    let rest = text.strip_prefix(SESSION_PREFIX)?;
    let (rest, mac) = rest.rsplit_once('.')?;
    let (name, expires) = rest.rsplit_once('.')?;
    Some(ParsedSession { name: IdentityName::new(name).ok()?, expires: expires.parse().ok()?, mac })
}

/// Makes and checks session tokens: under the current sealing secret, and checks those made
/// under previous ones.
pub struct SessionKeys {
    current: hmac::Key,
    previous: Vec<hmac::Key>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl SessionKeys {
    /// Keys for the sealing `secret`, also checking sessions made under `previous` secrets.
    pub fn new(secret: &str, previous: &[String]) -> Self {
        Self { current: derive(secret), previous: previous.iter().map(|s| derive(s)).collect() }
    }

    /// A session for `name`, whose credential is now `credential`, ending at `expires`.
    pub fn issue(&self, name: &IdentityName, credential: &Credential, expires: i64) -> String {
        let tag = hmac::sign(&self.current, &message(name, expires, credential));
        format!("{SESSION_PREFIX}{name}.{expires}.{}", hex::encode(tag.as_ref()))
    }

    /// Whether `session` is one of these keys' making for its identity, whose credential is
    /// `credential` now, and has not ended at `now` (Unix seconds). MACs are compared in
    /// constant time.
    pub fn verify(&self, session: &ParsedSession<'_>, credential: &Credential, now: i64) -> bool {
        if now >= session.expires {
            return false;
        }
        let Some(mac) = hex::decode(session.mac) else { return false };
        let message = message(&session.name, session.expires, credential);
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| hmac::verify(key, &message, &mac).is_ok())
    }
}

fn message(name: &IdentityName, expires: i64, credential: &Credential) -> Vec<u8> {
    let name = name.as_str().as_bytes();
    let mut message = Vec::with_capacity(name.len() + 1 + 8 + credential.digest.len());
    message.extend_from_slice(name);
    // Names never hold a NUL, so the name's end is unambiguous.
    message.push(0);
    message.extend_from_slice(&expires.to_be_bytes());
    message.extend_from_slice(&credential.salt);
    message.extend_from_slice(&credential.digest);
    message
}

fn derive(secret: &str) -> hmac::Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret.as_bytes());
    let okm = prk
        .expand(&[b"session-tokens"], hmac::HMAC_SHA256)
        .expect("one HMAC key is far below HKDF's output limit");
    hmac::Key::from(okm)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-sealing-secret-of-some-length";

    fn name(s: &str) -> IdentityName {
        IdentityName::new(s).expect("a name")
    }

    fn credential(byte: u8) -> Credential {
        Credential { salt: vec![byte; 16], digest: vec![byte; 32] }
    }

    #[test]
    fn a_session_checks_for_its_identity_until_it_ends() {
        let keys = SessionKeys::new(SECRET, &[]);
        let token = keys.issue(&name("ops.team@x"), &credential(1), 1_000);
        let session = parse_session(&token).expect("a session token");
        assert_eq!((session.name.as_str(), session.expires), ("ops.team@x", 1_000));
        assert!(keys.verify(&session, &credential(1), 999));
        assert!(!keys.verify(&session, &credential(1), 1_000), "ended");
    }

    #[test]
    fn a_rotated_credential_ends_the_session() {
        let keys = SessionKeys::new(SECRET, &[]);
        let token = keys.issue(&name("ops"), &credential(1), 1_000);
        let session = parse_session(&token).expect("a session token");
        assert!(!keys.verify(&session, &credential(2), 10));
    }

    #[test]
    fn a_session_altered_or_made_under_another_secret_does_not_check() {
        let keys = SessionKeys::new(SECRET, &[]);
        let token = keys.issue(&name("ops"), &credential(1), 1_000);
        let longer = token.replacen(".1000.", ".999999.", 1);
        let other_name = token.replacen("_ops.", "_root.", 1);
        for forged in [longer, other_name] {
            let session = parse_session(&forged).expect("well-formed");
            assert!(!keys.verify(&session, &credential(1), 10), "{forged}");
        }
        let elsewhere = SessionKeys::new("another-cluster-s-sealing-secret", &[]);
        let session = parse_session(&token).expect("well-formed");
        assert!(!elsewhere.verify(&session, &credential(1), 10));
        // During a rotation, the new keys still check sessions made under the old secret.
        let rotated = SessionKeys::new("the-next-sealing-secret-of-length", &[SECRET.into()]);
        assert!(rotated.verify(&session, &credential(1), 10));
    }

    #[test]
    fn only_session_tokens_parse_as_sessions() {
        for text in ["baton_ops.00ff", "baton-session_ops.notanumber.00", "baton-session_", ""] {
            assert!(parse_session(text).is_none(), "{text}");
        }
    }
}
