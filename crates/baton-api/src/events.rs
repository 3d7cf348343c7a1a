//! Live decisions as server-sent events, and each group's decision history.
//!
//! ```text
//! GET /events                          admin    every group's decisions, live
//! GET /groups/{t}/{n}/{g}/events       may use  one group's decisions, live
//! GET /groups/{t}/{n}/{g}/history      may use  the group's last decisions, with candidates
//! ```
//!
//! Every node applies the same log, so every node publishes the same decisions: a stream can be
//! followed from any node. An event's `id` comes from where the command that made the decision
//! sits in the Raft log: its entry's index times 65,536 plus its position among the requests the
//! leader proposed together in that entry ([`event_id`]); a client that reconnects with `Last-Event-ID` gets what it missed while the node
//! still holds it ([`FEED_CAPACITY`] events). When the node no longer holds everything since
//! that id, or the client reads too slowly to keep up, the stream sends a `lagged` event: the
//! client should read the state again (a group, its history) and carry on.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use baton_core::{Decision, DecisionKind, GroupKey, Query, QueryResult};
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::AppState;
use crate::auth::{Caller, RECHECK, still_allowed};
use crate::coordinator::{Consistency, Coordinator, Served};
use crate::error::ApiError;
use crate::metrics::{DecisionLabels, DecisionMetrics};
use crate::native::{Admin, Authenticated, key, usable_group};
use crate::served_by::ServedBy;
use crate::streams::Place;

/// How many recent events a node keeps for subscribers that reconnect.
pub const FEED_CAPACITY: usize = 4096;
/// How many events a subscriber may fall behind before it is told it lagged.
const SUBSCRIBER_BACKLOG: usize = 1024;
/// How often an idle stream sends a comment, so proxies and clients see it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How many requests one log entry may hold and still give each decision its own event id.
const IDS_PER_ENTRY: u64 = 1 << 16;

/// The id of the event for the decision made by request `position` of the log entry at
/// `index`: ids increase along the log and within an entry.
pub fn event_id(index: u64, position: usize) -> u64 {
    let position = u64::try_from(position).unwrap_or(u64::MAX).min(IDS_PER_ENTRY - 1);
    index.saturating_mul(IDS_PER_ENTRY).saturating_add(position)
}

/// The highest event id a decision of the log entry at `index` can have.
pub fn entry_last_event_id(index: u64) -> u64 {
    event_id(index, usize::MAX)
}

/// A decision as this node published it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Where the command that made the decision sits in the Raft log ([`event_id`]):
    /// increasing, the same on every node.
    pub id: u64,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
}

/// The decisions this node has applied, recent ones kept for reconnecting subscribers.
pub struct Feed {
    inner: Mutex<Kept>,
    metrics: DecisionMetrics,
}

struct Kept {
    recent: VecDeque<Arc<Event>>,
    /// Groups whose baton is moving: since when (leader time, ms).
    moving_since: HashMap<GroupKey, u64>,
    /// Decisions at or below this log index are not kept: dropped for room, applied before
    /// this process started, or skipped by a snapshot.
    gone_up_to: u64,
    /// `None` once the node shuts down: every stream ends.
    sender: Option<broadcast::Sender<Arc<Event>>>,
}

impl Default for Feed {
    fn default() -> Self {
        let sender = broadcast::channel(SUBSCRIBER_BACKLOG).0;
        Self {
            inner: Mutex::new(Kept {
                recent: VecDeque::new(),
                moving_since: HashMap::new(),
                gone_up_to: 0,
                sender: Some(sender),
            }),
            metrics: DecisionMetrics::default(),
        }
    }
}

/// What a new subscriber gets: events it missed, whether some are gone, and the live feed.
pub struct Subscription {
    /// Kept events after the subscriber's last id, oldest first.
    pub replay: Vec<Arc<Event>>,
    /// Whether events after its last id may be gone.
    pub missed: bool,
    /// Events published from now on; `None` once the node shuts down.
    pub live: Option<broadcast::Receiver<Arc<Event>>>,
}

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().expect("the feed lock is never poisoned: nothing panics holding it")
    }

    /// Publishes a decision under its [`event_id`]. An id at or below one already
    /// published or gone is ignored, so nothing is published twice.
    pub fn publish(&self, id: u64, decision: Decision) {
        let mut kept = self.lock();
        if id <= kept.gone_up_to || kept.recent.back().is_some_and(|newest| newest.id >= id) {
            return;
        }
        self.count(&mut kept, &decision);
        let event = Arc::new(Event { id, decision });
        if kept.recent.len() == FEED_CAPACITY
            && let Some(dropped) = kept.recent.pop_front()
        {
            kept.gone_up_to = dropped.id;
        }
        kept.recent.push_back(event.clone());
        if let Some(sender) = &kept.sender {
            // Nobody listening is fine.
            let _ = sender.send(event);
        }
    }

    /// The decision counters and hand-over durations, for the node's metrics.
    pub fn metrics(&self) -> &DecisionMetrics {
        &self.metrics
    }

    fn count(&self, kept: &mut Kept, d: &Decision) {
        let name = |v: serde_json::Result<serde_json::Value>| {
            v.ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        };
        let labels = DecisionLabels {
            kind: name(serde_json::to_value(d.kind)),
            reason: name(serde_json::to_value(d.reason)),
        };
        self.metrics.decisions.get_or_create(&labels).inc();
        let taken_from_someone = d.roles.iter().any(|r| r.role == baton_core::Role::Secondary);
        match d.kind {
            DecisionKind::HandoverStarted | DecisionKind::Expired | DecisionKind::Relinquished => {
                kept.moving_since.entry(d.group.clone()).or_insert(d.at.0);
            }
            DecisionKind::Granted if taken_from_someone => {
                kept.moving_since.entry(d.group.clone()).or_insert(d.at.0);
            }
            DecisionKind::Promoted => {
                if let Some(since) = kept.moving_since.remove(&d.group) {
                    let ms = d.at.0.saturating_sub(since);
                    self.metrics.handover_seconds.observe(ms as f64 / 1000.0);
                }
            }
            DecisionKind::HandoverCancelled | DecisionKind::GroupDeleted => {
                kept.moving_since.remove(&d.group);
            }
            DecisionKind::Granted => {}
        }
    }

    /// Records that decisions up to event id `id` will never be published here: they were
    /// applied before this process started, or a snapshot replaced them.
    pub fn skip_to(&self, id: u64) {
        let mut kept = self.lock();
        kept.gone_up_to = kept.gone_up_to.max(id);
        let gone = kept.gone_up_to;
        kept.recent.retain(|e| e.id > gone);
    }

    /// Subscribes, replaying kept events after `after` (none if `None`). The replay and the
    /// live feed meet without a gap or a repeat: both are taken under the publish lock.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let kept = self.lock();
        let live = kept.sender.as_ref().map(broadcast::Sender::subscribe);
        let Some(after) = after else {
            return Subscription { replay: Vec::new(), missed: false, live };
        };
        let replay = kept.recent.iter().filter(|e| e.id > after).cloned().collect();
        Subscription { replay, missed: after < kept.gone_up_to, live }
    }

    /// Ends every stream (the node is shutting down); later subscribers get only the replay.
    pub fn close(&self) {
        self.lock().sender = None;
    }
}

/// The event routes.
pub fn routes<C: Coordinator>() -> Router<AppState<C>> {
    Router::new()
        .route("/events", get(all_events::<C>))
        .route("/groups/{tenant}/{namespace}/{group}/events", get(group_events::<C>))
        .route("/groups/{tenant}/{namespace}/{group}/history", get(history::<C>))
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|v| {
            v.to_str().ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
                ApiError::BadRequest("Last-Event-ID must be an event id (a number)".into())
            })
        })
        .transpose()
}

async fn all_events<C: Coordinator>(
    State(s): State<AppState<C>>,
    Admin(caller): Admin,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let place = s.streams.take(&caller.principal.name)?;
    let subscription = s.coordinator.feed().subscribe(last_event_id(&headers)?);
    let allowed = access(&s, caller, None);
    Ok(stream_of(subscription, None, allowed, place).into_response())
}

/// Whether the stream's caller may still hold it, checked every [`RECHECK`].
type Access = Arc<dyn Fn() -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

fn access<C: Coordinator>(s: &AppState<C>, caller: Caller, group: Option<GroupKey>) -> Access {
    let coordinator = s.coordinator.clone();
    Arc::new(move || {
        let (coordinator, caller, group) = (coordinator.clone(), caller.clone(), group.clone());
        Box::pin(async move { still_allowed(&*coordinator, &caller, group.as_ref()).await })
    })
}

async fn group_events<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    Path((tenant, namespace, group)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key(tenant, namespace, group)?;
    let after = last_event_id(&headers)?;
    usable_group(&*s.coordinator, &caller, &key).await?;
    let place = s.streams.take(&caller.principal.name)?;
    let subscription = s.coordinator.feed().subscribe(after);
    let allowed = access(&s, caller, Some(key.clone()));
    Ok(stream_of(subscription, Some(key), allowed, place).into_response())
}

/// The SSE stream of a subscription, only `group`'s events if given. It ends when the node
/// shuts down ([`Feed::close`]), and within [`RECHECK`] of its caller losing access (revoked,
/// or no longer allowed to use the group), after a `revoked` event.
fn stream_of(
    subscription: Subscription,
    group: Option<GroupKey>,
    allowed: Access,
    place: Place,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let Subscription { replay, missed, live } = subscription;
    let wanted = move |e: &Event| group.as_ref().is_none_or(|g| &e.decision.group == g);
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (replay.into_iter(), missed, live, wanted, recheck, false);
    let stream = futures::stream::unfold(
        state,
        move |(mut replay, mut missed, mut live, wanted, mut recheck, ended)| {
            let allowed = allowed.clone();
            // Held as long as the stream is: dropped with it.
            let _place = &place;
            async move {
                if ended {
                    return None;
                }
                loop {
                    if missed {
                        missed = false;
                        let state = (replay, missed, live, wanted, recheck, false);
                        return Some((Ok(lagged()), state));
                    }
                    let event = match (replay.next(), live.as_mut()) {
                        (Some(event), _) => event,
                        (None, None) => return None,
                        (None, Some(receiver)) => tokio::select! {
                            received = receiver.recv() => match received {
                                Ok(event) => event,
                                Err(broadcast::error::RecvError::Lagged(_)) => {
                                    missed = true;
                                    continue;
                                }
                                Err(broadcast::error::RecvError::Closed) => return None,
                            },
                            _ = recheck.tick() => {
                                if allowed().await {
                                    continue;
                                }
                                let state = (replay, missed, live, wanted, recheck, true);
                                return Some((Ok(revoked()), state));
                            }
                        },
                    };
                    if wanted(&event) {
                        let state = (replay, missed, live, wanted, recheck, false);
                        return Some((Ok(sse_event(&event)), state));
                    }
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

fn sse_event(event: &Event) -> SseEvent {
    let kind = serde_json::to_value(event.decision.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "decision".into());
    SseEvent::default()
        .id(event.id.to_string())
        .event(kind)
        .json_data(event)
        .unwrap_or_else(|_| SseEvent::default().comment("an event could not be encoded"))
}

fn revoked() -> SseEvent {
    SseEvent::default()
        .event("revoked")
        .data("this caller may no longer follow these events; the stream ends")
}

fn lagged() -> SseEvent {
    SseEvent::default()
        .event("lagged")
        .data("events were dropped before this client read them: read the state again")
}

#[derive(Serialize)]
struct HistoryPage {
    group: String,
    decisions: Vec<Decision>,
}

async fn history<C: Coordinator>(
    State(s): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    Path((tenant, namespace, group)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let key = key(tenant, namespace, group)?;
    usable_group(&*s.coordinator, &caller, &key).await?;
    let Served { value, by } =
        s.coordinator.read(Query::History(key.clone()), Consistency::Linearizable).await?;
    let QueryResult::History(decisions) = value else { return Err(ApiError::Internal) };
    Ok((ServedBy(by), Json(HistoryPage { group: key.to_string(), decisions })).into_response())
}
