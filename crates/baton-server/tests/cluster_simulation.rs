//! A deterministic simulation of a whole Baton cluster in one process: three nodes run the
//! real node code (`baton_server::node::start`: openraft, the coordinator with its proxy,
//! proposer, leader lease and detector, succession, and RocksDB with the log's segment files
//! in temporary directories), over turmoil's simulated network and clock. Clients heartbeat
//! to any node, their scores changing (a much better one preempts the holder); an operator forces
//! failovers, pins members, changes timeouts, removes members and deletes and re-creates
//! groups; and faults come from the seed:
//!
//! - nodes crash and restart with their storage; a node's links are held (a paused node)
//!   for longer than the election timeout, then released;
//! - partitions between nodes, symmetric and one-way, and between the clients and a node in
//!   either direction (a request or an answer lost);
//! - clients lose answers that did arrive, send duplicate heartbeats, and go silent;
//! - leader clocks and client clocks run at rates up to `DRIFT_PPM` apart, and the nodes'
//!   wall clocks are set up to 300 ms either side of true time.
//!
//! What it checks, as the clients see them (a client follows the documented rules: a grant
//! holds from its heartbeat's send time for `ValidFor` on its own clock; on an error or a
//! lost answer it keeps its last grant until it lapses; one heartbeat in flight, and an answer
//! given up on is never taken):
//! - no two members of a group ever hold a valid grant at the same instant;
//! - a member granted after another gets a higher epoch, across re-creation;
//! - every acknowledged change of a group's timeout is what the group has once the faults stop;
//! - once the faults stop, every group has a member holding a valid grant within the longest
//!   failover timeout (a new leader waits out any grant its predecessor may have answered),
//!   half a timeout (the next heartbeat), an election and a second of having what it needs
//!   (the first quiet moment, or its re-creation or a member's re-addition after that);
//! - nodes that applied the same entries have the same state digest.
//!
//! A seed replays exactly: turmoil's network and the workload draw from it, tokio's own
//! random choices are seeded through tokio's unstable API (`.cargo/config.toml`), and
//! openraft's through `baton_raft::runtime`. Each world runs on one thread (worlds run on as
//! many threads as there are cores). Without tokio's unstable API (a build whose `RUSTFLAGS`
//! replace `.cargo/config.toml`'s) the worlds still run and are checked, but a seed may not
//! replay exactly, and `a_seed_replays_exactly` is left out.
//!
//! ```text
//! BATON_CLUSTER_SIM_SEED=<seed> cargo test -p baton-server --test cluster_simulation
//! BATON_CLUSTER_SIM_SEEDS=<count> cargo test -p baton-server --test cluster_simulation
//! scripts/sim.sh --cluster --seeds <count>
//! ```
//!
//! With `BATON_CLUSTER_SIM_TRACE=1` a world prints its faults, operator actions and the grants
//! clients took; `BATON_CLUSTER_SIM_DEBUG=1` adds every heartbeat's reply.
//!
//! What it leaves out: the public HTTP API and authentication (clients call the coordinator
//! through a small framed protocol of this file; the e2e tests cover the API), TLS, and a
//! clock rate for tokio's own timers (turmoil runs every host's timers at one rate; the
//! leader's time, which stamps grants, and the clients' clocks do drift).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use baton_api::{Consistency, Coordinator, CoordinatorError, HeartbeatOutcome};
use baton_core::heartbeat::Beat;
use baton_core::invariants::{DriftingClock as SimClock, GroupGrants};
use baton_core::{
    Actor, Command, Epoch, GroupConfig, GroupId, GroupKey, HeartbeatIn, IdentityName, NamespaceId,
    Query, QueryResult, Response, Role, Scope, Score, SessionId, TenantId,
};
use baton_net::{AsyncIo, Connect, RpcClient};
use baton_server::config::{Config, InitialMember};
use baton_server::coordinator::RaftCoordinator;
use baton_server::leader::Clock;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const NODES: u64 = 3;
const RAFT_PORT: u16 = 7100;
const CLIENT_PORT: u16 = 7000;
const SECRET: &str = "simulated-cluster-secret";
/// How far apart clocks' rates may be in these worlds (10 %, far more than NTP allows, so
/// that a missing or wrong margin shows within a few seeds); the nodes are configured with it.
const DRIFT_PPM: u32 = 100_000;
/// Simulated time with faults, then without.
const FAULTY: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_secs(8);
/// The nodes' longest election timeout (`Config::default()`'s).
const ELECTION_MAX_MS: f64 = 160.0;
const GROUPS: usize = 2;
const MEMBERS: [&str; 3] = ["a", "b", "c"];
const TIMEOUTS: [u64; 3] = [1_000, 2_000, 3_000];
/// A client gives up waiting for an answer after this long (its own clock).
const GIVE_UP_MS: f64 = 600.0;
const CALLER: &str = "sim";
/// Leader time at the start of every world (wall-clock milliseconds).
const WALL_MS: u64 = 1_800_000_000_000;

#[test]
fn no_two_members_ever_hold_a_valid_grant_in_a_whole_cluster() {
    let seeds: Vec<u64> = match std::env::var("BATON_CLUSTER_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("BATON_CLUSTER_SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("BATON_CLUSTER_SIM_SEEDS")
                .map_or(1_000, |n| n.parse().expect("BATON_CLUSTER_SIM_SEEDS is a number"));
            (1..=count).collect()
        }
    };
    let handovers = run_worlds(&seeds).unwrap_or_else(|(seed, violation)| {
        panic!(
            "seed {seed}: {violation}\nreplay: BATON_CLUSTER_SIM_SEED={seed} cargo test -p baton-server --test cluster_simulation"
        )
    });
    println!("the baton moved between members {handovers} times in {} worlds", seeds.len());
    assert!(handovers > 0, "no grant ever moved between members");
}

/// Runs the worlds of `seeds` on as many threads as there are cores (each world is
/// deterministic on its own thread); how often the baton moved, or the first violation found.
fn run_worlds(seeds: &[u64]) -> Result<usize, (u64, String)> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(seeds.len());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..workers)
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(32 << 20)
                    .spawn_scoped(scope, || {
                        let mut moved = 0;
                        while !failed.load(Ordering::Relaxed) {
                            let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed))
                            else {
                                break;
                            };
                            match run_world(seed) {
                                Ok(handovers) => moved += handovers,
                                Err(violation) => {
                                    failed.store(true, Ordering::Relaxed);
                                    return Err((seed, violation));
                                }
                            }
                        }
                        Ok(moved)
                    })
                    .expect("a simulation thread")
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a simulation thread ends")).sum()
    })
}

/// Worlds that broke the code before its fixes, kept as regressions (each found by running
/// the first seeds with one fix taken out; a change to the simulation itself changes the worlds
/// a seed makes, so re-find them then):
/// - 15, 17, 22: a Secondary answer released the holder's grant when computed, and was lost;
///   another member was granted while the holder still trusted its grant (path 1);
/// - 1, 4, 5: a node restarted after a group was deleted and re-created forgot the deleted
///   group's tombstone (it shared the group's key), so its state, the re-created group's epoch
///   among it, differed from the others' (path 2). Two grants at once follow only when such a
///   node is elected within the deleted group's last grant; the grant simulation in
///   `baton-core` finds that (its seeds 111, 234, 442), these worlds did not in 300 seeds;
/// - 398: a leader proposed a holder's successor, lost office before it committed, and was
///   elected again; armed after a quorum round alone (which waits only for what is already
///   committed), it answered the holder "Primary" just before that earlier grant committed
///   (`leader.rs`, `barrier`).
const REGRESSION_SEEDS: [u64; 7] = [1, 4, 5, 15, 17, 22, 398];

#[test]
fn worlds_that_broke_earlier_code_stay_safe() {
    if let Err((seed, violation)) = run_worlds(&REGRESSION_SEEDS) {
        panic!("seed {seed}: {violation}");
    }
}

#[cfg(tokio_unstable)]
#[test]
fn a_seed_replays_exactly() {
    let first = trace_of(3);
    let second = trace_of(3);
    assert_eq!(first, second, "the same seed made two different worlds");
}

fn trace_of(seed: u64) -> Vec<String> {
    let world = World::new(seed);
    let trace = world.trace.clone();
    let _ = simulate(seed, world);
    trace.take()
}

/// What clients send a node on the simulated network, one call per connection.
#[derive(Debug, Serialize, Deserialize)]
enum Call {
    Heartbeat(Beat),
    Write(Command),
    Read(Query),
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Heartbeat(Result<HeartbeatOutcome, CoordinatorError>),
    Write(Result<Response, CoordinatorError>),
    Read(Result<QueryResult, CoordinatorError>),
}

fn host(id: u64) -> String {
    format!("n{id}")
}

fn key(g: usize) -> GroupKey {
    GroupKey {
        scope: Scope {
            tenant: TenantId::new("t").expect("an id"),
            namespace: NamespaceId::new("ns").expect("an id"),
        },
        group: GroupId::new(format!("g{g}")).expect("an id"),
    }
}

/// turmoil's TCP streams for the nodes' Raft clients.
struct SimConnect;

impl Connect for SimConnect {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, std::io::Result<Box<dyn AsyncIo>>> {
        async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as Box<dyn AsyncIo>)
        }
        .boxed()
    }
}

fn node_config(id: u64, data_dir: std::path::PathBuf) -> Config {
    Config {
        id,
        cluster_name: "sim".into(),
        cluster_secret: SECRET.into(),
        // The simulated network is the test's own.
        insecure_transport: true,
        // The operator's identity, which the first leader creates.
        admin_token: format!("baton_{CALLER}.{}", "5a".repeat(32)),
        raft_addr: format!("{}:{RAFT_PORT}", host(id)),
        api_addr: format!("{}:{CLIENT_PORT}", host(id)),
        data_dir,
        initial_members: (1..=NODES)
            .map(|m| InitialMember {
                id: m,
                raft_addr: format!("{}:{RAFT_PORT}", host(m)),
                api_addr: format!("{}:{CLIENT_PORT}", host(m)),
            })
            .collect(),
        max_clock_drift_ppm: DRIFT_PPM,
        request_timeout_ms: 2_000,
        // Snapshots (and their installation on a node that fell behind) happen in a world.
        snapshot_logs_since_last: 200,
        max_in_snapshot_log_to_keep: 50,
        ..Config::default()
    }
}

/// The nodes' coordinators as last started, for the end's checks.
type Registry = Rc<RefCell<BTreeMap<u64, Arc<RaftCoordinator>>>>;

/// A node's software: the real node, its Raft port and a port for the simulated clients.
async fn node(config: Config, clock: Clock, registry: Registry) -> turmoil::Result {
    let rpc = RpcClient::with_connect(SECRET, Arc::new(SimConnect));
    let started = baton_server::node::start(&config, rpc, clock).await?;
    registry.borrow_mut().insert(config.id, started.coordinator.clone());
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let raft_listener = turmoil::net::TcpListener::bind((any, RAFT_PORT)).await?;
    let port = started.port.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = raft_listener.accept().await {
            let port = port.clone();
            tokio::spawn(async move {
                let mut preface = vec![0u8; baton_net::PREFACE.len()];
                if stream.read_exact(&mut preface).await.is_ok() && preface == baton_net::PREFACE {
                    port.serve(stream, peer, std::future::pending()).await;
                }
            });
        }
    });
    baton_server::node::form_cluster(&config, &started.raft).await?;
    let client_listener = turmoil::net::TcpListener::bind((any, CLIENT_PORT)).await?;
    loop {
        let (stream, _) = client_listener.accept().await?;
        let coordinator = started.coordinator.clone();
        tokio::spawn(serve_client(coordinator, stream));
    }
}

async fn serve_client(coordinator: Arc<RaftCoordinator>, mut stream: turmoil::net::TcpStream) {
    let Ok(call) = read_frame::<Call>(&mut stream).await else { return };
    let reply = match call {
        Call::Heartbeat(beat) => {
            Reply::Heartbeat(coordinator.heartbeat(beat).await.map(|s| s.value))
        }
        Call::Write(command) => {
            let actor = Actor {
                identity: IdentityName::new(CALLER).expect("a name"),
                from: None,
                request_key: None,
            };
            Reply::Write(coordinator.write(command, Some(actor)).await.map(|s| s.value))
        }
        Call::Read(query) => {
            Reply::Read(coordinator.read(query, Consistency::Linearizable).await.map(|s| s.value))
        }
    };
    let _ = write_frame(&mut stream, &reply).await;
}

async fn write_frame<T: Serialize>(
    stream: &mut turmoil::net::TcpStream,
    value: &T,
) -> std::io::Result<()> {
    let body = postcard::to_allocvec(value).expect("encodes");
    let mut frame = u32::try_from(body.len()).expect("small").to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    stream.flush().await
}

async fn read_frame<T: for<'de> Deserialize<'de>>(
    stream: &mut turmoil::net::TcpStream,
) -> std::io::Result<T> {
    let length = stream.read_u32().await? as usize;
    if length > 1 << 20 {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map_err(std::io::Error::other)
}

/// One call to node `to`, bounded by `within`; `None` when no reply came in time.
async fn call(to: u64, request: &Call, within: Duration) -> Option<Reply> {
    let exchange = async {
        let mut stream =
            turmoil::net::TcpStream::connect(format!("{}:{CLIENT_PORT}", host(to))).await.ok()?;
        write_frame(&mut stream, request).await.ok()?;
        read_frame::<Reply>(&mut stream).await.ok()
    };
    tokio::time::timeout(within, exchange).await.ok().flatten()
}

/// A client's clock, within half the drift bound of real time, started anywhere.
fn client_clock(dice: &mut StdRng) -> SimClock {
    let half = f64::from(DRIFT_PPM) / 2e6;
    SimClock { offset: dice.random_range(0.0..1e6), rate: 1.0 + dice.random_range(-half..half) }
}

/// Simulated time now, in milliseconds (0 outside the simulation's hosts).
fn now_ms() -> f64 {
    turmoil::sim_elapsed().unwrap_or_default().as_secs_f64() * 1_000.0
}

/// A member's client.
struct Member {
    session: SessionId,
    clock: SimClock,
    /// Sends the proof of having let go (`Beat::released`), as Baton's client does.
    aware: bool,
    /// The score it reports; one well above the holder's preempts it (AVEVA's policy).
    score: f64,
    silent_until: f64,
    /// The epoch of the last answer it took, when that answer was Secondary.
    released: Option<Epoch>,
}

/// Everything the clients and the operator share, and what the checks need.
struct World {
    dice: StdRng,
    members: Vec<Vec<Member>>,
    lose_answers: f64,
    duplicate: f64,
    faulty: bool,
    /// The grants the clients of each group took.
    grants: Vec<GroupGrants>,
    /// Per group, the timeout its last acknowledged change set, unless a later change's
    /// outcome is unknown.
    acknowledged_timeout: Vec<Option<u64>>,
    /// Per group, the timeout the clients last read from it (they heartbeat every half of it).
    timeout_read: Vec<u64>,
    /// Members removed, to be added back: (when, group, member).
    removed: Vec<(f64, usize, usize)>,
    /// Per group, when it last had everything it needs to elect a holder once the faults
    /// stopped: the first quiet moment, or its re-creation or a member's re-addition after
    /// that; and whether it was seen held in time since.
    settled_at: Vec<Option<f64>>,
    held_in_time: Vec<bool>,
    violation: Option<String>,
    trace: Rc<RefCell<Vec<String>>>,
}

type Shared = Rc<RefCell<World>>;

impl World {
    fn new(seed: u64) -> Self {
        let mut dice = StdRng::seed_from_u64(seed ^ 0x5eed);
        let members = (0..GROUPS)
            .map(|_| {
                MEMBERS
                    .iter()
                    .map(|m| Member {
                        session: SessionId::new(*m).expect("an id"),
                        clock: client_clock(&mut dice),
                        aware: dice.random_bool(0.5),
                        score: 100.0,
                        silent_until: 0.0,
                        released: None,
                    })
                    .collect()
            })
            .collect();
        Self {
            lose_answers: dice.random_range(0.0..0.2),
            duplicate: dice.random_range(0.0..0.1),
            dice,
            members,
            faulty: true,
            grants: (0..GROUPS)
                .map(|g| GroupGrants::new(format!("g{g}"), MEMBERS.map(String::from).to_vec()))
                .collect(),
            acknowledged_timeout: vec![Some(TIMEOUTS[0]); GROUPS],
            timeout_read: vec![TIMEOUTS[0]; GROUPS],
            removed: Vec::new(),
            settled_at: vec![None; GROUPS],
            held_in_time: vec![false; GROUPS],
            violation: None,
            trace: Rc::default(),
        }
    }

    /// Group `g` has had what it needs to elect a holder since now.
    fn settle(&mut self, g: usize) {
        self.settled_at[g] = Some(now_ms());
        self.held_in_time[g] = false;
    }

    /// Checks, for each group settled long enough ago, that a member holds a valid grant:
    /// within the longest failover timeout (a new leader waits out any grant its predecessor
    /// may have answered, under the longest timeout the group or a deleted group of its key
    /// had), half a timeout (the next member's heartbeat), an election and a second.
    fn check_held(&mut self, now: f64) {
        let longest = TIMEOUTS.iter().max().copied().unwrap_or_default() as f64;
        for g in 0..GROUPS {
            let Some(settled) = self.settled_at[g] else { continue };
            let interval = self.timeout_read[g] as f64 / 2.0;
            let deadline = settled + longest + interval + ELECTION_MAX_MS + 1_000.0;
            if self.held_in_time[g] || now < deadline {
                continue;
            }
            if self.grants[g].held_at(now) {
                self.held_in_time[g] = true;
            } else {
                self.violation = Some(format!(
                    "g{g} has no holder at {now:.0} ms, {:.0} ms after it settled",
                    now - settled
                ));
            }
        }
    }

    /// Whether every group was seen held in time since it last settled.
    fn all_checked(&self) -> bool {
        self.held_in_time.iter().all(|held| *held)
    }

    fn note(&self, line: String) {
        self.trace.borrow_mut().push(format!("{:.0} {line}", now_ms()));
    }

    /// A member takes a heartbeat's answer: checks it against every other member's grant.
    fn take(&mut self, g: usize, m: usize, sent_local: f64, answer: &baton_core::HeartbeatAnswer) {
        let now = now_ms();
        let member = &mut self.members[g][m];
        if answer.role == Role::Secondary {
            member.released = Some(answer.epoch);
            self.grants[g].release(m);
            return;
        }
        member.released = None;
        let Some(valid_for) = answer.valid_for_ms else {
            self.violation = Some(format!("{} got a grant without a validity", member.session));
            return;
        };
        let end = member.clock.real(sent_local + valid_for as f64);
        let session = member.session.clone();
        self.note(format!(
            "g{g} {session} {:?} epoch {} until {end:.0}",
            answer.role, answer.epoch.0
        ));
        if let Err(violation) = self.grants[g].take(m, answer.role, answer.epoch, end, now) {
            self.violation = Some(violation);
        }
    }
}

fn pick_node(world: &Shared) -> u64 {
    world.borrow_mut().dice.random_range(1..=NODES)
}

/// A member's client: heartbeats every half failover timeout to a random node.
async fn member(world: Shared, g: usize, m: usize) {
    let session = world.borrow().members[g][m].session.clone();
    loop {
        let (sent_local, clock, silent) = {
            let w = world.borrow();
            let member = &w.members[g][m];
            (member.clock.local(now_ms()), member.clock, member.silent_until > now_ms())
        };
        if !silent {
            let (aware, released, score) = {
                let w = world.borrow();
                let member = &w.members[g][m];
                (member.aware, member.released, member.score)
            };
            let beat = Beat {
                group: key(g),
                session: session.clone(),
                heartbeat: HeartbeatIn {
                    score: Score::new(score).expect("a score"),
                    heartbeat_time: None,
                    last_data_processed_time: None,
                },
                caller: IdentityName::new(CALLER).expect("a name"),
                released: if aware { released } else { None },
            };
            let to = pick_node(&world);
            let duplicate = {
                let mut w = world.borrow_mut();
                let chance = w.duplicate;
                w.dice.random_bool(chance)
            };
            if duplicate {
                let copy = Call::Heartbeat(beat.clone());
                let other = pick_node(&world);
                tokio::task::spawn_local(async move {
                    let _ = call(other, &copy, Duration::from_secs(2)).await;
                });
            }
            let give_up = Duration::from_secs_f64(
                ((clock.real(sent_local + GIVE_UP_MS) - now_ms()) / 1_000.0).max(0.001),
            );
            let reply = call(to, &Call::Heartbeat(beat), give_up).await;
            if std::env::var_os("BATON_CLUSTER_SIM_DEBUG").is_some() {
                world.borrow().note(format!("g{g} {session} via n{to}: {reply:?}"));
            }
            let mut w = world.borrow_mut();
            let lose = w.lose_answers;
            let lost = w.dice.random_bool(lose);
            if let Some(Reply::Heartbeat(Ok(HeartbeatOutcome::Answered(answer)))) = reply
                && !lost
            {
                w.take(g, m, sent_local, &answer);
            }
        }
        // The next heartbeat after 0.4 to 0.5 of the group's timeout as last read, on the
        // client's clock.
        let timeout_ms = world.borrow().timeout_read[g];
        let pause_local = world.borrow_mut().dice.random_range(0.4..0.5) * timeout_ms as f64;
        let next_real = clock.real(clock.local(now_ms()) + pause_local);
        tokio::time::sleep(Duration::from_secs_f64(((next_real - now_ms()) / 1_000.0).max(0.001)))
            .await;
    }
}

/// Sends a write to a random node; its response if acknowledged, `None` if the outcome is
/// unknown.
async fn write(world: &Shared, command: Command) -> Option<Response> {
    let to = pick_node(world);
    match call(to, &Call::Write(command), Duration::from_secs(3)).await {
        Some(Reply::Write(Ok(response))) => Some(response),
        _ => None,
    }
}

/// Reads group `g` (linearizably) from a random node; `None` if no answer came. The clients
/// learn its timeout from it.
async fn read_group(world: &Shared, g: usize) -> Option<Option<Box<baton_core::Group>>> {
    let to = pick_node(world);
    match call(to, &Call::Read(Query::Group(key(g))), Duration::from_secs(2)).await {
        Some(Reply::Read(Ok(QueryResult::Group(group)))) => {
            if let Some(group) = &group {
                world.borrow_mut().timeout_read[g] = group.config.failover_timeout_ms();
            }
            Some(group)
        }
        _ => None,
    }
}

/// Creates group `g` with its members; whether that was acknowledged.
async fn create_group(world: &Shared, g: usize) -> bool {
    let config = GroupConfig::new(None, None, TIMEOUTS[0]).expect("a timeout in range");
    let created = write(world, Command::CreateGroup { key: key(g), config, members: vec![] }).await;
    let mut acknowledged = matches!(created, Some(Response::Group { .. }));
    for m in MEMBERS {
        let session = SessionId::new(m).expect("an id");
        let command = Command::CreateSession { group: key(g), session, name: None };
        acknowledged &= matches!(write(world, command).await, Some(Response::Session { .. }));
    }
    acknowledged
}

/// Sets up the groups, then acts as an operator while the faults last.
async fn operator(world: Shared) {
    // Set-up: retried until acknowledged (the cluster may still be electing, and the first
    // leader creates the administrator from `admin_token` before anything it may do is).
    for g in 0..GROUPS {
        while !create_group(&world, g).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for g in 0..GROUPS {
        for m in 0..MEMBERS.len() {
            tokio::task::spawn_local(member(world.clone(), g, m));
        }
    }
    loop {
        let pause = world.borrow_mut().dice.random_range(100..1_200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let faulty = world.borrow().faulty;
        // Removed members come back (all of them once the faults stop).
        let due: Vec<(f64, usize, usize)> = {
            let mut w = world.borrow_mut();
            let now = now_ms();
            let due =
                w.removed.iter().filter(|(at, _, _)| *at <= now || !faulty).copied().collect();
            w.removed.retain(|(at, _, _)| *at > now && faulty);
            due
        };
        for (_, g, m) in due {
            let session = SessionId::new(MEMBERS[m]).expect("an id");
            if write(&world, Command::CreateSession { group: key(g), session, name: None })
                .await
                .is_none()
            {
                world.borrow_mut().removed.push((now_ms(), g, m));
            } else if !faulty {
                world.borrow_mut().settle(g);
            }
        }
        if !faulty {
            // Silenced members speak again, all equally well (no preemption is left to
            // start); a group deleted for good comes back.
            {
                let mut w = world.borrow_mut();
                for member in w.members.iter_mut().flatten() {
                    member.silent_until = 0.0;
                    member.score = 100.0;
                }
                for g in 0..GROUPS {
                    if w.settled_at[g].is_none() {
                        w.settle(g);
                    }
                }
            }
            for g in 0..GROUPS {
                match read_group(&world, g).await {
                    Some(None) => {
                        let created = create_group(&world, g).await;
                        let mut w = world.borrow_mut();
                        w.acknowledged_timeout[g] = created.then_some(TIMEOUTS[0]);
                        w.settle(g);
                    }
                    Some(Some(group)) => {
                        // Members whose re-addition was refused during the faults come back.
                        for member in MEMBERS {
                            let session = SessionId::new(member).expect("an id");
                            if group.sessions.contains_key(&session) {
                                continue;
                            }
                            let command =
                                Command::CreateSession { group: key(g), session, name: None };
                            if let Some(Response::Session { .. }) = write(&world, command).await {
                                world.borrow_mut().settle(g);
                            }
                        }
                        let mut w = world.borrow_mut();
                        if std::env::var_os("BATON_CLUSTER_SIM_DEBUG").is_some() {
                            w.note(format!("g{g} is {group:?}"));
                        }
                        let has = group.config.failover_timeout_ms();
                        if let Some(acknowledged) = w.acknowledged_timeout[g]
                            && has != acknowledged
                        {
                            w.violation = Some(format!(
                                "g{g} has a failover timeout of {has} ms, not the {acknowledged} ms \
                                 of its last acknowledged change"
                            ));
                        }
                    }
                    None => {}
                }
            }
            continue;
        }
        operate(&world).await;
    }
}

/// One operator action.
async fn operate(world: &Shared) {
    let (g, m, action) = {
        let mut w = world.borrow_mut();
        (
            w.dice.random_range(0..GROUPS),
            w.dice.random_range(0..MEMBERS.len()),
            w.dice.random_range(0..8),
        )
    };
    let session = SessionId::new(MEMBERS[m]).expect("an id");
    world.borrow().note(format!("operator {action} g{g} {session}"));
    match action {
        0 | 1 => {
            let Some(Some(group)) = read_group(world, g).await else { return };
            let to = world.borrow_mut().dice.random_bool(0.3).then_some(session);
            if let Ok(Some(command)) = group.forced_handover(to) {
                write(world, command).await;
            }
        }
        2 => {
            let (kind, ms) = {
                let mut w = world.borrow_mut();
                (w.dice.random_range(0..3), w.dice.random_range(0..3_000))
            };
            let primary_for_ms = match kind {
                0 => None,
                1 => Some(None),
                _ => Some(Some(ms)),
            };
            write(world, Command::SetOverride { group: key(g), session, primary_for_ms }).await;
        }
        3 => {
            let Some(Some(group)) = read_group(world, g).await else { return };
            let timeout = TIMEOUTS[world.borrow_mut().dice.random_range(0..TIMEOUTS.len())];
            let config = GroupConfig::new(None, None, timeout)
                .expect("a timeout in range")
                .with_policy(group.config.policy.clone());
            let response = write(world, Command::PutGroup { key: key(g), config }).await;
            let mut w = world.borrow_mut();
            match response {
                Some(Response::Group { .. }) => {
                    w.acknowledged_timeout[g] = Some(timeout);
                    w.timeout_read[g] = timeout;
                }
                Some(_) => {}
                None => w.acknowledged_timeout[g] = None,
            }
        }
        4 => {
            let command =
                Command::DeleteGroup { key: key(g), refuse_if_active: false, active: vec![] };
            if write(world, command).await.is_some() {
                let recreated = create_group(world, g).await;
                world.borrow_mut().acknowledged_timeout[g] = recreated.then_some(TIMEOUTS[0]);
            } else {
                world.borrow_mut().acknowledged_timeout[g] = None;
            }
        }
        5 => {
            let command = Command::DeleteSession { group: key(g), session };
            if let Some(Response::Deleted) = write(world, command).await {
                let mut w = world.borrow_mut();
                let back = now_ms() + w.dice.random_range(0.0..2_000.0);
                w.removed.push((back, g, m));
            }
        }
        6 => {
            // A member's score changes: well above the holder's, it preempts (a forced
            // hand-over of the policy's own).
            let mut w = world.borrow_mut();
            let score = [40.0, 70.0, 100.0][w.dice.random_range(0..3)];
            w.members[g][m].score = score;
        }
        _ => {
            let mut w = world.borrow_mut();
            let silence = w.dice.random_range(0.0..2.5 * TIMEOUTS[2] as f64);
            w.members[g][m].silent_until = now_ms() + silence;
        }
    }
}

/// Runs one world; how many times the baton moved from one member to another.
/// With `BATON_CLUSTER_SIM_TRACE` set, prints what happened (faults, operator actions,
/// grants taken).
fn run_world(seed: u64) -> Result<usize, String> {
    let world = World::new(seed);
    let trace = world.trace.clone();
    let result = simulate(seed, world);
    if std::env::var_os("BATON_CLUSTER_SIM_TRACE").is_some() {
        for line in trace.borrow().iter() {
            println!("{line}");
        }
    }
    result
}

fn simulate(seed: u64, world: World) -> Result<usize, String> {
    if let Ok(filter) = std::env::var("BATON_CLUSTER_SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .without_time()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
    // Its own stream, apart from the workload's and turmoil's.
    baton_raft::runtime::seed_thread_rng(seed ^ 0x6f70_656e_7261_6674);
    // Storage on tmpfs where there is one: the worlds sync their logs thousands of times.
    let base = std::env::var_os("BATON_SIM_DIR").map_or_else(
        || {
            let shm = std::path::PathBuf::from("/dev/shm");
            if shm.is_dir() { shm } else { std::env::temp_dir() }
        },
        Into::into,
    );
    let dirs = tempfile::Builder::new()
        .prefix("baton-cluster-sim")
        .tempdir_in(base)
        .expect("a temporary directory");
    let mut sim = turmoil::Builder::new()
        .simulation_duration(FAULTY + QUIET + Duration::from_secs(60))
        .min_message_latency(Duration::from_millis(0))
        .max_message_latency(Duration::from_millis(5))
        .tcp_capacity(4096)
        .rng_seed(seed)
        .build();
    let mut dice = StdRng::seed_from_u64(seed);
    let registry = Registry::default();
    for id in 1..=NODES {
        let registry = registry.clone();
        let dir = dirs.path().join(host(id));
        let drift = dice.random_range(-(DRIFT_PPM as i32) / 2..=(DRIFT_PPM as i32) / 2);
        let wall_offset = dice.random_range(-300i64..=300);
        sim.host(host(id), move || {
            let config = node_config(id, dir.clone());
            let registry = registry.clone();
            async move {
                // The node's wall clock, NTP-close to the others', read when it starts.
                let wall =
                    WALL_MS.saturating_add_signed(wall_offset).saturating_add(now_ms() as u64);
                node(config, Clock::starting_at(wall, drift), registry).await
            }
        });
    }
    let world: Shared = Rc::new(RefCell::new(world));
    let client_world = world.clone();
    sim.client("clients", async move {
        tokio::task::spawn_local(operator(client_world));
        std::future::pending::<()>().await;
        Ok(())
    });

    let nodes: Vec<String> = (1..=NODES).map(host).collect();
    let mut repairs: Vec<(Duration, Repair)> = Vec::new();
    let mut next_fault = Duration::from_millis(dice.random_range(2_000..3_000));
    let mut quiet = false;
    loop {
        let now = sim.elapsed();
        // The quiet time, and longer (bounded) while a group's liveness deadline is still to
        // come, so that every group is checked.
        if now >= FAULTY + QUIET && (world.borrow().all_checked() || now >= FAULTY + QUIET * 2) {
            break;
        }
        if !quiet && now >= FAULTY {
            quiet = true;
            world.borrow_mut().faulty = false;
            world.borrow_mut().lose_answers = 0.0;
            world.borrow_mut().duplicate = 0.0;
            for (_, repair) in repairs.drain(..) {
                repair.apply(&mut sim);
            }
        }
        repairs.retain(|(at, repair)| {
            if *at <= now {
                repair.apply(&mut sim);
                false
            } else {
                true
            }
        });
        if !quiet && now >= next_fault {
            next_fault = now + Duration::from_millis(dice.random_range(300..2_500));
            if let Some(repair) = fault(&mut sim, &mut dice, &nodes, &repairs) {
                let world = world.borrow();
                world.note(format!("at {now:?} fault {repair:?}"));
                repairs.push((now + Duration::from_millis(dice.random_range(200..3_000)), repair));
            }
        }
        sim.step().map_err(|e| format!("a host failed: {e}"))?;
        if quiet {
            world.borrow_mut().check_held(now_of(&sim));
        }
        if let Some(violation) = world.borrow_mut().violation.take() {
            return Err(violation);
        }
    }
    let world = world.borrow();
    if let Some(g) = world.held_in_time.iter().position(|held| !held) {
        return Err(format!(
            "g{g} was never seen held after it settled: {:?}",
            world.settled_at[g]
        ));
    }
    // Nodes that applied the same entries have the same state.
    let digests: BTreeMap<Option<u64>, Vec<(u64, String)>> =
        registry.borrow().iter().fold(BTreeMap::new(), |mut by_index, (id, coordinator)| {
            let digest = coordinator.digest();
            by_index.entry(digest.applied_index).or_default().push((*id, digest.digest));
            by_index
        });
    for nodes in digests.values() {
        if nodes.windows(2).any(|pair| pair[0].1 != pair[1].1) {
            return Err(format!("nodes at the same applied index differ: {nodes:?}"));
        }
    }
    Ok(world.grants.iter().map(GroupGrants::handovers).sum())
}

fn now_of(sim: &turmoil::Sim) -> f64 {
    sim.elapsed().as_secs_f64() * 1_000.0
}

/// A fault in force, and how it ends.
#[derive(Debug, Clone)]
enum Repair {
    Restart(String),
    Heal(Vec<(String, String)>),
    Release(String, Vec<String>),
}

impl Repair {
    fn apply(&self, sim: &mut turmoil::Sim) {
        match self {
            Self::Restart(node) => sim.bounce(node.as_str()),
            Self::Heal(links) => {
                for (a, b) in links {
                    sim.repair(a.as_str(), b.as_str());
                }
            }
            Self::Release(node, others) => {
                for other in others {
                    sim.release(node.as_str(), other.as_str());
                }
            }
        }
    }
}

/// Starts one fault, unless one already in force rules it out (one node down at a time);
/// what ends it.
fn fault(
    sim: &mut turmoil::Sim,
    dice: &mut StdRng,
    nodes: &[String],
    in_force: &[(Duration, Repair)],
) -> Option<Repair> {
    let a = nodes[dice.random_range(0..nodes.len())].clone();
    let b = nodes.iter().filter(|n| **n != a).nth(dice.random_range(0..nodes.len() - 1))?.clone();
    let everyone: Vec<String> =
        nodes.iter().filter(|n| **n != a).cloned().chain(["clients".to_string()]).collect();
    match dice.random_range(0..7) {
        0 | 1 => {
            if in_force.iter().any(|(_, r)| matches!(r, Repair::Restart(_))) {
                return None;
            }
            sim.crash(a.as_str());
            Some(Repair::Restart(a))
        }
        2 => {
            sim.partition(a.as_str(), b.as_str());
            Some(Repair::Heal(vec![(a, b)]))
        }
        3 => {
            sim.partition_oneway(a.as_str(), b.as_str());
            Some(Repair::Heal(vec![(a, b)]))
        }
        4 => {
            // The clients lose their requests to a node, or its answers.
            if dice.random_bool(0.5) {
                sim.partition_oneway("clients", a.as_str());
            } else {
                sim.partition_oneway(a.as_str(), "clients");
            }
            Some(Repair::Heal(vec![(a, "clients".into())]))
        }
        5 => {
            // A paused node: everything it sends and everything sent to it waits.
            for other in &everyone {
                sim.hold(a.as_str(), other.as_str());
            }
            Some(Repair::Release(a, everyone))
        }
        _ => {
            // Cut off from everyone.
            for other in &everyone {
                sim.partition(a.as_str(), other.as_str());
            }
            Some(Repair::Heal(everyone.into_iter().map(|other| (a.clone(), other)).collect()))
        }
    }
}
