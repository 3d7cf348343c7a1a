//! Deleted groups' tombstones in storage's view: what a prune leaves behind.

use baton_core::{
    Command, Epoch, GroupId, GroupKey, NamespaceId, Record, RecordKey, Request, Scope, SessionId,
    State, TenantId, Timestamp, Tombstone,
};

fn key(group: &str) -> GroupKey {
    let scope = Scope {
        tenant: TenantId::new("t").expect("an id"),
        namespace: NamespaceId::new("ns").expect("an id"),
    };
    GroupKey { scope, group: GroupId::new(group).expect("an id") }
}

/// A version before tombstones had keys of their own stored one under its group's key. Once
/// pruned, it must be gone from storage too, or it would come back at the node's next restart
/// (and with it a re-created group's epoch would differ between nodes).
#[test]
fn a_tombstone_stored_under_its_groups_key_is_pruned_for_good() {
    let tombstone = Tombstone {
        epoch: Epoch(5),
        holder: Some(SessionId::new("a").expect("an id")),
        failover_timeout_ms: 10_000,
    };
    let mut stored = vec![(RecordKey::Group(key("g")), Record::Tombstone(key("g"), tombstone))];
    let mut state = State::from_records(stored.clone());
    assert!(state.tombstone(&key("g")).is_some());
    let prune = Command::PruneTombstones { tombstones: vec![(key("g"), Epoch(5))] };
    let touched = state.apply_tracked(&Request { at: Timestamp(1), command: prune, actor: None });
    // Storage writes each touched key's record, or deletes it when there is none.
    for record_key in touched.touched {
        stored.retain(|(k, _)| *k != record_key);
        if let Some(record) = state.record(&record_key) {
            stored.push((record_key, record));
        }
    }
    let restarted = State::from_records(stored);
    assert!(restarted.tombstone(&key("g")).is_none(), "the old record is gone");
    assert_eq!(restarted, state);
}
