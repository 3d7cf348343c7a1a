//! Cutting a queue into batches while earlier batches are in flight: a first item leaves as
//! soon as one of a few slots is free, and whatever queued while none was leaves with it, up
//! to a count and a byte bound. Leader forwarding (`forward.rs`) and the leader's group commit
//! (baton-server's proposer) both send this way.

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Cuts a queue into batches of at most `most` items and `most_bytes` bytes (as `size` counts
/// an item), unless a batch's first item alone is larger.
pub struct Batches<T, S> {
    most: usize,
    most_bytes: usize,
    size: S,
    /// The item that would have made the last batch too large: it starts the next one.
    held: Option<T>,
}

impl<T, S: Fn(&T) -> usize> Batches<T, S> {
    /// Batches of at most `most` items and `most_bytes` bytes, an item being `size` bytes.
    pub fn new(most: usize, most_bytes: usize, size: S) -> Self {
        Self { most, most_bytes, size, held: None }
    }

    /// The item held back from the last batch, which starts the next one.
    pub fn held(&mut self) -> Option<T> {
        self.held.take()
    }

    /// The next batch: `first`, then what `next` yields while the batch has room. An item that
    /// does not fit is held for the following batch; one larger than the bound on its own
    /// still makes a batch by itself.
    pub fn gather(&mut self, first: T, mut next: impl FnMut() -> Option<T>) -> Vec<T> {
        let mut bytes = (self.size)(&first);
        let mut batch = vec![first];
        while batch.len() < self.most {
            let Some(item) = next() else { break };
            let size = (self.size)(&item);
            if bytes + size > self.most_bytes {
                self.held = Some(item);
                break;
            }
            bytes += size;
            batch.push(item);
        }
        batch
    }
}

/// Runs until `queued` closes: takes a first item, waits for one of `in_flight` slots, gathers
/// what queued meanwhile into its batch, and hands the batch with its slot to `launch`, which
/// starts sending it (spawns) and frees the slot, by dropping it, when the batch is answered.
pub async fn send_in_batches<T, S: Fn(&T) -> usize>(
    mut queued: mpsc::UnboundedReceiver<T>,
    in_flight: usize,
    mut batches: Batches<T, S>,
    mut launch: impl FnMut(Vec<T>, OwnedSemaphorePermit),
) {
    let slots = std::sync::Arc::new(Semaphore::new(in_flight));
    loop {
        let first = match batches.held() {
            Some(first) => first,
            None => match queued.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Wait for a free slot before taking more: what arrives meanwhile joins this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let batch = batches.gather(first, || queued.try_recv().ok());
        launch(batch, slot);
    }
}
