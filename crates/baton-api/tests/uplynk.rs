//! The Uplynk v4 failover-groups dialect, in process against an in-memory coordinator running
//! the real core: msg/sig authentication, the nine endpoints with their shapes and codes,
//! allowed owners on every call, modes, slicer activation, no_slicer, slicer order and
//! eligibility, channels, and malformed input.

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{FakeCoordinator, Reply, call, call_as, send};

const BASE: &str = "/api/v4/failover-groups";

struct Owner {
    name: String,
    token: String,
    key: String,
}

struct Uplynk {
    fake: Arc<FakeCoordinator>,
    app: baton_api::App,
    owner: Owner,
    /// The slicers' proofs of having let go, as Baton's client sends them.
    released: support::Released,
}

/// A signature's age well beyond the accepted skew. One second beyond raced the clock: when
/// the second ticked between signing and checking, a signature 301 s ahead was 300 s ahead
/// when checked, and accepted.
const BEYOND_SKEW: i64 = baton_auth::signed::MAX_SKEW_SECS + 30;

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
        as i64
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Uplynk {
    async fn new() -> Self {
        let fake = Arc::new(FakeCoordinator::leading());
        let app = support::app_for(fake.clone());
        let owner = Self::owner(&app, "e8d6b5cb940c40cc9ec6ad081a38f3f0", "t1").await;
        let u = Self { fake, app, owner, released: Default::default() };
        u.create_group("fg1").await;
        u
    }

    /// Creates a member with a signing key (its Uplynk API key).
    async fn owner(app: &baton_api::App, name: &str, tenant: &str) -> Owner {
        let body = json!({"name": name, "role": "member", "tenant": tenant, "signing_key": true});
        let r = call(app, "POST", "/identities", Some(&body.to_string())).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        Owner {
            name: name.into(),
            token: r.body["token"].as_str().expect("token").into(),
            key: r.body["api_key"].as_str().expect("api key").into(),
        }
    }

    async fn create_group(&self, id: &str) {
        let body = json!({
            "id": id,
            "name": format!("group {id}"),
            "failover_timeout_ms": 10_000,
            "members": [{"id": "s1", "priority": 1}, {"id": "s2", "priority": 2}],
            "policy": {"preemption_margin": null},
            "labels": {"hot_warm": "1"},
        });
        let r = call_as(
            &self.app,
            Some(&self.owner.token),
            "POST",
            "/groups/t1/uplynk",
            Some(&body.to_string()),
            Some("application/json"),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }

    fn signed(owner: &Owner, path: &str, timestamp: i64) -> String {
        let (msg, sig) = baton_auth::signed::sign(&owner.name, timestamp, owner.key.as_bytes());
        format!("{path}?msg={}&sig={sig}", encode(&msg))
    }

    async fn call_as(&self, owner: &Owner, method: &str, path: &str, body: Option<Value>) -> Reply {
        let uri = Self::signed(owner, path, now_secs());
        let body = body.map(|b| b.to_string());
        send(&self.app, method, &uri, &[], body.as_deref(), Some("application/json")).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call_as(&self.owner, method, path, body).await
    }

    async fn heartbeat(&self, slicer: &str) -> Value {
        self.fake.advance(600);
        let path = format!(
            "/api/v1/tenants/t1/namespaces/uplynk/clientfailover/groups/fg1/clientsessions/{slicer}/heartbeat"
        );
        let body = self.released.body(&path, json!({"FailoverScore": 100}));
        let r = call_as(
            &self.app,
            Some(&self.owner.token),
            "POST",
            &path,
            Some(&body),
            Some("application/json"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        self.released.took(&path, &r);
        r.body
    }

    async fn group(&self) -> Value {
        let r = self.call("GET", &format!("{BASE}/fg1"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body
    }
}

fn assert_error(r: &Reply, status: StatusCode) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body["@type"], "Error", "{r:?}");
    assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{r:?}");
}

fn all_endpoints() -> Vec<(&'static str, String, Option<Value>)> {
    let g = format!("{BASE}/fg1");
    vec![
        ("GET", BASE.into(), None),
        ("GET", g.clone(), None),
        ("PATCH", g.clone(), Some(json!({"mode": "flat"}))),
        ("PUT", format!("{g}/activate_slicer"), Some(json!({"slicer_id": "s2"}))),
        ("PUT", format!("{g}/set_no_slicer"), Some(json!({"no_slicer": true}))),
        ("PUT", format!("{g}/slicers"), Some(json!({"slicers": []}))),
        ("PUT", format!("{g}/channels"), Some(json!({"channels_ids_to_add": ["c"]}))),
        ("GET", format!("{g}/allowed-owners"), None),
        ("PUT", format!("{g}/allowed-owners"), Some(json!({"owners_to_add": ["x"]}))),
    ]
}

#[tokio::test]
async fn every_endpoint_refuses_missing_forged_stale_or_foreign_signatures() {
    let u = Uplynk::new().await;
    let before = u.group().await;
    let wrong_key =
        Owner { name: u.owner.name.clone(), token: String::new(), key: "not-the-key".into() };
    let unknown = Owner { name: "nobody".into(), token: String::new(), key: u.owner.key.clone() };
    for (method, path, body) in all_endpoints() {
        let text = body.as_ref().map(ToString::to_string);
        let cases = [
            path.clone(),
            format!("{path}?msg=abc"),
            format!("{path}?msg=%%%&sig=00"),
            Uplynk::signed(&wrong_key, &path, now_secs()),
            Uplynk::signed(&unknown, &path, now_secs()),
            Uplynk::signed(&u.owner, &path, now_secs() - BEYOND_SKEW),
            Uplynk::signed(&u.owner, &path, now_secs() + BEYOND_SKEW),
        ];
        for uri in cases {
            let r =
                send(&u.app, method, &uri, &[], text.as_deref(), Some("application/json")).await;
            assert_error(&r, StatusCode::UNAUTHORIZED);
        }
    }
    // A bearer token is not a signature.
    let bearer = format!("Bearer {}", u.owner.token);
    let r = send(&u.app, "GET", BASE, &[("authorization", &bearer)], None, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED);
    assert_eq!(u.group().await, before, "nothing changed");
}

/// A signature seen once (in a proxy's log, say) cannot be used by anyone else while it is
/// valid: the node binds it to the address that first presented it. That client may present
/// it again (it signs every request of one second alike).
#[tokio::test]
async fn a_signature_from_another_address_is_refused_and_changes_nothing() {
    let u = Uplynk::new().await;
    let client: std::net::SocketAddr = "192.0.2.10:40000".parse().expect("an address");
    let same_host_new_port: std::net::SocketAddr = "192.0.2.10:40001".parse().expect("an address");
    let thief: std::net::SocketAddr = "198.51.100.7:50000".parse().expect("an address");
    let before = u.group().await;
    // Signed seconds earlier than the reads above and below (even if the clock ticks between),
    // so that it is not their signature too.
    let read = Uplynk::signed(&u.owner, &format!("{BASE}/fg1"), now_secs() - 2);
    let r = support::send_from(&u.app, Some(client), "GET", &read, &[], None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = support::send_from(&u.app, Some(same_host_new_port), "GET", &read, &[], None, None);
    assert_eq!(r.await.status, StatusCode::OK);
    // The thief reuses the logged signature for a write, and for the read it was made for.
    let (_, sig) = read.split_once("?").expect("a query");
    let write = format!("{BASE}/fg1/activate_slicer?{sig}");
    let body = json!({"slicer_id": "s2"}).to_string();
    for (method, uri, body) in [("PUT", &write, Some(body.as_str())), ("GET", &read, None)] {
        let r = support::send_from(
            &u.app,
            Some(thief),
            method,
            uri,
            &[],
            body,
            Some("application/json"),
        );
        let r = r.await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
        assert!(r.body["message"].as_str().is_some_and(|m| m.contains("already used")), "{r:?}");
    }
    assert_eq!(u.group().await, before, "nothing changed");
}

#[tokio::test]
async fn groups_have_the_documented_collection_and_item_shapes() {
    let u = Uplynk::new().await;
    let r = u.call("GET", BASE, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["@id"], "/api/v4/failover-groups");
    assert_eq!(r.body["@type"], "Collection");
    assert_eq!(r.body["total_items"], "1");
    let g = &r.body["items"][0];
    assert_eq!(g["@id"], "/api/v4/failover-groups/fg1");
    assert_eq!(g["@type"], "FailoverGroup");
    assert_eq!(g["id"], "fg1");
    assert_eq!(g["owner"], u.owner.name);
    assert_eq!(g["name"], "group fg1");
    assert_eq!(g["hot_warm"], 1);
    assert_eq!(g["mode"], "flat");
    assert_eq!(g["auto_failback"], false);
    assert_eq!(g["active_slicer_id"], "");
    assert_error(&u.call("GET", &format!("{BASE}/nope"), None).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_the_owner_and_allowed_owners_see_a_group() {
    let u = Uplynk::new().await;
    let other = Uplynk::owner(&u.app, "ff41643dn419198f523flniu1234n34i", "t1").await;
    assert_error(
        &u.call_as(&other, "GET", &format!("{BASE}/fg1"), None).await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(u.call_as(&other, "GET", BASE, None).await.body["total_items"], "0");
    // Not the owner: cannot grant itself access.
    let grant = json!({"owners_to_add": [other.name]});
    assert_error(
        &u.call_as(&other, "PUT", &format!("{BASE}/fg1/allowed-owners"), Some(grant.clone())).await,
        StatusCode::NOT_FOUND,
    );

    let r = u.call("PUT", &format!("{BASE}/fg1/allowed-owners"), Some(grant)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = u.call_as(&other, "GET", &format!("{BASE}/fg1/allowed-owners"), None).await;
    assert_eq!(r.body["@type"], "Collection");
    assert_eq!(r.body["total_items"], "1");
    let item = &r.body["items"][0];
    assert_eq!(item["owner"], other.name);
    assert_eq!(item["failover_group_id"], "fg1");
    assert_eq!(item["id"].as_str().map(str::len), Some(32));
    assert_eq!(u.call_as(&other, "GET", &format!("{BASE}/fg1"), None).await.status, StatusCode::OK);
    // An allowed owner may use the group but not change who else may.
    let r = u
        .call_as(
            &other,
            "PUT",
            &format!("{BASE}/fg1/allowed-owners"),
            Some(json!({"owners_to_remove": [u.owner.name]})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN);

    let r = u
        .call(
            "PUT",
            &format!("{BASE}/fg1/allowed-owners"),
            Some(json!({"owners_to_remove": [other.name]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_error(
        &u.call_as(&other, "GET", &format!("{BASE}/fg1"), None).await,
        StatusCode::NOT_FOUND,
    );
    // The same rule holds in the native API: not visible, not usable, not shareable.
    let bob = call_as(&u.app, Some(&other.token), "GET", "/groups/t1/uplynk/fg1", None, None).await;
    assert_eq!(bob.status, StatusCode::NOT_FOUND, "{bob:?}");
    let grab = json!({"owners": [other.name]}).to_string();
    let r = call_as(
        &u.app,
        Some(&other.token),
        "PUT",
        "/groups/t1/uplynk/fg1/allowed-owners",
        Some(&grab),
        Some("application/json"),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r =
        call_as(&u.app, Some(&other.token), "POST", "/groups/t1/uplynk/fg1/failover", None, None)
            .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    // Another tenant's owner never sees it.
    let stranger = Uplynk::owner(&u.app, "stranger", "t2").await;
    assert_error(
        &u.call_as(&stranger, "GET", &format!("{BASE}/fg1"), None).await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn patch_switches_mode_and_auto_failback_and_refuses_bad_values() {
    let u = Uplynk::new().await;
    let g = format!("{BASE}/fg1");
    let r = u.call("PATCH", &g, Some(json!({"mode": "prioritized", "auto_failback": true}))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let v = u.group().await;
    assert_eq!(
        (v["mode"].clone(), v["auto_failback"].clone()),
        (json!("prioritized"), json!(true))
    );
    for bad in [
        json!({}),
        json!({"mode": "random"}),
        json!({"auto_failback": "yes"}),
        json!({"colour": 1}),
        json!([1]),
    ] {
        assert_error(&u.call("PATCH", &g, Some(bad)).await, StatusCode::BAD_REQUEST);
    }
    assert_eq!(u.group().await, v, "nothing changed");
}

#[tokio::test]
async fn activate_slicer_switches_the_active_slicer_and_refuses_what_uplynk_refuses() {
    let u = Uplynk::new().await;
    let g = format!("{BASE}/fg1");
    u.heartbeat("s1").await;
    u.heartbeat("s2").await;
    assert_eq!(u.group().await["active_slicer_id"], "s1");
    assert_error(
        &u.call("PUT", &format!("{g}/activate_slicer"), Some(json!({"slicer_id": "s9"}))).await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &u.call("PUT", &format!("{g}/activate_slicer"), Some(json!({}))).await,
        StatusCode::BAD_REQUEST,
    );

    let r = u
        .call("PUT", &format!("{g}/activate_slicer"), Some(json!({"slicer_id": "someuser:s2"})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert_eq!(u.heartbeat("s1").await["Role"], 0, "the active slicer lets go");
    // ... and proves it at its next heartbeat, as Baton's client does.
    assert_eq!(u.heartbeat("s1").await["Role"], 0);
    assert_eq!(u.heartbeat("s2").await["Role"], 2);
    let v = u.group().await;
    assert_eq!(v["active_slicer_id"], "s2");
    assert!(v["failover_time"].is_u64());

    // With auto_failback on, manual activation is refused.
    u.call("PATCH", &g, Some(json!({"mode": "prioritized", "auto_failback": true}))).await;
    assert_error(
        &u.call("PUT", &format!("{g}/activate_slicer"), Some(json!({"slicer_id": "s1"}))).await,
        StatusCode::BAD_REQUEST,
    );
}

#[tokio::test]
async fn no_slicer_takes_the_baton_away_until_it_is_turned_off() {
    let u = Uplynk::new().await;
    let g = format!("{BASE}/fg1");
    u.heartbeat("s1").await;
    assert_eq!(
        u.call("PUT", &format!("{g}/set_no_slicer"), Some(json!({"no_slicer": true}))).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(u.group().await["active_slicer_id"], "no_slicer");
    u.fake.tick();
    assert_eq!(u.heartbeat("s1").await["Role"], 0);
    assert_eq!(u.heartbeat("s2").await["Role"], 0);
    assert_error(
        &u.call("PUT", &format!("{g}/set_no_slicer"), Some(json!({}))).await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &u.call("PUT", &format!("{g}/set_no_slicer"), Some(json!({"no_slicer": 1}))).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(
        u.call("PUT", &format!("{g}/set_no_slicer"), Some(json!({"no_slicer": false})))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(u.heartbeat("s1").await["Role"], 2, "PendingPrimary again");
}

#[tokio::test]
async fn slicer_order_and_eligibility_decide_who_is_active_in_prioritized_mode() {
    let u = Uplynk::new().await;
    let g = format!("{BASE}/fg1");
    u.call("PATCH", &g, Some(json!({"mode": "prioritized"}))).await;
    let body = json!({"slicers": [
        {"slicer_id": "s1", "enabled": false, "order": 1},
        {"slicer_id": "s2", "enabled": true, "order": 2},
        {"slicer_id": "not-in-group", "enabled": true, "order": 1},
    ]});
    assert_eq!(
        u.call("PUT", &format!("{g}/slicers"), Some(body)).await.status,
        StatusCode::NO_CONTENT
    );
    let v = u.group().await;
    assert_eq!(
        v["slicers"][0],
        json!({"slicer_id": "s1", "enabled": false, "order": 1, "active": false})
    );
    u.heartbeat("s1").await;
    u.heartbeat("s2").await;
    u.fake.tick();
    assert_eq!(u.group().await["active_slicer_id"], "s2", "a disabled slicer is never chosen");
    for bad in [
        json!({"slicers": "s1"}),
        json!({"slicers": [{"order": 1}]}),
        json!({"slicers": [{"slicer_id": "s1", "order": -1}]}),
    ] {
        assert_error(
            &u.call("PUT", &format!("{g}/slicers"), Some(bad)).await,
            StatusCode::BAD_REQUEST,
        );
    }
}

#[tokio::test]
async fn a_channel_belongs_to_one_group_at_a_time() {
    let u = Uplynk::new().await;
    u.create_group("fg2").await;
    let add = |c: &str| json!({"channels_ids_to_add": [c]});
    assert_eq!(
        u.call("PUT", &format!("{BASE}/fg1/channels"), Some(add("c1"))).await.status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &u.call("PUT", &format!("{BASE}/fg2/channels"), Some(add("c1"))).await,
        StatusCode::CONFLICT,
    );
    let remove = json!({"channels_ids_to_remove": ["c1"]});
    assert_eq!(
        u.call("PUT", &format!("{BASE}/fg1/channels"), Some(remove)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        u.call("PUT", &format!("{BASE}/fg2/channels"), Some(add("c1"))).await.status,
        StatusCode::NO_CONTENT
    );
    let r = u.call("GET", &format!("{BASE}/fg2"), None).await;
    assert_eq!(r.body["channels"], json!(["c1"]));
    for bad in [
        json!({"channels_ids_to_add": "c1"}),
        json!({"channels_ids_to_add": [1]}),
        json!({"channels": []}),
    ] {
        assert_error(
            &u.call("PUT", &format!("{BASE}/fg1/channels"), Some(bad)).await,
            StatusCode::BAD_REQUEST,
        );
    }
}

#[tokio::test]
async fn channels_and_allowed_owners_beyond_their_limits_are_refused_and_change_nothing() {
    let u = Uplynk::new().await;
    {
        let mut limits = u.fake.limits.lock().expect("lock");
        limits.channels_per_group = 2;
        limits.allowed_owners_per_group = 1;
    }
    let channels = |ids: &[&str]| json!({"channels_ids_to_add": ids});
    let path = format!("{BASE}/fg1/channels");
    let r = u.call("PUT", &path, Some(channels(&["c1", "c2"]))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = u.call("PUT", &path, Some(channels(&["c3"]))).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text.contains("max_channels_per_group"), "{r:?}");
    // Swapping one for another keeps the count: allowed.
    let swap = json!({"channels_ids_to_add": ["c3"], "channels_ids_to_remove": ["c1"]});
    assert_eq!(u.call("PUT", &path, Some(swap)).await.status, StatusCode::NO_CONTENT);
    assert_eq!(u.group().await["channels"], json!(["c2", "c3"]));

    let owners = format!("{BASE}/fg1/allowed-owners");
    // An owner must be a known identity, so a group cannot fill up with invented names.
    let r = u.call("PUT", &owners, Some(json!({"owners_to_add": ["nobody-at-all"]}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("nobody-at-all"), "{r:?}");
    // Another tenant's identity is answered the same way: the answer tells nothing about it.
    let stranger = Uplynk::owner(&u.app, "5555aaaa5555aaaa5555aaaa5555aaaa", "t2").await;
    let r = u.call("PUT", &owners, Some(json!({"owners_to_add": [stranger.name]}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let a = Uplynk::owner(&u.app, "a1b2c3d4e5f60718293a4b5c6d7e8f90", "t1").await;
    let b = Uplynk::owner(&u.app, "0f9e8d7c6b5a49382716e5d4c3b2a190", "t1").await;
    let r = u.call("PUT", &owners, Some(json!({"owners_to_add": [a.name]}))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = u.call("PUT", &owners, Some(json!({"owners_to_add": [b.name]}))).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text.contains("max_allowed_owners_per_group"), "{r:?}");
    let r = u.call("GET", &owners, None).await;
    assert_eq!(r.body["total_items"], "1", "{r:?}");
}
