//! The VMware HCX HA-groups dialect, in process against an in-memory coordinator that runs the
//! real core: login, every endpoint, every documented status code and body, malformed input,
//! and a forced failover that hands over, refuses without a healthy standby, and never fails
//! back.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{FakeCoordinator, Reply, call, send};

const GROUPS: &str = "/hybridity/api/interconnect/appliances/ha/groups";

struct Hcx {
    fake: Arc<FakeCoordinator>,
    app: baton_api::App,
    token: String,
    /// The members' proofs of having let go, as Baton's client sends them.
    released: support::Released,
}

impl Hcx {
    fn new() -> Self {
        let fake = Arc::new(FakeCoordinator::leading());
        let app = support::app_for(fake.clone());
        let token = fake.member("netops", "t1");
        Self { fake, app, token, released: Default::default() }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| b.to_string());
        let headers = [("x-hm-authorization", self.token.as_str()), ("accept", "application/json")];
        send(&self.app, method, path, &headers, body.as_deref(), Some("application/json")).await
    }

    /// An appliance heartbeats through the AVEVA session endpoint of the HCX scope.
    async fn heartbeat(&self, group: &str, appliance: &str, score: u8) -> Value {
        let path = format!(
            "/api/v1/tenants/t1/namespaces/hcx/clientfailover/groups/{group}/clientsessions/{appliance}/heartbeat"
        );
        let body = self.released.body(&path, json!({"FailoverScore": score}));
        let bearer = format!("Bearer {}", self.token);
        let r = send(
            &self.app,
            "POST",
            &path,
            &[("authorization", &bearer)],
            Some(&body),
            Some("application/json"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        self.released.took(&path, &r);
        r.body
    }

    async fn create(&self, group: &str) -> Reply {
        let body = json!({
            "appliances": ["ne-a", "ne-b"],
            "policyInfo": {"policy": "default"},
            "groupId": group,
            "serviceMeshId": "mesh-1",
        });
        self.call("POST", GROUPS, Some(body)).await
    }

    async fn roles(&self, group: &str) -> Vec<(String, String)> {
        let r = self.call("GET", &format!("{GROUPS}/{group}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["groupMembers"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["applianceId"].as_str().unwrap_or("").into(),
                    m["role"].as_str().unwrap_or("").into(),
                )
            })
            .collect()
    }

    async fn task_status(&self, task: &str) -> String {
        let r = self.call("GET", &format!("/hybridity/api/interconnect/tasks/{task}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["status"].as_str().expect("a status").to_string()
    }
}

fn assert_envelope(r: &Reply, status: StatusCode) {
    assert_eq!(r.status, status, "{r:?}");
    let errors = r.body["errors"].as_array().expect("an errors array");
    assert!(
        errors[0]["code"].is_string()
            && errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{r:?}"
    );
}

#[tokio::test]
async fn login_returns_a_session_token_in_x_hm_authorization_that_a_rotation_ends() {
    let h = Hcx::new();
    let body = json!({"username": "netops", "password": h.token}).to_string();
    let r =
        send(&h.app, "POST", "/hybridity/api/sessions", &[], Some(&body), Some("application/json"))
            .await;
    assert_eq!(r.status, StatusCode::OK);
    // A session token, not the identity's own; it serves until the identity's is rotated.
    let session = r.headers["x-hm-authorization"].to_str().expect("text").to_string();
    assert!(session.starts_with(baton_auth::SESSION_PREFIX) && session != h.token, "{session}");
    let as_session = [("x-hm-authorization", session.as_str())];
    let r = send(&h.app, "GET", GROUPS, &as_session, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // Only HCX and Cinder take sessions: never the native API, where an identity could rotate
    // its token and so turn an hour-long session into a lasting token.
    let bearer = format!("Bearer {session}");
    let rotate = "/identities/netops/rotate";
    let r = send(&h.app, "POST", rotate, &[("authorization", &bearer)], None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    h.fake.rotate("netops");
    let r = send(&h.app, "GET", GROUPS, &as_session, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");

    for bad in [
        json!({"username": "netops", "password": "wrong"}),
        json!({"username": "someone-else", "password": h.token}),
        json!({"username": "root", "password": h.token}),
    ] {
        let r = send(
            &h.app,
            "POST",
            "/hybridity/api/sessions",
            &[],
            Some(&bad.to_string()),
            Some("application/json"),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.text.is_empty(), "401 has no body: {r:?}");
    }
}

#[tokio::test]
async fn every_endpoint_needs_the_token_and_401_and_403_have_no_body() {
    let h = Hcx::new();
    h.create("g1").await;
    for (method, path) in [
        ("GET", GROUPS.to_string()),
        ("POST", GROUPS.to_string()),
        ("GET", format!("{GROUPS}/g1")),
        ("DELETE", format!("{GROUPS}/g1")),
        ("POST", format!("{GROUPS}/g1/forceFailover")),
        ("GET", "/hybridity/api/interconnect/tasks/00".into()),
    ] {
        for headers in [vec![], vec![("x-hm-authorization", "baton_netops.nope")]] {
            let r = send(&h.app, method, &path, &headers, None, None).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert!(r.text.is_empty());
        }
    }
    // The plain Authorization header of the API reference's sample works too.
    let r = send(&h.app, "GET", GROUPS, &[("authorization", h.token.as_str())], None, None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn another_tenants_groups_do_not_exist_for_a_caller() {
    let h = Hcx::new();
    h.create("g1").await;
    let other = h.fake.member("elsewhere", "t2");
    let r =
        send(&h.app, "GET", &format!("{GROUPS}/g1"), &[("x-hm-authorization", &other)], None, None)
            .await;
    assert_envelope(&r, StatusCode::NOT_FOUND);
    let r = send(&h.app, "GET", GROUPS, &[("x-hm-authorization", &other)], None, None).await;
    assert_eq!(r.body, json!({"items": []}));
}

#[tokio::test]
async fn create_answers_202_with_a_task_and_a_duplicate_409() {
    let h = Hcx::new();
    let r = h.create("g1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    assert_eq!(r.body["data"]["groupId"], "g1");
    assert_eq!(r.body["warnings"], json!([]));
    assert_eq!(r.body["errors"], json!([]));
    let task = r.body["data"]["interconnectTaskId"].as_str().expect("a task id");
    assert_eq!(h.task_status(task).await, "SUCCESS");
    assert_envelope(&h.create("g1").await, StatusCode::CONFLICT);

    // Without a groupId, one is made up.
    let r = h.call("POST", GROUPS, Some(json!({"appliances": ["x"]}))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.body["data"]["groupId"].as_str().map(str::len), Some(36));
}

#[tokio::test]
async fn malformed_creates_are_refused_with_400_and_change_nothing() {
    let h = Hcx::new();
    for body in [
        json!({}),
        json!({"appliances": []}),
        json!({"appliances": ["a", "a"]}),
        json!({"appliances": "a"}),
        json!({"appliances": ["a"], "unknown": 1}),
        json!({"appliances": ["a\u{1}"]}),
        json!({"appliances": ["a"], "groupId": ""}),
        json!({"appliances": (0..17).map(|i| format!("a{i}")).collect::<Vec<_>>()}),
        json!({"appliances": ["a"], "failoverTimeoutSeconds": 0}),
    ] {
        assert_envelope(&h.call("POST", GROUPS, Some(body.clone())).await, StatusCode::BAD_REQUEST);
    }
    let r = send(
        &h.app,
        "POST",
        GROUPS,
        &[("x-hm-authorization", &h.token)],
        Some("{not json"),
        Some("application/json"),
    )
    .await;
    assert_envelope(&r, StatusCode::BAD_REQUEST);
    assert_eq!(h.call("GET", GROUPS, None).await.body, json!({"items": []}));
}

#[tokio::test]
async fn list_and_show_describe_groups_and_filter_by_service_mesh() {
    let h = Hcx::new();
    h.create("g1").await;
    h.call(
        "POST",
        GROUPS,
        Some(json!({"appliances": ["x"], "groupId": "g2", "serviceMeshId": "mesh-2"})),
    )
    .await;
    let r = h.call("GET", GROUPS, None).await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(2));
    let r = h.call("GET", &format!("{GROUPS}?serviceMeshId=mesh-2"), None).await;
    let items = r.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["groupId"], "g2");
    let r = h.call("GET", &format!("{GROUPS}/g1"), None).await;
    assert_eq!(r.body["policyInfo"], json!({"policy": "default"}));
    assert_eq!(r.body["status"]["groupState"], "NOT_FORMED");
    assert_eq!(
        h.roles("g1").await,
        vec![("ne-a".into(), "STANDBY".into()), ("ne-b".into(), "STANDBY".into())]
    );
    assert_envelope(&h.call("GET", &format!("{GROUPS}/nope"), None).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn force_failover_hands_over_only_to_a_healthy_standby_and_never_fails_back() {
    let h = Hcx::new();
    h.create("g1").await;
    // No active appliance yet.
    assert_envelope(
        &h.call("POST", &format!("{GROUPS}/g1/forceFailover"), None).await,
        StatusCode::CONFLICT,
    );
    assert_eq!(h.heartbeat("g1", "ne-a", 100).await["Role"], 1);
    // The standby has never heartbeated: no healthy standby, and nothing changes.
    assert_envelope(
        &h.call("POST", &format!("{GROUPS}/g1/forceFailover"), None).await,
        StatusCode::CONFLICT,
    );
    assert_eq!(h.roles("g1").await[0], ("ne-a".into(), "ACTIVE".into()));

    h.fake.advance(2_000);
    assert_eq!(h.heartbeat("g1", "ne-b", 100).await["Role"], 0);
    let r = h.call("POST", &format!("{GROUPS}/g1/forceFailover"), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    let task = r.body["data"]["interconnectTaskId"].as_str().expect("task").to_string();
    assert_eq!(h.task_status(&task).await, "RUNNING");
    // Another task on the group: 409; deleting without force: 409.
    assert_envelope(
        &h.call("POST", &format!("{GROUPS}/g1/forceFailover"), None).await,
        StatusCode::CONFLICT,
    );
    assert_envelope(
        &h.call("DELETE", &format!("{GROUPS}/g1?force=false"), None).await,
        StatusCode::CONFLICT,
    );

    // The active appliance heartbeats and is told to stand by; the standby takes over.
    h.fake.advance(2_000);
    assert_eq!(h.heartbeat("g1", "ne-a", 100).await["Role"], 0);
    // ... and proves at its next heartbeat that it stood by, as Baton's client does.
    h.fake.advance(2_000);
    assert_eq!(h.heartbeat("g1", "ne-a", 100).await["Role"], 0);
    h.fake.advance(2_000);
    assert_eq!(h.heartbeat("g1", "ne-b", 100).await["Role"], 2, "PendingPrimary");
    assert_eq!(h.task_status(&task).await, "SUCCESS");
    assert_eq!(
        h.roles("g1").await,
        vec![("ne-a".into(), "STANDBY".into()), ("ne-b".into(), "ACTIVE".into())]
    );

    // No failback and no preemption: the old active is healthier but stays standby.
    for _ in 0..5 {
        h.fake.advance(2_000);
        h.heartbeat("g1", "ne-a", 100).await;
        h.heartbeat("g1", "ne-b", 10).await;
        h.fake.tick();
    }
    assert_eq!(h.roles("g1").await[1], ("ne-b".into(), "ACTIVE".into()));
}

#[tokio::test]
async fn delete_answers_202_and_the_group_is_gone() {
    let h = Hcx::new();
    h.create("g1").await;
    let r = h.call("DELETE", &format!("{GROUPS}/g1?force=false"), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    let task = r.body["data"]["interconnectTaskId"].as_str().expect("task").to_string();
    assert_eq!(h.task_status(&task).await, "SUCCESS");
    assert_envelope(&h.call("GET", &format!("{GROUPS}/g1"), None).await, StatusCode::NOT_FOUND);
    assert_envelope(&h.call("DELETE", &format!("{GROUPS}/g1"), None).await, StatusCode::NOT_FOUND);
    assert_envelope(
        &h.call("POST", &format!("{GROUPS}/g1/forceFailover"), None).await,
        StatusCode::NOT_FOUND,
    );
    assert_envelope(
        &h.call("DELETE", &format!("{GROUPS}/g1?force=maybe"), None).await,
        StatusCode::BAD_REQUEST,
    );
}

#[tokio::test]
async fn unknown_or_foreign_task_ids_are_404() {
    let h = Hcx::new();
    let r = h.create("g1").await;
    let task = r.body["data"]["interconnectTaskId"].as_str().expect("task").to_string();
    for bad in ["zz", "0", "deadbeef", &"ab".repeat(2_000)] {
        let r = h.call("GET", &format!("/hybridity/api/interconnect/tasks/{bad}"), None).await;
        assert_envelope(&r, StatusCode::NOT_FOUND);
    }
    let other = h.fake.member("elsewhere", "t2");
    let path = format!("/hybridity/api/interconnect/tasks/{task}");
    let r = send(&h.app, "GET", &path, &[("x-hm-authorization", &other)], None, None).await;
    assert_envelope(&r, StatusCode::NOT_FOUND);
    // The administrator's HCX groups are its own (tenant "_admin").
    let r = call(&h.app, "GET", GROUPS, None).await;
    assert_eq!(r.body, json!({"items": []}));
}

#[tokio::test]
async fn an_aveva_put_on_an_hcx_group_keeps_its_hcx_policy_and_fields() {
    let h = Hcx::new();
    h.create("g1").await;
    let bearer = format!("Bearer {}", h.token);
    let path = "/api/v1-preview/tenants/t1/namespaces/hcx/clientfailover/groups/g1";
    let body = json!({"Id": "g1", "Name": "renamed", "FailoverTimeout": "00:00:20"}).to_string();
    let r = send(
        &h.app,
        "PUT",
        path,
        &[("authorization", &bearer)],
        Some(&body),
        Some("application/json"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = call(&h.app, "GET", "/groups/t1/hcx/g1", None).await;
    assert_eq!(r.body["config"]["name"], "renamed");
    assert_eq!(r.body["config"]["policy"]["preemption_margin"], Value::Null, "still no preemption");
    assert_eq!(r.body["config"]["labels"]["serviceMeshId"], "mesh-1");
}

#[tokio::test]
async fn a_group_with_more_appliances_than_the_member_limit_is_refused_and_not_created() {
    let h = Hcx::new();
    h.fake.limits.lock().expect("lock").members_per_group = 2;
    let body = json!({"appliances": ["ne-a", "ne-b", "ne-c"], "groupId": "g-big"});
    let r = h.call("POST", GROUPS, Some(body)).await;
    assert_envelope(&r, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_members_per_group")),
        "{r:?}"
    );
    assert_eq!(h.call("GET", GROUPS, None).await.body, json!({"items": []}));
    assert_eq!(h.create("g-ok").await.status, StatusCode::ACCEPTED);
}
