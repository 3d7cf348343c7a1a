//! Streamed heartbeats (`GET /heartbeats`, a WebSocket) against a real three-node cluster:
//! answers match what the AVEVA endpoint decides, pipelined heartbeats are answered in order,
//! a follower's stream is served by the leader, bad messages are refused without ending the
//! stream, the stream's identity is held to its tenant (and the stream closed when it is
//! revoked), a node's streams are limited, and a stream whose client is gone is closed.

use std::time::Duration;

use baton_e2e::{ADMIN_TOKEN, TestCluster, send};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const ELECTION: Duration = Duration::from_secs(10);
const GROUPS: &str = "/api/v1/tenants/e2e/namespaces/ns/clientfailover/groups";

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a heartbeat stream on `base` with `token`; the HTTP status if it was refused.
async fn open(base: &str, token: Option<&str>) -> Result<Stream, u16> {
    let url = format!("{}/heartbeats", base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("a WebSocket request");
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("a header value");
        request.headers_mut().insert("authorization", value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, _)) => Ok(stream),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("the stream failed to open: {e}"),
    }
}

async fn say(stream: &mut Stream, message: Value) {
    stream.send(Message::Text(message.to_string().into())).await.expect("send");
}

async fn hear(stream: &mut Stream) -> Value {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        match next.expect("an answer within 10 s").expect("the stream is open").expect("a frame") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn heartbeat(stream: &mut Stream, id: u64, group: &str, session: &str) -> Value {
    say(stream, json!({"id": id, "group": group, "session": session, "score": 100})).await;
    hear(stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_heartbeats_are_judged_like_aveva_requests_on_any_node() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    // A long timeout, so that a session may heartbeat only every few seconds (its pace).
    cluster.create_failover_group(leader, GROUPS, "g", Duration::from_secs(60), &["a", "b"]).await;
    let group = "e2e/ns/g";

    // Through a follower: the leader judges, and says so.
    let mut stream = open(&cluster.url(follower), Some(ADMIN_TOKEN)).await.expect("opened");
    let first = heartbeat(&mut stream, 1, group, "a").await;
    assert_eq!(first["id"], 1, "{first}");
    assert!(matches!(first["role"].as_str(), Some("PendingPrimary" | "Primary")), "{first}");
    assert_eq!(first["served_by"], leader, "{first}");
    let epoch = first["epoch"].as_u64().expect("an epoch");
    assert!(first["valid_for_ms"].as_u64().is_some(), "a grant has a validity: {first}");
    let other = heartbeat(&mut stream, 2, group, "b").await;
    assert_eq!(other["role"], "Secondary", "one holder per group: {other}");
    assert_eq!(other["epoch"], epoch, "{other}");
    assert!(other.get("valid_for_ms").is_none(), "a Secondary holds no grant: {other}");

    // The AVEVA API shows the same decision.
    for (session, holds) in [("a", true), ("b", false)] {
        let url = format!("{}{GROUPS}/g/clientsessions/{session}", cluster.url(leader));
        let r = send(cluster.http(), "GET", &url, None).await.expect("answer");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["Role"] != json!(0), holds, "session {session}: {r:?}");
    }

    // Too fast for the group's pace, answered with when to retry; the stream goes on.
    let fast = heartbeat(&mut stream, 3, group, "a").await;
    assert_eq!(fast["error"], "too_many_requests", "{fast}");
    assert!(fast["retry_after_ms"].as_u64().is_some(), "{fast}");

    // Refusals carry the message's id and the native error codes.
    let missing = heartbeat(&mut stream, 4, "e2e/ns/nope", "a").await;
    assert_eq!((missing["id"].clone(), missing["error"].clone()), (json!(4), json!("not_found")));
    let no_session = heartbeat(&mut stream, 5, group, "zz").await;
    assert_eq!(no_session["error"], "not_found", "{no_session}");
    let bad_group = heartbeat(&mut stream, 6, "not-a-key", "a").await;
    assert_eq!(bad_group["error"], "bad_request", "{bad_group}");
    say(&mut stream, json!({"id": 7, "group": group, "session": "a", "score": 101})).await;
    assert_eq!(hear(&mut stream).await["error"], "bad_request", "a score above 100");
    say(&mut stream, json!({"id": 8, "group": group, "session": "a", "heartbeat_time": "soon"}))
        .await;
    assert_eq!(hear(&mut stream).await["error"], "bad_request", "a time that is not one");
    // A time without an offset is read as UTC, as the AVEVA endpoint reads it: judged, not
    // refused as bad input (too fast here, unless this test ran slower than the pace).
    let local =
        json!({"id": 9, "group": group, "session": "a", "heartbeat_time": "2019-08-24T14:15:22"});
    say(&mut stream, local).await;
    let judged = hear(&mut stream).await;
    assert_ne!(judged["error"], "bad_request", "a time without offset: {judged}");
    assert_eq!(judged["id"], 9, "{judged}");
    stream.send(Message::Text("{not json".into())).await.expect("send");
    let garbage = hear(&mut stream).await;
    assert_eq!(
        (garbage["id"].clone(), garbage["error"].clone()),
        (Value::Null, json!("bad_request"))
    );
    stream.send(Message::Binary(vec![1, 2, 3].into())).await.expect("send");
    assert_eq!(hear(&mut stream).await["error"], "bad_request", "a binary message");

    // Pipelined: many heartbeats sent before any answer is read come back in order.
    cluster.create_failover_group(leader, GROUPS, "p", Duration::from_secs(60), &["x"]).await;
    let mut leader_stream = open(&cluster.url(leader), Some(ADMIN_TOKEN)).await.expect("opened");
    for id in 0..20u64 {
        let session = if id == 0 { "x" } else { "ghost" };
        say(
            &mut leader_stream,
            json!({"id": format!("m{id}"), "group": "e2e/ns/p", "session": session}),
        )
        .await;
    }
    for id in 0..20u64 {
        let answer = hear(&mut leader_stream).await;
        assert_eq!(answer["id"], format!("m{id}"), "answers keep the order of the heartbeats");
        if id == 0 {
            assert!(answer["role"].is_string(), "{answer}");
        } else {
            assert_eq!(answer["error"], "not_found", "{answer}");
        }
    }

    // A message beyond the size limit ends the stream.
    let huge = json!({"id": 1, "group": group, "session": "a".repeat(8 * 1024)});
    let _ = leader_stream.send(Message::Text(huge.to_string().into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match leader_stream.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "an oversized message closes the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_needs_a_credential_and_keeps_its_identity_to_its_tenant() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    cluster.create_failover_group(leader, GROUPS, "g", Duration::from_secs(2), &["a"]).await;
    let base = cluster.url(leader);

    assert_eq!(open(&base, None).await.err(), Some(401), "no token");
    assert_eq!(open(&base, Some("baton_nobody_secret")).await.err(), Some(401), "a bad token");

    // A member of another tenant is let in, but this tenant's groups are not found for it,
    // whether they exist or not.
    let body = json!({"name": "outsider", "role": "member", "tenant": "other"});
    let r = send(cluster.http(), "POST", &format!("{base}/identities"), Some(body)).await;
    let token = r.expect("answer").body["token"].as_str().expect("a token").to_string();
    let mut stream = open(&base, Some(&token)).await.expect("opened");
    let refused = heartbeat(&mut stream, 1, "e2e/ns/g", "a").await;
    assert_eq!(refused["error"], "not_found", "{refused}");
    let absent = heartbeat(&mut stream, 2, "e2e/ns/nope", "a").await;
    assert_eq!(absent["error"], "not_found", "{absent}");
    assert_eq!(
        refused["message"].as_str().map(|m| m.replace("/g", "/nope")),
        absent["message"].as_str().map(str::to_string),
        "the two refusals differ only in the group's name"
    );

    // Revoked while the stream is open: the node closes it within a second (it would hold a
    // place, and every heartbeat on it would be refused).
    let mut admin = open(&base, Some(ADMIN_TOKEN)).await.expect("opened");
    let body = json!({"name": "member", "role": "member", "tenant": "e2e"});
    let r = send(cluster.http(), "POST", &format!("{base}/identities"), Some(body)).await;
    let token = r.expect("answer").body["token"].as_str().expect("a token").to_string();
    let mut member = open(&base, Some(&token)).await.expect("opened");
    let granted = heartbeat(&mut member, 1, "e2e/ns/g", "a").await;
    assert!(granted["role"].is_string(), "a member of the tenant may heartbeat: {granted}");
    let r = send(cluster.http(), "DELETE", &format!("{base}/identities/member"), None).await;
    assert!(r.expect("answer").status < 300, "revoked");
    let closed = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            match member.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(Some(1008)), "closed for policy within 1.5 s of the revocation");
    let still = heartbeat(&mut admin, 3, "e2e/ns/g", "a").await;
    assert!(still["role"].is_string(), "other streams go on: {still}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_at_most_its_stream_limit_open_and_refuses_one_more_with_503() {
    // The streams are not read while thousands more open: a keepalive longer than the test
    // keeps the node from closing them as silent. Each keeps its connection's place, all from
    // one address: the connection caps are raised past the stream limit.
    let settings = [
        ("stream_keepalive_ms", "600000"),
        ("max_streams_per_identity", "5000"),
        ("max_connections", "5000"),
        ("max_connections_per_address", "5000"),
    ];
    let cluster = TestCluster::start_with(1, &settings);
    let node = cluster.wait_for_leader(ELECTION).await;
    let base = cluster.url(node);
    cluster.create_failover_group(node, GROUPS, "g", Duration::from_secs(60), &["a"]).await;
    let limit = baton_api::streams::MAX_STREAMS;
    let mut open_streams = Vec::with_capacity(limit);
    while open_streams.len() < limit {
        let batch = (limit - open_streams.len()).min(64);
        let opened = futures::future::join_all((0..batch).map(|_| open(&base, Some(ADMIN_TOKEN))));
        for stream in opened.await {
            open_streams.push(stream.expect("a stream within the limit opens"));
        }
    }
    assert_eq!(open(&base, Some(ADMIN_TOKEN)).await.err(), Some(503), "one over the limit");
    // Every stream still works, and closing one makes room for another.
    let answer = heartbeat(&mut open_streams[0], 1, "e2e/ns/g", "a").await;
    assert!(answer["role"].is_string(), "{answer}");
    let mut last = open_streams.pop().expect("a stream");
    last.close(None).await.expect("closed");
    drop(last);
    let reopened = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match open(&base, Some(ADMIN_TOKEN)).await {
                Ok(stream) => return stream,
                Err(status) => {
                    assert_eq!(status, 503);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    let mut reopened = reopened.await.expect("a closed stream's place is given to a new one");
    let answer = heartbeat(&mut reopened, 2, "e2e/ns/g", "zz").await;
    assert_eq!(answer["error"], "not_found", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_pinged_and_one_whose_client_is_gone_is_closed() {
    let cluster = TestCluster::start_with(1, &[("stream_keepalive_ms", "300")]);
    let node = cluster.wait_for_leader(ELECTION).await;
    let base = cluster.url(node);
    cluster.create_failover_group(node, GROUPS, "g", Duration::from_secs(60), &["a"]).await;
    let mut alive = open(&base, Some(ADMIN_TOKEN)).await.expect("opens");
    let mut gone = open(&base, Some(ADMIN_TOKEN)).await.expect("opens");

    // `alive` is read, so its WebSocket layer answers every ping with a pong; `gone` is not
    // read at all, as if its client had died without closing the connection.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1_500);
    while let Ok(frame) = tokio::time::timeout_at(until, alive.next()).await {
        match frame.expect("the stream is open").expect("a frame") {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert!(pings >= 2, "a silent stream is pinged: {pings} pings in 1.5 s");
    let answer = heartbeat(&mut alive, 1, "e2e/ns/g", "a").await;
    assert!(answer["role"].is_string(), "a stream whose client answers pings stays: {answer}");

    // The other was closed after two silent periods: what it was sent ends there. (Were it
    // still open, pings would keep coming and the wait below would time out.)
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = gone.next().await {
            match frame {
                Ok(Message::Close(frame)) => return frame.map(|f| f.reason.to_string()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the silent stream was closed");
    if let Some(reason) = ended {
        assert!(reason.contains("nothing heard"), "{reason}");
    }
}
