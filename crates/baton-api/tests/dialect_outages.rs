//! With no Baton leader, every dialect answers 503 in its own error format (authentication
//! still works: identities are checked against the node's own state).

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use support::{FakeCoordinator, ROOT_TOKEN, send};

#[tokio::test]
async fn every_dialect_answers_503_in_its_own_format_without_a_leader() {
    let fake = Arc::new(FakeCoordinator::leading());
    let app = support::app_for(fake.clone());
    *fake.leader.lock().expect("lock") = None;

    let r = send(
        &app,
        "GET",
        "/hybridity/api/interconnect/appliances/ha/groups",
        &[("x-hm-authorization", ROOT_TOKEN)],
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["errors"][0]["code"], "SERVICE_UNAVAILABLE");

    let headers = [("x-auth-token", ROOT_TOKEN), ("openstack-api-version", "volume 3.38")];
    let r = send(&app, "GET", "/v3/p1/groups", &headers, None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["serviceUnavailable"]["code"], 503);
    assert_eq!(r.headers["openstack-api-version"], "volume 3.38");

    let bearer = format!("Bearer {ROOT_TOKEN}");
    let r = send(
        &app,
        "GET",
        "/api/v1/tenants/t/namespaces/n/clientfailover/groups",
        &[("authorization", &bearer)],
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body["Error"].is_string());

    let r = send(&app, "GET", "/identities", &[("authorization", &bearer)], None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["error"], "no_leader");
}
