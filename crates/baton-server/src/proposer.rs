//! The leader's group commit: requests proposed while earlier ones are being replicated are
//! proposed together, as one log entry.
//!
//! openraft 0.9 appends, syncs, replicates and applies each proposal on its own, and keeps one
//! AppendEntries in flight per follower. With one entry per request, a busy leader spent its
//! time on per-entry work while followers synced a few times per heartbeat interval. Here every
//! request waits in a queue while [`IN_FLIGHT`] proposal is outstanding; when it completes,
//! everything queued (up to [`MOST_PER_ENTRY`] requests and [`MOST_BYTES_PER_ENTRY`] bytes)
//! becomes the next entry. An idle leader proposes a lone request at once, so a single client
//! waits no longer than before. The queue is cut with `baton_net::batch`, as leader forwarding
//! cuts its own.
//!
//! The byte bound keeps every entry small enough to reach a follower within one AppendEntries:
//! openraft 0.9 gives each AppendEntries only the heartbeat interval, and baton-net sends at
//! least one whole entry in each. 256 requests of 64 KiB bodies would make a 16 MiB entry that
//! no follower could receive, decode and sync in 25 ms, and replication would stall on it.
//!
//! Nothing changes for correctness: an entry's requests are applied one after another, each
//! judged on its own exactly as if it had its own entry, and each caller gets its own request's
//! response only after the entry is committed and applied.

use baton_core::{Request, Response};
use baton_net::batch::{Batches, send_in_batches};
use baton_raft::typ::{ClientWriteError, Raft, RaftError};
use openraft::error::ClientWriteError as CWE;
use tokio::sync::{mpsc, oneshot};

/// Proposals outstanding at once. One: measured against two on the bench (64 and 256 clients),
/// it wrote as much or more, because everything that arrives during a round joins the next
/// entry.
const IN_FLIGHT: usize = 1;
/// The most requests in one entry: bounds the work of applying it.
pub const MOST_PER_ENTRY: usize = 256;
/// The most bytes of requests (postcard-encoded, as in the log) in one entry, unless its first
/// request alone is larger: the same bound as one AppendEntries (`baton_net::MAX_APPEND_BYTES`).
pub const MOST_BYTES_PER_ENTRY: usize = baton_net::MAX_APPEND_BYTES;
/// The most bytes one caller's request may take in the log: what one AppendEntries carries. A
/// larger one is refused, never proposed (an entry no follower can receive in time would stall
/// replication for everyone). The leader's own commands are bounded where they are made (a
/// checkpoint carries at most `baton_core::detector::CHECKPOINT_GROUPS` groups).
pub const MOST_BYTES_PER_REQUEST: usize = MOST_BYTES_PER_ENTRY;

/// Why a proposal has no response.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unwritten {
    /// This node stopped leading after the request was handed to Raft: the entry may still be
    /// committed by the next leader.
    #[error("leadership changed while the write was in flight")]
    LeadershipChanged,
    /// Raft stopped (a storage fault, or shutdown) after the request was handed to it: the
    /// entry may already be on followers (sent early, or replicated) and be committed by the
    /// next leader.
    #[error("Raft stopped while the write was in flight: {0}")]
    Stopped(String),
    /// Raft refused or failed for another reason.
    #[error("{0}")]
    Failed(String),
    /// A caller's request too large for the log ([`MOST_BYTES_PER_REQUEST`]); nothing was
    /// proposed.
    #[error("the change takes {bytes} bytes, more than the {max} one request may")]
    TooLarge {
        /// Its size in the log.
        bytes: usize,
        /// The limit.
        max: usize,
    },
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
        admit(&request)?;
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Queued { request, answer })
            .map_err(|_| Unwritten::Failed("the proposer has stopped".into()))?;
        answered.await.map_err(|_| Unwritten::Failed("the proposer has stopped".into()))?
    }
}

async fn batch_and_propose(raft: Raft, queued: mpsc::UnboundedReceiver<Queued>) {
    send_in_batches(queued, IN_FLIGHT, entries(), |batch, slot| {
        let raft = raft.clone();
        tokio::spawn(async move {
            let (requests, answers): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|q| (q.request, q.answer)).unzip();
            let written = raft.client_write(requests).await;
            drop(slot);
            answer_all(answers, written.map(|w| w.data));
        });
    })
    .await;
}

/// Cuts the queue into entries of at most [`MOST_PER_ENTRY`] requests and
/// [`MOST_BYTES_PER_ENTRY`] bytes.
fn entries() -> Batches<Queued, fn(&Queued) -> usize> {
    Batches::new(MOST_PER_ENTRY, MOST_BYTES_PER_ENTRY, |q| encoded_len(&q.request))
}

/// Refuses a caller's request larger than [`MOST_BYTES_PER_REQUEST`].
fn admit(request: &Request) -> Result<(), Unwritten> {
    let bytes = encoded_len(request);
    if request.actor.is_some() && bytes > MOST_BYTES_PER_REQUEST {
        return Err(Unwritten::TooLarge { bytes, max: MOST_BYTES_PER_REQUEST });
    }
    Ok(())
}

/// A request's size in the log.
fn encoded_len(request: &Request) -> usize {
    // Counting never fails for Baton's types; a request that could not be counted could not
    // be logged either, and is left to fail there.
    postcard::experimental::serialized_size(request).unwrap_or(0)
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
        Err(RaftError::Fatal(e)) => vec![Err(Unwritten::Stopped(e.to_string())); count],
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
    use std::collections::VecDeque;

    use baton_core::{
        Command, GroupConfig, GroupId, GroupKey, NamespaceId, Scope, TenantId, Timestamp,
    };

    use super::*;

    type Answer = Result<Response, Unwritten>;

    /// A queued request whose group description is `text` bytes long.
    fn queued(text: usize) -> Queued {
        let mut config = GroupConfig::new(None, None, 60_000).expect("a valid configuration");
        config.description = Some("d".repeat(text));
        let key = GroupKey {
            scope: Scope {
                tenant: TenantId::new("t").expect("id"),
                namespace: NamespaceId::new("n").expect("id"),
            },
            group: GroupId::new("g").expect("id"),
        };
        let request =
            Request { at: Timestamp(0), command: Command::PutGroup { key, config }, actor: None };
        Queued { request, answer: oneshot::channel().0 }
    }

    #[test]
    fn a_callers_request_larger_than_one_append_is_refused_before_it_is_proposed() {
        let mut request = queued(MOST_BYTES_PER_REQUEST).request;
        assert!(admit(&request).is_ok(), "the leader's own commands are bounded where made");
        request.actor = Some(baton_core::Actor {
            identity: baton_core::IdentityName::new("tenant").expect("a name"),
            from: None,
            request_key: None,
        });
        assert!(matches!(
            admit(&request),
            Err(Unwritten::TooLarge { max: MOST_BYTES_PER_REQUEST, .. })
        ));
        let fits = Request { command: queued(1_000).request.command, ..request };
        assert!(admit(&fits).is_ok());
    }

    fn sizes(batch: &[Queued]) -> usize {
        batch.iter().map(|q| encoded_len(&q.request)).sum()
    }

    #[test]
    fn many_large_requests_make_several_entries_each_within_the_byte_bound() {
        // 40 requests of 60 KiB: 2.4 MiB that one entry would have carried.
        let mut queue: VecDeque<Queued> = (0..40).map(|_| queued(60 * 1024)).collect();
        let mut entries = entries();
        let mut lengths = Vec::new();
        while let Some(first) = entries.held().or_else(|| queue.pop_front()) {
            let batch = entries.gather(first, || queue.pop_front());
            assert!(sizes(&batch) <= MOST_BYTES_PER_ENTRY, "{} bytes", sizes(&batch));
            lengths.push(batch.len());
        }
        assert_eq!(lengths.iter().sum::<usize>(), 40, "every request proposed once");
        assert_eq!(lengths[0], 4, "as many as fit: {lengths:?}");
    }

    #[test]
    fn a_request_larger_than_the_bound_is_an_entry_of_its_own() {
        let mut queue: VecDeque<Queued> = [queued(10), queued(10)].into();
        let mut entries = entries();
        let batch = entries.gather(queued(MOST_BYTES_PER_ENTRY + 1), || queue.pop_front());
        assert_eq!(batch.len(), 1);
        let held = entries.held().expect("the next request waits for the next entry");
        let next = entries.gather(held, || queue.pop_front());
        assert_eq!(next.len(), 2);
    }

    #[test]
    fn small_requests_fill_an_entry_up_to_the_request_bound() {
        let mut queue: VecDeque<Queued> = (0..300).map(|_| queued(10)).collect();
        let first = queue.pop_front().expect("queued");
        let batch = entries().gather(first, || queue.pop_front());
        assert_eq!(batch.len(), MOST_PER_ENTRY);
        assert_eq!(queue.len(), 300 - MOST_PER_ENTRY, "the rest stay queued, none held");
    }

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

    #[test]
    fn a_raft_that_stopped_mid_write_leaves_every_caller_not_knowing() {
        let (answers, answered) = channels(2);
        let stopped = openraft::error::Fatal::Stopped;
        answer_all(answers, Err(RaftError::Fatal(stopped)));
        for mut a in answered {
            assert!(matches!(a.try_recv(), Ok(Err(Unwritten::Stopped(_)))));
        }
    }
}
