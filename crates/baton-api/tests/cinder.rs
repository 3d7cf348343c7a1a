//! The OpenStack Cinder dialect, in process against an in-memory coordinator running the real
//! core: version documents and microversion negotiation, the Keystone token endpoint, auth
//! and project isolation, group types and specs, groups, replication actions, and Cinder's
//! fault bodies for every refusal.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{FakeCoordinator, Reply, send};

const P: &str = "7ccf4863071f44aeb8f141f65780c51b";

struct Cinder {
    fake: Arc<FakeCoordinator>,
    app: baton_api::App,
    token: String,
    /// The members' proofs of having let go, as Baton's client sends them.
    released: support::Released,
}

impl Cinder {
    fn new() -> Self {
        let fake = Arc::new(FakeCoordinator::leading());
        let app = support::app_for(fake.clone());
        let token = fake.member("storage-ops", P);
        Self { fake, app, token, released: Default::default() }
    }

    async fn at(
        &self,
        version: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut headers = vec![("x-auth-token", self.token.as_str())];
        let header = version.map(|v| format!("volume {v}"));
        if let Some(h) = &header {
            headers.push(("openstack-api-version", h.as_str()));
        }
        let body = body.map(|b| b.to_string());
        send(
            &self.app,
            method,
            &format!("/v3/{P}{path}"),
            &headers,
            body.as_deref(),
            Some("application/json"),
        )
        .await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.at(Some("3.38"), method, path, body).await
    }

    async fn group_type(&self, replication: bool) -> String {
        let mut specs = json!({});
        if replication {
            specs = json!({"consistent_group_replication_enabled": "<is> True"});
        }
        let name = if replication { "replicated" } else { "plain" };
        let r = self
            .call(
                "POST",
                "/group_types",
                Some(json!({"group_type": {"name": name, "group_specs": specs}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        r.body["group_type"]["id"].as_str().expect("id").to_string()
    }

    async fn group(&self, gtype: &str) -> String {
        let body = json!({"group": {"name": "db", "group_type": gtype, "volume_types": ["vt-1"]}});
        let r = self.call("POST", "/groups", Some(body)).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        r.body["group"]["id"].as_str().expect("id").to_string()
    }

    async fn backends(&self, group: &str) {
        let base = format!(
            "/api/v1/tenants/{P}/namespaces/cinder/clientfailover/groups/{group}/clientsessions"
        );
        let bearer = format!("Bearer {}", self.token);
        for b in ["array-a", "array-b"] {
            let body = json!({"Id": b}).to_string();
            let r = send(
                &self.app,
                "POST",
                &base,
                &[("authorization", &bearer)],
                Some(&body),
                Some("application/json"),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        }
        self.heartbeat(group).await;
    }

    async fn heartbeat(&self, group: &str) {
        let base = format!(
            "/api/v1/tenants/{P}/namespaces/cinder/clientfailover/groups/{group}/clientsessions"
        );
        let bearer = format!("Bearer {}", self.token);
        for b in ["array-a", "array-b"] {
            self.fake.advance(1_600);
            let path = format!("{base}/{b}/heartbeat");
            let body = self.released.body(&path, json!({"FailoverScore": 100}));
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
        }
    }

    async fn action(&self, group: &str, body: Value) -> Reply {
        self.call("POST", &format!("/groups/{group}/action"), Some(body)).await
    }

    async fn replication_status(&self, group: &str) -> String {
        let r = self.call("GET", &format!("/groups/{group}"), None).await;
        r.body["group"]["replication_status"].as_str().expect("status").to_string()
    }
}

fn assert_fault(r: &Reply, status: StatusCode, fault: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body[fault]["code"], status.as_u16(), "{r:?}");
    assert!(r.body[fault]["message"].as_str().is_some_and(|m| !m.is_empty()), "{r:?}");
}

#[tokio::test]
async fn version_documents_and_microversion_negotiation() {
    let c = Cinder::new();
    let r = send(&c.app, "GET", "/", &[], None, None).await;
    assert_eq!(r.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(r.body["versions"][0]["version"], "3.71");
    assert_eq!(r.body["versions"][0]["min_version"], "3.0");
    let r = send(&c.app, "GET", "/v3/", &[], None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["versions"][0]["id"], "v3.0");

    let r = c.call("GET", "/groups", None).await;
    assert_eq!(r.headers["openstack-api-version"], "volume 3.38");
    assert_eq!(r.headers["vary"], "OpenStack-API-Version");
    let r = c.at(Some("latest"), "GET", "/groups", None).await;
    assert_eq!(r.headers["openstack-api-version"], "volume 3.71");
    // Outside the range: 406; no header means 3.0, where groups do not exist (empty 404).
    for v in ["3.72", "2.0", "4.1"] {
        let r = c.at(Some(v), "GET", "/groups", None).await;
        assert_fault(&r, StatusCode::NOT_ACCEPTABLE, "computeFault");
        assert_eq!(r.headers["openstack-api-version"], "volume 3.0");
    }
    assert_fault(
        &c.at(Some("three"), "GET", "/groups", None).await,
        StatusCode::BAD_REQUEST,
        "badRequest",
    );
    let r = c.at(None, "GET", "/groups", None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::NOT_FOUND, ""));
    // Replication needs 3.38.
    let gtype = c.group_type(true).await;
    let group = c.group(&gtype).await;
    let r = c
        .at(
            Some("3.37"),
            "POST",
            &format!("/groups/{group}/action"),
            Some(json!({"enable_replication": {}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = c.at(Some("3.37"), "GET", &format!("/groups/{group}"), None).await;
    assert!(r.body["group"].get("replication_status").is_none(), "only from 3.38: {r:?}");
    let r = c.at(Some("3.58"), "GET", &format!("/groups/{group}"), None).await;
    assert_eq!(r.body["group"]["project_id"], P);
}

#[tokio::test]
async fn a_keystone_session_serves_until_its_identity_is_rotated() {
    let c = Cinder::new();
    let body = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": c.token}}, "scope": {"project": {"id": P}}}});
    let r =
        send(&c.app, "POST", "/identity/v3/auth/tokens", &[], Some(&body.to_string()), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let session = r.headers["x-subject-token"].to_str().expect("text").to_string();
    let groups = format!("/v3/{P}/groups");
    let as_session = [("x-auth-token", session.as_str()), ("openstack-api-version", "volume 3.38")];
    let r = send(&c.app, "GET", &groups, &as_session, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // Re-scoped with the session itself: a new session, ending no later.
    let again = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": session}}, "scope": {"project": {"id": P}}}});
    let r =
        send(&c.app, "POST", "/identity/v3/auth/tokens", &[], Some(&again.to_string()), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let first = baton_auth::parse_session(&session).expect("a session").expires;
    let second = baton_auth::parse_session(r.headers["x-subject-token"].to_str().expect("text"))
        .expect("a session");
    assert!(second.expires <= first);
    c.fake.rotate("storage-ops");
    let r = send(&c.app, "GET", &groups, &as_session, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
}

#[tokio::test]
async fn the_keystone_token_endpoint_scopes_a_baton_token_to_a_project() {
    let c = Cinder::new();
    let body = json!({"auth": {"identity": {"methods": ["token"], "token": {"id": c.token}}, "scope": {"project": {"id": P}}}});
    let r = send(
        &c.app,
        "POST",
        "/identity/v3/auth/tokens",
        &[("host", "baton:7001")],
        Some(&body.to_string()),
        Some("application/json"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    // A session token ending within the hour, not the identity's own.
    let session = r.headers["x-subject-token"].to_str().expect("text").to_string();
    assert!(session.starts_with(baton_auth::SESSION_PREFIX) && session != c.token, "{session}");
    let expires = chrono::DateTime::parse_from_rfc3339(
        r.body["token"]["expires_at"].as_str().expect("expires_at"),
    )
    .expect("a time");
    let left = expires.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(left > chrono::Duration::minutes(59) && left <= chrono::Duration::hours(1), "{left}");
    let catalog = r.body["token"]["catalog"].as_array().expect("catalog");
    assert_eq!(catalog[0]["type"], "volumev3");
    assert_eq!(catalog[0]["endpoints"][0]["url"], format!("http://baton:7001/v3/{P}"));
    let password = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "storage-ops", "password": c.token, "domain": {"id": "default"}}}}, "scope": {"project": {"id": P}}}});
    let r = send(
        &c.app,
        "POST",
        "/identity/v3/auth/tokens",
        &[],
        Some(&password.to_string()),
        Some("application/json"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    for bad in [
        json!({"auth": {"identity": {"methods": ["token"], "token": {"id": "nope"}}, "scope": {"project": {"id": P}}}}),
        json!({"auth": {"identity": {"methods": ["token"], "token": {"id": c.token}}, "scope": {"project": {"id": "another"}}}}),
        json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "someone", "password": c.token}}}, "scope": {"project": {"id": P}}}}),
        json!({"auth": {"identity": {"methods": ["totp"]}}}),
    ] {
        let r = send(
            &c.app,
            "POST",
            "/identity/v3/auth/tokens",
            &[],
            Some(&bad.to_string()),
            Some("application/json"),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(r.body["error"]["code"], 401);
    }
}

#[tokio::test]
async fn a_project_is_reachable_only_with_a_token_for_it() {
    let c = Cinder::new();
    let r = send(
        &c.app,
        "GET",
        &format!("/v3/{P}/groups"),
        &[("openstack-api-version", "volume 3.38")],
        None,
        None,
    )
    .await;
    assert_fault(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = send(
        &c.app,
        "GET",
        &format!("/v3/{P}/groups"),
        &[("x-auth-token", "baton_x.00"), ("openstack-api-version", "volume 3.38")],
        None,
        None,
    )
    .await;
    assert_fault(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let other = c.fake.member("elsewhere", "other-project");
    let r = send(
        &c.app,
        "GET",
        &format!("/v3/{P}/groups"),
        &[("x-auth-token", other.as_str()), ("openstack-api-version", "volume 3.38")],
        None,
        None,
    )
    .await;
    assert_fault(&r, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn group_types_and_their_specs() {
    let c = Cinder::new();
    let id = c.group_type(false).await;
    assert_fault(
        &c.call("POST", "/group_types", Some(json!({"group_type": {"name": "plain"}}))).await,
        StatusCode::CONFLICT,
        "conflictingRequest",
    );
    for bad in [
        json!({}),
        json!({"group_type": {}}),
        json!({"group_type": {"name": "x", "extra": 1}}),
        json!({"group_type": {"name": "x"}, "more": 1}),
        json!({"group_type": {"name": "x", "group_specs": {"k": 1}}}),
    ] {
        assert_fault(
            &c.call("POST", "/group_types", Some(bad)).await,
            StatusCode::BAD_REQUEST,
            "badRequest",
        );
    }
    let r = c.call("GET", "/group_types", None).await;
    assert_eq!(r.body["group_types"][0]["name"], "plain");
    let r = c
        .call(
            "POST",
            &format!("/group_types/{id}/group_specs"),
            Some(json!({"group_specs": {"k1": "v1", "k2": "v2"}})),
        )
        .await;
    assert_eq!(r.body, json!({"group_specs": {"k1": "v1", "k2": "v2"}}));
    let r = c.call("GET", "/group_types/plain/group_specs/k1", None).await;
    assert_eq!(r.body, json!({"k1": "v1"}));
    let r = c
        .call("PUT", &format!("/group_types/{id}/group_specs/k1"), Some(json!({"k1": "v9"})))
        .await;
    assert_eq!(r.body, json!({"k1": "v9"}));
    assert_fault(
        &c.call("PUT", &format!("/group_types/{id}/group_specs/k1"), Some(json!({"k2": "x"})))
            .await,
        StatusCode::BAD_REQUEST,
        "badRequest",
    );
    assert_eq!(
        c.call("DELETE", &format!("/group_types/{id}/group_specs/k2"), None).await.status,
        StatusCode::ACCEPTED
    );
    assert_fault(
        &c.call("GET", &format!("/group_types/{id}/group_specs/k2"), None).await,
        StatusCode::NOT_FOUND,
        "itemNotFound",
    );
    let r = c
        .call(
            "PUT",
            &format!("/group_types/{id}"),
            Some(json!({"group_type": {"description": "d", "is_public": false}})),
        )
        .await;
    assert_eq!(
        (r.body["group_type"]["description"].clone(), r.body["group_type"]["is_public"].clone()),
        (json!("d"), json!(false))
    );
    // In use: refused; then deleted.
    let group = c.group(&id).await;
    assert_fault(
        &c.call("DELETE", &format!("/group_types/{id}"), None).await,
        StatusCode::BAD_REQUEST,
        "badRequest",
    );
    assert_eq!(
        c.action(&group, json!({"delete": {"delete-volumes": false}})).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        c.call("DELETE", &format!("/group_types/{id}"), None).await.status,
        StatusCode::ACCEPTED
    );
    assert_fault(
        &c.call("GET", &format!("/group_types/{id}"), None).await,
        StatusCode::NOT_FOUND,
        "itemNotFound",
    );
}

#[tokio::test]
async fn group_specs_beyond_the_limits_are_refused_and_change_nothing() {
    let c = Cinder::new();
    let id = c.group_type(false).await;
    let specs = |from: usize, n: usize, len: usize| {
        let map: serde_json::Map<String, serde_json::Value> =
            (from..from + n).map(|i| (format!("k{i}"), json!("v".repeat(len)))).collect();
        json!({ "group_specs": map })
    };
    let path = format!("/group_types/{id}/group_specs");
    let before = c.call("GET", &path, None).await.body;
    // Large specs, added in steps each far below a request's size, as the attack did.
    assert_eq!(c.call("POST", &path, Some(specs(0, 3, 4_000))).await.status, StatusCode::OK);
    let r = c.call("POST", &path, Some(specs(3, 2, 4_000))).await;
    assert_fault(&r, StatusCode::PAYLOAD_TOO_LARGE, "overLimit");
    let message = r.body["overLimit"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_label_bytes_per_group"), "{r:?}");
    // Many small ones.
    let many = baton_core::Limits::default().labels_per_group as usize + 1;
    let r = c.call("POST", &path, Some(specs(100, many, 1))).await;
    assert_fault(&r, StatusCode::PAYLOAD_TOO_LARGE, "overLimit");
    let message = r.body["overLimit"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_labels_per_group"), "{r:?}");
    // Nothing of the refused requests was applied.
    let after = c.call("GET", &path, None).await.body;
    let kept = after["group_specs"].as_object().expect("specs").len();
    assert_eq!(kept, before["group_specs"].as_object().map_or(0, |m| m.len()) + 3, "{after}");
}

#[tokio::test]
async fn groups_create_list_show_update_and_delete() {
    let c = Cinder::new();
    let gtype = c.group_type(false).await;
    let id = c.group(&gtype).await;
    assert_eq!(
        c.call("GET", "/groups", None).await.body,
        json!({"groups": [{"id": id, "name": "db"}]})
    );
    let r = c.call("GET", "/groups/detail", None).await;
    let g = &r.body["groups"][0];
    assert_eq!(
        (g["status"].clone(), g["group_type"].clone(), g["volume_types"].clone()),
        (json!("available"), json!(gtype), json!(["vt-1"]))
    );
    assert_eq!(
        c.call("PUT", &format!("/groups/{id}"), Some(json!({"group": {"name": "db2"}})))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(c.call("GET", &format!("/groups/{id}"), None).await.body["group"]["name"], "db2");
    for bad in [
        json!({"group": {"group_type": gtype}}),
        json!({"group": {"group_type": gtype, "volume_types": []}}),
        json!({"group": {"group_type": gtype, "volume_types": "vt"}}),
        json!({"group": {"volume_types": ["vt"]}}),
        json!({"group": {"group_type": gtype, "volume_types": ["vt"], "colour": "red"}}),
    ] {
        assert_fault(
            &c.call("POST", "/groups", Some(bad)).await,
            StatusCode::BAD_REQUEST,
            "badRequest",
        );
    }
    assert_fault(
        &c.call(
            "POST",
            "/groups",
            Some(json!({"group": {"group_type": "missing", "volume_types": ["vt"]}})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "itemNotFound",
    );
    assert_fault(
        &c.call("PUT", &format!("/groups/{id}"), Some(json!({"group": {"add_volumes": "v1"}})))
            .await,
        StatusCode::BAD_REQUEST,
        "badRequest",
    );
    assert_fault(
        &c.call("PUT", &format!("/groups/{id}"), Some(json!({"group": {}}))).await,
        StatusCode::BAD_REQUEST,
        "badRequest",
    );
    assert_fault(
        &c.call("GET", "/groups/no-such", None).await,
        StatusCode::NOT_FOUND,
        "itemNotFound",
    );
    assert_eq!(
        c.action(&id, json!({"delete": {"delete-volumes": true}})).await.status,
        StatusCode::ACCEPTED
    );
    assert_fault(
        &c.call("GET", &format!("/groups/{id}"), None).await,
        StatusCode::NOT_FOUND,
        "itemNotFound",
    );
}

#[tokio::test]
async fn replication_follows_cinders_state_machine_over_the_baton() {
    let c = Cinder::new();
    let plain = c.group(&c.group_type(false).await).await;
    assert_fault(
        &c.action(&plain, json!({"enable_replication": {}})).await,
        StatusCode::BAD_REQUEST,
        "badRequest",
    );
    let group = c.group(&c.group_type(true).await).await;
    // No active backend yet: nothing to replicate from.
    assert_fault(
        &c.action(&group, json!({"enable_replication": {}})).await,
        StatusCode::BAD_REQUEST,
        "badRequest",
    );
    c.backends(&group).await;
    // Wrong state: failover and disable need replication enabled.
    assert_fault(
        &c.action(&group, json!({"failover_replication": {}})).await,
        StatusCode::BAD_REQUEST,
        "badRequest",
    );
    assert_fault(
        &c.action(&group, json!({"disable_replication": {}})).await,
        StatusCode::BAD_REQUEST,
        "badRequest",
    );
    assert_eq!(
        c.action(&group, json!({"enable_replication": {}})).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(c.replication_status(&group).await, "enabled");
    let r = c.action(&group, json!({"list_replication_targets": {}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"replication_targets": [{"backend_id": "array-b"}]}));

    for bad in [
        json!({"failover_replication": {"secondary_backend_id": "nowhere"}}),
        json!({"failover_replication": {"allow_attached_volume": "perhaps"}}),
        json!({"failover_replication": {"extra": true}}),
        json!({"frobnicate": {}}),
        json!({"enable_replication": {}, "disable_replication": {}}),
        json!([]),
    ] {
        assert_fault(&c.action(&group, bad).await, StatusCode::BAD_REQUEST, "badRequest");
    }
    let r = c.action(&group, json!({"failover_replication": {"allow_attached_volume": true, "secondary_backend_id": "array-b"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    assert_eq!(c.replication_status(&group).await, "failing-over");
    assert_fault(
        &c.action(&group, json!({"enable_replication": {}})).await,
        StatusCode::BAD_REQUEST,
        "badRequest",
    );
    c.heartbeat(&group).await;
    c.heartbeat(&group).await;
    assert_eq!(c.replication_status(&group).await, "failed-over");
    // Failback to the primary.
    assert_eq!(
        c.action(&group, json!({"failover_replication": {"secondary_backend_id": "default"}}))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    // array-b lets go, proves it at its next heartbeat (as Baton's client does), and then
    // array-a takes the baton back.
    c.heartbeat(&group).await;
    c.heartbeat(&group).await;
    c.heartbeat(&group).await;
    assert_eq!(c.replication_status(&group).await, "enabled");
    assert_eq!(
        c.action(&group, json!({"disable_replication": {}})).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(c.replication_status(&group).await, "disabled");
    // reset_status is for administrators.
    assert_fault(
        &c.at(
            Some("3.38"),
            "POST",
            &format!("/groups/{group}/action"),
            Some(json!({"reset_status": {"status": "error"}})),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}
