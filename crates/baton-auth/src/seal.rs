//! Sealing: AES-256-GCM under a key derived from the cluster secret.

use baton_core::Sealed;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// Format version of a sealed value.
const VERSION: u8 = 1;
/// Bytes identifying the sealing key.
const KEY_ID_LEN: usize = 8;
/// Domain separation for the derived keys.
const SALT: &[u8] = b"baton-seal-v1";

/// Why a sealed value cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not a sealed value of a known format.
    #[error("the sealed value is malformed")]
    Malformed,
    /// Sealed with a key this node does not have (a cluster secret it was not given).
    #[error("the value was sealed with a cluster secret this node does not know")]
    UnknownKey,
    /// The ciphertext does not authenticate.
    #[error("the sealed value does not authenticate")]
    Corrupt,
}

struct SealKey {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

/// Seals with the current cluster secret's key; opens with it or with a previous one.
pub struct Sealer {
    current: SealKey,
    previous: Vec<SealKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer for the cluster `secret`, able to open values sealed under `previous` secrets.
    pub fn new(secret: &str, previous: &[String]) -> Self {
        Self { current: derive(secret), previous: previous.iter().map(|s| derive(s)).collect() }
    }

    /// Encrypts `plain` under the current key.
    pub fn seal(&self, plain: &[u8]) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("the system random generator works");
        let mut data = plain.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header(&self.current.id)),
                &mut data,
            )
            .expect("AES-GCM seals any length Baton uses");
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + data.len());
        out.extend_from_slice(&header(&self.current.id));
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Sealed(out)
    }

    /// Decrypts a value sealed by [`Sealer::seal`] under the current or a previous key.
    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let bytes = &sealed.0;
        if bytes.len() < 1 + KEY_ID_LEN + NONCE_LEN || bytes[0] != VERSION {
            return Err(SealError::Malformed);
        }
        let (head, rest) = bytes.split_at(1 + KEY_ID_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id[..] == head[1..])
            .ok_or(SealError::UnknownKey)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut data = ciphertext.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(head), &mut data)
            .map_err(|_| SealError::Corrupt)?;
        Ok(plain.to_vec())
    }

    /// Whether `sealed` was sealed under the current key (a rotation re-seals the others).
    pub fn is_current(&self, sealed: &Sealed) -> bool {
        sealed.0.get(1..1 + KEY_ID_LEN) == Some(&self.current.id[..])
    }
}

fn header(id: &[u8; KEY_ID_LEN]) -> [u8; 1 + KEY_ID_LEN] {
    let mut head = [VERSION; 1 + KEY_ID_LEN];
    head[1..].copy_from_slice(id);
    head
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[u8], out: &mut [u8]) {
    prk.expand(&[info], Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output lengths here are far below its limit");
}

fn derive(secret: &str) -> SealKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret.as_bytes());
    let mut key = [0u8; 32];
    expand(&prk, b"signing-key-encryption", &mut key);
    let mut id = [0u8; KEY_ID_LEN];
    expand(&prk, b"signing-key-encryption-id", &mut id);
    let key = UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte key fits AES-256");
    SealKey { id, key: LessSafeKey::new(key) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-cluster-secret-of-some-length";

    #[test]
    fn a_sealed_value_opens_and_does_not_show_the_plaintext() {
        let sealer = Sealer::new(SECRET, &[]);
        let sealed = sealer.seal(b"uplynk-api-key-123");
        assert!(!sealed.0.windows(6).any(|w| w == b"uplynk"));
        assert_eq!(sealer.open(&sealed).expect("opens"), b"uplynk-api-key-123");
        assert!(sealer.is_current(&sealed));
    }

    #[test]
    fn a_value_sealed_before_a_rotation_opens_with_the_previous_secret() {
        let old = Sealer::new(SECRET, &[]).seal(b"key");
        let rotated = Sealer::new("the-new-cluster-secret-0123", &[SECRET.to_owned()]);
        assert_eq!(rotated.open(&old).expect("opens"), b"key");
        assert!(!rotated.is_current(&old));
        let forgotten = Sealer::new("the-new-cluster-secret-0123", &[]);
        assert_eq!(forgotten.open(&old), Err(SealError::UnknownKey));
    }

    #[test]
    fn tampering_is_detected() {
        let sealer = Sealer::new(SECRET, &[]);
        let mut sealed = sealer.seal(b"key");
        let last = sealed.0.len() - 1;
        sealed.0[last] ^= 1;
        assert_eq!(sealer.open(&sealed), Err(SealError::Corrupt));
        assert_eq!(sealer.open(&Sealed(vec![1, 2, 3])), Err(SealError::Malformed));
    }
}
