//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `scripts/setup.sh`, driven over its DevTools protocol) keeps a follower's `/dashboard` open
//! while an operator forces a failover, and the open page, updated from the event stream,
//! shows it. A screenshot is saved beside the build (`$CARGO_TARGET_DIR/dashboard.png`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use baton_e2e::{ADMIN_TOKEN, TestCluster, admin_client, send};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_tungstenite::tungstenite::Message;

const ELECTION: Duration = Duration::from_secs(10);
const GROUPS: &str = "/api/v1/tenants/e2e/namespaces/plant/clientfailover/groups";

fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out =
                Command::new("sh").args(["-c", &format!("command -v {name}")]).output().ok()?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!path.is_empty()).then(|| PathBuf::from(path))
        })
        .expect("headless Chromium is needed: run scripts/setup.sh (it installs Debian's chromium)")
}

/// Headless Chromium driven over the DevTools protocol: it keeps the page open, live, while
/// the test reads its DOM.
struct Browser {
    child: tokio::process::Child,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = tokio::process::Command::new(chromium())
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            .args(["--no-first-run", "--hide-scrollbars", "--window-size=1280,1000"])
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = stderr.next_line().await {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    return rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("chromium names its DevTools port");
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let http = admin_client(Duration::from_secs(10));
        let list = send(&http, "GET", &format!("http://127.0.0.1:{port}/json/list"), None)
            .await
            .expect("DevTools answers");
        let targets = list.body;
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == json!("page")))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("the page's DevTools socket")
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(page).await.expect("DevTools connects");
        Self { child, ws, next_id: 0, _profile: profile }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(request)).await.expect("sent");
        while let Some(message) = self.ws.next().await {
            let Ok(Message::Text(text)) = message else { continue };
            let reply: Value = serde_json::from_str(&text).expect("JSON");
            if reply["id"] == json!(id) {
                return reply["result"].clone();
            }
        }
        panic!("DevTools closed");
    }

    async fn dom(&mut self) -> String {
        let params =
            json!({"expression": "document.documentElement.outerHTML", "returnByValue": true});
        let result = self.call("Runtime.evaluate", params).await;
        result["result"]["value"].as_str().unwrap_or_default().to_string()
    }

    /// Waits until the DOM satisfies `check`, reading it every 200 ms.
    async fn wait_for(&mut self, within: Duration, what: &str, check: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let dom = self.dom().await;
            if check(&dom) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{what}:\n{dom}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64")
    }

    async fn close(mut self) {
        let _ = self.child.kill().await;
    }
}

fn heartbeats(base: String, session: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = admin_client(Duration::from_secs(5));
        let url = format!("{base}{GROUPS}/line1/clientsessions/{session}/heartbeat");
        for _ in 0..200 {
            let _ = send(&http, "POST", &url, Some(json!({"FailoverStatus": 100}))).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_failover_as_it_happens() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    cluster
        .create_failover_group(leader, GROUPS, "line1", Duration::from_secs(2), &["a", "b"])
        .await;
    let a = heartbeats(cluster.url(leader), "a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = heartbeats(cluster.url(leader), "b");

    // The page is open on a follower before anything moves, and shows a holding the baton.
    let page = format!("{}/dashboard#token={ADMIN_TOKEN}", cluster.url(follower));
    let mut browser = Browser::open(&page).await;
    browser
        .wait_for(Duration::from_secs(20), "the group with a holding the baton", |dom| {
            dom.contains("data-group=\"e2e/plant/line1\"") && dom.contains("baton: a (Primary)")
        })
        .await;

    // An operator forces a failover; the open page shows it without being reloaded.
    let http = admin_client(Duration::from_secs(10));
    let url = format!("{}/groups/e2e/plant/line1/failover", cluster.url(leader));
    let forced = send(&http, "POST", &url, None).await.expect("failover");
    assert_eq!(forced.status, 202, "{forced:?}");
    browser
        .wait_for(Duration::from_secs(20), "the forced failover on the page", |dom| {
            dom.contains("data-kind=\"handover_started\"")
                && dom.contains("b→PendingPrimary")
                && dom.contains("Forced")
                && dom.contains("baton: b (")
        })
        .await;
    let dom = browser.dom().await;
    assert!(dom.contains("class=\"leader\""), "the cluster's leader is shown:\n{dom}");

    // A screenshot of the page as it stands, for people.
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| {
            baton_e2e::baton_bin()
                .parent()
                .and_then(|p| p.parent())
                .map(PathBuf::from)
                .unwrap_or_default()
        },
        PathBuf::from,
    );
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(target.join("dashboard.png"), &png).expect("the screenshot is saved");
    browser.close().await;
    a.abort();
    b.abort();
}
