//! Identities, group ownership, access rules and the audit trail, applied to the state.

use std::collections::BTreeSet;

use baton_core::identity::{AUDIT_CAPACITY, AUDIT_PER_TRAIL};
use baton_core::{
    AccessRole, Actor, AuditAction, Command, ConfigChange, Credential, GroupConfig, GroupId,
    GroupKey, Identity, IdentityName, NamespaceId, Query, QueryResult, Reason, Rejection, Request,
    Response, Scope, SessionId, State, TenantId, Timestamp,
};

fn name(s: &str) -> IdentityName {
    IdentityName::new(s).expect("valid")
}

fn identity(n: &str, role: AccessRole) -> Identity {
    Identity {
        name: name(n),
        role,
        token: Credential { salt: vec![1], digest: vec![2] },
        signing_key: None,
        created_at: Timestamp(0),
        rotated_at: None,
        revoked_at: None,
    }
}

fn member(n: &str, tenant: &str) -> Identity {
    identity(n, AccessRole::Member { tenant: TenantId::new(tenant).expect("valid") })
}

fn key(tenant: &str, group: &str) -> GroupKey {
    GroupKey {
        scope: Scope {
            tenant: TenantId::new(tenant).expect("valid"),
            namespace: NamespaceId::new("ns").expect("valid"),
        },
        group: GroupId::new(group).expect("valid"),
    }
}

fn by(who: &str) -> Option<Actor> {
    Some(Actor { identity: name(who), from: Some("10.0.0.9:5000".into()), request_key: None })
}

fn apply(state: &mut State, at: u64, command: Command, actor: Option<Actor>) -> Response {
    state.apply(&Request { at: Timestamp(at), command, actor })
}

fn audit(state: &State) -> Vec<baton_core::AuditEntry> {
    match state.query(&Query::Audit { group: None, after: 0, limit: usize::MAX }) {
        QueryResult::Audit(entries) => entries,
        other => panic!("unexpected {other:?}"),
    }
}

/// A state with an administrator `root`, `alice`, `bob` and `carol` in tenant t1, and `eve` in t2.
fn populated() -> State {
    let mut state = State::default();
    apply(
        &mut state,
        0,
        Command::BootstrapAdmin { identity: identity("root", AccessRole::Admin) },
        None,
    );
    for (n, t) in [("alice", "t1"), ("bob", "t1"), ("carol", "t1"), ("eve", "t2")] {
        let created =
            apply(&mut state, 0, Command::CreateIdentity { identity: member(n, t) }, by("root"));
        assert!(matches!(created, Response::Identity(_)), "{created:?}");
    }
    state
}

fn after_setup(state: &State) -> Vec<baton_core::AuditEntry> {
    audit(state).into_iter().filter(|e| e.group.is_some()).collect()
}

fn config() -> GroupConfig {
    GroupConfig::new(None, None, 5_000).expect("valid")
}

#[test]
fn the_bootstrap_administrator_is_created_once() {
    let mut state = State::default();
    let first = apply(
        &mut state,
        1,
        Command::BootstrapAdmin { identity: identity("root", AccessRole::Admin) },
        None,
    );
    assert!(matches!(first, Response::Identity(_)));
    let again = apply(
        &mut state,
        2,
        Command::BootstrapAdmin { identity: identity("root2", AccessRole::Admin) },
        None,
    );
    assert_eq!(again, Response::Rejected(Rejection::AlreadyBootstrapped));
    assert_eq!(state.identity_count(), 1);
}

#[test]
fn names_are_never_reused_and_a_revoked_identity_cannot_be_rotated() {
    let mut state = populated();
    let dup = apply(
        &mut state,
        2,
        Command::CreateIdentity { identity: member("alice", "t2") },
        by("root"),
    );
    assert_eq!(dup, Response::Rejected(Rejection::IdentityExists(name("alice"))));

    let revoked = apply(&mut state, 3, Command::RevokeIdentity { name: name("alice") }, by("root"));
    let Response::Identity(revoked) = revoked else { panic!("revoked: {revoked:?}") };
    assert_eq!(revoked.revoked_at, Some(Timestamp(3)));
    assert!(!state.identity(&name("alice")).expect("kept").is_active());

    let rotate = Command::RotateIdentity {
        name: name("alice"),
        token: Credential { salt: vec![9], digest: vec![9] },
        signing_key: None,
    };
    assert_eq!(
        apply(&mut state, 4, rotate, by("root")),
        Response::Rejected(Rejection::IdentityNotFound(name("alice")))
    );
    let recreate = apply(
        &mut state,
        5,
        Command::CreateIdentity { identity: member("alice", "t1") },
        by("root"),
    );
    assert_eq!(recreate, Response::Rejected(Rejection::IdentityExists(name("alice"))));
}

#[test]
fn a_group_is_owned_by_its_creator_and_allowed_owners_narrow_access() {
    let mut state = populated();
    apply(
        &mut state,
        1,
        Command::CreateGroup { key: key("t1", "g"), config: config(), members: vec![] },
        by("alice"),
    );
    let group = state.group(&key("t1", "g")).expect("created").clone();
    assert_eq!(group.owner, Some(name("alice")));

    let alice = member("alice", "t1").principal();
    let bob = member("bob", "t1").principal();
    let eve = member("eve", "t2").principal();
    let root = identity("root", AccessRole::Admin).principal();
    assert!(alice.may_use(&group) && bob.may_use(&group) && root.may_use(&group));
    assert!(!eve.may_use(&group), "another tenant never may");

    let owners = BTreeSet::from([name("carol")]);
    apply(&mut state, 2, Command::SetAllowedOwners { group: key("t1", "g"), owners }, by("alice"));
    let group = state.group(&key("t1", "g")).expect("exists").clone();
    assert!(alice.may_use(&group), "the owner keeps access");
    assert!(member("carol", "t1").principal().may_use(&group));
    assert!(!bob.may_use(&group), "a tenant member outside the list is refused");
    assert!(root.may_use(&group));
    assert!(!member("carol", "t2").principal().may_use(&group), "the tenant still bounds access");
}

#[test]
fn operator_changes_are_audited_with_who_and_from_where_and_decisions_are_not() {
    let mut state = populated();
    let g = key("t1", "g");
    let s = SessionId::new("s1").expect("valid");
    apply(
        &mut state,
        1,
        Command::CreateGroup { key: g.clone(), config: config(), members: vec![] },
        by("alice"),
    );
    apply(
        &mut state,
        2,
        Command::CreateGroup { key: g.clone(), config: config(), members: vec![] },
        by("alice"),
    );
    apply(
        &mut state,
        3,
        Command::CreateSession { group: g.clone(), session: s.clone(), name: None },
        by("alice"),
    );
    apply(
        &mut state,
        4,
        Command::SetOverride { group: g.clone(), session: s.clone(), primary_for_ms: Some(None) },
        by("bob"),
    );
    apply(
        &mut state,
        5,
        Command::Grant {
            group: g.clone(),
            session: s.clone(),
            stage: baton_core::Stage::Primary,
            expected_epoch: baton_core::Epoch(0),
            replaces: None,
            last_data_processed_time: None,
            reason: Reason::Vacant,
            considered: Vec::new(),
        },
        None,
    );
    apply(
        &mut state,
        6,
        Command::RequestHandover {
            group: g.clone(),
            expected_epoch: baton_core::Epoch(1),
            reason: Reason::Forced,
            to: None,
            require_standby: false,
            standby_ready: false,
        },
        by("root"),
    );
    apply(
        &mut state,
        7,
        Command::DeleteGroup { key: g.clone(), refuse_if_active: false, active: vec![] },
        by("root"),
    );

    let entries = after_setup(&state);
    let actions: Vec<_> = entries
        .iter()
        .map(|e| {
            (e.seq, e.at.0, e.actor.as_ref().map(|a| a.identity.to_string()), e.action.clone())
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            (
                6,
                1,
                Some("alice".into()),
                AuditAction::GroupConfigured {
                    created: true,
                    changes: ConfigChange::between(None, &config())
                }
            ),
            (7, 3, Some("alice".into()), AuditAction::SessionCreated { session: s.clone() }),
            (
                8,
                4,
                Some("bob".into()),
                AuditAction::OverrideSet { session: s.clone(), primary_for_ms: Some(None) }
            ),
            (
                9,
                6,
                Some("root".into()),
                AuditAction::FailoverForced { reason: Reason::Forced, to: None }
            ),
            (10, 7, Some("root".into()), AuditAction::GroupDeleted),
        ]
    );
    assert!(entries.iter().all(|e| e.group.as_ref() == Some(&g)));
    assert_eq!(entries[0].actor.as_ref().and_then(|a| a.from.as_deref()), Some("10.0.0.9:5000"));
}

/// Sets `g`'s configuration `times` times as `who`, from `at` on; checks that each change
/// names the records it touched: the group, the new entry and, once over a budget, the one
/// dropped.
fn reconfigure(state: &mut State, g: &GroupKey, who: &str, at: u64, times: u64, full_after: u64) {
    for i in 0..times {
        let config = GroupConfig::new(None, None, 1_000 + at + i).expect("valid");
        let touched = state
            .apply_tracked(&Request {
                at: Timestamp(at + i),
                command: Command::PutGroup { key: g.clone(), config },
                actor: by(who),
            })
            .touched;
        let expected = if i >= full_after { 3 } else { 2 };
        assert_eq!(touched.len(), expected, "change {i} of {g}: {touched:?}");
    }
}

fn of_tenant(entries: &[baton_core::AuditEntry], tenant: &str) -> Vec<u64> {
    entries
        .iter()
        .filter(|e| e.group.as_ref().is_some_and(|g| g.scope.tenant.as_str() == tenant))
        .map(|e| e.seq)
        .collect()
}

#[test]
fn one_tenants_changes_never_push_out_anothers_or_the_identity_events() {
    let mut state = populated();
    let created = |entries: &[baton_core::AuditEntry], who: &str| {
        entries.iter().any(|e| matches!(&e.action, AuditAction::IdentityCreated { name: n, .. } if n.as_str() == who))
    };
    reconfigure(&mut state, &key("t2", "g"), "eve", 1, 1, u64::MAX);
    let budget = AUDIT_PER_TRAIL as u64;
    // t1's trail already holds its three members' creation: it is full three changes early.
    reconfigure(&mut state, &key("t1", "g"), "alice", 10, budget + 3, budget - 3);
    let entries = audit(&state);
    let t1 = of_tenant(&entries, "t1");
    assert_eq!(t1.len(), AUDIT_PER_TRAIL, "t1 keeps its budget");
    assert_eq!(t1.last(), entries.last().map(|e| &e.seq), "and its newest entries");
    assert!(!created(&entries, "alice"), "t1's own oldest entries went first");
    assert_eq!(of_tenant(&entries, "t2").len(), 1, "t2's change stays");
    assert!(created(&entries, "eve"), "and so does t2's identity event");
    assert!(created(&entries, "root"), "and the administrator's");

    // A member rotating its own token over and over pushes out only its tenant's entries.
    for i in 0..budget + 1 {
        let token = Credential { salt: vec![9], digest: i.to_be_bytes().to_vec() };
        let rotate = Command::RotateIdentity { name: name("bob"), token, signing_key: None };
        apply(&mut state, 10_000 + i, rotate, by("bob"));
    }
    let entries = audit(&state);
    assert!(created(&entries, "eve") && created(&entries, "root"));
    assert_eq!(of_tenant(&entries, "t2").len(), 1);

    // Records round-trip through storage's view.
    let mut restored = State::default();
    for (key, record) in state.records() {
        restored.restore(key, record);
    }
    assert_eq!(restored, state);
    assert_eq!(restored.digest(), state.digest());
    // And keep their trails alike as the writes go on (a restored state finds its trails anew).
    for copy in [&mut state, &mut restored] {
        reconfigure(copy, &key("t1", "g"), "alice", 20_000, 3, 0);
        reconfigure(copy, &key("t2", "g"), "eve", 30_000, 2, u64::MAX);
    }
    assert_eq!(audit(&restored), audit(&state));
}

#[test]
fn beyond_the_whole_trails_capacity_the_longest_trail_gives_way() {
    let mut state = populated();
    let tenants = AUDIT_CAPACITY as usize / AUDIT_PER_TRAIL;
    let budget = AUDIT_PER_TRAIL as u64;
    for t in 0..tenants {
        // Once the whole trail is full (the cluster's five entries are in it too), each
        // change drops one entry of the longest trail.
        let room = AUDIT_CAPACITY.saturating_sub(5 + budget * t as u64);
        reconfigure(
            &mut state,
            &key(&format!("x{t}"), "g"),
            "root",
            budget * t as u64,
            budget,
            room,
        );
    }
    let entries = audit(&state);
    assert_eq!(entries.len() as u64, AUDIT_CAPACITY);
    assert_eq!(entries.iter().filter(|e| e.group.is_none()).count(), 5, "identity events stay");
    let kept: Vec<usize> =
        (0..tenants).map(|t| of_tenant(&entries, &format!("x{t}")).len()).collect();
    let fewest = kept.iter().min().copied().unwrap_or(0);
    assert!(kept.iter().max().copied().unwrap_or(0) - fewest <= 1, "trails evened out: {kept:?}");
    assert!(fewest >= AUDIT_PER_TRAIL - 5, "{kept:?}");
}

#[test]
fn access_is_judged_when_the_command_applies() {
    let mut state = populated();
    let g = key("t1", "g");
    apply(
        &mut state,
        1,
        Command::CreateGroup { key: g.clone(), config: config(), members: vec![] },
        by("alice"),
    );
    let delete =
        || Command::DeleteGroup { key: g.clone(), refuse_if_active: false, active: vec![] };

    // Another tenant's member can neither create in nor change t1.
    let forbidden = Response::Rejected(Rejection::Forbidden(name("eve")));
    let create_h = Command::CreateGroup { key: key("t1", "h"), config: config(), members: vec![] };
    assert_eq!(apply(&mut state, 2, create_h, by("eve")), forbidden);
    assert_eq!(apply(&mut state, 2, delete(), by("eve")), forbidden);

    // Narrowed to carol: bob's change is refused, and the group is as it was.
    let owners = BTreeSet::from([name("carol")]);
    apply(&mut state, 3, Command::SetAllowedOwners { group: g.clone(), owners }, by("alice"));
    let before = state.group(&g).cloned();
    let config = GroupConfig::new(None, None, 9_000).expect("valid");
    let put = Command::PutGroup { key: g.clone(), config };
    assert_eq!(
        apply(&mut state, 4, put, by("bob")),
        Response::Rejected(Rejection::Forbidden(name("bob")))
    );
    assert_eq!(state.group(&g).cloned(), before);

    // A member cannot manage identities, but may rotate its own token.
    let revoke_carol = Command::RevokeIdentity { name: name("carol") };
    assert_eq!(
        apply(&mut state, 5, revoke_carol, by("bob")),
        Response::Rejected(Rejection::Forbidden(name("bob")))
    );
    let rotate = |n: &str| Command::RotateIdentity {
        name: name(n),
        token: Credential { salt: vec![3], digest: vec![4] },
        signing_key: None,
    };
    assert!(matches!(apply(&mut state, 6, rotate("bob"), by("bob")), Response::Identity(_)));
    assert_eq!(
        apply(&mut state, 6, rotate("carol"), by("bob")),
        Response::Rejected(Rejection::Forbidden(name("bob")))
    );

    // Once revoked, a caller's commands are refused even if a node authenticated it earlier.
    apply(&mut state, 7, Command::RevokeIdentity { name: name("alice") }, by("root"));
    let refused = apply(&mut state, 8, delete(), by("alice"));
    assert_eq!(refused, Response::Rejected(Rejection::Unauthenticated(name("alice"))));
    assert!(state.group(&g).is_some());
}

#[test]
fn identities_and_audit_entries_survive_the_logs_encoding() {
    // The log and snapshots are postcard, which cannot decode every serde shape (internally
    // tagged enums, for one); every new record type is round-tripped here.
    let mut state = populated();
    let g = key("t1", "g");
    apply(
        &mut state,
        1,
        Command::CreateGroup { key: g.clone(), config: config(), members: vec![] },
        by("alice"),
    );
    let owners = BTreeSet::from([name("bob")]);
    apply(&mut state, 2, Command::SetAllowedOwners { group: g, owners }, by("alice"));
    for (key, record) in state.records() {
        let bytes = postcard::to_allocvec(&(key.clone(), record.clone())).expect("encode");
        let decoded: (baton_core::RecordKey, baton_core::Record) =
            postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(decoded, (key, record));
    }
    let request = Request {
        at: Timestamp(3),
        command: Command::CreateIdentity { identity: member("zed", "t9") },
        actor: by("root"),
    };
    let bytes = postcard::to_allocvec(&request).expect("encode");
    assert_eq!(postcard::from_bytes::<Request>(&bytes).expect("decode"), request);
}

#[test]
fn owners_only_groups_and_sharing_belong_to_the_owner() {
    let mut state = populated();
    let g = key("t1", "g");
    let mut config = config();
    config.owners_only = true;
    apply(
        &mut state,
        1,
        Command::CreateGroup { key: g.clone(), config, members: vec![] },
        by("alice"),
    );
    let group = state.group(&g).expect("created").clone();
    assert!(member("alice", "t1").principal().may_use(&group));
    assert!(!member("bob", "t1").principal().may_use(&group), "a fellow member is not admitted");
    assert!(identity("root", AccessRole::Admin).principal().may_use(&group));

    // bob cannot admit himself, by either form of the command; alice can.
    let add_bob = || Command::ChangeAllowedOwners {
        group: g.clone(),
        add: BTreeSet::from([name("bob")]),
        remove: BTreeSet::new(),
    };
    assert_eq!(
        apply(&mut state, 2, add_bob(), by("bob")),
        Response::Rejected(Rejection::Forbidden(name("bob")))
    );
    let set_bob =
        Command::SetAllowedOwners { group: g.clone(), owners: BTreeSet::from([name("bob")]) };
    assert_eq!(
        apply(&mut state, 2, set_bob, by("bob")),
        Response::Rejected(Rejection::Forbidden(name("bob")))
    );
    assert!(matches!(apply(&mut state, 3, add_bob(), by("alice")), Response::Group { .. }));
    let group = state.group(&g).expect("exists").clone();
    assert!(member("bob", "t1").principal().may_use(&group));
    // An allowed owner uses the group but does not decide who else may.
    let add_carol = Command::ChangeAllowedOwners {
        group: g.clone(),
        add: BTreeSet::from([name("carol")]),
        remove: BTreeSet::new(),
    };
    assert_eq!(
        apply(&mut state, 4, add_carol, by("bob")),
        Response::Rejected(Rejection::Forbidden(name("bob")))
    );
}

fn keyed(who: &str, request_key: &str) -> Option<Actor> {
    Some(Actor { identity: name(who), from: None, request_key: Some(request_key.into()) })
}

#[test]
fn a_keyed_write_applies_once_and_answers_the_same_again_on_any_retry() {
    let mut state = populated();
    let g = key("t1", "g");
    let config = GroupConfig::new(None, None, 10_000).expect("valid");
    let create = Command::CreateGroup { key: g.clone(), config, members: Vec::new() };
    apply(&mut state, 10, create, by("alice"));
    let join = |s: &str| Command::CreateSession {
        group: g.clone(),
        session: SessionId::new(s).expect("valid"),
        name: None,
    };
    let first = apply(&mut state, 20, join("s1"), keyed("alice", "k-1"));
    let audited = audit(&state).len();
    let digest = state.digest();

    // The same key again (a retry after a timeout): the first answer, nothing applied.
    let again = state.apply_tracked(&Request {
        at: Timestamp(30),
        command: join("s1"),
        actor: keyed("alice", "k-1"),
    });
    assert_eq!(again.response, first);
    assert!(again.touched.is_empty() && again.decision.is_none());
    assert_eq!((audit(&state).len(), state.digest()), (audited, digest));

    // The same key for another request is refused; another identity's key is its own.
    let other =
        Command::DeleteSession { group: g.clone(), session: SessionId::new("s1").expect("valid") };
    assert_eq!(
        apply(&mut state, 40, other, keyed("alice", "k-1")),
        Response::Rejected(Rejection::IdempotencyKeyReused)
    );
    assert!(matches!(
        apply(&mut state, 50, join("s2"), keyed("bob", "k-1")),
        Response::Session { .. }
    ));

    // Remembered outcomes are state: they survive storage and count in the digest.
    let mut restored = State::default();
    for (key, record) in state.records() {
        restored.restore(key, record);
    }
    assert_eq!(restored.digest(), state.digest());
    let retried = restored.apply(&Request {
        at: Timestamp(60),
        command: join("s1"),
        actor: keyed("alice", "k-1"),
    });
    assert_eq!(retried, first);

    // After the window the key is free again (and the write is judged afresh).
    let later = baton_core::idempotency::REMEMBER_MS + 100;
    let fresh = state.apply_tracked(&Request {
        at: Timestamp(later),
        command: join("s3"),
        actor: keyed("alice", "k-1"),
    });
    assert!(matches!(fresh.response, Response::Session { .. }), "{:?}", fresh.response);
    assert!(
        fresh.touched.contains(&baton_core::RecordKey::Remembered(name("alice"), "k-1".into()))
    );
    // bob's outcome, past the window too, was dropped by that keyed write.
    let bobs = baton_core::RecordKey::Remembered(name("bob"), "k-1".into());
    assert!(fresh.touched.contains(&bobs));
    assert!(!state.records().any(|(k, _)| k == bobs));
}

#[test]
fn a_configuration_change_is_audited_by_what_it_changed_never_the_whole_configuration() {
    let mut state = populated();
    let g = key("t1", "g");
    let big = |n: usize, value: &str| {
        let labels = (0..n).map(|i| (format!("{}{i}", "k".repeat(100)), value.repeat(200)));
        config().with_labels(labels.collect()).expect("valid")
    };
    apply(&mut state, 1, Command::PutGroup { key: g.clone(), config: big(60, "a") }, by("root"));
    let mut renamed = big(60, "a");
    renamed.name = Some("renamed".into());
    apply(&mut state, 2, Command::PutGroup { key: g.clone(), config: renamed.clone() }, by("root"));
    let mut relabelled = renamed.clone();
    relabelled.labels.insert(format!("{}0", "k".repeat(100)), "b".into());
    apply(&mut state, 3, Command::PutGroup { key: g, config: relabelled }, by("root"));
    let actions: Vec<_> = after_setup(&state).into_iter().map(|e| e.action).collect();
    let AuditAction::GroupConfigured { created: true, changes } = &actions[0] else {
        panic!("{:?}", actions[0])
    };
    let Some(ConfigChange::Labels { keys, more }) = changes.last() else { panic!("{changes:?}") };
    assert_eq!((keys.len(), *more), (16, 44), "{changes:?}");
    assert!(keys.iter().all(|k| k.chars().count() == 64), "{keys:?}");
    assert_eq!(
        actions[1],
        AuditAction::GroupConfigured { created: false, changes: vec![ConfigChange::Name] }
    );
    let AuditAction::GroupConfigured { created: false, changes } = &actions[2] else {
        panic!("{:?}", actions[2])
    };
    assert!(matches!(&changes[..], [ConfigChange::Labels { keys, more: 0 }] if keys.len() == 1));
    // The whole trail holds far less than one copy of the configuration (60 labels of 12 KB).
    let bytes: usize = actions.iter().map(|a| format!("{a:?}").len()).sum();
    assert!(bytes < 4_000, "{bytes} bytes of audit");
}

#[test]
fn one_callers_keyed_writes_never_push_out_anothers_remembered_outcome() {
    use baton_core::idempotency::REMEMBER_PER_IDENTITY;
    let mut state = populated();
    let g = key("t1", "g");
    let create = Command::CreateGroup { key: g.clone(), config: config(), members: Vec::new() };
    apply(&mut state, 1, create, by("root"));
    let join = |s: &str| Command::CreateSession {
        group: g.clone(),
        session: SessionId::new(s).expect("valid"),
        name: None,
    };
    let bobs = apply(&mut state, 2, join("bob"), keyed("bob", "mine"));
    // alice sends many more keyed writes than her budget, at later times than bob's.
    for i in 0..REMEMBER_PER_IDENTITY + 50 {
        apply(&mut state, 3 + i as u64, join("alice"), keyed("alice", &format!("k-{i}")));
    }
    let remembered = |who: &str| {
        state
            .records()
            .filter(
                |(k, _)| matches!(k, baton_core::RecordKey::Remembered(n, _) if n.as_str() == who),
            )
            .count()
    };
    assert_eq!(remembered("alice"), REMEMBER_PER_IDENTITY);
    assert_eq!(remembered("bob"), 1);
    // bob's retry still gets his first answer.
    let retried = apply(&mut state, 5_000, join("bob"), keyed("bob", "mine"));
    assert_eq!(retried, bobs);
    // alice's newest are the ones kept.
    let last = format!("k-{}", REMEMBER_PER_IDENTITY + 49);
    let newest = baton_core::RecordKey::Remembered(name("alice"), last);
    assert!(state.records().any(|(k, _)| k == newest));
}

#[test]
fn a_remembered_answer_keeps_a_groups_key_not_the_group_and_a_retry_reads_the_group() {
    let mut state = populated();
    let g = key("t1", "g");
    let labels = (0..60).map(|i| (format!("k{i}"), "v".repeat(250)));
    let big = config().with_labels(labels.collect()).expect("valid");
    let put = Command::PutGroup { key: g.clone(), config: big };
    let first = apply(&mut state, 1, put.clone(), keyed("alice", "k-1"));
    let Response::Group { group, .. } = &first else { panic!("{first:?}") };
    assert_eq!(group.config.labels.len(), 60);
    let remembered = state
        .records()
        .find(|(k, _)| matches!(k, baton_core::RecordKey::Remembered(..)))
        .map(|(_, record)| format!("{record:?}"))
        .expect("remembered");
    assert!(remembered.len() < 2_000, "{} bytes remembered", remembered.len());
    // A retry answers the group as it is now, with the first answer's kind of change.
    let join = Command::CreateSession {
        group: g.clone(),
        session: SessionId::new("s").expect("valid"),
        name: None,
    };
    apply(&mut state, 2, join, by("alice"));
    let retried = apply(&mut state, 3, put, keyed("alice", "k-1"));
    let Response::Group { group: now, change } = &retried else { panic!("{retried:?}") };
    let Response::Group { change: first_change, .. } = &first else { unreachable!() };
    assert_eq!((now.sessions.len(), now.config.labels.len(), change), (1, 60, first_change));
    // Deleted since: not found, rather than a group that no longer exists.
    let delete = Command::DeleteGroup { key: g.clone(), refuse_if_active: false, active: vec![] };
    apply(&mut state, 4, delete, by("alice"));
    let put_again = Command::PutGroup { key: g.clone(), config: config() };
    assert_eq!(
        apply(&mut state, 5, put_again, keyed("alice", "k-1")),
        Response::Rejected(Rejection::GroupNotFound(g))
    );
}
