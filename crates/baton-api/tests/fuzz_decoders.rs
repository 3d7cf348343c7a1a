//! A short fuzz pass over the public request decoders: the seed corpus in `tests/corpus/`,
//! mutated at random (byte flips, insertions, truncations, splices), and arbitrary bytes, sent
//! as bodies to every AVEVA endpoint that takes one, plus arbitrary paths and query strings.
//! No input may panic the node or answer 5xx, and refused input changes nothing.
//! Proptest shrinks a failure to a small input and records its seed under
//! `proptest-regressions/`, which belongs in the repo.

mod support;

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use support::{FakeCoordinator, ROOT_TOKEN, call, call_with};

const GROUP: &str = "/api/v1/tenants/t/namespaces/n/clientfailover/groups";

fn corpus() -> &'static Vec<Vec<u8>> {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
        let mut files: Vec<_> = std::fs::read_dir(dir).expect("the corpus").flatten().collect();
        files.sort_by_key(|f| f.path());
        files.iter().map(|f| std::fs::read(f.path()).expect("a corpus file")).collect()
    })
}

/// One mutation of a seed.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Splice(usize, usize),
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let mutation = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    Just(b'{'),
                    Just(b'['),
                    Just(b'"'),
                    Just(b'\\'),
                    Just(b':'),
                    Just(b','),
                    any::<u8>()
                ],
                1..16
            )
        )
            .prop_map(|(i, bytes)| Mutation::Insert(i, bytes)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
    ];
    (any::<prop::sample::Index>(), prop::collection::vec(mutation, 1..6)).prop_map(
        |(seed, mutations)| {
            let seeds = corpus();
            let mut bytes = seeds[seed.index(seeds.len())].clone();
            for m in mutations {
                let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
                match m {
                    Mutation::Flip(i, b) if !bytes.is_empty() => {
                        let i = i % bytes.len();
                        bytes[i] ^= b;
                    }
                    Mutation::Flip(..) => {}
                    Mutation::Insert(i, new) => {
                        let i = at(i, bytes.len());
                        bytes.splice(i..i, new);
                    }
                    Mutation::Truncate(i) => bytes.truncate(at(i, bytes.len())),
                    Mutation::Splice(a, b) => {
                        let other = &seeds[b % seeds.len()];
                        let i = at(a, bytes.len());
                        bytes.truncate(i);
                        bytes.extend_from_slice(&other[at(b, other.len())..]);
                    }
                }
            }
            bytes
        },
    )
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => mutated(), 1 => prop::collection::vec(any::<u8>(), 0..256)]
}

/// A node with a group `g` and a session `s`, shared by every case (refused input must not
/// change it; accepted input may add to it, which is fine).
fn app() -> &'static (Arc<FakeCoordinator>, baton_api::App, tokio::runtime::Runtime) {
    static APP: OnceLock<(Arc<FakeCoordinator>, baton_api::App, tokio::runtime::Runtime)> =
        OnceLock::new();
    APP.get_or_init(fresh_app)
}

/// A node of its own, for a test that must not see what the shared one's cases added.
fn fresh_app() -> (Arc<FakeCoordinator>, baton_api::App, tokio::runtime::Runtime) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let fake = Arc::new(FakeCoordinator::leading());
    let app = support::app_for(fake.clone());
    runtime.block_on(async {
        call(&app, "POST", GROUP, Some(r#"{"Id":"g","FailoverTimeout":"00:00:30"}"#)).await;
        call(&app, "POST", &format!("{GROUP}/g/clientsessions"), Some(r#"{"Id":"s"}"#)).await;
    });
    (fake, app, runtime)
}

fn send(method: &str, uri: &str, bytes: &[u8]) -> u16 {
    let (_, app, runtime) = app();
    let text = String::from_utf8_lossy(bytes).to_string();
    runtime
        .block_on(call_with(app, method, uri, Some(&text), Some("application/json")))
        .status
        .as_u16()
}

/// Sends with the dialects' own credential headers (HCX, Cinder) as the administrator.
fn send_dialect(method: &str, uri: &str, bytes: &[u8]) -> u16 {
    let (_, app, runtime) = app();
    let text = String::from_utf8_lossy(bytes).to_string();
    let headers = [
        ("x-hm-authorization", ROOT_TOKEN),
        ("x-auth-token", ROOT_TOKEN),
        ("openstack-api-version", "volume 3.38"),
    ];
    runtime
        .block_on(support::send(app, method, uri, &headers, Some(&text), Some("application/json")))
        .status
        .as_u16()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn mutated_bodies_never_panic_or_fail_inside(bytes in body(), target in 0usize..6) {
        let (method, uri) = [
            ("POST", GROUP.to_string()),
            ("PUT", "/api/v1-preview/tenants/t/namespaces/n/clientfailover/groups/g".to_string()),
            ("POST", format!("{GROUP}/g/clientsessions")),
            ("POST", format!("{GROUP}/g/clientsessions/s/heartbeat")),
            ("POST", "/api/v1-preview/tenants/t/namespaces/n/clientfailover/groups/g/clientsessions/s/heartbeat".to_string()),
            ("POST", format!("{GROUP}/g/clientsessions/s/roleoverride")),
        ][target].clone();
        let status = send(method, &uri, &bytes);
        prop_assert!(status < 500, "{method} {uri} answered {status} to {:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_dialect_bodies_never_panic_or_fail_inside(bytes in body(), target in 0usize..7) {
        let (method, uri) = [
            ("POST", "/hybridity/api/interconnect/appliances/ha/groups"),
            ("POST", "/hybridity/api/sessions"),
            ("POST", "/v3/default/groups"),
            ("POST", "/v3/default/group_types"),
            ("POST", "/v3/default/groups/g/action"),
            ("POST", "/identity/v3/auth/tokens"),
            ("POST", "/identities"),
        ][target];
        let status = send_dialect(method, uri, &bytes);
        prop_assert!(status < 500, "{method} {uri} answered {status} to {:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_uplynk_signatures_never_panic(msg in "[A-Za-z0-9+/=%]{0,200}", sig in "[0-9a-f]{0,70}") {
        let status = send("GET", &format!("/api/v4/failover-groups?msg={msg}&sig={sig}"), b"");
        prop_assert_eq!(status, 401);
    }

    #[test]
    fn arbitrary_paths_and_queries_never_panic(
        segments in prop::collection::vec("[a-zA-Z0-9%._~!$&'()*+,;=:@-]{0,12}", 0..14),
        query in "[a-zA-Z0-9%=&?_-]{0,24}",
    ) {
        let uri = format!("/api/{}?{query}", segments.join("/"));
        if uri.parse::<axum::http::Uri>().is_ok() {
            let status = send("GET", &uri, b"");
            prop_assert!(status < 500, "GET {uri} answered {status}");
        }
    }
}

#[test]
fn the_corpus_itself_is_accepted() {
    // Each seed is a valid request somewhere, so the mutations start from deep inside the
    // decoders rather than at their first check.
    // A node of its own: the fuzz cases running beside this test may already have created
    // the seed's group on the shared one, which would answer 409.
    assert_eq!(corpus().len(), 11);
    let (_, app, runtime) = fresh_app();
    for (uri, file) in [
        (GROUP.to_string(), "group.json"),
        (format!("{GROUP}/g/clientsessions/s/roleoverride"), "roleoverride.json"),
    ] {
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(file),
        )
        .expect("seed");
        let text = String::from_utf8_lossy(&bytes).to_string();
        let status = runtime
            .block_on(call_with(&app, "POST", &uri, Some(&text), Some("application/json")))
            .status;
        assert!(status.as_u16() < 300, "{file}: {status}");
    }
}
