//! Raft RPCs through our codec: each kind back to itself (requests compared by their bytes,
//! as openraft's request types have no equality), any cut an error, no input a panic.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership, StoredMembership, Vote,
};
use proptest::prelude::*;
use tern_core::meta::MetaCommand;
use tern_core::names::VhostName;

use super::*;
use crate::meta::Entry;

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 2), index)
}

fn membership() -> Membership<NodeId, BasicNode> {
    let nodes = BTreeMap::from([(1, BasicNode::new("a@h")), (2, BasicNode::new("b@h"))]);
    Membership::new(vec![BTreeSet::from([1, 2])], nodes)
}

fn requests() -> Vec<RaftRequest> {
    let entries = vec![
        Entry {
            log_id: log_id(3, 7),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(3, 8),
            payload: EntryPayload::Normal(MetaCommand::AddVhost {
                name: VhostName::from("v"),
            }),
        },
        Entry {
            log_id: log_id(3, 9),
            payload: EntryPayload::Membership(membership()),
        },
    ];
    vec![
        RaftRequest::Append(AppendEntriesRequest {
            vote: Vote::new_committed(3, 2),
            prev_log_id: Some(log_id(2, 6)),
            entries,
            leader_commit: Some(log_id(3, 7)),
        }),
        RaftRequest::Append(AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        }),
        RaftRequest::Vote(VoteRequest {
            vote: Vote::new(4, 3),
            last_log_id: Some(log_id(3, 9)),
        }),
        RaftRequest::Snapshot(InstallSnapshotRequest {
            vote: Vote::new_committed(3, 2),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(3, 9)),
                last_membership: StoredMembership::new(Some(log_id(3, 9)), membership()),
                snapshot_id: "3-2-9".into(),
            },
            offset: 65536,
            data: vec![1, 2, 3, 0, 255],
            done: true,
        }),
    ]
}

fn responses() -> Vec<RaftResponse> {
    vec![
        RaftResponse::Append(AppendEntriesResponse::Success),
        RaftResponse::Append(AppendEntriesResponse::PartialSuccess(Some(log_id(3, 8)))),
        RaftResponse::Append(AppendEntriesResponse::PartialSuccess(None)),
        RaftResponse::Append(AppendEntriesResponse::Conflict),
        RaftResponse::Append(AppendEntriesResponse::HigherVote(Vote::new(5, 3))),
        RaftResponse::Vote(VoteResponse {
            vote: Vote::new(4, 3),
            vote_granted: true,
            last_log_id: None,
        }),
        RaftResponse::Snapshot(InstallSnapshotResponse {
            vote: Vote::new_committed(3, 2),
        }),
    ]
}

#[test]
fn every_request_decodes_to_itself_and_any_cut_is_an_error() {
    for request in requests() {
        let bytes = encode_request(&request);
        let back = decode_request(bytes.clone()).expect("decodes");
        assert_eq!(encode_request(&back), bytes);
        for cut in 0..bytes.len() {
            assert!(decode_request(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
    let RaftRequest::Append(a) = decode_request(encode_request(&requests()[0])).unwrap() else {
        panic!("an append");
    };
    assert_eq!(a.entries.len(), 3);
    assert_eq!(a.entries[2].log_id, log_id(3, 9));
}

#[test]
fn every_response_decodes_to_itself_and_any_cut_is_an_error() {
    for response in responses() {
        let bytes = encode_response(&response);
        assert_eq!(decode_response(bytes.clone()), Ok(response));
        for cut in 0..bytes.len() {
            assert!(decode_response(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}

#[test]
fn a_count_of_more_entries_than_the_bytes_could_hold_is_refused() {
    let mut out = BytesMut::new();
    out.put_u8(1);
    put_vote(&mut out, &Vote::new(1, 1));
    put_opt_log_id(&mut out, None);
    put_opt_log_id(&mut out, None);
    out.put_u32(1_000_000);
    assert_eq!(
        decode_request(out.freeze()).err(),
        Some(RecordError::Field("entry count"))
    );
}

proptest! {
    #[test]
    fn no_input_makes_the_decoders_panic(input in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_request(Bytes::from(input.clone()));
        let _ = decode_response(Bytes::from(input));
    }
}
