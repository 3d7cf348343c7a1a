//! A replay cache for signed parameters (see [`crate::signed`]).
//!
//! Uplynk's signature covers only the owner and a timestamp of one-second resolution, not the
//! request it rides on, so a signature seen once (in a proxy's log, say) would otherwise let
//! anyone act as its owner for the whole accepted window. The cache binds each signature to the
//! client address that first presented it: the same address may present it again while it is
//! valid (a client sending several requests in one second signs them all alike, and a retry
//! repeats one), any other address is refused.
//!
//! Bounded: each owner keeps at most [`PER_OWNER`] signatures (beyond that its own oldest is
//! forgotten, weakening only its own protection), and all owners together at most
//! [`CAPACITY`] (beyond that the owner with the most gives up its oldest). Time is an input.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use baton_core::IdentityName;

use crate::signed::{MAX_AHEAD_SECS, MAX_SKEW_SECS};

/// How long a signature is remembered from when it was first seen: as long as any signature
/// can be accepted (its timestamp may be up to [`MAX_AHEAD_SECS`] ahead and is accepted until
/// [`MAX_SKEW_SECS`] behind).
pub const REPLAY_WINDOW: Duration = Duration::from_secs((MAX_SKEW_SECS + MAX_AHEAD_SECS) as u64);
/// Signatures remembered per owner. A client that signs one message per second needs
/// [`REPLAY_WINDOW`] seconds' worth (330); only clients that vary their messages within a
/// second (extra fields in `msg`) come near this.
pub const PER_OWNER: usize = 1_024;
/// Signatures remembered in all (about 10 MiB).
pub const CAPACITY: usize = 131_072;

/// A signature's HMAC, as the cache keys it.
type Sig = [u8; 32];

/// Why a signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Replayed {
    /// Another client address already presented this signature.
    #[error("the signature was already used by another client")]
    FromElsewhere,
}

#[derive(Debug)]
struct Seen {
    owner: IdentityName,
    from: Option<IpAddr>,
    until: Instant,
}

/// Signatures seen within [`REPLAY_WINDOW`], on this node.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: HashMap<Sig, Seen>,
    /// Every remembered signature by arrival, which is also expiry order.
    by_arrival: BTreeMap<u64, Sig>,
    /// Each owner's signatures by arrival.
    by_owner: HashMap<IdentityName, BTreeMap<u64, Sig>>,
    next_seq: u64,
}

impl ReplayCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits the (already verified) signature `sig` (hex) of `owner`, presented at `now` from
    /// `from`: the first time, or again from the same address while remembered.
    pub fn admit(
        &mut self,
        sig: &str,
        owner: &IdentityName,
        from: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Replayed> {
        self.expire(now);
        let Some(key) = crate::hex::decode(sig.trim()).and_then(|b| Sig::try_from(b).ok()) else {
            // Not a signature this cache could have seen: the verifier refuses it anyway.
            return Err(Replayed::FromElsewhere);
        };
        if let Some(seen) = self.seen.get(&key) {
            return if seen.from == from { Ok(()) } else { Err(Replayed::FromElsewhere) };
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let until = now + REPLAY_WINDOW;
        self.seen.insert(key, Seen { owner: owner.clone(), from, until });
        self.by_arrival.insert(seq, key);
        let own = self.by_owner.entry(owner.clone()).or_default();
        own.insert(seq, key);
        if own.len() > PER_OWNER {
            self.forget_oldest_of(owner);
        }
        if self.seen.len() > CAPACITY
            && let Some(largest) =
                self.by_owner.iter().max_by_key(|(_, sigs)| sigs.len()).map(|(o, _)| o.clone())
        {
            self.forget_oldest_of(&largest);
        }
        Ok(())
    }

    /// How many signatures are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((&seq, key)) = self.by_arrival.first_key_value() {
            if self.seen.get(key).is_some_and(|s| s.until > now) {
                break;
            }
            let key = *key;
            self.forget(seq, &key);
        }
    }

    fn forget_oldest_of(&mut self, owner: &IdentityName) {
        let oldest = self.by_owner.get(owner).and_then(|own| own.first_key_value());
        if let Some((&seq, &key)) = oldest {
            self.forget(seq, &key);
        }
    }

    fn forget(&mut self, seq: u64, key: &Sig) {
        self.by_arrival.remove(&seq);
        if let Some(seen) = self.seen.remove(key)
            && let Some(own) = self.by_owner.get_mut(&seen.owner)
        {
            own.remove(&seq);
            if own.is_empty() {
                self.by_owner.remove(&seen.owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> IdentityName {
        IdentityName::new(name).expect("a valid name")
    }

    fn sig(n: u64) -> String {
        crate::hex::encode(&[&n.to_be_bytes()[..], &[0; 24]].concat())
    }

    const HERE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const THERE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn a_signature_is_usable_again_from_its_first_address_only() {
        let (mut cache, t0, alice) = (ReplayCache::new(), Instant::now(), owner("alice"));
        assert_eq!(cache.admit(&sig(1), &alice, HERE, t0), Ok(()));
        assert_eq!(cache.admit(&sig(1), &alice, HERE, t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(cache.admit(&sig(1), &alice, THERE, t0), Err(Replayed::FromElsewhere));
        // An address the server could not record is an address of its own.
        assert_eq!(cache.admit(&sig(1), &alice, None, t0), Err(Replayed::FromElsewhere));
        // Remembered for the whole window, and no longer (by then no node accepts it).
        let last = t0 + REPLAY_WINDOW - Duration::from_millis(1);
        assert_eq!(cache.admit(&sig(1), &alice, THERE, last), Err(Replayed::FromElsewhere));
        assert_eq!(cache.admit(&sig(1), &alice, THERE, t0 + REPLAY_WINDOW), Ok(()));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn one_owners_flood_forgets_only_its_own_signatures() {
        let (mut cache, t0) = (ReplayCache::new(), Instant::now());
        let (alice, mallory) = (owner("alice"), owner("mallory"));
        cache.admit(&sig(0), &alice, HERE, t0).expect("first use");
        for n in 1..=(PER_OWNER as u64 * 3) {
            cache.admit(&sig(n), &mallory, THERE, t0).expect("first use");
        }
        assert_eq!(cache.len(), PER_OWNER + 1, "mallory keeps {PER_OWNER}, alice hers");
        assert_eq!(cache.admit(&sig(0), &alice, THERE, t0), Err(Replayed::FromElsewhere));
        // Mallory's newest are still refused elsewhere; its oldest were forgotten.
        let newest = sig(PER_OWNER as u64 * 3);
        assert_eq!(cache.admit(&newest, &mallory, HERE, t0), Err(Replayed::FromElsewhere));
        assert_eq!(cache.admit(&sig(1), &mallory, HERE, t0), Ok(()));
    }

    #[test]
    fn when_full_the_owner_with_the_most_gives_way() {
        let (mut cache, t0) = (ReplayCache::new(), Instant::now());
        let owners = CAPACITY / PER_OWNER;
        let mut n = 0_u64;
        for o in 0..owners {
            let name = owner(&format!("owner{o}"));
            for _ in 0..PER_OWNER - usize::from(o != 0) {
                n += 1;
                cache.admit(&sig(n), &name, HERE, t0).expect("first use");
            }
        }
        let quiet = owner("quiet");
        for _ in 0..owners {
            n += 1;
            cache.admit(&sig(n), &quiet, HERE, t0).expect("first use");
        }
        assert_eq!(cache.len(), CAPACITY);
        // owner0, the largest, gave up its oldest; the quiet owner kept all of its own.
        assert_eq!(cache.admit(&sig(1), &owner("owner0"), THERE, t0), Ok(()));
        assert_eq!(cache.admit(&sig(n), &quiet, THERE, t0), Err(Replayed::FromElsewhere));
    }
}
