//! Streamed heartbeats (native API): `GET /heartbeats`, upgraded to a WebSocket, on which a
//! client heartbeats any of the sessions it may use, one JSON text message per heartbeat, each
//! answered by one message, in the order sent.
//!
//! ```text
//! → {"id": 7, "group": "acme/plant/historian", "session": "node-a", "score": 100}
//! ← {"id": 7, "role": "Primary", "epoch": 3, "valid_for_ms": 10000, "served_by": 1}
//! → {"id": 8, "group": "acme/plant/nope", "session": "node-a"}
//! ← {"id": 8, "error": "not_found", "message": "no group acme/plant/nope"}
//! ```
//!
//! Each heartbeat is judged exactly as an AVEVA heartbeat request is: the same coordinator
//! call, the caller's identity (authenticated once, when the stream opens) checked against the
//! group on every message, the same per-session pace, and each message counted against the
//! identity's request rate. What a stream saves is the HTTP request around every heartbeat:
//! parsing, routing, authentication and a response head. A client may send further heartbeats
//! before the answers arrive; answers that are ready together are written together.
//!
//! A message that is not a heartbeat is answered with an error and the stream goes on; a
//! message larger than [`MAX_MESSAGE`] closes it. `id` is the client's own (any JSON number or
//! string, echoed); `score` defaults to 100; `heartbeat_time` and `last_data_processed_time`
//! are optional ISO 8601 date-times, read and echoed to the group as in the AVEVA API.
//!
//! A stream from which nothing (not even a pong) has arrived for the node's
//! `stream_keepalive_ms` is sent a WebSocket ping; silent for twice that, it is closed, as is
//! one whose client stops reading its answers: a client that died without closing its
//! connection would otherwise hold one of the places of [`crate::streams`] for ever.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse as _, Response};
use baton_core::{ClientTime, HeartbeatIn, Score, SessionId};
use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::AppState;
use crate::auth::{Caller, RECHECK, still_allowed};
use crate::aveva::wire;
use crate::coordinator::{Coordinator, HeartbeatOutcome, Served};
use crate::error::ApiError;
use crate::metrics::StreamedLabels;
use crate::native::{Authenticated, parse_group_key};

/// The largest message a client may send, in bytes; a larger one closes the stream.
pub const MAX_MESSAGE: usize = 4 * 1024;
/// Bytes read from the connection at a time. The WebSocket layer's default (128 KiB) is
/// zeroed before every read: a third of a busy leader's CPU, and memory that thousands of
/// open streams would each hold.
const READ_BUFFER: usize = 2 * MAX_MESSAGE;

/// One heartbeat, as a client sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatMessage {
    #[serde(default)]
    id: Option<serde_json::Value>,
    group: String,
    session: String,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    heartbeat_time: Option<String>,
    #[serde(default)]
    last_data_processed_time: Option<String>,
    /// The epoch of the last answer the client took, when that answer was Secondary.
    #[serde(default)]
    released_epoch: Option<u64>,
}

/// The answer to one heartbeat.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Answer {
    Answered {
        id: Option<serde_json::Value>,
        role: baton_core::Role,
        epoch: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        valid_for_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_data_processed_time: Option<String>,
        served_by: u64,
    },
    Refused {
        id: Option<serde_json::Value>,
        error: &'static str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl Answer {
    fn refused(id: Option<serde_json::Value>, error: ApiError) -> Self {
        let retry_after_ms = match error {
            ApiError::TooManyRequests(seconds) => Some(seconds * 1_000),
            _ => None,
        };
        Answer::Refused { id, error: error.code(), message: error.to_string(), retry_after_ms }
    }
}

/// `GET /heartbeats`: upgrades to the heartbeat stream of the authenticated caller.
pub async fn open<C: Coordinator>(
    State(state): State<AppState<C>>,
    Authenticated(caller): Authenticated,
    connection: Option<axum::Extension<crate::streams::ConnectionPlace>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let place = match state.streams.take(&caller.principal.name) {
        Ok(place) => place,
        Err(busy) => return busy.into_response(),
    };
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            serve(state, caller, socket).await;
            // The upgraded connection kept its place in the connection caps until now.
            drop((place, connection));
        })
}

/// Answers the stream's heartbeats until the client closes it or the connection fails.
async fn serve<C: Coordinator>(state: AppState<C>, caller: Caller, socket: WebSocket) {
    let metrics = state.metrics.clone();
    metrics.heartbeat_streams.inc();
    answer_all(&state, &caller, socket).await;
    metrics.heartbeat_streams.dec();
}

async fn answer_all<C: Coordinator>(state: &AppState<C>, caller: &Caller, socket: WebSocket) {
    let outcome = |outcome: &str| {
        state
            .metrics
            .streamed_heartbeats
            .get_or_create(&StreamedLabels { outcome: outcome.into() })
            .clone()
    };
    let answered = outcome("answered");
    let keepalive = state.stream_keepalive;
    let (mut sink, mut incoming) = socket.split();
    let mut heard = Instant::now();
    let mut check = tokio::time::interval_at(Instant::now() + keepalive / 2, keepalive / 2);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(first)) => first,
                _ => return,
            },
            // A revoked caller's stream goes at once: it would hold a place, and every
            // heartbeat on it would be refused anyway.
            _ = recheck.tick() => {
                if !still_allowed(&*state.coordinator, caller, None).await {
                    tracing::info!(identity = %caller.principal.name, "closed a revoked caller's heartbeat stream");
                    let reason = "the caller's identity was revoked, rotated or changed";
                    let frame = CloseFrame { code: close_code::POLICY, reason: reason.into() };
                    let _ = finished_within(keepalive, sink.send(Message::Close(Some(frame)))).await;
                    return;
                }
                continue;
            }
            _ = check.tick() => {
                let silent = heard.elapsed();
                match keepalive_due(silent, keepalive) {
                    Keepalive::Quiet => {}
                    Keepalive::Ping => {
                        let ping = sink.send(Message::Ping(Default::default()));
                        if !finished_within(keepalive, ping).await {
                            return;
                        }
                    }
                    Keepalive::Close => {
                        tracing::info!(silent_ms = silent.as_millis(), "closed a silent heartbeat stream");
                        let reason = format!("nothing heard for {} ms", silent.as_millis());
                        let frame = CloseFrame { code: close_code::NORMAL, reason: reason.into() };
                        let _ = finished_within(keepalive, sink.send(Message::Close(Some(frame)))).await;
                        return;
                    }
                }
                continue;
            }
        };
        heard = Instant::now();
        let mut message = Some(first);
        // Answer what has already arrived, then write the answers together.
        while let Some(m) = message.take() {
            let answer = match m {
                Message::Text(text) => answer(state, caller, text.as_str()).await,
                Message::Binary(_) => Answer::refused(
                    None,
                    ApiError::BadRequest("heartbeats are JSON text messages".into()),
                ),
                Message::Close(_) => {
                    let _ = finished_within(keepalive, sink.flush()).await;
                    return;
                }
                // Pings are answered by the WebSocket layer itself; a pong only shows the
                // client is there.
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            match &answer {
                Answer::Answered { .. } => answered.inc(),
                Answer::Refused { error, .. } => outcome(error).inc(),
            };
            let Ok(text) = serde_json::to_string(&answer) else { return };
            if sink.feed(Message::Text(text.into())).await.is_err() {
                return;
            }
            message = match incoming.next().now_or_never() {
                Some(Some(Ok(next))) => Some(next),
                Some(_) => {
                    let _ = finished_within(keepalive, sink.flush()).await;
                    return;
                }
                None => None,
            };
        }
        // A client that does not read its answers for a keepalive period is let go.
        if !finished_within(keepalive, sink.flush()).await {
            return;
        }
    }
}

/// What a stream's keepalive check does.
#[derive(Debug, PartialEq, Eq)]
enum Keepalive {
    /// The client was heard from within the keepalive period.
    Quiet,
    /// Silent for a keepalive period: ping it (its WebSocket layer answers with a pong).
    Ping,
    /// Silent for two: the client is gone; close the stream and free its slot.
    Close,
}

fn keepalive_due(silent: Duration, keepalive: Duration) -> Keepalive {
    if silent >= keepalive.saturating_mul(2) {
        Keepalive::Close
    } else if silent >= keepalive {
        Keepalive::Ping
    } else {
        Keepalive::Quiet
    }
}

/// Whether `send` succeeded within `limit`: a peer that stopped reading must not hold the
/// stream open by leaving its receive window full.
async fn finished_within<E>(limit: Duration, send: impl Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout(limit, send).await, Ok(Ok(())))
}

/// Judges one message exactly as the AVEVA heartbeat endpoint judges a request.
async fn answer<C: Coordinator>(state: &AppState<C>, caller: &Caller, text: &str) -> Answer {
    let message: HeartbeatMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => return Answer::refused(None, ApiError::BadRequest(e.to_string())),
    };
    let id = message.id.clone();
    match heartbeat(state, caller, message).await {
        Ok(answer) => answer,
        Err(e) => Answer::refused(id, e),
    }
}

async fn heartbeat<C: Coordinator>(
    state: &AppState<C>,
    caller: &Caller,
    message: HeartbeatMessage,
) -> Result<Answer, ApiError> {
    state.gate.admit(&caller.principal).map_err(ApiError::from)?;
    let group = parse_group_key(&message.group)?;
    // As the native API's group reads: another tenant's groups are not found, whether they
    // exist or not, before anything is looked up.
    let not_found = || ApiError::NotFound(format!("no group {group}"));
    if !caller.principal.may_enter(&group.scope.tenant) {
        return Err(not_found());
    }
    let session =
        SessionId::new(message.session).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let score = Score::new(message.score.unwrap_or(100.0))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let heartbeat = HeartbeatIn {
        score,
        heartbeat_time: message.heartbeat_time.as_deref().map(parse_time).transpose()?,
        last_data_processed_time: message
            .last_data_processed_time
            .as_deref()
            .map(parse_time)
            .transpose()?,
    };
    let beat = baton_core::Beat {
        group: group.clone(),
        session: session.clone(),
        heartbeat,
        caller: caller.principal.name.clone(),
        released: message.released_epoch.map(baton_core::Epoch),
    };
    let Served { value, by } = state.coordinator.heartbeat(beat).await?;
    match value {
        HeartbeatOutcome::Answered(a) => Ok(Answer::Answered {
            id: message.id,
            role: a.role,
            epoch: a.epoch.0,
            valid_for_ms: a.valid_for_ms,
            last_data_processed_time: a.last_data_processed_time.map(wire::format_time),
            served_by: by,
        }),
        HeartbeatOutcome::GroupNotFound => Err(not_found()),
        HeartbeatOutcome::SessionNotFound => {
            Err(ApiError::NotFound(format!("no session {:?} in group {group}", session.as_str())))
        }
        HeartbeatOutcome::Forbidden => {
            Err(ApiError::Forbidden(format!("this identity may not use group {group}")))
        }
        HeartbeatOutcome::TooFast { retry_after_ms } => Ok(Answer::Refused {
            id: message.id,
            error: "too_many_requests",
            message: format!(
                "session {:?} heartbeats faster than its group allows; retry after {retry_after_ms} ms",
                session.as_str()
            ),
            retry_after_ms: Some(retry_after_ms),
        }),
        HeartbeatOutcome::Deciding { retry_after_ms } => Ok(Answer::Refused {
            id: message.id,
            error: "deciding",
            message: format!(
                "session {:?} held the baton and its successor is being committed; retry after {retry_after_ms} ms",
                session.as_str()
            ),
            retry_after_ms: Some(retry_after_ms),
        }),
    }
}

/// A time as the AVEVA heartbeat endpoint reads it.
fn parse_time(text: &str) -> Result<ClientTime, ApiError> {
    wire::client_time(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{text:?} is not an ISO 8601 date-time such as 2019-08-24T14:15:22Z"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_pinged_after_one_silent_keepalive_period_and_closed_after_two() {
        let keepalive = Duration::from_secs(15);
        assert_eq!(keepalive_due(Duration::from_secs(14), keepalive), Keepalive::Quiet);
        assert_eq!(keepalive_due(Duration::from_secs(15), keepalive), Keepalive::Ping);
        assert_eq!(keepalive_due(Duration::from_secs(29), keepalive), Keepalive::Ping);
        assert_eq!(keepalive_due(Duration::from_secs(30), keepalive), Keepalive::Close);
    }
}
