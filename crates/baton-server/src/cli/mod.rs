//! The `baton` binary's client commands: they talk to a running cluster's native API through
//! any of its nodes (each node forwards to the leader; a node that cannot be reached or has no
//! leader is passed over for the next one given). Tables by default, the server's JSON with
//! `--json`, and exit codes in [`http::exit`].

pub mod http;
pub mod run;
mod show;

use std::io::Write as _;
use std::time::{Duration, Instant};

use baton_api::ClusterStatus;
use baton_core::{Decision, Group, GroupKey, SessionId};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use http::{Client, Failure, exit};

/// Exit codes, for every client command's help.
pub const EXIT_CODES: &str = "Exit codes: 0 done · 1 no node reachable, no leader, or outcome \
unknown · 2 bad usage · 3 not found · 4 refused (conflict, invalid) · 5 not authorized · \
6 gave up waiting";

/// Where and as whom client commands call.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// API URLs of any nodes, comma-separated; tried in order.
    #[arg(long, env = "BATON_URL", default_value = "http://127.0.0.1:7001", global = true)]
    pub url: String,
    /// Your token.
    #[arg(long, env = "BATON_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for an answer, asking again meanwhile while the cluster elects a leader.
    #[arg(long, default_value_t = 10, global = true)]
    pub timeout: u64,
}

impl Connection {
    fn client(&self) -> Result<Client, Failure> {
        let token = self.token.clone().ok_or_else(|| {
            Failure::new(exit::USAGE, "give your token with --token or BATON_TOKEN")
        })?;
        Client::new(&self.url, token, Duration::from_secs(self.timeout))
    }
}

/// `baton cluster ...`
#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Every member with its own view: state, term, applied index, addresses.
    ///
    /// Example: baton cluster status --url http://10.0.0.1:7001,http://10.0.0.2:7001
    Status,
    /// Add a node as a learner and wait until it has caught up with the log. Start the new node
    /// first, with an empty `initial_members`.
    ///
    /// Example: baton cluster add-learner 4 --raft-addr 10.0.0.4:7101 --api-addr 10.0.0.4:7001
    AddLearner {
        /// The new node's id.
        id: u64,
        /// Its Raft (internal) address.
        #[arg(long)]
        raft_addr: String,
        /// Its public API address.
        #[arg(long)]
        api_addr: String,
    },
    /// Make a learner a voter.
    ///
    /// Example: baton cluster promote 4
    Promote {
        /// The learner's id.
        id: u64,
    },
    /// Remove a node (voter or learner) from the cluster.
    ///
    /// Example: baton cluster remove 4
    Remove {
        /// The node's id.
        id: u64,
    },
}

/// `baton groups ...`
#[derive(Subcommand, Debug)]
pub enum GroupsCmd {
    /// The groups of a tenant's namespace you may use.
    ///
    /// Example: baton groups list acme/plant
    List {
        /// TENANT/NAMESPACE
        scope: String,
    },
    /// One group: settings, holder, epoch, hand-over, members.
    ///
    /// Example: baton groups show acme/plant/collectors
    Show {
        /// TENANT/NAMESPACE/GROUP
        group: String,
    },
    /// Create a group with its members.
    ///
    /// Example: baton groups create acme/plant/collectors --timeout-ms 30000 --member a --member b
    Create {
        /// TENANT/NAMESPACE/GROUP
        group: String,
        /// Failover timeout in milliseconds (1 s to 1 day).
        #[arg(long)]
        timeout_ms: u64,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// A member (repeatable).
        #[arg(long = "member")]
        members: Vec<String>,
        /// Never preempt a healthy holder for a better score.
        #[arg(long)]
        no_preemption: bool,
    },
    /// Delete a group. Its holder's last grant is still honoured until it lapses.
    ///
    /// Example: baton groups delete acme/plant/collectors
    Delete {
        /// TENANT/NAMESPACE/GROUP
        group: String,
    },
    /// The group's last decisions, each grant with the members considered and why.
    ///
    /// Example: baton groups history acme/plant/collectors
    History {
        /// TENANT/NAMESPACE/GROUP
        group: String,
    },
}

/// `baton sessions ...`
#[derive(Subcommand, Debug)]
pub enum SessionsCmd {
    /// A group's members with their roles.
    ///
    /// Example: baton sessions list acme/plant/collectors
    List {
        /// TENANT/NAMESPACE/GROUP
        group: String,
    },
    /// One member.
    ///
    /// Example: baton sessions show acme/plant/collectors a
    Show {
        /// TENANT/NAMESPACE/GROUP
        group: String,
        /// The member's id.
        session: String,
    },
}

/// `baton events ...`
#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// Print decisions as they happen (one group, or all groups for an administrator).
    /// Reconnects to the next node, without losing events, when a node goes away.
    ///
    /// Example: baton events follow acme/plant/collectors --count 5
    Follow {
        /// TENANT/NAMESPACE/GROUP (default: every group).
        group: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
}

/// A failover: `baton failover GROUP [--to S] [--wait SECONDS]`.
#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// TENANT/NAMESPACE/GROUP
    pub group: String,
    /// The member to hand the baton to (default: the best other member).
    #[arg(long)]
    pub to: Option<String>,
    /// Wait up to this many seconds for the baton to reach another member, showing progress.
    #[arg(long)]
    pub wait: Option<u64>,
}

/// A role override: `baton override GROUP SESSION primary|off [--for-seconds N]`.
#[derive(Args, Debug)]
pub struct OverrideArgs {
    /// TENANT/NAMESPACE/GROUP
    pub group: String,
    /// The member.
    pub session: String,
    /// `primary` pins the baton to the member; `off` removes the pin.
    #[arg(value_parser = ["primary", "off"])]
    pub value: String,
    /// Keep the pin this many seconds only.
    #[arg(long)]
    pub for_seconds: Option<u64>,
}

pub(crate) fn group_key(text: &str) -> Result<GroupKey, Failure> {
    let usage =
        || Failure::new(exit::USAGE, format!("expected TENANT/NAMESPACE/GROUP, got {text:?}"));
    let mut parts = text.split('/');
    let (Some(t), Some(n), Some(g), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(usage());
    };
    Ok(GroupKey {
        scope: baton_core::Scope {
            tenant: baton_core::TenantId::new(t)
                .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?,
            namespace: baton_core::NamespaceId::new(n)
                .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?,
        },
        group: baton_core::GroupId::new(g).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?,
    })
}

fn scope_path(text: &str) -> Result<String, Failure> {
    match text.split('/').collect::<Vec<_>>()[..] {
        [t, n] if !t.is_empty() && !n.is_empty() => Ok(format!("/groups/{t}/{n}")),
        _ => Err(Failure::new(exit::USAGE, format!("expected TENANT/NAMESPACE, got {text:?}"))),
    }
}

fn group_path(key: &GroupKey) -> String {
    format!("/groups/{}/{}/{}", key.scope.tenant, key.scope.namespace, key.group)
}

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Failure> {
    serde_json::from_value(value)
        .map_err(|e| Failure::new(exit::UNAVAILABLE, format!("unexpected answer: {e}")))
}

async fn read_group(client: &Client, key: &GroupKey) -> Result<Group, Failure> {
    decode(client.call("GET", &group_path(key), None).await?)
}

/// Runs a command and turns its outcome into an exit code, printing any failure.
pub fn finish(result: Result<(), Failure>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("baton: {}", f.message);
            std::process::ExitCode::from(f.code)
        }
    }
}

/// `baton cluster ...`
pub fn cluster(conn: &Connection, command: ClusterCmd) -> Result<(), Failure> {
    let client = conn.client()?;
    http::block_on(async {
        let answer = match command {
            ClusterCmd::Status => {
                let status: ClusterStatus =
                    decode(client.call("GET", "/cluster/status", None).await?)?;
                let scheme =
                    if client.urls()[0].starts_with("https://") { "https" } else { "http" };
                let mut views = Vec::new();
                for m in &status.members {
                    let one = Client::new(
                        &format!("{scheme}://{}", m.api_addr),
                        conn.token.clone().unwrap_or_default(),
                        Duration::from_secs(2),
                    )?;
                    let view = one.call("GET", "/cluster/status", None).await.ok();
                    views.push(view.and_then(|v| serde_json::from_value::<ClusterStatus>(v).ok()));
                }
                if conn.json {
                    show::json(&json!({ "status": status, "members": views }));
                } else {
                    show::cluster(&status, &views);
                }
                return Ok(());
            }
            ClusterCmd::AddLearner { id, raft_addr, api_addr } => {
                eprintln!(
                    "adding node {id} as a learner; waiting for it to catch up with the log…"
                );
                let body = json!({ "id": id, "raft_addr": raft_addr, "api_addr": api_addr });
                client.call("POST", "/cluster/learners", Some(body)).await?
            }
            ClusterCmd::Promote { id } => {
                client.call("POST", &format!("/cluster/nodes/{id}/promote"), None).await?
            }
            ClusterCmd::Remove { id } => {
                client.call("DELETE", &format!("/cluster/nodes/{id}"), None).await?
            }
        };
        let status: ClusterStatus = decode(answer)?;
        if conn.json {
            show::json(&status);
        } else {
            let views: Vec<_> = status.members.iter().map(|_| None).collect();
            show::cluster(&status, &views);
        }
        Ok(())
    })
}

/// `baton groups ...`
pub fn groups(conn: &Connection, command: GroupsCmd) -> Result<(), Failure> {
    let client = conn.client()?;
    http::block_on(async {
        match command {
            GroupsCmd::List { scope } => {
                let value = client.call("GET", &scope_path(&scope)?, None).await?;
                if conn.json {
                    show::json(&value);
                } else {
                    let groups: Vec<Group> = decode(value["groups"].clone())?;
                    show::groups(&groups);
                }
            }
            GroupsCmd::Show { group } => {
                let group = read_group(&client, &group_key(&group)?).await?;
                if conn.json { show::json(&group) } else { show::group(&group) }
            }
            GroupsCmd::Create { group, timeout_ms, name, members, no_preemption } => {
                let key = group_key(&group)?;
                let members: Vec<Value> = members.iter().map(|m| json!({ "id": m })).collect();
                let mut body = json!({
                    "id": key.group.to_string(),
                    "name": name,
                    "failover_timeout_ms": timeout_ms,
                    "members": members,
                });
                if no_preemption {
                    body["policy"] = json!({ "preemption_margin": null });
                }
                let path = format!("/groups/{}/{}", key.scope.tenant, key.scope.namespace);
                let group: Group = decode(client.call("POST", &path, Some(body)).await?)?;
                if conn.json { show::json(&group) } else { show::group(&group) }
            }
            GroupsCmd::Delete { group } => {
                let key = group_key(&group)?;
                client.call("DELETE", &group_path(&key), None).await?;
                if conn.json {
                    show::json(&json!({ "deleted": key.to_string() }));
                } else {
                    println!("deleted {key}");
                }
            }
            GroupsCmd::History { group } => {
                let key = group_key(&group)?;
                let value =
                    client.call("GET", &format!("{}/history", group_path(&key)), None).await?;
                if conn.json {
                    show::json(&value);
                } else {
                    let decisions: Vec<Decision> = decode(value["decisions"].clone())?;
                    show::history(&decisions);
                }
            }
        }
        Ok(())
    })
}

/// `baton sessions ...`
pub fn sessions(conn: &Connection, command: SessionsCmd) -> Result<(), Failure> {
    let client = conn.client()?;
    http::block_on(async {
        match command {
            SessionsCmd::List { group } => {
                let group = read_group(&client, &group_key(&group)?).await?;
                if conn.json { show::json(&group.sessions) } else { show::members(&group) }
            }
            SessionsCmd::Show { group, session } => {
                let key = group_key(&group)?;
                let id = SessionId::new(session)
                    .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
                let group = read_group(&client, &key).await?;
                let not_found =
                    || Failure::new(exit::NOT_FOUND, format!("{key} has no member {id}"));
                if conn.json {
                    show::json(group.sessions.get(&id).ok_or_else(not_found)?);
                } else if !show::member(&group, &id) {
                    return Err(not_found());
                }
            }
        }
        Ok(())
    })
}

/// `baton failover ...`: starts a forced hand-over and, with `--wait`, follows it until the
/// baton has reached another member.
pub fn failover(conn: &Connection, args: FailoverArgs) -> Result<(), Failure> {
    let client = conn.client()?;
    let key = group_key(&args.group)?;
    http::block_on(async {
        let mut path = format!("{}/failover", group_path(&key));
        if let Some(to) = &args.to {
            path.push_str(&format!("?to={to}"));
        }
        let started = client.call("POST", &path, None).await?;
        let from = started["from"].as_str().unwrap_or_default().to_string();
        let Some(wait) = args.wait else {
            if conn.json {
                show::json(&started);
            } else {
                println!(
                    "hand-over of {key} started: {from} lets go at its next heartbeat (epoch {})",
                    started["epoch"]
                );
            }
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(wait);
        let begun = Instant::now();
        loop {
            let group = read_group(&client, &key).await?;
            match &group.holder {
                Some(h) if h.session.as_str() != from => {
                    if conn.json {
                        show::json(&group);
                    } else {
                        eprintln!();
                        println!("{} holds the baton of {key} (epoch {})", h.session, h.epoch.0);
                    }
                    return Ok(());
                }
                // Cancelled: nobody could take over, and the holder kept the baton.
                Some(h) if group.handover.is_none() => {
                    eprintln!();
                    return Err(Failure::new(
                        exit::REFUSED,
                        format!(
                            "the hand-over was called off: nobody could take over, {} keeps the baton",
                            h.session
                        ),
                    ));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                eprintln!();
                return Err(Failure::new(
                    exit::TIMED_OUT,
                    format!("the baton has not moved after {wait} s"),
                ));
            }
            eprint!("\rwaiting for {from} to let go… {:.1} s", begun.elapsed().as_secs_f64());
            let _ = std::io::stderr().flush();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// `baton override ...` (AVEVA's role override).
pub fn role_override(conn: &Connection, args: OverrideArgs) -> Result<(), Failure> {
    let client = conn.client()?;
    let key = group_key(&args.group)?;
    let mut body = json!({ "Value": if args.value == "primary" { 1 } else { 0 } });
    if let Some(seconds) = args.for_seconds {
        body["ExpirationPeriod"] = json!(seconds * 1000);
    }
    let path = format!(
        "/api/v1/tenants/{}/namespaces/{}/clientfailover/groups/{}/clientsessions/{}/roleoverride",
        key.scope.tenant, key.scope.namespace, key.group, args.session
    );
    http::block_on(async {
        let answer = client.call("POST", &path, Some(body)).await?;
        if conn.json {
            show::json(&answer);
        } else {
            println!("role override of {} in {key}: {}", args.session, args.value);
        }
        Ok(())
    })
}

/// `baton tokens ...`: identities.
pub fn tokens(
    conn: &Connection,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(), Failure> {
    let client = conn.client()?;
    http::block_on(async {
        let value = client.call(method, path, body).await?;
        if conn.json {
            show::json(&value)
        } else {
            show::identities(&value)
        }
        Ok(())
    })
}

/// `baton events follow ...`
pub fn events(conn: &Connection, command: EventsCmd) -> Result<(), Failure> {
    let EventsCmd::Follow { group, count, seconds } = command;
    let client = conn.client()?;
    let path = match &group {
        Some(g) => format!("{}/events", group_path(&group_key(g)?)),
        None => "/events".to_string(),
    };
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    http::block_on(async {
        let mut seen = 0u64;
        let mut last_id: Option<u64> = None;
        let mut failures = 0usize;
        loop {
            let base = client.urls()[failures % client.urls().len()].clone();
            let headers: Vec<(&str, String)> =
                last_id.map(|id| ("last-event-id", id.to_string())).into_iter().collect();
            let mut response = match client.open_stream(&base, &path, &headers).await {
                Ok(r) => {
                    failures = 0;
                    r
                }
                Err(f) if f.code != exit::UNAVAILABLE => return Err(f),
                Err(f) => {
                    failures += 1;
                    if failures > 3 * client.urls().len() {
                        return Err(f);
                    }
                    eprintln!("baton: {}; trying again", f.message);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut buffer = String::new();
            loop {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if left == Some(Duration::ZERO) {
                    return Ok(());
                }
                let chunk = match left {
                    Some(left) => match tokio::time::timeout(left, response.chunk()).await {
                        Ok(chunk) => chunk,
                        Err(_) => return Ok(()),
                    },
                    None => response.chunk().await,
                };
                let Ok(Some(chunk)) = chunk else {
                    eprintln!("baton: the stream from {base} ended; reconnecting");
                    failures += 1;
                    break;
                };
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let field = |name: &str| {
                        block
                            .lines()
                            .find_map(|l| l.strip_prefix(name))
                            .map(|v| v.trim().to_string())
                    };
                    match (field("event:").as_deref(), field("id:"), field("data:")) {
                        (Some("lagged"), _, _) => {
                            eprintln!(
                                "baton: some events were dropped before they could be sent; read the state again"
                            );
                        }
                        (Some(_), Some(id), Some(data)) => {
                            let id: u64 = id.parse().unwrap_or_default();
                            last_id = Some(id);
                            if conn.json {
                                println!("{data}");
                            } else {
                                let decision: Decision =
                                    decode(serde_json::from_str(&data).unwrap_or_default())?;
                                show::event(id, &decision);
                            }
                            let _ = std::io::stdout().flush();
                            seen += 1;
                            if count.is_some_and(|c| seen >= c) {
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    })
}
