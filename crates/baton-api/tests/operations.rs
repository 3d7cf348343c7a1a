//! Operational endpoints and leader redirects, in process against an in-memory coordinator.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;
use support::{FakeCoordinator, ME, OTHER, call};

fn app() -> (Arc<FakeCoordinator>, baton_api::App) {
    let fake = Arc::new(FakeCoordinator::leading());
    (fake.clone(), support::app_for(fake))
}

const GROUPS: &str = "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups";

#[tokio::test]
async fn odd_paths_are_answered_without_panicking() {
    let (_, app) = app();
    for path in [
        "/",
        "/api",
        "/api/",
        "/API/v1",
        "/api//tenants",
        "/%C3%A9%C3%A9/api",
        "/api/v1/tenants/%C3%A9/namespaces/n/clientfailover/groups",
    ] {
        let reply = call(&app, "GET", path, None).await;
        // "/" is Cinder's version document (300 Multiple Choices).
        assert!(!reply.status.is_server_error(), "{path}: {reply:?}");
    }
}

#[tokio::test]
async fn healthz_answers_with_the_node_id() {
    let (_, app) = app();
    let reply = call(&app, "GET", "/healthz", None).await;
    assert_eq!((reply.status, reply.body), (StatusCode::OK, json!({"status": "ok", "id": ME})));
}

#[tokio::test]
async fn readyz_needs_a_known_leader() {
    let (fake, app) = app();
    assert_eq!(call(&app, "GET", "/readyz", None).await.status, StatusCode::OK);
    *fake.leader.lock().expect("lock") = None;
    let reply = call(&app, "GET", "/readyz", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["reason"], json!("no leader is known"));
}

#[tokio::test]
async fn cluster_status_and_nodes_describe_the_cluster() {
    let (_, app) = app();
    let status = call(&app, "GET", "/cluster/status", None).await;
    assert_eq!(status.body["role"], json!("leader"));
    assert_eq!(status.body["members"].as_array().expect("members").len(), 2);
    let nodes = call(&app, "GET", "/cluster/nodes", None).await;
    assert_eq!(nodes.body[0]["leader"], json!(true));
    assert_eq!(nodes.body[1]["leader"], json!(false));
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let (_, app) = app();
    call(&app, "GET", GROUPS, None).await;
    call(&app, "GET", &format!("{GROUPS}/missing"), None).await;
    let text = call(&app, "GET", "/metrics", None).await.text;
    assert!(text.contains(r#"route="/api/{version}/tenants/{tenant}/namespaces/{namespace}/clientfailover/groups",method="GET",status="200"} 1"#), "{text}");
    assert!(text.contains(r#"status="404"} 1"#), "{text}");
    assert!(text.contains("baton_raft_is_leader 1"), "{text}");
}

#[tokio::test]
async fn invented_methods_count_as_one_metric_series_not_one_each() {
    let (_, app) = app();
    for n in 0..50 {
        call(&app, &format!("INVENTED{n}"), GROUPS, None).await;
    }
    let text = call(&app, "GET", "/metrics", None).await.text;
    assert!(!text.contains("INVENTED"), "{text}");
    let other = text.lines().filter(|l| l.contains(r#"method="OTHER""#)).collect::<Vec<_>>();
    assert_eq!(other.len(), 1, "{other:?}");
    assert!(other[0].ends_with(" 50"), "{other:?}");
}

#[tokio::test]
async fn redirect_on_a_follower_answers_307_to_the_leader_keeping_path_and_query() {
    let (fake, app) = app();
    *fake.leader.lock().expect("lock") = Some(OTHER);
    let reply = call(&app, "POST", &format!("{GROUPS}?redirect&x=1"), Some("{}")).await;
    assert_eq!(reply.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        reply.headers["location"],
        format!("http://127.0.0.1:7002{GROUPS}?redirect&x=1").as_str()
    );
}

#[tokio::test]
async fn redirect_on_the_leader_serves_the_request() {
    let (_, app) = app();
    let reply = call(&app, "GET", &format!("{GROUPS}?redirect"), None).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn redirect_without_a_leader_answers_503_json() {
    let (fake, app) = app();
    *fake.leader.lock().expect("lock") = None;
    let reply = call(&app, "GET", &format!("{GROUPS}?redirect"), None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["error"], json!("no_leader"));
}

#[tokio::test]
async fn admin_errors_use_the_native_error_body() {
    let (_, app) = app();
    let reply = call(&app, "POST", "/cluster/nodes/9/promote", None).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body, json!({"error": "conflict", "message": "node 9 is not a learner"}));
    let reply = call(
        &app,
        "POST",
        "/cluster/learners",
        Some(r#"{"id": 4, "raft_addr": "nope", "api_addr": "127.0.0.1:1"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body["message"].as_str().expect("message").contains("raft_addr"));
    let reply = call(&app, "POST", "/cluster/nodes/four/promote", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["error"], json!("bad_request"), "{reply:?}");
    assert!(reply.body["message"].as_str().expect("message").contains("four"));
    let reply = call(&app, "POST", "/cluster/learners", Some(r#"{"id": "four"}"#)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["error"], json!("bad_request"));
}

#[tokio::test]
async fn identities_beyond_the_limit_are_refused_in_the_native_error_body() {
    let (fake, app) = app();
    fake.limits.lock().expect("lock").identities = 2;
    let create = |name: &str| json!({"name": name, "role": "member", "tenant": "t1"}).to_string();
    let r = call(&app, "POST", "/identities", Some(&create("first"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = call(&app, "POST", "/identities", Some(&create("second"))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{r:?}");
    assert_eq!(r.body["error"], json!("too_large"));
    assert!(r.body["message"].as_str().is_some_and(|m| m.contains("max_identities")), "{r:?}");
    let listed = call(&app, "GET", "/identities", None).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(2), "{listed:?}");
}

#[tokio::test]
async fn a_member_lists_only_its_own_tenants_groups_and_an_admin_every_group() {
    let (fake, app) = app();
    for tenant in ["t1", "t2"] {
        for ns in ["a", "b"] {
            let uri = format!("/api/v1/tenants/{tenant}/namespaces/{ns}/clientfailover/groups");
            let body = json!({"Id": "g", "FailoverTimeout": "00:00:30"}).to_string();
            assert_eq!(call(&app, "POST", &uri, Some(&body)).await.status, StatusCode::CREATED);
        }
    }
    let token = fake.member("m1", "t2");
    let r = support::call_as(&app, Some(&token), "GET", "/groups", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let tenants: Vec<_> =
        r.body["groups"].as_array().expect("groups").iter().map(|g| g["key"].clone()).collect();
    assert_eq!(tenants.len(), 2, "{r:?}");
    assert!(r.text.contains("t2") && !r.text.contains("\"t1\""), "{r:?}");
    let all = call(&app, "GET", "/groups", None).await;
    assert_eq!(all.body["groups"].as_array().map(Vec::len), Some(4), "{all:?}");
}
