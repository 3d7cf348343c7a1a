//! Decision history and server-sent event streams, in process against the in-memory
//! coordinator (the real core and detector, a manual clock).

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use baton_api::events::Feed;
use baton_core::{
    Decision, DecisionKind, Epoch, GroupId, GroupKey, NamespaceId, Reason, Scope, TenantId,
    Timestamp,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::{FakeCoordinator, ROOT_TOKEN, call, call_as};
use tower::ServiceExt;

const GROUPS: &str = "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups";
const G: &str = "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups/g";

/// A group `g` (30 s timeout) with sessions `a` and `b`; `a` holds the baton.
async fn setup() -> (Arc<FakeCoordinator>, baton_api::App) {
    let fake = Arc::new(FakeCoordinator::leading());
    let app = support::app_for(fake.clone());
    let created =
        call(&app, "POST", GROUPS, Some(r#"{"Id":"g","FailoverTimeout":"00:00:30"}"#)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    for s in ["a", "b"] {
        let body = json!({ "Id": s }).to_string();
        call(&app, "POST", &format!("{G}/clientsessions"), Some(&body)).await;
    }
    heartbeat(&app, "a", 100.0).await;
    heartbeat(&app, "b", 90.0).await;
    (fake, app)
}

async fn heartbeat(app: &baton_api::App, session: &str, score: f64) -> support::Reply {
    let body = json!({ "FailoverStatus": score }).to_string();
    call(app, "POST", &format!("{G}/clientsessions/{session}/heartbeat"), Some(&body)).await
}

/// `a` goes silent; after the timeout `b` is given the baton, then promoted.
async fn fail_over_to_b(fake: &FakeCoordinator, app: &baton_api::App) {
    fake.advance(15_000);
    heartbeat(app, "b", 90.0).await;
    fake.advance(15_001);
    fake.tick();
    let pending = heartbeat(app, "b", 90.0).await;
    assert_eq!(pending.body["Role"], json!(2), "{pending:?}");
    fake.advance(15_000);
    heartbeat(app, "b", 90.0).await;
}

/// An open event stream: its body, read frame by frame.
struct Stream {
    body: Body,
    buffer: String,
}

async fn open(
    app: &baton_api::App,
    uri: &str,
    last_event_id: Option<&str>,
) -> (StatusCode, Stream) {
    let mut request =
        Request::builder().uri(uri).header("authorization", format!("Bearer {ROOT_TOKEN}"));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response =
        app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("served");
    let status = response.status();
    if status == StatusCode::OK {
        assert_eq!(response.headers()["content-type"], "text/event-stream");
    }
    (status, Stream { body: response.into_body(), buffer: String::new() })
}

/// One SSE event: (id, event name, data).
#[derive(Debug)]
struct Sse {
    id: Option<String>,
    name: String,
    data: Value,
}

impl Stream {
    /// The next event (comments skipped), or `None` if none arrives within a second.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut name, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if name.is_empty() && data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(Sse { id, name, data });
            }
            let frame =
                tokio::time::timeout(Duration::from_secs(1), self.body.frame()).await.ok()??;
            if let Ok(bytes) = frame.expect("a frame").into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
}

#[tokio::test]
async fn history_shows_each_decision_with_the_candidates_considered() {
    let (fake, app) = setup().await;
    fail_over_to_b(&fake, &app).await;
    let history = call(&app, "GET", "/groups/t1/ns/g/history", None).await;
    assert_eq!(history.status, StatusCode::OK, "{history:?}");
    let decisions = history.body["decisions"].as_array().expect("decisions").clone();
    let kinds: Vec<_> = decisions.iter().map(|d| d["kind"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds, ["granted", "granted", "promoted"], "{decisions:#?}");

    let first = &decisions[0];
    assert_eq!(first["reason"], json!("Vacant"));
    assert_eq!(first["roles"], json!([{"session": "a", "role": "Primary"}]));
    let handover = &decisions[1];
    assert_eq!(handover["reason"], json!("Stale"));
    assert_eq!(handover["epoch"], json!(2));
    assert_eq!(
        handover["roles"],
        json!([{"session": "a", "role": "Secondary"}, {"session": "b", "role": "PendingPrimary"}])
    );
    let verdicts: Vec<_> = handover["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| (c["session"].clone(), c["verdict"].clone()))
        .collect();
    assert_eq!(verdicts, [(json!("a"), json!("stale")), (json!("b"), json!("chosen"))]);
    assert_eq!(decisions[2]["roles"], json!([{"session": "b", "role": "Primary"}]));
}

#[tokio::test]
async fn group_stream_carries_every_role_change_and_replays_after_last_event_id() {
    let (fake, app) = setup().await;
    let (status, mut stream) = open(&app, "/groups/t1/ns/g/events", None).await;
    assert_eq!(status, StatusCode::OK);
    fail_over_to_b(&fake, &app).await;

    let granted = stream.next().await.expect("the grant");
    assert_eq!(granted.name, "granted");
    assert_eq!(
        granted.data["group"],
        json!({"scope": {"tenant": "t1", "namespace": "ns"}, "group": "g"})
    );
    assert_eq!(granted.data["reason"], json!("Stale"));
    assert_eq!(granted.data["epoch"], json!(2));
    let promoted = stream.next().await.expect("the promotion");
    assert_eq!(promoted.name, "promoted");
    assert!(stream.next().await.is_none(), "nothing else happened");

    // A client that saw the grant and reconnects gets the promotion again, then live events.
    let (_, mut resumed) = open(&app, "/groups/t1/ns/g/events", granted.id.as_deref()).await;
    let replayed = resumed.next().await.expect("the replay");
    assert_eq!((replayed.name.as_str(), replayed.id), ("promoted", promoted.id));
    heartbeat(&app, "a", 100.0).await; // a standby is ready
    let forced = call(&app, "POST", "/groups/t1/ns/g/failover", None).await;
    assert_eq!(forced.status, StatusCode::ACCEPTED, "{forced:?}");
    let started = resumed.next().await.expect("the forced hand-over");
    assert_eq!(started.name, "handover_started");
    assert_eq!(started.data["reason"], json!("Forced"));
    assert_eq!(started.data["handover"]["from"], json!("b"));
}

#[tokio::test]
async fn cluster_stream_carries_every_group_and_group_deletion() {
    let (fake, app) = setup().await;
    let (status, mut stream) = open(&app, "/events", None).await;
    assert_eq!(status, StatusCode::OK);
    call(&app, "POST", GROUPS, Some(r#"{"Id":"h","FailoverTimeout":"00:00:30"}"#)).await;
    call(
        &app,
        "POST",
        "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups/h/clientsessions",
        Some(r#"{"Id":"x"}"#),
    )
    .await;
    call(
        &app,
        "POST",
        "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups/h/clientsessions/x/heartbeat",
        Some(r#"{"FailoverStatus":100}"#),
    )
    .await;
    let granted = stream.next().await.expect("h's first grant");
    assert_eq!((granted.name.as_str(), &granted.data["group"]["group"]), ("granted", &json!("h")));
    fake.advance(60_000);
    let deleted = call(&app, "DELETE", G, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    let event = stream.next().await.expect("g's deletion");
    assert_eq!(event.name, "group_deleted");
    assert_eq!(event.data["reason"], json!("Deleted"));
    assert_eq!(event.data["roles"], json!([{"session": "a", "role": "Secondary"}]));
    // Its history went with it.
    let history = call(&app, "GET", "/groups/t1/ns/g/history", None).await;
    assert_eq!(history.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn streams_and_history_are_only_for_those_who_may_use_the_group() {
    let (fake, app) = setup().await;
    let member = fake.member("alice", "t1");
    let stranger = fake.member("mallory", "t2");
    for (token, uri, expected) in [
        (&member, "/groups/t1/ns/g/history", StatusCode::OK),
        (&member, "/events", StatusCode::FORBIDDEN),
        (&stranger, "/groups/t1/ns/g/history", StatusCode::NOT_FOUND),
        (&stranger, "/groups/t1/ns/g/events", StatusCode::NOT_FOUND),
        (&stranger, "/groups/t1/ns/nope/events", StatusCode::NOT_FOUND),
        (&stranger, "/events", StatusCode::FORBIDDEN),
    ] {
        let reply = call_as(&app, Some(token), "GET", uri, None, None).await;
        assert_eq!(reply.status, expected, "{uri}: {reply:?}");
    }
    let reply = call_as(&app, None, "GET", "/events", None, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let (status, _) = open(&app, "/events", Some("yesterday")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

fn decision(at: u64) -> Decision {
    let scope = Scope {
        tenant: TenantId::new("t").expect("valid"),
        namespace: NamespaceId::new("n").expect("valid"),
    };
    Decision {
        group: GroupKey { scope, group: GroupId::new("g").expect("valid") },
        at: Timestamp(at),
        kind: DecisionKind::Promoted,
        reason: Reason::Vacant,
        epoch: Epoch(1),
        roles: Vec::new(),
        handover: None,
        candidates: Vec::new(),
    }
}

#[test]
fn feed_replays_what_it_kept_and_says_when_something_is_gone() {
    let feed = Feed::default();
    // Applied before this process started: a subscriber that saw less may have missed some.
    feed.skip_to(10);
    feed.publish(10, decision(1)); // re-applied tail, already published by the last process
    feed.publish(12, decision(2));
    feed.publish(15, decision(3));
    feed.publish(15, decision(4)); // never twice

    let after_12 = feed.subscribe(Some(12));
    assert_eq!(after_12.replay.iter().map(|e| e.id).collect::<Vec<_>>(), [15]);
    assert!(!after_12.missed);
    let after_5 = feed.subscribe(Some(5));
    assert_eq!(after_5.replay.len(), 2);
    assert!(after_5.missed, "events 6 to 10 were applied by an earlier process");
    assert!(feed.subscribe(None).replay.is_empty(), "a new subscriber starts live");

    // Dropped for room: 12, 15 and 16 go.
    for id in 16..17 + baton_api::events::FEED_CAPACITY as u64 {
        feed.publish(id, decision(id));
    }
    assert!(feed.subscribe(Some(15)).missed);
    assert!(!feed.subscribe(Some(16)).missed);

    // A snapshot replaced everything up to 10_000.
    feed.skip_to(10_000);
    assert!(feed.subscribe(Some(9_000)).replay.is_empty());

    let mut live = feed.subscribe(None).live.expect("open");
    feed.close();
    assert!(live.try_recv().is_err());
    assert!(feed.subscribe(None).live.is_none(), "closed for good");
}

/// Reads `stream` until it ends; `None` if it is still open after `within`. Returns what it
/// carried.
async fn until_ended(stream: &mut Stream, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, stream.body.frame()).await.ok()?;
        match frame {
            None => return Some(std::mem::take(&mut stream.buffer)),
            Some(frame) => {
                if let Ok(bytes) = frame.expect("a frame").into_data() {
                    stream.buffer.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
    }
}

async fn open_as(app: &baton_api::App, token: &str, uri: &str) -> Stream {
    let request = Request::builder().uri(uri).header("authorization", format!("Bearer {token}"));
    let response =
        app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("served");
    assert_eq!(response.status(), StatusCode::OK);
    Stream { body: response.into_body(), buffer: String::new() }
}

#[tokio::test]
async fn a_stream_ends_within_a_second_of_its_callers_revocation_or_loss_of_access() {
    let (fake, app) = setup().await;
    let alice = fake.member("alice", "t1");
    let bob = fake.member("bob", "t1");
    let mut alices = open_as(&app, &alice, "/groups/t1/ns/g/events").await;
    let mut bobs = open_as(&app, &bob, "/groups/t1/ns/g/events").await;
    assert!(until_ended(&mut alices, Duration::from_millis(700)).await.is_none(), "open");
    let revoke = baton_core::Command::RevokeIdentity {
        name: baton_core::IdentityName::new("alice").expect("a name"),
    };
    fake.apply_as(revoke, fake.root());
    let carried = until_ended(&mut alices, Duration::from_secs(1)).await.expect("ended");
    assert!(carried.contains("event: revoked"), "{carried}");
    // bob loses access to the group (its allowed owners no longer include him).
    let key = GroupKey {
        scope: Scope {
            tenant: TenantId::new("t1").expect("an id"),
            namespace: NamespaceId::new("ns").expect("an id"),
        },
        group: GroupId::new("g").expect("an id"),
    };
    let owners = [baton_core::IdentityName::new("root").expect("a name")].into();
    let narrowed =
        fake.apply_as(baton_core::Command::SetAllowedOwners { group: key, owners }, fake.root());
    assert!(matches!(narrowed, baton_core::Response::Group { .. }), "{narrowed:?}");
    assert!(until_ended(&mut bobs, Duration::from_secs(1)).await.is_some(), "bob's stream ended");
    // The administrator's stream of every group goes on.
    let (status, mut admins) = open(&app, "/events", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(until_ended(&mut admins, Duration::from_millis(700)).await.is_none());
}

#[tokio::test]
async fn a_stream_ends_within_a_second_of_its_callers_token_being_rotated() {
    let (fake, app) = setup().await;
    let alice = fake.member("alice", "t1");
    let mut alices = open_as(&app, &alice, "/groups/t1/ns/g/events").await;
    assert!(until_ended(&mut alices, Duration::from_millis(700)).await.is_none(), "open");
    // The token that opened the stream is replaced (leaked, say): the stream goes with it.
    fake.rotate("alice");
    let carried = until_ended(&mut alices, Duration::from_secs(1)).await.expect("ended");
    assert!(carried.contains("event: revoked"), "{carried}");
}

#[tokio::test]
async fn one_identity_holds_at_most_its_share_of_the_nodes_streams() {
    let (fake, app) = setup().await;
    let alice = fake.member("alice", "t1");
    let share = baton_api::streams::DEFAULT_STREAMS_PER_IDENTITY;
    let mut held = Vec::with_capacity(share);
    for _ in 0..share {
        held.push(open_as(&app, &alice, "/groups/t1/ns/g/events").await);
    }
    let over = call_as(&app, Some(&alice), "GET", "/groups/t1/ns/g/events", None, None).await;
    assert_eq!(over.status, StatusCode::SERVICE_UNAVAILABLE, "{over:?}");
    assert_eq!(over.body["error"], "busy", "{over:?}");
    // Another identity is not held back by alice's streams.
    let (status, _admins) = open(&app, "/events", None).await;
    assert_eq!(status, StatusCode::OK);
    // A stream closed by its client gives its place back.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _again = open_as(&app, &alice, "/groups/t1/ns/g/events").await;
}
