//! How client commands print what the cluster answered: aligned tables for people, the
//! server's own JSON with `--json`. Times are UTC, to the millisecond.

use baton_api::ClusterStatus;
use baton_core::{Decision, Group, Role, Stage};
use serde_json::Value;

/// A leader timestamp (ms since the Unix epoch) as RFC 3339.
pub fn time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// Pretty JSON.
pub fn json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "Primary",
        Role::PendingPrimary => "PendingPrimary",
        Role::Secondary => "Secondary",
    }
}

/// The holder column: `session (Primary)`, or `-`.
fn holder(group: &Group) -> String {
    group.holder.as_ref().map_or("-".into(), |h| {
        let stage = if h.stage == Stage::Primary { "Primary" } else { "PendingPrimary" };
        format!("{} ({stage})", h.session)
    })
}

/// Groups as a table.
pub fn groups(groups: &[Group]) {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.key.group.to_string(),
                holder(g),
                g.epoch.0.to_string(),
                g.sessions.len().to_string(),
                format!("{} ms", g.config.failover_timeout_ms()),
                if g.handover.is_some() { "hand-over".into() } else { String::new() },
            ]
        })
        .collect();
    table(&["GROUP", "HOLDER", "EPOCH", "MEMBERS", "TIMEOUT", "STATE"], &rows);
}

/// One group: its settings and baton, then its members.
pub fn group(g: &Group) {
    println!("group       {}", g.key);
    if let Some(name) = &g.config.name {
        println!("name        {name}");
    }
    println!("timeout     {} ms", g.config.failover_timeout_ms());
    println!("holder      {}", holder(g));
    println!("epoch       {}", g.epoch.0);
    if let Some(h) = &g.handover {
        let to = h.to.as_ref().map(|t| format!(" to {t}")).unwrap_or_default();
        println!("hand-over   from {}{to} ({:?})", h.from, h.reason);
    }
    let policy = &g.config.policy;
    let margin = policy.preemption_margin.map_or("never".into(), |m| format!("{}", m / 100));
    println!(
        "policy      preemption margin {margin}{}{}{}",
        if policy.prioritized { ", prioritized" } else { "" },
        if policy.failback { ", failback" } else { "" },
        if policy.suspended { ", suspended" } else { "" },
    );
    if let Some(owner) = &g.owner {
        println!("owner       {owner}");
    }
    println!();
    members(g);
}

/// A group's members as a table.
pub fn members(g: &Group) {
    let rows: Vec<Vec<String>> = g
        .sessions
        .values()
        .map(|s| {
            let heard = s.last_heartbeat.as_ref();
            vec![
                s.id.to_string(),
                role_name(g.role_of(&s.id)).into(),
                heard.map_or("-".into(), |h| format!("{}", h.heartbeat.score.value())),
                heard.map_or("-".into(), |h| time(h.received_at.0)),
                s.priority.to_string(),
                if s.enabled { "yes".into() } else { "no".into() },
                s.role_override.as_ref().map_or(String::new(), |o| match o.expires_at {
                    Some(t) => format!("Primary until {}", time(t.0)),
                    None => "Primary".into(),
                }),
            ]
        })
        .collect();
    table(
        &["MEMBER", "ROLE", "SCORE", "LAST CHECKPOINT", "PRIORITY", "ENABLED", "OVERRIDE"],
        &rows,
    );
}

/// One member of a group, field by field.
pub fn member(g: &Group, id: &baton_core::SessionId) -> bool {
    let Some(s) = g.sessions.get(id) else { return false };
    println!("session     {}", s.id);
    println!("group       {}", g.key);
    if let Some(name) = &s.name {
        println!("name        {name}");
    }
    println!("role        {}", role_name(g.role_of(&s.id)));
    println!("epoch       {}", g.epoch.0);
    println!("created     {}", time(s.created_at.0));
    match &s.last_heartbeat {
        Some(h) => {
            println!("score       {}", h.heartbeat.score.value());
            println!(
                "checkpoint  {} (the leader checkpoints every timeout / 2)",
                time(h.received_at.0)
            );
        }
        None => println!("checkpoint  none yet"),
    }
    println!("priority    {}", s.priority);
    println!("enabled     {}", if s.enabled { "yes" } else { "no" });
    if let Some(o) = &s.role_override {
        let until =
            o.expires_at.map_or("until turned off".into(), |t| format!("until {}", time(t.0)));
        println!("override    Primary {until}");
    }
    true
}

fn roles(d: &Decision) -> String {
    d.roles
        .iter()
        .map(|r| format!("{}→{}", r.session, role_name(r.role)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn kind(d: &Decision) -> String {
    serde_json::to_value(d.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Decisions, oldest first, each grant with its candidates.
pub fn history(decisions: &[Decision]) {
    for d in decisions {
        println!(
            "{}  {:<18} {:<10} epoch {:<4} {}",
            time(d.at.0),
            kind(d),
            format!("{:?}", d.reason),
            d.epoch.0,
            roles(d)
        );
        if let Some(h) = &d.handover {
            let to = h.to.as_ref().map(|t| format!(" to {t}")).unwrap_or_default();
            println!("    from {}{to}", h.from);
        }
        for c in &d.candidates {
            let verdict = serde_json::to_value(c.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let score = c.score.map_or("-".into(), |s| s.value().to_string());
            println!(
                "    {:<24} {verdict:<14} score {score:<6} priority {}",
                c.session.to_string(),
                c.priority
            );
        }
    }
}

/// One live event as a line.
pub fn event(id: u64, d: &Decision) {
    println!(
        "{}  #{id:<8} {:<24} {:<18} {:<10} epoch {:<4} {}",
        time(d.at.0),
        d.group.to_string(),
        kind(d),
        format!("{:?}", d.reason),
        d.epoch.0,
        roles(d)
    );
}

/// The cluster as every member sees it: `views` pairs each member with its own status, if it
/// answered.
pub fn cluster(status: &ClusterStatus, views: &[Option<ClusterStatus>]) {
    let rows: Vec<Vec<String>> = status
        .members
        .iter()
        .zip(views)
        .map(|(m, view)| {
            let (role, term, applied) = match view {
                Some(v) => (
                    v.role.to_lowercase(),
                    v.term.to_string(),
                    v.applied_index.map_or("-".into(), |i| i.to_string()),
                ),
                None => ("unreachable".into(), "-".into(), "-".into()),
            };
            vec![
                m.id.to_string(),
                role,
                if m.voter { "voter".into() } else { "learner".into() },
                term,
                applied,
                m.api_addr.clone(),
                m.raft_addr.clone(),
            ]
        })
        .collect();
    table(&["NODE", "STATE", "MEMBER", "TERM", "APPLIED", "API", "RAFT"], &rows);
    match status.leader {
        Some(leader) => println!("\nleader {leader}, term {}", status.term),
        None => println!("\nno leader known to node {}", status.id),
    }
}

/// Identities (one object or a list) as a table, and any secret shown once.
pub fn identities(value: &Value) {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let field = |v: &Value, k: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    };
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let state = if row.get("revoked_at").is_some_and(|v| !v.is_null()) {
                "revoked"
            } else {
                "active"
            };
            vec![
                field(row, "name"),
                field(row, "role"),
                field(row, "tenant"),
                field(row, "signing_key"),
                state.into(),
            ]
        })
        .collect();
    table(&["NAME", "ROLE", "TENANT", "SIGNS", "STATE"], &table_rows);
    for row in rows {
        if let Some(token) = row.get("token").and_then(Value::as_str) {
            println!("\ntoken for {} (shown once; store it now):\n{token}", field(row, "name"));
        }
        if let Some(key) = row.get("api_key").and_then(Value::as_str) {
            println!("API key (request signing; shown once):\n{key}");
        }
    }
}
