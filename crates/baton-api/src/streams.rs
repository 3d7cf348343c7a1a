//! Places for long-lived streams: heartbeat streams (WebSockets) and event streams
//! (server-sent events). An upgraded WebSocket keeps its connection's place in the server's
//! connection caps ([`ConnectionPlace`]), but an HTTP/2 connection carries many event streams,
//! so streams have limits of their own: [`MAX_STREAMS`] open on a node, and a number of one identity (the
//! `max_streams_per_identity` setting, [`DEFAULT_STREAMS_PER_IDENTITY`] by default), so that
//! one caller cannot take every place. One more is refused with 503, in the native error body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use baton_core::IdentityName;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Streams one node keeps open at once, of every kind and caller.
pub const MAX_STREAMS: usize = 4_096;
/// Streams one identity may hold open on one node, unless set otherwise.
pub const DEFAULT_STREAMS_PER_IDENTITY: usize = 256;

/// A connection's place in its listener's caps (the whole one, and its address's), as the
/// server lends it to each request on the connection. A stream that outlives its HTTP exchange
/// (an upgraded WebSocket, which leaves the HTTP connection behind) keeps it for as long as it
/// runs, so that streams count in the connection caps. Opaque here: the server's to give back.
#[derive(Clone)]
pub struct ConnectionPlace(pub Arc<dyn std::any::Any + Send + Sync>);

/// The places of one node.
pub struct StreamPlaces {
    node: Arc<Semaphore>,
    per_identity: usize,
    held: Arc<Mutex<HashMap<IdentityName, usize>>>,
}

impl StreamPlaces {
    /// [`MAX_STREAMS`] places, at most `per_identity` of them for one identity.
    pub fn new(per_identity: usize) -> Self {
        Self { node: Arc::new(Semaphore::new(MAX_STREAMS)), per_identity, held: Arc::default() }
    }
}

/// One open stream's place; given back when dropped.
pub struct Place {
    _node: OwnedSemaphorePermit,
    held: Arc<Mutex<HashMap<IdentityName, usize>>>,
    who: IdentityName,
}

impl StreamPlaces {
    /// A place for one more stream of `who`, or the 503 that says why there is none.
    pub fn take(&self, who: &IdentityName) -> Result<Place, ApiError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.get(who).copied().unwrap_or(0);
        if mine >= self.per_identity {
            return Err(ApiError::Busy(format!(
                "this identity has {mine} streams open on this node, its limit; close one first"
            )));
        }
        let Ok(node) = self.node.clone().try_acquire_owned() else {
            return Err(ApiError::Busy(format!(
                "this node has {MAX_STREAMS} streams open; retry on another"
            )));
        };
        held.insert(who.clone(), mine + 1);
        Ok(Place { _node: node, held: self.held.clone(), who: who.clone() })
    }

    /// How many places are free on the node.
    pub fn free(&self) -> usize {
        self.node.available_permits()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mine) = held.get_mut(&self.who) {
            *mine -= 1;
            if *mine == 0 {
                held.remove(&self.who);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_identity_cannot_take_every_place_and_places_come_back() {
        let places = StreamPlaces::new(DEFAULT_STREAMS_PER_IDENTITY);
        let (greedy, other) = (
            IdentityName::new("greedy").expect("a name"),
            IdentityName::new("other").expect("a name"),
        );
        let mut held: Vec<Place> = (0..DEFAULT_STREAMS_PER_IDENTITY)
            .map(|_| places.take(&greedy).expect("a place"))
            .collect();
        assert!(places.take(&greedy).is_err(), "one more of the same identity");
        let theirs = places.take(&other).expect("another identity still gets one");
        held.pop();
        assert!(places.take(&greedy).is_ok(), "a place given back is free again");
        drop(theirs);
        assert_eq!(places.free(), MAX_STREAMS - DEFAULT_STREAMS_PER_IDENTITY + 1);
    }
}
