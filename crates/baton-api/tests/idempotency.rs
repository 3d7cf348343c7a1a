//! `Idempotency-Key` on writes: a retried write applies once and answers as the first time.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;
use support::{FakeCoordinator, ROOT_TOKEN, call, send};

const G: &str = "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups/g";

async fn setup() -> (Arc<FakeCoordinator>, baton_api::App) {
    let fake = Arc::new(FakeCoordinator::leading());
    let app = support::app_for(fake.clone());
    let groups = "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups";
    call(&app, "POST", groups, Some(r#"{"Id":"g","FailoverTimeout":"00:00:30"}"#)).await;
    for s in ["a", "b"] {
        let body = json!({ "Id": s }).to_string();
        call(&app, "POST", &format!("{G}/clientsessions"), Some(&body)).await;
        let hb = format!("{G}/clientsessions/{s}/heartbeat");
        call(&app, "POST", &hb, Some(r#"{"FailoverStatus":100}"#)).await;
    }
    (fake, app)
}

async fn keyed(app: &baton_api::App, method: &str, uri: &str, key: &str) -> support::Reply {
    let bearer = format!("Bearer {ROOT_TOKEN}");
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", key)];
    send(app, method, uri, &headers, None, None).await
}

#[tokio::test]
async fn a_retried_forced_failover_starts_one_hand_over_and_answers_the_same() {
    let (_fake, app) = setup().await;
    let first = keyed(&app, "POST", "/groups/t1/ns/g/failover", "retry-me-1").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let retried = keyed(&app, "POST", "/groups/t1/ns/g/failover", "retry-me-1").await;
    assert_eq!((retried.status, &retried.body), (StatusCode::ACCEPTED, &first.body));
    // Without the key, a second request is a second request: the hand-over already runs.
    let unkeyed = call(&app, "POST", "/groups/t1/ns/g/failover", None).await;
    assert_eq!(unkeyed.status, StatusCode::CONFLICT, "{unkeyed:?}");
    let audit = call(&app, "GET", "/audit", None).await;
    let forced = audit.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == json!("failover_forced"))
        .count();
    assert_eq!(forced, 1, "one forced failover was recorded: {audit:?}");
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let (_fake, app) = setup().await;
    let first = keyed(&app, "POST", "/groups/t1/ns/g/failover", "k").await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let other = keyed(&app, "DELETE", &format!("{G}/clientsessions/b"), "k").await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{other:?}");
    assert!(other.text.contains("idempotency key"), "{other:?}");
}

#[tokio::test]
async fn malformed_keys_get_each_apis_400() {
    let (_fake, app) = setup().await;
    let long = "k".repeat(129);
    for key in [long.as_str(), "with space", "a\tb"] {
        let native = keyed(&app, "POST", "/groups/t1/ns/g/failover", key).await;
        assert_eq!(native.status, StatusCode::BAD_REQUEST, "{key:?}: {native:?}");
        assert_eq!(native.body["error"], json!("bad_request"), "{native:?}");
        let aveva = keyed(&app, "DELETE", &format!("{G}/clientsessions/b"), key).await;
        assert_eq!(aveva.status, StatusCode::BAD_REQUEST, "{key:?}: {aveva:?}");
        assert!(aveva.body["OperationId"].is_string(), "AVEVA's error body: {aveva:?}");
    }
}
