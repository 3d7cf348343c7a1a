//! Who gets in: a table of hostile and unauthorized requests against a real cluster, each with
//! its expected status and body, and the proof afterwards that nothing changed and every node
//! agrees; revocation on every node within a second; per-identity rate limits; concurrent
//! conflicting writes; the audit trail; secrets kept out of logs and status.

use std::time::{Duration, Instant};

use baton_e2e::{ADMIN_TOKEN, SECRET, TestCluster, client_with_token, send};
use serde_json::{Value, json};

const ELECTION: Duration = Duration::from_secs(10);
const T1: &str = "/api/v1/tenants/t1/namespaces/ns/clientfailover";
const T1_PREVIEW: &str = "/api/v1-preview/tenants/t1/namespaces/ns/clientfailover";
const UPLYNK: &str = "/api/v4/failover-groups";

/// An identity with a signing key, signing Uplynk requests.
#[derive(Clone)]
struct Signer {
    name: String,
    token: String,
    key: String,
}

impl Signer {
    /// `path?msg=...&sig=...` as Uplynk's sample client makes it.
    fn sign(&self, path: &str, timestamp: i64) -> String {
        let (msg, sig) = baton_auth::signed::sign(&self.name, timestamp, self.key.as_bytes());
        let msg: String = msg
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("{path}?msg={msg}&sig={sig}")
    }
}

fn now_secs() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("a clock after 1970").as_secs() as i64
}

/// Creates a member with a signing key (its Uplynk API key).
async fn signing_identity(cluster: &TestCluster, name: &str, tenant: &str) -> Signer {
    let url = format!("{}/identities", cluster.url(1));
    let body = json!({"name": name, "role": "member", "tenant": tenant, "signing_key": true});
    let r = send(cluster.http(), "POST", &url, Some(body)).await.expect("answer");
    assert_eq!(r.status, 201, "{r:?}");
    Signer {
        name: name.into(),
        token: r.body["token"].as_str().expect("a token").into(),
        key: r.body["api_key"].as_str().expect("an API key").into(),
    }
}

/// Creates an identity through the native API and returns its token.
async fn identity(cluster: &TestCluster, name: &str, tenant: &str) -> String {
    let url = format!("{}/identities", cluster.url(1));
    let body = json!({"name": name, "role": "member", "tenant": tenant});
    let r = send(cluster.http(), "POST", &url, Some(body)).await.expect("answer");
    assert_eq!(r.status, 201, "{r:?}");
    r.body["token"].as_str().expect("a token").to_string()
}

async fn call(
    cluster: &TestCluster,
    node: u64,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> baton_e2e::Reply {
    let http = client_with_token(token, Duration::from_secs(10));
    send(&http, method, &format!("{}{path}", cluster.url(node)), body).await.expect("answer")
}

/// What a refused request must answer.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// AVEVA's error body with this status.
    Aveva(u16),
    /// The native error body with this status and code.
    Native(u16, &'static str),
    /// HCX: no body for 401 and 403, else `{"errors": [{"code", "message"}]}`.
    Hcx(u16),
    /// Cinder's fault body `{"<fault>": {"code", "message"}}`.
    Cinder(u16, &'static str),
    /// Uplynk's `{"@type": "Error", "status", "message"}`.
    Uplynk(u16),
}

/// Who, their token, method, path, body, and the expected answer.
type NativeRow<'a> = (&'static str, &'a String, &'static str, &'a str, Option<Value>, Expect);

/// Where a row's credential goes.
#[derive(Clone, Debug)]
enum Auth {
    /// `Authorization: Bearer` (native, AVEVA), or nothing.
    Bearer(Option<String>),
    /// A dialect's own header (HCX `x-hm-authorization`, Cinder `X-Auth-Token`).
    Header(&'static str, String),
    /// Uplynk: `msg` and `sig` are already in the path's query string.
    Signed,
}

struct Row {
    who: &'static str,
    auth: Auth,
    method: &'static str,
    path: String,
    body: Option<Value>,
    expect: Expect,
}

/// Sends a row's request to a node.
async fn send_row(cluster: &TestCluster, node: u64, row: &Row) -> baton_e2e::Reply {
    let http = client_with_token(None, Duration::from_secs(10));
    let method = reqwest::Method::from_bytes(row.method.as_bytes()).expect("method");
    let mut req = http.request(method, format!("{}{}", cluster.url(node), row.path));
    match &row.auth {
        Auth::Bearer(Some(t)) => req = req.header("authorization", format!("Bearer {t}")),
        Auth::Header(name, value) => req = req.header(*name, value),
        Auth::Bearer(None) | Auth::Signed => {}
    }
    if row.path.starts_with("/v3/") {
        req = req.header("openstack-api-version", "volume 3.38");
    }
    if let Some(body) = &row.body {
        req = req.header("content-type", "application/json").body(body.to_string());
    }
    let resp = req.send().await.expect("answer");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    baton_e2e::Reply { status, served_by: None, location: None, body }
}

fn check(row: &Row, reply: &baton_e2e::Reply) -> Result<(), String> {
    let (status, ok_body) = match row.expect {
        Expect::Aveva(s) => (
            s,
            reply.body["Error"].as_str().is_some_and(|e| !e.is_empty())
                && reply.body["Reason"].as_str().is_some_and(|r| !r.is_empty())
                && reply.body.get("OperationId").is_some(),
        ),
        Expect::Native(s, code) => {
            (s, reply.body["error"] == code && reply.body["message"].is_string())
        }
        Expect::Hcx(s @ (401 | 403)) => (s, reply.body == Value::String(String::new())),
        Expect::Hcx(s) => (
            s,
            reply.body["errors"][0]["code"].is_string()
                && reply.body["errors"][0]["message"].is_string(),
        ),
        Expect::Cinder(s, fault) => {
            (s, reply.body[fault]["code"] == s && reply.body[fault]["message"].is_string())
        }
        Expect::Uplynk(s) => (s, reply.body["@type"] == "Error" && reply.body["status"] == s),
    };
    if reply.status != status || !ok_body {
        return Err(format!(
            "{} {} as {}: expected {:?}, got {} {}",
            row.method, row.path, row.who, row.expect, reply.status, reply.body
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_unauthorized_requests_are_refused_in_each_apis_format_and_change_nothing() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(ELECTION).await;
    let alice = identity(&cluster, "alice", "t1").await;
    let bob = identity(&cluster, "bob", "t1").await;
    let eve = identity(&cluster, "eve", "t2").await;
    identity(&cluster, "carol", "t1").await;
    let mallory = identity(&cluster, "mallory", "t1").await;
    let r = send(cluster.http(), "DELETE", &format!("{}/identities/mallory", cluster.url(1)), None)
        .await
        .expect("answer");
    assert_eq!(r.status, 200, "{r:?}");

    // alice's groups g1 (open to tenant t1) and g2 (narrowed to carol); eve's h1 in t2.
    for (token, prefix, group) in [
        (&alice, T1, "g1"),
        (&alice, T1, "g2"),
        (&eve, "/api/v1/tenants/t2/namespaces/ns/clientfailover", "h1"),
    ] {
        let body = json!({"Id": group, "FailoverTimeout": "00:00:10"});
        let r =
            call(&cluster, 1, Some(token), "POST", &format!("{prefix}/groups"), Some(body)).await;
        assert_eq!(r.status, 201, "{r:?}");
        for s in ["s1", "s2"] {
            let path = format!("{prefix}/groups/{group}/clientsessions");
            let r = call(&cluster, 1, Some(token), "POST", &path, Some(json!({"Id": s}))).await;
            assert_eq!(r.status, 201, "{r:?}");
        }
    }
    let r = call(
        &cluster,
        1,
        Some(&alice),
        "PUT",
        "/groups/t1/ns/g2/allowed-owners",
        Some(json!({"owners": ["carol"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    // The other dialects' groups: alice's HCX HA group "hg", a replication group type and a
    // group in Cinder project t1, and an Uplynk group "fg1" of an owner with an API key.
    let hcx = "/hybridity/api/interconnect/appliances/ha/groups";
    let as_alice_hcx = Auth::Header("x-hm-authorization", alice.clone());
    let as_alice_cinder = Auth::Header("x-auth-token", alice.clone());
    let setup = |auth: &Auth, method: &'static str, path: &str, body: Value| Row {
        who: "setup",
        auth: auth.clone(),
        method,
        path: path.to_string(),
        body: Some(body),
        expect: Expect::Native(0, ""),
    };
    let r = send_row(
        &cluster,
        1,
        &setup(
            &as_alice_hcx,
            "POST",
            hcx,
            json!({"appliances": ["ne-a", "ne-b"], "groupId": "hg"}),
        ),
    )
    .await;
    assert_eq!(r.status, 202, "{r:?}");
    let specs = json!({"group_type": {"name": "rep", "group_specs": {"consistent_group_replication_enabled": "<is> True"}}});
    let r =
        send_row(&cluster, 1, &setup(&as_alice_cinder, "POST", "/v3/t1/group_types", specs)).await;
    assert_eq!(r.status, 202, "{r:?}");
    let gtype = r.body["group_type"]["id"].as_str().expect("a group type id").to_string();
    let group = json!({"group": {"name": "db", "group_type": gtype, "volume_types": ["vt"]}});
    let r = send_row(&cluster, 1, &setup(&as_alice_cinder, "POST", "/v3/t1/groups", group)).await;
    assert_eq!(r.status, 202, "{r:?}");
    let cgroup = r.body["group"]["id"].as_str().expect("a group id").to_string();
    let owner = signing_identity(&cluster, "owner1", "t1").await;
    let other_owner = signing_identity(&cluster, "owner2", "t1").await;
    let fg = json!({"id": "fg1", "failover_timeout_ms": 10_000, "members": [{"id": "s1"}, {"id": "s2"}]});
    let r = call(&cluster, 1, Some(&owner.token), "POST", "/groups/t1/uplynk", Some(fg)).await;
    assert_eq!(r.status, 201, "{r:?}");
    let before = cluster.wait_converged(ELECTION).await;

    // Every AVEVA endpoint of a group, in both versions where it exists.
    let group_endpoints = |group: &str| -> Vec<(&'static str, String, Option<Value>)> {
        let g = format!("{T1}/groups/{group}");
        let p = format!("{T1_PREVIEW}/groups/{group}");
        vec![
            ("GET", g.clone(), None),
            ("DELETE", g.clone(), None),
            ("GET", format!("{g}/status"), None),
            ("GET", format!("{g}/clientsessions"), None),
            ("POST", format!("{g}/clientsessions"), Some(json!({"Id": "s9"}))),
            ("GET", format!("{g}/clientsessions/s1"), None),
            ("DELETE", format!("{g}/clientsessions/s1"), None),
            (
                "POST",
                format!("{g}/clientsessions/s1/heartbeat"),
                Some(json!({"FailoverScore": 100})),
            ),
            ("POST", format!("{g}/clientsessions/s1/roleoverride"), Some(json!({"Value": 1}))),
            ("PUT", p.clone(), Some(json!({"Id": group, "FailoverTimeout": "00:00:20"}))),
            ("PUT", format!("{p}/clientsessions/s1"), Some(json!({"Id": "s1", "Name": "x"}))),
            (
                "POST",
                format!("{p}/clientsessions/s2/heartbeat"),
                Some(json!({"FailoverStatus": 50})),
            ),
        ]
    };
    let tenant_endpoints: Vec<(&'static str, String, Option<Value>)> = vec![
        ("GET", T1.to_string(), None),
        ("GET", format!("{T1}/groups"), None),
        ("POST", format!("{T1}/groups"), Some(json!({"Id": "new", "FailoverTimeout": "00:00:10"}))),
        ("GET", format!("{T1_PREVIEW}/groups"), None),
    ];
    let aveva_all: Vec<_> = tenant_endpoints.iter().cloned().chain(group_endpoints("g1")).collect();

    let forged = format!("baton_alice.{}", "0".repeat(64));
    let bad_credentials: [(&str, Option<String>); 5] = [
        ("nobody", None),
        ("garbage", Some("not-a-token".into())),
        ("forged", Some(forged)),
        ("revoked", Some(mallory.clone())),
        ("admin-token-with-a-typo", Some(format!("{}x", ADMIN_TOKEN))),
    ];
    let mut rows = Vec::new();
    for (who, token) in &bad_credentials {
        for (method, path, body) in &aveva_all {
            rows.push(Row {
                who,
                auth: Auth::Bearer(token.clone()),
                method,
                path: path.clone(),
                body: body.clone(),
                expect: Expect::Aveva(401),
            });
        }
    }
    // Another tenant: 403 whatever exists, so guessing ids reveals nothing.
    for (method, path, body) in aveva_all.iter().cloned().chain(group_endpoints("no-such-group")) {
        rows.push(Row {
            who: "eve",
            auth: Auth::Bearer(Some(eve.clone())),
            method,
            path,
            body,
            expect: Expect::Aveva(403),
        });
    }
    // Same tenant, not an allowed owner of g2.
    for (method, path, body) in group_endpoints("g2") {
        rows.push(Row {
            who: "bob",
            auth: Auth::Bearer(Some(bob.clone())),
            method,
            path,
            body,
            expect: Expect::Aveva(403),
        });
    }
    // Native administration: members are forbidden, strangers unauthenticated.
    let admin_endpoints: Vec<(&'static str, &str, Option<Value>)> = vec![
        ("GET", "/cluster/status", None),
        ("GET", "/cluster/nodes", None),
        ("GET", "/cluster/digest", None),
        ("GET", "/metrics", None),
        ("GET", "/identities", None),
        ("POST", "/identities", Some(json!({"name": "x", "role": "admin"}))),
        ("DELETE", "/identities/bob", None),
        ("GET", "/audit", None),
        (
            "POST",
            "/cluster/learners",
            Some(json!({"id": 9, "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2"})),
        ),
        ("POST", "/cluster/nodes/2/promote", None),
        ("DELETE", "/cluster/nodes/2", None),
        ("POST", "/cluster/snapshot", None),
    ];
    for (method, path, body) in &admin_endpoints {
        rows.push(Row {
            who: "alice",
            auth: Auth::Bearer(Some(alice.clone())),
            method,
            path: path.to_string(),
            body: body.clone(),
            expect: Expect::Native(403, "forbidden"),
        });
        rows.push(Row {
            who: "nobody",
            auth: Auth::Bearer(None),
            method,
            path: path.to_string(),
            body: body.clone(),
            expect: Expect::Native(401, "unauthorized"),
        });
    }
    let admin = ADMIN_TOKEN.to_string();
    let native_rows: Vec<NativeRow> = vec![
        ("alice", &alice, "GET", "/identities/bob", None, Expect::Native(404, "not_found")),
        ("alice", &alice, "POST", "/identities/bob/rotate", None, Expect::Native(404, "not_found")),
        ("eve", &eve, "POST", "/groups/t1/ns/g1/failover", None, Expect::Native(404, "not_found")),
        (
            "eve",
            &eve,
            "PUT",
            "/groups/t1/ns/g1/allowed-owners",
            Some(json!({"owners": ["eve"]})),
            Expect::Native(404, "not_found"),
        ),
        ("bob", &bob, "POST", "/groups/t1/ns/g2/failover", None, Expect::Native(403, "forbidden")),
        (
            "bob",
            &bob,
            "PUT",
            "/groups/t1/ns/g2/allowed-owners",
            Some(json!({"owners": ["bob"]})),
            Expect::Native(403, "forbidden"),
        ),
        (
            "alice",
            &alice,
            "POST",
            "/groups/t1/ns/g1/failover",
            None,
            Expect::Native(409, "conflict"),
        ),
        (
            "admin",
            &admin,
            "POST",
            "/identities",
            Some(json!({"name": "a b", "role": "member", "tenant": "t1"})),
            Expect::Native(400, "bad_request"),
        ),
        (
            "admin",
            &admin,
            "POST",
            "/identities",
            Some(json!({"name": "x", "role": "root"})),
            Expect::Native(400, "bad_request"),
        ),
        (
            "admin",
            &admin,
            "POST",
            "/identities",
            Some(json!({"name": "x", "role": "member"})),
            Expect::Native(400, "bad_request"),
        ),
        (
            "admin",
            &admin,
            "POST",
            "/identities",
            Some(json!({"name": "x", "role": "admin", "extra": 1})),
            Expect::Native(400, "bad_request"),
        ),
        (
            "admin",
            &admin,
            "POST",
            "/identities",
            Some(json!({"name": "alice", "role": "admin"})),
            Expect::Native(409, "conflict"),
        ),
        (
            "admin",
            &admin,
            "DELETE",
            "/identities/nobody-here",
            None,
            Expect::Native(404, "not_found"),
        ),
        (
            "admin",
            &admin,
            "GET",
            "/audit?group=no-slashes",
            None,
            Expect::Native(400, "bad_request"),
        ),
        (
            "admin",
            &admin,
            "GET",
            "/audit?after=minus-one",
            None,
            Expect::Native(400, "bad_request"),
        ),
    ];
    for (who, token, method, path, body, expect) in native_rows {
        rows.push(Row {
            who,
            auth: Auth::Bearer(Some(token.clone())),
            method,
            path: path.into(),
            body,
            expect,
        });
    }
    // Tenant names starting with '_' are Baton's (an administrator's HCX and Uplynk groups).
    rows.push(Row {
        who: "admin",
        auth: Auth::Bearer(Some(ADMIN_TOKEN.to_string())),
        method: "POST",
        path: "/identities".into(),
        body: Some(json!({"name": "sneaky", "role": "member", "tenant": "_admin"})),
        expect: Expect::Native(400, "bad_request"),
    });
    // Hostile input from an authenticated member.
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let hostile: Vec<(&'static str, String, Option<Value>, Expect)> = vec![
        (
            "POST",
            format!("{T1}/groups"),
            Some(json!({"Id": "x".repeat(257), "FailoverTimeout": "00:00:10"})),
            Expect::Aveva(400),
        ),
        (
            "POST",
            format!("{T1}/groups"),
            Some(json!({"Id": "bad\u{1}id", "FailoverTimeout": "00:00:10"})),
            Expect::Aveva(400),
        ),
        (
            "POST",
            format!("{T1}/groups"),
            Some(json!({"Id": "x", "FailoverTimeout": "99:99:99"})),
            Expect::Aveva(400),
        ),
        (
            "POST",
            format!("{T1}/groups"),
            Some(json!({"Id": "x", "FailoverTimeout": "00:00:00.5"})),
            Expect::Aveva(400),
        ),
        (
            "POST",
            format!("{T1}/groups"),
            Some(json!({"Id": "x", "FailoverTimeout": {"nested": [1, 2]}})),
            Expect::Aveva(400),
        ),
        ("POST", format!("{T1}/groups"), Some(Value::String(deep)), Expect::Aveva(400)),
        (
            "POST",
            format!("{T1}/groups"),
            Some(json!({"Id": "x", "Name": "n".repeat(5_000), "FailoverTimeout": "00:00:10"})),
            Expect::Aveva(400),
        ),
        (
            "POST",
            format!("{T1}/groups/g1/clientsessions/s1/heartbeat"),
            Some(json!({"FailoverScore": 101})),
            Expect::Aveva(400),
        ),
        (
            "POST",
            format!("{T1}/groups/g1/clientsessions/s1/heartbeat"),
            Some(json!({"FailoverScore": "high"})),
            Expect::Aveva(400),
        ),
        (
            "POST",
            format!("{T1}/groups/g1/clientsessions/s1/roleoverride"),
            Some(json!({"Value": 7})),
            Expect::Aveva(400),
        ),
        (
            "POST",
            format!("{T1}/groups/g1/clientsessions/s1/roleoverride"),
            Some(json!({"Value": 1, "ExpirationPeriod": "forever"})),
            Expect::Aveva(400),
        ),
        ("GET", format!("{T1}/groups?skip=-1"), None, Expect::Aveva(400)),
        ("GET", format!("{T1}/groups?count=lots"), None, Expect::Aveva(400)),
        (
            "GET",
            "/api/v9/tenants/t1/namespaces/ns/clientfailover/groups".into(),
            None,
            Expect::Aveva(404),
        ),
        ("GET", format!("{T1}/groups/g1/clientsessions/nobody"), None, Expect::Aveva(404)),
        ("PATCH", format!("{T1}/groups/g1"), None, Expect::Aveva(405)),
    ];
    for (method, path, body, expect) in hostile {
        rows.push(Row {
            who: "alice",
            auth: Auth::Bearer(Some(alice.clone())),
            method,
            path,
            body,
            expect,
        });
    }
    // HCX: every endpoint without a valid session token answers 401 without a body; another
    // tenant's group does not exist; bad bodies and states answer the HCX envelope.
    let hcx_endpoints: Vec<(&'static str, String, Option<Value>)> = vec![
        ("GET", hcx.to_string(), None),
        ("POST", hcx.to_string(), Some(json!({"appliances": ["x"], "groupId": "new"}))),
        ("GET", format!("{hcx}/hg"), None),
        ("DELETE", format!("{hcx}/hg"), None),
        ("POST", format!("{hcx}/hg/forceFailover"), None),
        ("GET", "/hybridity/api/interconnect/tasks/00".to_string(), None),
    ];
    let forged = format!("baton_alice.{}", "0".repeat(64));
    let bad_headers = [
        ("nobody", Auth::Bearer(None)),
        ("garbage", Auth::Header("x-hm-authorization", "garbage".into())),
        ("forged", Auth::Header("x-hm-authorization", forged.clone())),
        ("revoked", Auth::Header("x-hm-authorization", mallory.clone())),
    ];
    for (who, auth) in &bad_headers {
        for (method, path, body) in &hcx_endpoints {
            rows.push(Row {
                who,
                auth: auth.clone(),
                method,
                path: path.clone(),
                body: body.clone(),
                expect: Expect::Hcx(401),
            });
        }
    }
    let as_eve_hcx = Auth::Header("x-hm-authorization", eve.clone());
    for (method, path, body) in hcx_endpoints.iter().skip(2).take(3) {
        rows.push(Row {
            who: "eve",
            auth: as_eve_hcx.clone(),
            method,
            path: path.clone(),
            body: body.clone(),
            expect: Expect::Hcx(404),
        });
    }
    for (method, path, body, expect) in [
        ("POST", hcx.to_string(), Some(json!({})), Expect::Hcx(400)),
        ("POST", hcx.to_string(), Some(json!({"appliances": []})), Expect::Hcx(400)),
        (
            "POST",
            hcx.to_string(),
            Some(json!({"appliances": ["a"], "groupId": ""})),
            Expect::Hcx(400),
        ),
        (
            "POST",
            hcx.to_string(),
            Some(json!({"appliances": ["a"], "groupId": "hg"})),
            Expect::Hcx(409),
        ),
        ("POST", format!("{hcx}/hg/forceFailover"), None, Expect::Hcx(409)),
    ] {
        rows.push(Row { who: "alice", auth: as_alice_hcx.clone(), method, path, body, expect });
    }

    // Cinder: Cinder's fault bodies for missing or bad tokens, another project, bad input.
    let cinder_endpoints: Vec<(&'static str, String, Option<Value>)> = vec![
        ("GET", "/v3/t1/groups".into(), None),
        ("GET", "/v3/t1/groups/detail".into(), None),
        (
            "POST",
            "/v3/t1/groups".into(),
            Some(json!({"group": {"group_type": gtype, "volume_types": ["vt"]}})),
        ),
        ("GET", format!("/v3/t1/groups/{cgroup}"), None),
        ("PUT", format!("/v3/t1/groups/{cgroup}"), Some(json!({"group": {"name": "x"}}))),
        ("POST", format!("/v3/t1/groups/{cgroup}/action"), Some(json!({"delete": {}}))),
        ("GET", "/v3/t1/group_types".into(), None),
        ("POST", "/v3/t1/group_types".into(), Some(json!({"group_type": {"name": "x"}}))),
        ("DELETE", format!("/v3/t1/group_types/{gtype}"), None),
    ];
    let bad_tokens = [
        ("nobody", Auth::Bearer(None)),
        ("garbage", Auth::Header("x-auth-token", "garbage".into())),
        ("forged", Auth::Header("x-auth-token", forged.clone())),
        ("revoked", Auth::Header("x-auth-token", mallory.clone())),
    ];
    for (who, auth) in &bad_tokens {
        for (method, path, body) in &cinder_endpoints {
            rows.push(Row {
                who,
                auth: auth.clone(),
                method,
                path: path.clone(),
                body: body.clone(),
                expect: Expect::Cinder(401, "unauthorized"),
            });
        }
    }
    for (method, path, body) in &cinder_endpoints {
        let auth = Auth::Header("x-auth-token", eve.clone());
        rows.push(Row {
            who: "eve",
            auth,
            method,
            path: path.clone(),
            body: body.clone(),
            expect: Expect::Cinder(403, "forbidden"),
        });
    }
    let action = format!("/v3/t1/groups/{cgroup}/action");
    for (method, path, body, expect) in [
        (
            "POST",
            action.clone(),
            Some(json!({"frobnicate": {}})),
            Expect::Cinder(400, "badRequest"),
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"enable_replication": {}, "delete": {}})),
            Expect::Cinder(400, "badRequest"),
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"failover_replication": {}})),
            Expect::Cinder(400, "badRequest"),
        ),
        (
            "POST",
            action.clone(),
            Some(json!({"enable_replication": {}})),
            Expect::Cinder(400, "badRequest"),
        ),
        (
            "POST",
            "/v3/t1/groups".to_string(),
            Some(json!({"group": {"group_type": gtype}})),
            Expect::Cinder(400, "badRequest"),
        ),
        (
            "GET",
            "/v3/t1/groups/no-such-group".to_string(),
            None,
            Expect::Cinder(404, "itemNotFound"),
        ),
    ] {
        rows.push(Row { who: "alice", auth: as_alice_cinder.clone(), method, path, body, expect });
    }

    // Uplynk: unsigned, wrongly signed, unknown owners and stale timestamps answer 401; a
    // group is invisible to an owner it does not admit; bad bodies answer 400.
    let fg1 = format!("{UPLYNK}/fg1");
    let uplynk_endpoints: Vec<(&'static str, String, Option<Value>)> = vec![
        ("GET", UPLYNK.to_string(), None),
        ("GET", fg1.clone(), None),
        ("PATCH", fg1.clone(), Some(json!({"mode": "flat"}))),
        ("PUT", format!("{fg1}/activate_slicer"), Some(json!({"slicer_id": "s2"}))),
        ("PUT", format!("{fg1}/set_no_slicer"), Some(json!({"no_slicer": true}))),
        ("PUT", format!("{fg1}/slicers"), Some(json!({"slicers": []}))),
        ("PUT", format!("{fg1}/channels"), Some(json!({"channels_ids_to_add": ["c"]}))),
        ("GET", format!("{fg1}/allowed-owners"), None),
        ("PUT", format!("{fg1}/allowed-owners"), Some(json!({"owners_to_add": ["x"]}))),
    ];
    let now = now_secs();
    let wrong_key = Signer { name: owner.name.clone(), key: "not-the-key".into(), ..owner.clone() };
    let unknown_owner = Signer { name: "nobody".into(), ..owner.clone() };
    for (method, path, body) in &uplynk_endpoints {
        for (who, signed) in [
            ("unsigned", path.clone()),
            ("wrong key", wrong_key.sign(path, now)),
            ("unknown owner", unknown_owner.sign(path, now)),
            ("stale", owner.sign(path, now - 400)),
        ] {
            rows.push(Row {
                who,
                auth: Auth::Signed,
                method,
                path: signed,
                body: body.clone(),
                expect: Expect::Uplynk(401),
            });
        }
    }
    for (method, path, body) in uplynk_endpoints.iter().skip(1).take(3) {
        let path = other_owner.sign(path, now);
        rows.push(Row {
            who: "owner2",
            auth: Auth::Signed,
            method,
            path,
            body: body.clone(),
            expect: Expect::Uplynk(404),
        });
    }
    for (method, path, body) in [
        ("PATCH", fg1.clone(), json!({})),
        ("PUT", format!("{fg1}/set_no_slicer"), json!({})),
        ("PUT", format!("{fg1}/activate_slicer"), json!({"slicer_id": "zz"})),
    ] {
        let path = owner.sign(&path, now);
        rows.push(Row {
            who: "owner1",
            auth: Auth::Signed,
            method,
            path,
            body: Some(body),
            expect: Expect::Uplynk(400),
        });
    }
    assert!(rows.len() >= 100, "only {} rows", rows.len());

    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        // Spread the rows over the nodes: followers forward, so each node's checks run.
        let node = 1 + (i as u64 % 3);
        let reply = send_row(&cluster, node, row).await;
        if let Err(e) = check(row, &reply) {
            failures.push(e);
        }
    }
    // Raw abuse that no JSON client sends: a body far over the limit, a non-JSON content type,
    // malformed JSON, oversized headers.
    let http = client_with_token(Some(&alice), Duration::from_secs(10));
    let url = format!("{}{T1}/groups", cluster.url(2));
    let raw: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "1 MiB body",
            http.post(&url).header("content-type", "application/json").body(vec![b' '; 1 << 20]),
            413,
        ),
        ("text/plain body", http.post(&url).header("content-type", "text/plain").body("{}"), 415),
        (
            "malformed JSON",
            http.post(&url).header("content-type", "application/json").body("{\"Id\": "),
            400,
        ),
        ("64 KiB header", http.get(&url).header("x-padding", "p".repeat(64 * 1024)), 431),
    ];
    for (what, request, expected) in raw {
        match request.send().await {
            Ok(reply) if reply.status().as_u16() == expected => {}
            Ok(reply) => {
                failures.push(format!("{what}: expected {expected}, got {}", reply.status()))
            }
            Err(e) => failures.push(format!("{what}: expected {expected}, got {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests were answered wrongly:\n{}",
        failures.len(),
        rows.len() + 4,
        failures.join("\n")
    );

    // Nothing changed, and every node agrees.
    // (Refused writes may still be committed as rejections, moving the applied index; the
    // state's fingerprint must not move.)
    let after = cluster.wait_converged(ELECTION).await;
    assert_eq!(after["digest"], before["digest"], "the state did not change");
    assert_eq!(after["groups"], before["groups"]);

    // A member still sees only what it may: bob's list has g1 but not g2.
    let r = call(&cluster, 3, Some(&bob), "GET", &format!("{T1}/groups"), None).await;
    let ids: Vec<_> = r.body.as_array().expect("a list").iter().map(|g| g["Id"].clone()).collect();
    assert_eq!(ids, vec![json!("g1")], "{r:?}");

    println!("{} hostile or unauthorized requests answered as expected", rows.len() + 4);

    // No secret in any log or in the status.
    let status = call(&cluster, 1, Some(ADMIN_TOKEN), "GET", "/cluster/status", None).await;
    for id in cluster.ids() {
        let log = cluster.log(id);
        for secret in [SECRET, &ADMIN_TOKEN[ADMIN_TOKEN.len() - 64..], &alice[alice.len() - 64..]] {
            assert!(!log.contains(secret), "node {id}'s log shows a secret");
            assert!(!status.body.to_string().contains(secret), "the status shows a secret");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_by_every_node_within_a_second() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(ELECTION).await;
    let token = identity(&cluster, "leaving", "t1").await;
    let list = format!("{T1}/groups");
    for id in cluster.ids() {
        // Each node has applied the identity before it answers (poll briefly).
        cluster
            .wait_until(ELECTION, "every node knows the identity", || async {
                (call(&cluster, id, Some(&token), "GET", &list, None).await.status == 200)
                    .then_some(())
            })
            .await;
    }
    let revoked = Instant::now();
    let r = send(cluster.http(), "DELETE", &format!("{}/identities/leaving", cluster.url(2)), None)
        .await
        .expect("answer");
    assert_eq!(r.status, 200, "{r:?}");
    for id in cluster.ids() {
        loop {
            let r = call(&cluster, id, Some(&token), "GET", &list, None).await;
            if r.status == 401 {
                break;
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "node {id} still accepts the token: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(revoked.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_over_its_rate_gets_429_and_others_are_unaffected() {
    let cluster =
        TestCluster::start_with(1, &[("rate_limit_per_second", "5"), ("rate_limit_burst", "5")]);
    cluster.wait_for_leader(ELECTION).await;
    let alice = identity(&cluster, "alice", "t1").await;
    let list = format!("{T1}/groups");
    let mut throttled = None;
    for _ in 0..30 {
        let r = call(&cluster, 1, Some(&alice), "GET", &list, None).await;
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = throttled.expect("a 429 within 30 quick requests");
    assert!(r.body["Reason"].as_str().is_some_and(|s| s.contains("faster")), "{r:?}");
    let bob = identity(&cluster, "bob", "t1").await;
    assert_eq!(call(&cluster, 1, Some(&bob), "GET", &list, None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conflicting_writes_to_one_group_resolve_cleanly() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(ELECTION).await;
    let alice = identity(&cluster, "alice", "t1").await;
    // Sixteen creates of one id with different configurations: one wins, the rest conflict.
    let creates = (0..16u64).map(|i| {
        let (cluster, alice) = (&cluster, &alice);
        async move {
            let body = json!({"Id": "contested", "FailoverTimeout": 10_000 + i});
            call(cluster, 1 + i % 3, Some(alice), "POST", &format!("{T1}/groups"), Some(body))
                .await
                .status
        }
    });
    let statuses = futures::future::join_all(creates).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 15, "{statuses:?}");
    // Sixteen replacements (v1-preview PUT): all succeed, in some order; the last one stands.
    let puts = (0..16u64).map(|i| {
        let (cluster, alice) = (&cluster, &alice);
        async move {
            let body = json!({"Id": "contested", "FailoverTimeout": 20_000 + i});
            let path = format!("{T1_PREVIEW}/groups/contested");
            call(cluster, 1 + i % 3, Some(alice), "PUT", &path, Some(body)).await.status
        }
    });
    let statuses = futures::future::join_all(puts).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    cluster.wait_converged(ELECTION).await;
    let r = call(&cluster, 2, Some(&alice), "GET", &format!("{T1}/groups/contested"), None).await;
    let timeout = r.body["FailoverTimeout"].as_str().expect("a timeout").to_string();
    assert!(timeout.starts_with("00:00:2"), "one of the PUTs stands: {timeout}");
    // The audit trail has every applied change, in the order applied, with who and from where.
    let r = send(
        cluster.http(),
        "GET",
        &format!("{}/audit?group=t1/ns/contested", cluster.url(3)),
        None,
    )
    .await
    .expect("answer");
    let entries = r.body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 17, "one create and sixteen updates: {r:?}");
    assert!(entries.iter().all(|e| e["actor"]["identity"] == "alice"));
    assert!(
        entries
            .iter()
            .all(|e| e["actor"]["from"].as_str().is_some_and(|f| f.starts_with("127.0.0.1:")))
    );
    assert_eq!(entries[0]["action"], "group_created");
    assert_eq!(entries[16]["action"], "group_updated");
    assert_eq!(entries[16]["group"], "t1/ns/contested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_and_forced_failovers_are_audited_with_who_did_them() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(ELECTION).await;
    let alice = identity(&cluster, "alice", "t1").await;
    let g = format!("{T1}/groups/g");
    let r = call(
        &cluster,
        1,
        Some(&alice),
        "POST",
        &format!("{T1}/groups"),
        Some(json!({"Id": "g", "FailoverTimeout": "00:00:05"})),
    )
    .await;
    assert_eq!(r.status, 201);
    for s in ["a", "b"] {
        call(
            &cluster,
            1,
            Some(&alice),
            "POST",
            &format!("{g}/clientsessions"),
            Some(json!({"Id": s})),
        )
        .await;
    }
    let r = call(
        &cluster,
        2,
        Some(&alice),
        "POST",
        &format!("{g}/clientsessions/a/heartbeat"),
        Some(json!({"FailoverScore": 100})),
    )
    .await;
    assert_eq!(r.body["Role"], 1, "the first member becomes Primary: {r:?}");
    let r = call(
        &cluster,
        2,
        Some(&alice),
        "POST",
        &format!("{g}/clientsessions/b/heartbeat"),
        Some(json!({"FailoverScore": 50})),
    )
    .await;
    assert_eq!(r.body["Role"], 0, "a healthy standby: {r:?}");
    let r = call(
        &cluster,
        3,
        Some(&alice),
        "POST",
        &format!("{g}/clientsessions/b/roleoverride"),
        Some(json!({"Value": 0})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = call(&cluster, 3, Some(ADMIN_TOKEN), "POST", "/groups/t1/ns/g/failover", None).await;
    assert_eq!(r.status, 202, "{r:?}");
    let r = call(&cluster, 1, Some(ADMIN_TOKEN), "GET", "/audit?group=t1/ns/g", None).await;
    let actions: Vec<(String, String)> = r.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["actor"]["identity"].as_str().unwrap_or("-").into(),
                e["action"].as_str().unwrap_or("-").into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("alice", "group_created"),
        ("alice", "session_created"),
        ("alice", "session_created"),
        ("alice", "override_set"),
        ("admin", "failover_forced"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(actions, expected, "{}", r.body);
    // Members may not read the audit trail.
    let r = call(&cluster, 1, Some(&alice), "GET", "/audit", None).await;
    assert_eq!(r.status, 403);
}

/// Starts a one-node cluster whose header deadline is 500 ms, sends `bytes` to it on a raw
/// connection, and asserts that the node closes that connection once the deadline has passed
/// (not before half of it, which an early close would be; within 3 s). Returns the cluster and
/// what the node sent before closing.
async fn send_raw_until_closed(bytes: &[u8]) -> (TestCluster, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let cluster = TestCluster::start_with(1, &[("header_read_timeout_ms", "500")]);
    cluster.wait_for_leader(ELECTION).await;
    let addr = cluster.node(1).api_addr.clone();
    let mut client = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    client.write_all(bytes).await.expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was held open for 5 s");
    let closed = started.elapsed();
    assert!(closed >= Duration::from_millis(250), "closed before the deadline, after {closed:?}");
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
    (cluster, buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_deadline() {
    // The request is answered and the connection kept open for the next one; left idle, it is
    // closed once the next request's headers are overdue (README, "Hostile input").
    let (_cluster, buf) = send_raw_until_closed(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_its_headers_too_slowly_is_cut_off() {
    // Headers begun and never finished: the node closes the connection after the deadline.
    let (cluster, _) = send_raw_until_closed(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    // A prompt client is served as usual. On a connection of its own: the shared client's
    // pooled connections sat idle past the same deadline, and the node may be closing one just
    // as it would be reused.
    let prompt = reqwest::Client::new();
    let r = send(&prompt, "GET", &format!("{}/healthz", cluster.url(1)), None).await;
    assert_eq!(r.expect("answer").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_a_request_is_closed_after_the_header_deadline() {
    let (_cluster, buf) = send_raw_until_closed(b"").await;
    assert!(buf.is_empty(), "{buf:?}");
}

/// The opening every HTTP/2 client sends: the preface and an empty SETTINGS frame.
const HTTP2_OPENING: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_with_no_request_open_is_closed_after_the_header_deadline() {
    let (_cluster, buf) = send_raw_until_closed(HTTP2_OPENING).await;
    // The node's SETTINGS, then a GOAWAY frame (type 7) as it closes.
    assert!(buf.windows(2).any(|w| w == [7, 0]), "{buf:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_header_block_never_finished_is_cut_off() {
    // A HEADERS frame (GET /) without END_HEADERS: the rest of the block never comes.
    let headers = [&[0u8, 0, 3, 1, 0x01, 0, 0, 0, 1][..], &[0x82, 0x86, 0x84]].concat();
    let (cluster, _) = send_raw_until_closed(&[HTTP2_OPENING, &headers].concat()).await;
    let prompt = reqwest::Client::new();
    let r = send(&prompt, "GET", &format!("{}/healthz", cluster.url(1)), None).await;
    assert_eq!(r.expect("answer").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_filling_a_raft_port_cannot_keep_the_leader_from_reaching_that_member() {
    use tokio::io::AsyncReadExt as _;
    // A follower's Raft port takes 8 connections. While it is down, a host that is not a
    // member starts taking every one it can, opening another as soon as the port closes one
    // for not proving the cluster secret, so that the port is always full of it.
    let mut cluster = TestCluster::start_partitionable_with(3, &[("max_connections", "8")]);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    cluster.kill(follower);
    let target: std::net::SocketAddr =
        cluster.node(follower).raft_addr.parse().expect("an address");
    let attack_until = Instant::now() + Duration::from_secs(60);
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        attackers.spawn(async move {
            while Instant::now() < attack_until {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket.bind("127.0.0.50:0".parse().expect("an address")).expect("bind");
                match socket.connect(target).await {
                    Ok(mut held) => {
                        let _ = held.read_to_end(&mut Vec::new()).await;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        });
    }
    // Something the follower must be sent once it is back.
    let body = json!({"Id": "while-it-was-down", "FailoverTimeout": "00:00:30"});
    let r = call(&cluster, leader, Some(ADMIN_TOKEN), "POST", &format!("{T1}/groups"), Some(body))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    cluster.restart(follower);
    // The leader's connections come from a member's address: they have slots of their own.
    cluster.wait_converged(Duration::from_secs(20)).await;
    attackers.abort_all();
}

/// A TCP connection to `addr` from the loopback address `source` (a client of its own, as far
/// as the node's per-address caps go).
async fn connect_from(source: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{source}:0").parse().expect("an address")).expect("bind");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_streams_keep_their_connections_place_in_the_per_address_cap() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let cluster = TestCluster::start_with(1, &[("max_connections_per_address", "2")]);
    cluster.wait_for_leader(ELECTION).await;
    let addr: std::net::SocketAddr = cluster.node(1).api_addr.parse().expect("an address");
    let connect_from = |source: &'static str| connect_from(source, addr);
    // Two heartbeat streams from one address: upgraded, they leave HTTP behind.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut request =
            format!("ws://{addr}/heartbeats").into_client_request().expect("a request");
        let bearer = format!("Bearer {ADMIN_TOKEN}").parse().expect("a header value");
        request.headers_mut().insert("authorization", bearer);
        let tcp = connect_from("127.0.0.5").await;
        let (stream, _) = tokio_tungstenite::client_async(request, tcp).await.expect("upgraded");
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third connection from that address is closed unanswered: the streams hold its places.
    let mut third = connect_from("127.0.0.5").await;
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut buf)).await;
    assert!(read.is_ok() && buf.is_empty(), "{read:?} {:?}", String::from_utf8_lossy(&buf));
    // A stream closed gives its place back.
    drop(streams.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = connect_from("127.0.0.5").await;
    again.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut answer = [0u8; 12];
    again.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection_slot() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let cluster = TestCluster::start_with(1, &[("max_connections_per_address", "3")]);
    cluster.wait_for_leader(ELECTION).await;
    let addr: std::net::SocketAddr = cluster.node(1).api_addr.parse().expect("an address");
    let connect_from = |source: &'static str| connect_from(source, addr);
    // Three held open from one address, each having been served once (not 127.0.0.1, where
    // the harness's own client keeps pooled connections).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.3").await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).await.expect("an answer");
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(c);
    }
    // The fourth from that address is closed at once, unanswered.
    let mut fourth = connect_from("127.0.0.3").await;
    let _ = fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), fourth.read_to_end(&mut buf)).await;
    assert!(read.is_ok() && buf.is_empty(), "{read:?} {buf:?}");
    // Another address is served meanwhile.
    let mut other = connect_from("127.0.0.4").await;
    other.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut answer = [0u8; 12];
    other.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    // Once one closes, the address has a slot again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from("127.0.0.3").await;
    again.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut answer = [0u8; 12];
    again.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_over_a_limit_is_refused_through_a_follower_and_other_tenants_are_served() {
    let cluster = TestCluster::start_with(3, &[("max_members_per_group", "2")]);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let hostile = identity(&cluster, "hostile", "t1").await;
    let neighbour = identity(&cluster, "neighbour", "t2").await;
    let groups =
        |tenant: &str| format!("/api/v1/tenants/{tenant}/namespaces/ns/clientfailover/groups");
    for (token, tenant) in [(&hostile, "t1"), (&neighbour, "t2")] {
        let body = json!({"Id": "g", "FailoverTimeout": "00:00:30"});
        let r = call(&cluster, follower, Some(token), "POST", &groups(tenant), Some(body)).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let join = |tenant: &str, token: &str, id: &str| {
        let (path, token, body) =
            (format!("{}/g/clientsessions", groups(tenant)), token.to_string(), json!({"Id": id}));
        let cluster = &cluster;
        async move { call(cluster, follower, Some(&token), "POST", &path, Some(body)).await }
    };
    for id in ["a", "b"] {
        assert_eq!(join("t1", &hostile, id).await.status, 201);
    }
    // Refused by the leader before anything is proposed, and answered through the follower in
    // AVEVA's error format, naming the setting.
    let r = join("t1", &hostile, "c").await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(
        r.body["Reason"].as_str().is_some_and(|m| m.contains("max_members_per_group")),
        "{r:?}"
    );
    // Another tenant is served meanwhile.
    for id in ["a", "b"] {
        assert_eq!(join("t2", &neighbour, id).await.status, 201);
    }
    let listed = call(
        &cluster,
        leader,
        Some(&hostile),
        "GET",
        &format!("{}/g/clientsessions", groups("t1")),
        None,
    )
    .await;
    assert!(!listed.body.to_string().contains("\"c\""), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_racing_each_other_cannot_pass_the_member_limit_together() {
    // Each would be judged against the same applied state; what the leader has admitted and
    // not yet applied counts too.
    let cluster = TestCluster::start_with(1, &[("max_members_per_group", "3")]);
    cluster.wait_for_leader(ELECTION).await;
    let groups =
        format!("{}/api/v1/tenants/t1/namespaces/ns/clientfailover/groups", cluster.url(1));
    let body = json!({"Id": "g", "FailoverTimeout": "00:00:30"});
    let r = send(cluster.http(), "POST", &groups, Some(body)).await.expect("answer");
    assert_eq!(r.status, 201, "{r:?}");
    let joins = (0..40).map(|i| {
        let (http, url) = (cluster.http().clone(), format!("{groups}/g/clientsessions"));
        async move { send(&http, "POST", &url, Some(json!({"Id": format!("s{i}")}))).await }
    });
    let answers = futures::future::join_all(joins).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.as_ref().map_or(0, |r| r.status)).collect();
    let joined = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(joined, 3, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 413), "{statuses:?}");
    let listed = send(cluster.http(), "GET", &format!("{groups}/g/clientsessions"), None)
        .await
        .expect("answer");
    let count = listed
        .body
        .as_array()
        .map_or_else(|| listed.body["Items"].as_array().map_or(0, Vec::len), Vec::len);
    assert_eq!(count, 3, "{listed:?}");
}
