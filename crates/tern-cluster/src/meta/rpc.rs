//! The metadata group's Raft RPCs in our binary form, as the node links carry them in a
//! `Service::Raft` call: a kind byte, then the fields (log ids, votes and entries as the log's
//! records write them, `records`). Decoding a peer's bytes never panics and never allocates
//! more than the bytes that came justify.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::SnapshotMeta;

use super::records::{
    get_entry, get_opt_log_id, get_stored_membership, get_u64, get_u8, get_vote, put_entry,
    put_opt_log_id, put_stored_membership, put_vote, RecordError,
};
use super::{NodeId, TypeConfig};

/// A Raft RPC from the leader (append, snapshot) or a candidate (vote).
pub enum RaftRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftRequest`] of the same kind.
#[derive(Debug, PartialEq, Eq)]
pub enum RaftResponse {
    Append(AppendEntriesResponse<NodeId>),
    Vote(VoteResponse<NodeId>),
    Snapshot(InstallSnapshotResponse<NodeId>),
}

mod kind {
    pub const APPEND: u8 = 1;
    pub const VOTE: u8 = 2;
    pub const SNAPSHOT: u8 = 3;
}

mod append {
    pub const SUCCESS: u8 = 0;
    pub const PARTIAL: u8 = 1;
    pub const CONFLICT: u8 = 2;
    pub const HIGHER_VOTE: u8 = 3;
}

/// Entries in one append at most (a bound on what a count may claim).
const ENTRIES_MAX: u32 = 1 << 20;

pub fn encode_request(request: &RaftRequest) -> Bytes {
    let mut out = BytesMut::new();
    match request {
        RaftRequest::Append(r) => {
            out.put_u8(kind::APPEND);
            put_vote(&mut out, &r.vote);
            put_opt_log_id(&mut out, r.prev_log_id.as_ref());
            put_opt_log_id(&mut out, r.leader_commit.as_ref());
            out.put_u32(r.entries.len() as u32);
            r.entries.iter().for_each(|e| put_entry(&mut out, e));
        }
        RaftRequest::Vote(r) => {
            out.put_u8(kind::VOTE);
            put_vote(&mut out, &r.vote);
            put_opt_log_id(&mut out, r.last_log_id.as_ref());
        }
        RaftRequest::Snapshot(r) => {
            out.put_u8(kind::SNAPSHOT);
            put_vote(&mut out, &r.vote);
            put_opt_log_id(&mut out, r.meta.last_log_id.as_ref());
            put_stored_membership(&mut out, &r.meta.last_membership);
            put_bytes(&mut out, r.meta.snapshot_id.as_bytes());
            out.put_u64(r.offset);
            put_bytes(&mut out, &r.data);
            out.put_u8(u8::from(r.done));
        }
    }
    out.freeze()
}

pub fn decode_request(mut buf: Bytes) -> Result<RaftRequest, RecordError> {
    let b = &mut buf;
    let request = match get_u8(b)? {
        kind::APPEND => RaftRequest::Append(get_append(b)?),
        kind::VOTE => RaftRequest::Vote(VoteRequest {
            vote: get_vote(b)?,
            last_log_id: get_opt_log_id(b)?,
        }),
        kind::SNAPSHOT => RaftRequest::Snapshot(get_snapshot(b)?),
        other => return Err(RecordError::Tag(other)),
    };
    finished(b)?;
    Ok(request)
}

fn get_append(b: &mut Bytes) -> Result<AppendEntriesRequest<TypeConfig>, RecordError> {
    let vote = get_vote(b)?;
    let prev_log_id = get_opt_log_id(b)?;
    let leader_commit = get_opt_log_id(b)?;
    if b.remaining() < 4 {
        return Err(RecordError::Truncated);
    }
    let count = b.get_u32();
    // An entry takes at least 25 bytes (log id and payload kind): no more are believed.
    if count > ENTRIES_MAX || count as usize > b.remaining() / 25 {
        return Err(RecordError::Field("entry count"));
    }
    let entries = (0..count)
        .map(|_| get_entry(b))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppendEntriesRequest {
        vote,
        prev_log_id,
        entries,
        leader_commit,
    })
}

fn get_snapshot(b: &mut Bytes) -> Result<InstallSnapshotRequest<TypeConfig>, RecordError> {
    let vote = get_vote(b)?;
    let last_log_id = get_opt_log_id(b)?;
    let last_membership = get_stored_membership(b)?;
    let snapshot_id =
        String::from_utf8(get_bytes(b)?.to_vec()).map_err(|_| RecordError::Field("snapshot id"))?;
    let offset = get_u64(b)?;
    let data = get_bytes(b)?.to_vec();
    let done = get_u8(b)? != 0;
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id,
    };
    Ok(InstallSnapshotRequest {
        vote,
        meta,
        offset,
        data,
        done,
    })
}

pub fn encode_response(response: &RaftResponse) -> Bytes {
    let mut out = BytesMut::new();
    match response {
        RaftResponse::Append(r) => {
            out.put_u8(kind::APPEND);
            match r {
                AppendEntriesResponse::Success => out.put_u8(append::SUCCESS),
                AppendEntriesResponse::PartialSuccess(id) => {
                    out.put_u8(append::PARTIAL);
                    put_opt_log_id(&mut out, id.as_ref());
                }
                AppendEntriesResponse::Conflict => out.put_u8(append::CONFLICT),
                AppendEntriesResponse::HigherVote(v) => {
                    out.put_u8(append::HIGHER_VOTE);
                    put_vote(&mut out, v);
                }
            }
        }
        RaftResponse::Vote(r) => {
            out.put_u8(kind::VOTE);
            put_vote(&mut out, &r.vote);
            out.put_u8(u8::from(r.vote_granted));
            put_opt_log_id(&mut out, r.last_log_id.as_ref());
        }
        RaftResponse::Snapshot(r) => {
            out.put_u8(kind::SNAPSHOT);
            put_vote(&mut out, &r.vote);
        }
    }
    out.freeze()
}

pub fn decode_response(mut buf: Bytes) -> Result<RaftResponse, RecordError> {
    let b = &mut buf;
    let response = match get_u8(b)? {
        kind::APPEND => RaftResponse::Append(match get_u8(b)? {
            append::SUCCESS => AppendEntriesResponse::Success,
            append::PARTIAL => AppendEntriesResponse::PartialSuccess(get_opt_log_id(b)?),
            append::CONFLICT => AppendEntriesResponse::Conflict,
            append::HIGHER_VOTE => AppendEntriesResponse::HigherVote(get_vote(b)?),
            _ => return Err(RecordError::Field("append response")),
        }),
        kind::VOTE => RaftResponse::Vote(VoteResponse {
            vote: get_vote(b)?,
            vote_granted: get_u8(b)? != 0,
            last_log_id: get_opt_log_id(b)?,
        }),
        kind::SNAPSHOT => RaftResponse::Snapshot(InstallSnapshotResponse { vote: get_vote(b)? }),
        other => return Err(RecordError::Tag(other)),
    };
    finished(b)?;
    Ok(response)
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn get_bytes(b: &mut Bytes) -> Result<Bytes, RecordError> {
    if b.remaining() < 4 {
        return Err(RecordError::Truncated);
    }
    let len = b.get_u32() as usize;
    if b.remaining() < len {
        return Err(RecordError::Truncated);
    }
    Ok(b.split_to(len))
}

fn finished(b: &Bytes) -> Result<(), RecordError> {
    if b.is_empty() {
        Ok(())
    } else {
        Err(RecordError::Field("trailing bytes"))
    }
}

#[cfg(test)]
mod tests;
