//! The leader's group commit: requests proposed while earlier ones are being replicated are
//! proposed together, as one log entry.
//!
//! openraft 0.9 appends, syncs, replicates and applies each proposal on its own, and keeps one
//! AppendEntries in flight per follower. With one entry per request, a busy leader spent its
//! time on per-entry work while followers synced a few times per heartbeat interval. Here every
//! request waits in a queue while [`IN_FLIGHT`] proposal is outstanding; when it completes,
//! everything queued (up to [`MOST_PER_ENTRY`]) becomes the next entry. An idle leader proposes
//! a lone request at once, so a single client waits no longer than before.
//!
//! Nothing changes for correctness: an entry's requests are applied one after another, each
//! judged on its own exactly as if it had its own entry, and each caller gets its own request's
//! response only after the entry is committed and applied.

use std::sync::Arc;

use baton_core::{Request, Response};
use baton_raft::typ::{ClientWriteError, Raft, RaftError};
use openraft::error::ClientWriteError as CWE;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Proposals outstanding at once. One: measured against two on the bench (64 and 256 clients),
/// it wrote as much or more, because everything that arrives during a round joins the next
/// entry.
const IN_FLIGHT: usize = 1;
/// The most requests in one entry: bounds an entry's size and the work of applying it.
pub const MOST_PER_ENTRY: usize = 256;

/// Why a proposal has no response.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unwritten {
    /// This node stopped leading after the request was handed to Raft: the entry may still be
    /// committed by the next leader.
    #[error("leadership changed while the write was in flight")]
    LeadershipChanged,
    /// Raft refused or failed for another reason.
    #[error("{0}")]
    Failed(String),
}

struct Queued {
    request: Request,
    answer: oneshot::Sender<Result<Response, Unwritten>>,
}

/// Hands requests to Raft in batches. Cheap to share; the batching task ends when the last
/// handle is dropped.
pub struct Proposer {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Proposer {
    /// A proposer for `raft`, with its batching task spawned on the current runtime.
    pub fn start(raft: Raft) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(batch_and_propose(raft, queued));
        Self { queue }
    }

    /// Proposes `request` and waits until it is committed and applied.
    pub async fn propose(&self, request: Request) -> Result<Response, Unwritten> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Queued { request, answer })
            .map_err(|_| Unwritten::Failed("the proposer has stopped".into()))?;
        answered.await.map_err(|_| Unwritten::Failed("the proposer has stopped".into()))?
    }
}

async fn batch_and_propose(raft: Raft, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = queued.recv().await {
        // Wait for a free slot before taking more: what arrives meanwhile joins this entry.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MOST_PER_ENTRY {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (requests, answers): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|q| (q.request, q.answer)).unzip();
            let written = raft.client_write(requests).await;
            drop(slot);
            answer_all(answers, written.map(|w| w.data));
        });
    }
}

/// Gives each caller its own request's response, or the entry's failure.
fn answer_all(
    answers: Vec<oneshot::Sender<Result<Response, Unwritten>>>,
    written: Result<Vec<Response>, RaftError<ClientWriteError>>,
) {
    let count = answers.len();
    let mut responses = match written {
        Ok(responses) if responses.len() == count => responses.into_iter().map(Ok).collect(),
        Ok(responses) => {
            let e = format!("{} responses for {count} requests", responses.len());
            vec![Err(Unwritten::Failed(e)); count]
        }
        Err(RaftError::APIError(CWE::ForwardToLeader(_))) => {
            vec![Err(Unwritten::LeadershipChanged); count]
        }
        Err(e) => vec![Err(Unwritten::Failed(e.to_string())); count],
    }
    .into_iter();
    for answer in answers {
        // A caller that gave up (its own deadline) is not waiting any more.
        let _ = answer.send(responses.next().expect("one response per request"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = Result<Response, Unwritten>;

    fn channels(n: usize) -> (Vec<oneshot::Sender<Answer>>, Vec<oneshot::Receiver<Answer>>) {
        (0..n).map(|_| oneshot::channel()).unzip()
    }

    #[test]
    fn each_caller_gets_its_own_requests_response() {
        let (answers, mut answered) = channels(2);
        answer_all(answers, Ok(vec![Response::Checkpointed, Response::Deleted]));
        let first = answered[0].try_recv().expect("answered").expect("written");
        assert_eq!(first, Response::Checkpointed);
        assert_eq!(answered[1].try_recv().expect("answered").expect("written"), Response::Deleted);
    }

    #[test]
    fn a_mismatched_answer_fails_every_caller_instead_of_misattributing() {
        let (answers, answered) = channels(2);
        answer_all(answers, Ok(vec![Response::Deleted]));
        for mut a in answered {
            assert!(matches!(a.try_recv(), Ok(Err(Unwritten::Failed(_)))));
        }
    }
}
