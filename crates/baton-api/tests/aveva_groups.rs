//! The AVEVA groups endpoints, in process with `oneshot`, against an in-memory coordinator:
//! every endpoint and status code of both versions, and malformed or hostile input.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;
use support::{FakeCoordinator, OTHER, call, call_with};
use test_case::test_case;

const V1: &str = "/api/v1/tenants/t1/namespaces/ns/clientfailover/groups";
const PREVIEW: &str = "/api/v1-preview/tenants/t1/namespaces/ns/clientfailover/groups";

fn app() -> (Arc<FakeCoordinator>, baton_api::App) {
    let fake = Arc::new(FakeCoordinator::leading());
    (fake.clone(), support::app_for(fake))
}

fn body(id: &str, timeout: &str) -> String {
    json!({ "Id": id, "Name": "n", "Description": "d", "FailoverTimeout": timeout }).to_string()
}

/// Asserts an AVEVA error body: status, all four fields, and a reason containing `needle`.
fn assert_aveva_error(reply: &support::Reply, status: StatusCode, needle: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    for field in ["OperationId", "Error", "Reason", "Resolution"] {
        assert!(
            reply.body[field].as_str().is_some_and(|s| !s.is_empty()),
            "missing {field}: {reply:?}"
        );
    }
    let reason = reply.body["Reason"].as_str().unwrap_or_default();
    assert!(reason.contains(needle), "reason {reason:?} should mention {needle:?}");
}

#[tokio::test]
async fn v1_post_creates_201_then_same_config_200_then_different_409() {
    let (_, app) = app();
    let created = call(&app, "POST", V1, Some(&body("g1", "00:00:30"))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        created.body,
        json!({"Id": "g1", "Name": "n", "Description": "d", "FailoverTimeout": "00:00:30"})
    );
    assert_eq!(created.headers["x-baton-served-by"], "1");
    // Same configuration, written differently (ISO duration): identical, so 200.
    let same = call(&app, "POST", V1, Some(&body("g1", "PT30S"))).await;
    assert_eq!(same.status, StatusCode::OK);
    let different = call(&app, "POST", V1, Some(&body("g1", "00:01:00"))).await;
    assert_aveva_error(&different, StatusCode::CONFLICT, "different configuration");
    // The conflicting request changed nothing.
    let got = call(&app, "GET", &format!("{V1}/g1"), None).await;
    assert_eq!(got.body["FailoverTimeout"], json!("00:00:30"));
}

#[tokio::test]
async fn preview_post_answers_200_for_new_and_same_and_409_for_different() {
    let (_, app) = app();
    assert_eq!(
        call(&app, "POST", PREVIEW, Some(&body("g1", "00:00:30"))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "POST", PREVIEW, Some(&body("g1", "00:00:30"))).await.status,
        StatusCode::OK
    );
    let conflict = call(&app, "POST", PREVIEW, Some(&body("g1", "00:00:31"))).await;
    assert_aveva_error(&conflict, StatusCode::CONFLICT, "already exists");
}

#[tokio::test]
async fn get_answers_the_group_or_404() {
    let (_, app) = app();
    call(&app, "POST", V1, Some(&body("g1", "30000"))).await;
    let got = call(&app, "GET", &format!("{V1}/g1"), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["FailoverTimeout"], json!("00:00:30"));
    let missing = call(&app, "GET", &format!("{V1}/nope"), None).await;
    assert_aveva_error(&missing, StatusCode::NOT_FOUND, "nope");
    // Ids are case-sensitive.
    assert_eq!(call(&app, "GET", &format!("{V1}/G1"), None).await.status, StatusCode::NOT_FOUND);
    // Another tenant or namespace does not see it.
    let other = "/api/v1/tenants/t2/namespaces/ns/clientfailover/groups/g1";
    assert_eq!(call(&app, "GET", other, None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn v1_list_pages_with_skip_and_count_and_reports_total_count() {
    let (_, app) = app();
    for i in 0..5 {
        call(&app, "POST", V1, Some(&body(&format!("g{i}"), "00:00:30"))).await;
    }
    let all = call(&app, "GET", V1, None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.headers["total-count"], "5");
    assert_eq!(all.body.as_array().expect("array").len(), 5);
    let page = call(&app, "GET", &format!("{V1}?skip=1&count=2"), None).await;
    let ids: Vec<_> =
        page.body.as_array().expect("array").iter().map(|g| g["Id"].clone()).collect();
    assert_eq!(ids, vec![json!("g1"), json!("g2")]);
    assert_eq!(page.headers["total-count"], "5");
    let bad = call(&app, "GET", &format!("{V1}?skip=-1"), None).await;
    assert_aveva_error(&bad, StatusCode::BAD_REQUEST, "skip");
}

#[tokio::test]
async fn preview_list_is_a_plain_array() {
    let (_, app) = app();
    call(&app, "POST", PREVIEW, Some(&body("g1", "00:00:30"))).await;
    let all = call(&app, "GET", PREVIEW, None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body.as_array().expect("array").len(), 1);
    assert!(!all.headers.contains_key("total-count"));
}

#[tokio::test]
async fn preview_put_creates_and_updates_and_v1_has_no_put() {
    let (_, app) = app();
    let url = format!("{PREVIEW}/g1");
    assert_eq!(call(&app, "PUT", &url, Some(&body("g1", "00:00:30"))).await.status, StatusCode::OK);
    let updated =
        call(&app, "PUT", &url, Some(&json!({"FailoverTimeout": "00:00:45"}).to_string())).await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(updated.body["FailoverTimeout"], json!("00:00:45"));
    assert_eq!(
        updated.body["Id"],
        json!("g1"),
        "the id comes from the path when the body has none"
    );
    let mismatch = call(&app, "PUT", &url, Some(&body("other", "00:00:30"))).await;
    assert_aveva_error(&mismatch, StatusCode::BAD_REQUEST, "differs");
    let v1 = call(&app, "PUT", &format!("{V1}/g1"), Some(&body("g1", "00:00:30"))).await;
    assert_aveva_error(&v1, StatusCode::METHOD_NOT_ALLOWED, "method");
}

#[tokio::test]
async fn delete_answers_204_in_v1_200_in_preview_and_404_when_missing() {
    let (_, app) = app();
    call(&app, "POST", V1, Some(&body("g1", "00:00:30"))).await;
    call(&app, "POST", V1, Some(&body("g2", "00:00:30"))).await;
    let v1 = call(&app, "DELETE", &format!("{V1}/g1"), None).await;
    assert_eq!(v1.status, StatusCode::NO_CONTENT);
    assert!(v1.text.is_empty());
    assert_eq!(call(&app, "DELETE", &format!("{PREVIEW}/g2"), None).await.status, StatusCode::OK);
    let again = call(&app, "DELETE", &format!("{V1}/g1"), None).await;
    assert_aveva_error(&again, StatusCode::NOT_FOUND, "g1");
}

#[test_case("{\"Id\": \"g\", " , "not valid JSON" ; "truncated json")]
#[test_case("[1, 2]", "JSON object" ; "array body")]
#[test_case("", "empty" ; "empty body")]
#[test_case("{\"Id\": 5, \"FailoverTimeout\": \"00:00:30\"}", "id" ; "id of the wrong type")]
#[test_case("{\"Id\": \"g\", \"Name\": [\"x\"], \"FailoverTimeout\": \"00:00:30\"}", "name" ; "name of the wrong type")]
#[test_case("{\"Id\": \"g\", \"FailoverTimeout\": true}", "FailoverTimeout" ; "timeout of the wrong type")]
#[test_case("{\"Id\": \"g\"}", "FailoverTimeout is required" ; "missing timeout")]
#[test_case("{\"FailoverTimeout\": \"00:00:30\"}", "Id is required" ; "missing id")]
#[test_case("{\"Id\": \"g\", \"FailoverTimeout\": \"half a minute\"}", "not a time-span" ; "bad time span")]
#[test_case("{\"Id\": \"g\", \"FailoverTimeout\": \"00:00:00.500\"}", "between 1 second and 1 day" ; "time span too short")]
#[test_case("{\"Id\": \"g\", \"FailoverTimeout\": \"2.00:00:00\"}", "between 1 second and 1 day" ; "time span too long")]
#[test_case("{\"Id\": \"g\", \"FailoverTimeout\": \"25:00:00\"}", "not a time-span" ; "hours out of range")]
#[test_case("{\"Id\": \"\", \"FailoverTimeout\": \"00:00:30\"}", "empty" ; "empty id")]
#[test_case("{\"Id\": \"a\\u0001b\", \"FailoverTimeout\": \"00:00:30\"}", "control character" ; "control character in id")]
#[test_case("{\"Id\": \"g\", \"id\": \"h\", \"FailoverTimeout\": \"00:00:30\"}", "more than once" ; "same property twice in different casing")]
#[tokio::test]
async fn malformed_group_bodies_are_refused_with_400_and_change_nothing(body: &str, needle: &str) {
    let (fake, app) = app();
    let before = baton_api::Coordinator::digest(&*fake);
    let reply = call(&app, "POST", V1, Some(body)).await;
    assert_aveva_error(&reply, StatusCode::BAD_REQUEST, needle);
    assert_eq!(baton_api::Coordinator::digest(&*fake), before, "nothing was applied");
}

#[tokio::test]
async fn id_longer_than_256_characters_is_refused_in_body_and_path() {
    let (_, app) = app();
    let long = "x".repeat(257);
    let reply = call(&app, "POST", V1, Some(&body(&long, "00:00:30"))).await;
    assert_aveva_error(&reply, StatusCode::BAD_REQUEST, "257 characters");
    let reply = call(&app, "GET", &format!("{V1}/{long}"), None).await;
    assert_aveva_error(&reply, StatusCode::BAD_REQUEST, "257 characters");
    let ok = "y".repeat(256);
    assert_eq!(
        call(&app, "POST", V1, Some(&body(&ok, "00:00:30"))).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn control_characters_in_path_ids_are_refused() {
    let (_, app) = app();
    let reply = call(&app, "GET", &format!("{V1}/a%07b"), None).await;
    assert_aveva_error(&reply, StatusCode::BAD_REQUEST, "control character");
    let reply =
        call(&app, "GET", "/api/v1/tenants/t%0A1/namespaces/ns/clientfailover/groups", None).await;
    assert_aveva_error(&reply, StatusCode::BAD_REQUEST, "tenant id");
}

#[tokio::test]
async fn oversized_body_is_refused_with_413() {
    let (_, app) = app();
    let huge =
        json!({"Id": "g", "FailoverTimeout": "00:00:30", "Description": "d".repeat(100_000)})
            .to_string();
    let reply = call(&app, "POST", V1, Some(&huge)).await;
    assert_aveva_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "limit");
}

#[tokio::test]
async fn description_longer_than_the_limit_is_refused() {
    let (_, app) = app();
    let long = json!({"Id": "g", "FailoverTimeout": "00:00:30", "Description": "d".repeat(5_000)})
        .to_string();
    let reply = call(&app, "POST", V1, Some(&long)).await;
    assert_aveva_error(&reply, StatusCode::BAD_REQUEST, "description");
}

#[tokio::test]
async fn non_json_content_type_is_refused_with_415() {
    let (_, app) = app();
    let reply = call_with(&app, "POST", V1, Some(&body("g", "00:00:30")), Some("text/plain")).await;
    assert_aveva_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "text/plain");
    // No content type at all is accepted, as curl users often send none.
    let reply = call_with(&app, "POST", V1, Some(&body("g", "00:00:30")), None).await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[test_case(r#"{"id": "g", "name": "n", "failovertimeout": "00:00:30"}"# ; "lowercase")]
#[test_case(r#"{"ID": "g", "NAME": "n", "FAILOVERTIMEOUT": "00:00:30"}"# ; "uppercase")]
#[test_case(r#"{"iD": "g", "nAmE": "n", "failoverTimeout": "00:00:30"}"# ; "mixed case")]
#[tokio::test]
async fn property_names_match_in_any_casing(body: &str) {
    let (_, app) = app();
    let reply = call(&app, "POST", V1, Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_eq!(reply.body["Name"], json!("n"));
}

#[tokio::test]
async fn unknown_properties_are_ignored_like_asp_net_does() {
    let (_, app) = app();
    let reply = call(
        &app,
        "POST",
        V1,
        Some(r#"{"Id":"g","FailoverTimeout":"00:00:30","AdditionalData":{"x":1}}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[test_case("/API/V1/Tenants/t1/Namespaces/ns/ClientFailover/Groups" ; "pascal case words")]
#[test_case("/api/v1/TENANTS/t1/NAMESPACES/ns/CLIENTFAILOVER/GROUPS" ; "upper case words")]
#[tokio::test]
async fn literal_path_words_are_case_insensitive_but_ids_are_not(path: &str) {
    let (_, app) = app();
    call(&app, "POST", V1, Some(&body("g1", "00:00:30"))).await;
    let list = call(&app, "GET", path, None).await;
    assert_eq!(list.status, StatusCode::OK, "{list:?}");
    assert_eq!(list.body.as_array().expect("array").len(), 1);
    // The tenant id keeps its case: T1 is another tenant.
    let other = path.replace("t1", "T1");
    assert_eq!(call(&app, "GET", &other, None).await.body, json!([]));
}

#[tokio::test]
async fn unknown_version_and_paths_answer_404_in_the_aveva_format() {
    let (_, app) = app();
    let reply =
        call(&app, "GET", "/api/v2/tenants/t1/namespaces/ns/clientfailover/groups", None).await;
    assert_aveva_error(&reply, StatusCode::NOT_FOUND, "v2");
    let reply =
        call(&app, "GET", "/api/v1/tenants/t1/namespaces/ns/clientfailover/nothing", None).await;
    assert_aveva_error(&reply, StatusCode::NOT_FOUND, "No AVEVA");
    let reply = call(&app, "PATCH", V1, Some("{}")).await;
    assert_aveva_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method");
}

#[tokio::test]
async fn endpoint_info_reports_the_version() {
    let (_, app) = app();
    let reply = call(&app, "GET", "/api/v1/tenants/t1/namespaces/ns/clientfailover", None).await;
    assert_eq!(reply.body, json!({"Version": "v1"}));
}

#[tokio::test]
async fn without_a_leader_requests_answer_503_in_the_aveva_format() {
    let (fake, app) = app();
    *fake.leader.lock().expect("lock") = None;
    let reply = call(&app, "POST", V1, Some(&body("g", "00:00:30"))).await;
    assert_aveva_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "no leader");
    let reply = call(&app, "GET", V1, None).await;
    assert_aveva_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "no leader");
}

#[tokio::test]
async fn served_by_names_the_node_that_executed_the_request() {
    let (fake, app) = app();
    *fake.leader.lock().expect("lock") = Some(OTHER);
    let reply = call(&app, "POST", V1, Some(&body("g", "00:00:30"))).await;
    assert_eq!(reply.headers["x-baton-served-by"], "2");
}

#[tokio::test]
async fn a_tenant_at_its_group_and_namespace_limits_is_refused_while_another_tenant_is_served() {
    let (fake, app) = app();
    {
        let mut limits = fake.limits.lock().expect("lock");
        limits.groups_per_tenant = 3;
        limits.namespaces_per_tenant = 2;
    }
    let hostile = fake.member("hostile", "t1");
    let neighbour = fake.member("neighbour", "t2");
    let create = |token: &str, tenant: &str, ns: &str, id: &str| {
        let (app, token) = (app.clone(), token.to_string());
        let uri = format!("/api/v1/tenants/{tenant}/namespaces/{ns}/clientfailover/groups");
        let body = body(id, "00:00:30");
        async move {
            support::call_as(
                &app,
                Some(&token),
                "POST",
                &uri,
                Some(&body),
                Some("application/json"),
            )
            .await
        }
    };
    for (ns, id) in [("a", "g1"), ("b", "g2")] {
        assert_eq!(create(&hostile, "t1", ns, id).await.status, StatusCode::CREATED);
    }
    // A third namespace is over the namespace limit before the group limit is reached.
    let r = create(&hostile, "t1", "c", "g3").await;
    assert_aveva_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "max_namespaces_per_tenant");
    assert_eq!(create(&hostile, "t1", "a", "g3").await.status, StatusCode::CREATED);
    let r = create(&hostile, "t1", "a", "g4").await;
    assert_aveva_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "max_groups_per_tenant");
    // Re-creating an existing group is not growth.
    assert_eq!(create(&hostile, "t1", "a", "g1").await.status, StatusCode::OK);
    // Nothing of the refused requests exists.
    for uri in [
        "/api/v1/tenants/t1/namespaces/a/clientfailover/groups/g4",
        "/api/v1/tenants/t1/namespaces/c/clientfailover/groups/g3",
    ] {
        assert_eq!(call(&app, "GET", uri, None).await.status, StatusCode::NOT_FOUND);
    }
    // The limits are per tenant: the neighbour is served.
    assert_eq!(create(&neighbour, "t2", "a", "g1").await.status, StatusCode::CREATED);
    // Deleting a group makes room again.
    let uri = "/api/v1/tenants/t1/namespaces/a/clientfailover/groups/g3";
    assert_eq!(call(&app, "DELETE", uri, None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(create(&hostile, "t1", "a", "g4").await.status, StatusCode::CREATED);
}
