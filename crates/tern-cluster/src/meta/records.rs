//! What the metadata log's records and snapshot files hold, in our own binary form: log
//! entries (with their metadata command), votes, truncations, purges, committed marks, and
//! snapshot headers. Each record starts with a tag byte; numbers are big-endian.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership, StoredMembership, Vote,
};
use tern_core::meta::{decode_command, encode_command};

use super::{Entry, NodeId};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("metadata log record cut short")]
    Truncated,
    #[error("unknown metadata log record tag {0}")]
    Tag(u8),
    #[error("bad metadata command in the log: {0}")]
    Command(#[from] tern_core::meta::CodecError),
    #[error("bad field in a metadata log record: {0}")]
    Field(&'static str),
}

/// One record of the metadata log.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    Entry(Entry),
    /// Entries from this index on are gone (a leader overwrote them).
    Truncate {
        from: u64,
    },
    /// Entries up to this one are in a snapshot and gone from the log.
    Purge(LogId<NodeId>),
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
}

mod tag {
    pub const ENTRY: u8 = 1;
    pub const TRUNCATE: u8 = 2;
    pub const PURGE: u8 = 3;
    pub const VOTE: u8 = 4;
    pub const COMMITTED: u8 = 5;
}

mod payload {
    pub const BLANK: u8 = 0;
    pub const NORMAL: u8 = 1;
    pub const MEMBERSHIP: u8 = 2;
}

pub fn encode(record: &LogRecord, out: &mut BytesMut) {
    match record {
        LogRecord::Entry(e) => {
            out.put_u8(tag::ENTRY);
            put_entry(out, e);
        }
        LogRecord::Truncate { from } => {
            out.put_u8(tag::TRUNCATE);
            out.put_u64(*from);
        }
        LogRecord::Purge(id) => {
            out.put_u8(tag::PURGE);
            put_log_id(out, id);
        }
        LogRecord::Vote(v) => {
            out.put_u8(tag::VOTE);
            put_vote(out, v);
        }
        LogRecord::Committed(id) => {
            out.put_u8(tag::COMMITTED);
            put_opt_log_id(out, id.as_ref());
        }
    }
}

pub fn decode(mut buf: Bytes) -> Result<LogRecord, RecordError> {
    let buf = &mut buf;
    Ok(match get_u8(buf)? {
        tag::ENTRY => LogRecord::Entry(get_entry(buf)?),
        tag::TRUNCATE => LogRecord::Truncate {
            from: get_u64(buf)?,
        },
        tag::PURGE => LogRecord::Purge(get_log_id(buf)?),
        tag::VOTE => LogRecord::Vote(get_vote(buf)?),
        tag::COMMITTED => LogRecord::Committed(get_opt_log_id(buf)?),
        other => return Err(RecordError::Tag(other)),
    })
}

/// An entry's log id and payload (a log record's body, and how the node links carry entries).
pub fn put_entry(out: &mut BytesMut, e: &Entry) {
    put_log_id(out, &e.log_id);
    match &e.payload {
        EntryPayload::Blank => out.put_u8(payload::BLANK),
        EntryPayload::Normal(cmd) => {
            out.put_u8(payload::NORMAL);
            encode_command(cmd, out);
        }
        EntryPayload::Membership(m) => {
            out.put_u8(payload::MEMBERSHIP);
            put_membership(out, m);
        }
    }
}

pub fn get_entry(buf: &mut Bytes) -> Result<Entry, RecordError> {
    let log_id = get_log_id(buf)?;
    let payload = match get_u8(buf)? {
        payload::BLANK => EntryPayload::Blank,
        payload::NORMAL => EntryPayload::Normal(decode_command(buf)?),
        payload::MEMBERSHIP => EntryPayload::Membership(get_membership(buf)?),
        _ => return Err(RecordError::Field("entry payload")),
    };
    Ok(Entry { log_id, payload })
}

pub fn put_vote(out: &mut BytesMut, v: &Vote<NodeId>) {
    out.put_u64(v.leader_id().term);
    out.put_u64(v.leader_id().node_id);
    out.put_u8(u8::from(v.is_committed()));
}

pub fn get_vote(buf: &mut Bytes) -> Result<Vote<NodeId>, RecordError> {
    let (term, node) = (get_u64(buf)?, get_u64(buf)?);
    Ok(match get_u8(buf)? {
        0 => Vote::new(term, node),
        _ => Vote::new_committed(term, node),
    })
}

pub fn put_log_id(out: &mut BytesMut, id: &LogId<NodeId>) {
    out.put_u64(id.leader_id.term);
    out.put_u64(id.leader_id.node_id);
    out.put_u64(id.index);
}

pub fn get_log_id(buf: &mut Bytes) -> Result<LogId<NodeId>, RecordError> {
    let (term, node, index) = (get_u64(buf)?, get_u64(buf)?, get_u64(buf)?);
    Ok(LogId::new(CommittedLeaderId::new(term, node), index))
}

pub fn put_opt_log_id(out: &mut BytesMut, id: Option<&LogId<NodeId>>) {
    match id {
        Some(id) => {
            out.put_u8(1);
            put_log_id(out, id);
        }
        None => out.put_u8(0),
    }
}

pub fn get_opt_log_id(buf: &mut Bytes) -> Result<Option<LogId<NodeId>>, RecordError> {
    match get_u8(buf)? {
        0 => Ok(None),
        1 => Ok(Some(get_log_id(buf)?)),
        _ => Err(RecordError::Field("optional log id")),
    }
}

pub fn put_membership(out: &mut BytesMut, m: &Membership<NodeId, BasicNode>) {
    let configs = m.get_joint_config();
    out.put_u32(configs.len() as u32);
    for config in configs {
        out.put_u32(config.len() as u32);
        config.iter().for_each(|id| out.put_u64(*id));
    }
    let nodes: Vec<(&NodeId, &BasicNode)> = m.nodes().collect();
    out.put_u32(nodes.len() as u32);
    for (id, node) in nodes {
        out.put_u64(*id);
        out.put_u32(node.addr.len() as u32);
        out.put_slice(node.addr.as_bytes());
    }
}

/// A bound on counts read from disk, so a damaged count cannot make us allocate the world.
const MAX_MEMBERS: u32 = 1024;

pub fn get_membership(buf: &mut Bytes) -> Result<Membership<NodeId, BasicNode>, RecordError> {
    let mut configs = Vec::new();
    for _ in 0..get_count(buf)? {
        let mut set = BTreeSet::new();
        for _ in 0..get_count(buf)? {
            set.insert(get_u64(buf)?);
        }
        configs.push(set);
    }
    let mut nodes = BTreeMap::new();
    for _ in 0..get_count(buf)? {
        let id = get_u64(buf)?;
        let len = get_count(buf)? as usize;
        if buf.remaining() < len {
            return Err(RecordError::Truncated);
        }
        let addr = String::from_utf8(buf.split_to(len).to_vec())
            .map_err(|_| RecordError::Field("node address"))?;
        nodes.insert(id, BasicNode { addr });
    }
    Ok(Membership::new(configs, nodes))
}

pub fn put_stored_membership(out: &mut BytesMut, m: &StoredMembership<NodeId, BasicNode>) {
    put_opt_log_id(out, m.log_id().as_ref());
    put_membership(out, m.membership());
}

pub fn get_stored_membership(
    buf: &mut Bytes,
) -> Result<StoredMembership<NodeId, BasicNode>, RecordError> {
    let log_id = get_opt_log_id(buf)?;
    Ok(StoredMembership::new(log_id, get_membership(buf)?))
}

fn get_count(buf: &mut Bytes) -> Result<u32, RecordError> {
    if buf.remaining() < 4 {
        return Err(RecordError::Truncated);
    }
    let n = buf.get_u32();
    if n > MAX_MEMBERS {
        return Err(RecordError::Field("count"));
    }
    Ok(n)
}

pub fn get_u8(buf: &mut Bytes) -> Result<u8, RecordError> {
    if buf.remaining() < 1 {
        return Err(RecordError::Truncated);
    }
    Ok(buf.get_u8())
}

pub fn get_u64(buf: &mut Bytes) -> Result<u64, RecordError> {
    if buf.remaining() < 8 {
        return Err(RecordError::Truncated);
    }
    Ok(buf.get_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::meta::MetaCommand;
    use tern_core::names::VhostName;

    fn roundtrip(record: LogRecord) {
        let mut out = BytesMut::new();
        encode(&record, &mut out);
        let bytes = out.freeze();
        assert_eq!(decode(bytes.clone()), Ok(record));
        for cut in 0..bytes.len() {
            assert!(decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_record_decodes_to_itself_and_any_cut_is_an_error() {
        let id = LogId::new(CommittedLeaderId::new(3, 1), 42);
        let cmd = MetaCommand::AddVhost {
            name: VhostName::from("v"),
        };
        roundtrip(LogRecord::Entry(Entry {
            log_id: id,
            payload: EntryPayload::Normal(cmd),
        }));
        roundtrip(LogRecord::Entry(Entry {
            log_id: id,
            payload: EntryPayload::Blank,
        }));
        let nodes = BTreeMap::from([(1, BasicNode::new("127.0.0.1:25672"))]);
        let membership = Membership::new(vec![BTreeSet::from([1])], nodes);
        roundtrip(LogRecord::Entry(Entry {
            log_id: id,
            payload: EntryPayload::Membership(membership),
        }));
        roundtrip(LogRecord::Truncate { from: 9 });
        roundtrip(LogRecord::Purge(id));
        roundtrip(LogRecord::Vote(Vote::new(4, 1)));
        roundtrip(LogRecord::Vote(Vote::new_committed(4, 1)));
        roundtrip(LogRecord::Committed(Some(id)));
        roundtrip(LogRecord::Committed(None));
    }
}
