//! Assembling a node: storage, Raft, the internal listener and the public API, and shutting
//! them down in order.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use baton_net::{Network, RpcClient};
use baton_raft::typ::{Entry, LogId, Raft, Vote};
use baton_raft::{NodeInfo, TypeConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::Config;
use crate::coordinator::{Options, RaftCoordinator};
use crate::identity;
use crate::leader::Clock;
use crate::listener;

fn raft_config(config: &Config) -> anyhow::Result<Arc<openraft::Config>> {
    let raft = openraft::Config {
        cluster_name: config.cluster_name.clone(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: config.max_in_snapshot_log_to_keep,
        install_snapshot_timeout: 10_000,
        // Entries read for one AppendEntries (openraft's default is 300). The network sends
        // at most `baton_net::MAX_APPEND_BYTES` of them anyway; reading fewer saves the leader
        // reading hundreds of large entries only to send a few.
        max_payload_entries: 64,
        ..Default::default()
    };
    Ok(Arc::new(raft.validate().context("the Raft timing configuration is inconsistent")?))
}

/// Publishes the state machine's decisions on the node's event feed.
struct Publisher(Arc<baton_api::events::Feed>);

impl baton_store::Observer for Publisher {
    fn decided(&self, index: u64, position: usize, decision: baton_core::Decision) {
        self.0.publish(baton_api::events::event_id(index, position), decision);
    }

    fn skipped_to(&self, index: u64) {
        self.0.skip_to(baton_api::events::entry_last_event_id(index));
    }
}

/// Sends the leader's appends to followers in step before they are synced (see
/// `baton_store::EarlyReplication`), over the Raft network.
struct EarlyAppends(baton_net::Followers);

impl baton_store::EarlyReplication<TypeConfig> for EarlyAppends {
    fn wants(&self, vote: &Vote, prev: &LogId) -> bool {
        self.0.wants(vote, prev)
    }

    fn send(&self, vote: Vote, prev: LogId, entries: Vec<Entry>, committed: Option<LogId>) {
        self.0.send(vote, prev, entries, committed);
    }
}

/// A node's Raft side, started: storage, Raft, the coordinator with its leader duties, and the
/// Raft port (which the caller serves on a listener: TCP in a node, a simulated network in the
/// whole-cluster simulation).
pub struct Started {
    /// The Raft node.
    pub raft: Raft,
    /// The coordinator the public API serves.
    pub coordinator: Arc<RaftCoordinator>,
    /// What the Raft port answers.
    pub port: Arc<crate::port::Port>,
    /// The node's event feed.
    pub feed: Arc<baton_api::events::Feed>,
    closer: baton_store::Closer,
    stop_duties: watch::Sender<bool>,
    duties: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts a node's Raft side from `config`: opens (or creates) its storage, starts Raft with
/// `rpc` as its client of the other nodes' Raft ports, and starts the leader duties,
/// streaming and succession. Leader time is `clock`.
pub async fn start(config: &Config, rpc: RpcClient, clock: Clock) -> anyhow::Result<Started> {
    // Votes are held for a while from here (`port::VoteHold`).
    let started = tokio::time::Instant::now();
    // 1. The data directory: refuse another cluster's or an unwritable one before writing.
    let db_dir = identity::prepare(&config.data_dir, &config.cluster_name, config.id)?;

    // 2. Storage.
    let baton_store::Store { log: mut log_store, mut state_machine, closer } =
        baton_store::open(&db_dir)?;
    let feed = Arc::new(baton_api::events::Feed::default());
    state_machine.observe(Arc::new(Publisher(feed.clone())));
    let state = state_machine.reader();
    let committed = log_store.committed_index();

    // 3. Raft, the coordinator and its duties.
    let network = Network::new(rpc.clone(), Duration::from_millis(config.election_timeout_min_ms));
    if config.early_replication {
        log_store.replicate_early(config.id, Arc::new(EarlyAppends(network.followers())))?;
    }
    let raft =
        Raft::new(config.id, raft_config(config)?, network.clone(), log_store, state_machine)
            .await
            .context("starting Raft")?;
    let coordinator = Arc::new(
        RaftCoordinator::new(
            config.id,
            raft.clone(),
            state,
            committed,
            &network,
            feed.clone(),
            Options {
                request_timeout: Duration::from_millis(config.request_timeout_ms),
                leader_wait: Duration::from_millis(2 * config.election_timeout_max_ms),
                reroute_for: Duration::from_millis(4 * config.election_timeout_max_ms),
                lease: Duration::from_millis(config.election_timeout_min_ms),
                clock_drift_ppm: config.max_clock_drift_ppm,
                bootstrap_admin: bootstrap_admin(config)?,
                limits: config.limits(),
            },
        )
        .with_clock(clock),
    );
    let (stop_duties, duties_stopped) = watch::channel(false);
    let leader = coordinator.clone();
    let mut duties = vec![
        tokio::spawn(
            async move { leader.run_leader_duties(wait_true(duties_stopped)).await }
                .instrument(tracing::info_span!("leader_duties")),
        ),
        tokio::spawn(crate::replication::keep_streaming(
            raft.clone(),
            config.id,
            wait_true(stop_duties.subscribe()),
        )),
    ];

    // 4. What the Raft port answers: Raft RPCs and leader forwarding on framed connections,
    // behind the cluster secret.
    let port = Arc::new(baton_net::RaftPort::new(
        crate::port::PortRpcs::new(
            raft.clone(),
            coordinator.clone(),
            crate::port::VoteHold::new(
                started,
                Duration::from_millis(config.election_timeout_max_ms),
            ),
        ),
        config.id,
        &accepted_secrets(config),
        Duration::from_millis(config.header_read_timeout_ms).min(listener::RAFT_HANDSHAKE),
    ));

    duties.push(tokio::spawn(crate::succession::campaign_when_leader_is_gone(
        raft.clone(),
        port.clone(),
        rpc,
        // Longer than the leader lease (`election_timeout_min`): see succession.rs.
        Duration::from_millis(config.election_timeout_min_ms + config.heartbeat_interval_ms),
        wait_true(stop_duties.subscribe()),
    )));
    Ok(Started { raft, coordinator, port, feed, closer, stop_duties, duties })
}

impl Started {
    /// Stops the leader duties, streaming and succession first, while the Raft port still
    /// serves: a leader whose port went quiet under a running detector would fail healthy
    /// holders over whose heartbeats followers could no longer forward.
    pub async fn stop_duties(&mut self) {
        let _ = self.stop_duties.send(true);
        for duty in self.duties.drain(..) {
            let _ = duty.await;
        }
    }

    /// Stops Raft, then closes storage, each step bounded by `limit`, once the caller has
    /// stopped the duties ([`Started::stop_duties`]) and serving the Raft port. Blocks the
    /// thread while RocksDB closes: a multi-threaded runtime only.
    pub async fn close(self, limit: Duration) {
        let Self { raft, coordinator, closer, .. } = self;
        if tokio::time::timeout(limit, raft.shutdown()).await.is_err() {
            tracing::warn!("Raft did not stop in time");
        }
        drop(coordinator);
        // Close RocksDB here, after openraft let go of it, before the process exits.
        if !tokio::task::block_in_place(|| closer.close(limit)) {
            tracing::warn!("storage was still in use at shutdown");
        }
    }
}

/// Runs a node until `shutdown` resolves, then stops it in order: public API, leader duties,
/// internal listener, Raft, storage.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let span = tracing::info_span!("node", id = config.id);
    async move {
        let open_files = crate::open_files::ensure(&config)?;
        tracing::debug!(open_files, "the open-files limit suffices");
        // Outbound Raft traffic leaves from the Raft listener's own address when it is a
        // specific IP, so that a node's peer traffic can be told apart (and cut off) by address.
        let source = config
            .raft_addr
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        let tls = config.tls_files();
        let raft_client_tls = match (&tls, config.raft_tls) {
            (Some(files), true) => Some(baton_net::tls::raft_client_config(files)?),
            _ => None,
        };
        let rpc = RpcClient::new(&config.cluster_secret, source, raft_client_tls);
        let mut node = start(&config, rpc, Clock::default()).await?;
        let coordinator = node.coordinator.clone();
        let feed = node.feed.clone();

        // The internal listener: Raft RPCs and leader forwarding on framed connections, each
        // proven by the cluster-secret handshake. It serves no HTTP: a connection that is not
        // framed is closed (the router below is never reached).
        let raft_listener = TcpListener::bind(&config.raft_addr)
            .await
            .with_context(|| format!("cannot listen on raft_addr {}", config.raft_addr))?;
        let internal = Router::new();
        let raft_server_tls = match (&tls, config.raft_tls) {
            (Some(files), true) => Some(baton_net::tls::raft_server_config(files)?),
            _ => None,
        };
        let (stop_internal, internal_stopped) = watch::channel(false);
        let members = crate::members::Members::default();
        let members_task = tokio::spawn(
            members.clone().keep_current(node.raft.clone(), wait_true(stop_internal.subscribe())),
        );
        let internal_task = tokio::spawn(
            listener::serve(
                raft_listener,
                internal,
                limits(&config),
                raft_server_tls,
                Some(listener::Framed { port: node.port.clone(), members }),
                wait_true(internal_stopped),
            )
            .instrument(tracing::info_span!("raft_listener")),
        );

        // Form the cluster on first start, from the configured initial members.
        form_cluster(&config, &node.raft).await?;

        // The public API.
        let api_listener = TcpListener::bind(&config.api_addr)
            .await
            .with_context(|| format!("cannot listen on api_addr {}", config.api_addr))?;
        let (stop_api, api_stopped) = watch::channel(false);
        let (sealing, previous_sealing) = config.sealing_secrets();
        if config.sealing_secret.is_empty() && !config.raft_tls {
            tracing::warn!(
                "signing keys are sealed under a key derived from the cluster secret, and Raft \
                 traffic (snapshots of the state among it) is not encrypted without raft_tls: \
                 set sealing_secret (or raft_tls)"
            );
        }
        let sealer = Arc::new(baton_api::Sealer::new(sealing, &previous_sealing));
        let sessions = Arc::new(baton_auth::SessionKeys::new(sealing, &previous_sealing));
        let rate_limit = baton_api::RateLimit {
            per_second: config.rate_limit_per_second,
            burst: config.rate_limit_burst,
        };
        let api_tls = match (&tls, config.api_tls) {
            (Some(files), true) => Some(baton_net::tls::api_server_config(files)?),
            _ => None,
        };
        let options = baton_api::ApiOptions {
            rate_limit,
            sealer,
            sessions,
            https: api_tls.is_some(),
            stream_keepalive: Duration::from_millis(config.stream_keepalive_ms),
            max_streams_per_identity: config.max_streams_per_identity,
        };
        let app = baton_api::app(coordinator, options);
        let limits = limits(&config);
        let api_task = tokio::spawn(
            async move {
                listener::serve(api_listener, app, limits, api_tls, None, wait_true(api_stopped))
                    .await
            }
            .instrument(tracing::info_span!("api_listener")),
        );
        tracing::info!(api = %config.api_addr, raft = %config.raft_addr, "node started");

        // Run until asked to stop, then stop in order, each step bounded.
        shutdown.await;
        tracing::info!("shutting down");
        let limit = Duration::from_millis(config.shutdown_timeout_ms);
        // Event streams never end on their own: end them so the API can drain.
        feed.close();
        let _ = stop_api.send(true);
        if tokio::time::timeout(limit, api_task).await.is_err() {
            tracing::warn!("the public API did not stop in time");
        }
        node.stop_duties().await;
        let _ = stop_internal.send(true);
        if tokio::time::timeout(limit, internal_task).await.is_err() {
            tracing::warn!("the internal listener did not stop in time");
        }
        // It stops with the listener; a name lookup in progress is not waited for.
        members_task.abort();
        node.close(limit).await;
        tracing::info!("stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

fn limits(config: &Config) -> listener::Limits {
    listener::Limits {
        max_connections: config.max_connections,
        max_connections_per_address: config.max_connections_per_address,
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        max_header_bytes: config.max_header_bytes,
        // A write may wait `request_timeout_ms` for its commit, plus a leader election.
        request_timeout: Duration::from_millis(
            config.request_timeout_ms + 2 * config.election_timeout_max_ms + 1_000,
        ),
        drain: Duration::from_millis(config.shutdown_timeout_ms),
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn accepted_secrets(config: &Config) -> Vec<String> {
    std::iter::once(config.cluster_secret.clone())
        .chain(config.previous_cluster_secrets.iter().cloned())
        .collect()
}

/// The administrator the `admin_token` setting asks for, with the token's digest (the token
/// itself goes no further).
fn bootstrap_admin(config: &Config) -> anyhow::Result<Option<baton_core::Identity>> {
    if config.admin_token.is_empty() {
        return Ok(None);
    }
    let parsed = baton_auth::parse_token(&config.admin_token)
        .map_err(|_| anyhow::anyhow!("admin_token is not a valid token"))?;
    let token = baton_auth::credential_for(parsed.secret);
    Ok(Some(baton_core::Identity::new(parsed.name.clone(), baton_core::AccessRole::Admin, token)))
}

/// Forms the cluster from `config`'s initial members on a node's first start (a restarted
/// node, or one that is not an initial member, does nothing).
pub async fn form_cluster(config: &Config, raft: &Raft) -> anyhow::Result<()> {
    if raft.is_initialized().await.context("reading Raft state")? {
        tracing::info!("restarting from the data directory");
        return Ok(());
    }
    if !config.initial_members.iter().any(|m| m.id == config.id) {
        tracing::info!("not in initial_members; waiting to be added to a cluster as a learner");
        return Ok(());
    }
    let members: BTreeMap<u64, NodeInfo> = config
        .initial_members
        .iter()
        .map(|m| (m.id, NodeInfo { raft_addr: m.raft_addr.clone(), api_addr: m.api_addr.clone() }))
        .collect();
    // Every initial member calls this with the same membership; openraft accepts the first
    // and refuses the rest as already initialized, which is fine.
    match raft.initialize(members).await {
        Ok(()) => tracing::info!("formed the cluster from initial_members"),
        Err(e) => tracing::info!(reason = %e, "cluster already initialized"),
    }
    Ok(())
}
