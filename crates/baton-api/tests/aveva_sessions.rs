//! AVEVA client sessions, heartbeats, status and role overrides, in process against an
//! in-memory coordinator that runs the real core detector with a manual clock.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{FakeCoordinator, call};
use test_case::test_case;

const G: &str = "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups/g";
const PREVIEW_G: &str = "/api/v1-preview/tenants/t1/namespaces/ns/clientfailover/groups/g";

/// A group `g` with a 30 s failover timeout and sessions `a` and `b`.
async fn setup() -> (Arc<FakeCoordinator>, baton_api::App) {
    let fake = Arc::new(FakeCoordinator::leading());
    let app = support::app_for(fake.clone());
    let groups = "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups";
    let created =
        call(&app, "POST", groups, Some(r#"{"Id":"g","FailoverTimeout":"00:00:30"}"#)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    for s in ["a", "b"] {
        let body = json!({"Id": s, "Name": format!("adapter {s}")}).to_string();
        assert_eq!(
            call(&app, "POST", &format!("{G}/clientsessions"), Some(&body)).await.status,
            StatusCode::CREATED
        );
    }
    (fake, app)
}

async fn heartbeat(app: &baton_api::App, session: &str, body: Value) -> support::Reply {
    call(app, "POST", &format!("{G}/clientsessions/{session}/heartbeat"), Some(&body.to_string()))
        .await
}

fn hb(score: f64, ldpt: &str) -> Value {
    json!({"HeartbeatTime": "2026-11-22T10:00:00Z", "LastDataProcessedTime": ldpt, "FailoverStatus": score})
}

#[tokio::test]
async fn session_post_is_idempotent_in_v1_and_conflicts_on_another_name() {
    let (_, app) = setup().await;
    let url = format!("{G}/clientsessions");
    let same = call(&app, "POST", &url, Some(r#"{"Id":"a","Name":"adapter a"}"#)).await;
    assert_eq!(same.status, StatusCode::OK);
    let other = call(&app, "POST", &url, Some(r#"{"Id":"a","Name":"renamed"}"#)).await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{other:?}");
    assert!(other.body["Reason"].as_str().is_some_and(|r| r.contains("different configuration")));
    let preview =
        call(&app, "POST", &format!("{PREVIEW_G}/clientsessions"), Some(r#"{"Id":"c"}"#)).await;
    assert_eq!(preview.status, StatusCode::OK);
    let missing = call(
        &app,
        "POST",
        "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups/nope/clientsessions",
        Some(r#"{"Id":"a"}"#),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let no_id = call(&app, "POST", &url, Some(r#"{"Name":"x"}"#)).await;
    assert_eq!(no_id.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sessions_list_get_put_and_delete() {
    let (_, app) = setup().await;
    let list = call(&app, "GET", &format!("{G}/clientSessions?count=1"), None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.headers["total-count"], "2");
    assert_eq!(
        list.body,
        json!([{"Id": "a", "Name": "adapter a", "Role": 0, "Heartbeat": null, "HeartbeatPosted": false, "RoleOverride": 0, "RoleOverrideExpirationTime": null}])
    );
    let one = call(&app, "GET", &format!("{G}/clientsessions/b"), None).await;
    assert_eq!(one.body["Name"], json!("adapter b"));
    assert_eq!(
        call(&app, "GET", &format!("{G}/clientsessions/zz"), None).await.status,
        StatusCode::NOT_FOUND
    );

    let put =
        call(&app, "PUT", &format!("{PREVIEW_G}/clientsessions/b"), Some(r#"{"Name":"renamed"}"#))
            .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(
        call(&app, "GET", &format!("{G}/clientsessions/b"), None).await.body["Name"],
        json!("renamed")
    );
    let put_v1 = call(&app, "PUT", &format!("{G}/clientsessions/b"), Some(r#"{"Name":"x"}"#)).await;
    assert_eq!(put_v1.status, StatusCode::METHOD_NOT_ALLOWED);

    assert_eq!(
        call(&app, "DELETE", &format!("{G}/clientsessions/b"), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&app, "DELETE", &format!("{PREVIEW_G}/clientsessions/a"), None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "DELETE", &format!("{G}/clientsessions/a"), None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn first_heartbeat_makes_the_first_member_primary_with_epoch_and_validity() {
    let (_, app) = setup().await;
    let first = heartbeat(&app, "a", hb(100.0, "2026-11-22T09:59:59Z")).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(first.body["Role"], json!(1));
    assert_eq!(first.body["Epoch"], json!(1));
    // 30 s less the default clock drift allowance (0.1 %) and 1 ms.
    assert_eq!(first.body["ValidFor"], json!("00:00:29.9690000"));
    let second = heartbeat(&app, "b", json!({"FailoverScore": 100})).await;
    assert_eq!(second.body["Role"], json!(0));
    assert_eq!(second.body["ValidFor"], Value::Null);
    assert_eq!(second.body["Epoch"], json!(1));
}

#[tokio::test]
async fn silent_primary_hands_over_through_pending_primary_with_its_last_data_time() {
    let (fake, app) = setup().await;
    heartbeat(&app, "a", hb(100.0, "2026-11-22T09:00:00Z")).await;
    heartbeat(&app, "b", hb(100.0, "2026-11-22T08:00:00Z")).await;
    fake.advance(15_000);
    heartbeat(&app, "a", hb(100.0, "2026-11-22T09:00:15Z")).await;
    heartbeat(&app, "b", hb(100.0, "2026-11-22T08:00:00Z")).await;
    // a goes silent. 30 s after its last heartbeat it is stale and its grant has lapsed.
    fake.advance(15_000);
    heartbeat(&app, "b", hb(100.0, "2026-11-22T08:00:00Z")).await;
    fake.advance(15_000);
    fake.tick();
    let pending = heartbeat(&app, "b", hb(100.0, "2026-11-22T08:00:00Z")).await;
    assert_eq!(pending.body["Role"], json!(2), "{pending:?}");
    assert_eq!(pending.body["LastDataProcessedTime"], json!("2026-11-22T09:00:15.000Z"));
    assert_eq!(pending.body["Epoch"], json!(2));
    let status = call(&app, "GET", &format!("{G}/status"), None).await;
    assert_eq!(
        status.body,
        json!({"Primary": null, "PendingPrimary": "b", "LastDataProcessedTime": "2026-11-22T09:00:15.000Z", "Epoch": 2})
    );
    fake.advance(15_000);
    let primary = heartbeat(&app, "b", hb(100.0, "2026-11-22T09:00:30Z")).await;
    assert_eq!(primary.body["Role"], json!(1));
    // The old Primary comes back: Secondary.
    let back = heartbeat(&app, "a", hb(100.0, "2026-11-22T09:01:00Z")).await;
    assert_eq!(back.body["Role"], json!(0));
}

#[tokio::test]
async fn heartbeats_faster_than_the_group_allows_get_429_with_retry_after() {
    let (fake, app) = setup().await;
    heartbeat(&app, "a", hb(100.0, "2026-11-22T09:00:00Z")).await;
    fake.advance(100);
    let fast = heartbeat(&app, "a", hb(100.0, "2026-11-22T09:00:00Z")).await;
    assert_eq!(fast.status, StatusCode::TOO_MANY_REQUESTS, "{fast:?}");
    assert_eq!(fast.headers["retry-after"], "2");
    assert!(fast.body["Reason"].as_str().is_some_and(|r| r.contains("faster")));
    fake.advance(1_400);
    assert_eq!(
        heartbeat(&app, "a", hb(100.0, "2026-11-22T09:00:00Z")).await.status,
        StatusCode::OK
    );
}

#[test_case(json!({"FailoverStatus": 150}), "from 0 to 100" ; "score above 100")]
#[test_case(json!({"FailoverStatus": -1}), "from 0 to 100" ; "negative score")]
#[test_case(json!({"FailoverStatus": "high"}), "failoverstatus" ; "score of the wrong type")]
#[test_case(json!({"HeartbeatTime": "yesterday"}), "HeartbeatTime" ; "bad heartbeat time")]
#[test_case(json!({"LastDataProcessedTime": 5}), "lastdataprocessedtime" ; "time of the wrong type")]
#[tokio::test]
async fn malformed_heartbeats_are_refused_with_400(body: Value, needle: &str) {
    let (_, app) = setup().await;
    let reply = heartbeat(&app, "a", body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    assert!(reply.body["Reason"].as_str().is_some_and(|r| r.contains(needle)), "{reply:?}");
}

#[tokio::test]
async fn heartbeat_of_an_unknown_session_or_group_is_404() {
    let (_, app) = setup().await;
    assert_eq!(heartbeat(&app, "nobody", json!({})).await.status, StatusCode::NOT_FOUND);
    let other =
        "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups/nope/clientsessions/a/heartbeat";
    assert_eq!(call(&app, "POST", other, Some("{}")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn role_override_pins_the_baton_and_reports_its_expiry() {
    let (fake, app) = setup().await;
    heartbeat(&app, "a", hb(100.0, "2026-11-22T09:00:00Z")).await;
    heartbeat(&app, "b", hb(100.0, "2026-11-22T09:00:00Z")).await;
    let url = format!("{G}/clientsessions/b/roleoverride");
    let set = call(&app, "POST", &url, Some(r#"{"Value":1,"ExpirationPeriod":"01:00:00"}"#)).await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    assert_eq!(set.body["Value"], json!(1));
    assert!(set.body["RoleOverrideExpirationTime"].is_string());
    // The detector starts the hand-over (b is fresh); a lets go at its next heartbeat and proves
    // it (`ReleasedEpoch`) at the one after; then b gets the baton.
    fake.tick();
    fake.advance(15_000);
    assert_eq!(
        heartbeat(&app, "a", hb(100.0, "2026-11-22T09:00:15Z")).await.body["Role"],
        json!(0)
    );
    fake.advance(2_000);
    let mut proof = hb(100.0, "2026-11-22T09:00:17Z");
    proof["ReleasedEpoch"] = json!(1);
    assert_eq!(heartbeat(&app, "a", proof).await.body["Role"], json!(0));
    fake.tick();
    assert_eq!(
        heartbeat(&app, "b", hb(100.0, "2026-11-22T09:00:15Z")).await.body["Role"],
        json!(2)
    );
    let session = call(&app, "GET", &format!("{G}/clientsessions/b"), None).await;
    assert_eq!(session.body["RoleOverride"], json!(1));
    let off = call(&app, "POST", &url, Some(r#"{"Value":"Off"}"#)).await;
    assert_eq!(off.body, json!({"Value": 0, "RoleOverrideExpirationTime": null}));
}

#[test_case(r#"{"Value":5}"# ; "unknown value")]
#[test_case(r#"{}"# ; "missing value")]
#[test_case(r#"{"Value":1,"ExpirationPeriod":"soon"}"# ; "bad period")]
#[tokio::test]
async fn malformed_role_overrides_are_refused(body: &str) {
    let (_, app) = setup().await;
    let reply = call(&app, "POST", &format!("{G}/clientsessions/a/roleoverride"), Some(body)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
}

#[tokio::test]
async fn status_and_role_override_exist_only_in_v1() {
    let (_, app) = setup().await;
    assert_eq!(
        call(&app, "GET", &format!("{PREVIEW_G}/status"), None).await.status,
        StatusCode::NOT_FOUND
    );
    let url = format!("{PREVIEW_G}/clientsessions/a/roleoverride");
    assert_eq!(
        call(&app, "POST", &url, Some(r#"{"Value":1}"#)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn v1_refuses_to_delete_a_group_with_active_sessions_and_the_preview_deletes_it() {
    let (fake, app) = setup().await;
    heartbeat(&app, "a", hb(100.0, "2026-11-22T09:00:00Z")).await;
    let refused = call(&app, "DELETE", G, None).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert!(refused.body["Reason"].as_str().is_some_and(|r| r.contains("active sessions")));
    fake.advance(30_000);
    assert_eq!(call(&app, "DELETE", G, None).await.status, StatusCode::NO_CONTENT);

    let (_, app) = setup().await;
    heartbeat(&app, "a", hb(100.0, "2026-11-22T09:00:00Z")).await;
    assert_eq!(call(&app, "DELETE", PREVIEW_G, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn checkpointed_heartbeats_show_in_the_session() {
    let (fake, app) = setup().await;
    heartbeat(&app, "a", hb(87.5, "2026-11-22T09:00:00Z")).await;
    fake.tick();
    let session = call(&app, "GET", &format!("{G}/clientsessions/a"), None).await;
    assert_eq!(session.body["HeartbeatPosted"], json!(true));
    assert_eq!(session.body["Role"], json!(1));
    assert_eq!(
        session.body["Heartbeat"],
        json!({"FailoverStatus": 87.5, "HeartbeatTime": "2026-11-22T10:00:00.000Z", "LastDataProcessedTime": "2026-11-22T09:00:00.000Z"})
    );
}

#[tokio::test]
async fn sessions_beyond_the_member_limit_are_refused_and_change_nothing() {
    let (fake, app) = setup().await;
    fake.limits.lock().expect("lock").members_per_group = 3;
    let url = format!("{G}/clientsessions");
    assert_eq!(call(&app, "POST", &url, Some(r#"{"Id":"c"}"#)).await.status, StatusCode::CREATED);
    let r = call(&app, "POST", &url, Some(r#"{"Id":"d"}"#)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{r:?}");
    assert!(
        r.body["Reason"].as_str().is_some_and(|m| m.contains("max_members_per_group")),
        "{r:?}"
    );
    let preview = format!("{PREVIEW_G}/clientsessions/d");
    let r = call(&app, "PUT", &preview, Some(r#"{"Id":"d","Name":"x"}"#)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{r:?}");
    // Renaming a member is not growth.
    let r = call(
        &app,
        "PUT",
        &format!("{PREVIEW_G}/clientsessions/c"),
        Some(r#"{"Id":"c","Name":"y"}"#),
    )
    .await;
    assert!(r.status.is_success(), "{r:?}");
    let listed = call(&app, "GET", &url, None).await;
    let ids: Vec<_> = listed
        .body
        .as_array()
        .map_or_else(|| listed.body["Items"].as_array().cloned().unwrap_or_default(), Clone::clone);
    assert_eq!(ids.len(), 3, "{listed:?}");
}
