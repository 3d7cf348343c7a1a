//! Goldenscript scenarios for the core: each file under `testscripts/` is a story of commands
//! applied to a `State` at explicit times, with every response and the resulting state.
//! Regenerate expected output with `UPDATE_GOLDENFILES=1 cargo test -p baton-core`, then read
//! the diff.

use std::error::Error;
use std::fmt::Write as _;

use baton_core::{
    Command, GroupConfig, GroupId, GroupKey, NamespaceId, Query, QueryResult, Request, Response,
    Scope, State, TenantId, Timestamp,
};
use test_each_file::test_each_path;

test_each_path! { in "crates/baton-core/testscripts" as scripts => run_script }

fn run_script(path: &std::path::Path) {
    goldenscript::run(&mut Runner::default(), path)
        .expect("the script runs and matches its golden output")
}

#[derive(goldenscript::Command)]
enum Cmd {
    /// `at <ms>`: sets the leader time of the following commands.
    At(u64),
    /// `create <group> timeout=<ms> [name=<text>] [tenant=<t>] [ns=<n>]`
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
    },
    /// `put <group> timeout=<ms> [name=<text>]`
    Put {
        group: String,
        #[arg(key)]
        timeout: u64,
        #[arg(key, optional)]
        name: Option<String>,
    },
    /// `delete <group>`
    Delete(String),
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
    /// `state`: every group, with its timestamps.
    State,
}

#[derive(Default)]
struct Runner {
    state: State,
    now: u64,
}

fn scope(tenant: &Option<String>, ns: &Option<String>) -> Result<Scope, Box<dyn Error>> {
    Ok(Scope {
        tenant: TenantId::new(tenant.clone().unwrap_or_else(|| "t".into()))?,
        namespace: NamespaceId::new(ns.clone().unwrap_or_else(|| "ns".into()))?,
    })
}

fn key(
    group: &str,
    tenant: &Option<String>,
    ns: &Option<String>,
) -> Result<GroupKey, Box<dyn Error>> {
    Ok(GroupKey { scope: scope(tenant, ns)?, group: GroupId::new(group)? })
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
        Response::Deleted => "Deleted".into(),
        Response::Rejected(r) => format!("Rejected: {r}"),
    }
}

impl Runner {
    fn apply(&mut self, command: Command) -> String {
        show(&self.state.apply(&Request { at: Timestamp(self.now), command }))
    }
}

impl goldenscript::Runner for Runner {
    type Command = Cmd;

    fn run(&mut self, command: &Cmd, _: &goldenscript::Context) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        match command {
            Cmd::At(ms) => self.now = *ms,
            Cmd::Create { group, timeout, name, tenant, ns } => {
                let config = GroupConfig::new(name.clone(), None, *timeout)?;
                let key = key(group, tenant, ns)?;
                writeln!(out, "{}", self.apply(Command::CreateGroup { key, config }))?;
            }
            Cmd::Put { group, timeout, name } => {
                let config = GroupConfig::new(name.clone(), None, *timeout)?;
                let key = key(group, &None, &None)?;
                writeln!(out, "{}", self.apply(Command::PutGroup { key, config }))?;
            }
            Cmd::Delete(group) => {
                let key = key(group, &None, &None)?;
                writeln!(out, "{}", self.apply(Command::DeleteGroup { key }))?;
            }
            Cmd::Get { group, tenant, ns } => {
                match self.state.query(&Query::Group(key(group, tenant, ns)?)) {
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
            Cmd::State => {
                for (_, record) in self.state.records() {
                    let baton_core::Record::Group(g) = record;
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
