//! The node's configuration: defaults, then the TOML file, then `BATON_*` environment
//! variables, then command-line flags; then [`Config::validate`]. Unknown keys are refused at
//! every layer with a message naming the key.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override configuration keys (`BATON_API_ADDR` sets
/// `api_addr`).
pub const ENV_PREFIX: &str = "BATON_";
/// Shortest accepted cluster secret.
pub const MIN_SECRET_LEN: usize = 16;

/// One member of the cluster the node forms on first start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialMember {
    /// The member's node id.
    pub id: u64,
    /// Its internal Raft address (`host:port`).
    pub raft_addr: String,
    /// Its public API address (`host:port`).
    pub api_addr: String,
}

/// Keys whose values are secrets: never shown by `Debug`, logs or errors.
pub const SECRET_KEYS: [&str; 5] = [
    "cluster_secret",
    "previous_cluster_secrets",
    "admin_token",
    "sealing_secret",
    "previous_sealing_secrets",
];

/// The largest `max_clock_drift_ppm` accepted: 10 %.
const MAX_CLOCK_DRIFT_PPM: u32 = 100_000;

/// A node's configuration. Every key is documented, with its default and env override, in
/// `config/node.example.toml`. Its `Debug` output redacts [`SECRET_KEYS`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's id; unique in the cluster, never reused. Required.
    pub id: u64,
    /// The cluster's name. A node refuses a data directory written by another cluster.
    pub cluster_name: String,
    /// Shared secret every internal (Raft) request must carry. Required, 16+ characters.
    pub cluster_secret: String,
    /// Earlier cluster secrets, still accepted on the Raft port and for opening sealed keys
    /// while a rotation rolls through the cluster.
    pub previous_cluster_secrets: Vec<String>,
    /// Secret from which the key that encrypts stored signing keys (Uplynk API keys) is
    /// derived. Empty: the cluster secret (which crosses the network in every Raft request
    /// unless `raft_tls` is on, so set this when it is off). The same on every node.
    pub sealing_secret: String,
    /// Earlier sealing secrets, still used to open keys sealed before a rotation.
    pub previous_sealing_secrets: Vec<String>,
    /// The first administrator's token (`baton_<name>.<secret>`, made by `baton token new`).
    /// Used once: the first leader of a cluster without identities creates this administrator.
    pub admin_token: String,
    /// Requests per second each identity may send to this node (0: unlimited).
    pub rate_limit_per_second: u32,
    /// Requests an identity may send at once before the per-second rate applies.
    pub rate_limit_burst: u32,
    /// Open connections per listener; more are closed on accept.
    pub max_connections: usize,
    /// Open connections per listener from one IP address; more from it are closed on accept,
    /// so that one host cannot hold every slot.
    pub max_connections_per_address: usize,
    /// How long a client may take to send a request's headers, in milliseconds. Also how long
    /// an HTTP/1.1 keep-alive connection may sit idle: hyper times the next request's headers
    /// from the moment the connection goes idle.
    pub header_read_timeout_ms: u64,
    /// Most bytes of request headers.
    pub max_header_bytes: usize,
    /// Most labels a group may have (Cinder: a group type's specs). This and the other `max_*`
    /// limits below are checked by the leader before it proposes a caller's write: a write
    /// that would go over one is refused (413, naming the setting) and changes nothing. Only
    /// growth is refused, so a limit may be lowered on a running cluster. They are the
    /// leader's: set them alike on every node.
    pub max_labels_per_group: u64,
    /// Most bytes a group's labels may hold, keys and values together.
    pub max_label_bytes_per_group: u64,
    /// Most members (sessions, appliances, slicers) a group may have.
    pub max_members_per_group: u64,
    /// Most channels a group may have attached (Uplynk).
    pub max_channels_per_group: u64,
    /// Most allowed owners a group may have; each must be an active identity.
    pub max_allowed_owners_per_group: u64,
    /// Most groups a tenant may have, in all its namespaces.
    pub max_groups_per_tenant: u64,
    /// Most namespaces (Cinder projects' group types among them) a tenant may hold groups in.
    pub max_namespaces_per_tenant: u64,
    /// Most identities the cluster may have, revoked ones included.
    pub max_identities: u64,
    /// Most bytes of text one group may hold: name, description, labels, members' ids and
    /// names, channels and allowed owners together.
    pub max_group_bytes: u64,
    /// Most bytes of text all of one tenant's groups may hold together (what one of its list
    /// reads answers at most).
    pub max_tenant_bytes: u64,
    /// A heartbeat stream silent this long is pinged; one silent twice as long is closed, in
    /// milliseconds.
    pub stream_keepalive_ms: u64,
    /// Heartbeat and event streams one identity may hold open on a node (of the node's 4,096).
    pub max_streams_per_identity: usize,
    /// This node's TLS certificate chain (PEM); needed by `api_tls` and `raft_tls`.
    pub tls_cert_file: String,
    /// Its private key (PEM).
    pub tls_key_file: String,
    /// The CA certificate that signed every node's certificate (PEM); needed by `raft_tls`.
    pub tls_ca_file: String,
    /// Serve the public API over TLS.
    pub api_tls: bool,
    /// Use mutual TLS between nodes on the Raft port.
    pub raft_tls: bool,
    /// Allow the Raft port without TLS and without a `sealing_secret`, where the network
    /// between nodes is trusted (loopback, one host's private container network). Without it,
    /// a node with `raft_tls = false` and no `sealing_secret` refuses to start.
    pub insecure_transport: bool,
    /// Address the public API listens on.
    pub api_addr: String,
    /// Address the internal Raft listener listens on.
    pub raft_addr: String,
    /// Where this node keeps its RocksDB database. Required.
    pub data_dir: PathBuf,
    /// Members of the cluster formed on first start. Empty: this node waits to be added (as a
    /// learner) by an existing cluster.
    pub initial_members: Vec<InitialMember>,
    /// Leader heartbeat interval, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Shortest election timeout, in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Longest election timeout, in milliseconds.
    pub election_timeout_max_ms: u64,
    /// How far apart the rates of two clocks (a client's and a node's, or two nodes') may be,
    /// in parts per million: grants are answered valid for that much less than the failover
    /// timeout the leader waits (`baton_core::detector::valid_for_ms`).
    pub max_clock_drift_ppm: u32,
    /// Send the leader's new entries to followers in step while the leader syncs them
    /// (`baton_store::EarlyReplication`), instead of only after.
    pub early_replication: bool,
    /// Build a snapshot after this many new log entries.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind the latest snapshot (for followers that lag a little).
    pub max_in_snapshot_log_to_keep: u64,
    /// How long a write may wait for its commit before its outcome is reported unknown.
    pub request_timeout_ms: u64,
    /// How long a graceful shutdown may take before the node stops anyway.
    pub shutdown_timeout_ms: u64,
    /// Log filter, e.g. `info` or `baton_server=debug,info`.
    pub log_level: String,
    /// `human` (lines for people) or `json` (one JSON object per line, with the spans' fields:
    /// node id, request id, group).
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        let limits = baton_core::Limits::default();
        Self {
            id: 0,
            cluster_name: "baton".into(),
            cluster_secret: String::new(),
            previous_cluster_secrets: Vec::new(),
            admin_token: String::new(),
            sealing_secret: String::new(),
            previous_sealing_secrets: Vec::new(),
            rate_limit_per_second: 2_000,
            rate_limit_burst: 4_000,
            max_connections: 4_096,
            max_connections_per_address: 512,
            header_read_timeout_ms: 5_000,
            stream_keepalive_ms: 15_000,
            max_streams_per_identity: baton_api::streams::DEFAULT_STREAMS_PER_IDENTITY,
            max_header_bytes: 16 * 1024,
            max_labels_per_group: limits.labels_per_group,
            max_label_bytes_per_group: limits.label_bytes_per_group,
            max_members_per_group: limits.members_per_group,
            max_channels_per_group: limits.channels_per_group,
            max_allowed_owners_per_group: limits.allowed_owners_per_group,
            max_groups_per_tenant: limits.groups_per_tenant,
            max_namespaces_per_tenant: limits.namespaces_per_tenant,
            max_identities: limits.identities,
            max_group_bytes: limits.group_bytes,
            max_tenant_bytes: limits.tenant_bytes,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_ca_file: String::new(),
            api_tls: false,
            raft_tls: false,
            insecure_transport: false,
            api_addr: "127.0.0.1:7001".into(),
            raft_addr: "127.0.0.1:7101".into(),
            data_dir: PathBuf::new(),
            initial_members: Vec::new(),
            heartbeat_interval_ms: 25,
            election_timeout_min_ms: 80,
            election_timeout_max_ms: 160,
            max_clock_drift_ppm: baton_core::detector::DEFAULT_CLOCK_DRIFT_PPM,
            early_replication: true,
            snapshot_logs_since_last: 5_000,
            max_in_snapshot_log_to_keep: 1_000,
            request_timeout_ms: 5_000,
            shutdown_timeout_ms: 5_000,
            log_level: "info,openraft=warn".into(),
            log_format: LogFormat::Human,
        }
    }
}

impl Config {
    /// The secret signing keys are sealed under, and the earlier ones that still open them.
    pub fn sealing_secrets(&self) -> (&str, Vec<String>) {
        if self.sealing_secret.is_empty() {
            (&self.cluster_secret, self.previous_cluster_secrets.clone())
        } else {
            (&self.sealing_secret, self.previous_sealing_secrets.clone())
        }
    }

    /// The limits the leader holds callers' writes to.
    pub fn limits(&self) -> baton_core::Limits {
        baton_core::Limits {
            labels_per_group: self.max_labels_per_group,
            label_bytes_per_group: self.max_label_bytes_per_group,
            members_per_group: self.max_members_per_group,
            channels_per_group: self.max_channels_per_group,
            allowed_owners_per_group: self.max_allowed_owners_per_group,
            groups_per_tenant: self.max_groups_per_tenant,
            namespaces_per_tenant: self.max_namespaces_per_tenant,
            identities: self.max_identities,
            group_bytes: self.max_group_bytes,
            tenant_bytes: self.max_tenant_bytes,
        }
    }

    /// The TLS files, if a certificate is configured.
    pub fn tls_files(&self) -> Option<baton_net::tls::TlsFiles> {
        (!self.tls_cert_file.is_empty()).then(|| baton_net::tls::TlsFiles {
            cert: self.tls_cert_file.clone().into(),
            key: self.tls_key_file.clone().into(),
            ca: self.tls_ca_file.clone().into(),
        })
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut table = toml::Table::try_from(self).map_err(|_| std::fmt::Error)?;
        for key in SECRET_KEYS {
            if let Some(value) = table.get_mut(key) {
                *value = toml::Value::String("<redacted>".into());
            }
        }
        write!(f, "Config {table}")
    }
}

/// Why the configuration was refused. Each message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A layer did not parse or named an unknown key or a wrong type.
    #[error("invalid configuration from {layer}: {message}")]
    Invalid {
        /// `the config file <path>`, `environment variable BATON_X`, `flag --set x`.
        layer: String,
        /// The parser's message (it names the key).
        message: String,
    },
    /// A key's value breaks a rule.
    #[error("invalid configuration: `{key}` {problem}")]
    Rule {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Parses `value` as a TOML value (number, boolean, array, inline table, quoted string); when
/// that fails, takes it as a bare string. So `BATON_ID=3` is a number and
/// `BATON_API_ADDR=0.0.0.0:7001` a string.
fn parse_value(value: &str) -> toml::Value {
    match format!("v = {value}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("the wrapper key is present"),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

fn known_keys() -> BTreeSet<String> {
    let table = toml::Table::try_from(Config::default()).expect("the default config serializes");
    table.keys().cloned().collect()
}

impl Config {
    /// Loads the layers: defaults, `file` (if any), `env` (pairs like `BATON_ID=1`; other names
    /// are ignored), then `overrides` (`key=value` from flags); then validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            let layer = format!("the config file {}", path.display());
            table = text.parse::<toml::Table>().map_err(|e| ConfigError::Invalid {
                layer: layer.clone(),
                message: e.to_string(),
            })?;
            // Check the file alone first, so an error names the file rather than a later layer.
            Self::from_table(table.clone(), &layer)?;
        }
        let known = known_keys();
        let mut set = |key: String, value: &str, layer: String| -> Result<(), ConfigError> {
            if !known.contains(&key) {
                return Err(ConfigError::Invalid {
                    layer,
                    message: format!("unknown key `{key}`"),
                });
            }
            table.insert(key, parse_value(value));
            Ok(())
        };
        let mut env: Vec<(String, String)> =
            env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        env.sort();
        for (name, value) in env {
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
            set(key, &value, format!("environment variable {name}"))?;
        }
        for (key, value) in overrides {
            set(key.clone(), value, format!("flag for `{key}`"))?;
        }
        let config = Self::from_table(table, "the combined configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn from_table(table: toml::Table, layer: &str) -> Result<Self, ConfigError> {
        toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Invalid {
            layer: layer.into(),
            message: e.message().to_string(),
        })
    }

    /// Checks each key and the rules between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rule = |key, problem: String| Err(ConfigError::Rule { key, problem });
        if self.id == 0 {
            return rule("id", "is required and must be a positive integer".into());
        }
        if self.cluster_secret.chars().count() < MIN_SECRET_LEN {
            return rule(
                "cluster_secret",
                format!("is required and must have at least {MIN_SECRET_LEN} characters"),
            );
        }
        if let Some(short) =
            self.previous_cluster_secrets.iter().find(|s| s.chars().count() < MIN_SECRET_LEN)
        {
            let _ = short;
            return rule(
                "previous_cluster_secrets",
                format!("must hold secrets of at least {MIN_SECRET_LEN} characters each"),
            );
        }
        if !self.sealing_secret.is_empty() && self.sealing_secret.chars().count() < MIN_SECRET_LEN {
            return rule(
                "sealing_secret",
                format!("must have at least {MIN_SECRET_LEN} characters when set"),
            );
        }
        if !self.admin_token.is_empty() && baton_auth::parse_token(&self.admin_token).is_err() {
            return rule(
                "admin_token",
                "is not a token of the form baton_<name>.<64 hex digits> (make one with `baton token new`)".into(),
            );
        }
        if (self.api_tls || self.raft_tls)
            && (self.tls_cert_file.is_empty() || self.tls_key_file.is_empty())
        {
            return rule(
                "tls_cert_file",
                "and `tls_key_file` are required when api_tls or raft_tls is on".into(),
            );
        }
        if !self.raft_tls && self.sealing_secret.is_empty() && !self.insecure_transport {
            return rule(
                "raft_tls",
                "is off and no `sealing_secret` is set: Raft traffic, which carries the whole state and its sealed signing keys, would cross the network in the clear, with the keys sealed under a key derived from the cluster secret. Turn raft_tls on, or set sealing_secret, or set insecure_transport = true where the network between nodes is trusted (loopback, one host)".into(),
            );
        }
        if self.raft_tls && self.tls_ca_file.is_empty() {
            return rule("tls_ca_file", "is required when raft_tls is on".into());
        }
        if self.cluster_name.is_empty() {
            return rule("cluster_name", "must not be empty".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return rule("data_dir", "is required".into());
        }
        for (key, addr) in [("api_addr", &self.api_addr), ("raft_addr", &self.raft_addr)] {
            if !is_host_port(addr) {
                return rule(key, format!("must be host:port, not {addr:?}"));
            }
        }
        if self.heartbeat_interval_ms == 0 {
            return rule("heartbeat_interval_ms", "must be positive".into());
        }
        if self.election_timeout_min_ms < self.heartbeat_interval_ms.saturating_mul(3) {
            return rule(
                "election_timeout_min_ms",
                format!(
                    "({}) must be at least three times heartbeat_interval_ms ({}), or two late heartbeats start an election",
                    self.election_timeout_min_ms, self.heartbeat_interval_ms
                ),
            );
        }
        let tick_ms = u64::try_from(crate::leader::TICK.as_millis()).unwrap_or(u64::MAX);
        if self.election_timeout_min_ms < tick_ms.saturating_mul(2) {
            return rule(
                "election_timeout_min_ms",
                format!(
                    "({}) must be at least {} ms (twice the leader tick), or the leader lease lapses between the ticks that renew it",
                    self.election_timeout_min_ms,
                    tick_ms.saturating_mul(2)
                ),
            );
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return rule(
                "election_timeout_max_ms",
                format!(
                    "({}) must be greater than election_timeout_min_ms ({})",
                    self.election_timeout_max_ms, self.election_timeout_min_ms
                ),
            );
        }
        // A follower refuses votes for election_timeout_max after hearing from the leader and
        // campaigns after that plus its own timeout: an election can take twice the maximum.
        if self.election_timeout_max_ms.saturating_mul(2) >= baton_core::MIN_FAILOVER_TIMEOUT_MS {
            return rule(
                "election_timeout_max_ms",
                format!(
                    "({}) must be below half the shortest client failover timeout ({} ms), or a Baton election could outlast a client's timeout",
                    self.election_timeout_max_ms,
                    baton_core::MIN_FAILOVER_TIMEOUT_MS
                ),
            );
        }
        if self.max_clock_drift_ppm > MAX_CLOCK_DRIFT_PPM {
            return rule(
                "max_clock_drift_ppm",
                format!(
                    "({}) must be at most {MAX_CLOCK_DRIFT_PPM} (10 %): a clock that far off needs fixing, not allowing for",
                    self.max_clock_drift_ppm
                ),
            );
        }
        if self.max_streams_per_identity == 0 {
            return rule("max_streams_per_identity", "must be positive".into());
        }
        if self.max_connections_per_address == 0 {
            return rule("max_connections_per_address", "must be positive".into());
        }
        if self.snapshot_logs_since_last == 0 {
            return rule("snapshot_logs_since_last", "must be positive".into());
        }
        if self.request_timeout_ms == 0 {
            return rule("request_timeout_ms", "must be positive".into());
        }
        if self.stream_keepalive_ms < 100 {
            return rule("stream_keepalive_ms", "must be at least 100".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        for m in &self.initial_members {
            if !ids.insert(m.id) {
                return rule("initial_members", format!("lists node {} twice", m.id));
            }
            if !is_host_port(&m.raft_addr) || !is_host_port(&m.api_addr) {
                return rule("initial_members", format!("node {} needs host:port addresses", m.id));
            }
        }
        Ok(())
    }
}
/// `host:port` with a non-empty host and a numeric port.
fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_env() -> Vec<(String, String)> {
        vec![
            ("BATON_ID".into(), "1".into()),
            ("BATON_CLUSTER_SECRET".into(), "0123456789abcdef".into()),
            ("BATON_DATA_DIR".into(), "/tmp/x".into()),
            ("BATON_INSECURE_TRANSPORT".into(), "true".into()),
        ]
    }

    #[test]
    fn layers_apply_in_order_file_then_env_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("n.toml");
        std::fs::write(
            &file,
            "api_addr = \"127.0.0.1:1\"\nraft_addr = \"127.0.0.1:2\"\nheartbeat_interval_ms = 20\n",
        )
        .expect("write");
        let mut env = base_env();
        env.push(("BATON_API_ADDR".into(), "127.0.0.1:3".into()));
        env.push(("PATH".into(), "/bin".into()));
        let c = Config::load(Some(&file), env, &[("raft_addr".into(), "127.0.0.1:4".into())])
            .expect("valid");
        assert_eq!(c.api_addr, "127.0.0.1:3", "env beats file");
        assert_eq!(c.raft_addr, "127.0.0.1:4", "flag beats file");
        assert_eq!(c.heartbeat_interval_ms, 20, "file beats default");
        assert_eq!(c.id, 1);
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("n.toml");
        std::fs::write(&file, "id = 1\nheartbeat_intreval_ms = 5\n").expect("write");
        let err = Config::load(Some(&file), base_env(), &[]).expect_err("refused").to_string();
        assert!(err.contains("heartbeat_intreval_ms"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        let mut env = base_env();
        env.push(("BATON_NOPE".into(), "1".into()));
        let err = Config::load(None, env, &[]).expect_err("refused").to_string();
        assert!(err.contains("BATON_NOPE") && err.contains("nope"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let mut env = base_env();
        env.push(("BATON_HEARTBEAT_INTERVAL_MS".into(), "\"fast\"".into()));
        let err = Config::load(None, env, &[]).expect_err("refused").to_string();
        assert!(err.contains("heartbeat_interval_ms") || err.contains("invalid type"), "{err}");
    }

    #[test]
    fn heartbeat_not_below_election_timeout_is_refused() {
        let mut env = base_env();
        env.push(("BATON_HEARTBEAT_INTERVAL_MS".into(), "150".into()));
        let err = Config::load(None, env, &[]).expect_err("refused").to_string();
        assert!(
            err.contains("election_timeout_min_ms") && err.contains("heartbeat_interval_ms"),
            "{err}"
        );
    }

    #[test]
    fn election_timeout_must_stay_below_client_failover_timeouts() {
        let mut env = base_env();
        env.push(("BATON_ELECTION_TIMEOUT_MAX_MS".into(), "500".into()));
        let err = Config::load(None, env, &[]).expect_err("refused").to_string();
        assert!(err.contains("election_timeout_max_ms"), "{err}");
    }

    #[test]
    fn timings_too_large_to_multiply_are_refused_not_wrapped() {
        for key in ["BATON_HEARTBEAT_INTERVAL_MS", "BATON_ELECTION_TIMEOUT_MAX_MS"] {
            let mut env = base_env();
            // TOML integers are i64: its largest times three does not fit a u64.
            env.push((key.into(), i64::MAX.to_string()));
            let err = Config::load(None, env, &[]).expect_err("refused").to_string();
            assert!(err.contains("election_timeout"), "{key}: {err}");
        }
    }

    #[test]
    fn plain_raft_without_a_sealing_secret_is_refused_unless_declared_insecure() {
        let mut env: Vec<(String, String)> =
            base_env().into_iter().filter(|(k, _)| k != "BATON_INSECURE_TRANSPORT").collect();
        let err = Config::load(None, env.clone(), &[]).expect_err("refused").to_string();
        assert!(err.contains("raft_tls") && err.contains("insecure_transport"), "{err}");
        env.push(("BATON_SEALING_SECRET".into(), "another-secret-of-16+".into()));
        Config::load(None, env, &[]).expect("a sealing secret apart from the wire is enough");
    }

    #[test]
    fn missing_secret_is_refused() {
        let env = vec![("BATON_ID".into(), "1".into()), ("BATON_DATA_DIR".into(), "/x".into())];
        let err = Config::load(None, env, &[]).expect_err("refused").to_string();
        assert!(err.contains("cluster_secret"), "{err}");
    }

    #[test]
    fn example_config_is_valid_and_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/node.example.toml");
        Config::load(Some(&path), Vec::new(), &[]).expect("the example config is valid");
        let text = std::fs::read_to_string(&path).expect("read example");
        for key in known_keys() {
            assert!(
                text.contains(&format!("\n{key} =")),
                "node.example.toml does not document `{key}`"
            );
            let env = format!("BATON_{}", key.to_ascii_uppercase());
            assert!(text.contains(&env), "node.example.toml does not name {env}");
        }
    }

    #[test]
    fn every_limit_is_a_setting_whose_default_is_the_cores() {
        let known = known_keys();
        let mut env = base_env();
        env.push(("BATON_MAX_GROUPS_PER_TENANT".into(), "7".into()));
        let c = Config::load(None, env, &[]).expect("valid");
        let limits = c.limits();
        for limit in [
            baton_core::Limit::LabelsPerGroup,
            baton_core::Limit::LabelBytesPerGroup,
            baton_core::Limit::MembersPerGroup,
            baton_core::Limit::ChannelsPerGroup,
            baton_core::Limit::AllowedOwnersPerGroup,
            baton_core::Limit::GroupsPerTenant,
            baton_core::Limit::NamespacesPerTenant,
            baton_core::Limit::Identities,
            baton_core::Limit::GroupBytes,
        ] {
            assert!(known.contains(limit.setting()), "no setting named {}", limit.setting());
            let default = baton_core::Limits::default().max(limit);
            let want = if limit == baton_core::Limit::GroupsPerTenant { 7 } else { default };
            assert_eq!(limits.max(limit), want, "{}", limit.setting());
        }
    }

    #[test]
    fn local_cluster_configs_are_valid() {
        for n in 1..=3 {
            let path =
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../config/node{n}.toml"));
            let c = Config::load(Some(&path), Vec::new(), &[]).expect("valid");
            assert_eq!((c.id, c.api_addr), (n, format!("127.0.0.1:700{n}")));
        }
    }

    #[test]
    fn initial_members_can_come_from_env_as_toml() {
        let mut env = base_env();
        env.push((
            "BATON_INITIAL_MEMBERS".into(),
            "[{id = 1, raft_addr = \"a:1\", api_addr = \"a:2\"}]".into(),
        ));
        let c = Config::load(None, env, &[]).expect("valid");
        assert_eq!(c.initial_members.len(), 1);
    }
}
