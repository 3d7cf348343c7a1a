//! A short fuzz pass over the Raft RPC decoding: arbitrary bytes, and valid encodings of each
//! RPC with bytes flipped, inserted or cut, decoded as every message the internal listener
//! accepts. Decoding may fail; it must never panic or allocate without bound.

use baton_core::{
    Command, GroupConfig, GroupId, GroupKey, NamespaceId, Request, Scope, TenantId, Timestamp,
};
use baton_raft::typ::{AppendEntriesRequest, Entry, InstallSnapshotRequest, VoteRequest};
use openraft::{EntryPayload, LeaderId, LogId, Vote};
use proptest::prelude::*;

fn decode_all(bytes: &[u8]) {
    let _ = postcard::from_bytes::<AppendEntriesRequest>(bytes);
    let _ = postcard::from_bytes::<VoteRequest>(bytes);
    let _ = postcard::from_bytes::<InstallSnapshotRequest>(bytes);
    let _ = postcard::from_bytes::<Request>(bytes);
}

fn sample_append() -> Vec<u8> {
    let key = GroupKey {
        scope: Scope {
            tenant: TenantId::new("t").expect("id"),
            namespace: NamespaceId::new("n").expect("id"),
        },
        group: GroupId::new("g").expect("id"),
    };
    let config = GroupConfig::new(Some("name".into()), None, 30_000).expect("config");
    let request = Request {
        at: Timestamp(1),
        command: Command::CreateGroup { key, config, members: vec![] },
        actor: None,
    };
    let log_id = LogId::new(LeaderId::new(3, 1), 7);
    let rpc = AppendEntriesRequest {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(LogId::new(LeaderId::new(3, 1), 6)),
        entries: vec![Entry { log_id, payload: EntryPayload::Normal(vec![request]) }],
        leader_commit: Some(log_id),
    };
    postcard::to_allocvec(&rpc).expect("encode")
}

fn sample_vote() -> Vec<u8> {
    let rpc = VoteRequest {
        vote: Vote::new(4, 2),
        last_log_id: Some(LogId::new(LeaderId::new(3, 1), 9)),
    };
    postcard::to_allocvec(&rpc).expect("encode")
}

fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    prop::collection::vec((0..=len, any::<u8>(), 0u8..3), 1..8).prop_map(move |edits| {
        let mut bytes = seed.clone();
        for (i, b, kind) in edits {
            let i = i.min(bytes.len());
            match kind {
                0 if i < bytes.len() => bytes[i] = b,
                1 => bytes.insert(i, b),
                _ => bytes.truncate(i),
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_append_entries_never_panic_the_decoders(bytes in mutated(sample_append())) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_votes_never_panic_the_decoders(bytes in mutated(sample_vote())) {
        decode_all(&bytes);
    }
}

#[test]
fn the_samples_decode() {
    assert!(postcard::from_bytes::<AppendEntriesRequest>(&sample_append()).is_ok());
    assert!(postcard::from_bytes::<VoteRequest>(&sample_vote()).is_ok());
}
