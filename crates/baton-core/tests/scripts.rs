//! Goldenscript scenarios for the core: each file under `testscripts/` is a story of commands
//! applied to a `State` (and the leader's `Detector`) at explicit times, with every response.
//! Regenerate expected output with `UPDATE_GOLDENFILES=1 cargo test -p baton-core`, then read
//! the diff. After every step the runner checks that epochs never decrease.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;

use baton_core::detector::Detector;
use baton_core::heartbeat::{Beat, HeartbeatOutcome, HeartbeatStep, Ready};
use baton_core::{
    AccessRole, ClientTime, Command, Credential, Epoch, GroupCheckpoint, GroupConfig, GroupId,
    GroupKey, HeartbeatIn, Identity, IdentityName, NamespaceId, Query, QueryResult, Reason,
    Request, Response, Role, Scope, Score, SessionId, State, TenantId, Timestamp,
};
use test_each_file::test_each_path;

test_each_path! { in "crates/baton-core/testscripts" as scripts => run_script }

fn run_script(path: &std::path::Path) {
    goldenscript::run(&mut Runner::default(), path)
        .expect("the script runs and matches its golden output")
}

#[derive(goldenscript::Command)]
enum Cmd {
    /// `at <ms>`: the leader's clock for the following commands.
    At(u64),
    /// `create <group> timeout=<ms> [name=<text>] [tenant=<t>] [ns=<n>] [margin=<points>|never]
    /// [prioritized=true] [failback=true]`
    Create {
        group: String,
        #[arg(key)]
        timeout: u64,
        #[arg(key, optional)]
        name: Option<String>,
        #[arg(key, optional)]
        tenant: Option<String>,
        #[arg(key, optional)]
        ns: Option<String>,
        #[arg(key, optional)]
        margin: Option<String>,
        #[arg(key, optional)]
        prioritized: bool,
        #[arg(key, optional)]
        failback: bool,
    },
    /// `suspend <group> [off=true]`: nobody may hold the baton (or anyone may again).
    Suspend {
        group: String,
        #[arg(key, optional)]
        off: bool,
    },
    /// `member <group> <session> [priority=<n>] [enabled=<bool>]`
    Member {
        group: String,
        session: String,
        #[arg(key, optional)]
        priority: Option<u32>,
        #[arg(key, optional)]
        enabled: Option<bool>,
    },
    /// `put <group> timeout=<ms> [name=<text>]`
    Put {
        group: String,
        #[arg(key)]
        timeout: u64,
        #[arg(key, optional)]
        name: Option<String>,
    },
    /// `delete <group> [refuse_if_active=true]`
    Delete {
        group: String,
        #[arg(key, optional)]
        refuse_if_active: bool,
    },
    /// `get <group> [tenant=<t>] [ns=<n>]`
    Get {
        group: String,
        #[arg(key, optional)]
        tenant: Option<String>,
        #[arg(key, optional)]
        ns: Option<String>,
    },
    /// `list [tenant=<t>] [ns=<n>]`
    List {
        #[arg(key, optional)]
        tenant: Option<String>,
        #[arg(key, optional)]
        ns: Option<String>,
    },
    /// `join <group> <session>...`: adds sessions.
    Join(String, #[arg(many)] Vec<String>),
    /// `leave <group> <session>`: deletes a session.
    Leave(String, String),
    /// `heartbeat <group> <session> [score=<0-100>] [ldpt=<ms>] [released=<epoch>]`: the
    /// leader receives a heartbeat (`released`: with the client's proof that the last answer it
    /// took was Secondary at that epoch), commits what it calls for, and answers. Whether the
    /// answer reaches the client is the script's to say: the leader cannot know.
    Heartbeat {
        group: String,
        session: String,
        #[arg(key, optional)]
        score: Option<f64>,
        #[arg(key, optional)]
        ldpt: Option<i64>,
        #[arg(key, optional)]
        released: Option<u64>,
    },
    /// `tick`: the leader's detector runs; its commands are applied.
    Tick,
    /// `propose`: the detector runs; its commands are proposed but not yet applied.
    Propose,
    /// `commit`: the proposed commands are applied.
    Commit,
    /// `leader_change`: a new leader re-arms its detector from the replicated state.
    LeaderChange,
    /// `restart`: the next leader restarted: its state is rebuilt from its stored records.
    Restart,
    /// `force <group> [to=<session>] [standby=true]`: an operator forces a failover (to a
    /// member; only if another member can take over now).
    Force {
        group: String,
        #[arg(key, optional)]
        to: Option<String>,
        #[arg(key, optional)]
        standby: bool,
    },
    /// `lost_relinquish <group> <session>`: the holder's Relinquish commits, but the answer
    /// never reaches it (a timeout, a lost connection, the leader dying).
    LostRelinquish(String, String),
    /// `override <group> <session> [for=<ms>] [off=true]`
    Override {
        group: String,
        session: String,
        #[arg(key = "for", optional)]
        period: Option<u64>,
        #[arg(key, optional)]
        off: bool,
    },
    /// `status <group>`: holder, epoch, hand-over and every session's role.
    Status(String),
    /// `state`: every group, with its timestamps.
    State,
    /// `history <group>`: the group's decisions, oldest first, with the candidates of grants.
    History(String),
}

struct Runner {
    state: State,
    detector: Detector,
    now: u64,
    epochs: BTreeMap<GroupKey, Epoch>,
    proposed: Vec<Command>,
}

/// The identity every script's heartbeats come from: an administrator, who may use every group.
const CALLER: &str = "scripts";

impl Default for Runner {
    fn default() -> Self {
        let mut state = State::default();
        let name = IdentityName::new(CALLER).expect("a valid name");
        let identity =
            Identity::new(name, AccessRole::Admin, Credential { salt: vec![1], digest: vec![2] });
        let command = Command::BootstrapAdmin { identity };
        state.apply(&Request { at: Timestamp(0), command, actor: None });
        Self {
            state,
            detector: Detector::default(),
            now: 0,
            epochs: BTreeMap::new(),
            proposed: Vec::new(),
        }
    }
}

fn scope(tenant: &Option<String>, ns: &Option<String>) -> Result<Scope, Box<dyn Error>> {
    Ok(Scope {
        tenant: TenantId::new(tenant.clone().unwrap_or_else(|| "t".into()))?,
        namespace: NamespaceId::new(ns.clone().unwrap_or_else(|| "ns".into()))?,
    })
}

fn key(group: &str) -> Result<GroupKey, Box<dyn Error>> {
    scoped_key(group, &None, &None)
}

fn scoped_key(
    group: &str,
    tenant: &Option<String>,
    ns: &Option<String>,
) -> Result<GroupKey, Box<dyn Error>> {
    Ok(GroupKey { scope: scope(tenant, ns)?, group: GroupId::new(group)? })
}

/// A command in one line, naming only what a reader needs.
fn show_command(c: &Command) -> String {
    match c {
        Command::Grant { session, stage, reason, expected_epoch, replaces, .. } => {
            let replaces = replaces.as_ref().map_or(String::new(), |r| format!(" replacing {r}"));
            format!(
                "Grant {stage:?} to {session}{replaces} (epoch {} → {}, {reason:?})",
                expected_epoch.0,
                expected_epoch.0 + 1
            )
        }
        Command::Promote { session, .. } => format!("Promote {session}"),
        Command::Relinquish { session, .. } => format!("Relinquish {session}"),
        Command::Expire { session, .. } => format!("Expire {session}"),
        Command::RequestHandover { reason, .. } => format!("RequestHandover ({reason:?})"),
        Command::ClearExpiredOverride { session, .. } => format!("ClearExpiredOverride {session}"),
        Command::Checkpoint { groups } => {
            let groups: Vec<String> = groups
                .iter()
                .map(|c| {
                    let sessions: Vec<String> =
                        c.heartbeats.iter().map(|(s, _)| s.to_string()).collect();
                    format!("{} [{}]", c.group.group, sessions.join(", "))
                })
                .collect();
            format!("Checkpoint {}", groups.join("; "))
        }
        Command::CancelHandover { epoch, .. } => format!("CancelHandover (epoch {})", epoch.0),
        Command::PruneTombstones { tombstones } => {
            let tombstones: Vec<String> =
                tombstones.iter().map(|(k, e)| format!("{k} (epoch {})", e.0)).collect();
            format!("PruneTombstones {}", tombstones.join("; "))
        }
        other => format!("{other:?}"),
    }
}

fn show(response: &Response) -> String {
    match response {
        Response::Group { group, change } => {
            format!(
                "{change:?} {} timeout={}ms name={:?}",
                group.key,
                group.config.failover_timeout_ms(),
                group.config.name
            )
        }
        Response::Session { session, change } => format!("{change:?} session {}", session.id),
        Response::Deleted => "Deleted".into(),
        Response::Checkpointed => "Checkpointed".into(),
        Response::Identity(identity) => format!("Identity {}", identity.name),
        Response::Rejected(r) => format!("Rejected: {r}"),
    }
}

impl Runner {
    fn now(&self) -> Timestamp {
        Timestamp(self.now)
    }

    /// One detector pass, checked against the same pass in parts of one group each (as the
    /// leader runs it over many groups): the same decisions, the same checkpoints (batched per
    /// part), and the detector left the same.
    fn pass(&mut self) -> Vec<Command> {
        let now = self.now();
        let mut in_parts = self.detector.clone();
        let (mut parts, mut from) = in_parts.tick_part(&self.state, now, None, 1);
        while let Some(key) = from {
            let (more, next) = in_parts.tick_part(&self.state, now, Some(&key), 1);
            parts.extend(more);
            from = next;
        }
        let whole = self.detector.tick(&self.state, now);
        assert_eq!(split_checkpoints(&parts), split_checkpoints(&whole), "a pass in parts");
        assert_eq!(
            format!("{in_parts:?}"),
            format!("{:?}", self.detector),
            "after a pass in parts"
        );
        whole
    }

    fn apply(&mut self, command: Command) -> Result<Response, Box<dyn Error>> {
        let response = self.state.apply(&Request { at: self.now(), command, actor: None });
        for group in self.state.all_groups() {
            let last = self.epochs.insert(group.key.clone(), group.epoch).unwrap_or_default();
            if group.epoch < last {
                return Err(format!(
                    "invariant broken: epoch of {} went from {} to {}",
                    group.key, last.0, group.epoch.0
                )
                .into());
            }
        }
        Ok(response)
    }

    /// A heartbeat through the core's one heartbeat step, exactly as the leader serves it
    /// (its lease confirmed; each command it asks for committed at once).
    fn heartbeat(
        &mut self,
        group: &str,
        session: &str,
        score: Option<f64>,
        ldpt: Option<i64>,
        released: Option<u64>,
    ) -> Result<String, Box<dyn Error>> {
        let session = SessionId::new(session)?;
        let beat = Beat {
            group: key(group)?,
            session: session.clone(),
            heartbeat: HeartbeatIn {
                score: Score::new(score.unwrap_or(100.0))?,
                heartbeat_time: None,
                last_data_processed_time: ldpt.map(ClientTime),
            },
            caller: IdentityName::new(CALLER)?,
            released: released.map(Epoch),
        };
        let mut step = HeartbeatStep::new(beat);
        let mut out = String::new();
        let now = self.now();
        let outcome = loop {
            match step.ready(&self.state, &mut self.detector, now, true) {
                Ready::Answer(outcome) => break outcome,
                Ready::Propose(command) => {
                    let shown = show_command(&command);
                    let response = self.apply(command)?;
                    writeln!(out, "  commit {shown}: {}", brief(&response))?;
                    step.committed(&response);
                }
                Ready::ConfirmLease => {
                    return Err("the scripts' leader always holds its lease".into());
                }
                Ready::GiveUp => return Ok(format!("{out}{session}: no answer (superseded)")),
            }
        };
        let answer = match outcome {
            HeartbeatOutcome::Answered(answer) => answer,
            HeartbeatOutcome::TooFast { retry_after_ms } => {
                return Ok(format!("{session}: 429 too fast, retry after {retry_after_ms}ms"));
            }
            HeartbeatOutcome::Deciding { retry_after_ms } => {
                return Ok(format!(
                    "{session}: no answer while its successor is committed, retry after {retry_after_ms}ms"
                ));
            }
            HeartbeatOutcome::SessionNotFound => {
                return Ok(format!("{session}: 404 unknown session"));
            }
            HeartbeatOutcome::GroupNotFound => return Err("no such group".into()),
            HeartbeatOutcome::Forbidden => {
                return Err("the scripts' caller may use every group".into());
            }
        };
        let ldpt = answer.last_data_processed_time.map_or("-".to_string(), |t| t.0.to_string());
        let valid = answer.valid_for_ms.map_or(String::new(), |v| format!(" valid_for={v}ms"));
        Ok(format!("{out}{session}: {:?} epoch={} ldpt={ldpt}{valid}", answer.role, answer.epoch.0))
    }
}

fn brief(response: &Response) -> String {
    match response {
        Response::Rejected(r) => format!("rejected ({r})"),
        _ => "ok".into(),
    }
}

impl goldenscript::Runner for Runner {
    type Command = Cmd;

    fn run(&mut self, command: &Cmd, _: &goldenscript::Context) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        match command {
            Cmd::At(ms) => self.now = *ms,
            Cmd::Create { group, timeout, name, tenant, ns, margin, prioritized, failback } => {
                let preemption_margin = match margin.as_deref() {
                    None => Some(baton_core::DEFAULT_PREEMPTION_MARGIN),
                    Some("never") => None,
                    Some(points) => Some(points.parse::<u16>()? * 100),
                };
                let policy = baton_core::Policy {
                    preemption_margin,
                    prioritized: *prioritized,
                    failback: *failback,
                    suspended: false,
                };
                let config = GroupConfig::new(name.clone(), None, *timeout)?.with_policy(policy);
                let key = scoped_key(group, tenant, ns)?;
                writeln!(
                    out,
                    "{}",
                    show(&self.apply(Command::CreateGroup { key, config, members: vec![] })?)
                )?;
            }
            Cmd::Put { group, timeout, name } => {
                let config = GroupConfig::new(name.clone(), None, *timeout)?;
                writeln!(
                    out,
                    "{}",
                    show(&self.apply(Command::PutGroup { key: key(group)?, config })?)
                )?;
            }
            Cmd::Delete { group, refuse_if_active } => {
                let command = Command::DeleteGroup {
                    key: key(group)?,
                    refuse_if_active: *refuse_if_active,
                    active: Vec::new(),
                };
                let command = self.detector.prepare(command, &self.state, self.now());
                writeln!(out, "{}", show(&self.apply(command)?))?;
            }
            Cmd::Get { group, tenant, ns } => {
                match self.state.query(&Query::Group(scoped_key(group, tenant, ns)?)) {
                    QueryResult::Group(Some(g)) => {
                        writeln!(out, "{} timeout={}ms", g.key, g.config.failover_timeout_ms())?
                    }
                    other => writeln!(out, "{other:?}")?,
                }
            }
            Cmd::List { tenant, ns } => {
                if let QueryResult::Groups(groups) =
                    self.state.query(&Query::Groups(scope(tenant, ns)?))
                {
                    let ids: Vec<_> = groups.iter().map(|g| g.key.group.to_string()).collect();
                    writeln!(out, "[{}]", ids.join(", "))?;
                }
            }
            Cmd::Join(group, sessions) => {
                for s in sessions {
                    let command = Command::CreateSession {
                        group: key(group)?,
                        session: SessionId::new(s.as_str())?,
                        name: None,
                    };
                    writeln!(out, "{}", show(&self.apply(command)?))?;
                }
            }
            Cmd::Leave(group, session) => {
                let command = Command::DeleteSession {
                    group: key(group)?,
                    session: SessionId::new(session.as_str())?,
                };
                writeln!(out, "{}", show(&self.apply(command)?))?;
            }
            Cmd::Heartbeat { group, session, score, ldpt, released } => {
                writeln!(out, "{}", self.heartbeat(group, session, *score, *ldpt, *released)?)?
            }
            Cmd::Tick => {
                for command in self.pass() {
                    let shown = show_command(&command);
                    writeln!(out, "commit {shown}: {}", brief(&self.apply(command)?))?;
                }
            }
            Cmd::Propose => {
                self.proposed = self.pass();
                for command in &self.proposed {
                    writeln!(out, "proposed {}", show_command(command))?;
                }
            }
            Cmd::Commit => {
                for command in std::mem::take(&mut self.proposed) {
                    let shown = show_command(&command);
                    let response = self.apply(command.clone())?;
                    if matches!(response, Response::Rejected(_)) {
                        self.detector.refused(&command);
                    }
                    writeln!(out, "commit {shown}: {}", brief(&response))?;
                }
            }
            Cmd::LeaderChange => {
                self.detector = Detector::new(&self.state, self.now());
                writeln!(out, "new leader re-armed every deadline to {}+timeout", self.now)?;
            }
            Cmd::Restart => {
                let mut reloaded = State::default();
                for (key, record) in self.state.records() {
                    reloaded.restore(key, record);
                }
                assert_eq!(reloaded.digest(), self.state.digest(), "a restart loses nothing");
                self.state = reloaded;
                writeln!(out, "state rebuilt from its records")?;
            }
            Cmd::Suspend { group, off } => {
                let mut config =
                    self.state.group(&key(group)?).ok_or("no such group")?.config.clone();
                config.policy.suspended = !*off;
                let command = Command::PutGroup { key: key(group)?, config };
                writeln!(out, "{}", show(&self.apply(command)?))?;
            }
            Cmd::Member { group, session, priority, enabled } => {
                let command = Command::SetMembers {
                    group: key(group)?,
                    members: vec![baton_core::MemberChange {
                        session: SessionId::new(session.as_str())?,
                        priority: *priority,
                        enabled: *enabled,
                    }],
                };
                writeln!(out, "{}", show(&self.apply(command)?))?;
            }
            Cmd::Force { group, to, standby } => {
                let epoch = self.state.group(&key(group)?).ok_or("no such group")?.epoch;
                let command = Command::RequestHandover {
                    group: key(group)?,
                    expected_epoch: epoch,
                    reason: Reason::Forced,
                    to: to.as_deref().map(SessionId::new).transpose()?,
                    require_standby: *standby,
                    standby_ready: false,
                };
                let command = self.detector.prepare(command, &self.state, self.now());
                writeln!(
                    out,
                    "commit {}: {}",
                    show_command(&command),
                    brief(&self.apply(command)?)
                )?;
            }
            Cmd::LostRelinquish(group, session) => {
                let g = self.state.group(&key(group)?).ok_or("no such group")?;
                let epoch = g.holder.as_ref().ok_or("no holder")?.epoch;
                let command = Command::Relinquish {
                    group: key(group)?,
                    session: SessionId::new(session.as_str())?,
                    epoch,
                    last_data_processed_time: None,
                };
                writeln!(
                    out,
                    "commit {} (answer lost): {}",
                    show_command(&command),
                    brief(&self.apply(command)?)
                )?;
            }
            Cmd::Override { group, session, period, off } => {
                let primary_for_ms = if *off { None } else { Some(*period) };
                let command = Command::SetOverride {
                    group: key(group)?,
                    session: SessionId::new(session.as_str())?,
                    primary_for_ms,
                };
                writeln!(out, "{}", show(&self.apply(command)?))?;
            }
            Cmd::Status(group) => {
                let g = self.state.group(&key(group)?).ok_or("no such group")?;
                let holder = g.holder.as_ref().map_or("none".to_string(), |h| {
                    format!("{} ({:?}, epoch {}, {:?})", h.session, h.stage, h.epoch.0, h.reason)
                });
                writeln!(out, "holder: {holder}; epoch: {}", g.epoch.0)?;
                if let Some(h) = &g.handover {
                    writeln!(out, "hand-over from {} ({:?})", h.from, h.reason)?;
                }
                for s in g.sessions.values() {
                    let fresh = if self.detector.is_fresh(&g.key, &s.id, self.now()) {
                        "fresh"
                    } else {
                        "stale"
                    };
                    let role: Role = g.role_of(&s.id);
                    let pinned = if s.role_override.is_some() { " pinned" } else { "" };
                    writeln!(out, "  {}: {role:?} {fresh}{pinned}", s.id)?;
                }
            }
            Cmd::History(group) => {
                let QueryResult::History(decisions) =
                    self.state.query(&Query::History(key(group)?))
                else {
                    return Err("a history query answers a history".into());
                };
                for d in decisions {
                    let roles: Vec<_> =
                        d.roles.iter().map(|r| format!("{}→{:?}", r.session, r.role)).collect();
                    write!(
                        out,
                        "{} {:?} {:?} epoch {} [{}]",
                        d.at.0,
                        d.kind,
                        d.reason,
                        d.epoch.0,
                        roles.join(", ")
                    )?;
                    if let Some(h) = &d.handover {
                        write!(out, " from {}", h.from)?;
                        if let Some(to) = &h.to {
                            write!(out, " to {to}")?;
                        }
                    }
                    writeln!(out)?;
                    for c in &d.candidates {
                        let score = c.score.map_or("-".into(), |s| s.value().to_string());
                        writeln!(out, "    {} {:?} score={score}", c.session, c.verdict)?;
                    }
                }
            }
            Cmd::State => {
                for g in self.state.all_groups() {
                    writeln!(
                        out,
                        "{} timeout={}ms name={:?} created_at={} updated_at={}",
                        g.key,
                        g.config.failover_timeout_ms(),
                        g.config.name,
                        g.created_at.0,
                        g.updated_at.0
                    )?;
                }
            }
        }
        Ok(out)
    }
}

/// The commands other than checkpoints, in order, and every checkpoint's groups, in order.
fn split_checkpoints(commands: &[Command]) -> (Vec<&Command>, Vec<&GroupCheckpoint>) {
    let (checkpoints, others): (Vec<&Command>, Vec<&Command>) =
        commands.iter().partition(|c| matches!(c, Command::Checkpoint { .. }));
    let groups = checkpoints
        .into_iter()
        .flat_map(|c| match c {
            Command::Checkpoint { groups } => groups.iter(),
            _ => [].iter(),
        })
        .collect();
    (others, groups)
}
