//! Bearer tokens: `baton_<name>.<secret>`, stored as a salted HMAC-SHA256 digest.

use baton_core::{Credential, IdentityName};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Every token starts with this, so it is recognisable in a secret scanner.
pub const TOKEN_PREFIX: &str = "baton_";
/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 32;
/// Random bytes in a credential's salt.
const SALT_BYTES: usize = 16;

/// Why a presented token cannot be checked. The messages never repeat the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `baton_<name>.<secret>`.
    #[error("the token is malformed")]
    Malformed,
}

/// A token split into the identity it names and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    /// The identity the token claims to be.
    pub name: IdentityName,
    /// The secret part.
    pub secret: &'a str,
}

impl std::fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedToken({:?}, ..)", self.name)
    }
}

/// `n` random bytes in lower-case hex.
pub fn random_secret(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    SystemRandom::new().fill(&mut bytes).expect("the system random generator works");
    crate::hex::encode(&bytes)
}

/// Makes a new token for `name`: the text to hand to the caller once, and the credential to
/// store.
pub fn issue_token(name: &IdentityName) -> (String, Credential) {
    let secret = random_secret(SECRET_BYTES);
    let credential = credential_for(&secret);
    (format!("{TOKEN_PREFIX}{name}.{secret}"), credential)
}

/// The credential to store for a token whose secret part is `secret` (a token supplied by an
/// operator, such as the bootstrap administrator's).
pub fn credential_for(secret: &str) -> Credential {
    let mut salt = vec![0u8; SALT_BYTES];
    SystemRandom::new().fill(&mut salt).expect("the system random generator works");
    let digest = digest(&salt, secret);
    Credential { salt, digest }
}

/// Splits a presented token. The secret must be hex; the name must be a valid identity name.
pub fn parse_token(text: &str) -> Result<ParsedToken<'_>, TokenError> {
    let rest = text.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Malformed)?;
    let (name, secret) = rest.rsplit_once('.').ok_or(TokenError::Malformed)?;
    if secret.len() != 2 * SECRET_BYTES || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Malformed);
    }
    let name = IdentityName::new(name).map_err(|_| TokenError::Malformed)?;
    Ok(ParsedToken { name, secret })
}

/// Whether `secret` matches `credential`, compared in constant time.
pub fn verify_token(credential: &Credential, secret: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &credential.salt);
    hmac::verify(&key, secret.as_bytes(), &credential.digest).is_ok()
}

fn digest(salt: &[u8], secret: &str) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    hmac::sign(&key, secret.as_bytes()).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> IdentityName {
        IdentityName::new(s).expect("valid name")
    }

    #[test]
    fn an_issued_token_verifies_against_its_credential_only() {
        let (token, credential) = issue_token(&name("alice"));
        let parsed = parse_token(&token).expect("parses");
        assert_eq!(parsed.name, name("alice"));
        assert!(verify_token(&credential, parsed.secret));

        let (other, other_credential) = issue_token(&name("alice"));
        assert_ne!(token, other);
        assert!(!verify_token(&other_credential, parsed.secret));
    }

    #[test]
    fn the_credential_does_not_contain_the_secret() {
        let (token, credential) = issue_token(&name("bob"));
        let secret = parse_token(&token).expect("parses").secret.to_owned();
        assert!(!format!("{credential:?}").contains(&secret));
        assert_ne!(credential.digest, secret.as_bytes());
    }

    #[test]
    fn names_with_dots_survive_the_round_trip() {
        let (token, _) = issue_token(&name("ops.bot@example.com"));
        assert_eq!(parse_token(&token).expect("parses").name, name("ops.bot@example.com"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good_secret = "ab".repeat(SECRET_BYTES);
        for bad in [
            String::new(),
            "baton_".into(),
            format!("alice.{good_secret}"),
            format!("baton_alice{good_secret}"),
            format!("baton_.{good_secret}"),
            format!("baton_al ice.{good_secret}"),
            "baton_alice.abcd".into(),
            format!("baton_alice.{}", "zz".repeat(SECRET_BYTES)),
        ] {
            assert_eq!(parse_token(&bad), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_wrong_secret_of_the_right_shape_is_refused() {
        let (_, credential) = issue_token(&name("carol"));
        assert!(!verify_token(&credential, &"00".repeat(SECRET_BYTES)));
    }
}
