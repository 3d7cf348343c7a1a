//! # baton-e2e: a test harness for clusters of real `baton` processes
//!
//! [`TestCluster`] writes a config file per node (free loopback ports, a data directory in a
//! temporary directory), starts the `baton` binary for each, and offers the operations the
//! end-to-end tests need: [`TestCluster::wait_for_leader`], [`TestCluster::kill`] (SIGKILL by
//! PID), [`TestCluster::restart`], and small HTTP helpers. Every wait is bounded; every process
//! is killed when the cluster is dropped. Nodes' logs are kept in the temporary directory and
//! printed when a wait fails.

pub mod adapter;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The cluster secret every test cluster uses.
pub const SECRET: &str = "e2e-cluster-secret-0123456789";
/// The bootstrap administrator of every test cluster.
pub const ADMIN_TOKEN: &str =
    "baton_admin.0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// An HTTP client that sends the administrator's token with every request, follows no
/// redirects, and gives up after `timeout`.
pub fn admin_client(timeout: Duration) -> reqwest::Client {
    client_with_token(Some(ADMIN_TOKEN), timeout)
}

/// An HTTP client that sends `token` (if any) as its bearer token.
pub fn client_with_token(token: Option<&str>, timeout: Duration) -> reqwest::Client {
    client_builder(token, timeout).build().expect("http client")
}

/// The builder behind [`client_with_token`], for clients that need more (a TLS root).
pub fn client_builder(token: Option<&str>, timeout: Duration) -> reqwest::ClientBuilder {
    baton_net::tls::install_default_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("a token is a valid header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
}

/// TLS material for a test cluster, made with the `openssl` command line exactly as the README
/// shows: a CA, and for each node a certificate naming `localhost`, 127.0.0.1 and the node
/// (`node-<id>.baton`, which peers check on the Raft port).
pub struct TestTls {
    /// The CA certificate (PEM file).
    pub ca: PathBuf,
    ca_key: PathBuf,
    dir: PathBuf,
    name: String,
}

/// A certificate and its key (PEM files).
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl Issued {
    /// Both, as a client identity for reqwest.
    pub fn identity(&self) -> reqwest::Identity {
        let mut pem = std::fs::read(&self.cert).expect("cert");
        pem.extend(std::fs::read(&self.key).expect("key"));
        reqwest::Identity::from_pem(&pem).expect("a PEM identity")
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl TestTls {
    /// Makes a CA named `name` in `dir`.
    pub fn make(dir: &Path, name: &str) -> Self {
        let tls = Self {
            ca: dir.join(format!("{name}-ca.pem")),
            ca_key: dir.join(format!("{name}-ca.key")),
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        let (ca, ca_key) = (tls.ca.display().to_string(), tls.ca_key.display().to_string());
        let subject = format!("/CN={name}-ca");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ]);
        tls
    }

    /// The certificate of node `id` (made on first use): `localhost`, 127.0.0.1 and
    /// `node-<id>.baton`.
    pub fn node(&self, id: u64) -> Issued {
        let issued = self.paths(&format!("node{id}"));
        if !issued.cert.exists() {
            let names = format!("DNS:localhost,IP:127.0.0.1,DNS:node-{id}.baton");
            self.issue(&format!("node{id}"), &names);
        }
        issued
    }

    /// A certificate from this CA with exactly the subject alternative names `names`
    /// (openssl's syntax), saved as `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &str) -> Issued {
        let issued = self.paths(file);
        let (cert, key) = (issued.cert.display().to_string(), issued.key.display().to_string());
        let csr = format!("{cert}.csr");
        let ext = format!("{cert}.ext");
        std::fs::write(&ext, format!("subjectAltName={names}\n")).expect("write ext");
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={file}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        let (ca, ca_key) = (self.ca.display().to_string(), self.ca_key.display().to_string());
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        issued
    }

    fn paths(&self, file: &str) -> Issued {
        let path = |ext: &str| self.dir.join(format!("{}-{file}.{ext}", self.name));
        Issued { cert: path("pem"), key: path("key") }
    }

    /// A client trusting this CA, sending `token`.
    pub fn client(&self, token: Option<&str>) -> reqwest::Client {
        let ca = std::fs::read(&self.ca).expect("read CA");
        let ca = reqwest::Certificate::from_pem(&ca).expect("a PEM certificate");
        client_builder(token, Duration::from_secs(10))
            .add_root_certificate(ca)
            .build()
            .expect("https client")
    }
}

/// The `baton` binary, built once per test process so tests never run a stale binary; or, when
/// `BATON_BIN` names one, that binary as it is (for the bench's A/B runs of two builds).
pub fn baton_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("BATON_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        // Tests run from target/<profile>/deps, programs (chaos) from target/<profile>.
        let dir = exe.parent().expect("the executable is in a directory");
        let profile_dir =
            if dir.ends_with("deps") { dir.parent().expect("deps has a parent") } else { dir };
        let release = profile_dir.ends_with("release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Build exactly what built this executable, so the features of every dependency
        // match and nothing (RocksDB above all) is compiled a second time: in debug what
        // `cargo test --workspace` builds (`build_all` in scripts/env.sh), in release the
        // workspace's programs only (`build_programs`). Into the target directory this
        // executable was built in, whatever CARGO_TARGET_DIR the caller's shell has (the bench
        // run by hand would otherwise build into ./target).
        let target_dir = profile_dir.parent().expect("the profile directory has a parent");
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--workspace", "--target-dir"]);
        build.arg(target_dir);
        if release {
            build.args(["--bins", "--release"]);
        } else {
            build.arg("--all-targets");
        }
        let status = build.status().expect("running cargo build for the baton binary");
        assert!(status.success(), "building the baton binary failed");
        let bin = profile_dir.join("baton");
        assert!(bin.exists(), "{} is missing after the build", bin.display());
        bin
    })
}

fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// Test ports come from below the kernel's ephemeral range (32768 and up by default), so an
/// outbound connection's source port can never take a port between our check and the node's
/// bind. Each test process starts at its own offset; a counter keeps clusters of one process
/// apart; a bind checks that nothing else holds the port.
const TEST_PORTS: std::ops::Range<u32> = 20_000..32_000;

fn free_port_on(ip: &str) -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let offset = std::process::id() % 50 * 200;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let port =
            u16::try_from(TEST_PORTS.start + (offset + n) % span).expect("test ports fit in u16");
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free test port on {ip} in {TEST_PORTS:?}");
}

/// A loopback address prefix no other cluster of this process or another test process uses:
/// `127.A.B.` with A from the process id and B from a counter.
fn unique_loopback_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let a = 100 + std::process::id() % 100;
    let b = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 250 + 1;
    format!("127.{a}.{b}.")
}

/// One node of a test cluster.
pub struct TestNode {
    /// Its id.
    pub id: u64,
    /// `127.0.0.1:port` of its public API.
    pub api_addr: String,
    /// `127.0.0.1:port` of its Raft listener.
    pub raft_addr: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A cluster of real `baton` processes.
pub struct TestCluster {
    dir: TempDir,
    nodes: BTreeMap<u64, TestNode>,
    http: reqwest::Client,
    scheme: &'static str,
    settings: Vec<(String, String)>,
    /// iptables rules in force (arguments after `-I`/`-D`), removed on heal and on drop.
    partitions: BTreeMap<u64, Vec<Vec<String>>>,
}

impl TestCluster {
    /// Starts `n` nodes that form one cluster.
    pub fn start(n: u64) -> Self {
        Self::start_with(n, &[])
    }

    /// Starts `n` nodes with extra config keys (TOML values, e.g. `("snapshot_logs_since_last", "20")`).
    pub fn start_with(n: u64, settings: &[(&str, &str)]) -> Self {
        Self::start_on(n, settings, None)
    }

    /// Starts `n` nodes whose Raft traffic uses one loopback address per node (`127.A.B.id`,
    /// also the source of their outbound Raft connections), so that [`TestCluster::partition`]
    /// can cut one node off from its peers while clients still reach its public API on
    /// 127.0.0.1.
    pub fn start_partitionable(n: u64) -> Self {
        Self::start_on(n, &[], Some(unique_loopback_prefix()))
    }

    /// [`TestCluster::start_partitionable`] with extra config keys.
    pub fn start_partitionable_with(n: u64, settings: &[(&str, &str)]) -> Self {
        Self::start_on(n, settings, Some(unique_loopback_prefix()))
    }

    /// Starts `n` nodes with TLS on the public API and mutual TLS on the Raft port, all with
    /// certificates from one fresh CA; the cluster's client trusts that CA.
    pub fn start_tls(n: u64) -> (Self, TestTls) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = TestTls::make(dir.path(), "cluster");
        for id in 1..=n {
            tls.node(id);
        }
        let quoted = |p: &Path| format!("{:?}", p.display().to_string());
        // Each node its own certificate: `{id}` stands for the node's id (see `add_node`).
        let node = tls.paths("node{id}");
        let settings = vec![
            ("tls_cert_file".to_string(), quoted(&node.cert)),
            ("tls_key_file".to_string(), quoted(&node.key)),
            ("tls_ca_file".to_string(), quoted(&tls.ca)),
            ("api_tls".to_string(), "true".to_string()),
            ("raft_tls".to_string(), "true".to_string()),
        ];
        let cluster =
            Self::start_in(dir, n, settings, None, "https", tls.client(Some(ADMIN_TOKEN)));
        (cluster, tls)
    }

    fn start_on(n: u64, settings: &[(&str, &str)], raft_prefix: Option<String>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let http = admin_client(Duration::from_secs(10));
        Self::start_in(dir, n, settings, raft_prefix, "http", http)
    }

    fn start_in(
        dir: TempDir,
        n: u64,
        settings: Vec<(String, String)>,
        raft_prefix: Option<String>,
        scheme: &'static str,
        http: reqwest::Client,
    ) -> Self {
        let mut cluster = Self {
            dir,
            nodes: BTreeMap::new(),
            http,
            scheme,
            settings,
            partitions: BTreeMap::new(),
        };
        let raft_ip =
            |id: u64| raft_prefix.as_ref().map_or("127.0.0.1".to_string(), |p| format!("{p}{id}"));
        let members: Vec<(u64, String, String)> = (1..=n)
            .map(|id| {
                let ip = raft_ip(id);
                (id, format!("{ip}:{}", free_port_on(&ip)), format!("127.0.0.1:{}", free_port()))
            })
            .collect();
        let initial = members
            .iter()
            .map(|(id, raft, api)| {
                format!("{{ id = {id}, raft_addr = \"{raft}\", api_addr = \"{api}\" }}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        for (id, raft, api) in &members {
            cluster.add_node(*id, raft, api, &format!("[{initial}]"));
        }
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster
    }

    /// Writes the config of a node and registers it (not started).
    fn add_node(&mut self, id: u64, raft_addr: &str, api_addr: &str, initial_members: &str) {
        let data_dir = self.dir.path().join(format!("node{id}"));
        let config = self.dir.path().join(format!("node{id}.toml"));
        let mut text = format!(
            "id = {id}\ncluster_name = \"e2e\"\ncluster_secret = \"{SECRET}\"\nadmin_token = \"{ADMIN_TOKEN}\"\napi_addr = \"{api_addr}\"\n\
             insecure_transport = true\nraft_addr = \"{raft_addr}\"\ndata_dir = \"{}\"\ninitial_members = {initial_members}\n",
            data_dir.display()
        );
        for (k, v) in &self.settings {
            text.push_str(&format!("{k} = {}\n", v.replace("{id}", &id.to_string())));
        }
        std::fs::write(&config, text).expect("write node config");
        let log = self.dir.path().join(format!("node{id}.log"));
        self.nodes.insert(
            id,
            TestNode {
                id,
                api_addr: api_addr.into(),
                raft_addr: raft_addr.into(),
                config,
                log,
                child: None,
            },
        );
    }

    /// Registers and starts a node that is not in the initial membership (to be added as a
    /// learner). Returns its id.
    pub fn start_joiner(&mut self, id: u64) -> u64 {
        let (raft, api) =
            (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
        self.add_node(id, &raft, &api, "[]");
        self.spawn(id);
        id
    }

    fn spawn(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.child.is_none(), "node {id} is already running");
        let log = File::options().create(true).append(true).open(&node.log).expect("open node log");
        let mut cmd = Command::new(baton_bin());
        cmd.args(["serve", "--config"]).arg(&node.config);
        // The node must see only its config file, not the caller's BATON_* variables.
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("BATON_")) {
            cmd.env_remove(key);
        }
        // Like the `FROM scratch` image: no system CA certificates to find.
        let no_certs = self.dir.path().join("no-system-certs");
        std::fs::create_dir_all(&no_certs).expect("create an empty certificate directory");
        cmd.env("SSL_CERT_FILE", no_certs.join("none.pem")).env("SSL_CERT_DIR", &no_certs);
        let child = cmd
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn baton");
        node.child = Some(child);
    }

    /// Ids of every node.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Ids of the nodes currently running.
    pub fn live(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> &TestNode {
        &self.nodes[&id]
    }

    /// `http://api_addr` (or `https://` for a TLS cluster) of a node.
    pub fn url(&self, id: u64) -> String {
        format!("{}://{}", self.scheme, self.nodes[&id].api_addr)
    }

    /// The shared HTTP client (no redirects followed, 10 s timeout).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Kills a node with SIGKILL (by PID) and reaps it.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let mut child = node.child.take().unwrap_or_else(|| panic!("node {id} is not running"));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Stops a node gracefully with SIGTERM and waits (bounded) for it to exit.
    pub fn terminate(&mut self, id: u64, within: Duration) {
        self.signal(id, "TERM");
        let status = self.wait_exit(id, within);
        assert!(status.success(), "node {id} exited with {status} after SIGTERM\n{}", self.log(id));
    }

    /// Cuts a node's Raft traffic off from its peers (both directions) with iptables; its
    /// public API stays reachable. Needs root and a cluster from `start_partitionable`.
    pub fn partition(&mut self, id: u64) {
        let ip = self.nodes[&id].raft_addr.rsplit_once(':').expect("host:port").0.to_string();
        assert_ne!(ip, "127.0.0.1", "partition needs a cluster from start_partitionable");
        let tag = format!("baton-e2e-{}", std::process::id());
        let rules: Vec<Vec<String>> = ["-s", "-d"]
            .iter()
            .map(|flag| {
                ["INPUT", flag, ip.as_str(), "-m", "comment", "--comment", &tag, "-j", "DROP"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .collect();
        for rule in &rules {
            let status =
                Command::new("iptables").arg("-I").args(rule).status().expect("run iptables");
            assert!(
                status.success(),
                "iptables -I {} failed (root and iptables are needed)",
                rule.join(" ")
            );
        }
        self.partitions.insert(id, rules);
    }

    /// Removes the rules of [`TestCluster::partition`].
    pub fn heal(&mut self, id: u64) {
        for rule in self.partitions.remove(&id).unwrap_or_default() {
            let _ = Command::new("iptables").arg("-D").args(&rule).status();
        }
    }

    /// Freezes a node with SIGSTOP (by PID): it keeps its sockets but does nothing.
    pub fn pause(&self, id: u64) {
        self.signal(id, "STOP");
    }

    /// Thaws a node frozen by [`TestCluster::pause`] with SIGCONT.
    pub fn resume(&self, id: u64) {
        self.signal(id, "CONT");
    }

    fn signal(&self, id: u64, signal: &str) {
        let pid = self.nodes[&id]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Starts a killed node again on the same data directory.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
    }

    /// The process id of a running node.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(Child::id)
    }

    /// Waits for a killed-or-exited node's exit status (for nodes expected to refuse to start).
    pub fn wait_exit(&mut self, id: u64, within: Duration) -> std::process::ExitStatus {
        let node = self.nodes.get_mut(&id).expect("known node");
        let child = node.child.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                node.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "node {id} did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's log so far.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    /// The node's data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// Writes `text` as the node's config file (to test refusals).
    pub fn rewrite_config(&self, id: u64, f: impl FnOnce(String) -> String) {
        let path = &self.nodes[&id].config;
        let text = std::fs::read_to_string(path).expect("read config");
        std::fs::write(path, f(text)).expect("write config");
    }

    fn dump_logs(&self) -> String {
        self.ids()
            .iter()
            .map(|id| format!("--- node {id} ---\n{}", self.log(*id)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// GET a node's JSON endpoint; `None` if it does not answer.
    pub async fn get_json(&self, id: u64, path: &str) -> Option<(u16, Value)> {
        let resp = self.http.get(format!("{}{path}", self.url(id))).send().await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.text().await.ok()?;
        Some((status, serde_json::from_str(&body).unwrap_or(Value::String(body))))
    }

    /// `/cluster/status` of a node, if it answers.
    pub async fn status(&self, id: u64) -> Option<Value> {
        self.get_json(id, "/cluster/status").await.map(|(_, v)| v)
    }

    /// Waits until every running node reports the same leader, which is itself running, and
    /// returns it.
    pub async fn wait_for_leader(&self, within: Duration) -> u64 {
        self.wait_until(within, "every live node agrees on a live leader", || async {
            let mut leader = None;
            for id in self.live() {
                let l = self.status(id).await?.get("leader")?.as_u64()?;
                if leader.is_some_and(|x| x != l) || !self.live().contains(&l) {
                    return None;
                }
                leader = Some(l);
            }
            leader
        })
        .await
    }

    /// Polls `check` every 50 ms until it returns `Some`, for at most `within`; panics with the
    /// nodes' logs otherwise.
    pub async fn wait_until<T, F, Fut>(&self, within: Duration, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out after {within:?} waiting until {what}\n{}", self.dump_logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has applied the same state (same applied index and
    /// digest) and returns that digest.
    pub async fn wait_converged(&self, within: Duration) -> Value {
        self.wait_until(within, "every live node has the same applied state", || async {
            let mut first: Option<Value> = None;
            for id in self.live() {
                let (_, d) = self.get_json(id, "/cluster/digest").await?;
                match &first {
                    None => first = Some(d),
                    Some(f) if f == &d => {}
                    Some(_) => return None,
                }
            }
            first
        })
        .await
    }
}

/// How much of each node's log a failing test shows.
const LOG_LINES_ON_FAILURE: usize = 40;

impl Drop for TestCluster {
    fn drop(&mut self) {
        // A test that fails outside `wait_until` would otherwise take the nodes' logs, and
        // the story of its failure, with it when the directory goes.
        if std::thread::panicking() {
            for id in self.ids() {
                let log = self.log(id);
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_LINES_ON_FAILURE)..];
                eprintln!("--- node {id}, the last {} lines ---\n{}", tail.len(), tail.join("\n"));
            }
        }
        for id in self.partitions.keys().copied().collect::<Vec<_>>() {
            self.heal(id);
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A JSON HTTP exchange: status, `x-baton-served-by`, `location`, body.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// The node that served the request.
    pub served_by: Option<u64>,
    /// The `Location` header, for redirects.
    pub location: Option<String>,
    /// The body, parsed as JSON when it is JSON.
    pub body: Value,
}

/// Sends `method url` with an optional JSON body.
pub async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Reply, reqwest::Error> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let header =
        |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let served_by = header("x-baton-served-by").and_then(|v| v.parse().ok());
    let location = header("location");
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply { status, served_by, location, body })
}

impl TestCluster {
    /// Creates an AVEVA v1 failover group `group` (under the collection path `groups`, e.g.
    /// `/api/v1/tenants/t/namespaces/n/clientfailover/groups`) with `sessions`, through node
    /// `via`, asserting each is created (201). Returns the group's path.
    pub async fn create_failover_group(
        &self,
        via: u64,
        groups: &str,
        group: &str,
        failover_timeout: Duration,
        sessions: &[&str],
    ) -> String {
        let base = self.url(via);
        let body = serde_json::json!({"Id": group, "FailoverTimeout": failover_timeout.as_millis() as u64});
        let r =
            send(&self.http, "POST", &format!("{base}{groups}"), Some(body)).await.expect("answer");
        assert_eq!(r.status, 201, "creating group {group}: {r:?}");
        let path = format!("{groups}/{group}");
        for s in sessions {
            let body = serde_json::json!({"Id": s});
            let r = send(&self.http, "POST", &format!("{base}{path}/clientsessions"), Some(body))
                .await
                .expect("answer");
            assert_eq!(r.status, 201, "creating session {s} in {group}: {r:?}");
        }
        path
    }
}

/// The AVEVA groups URL of a scope on a node.
pub fn groups_url(base: &str, version: &str) -> String {
    format!("{base}/api/{version}/tenants/e2e/namespaces/ns/clientfailover/groups")
}
