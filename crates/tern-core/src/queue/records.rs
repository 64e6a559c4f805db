//! A durable queue's log records, and recovery from them. Pure: the server writes and reads
//! the bytes (with `tern-store`), this module says what they mean.
//!
//! - `Enqueue`: a message and its id: every persistent one of a durable queue, and any message
//!   paged out of memory (a transient one is flagged so, and is not recovered);
//! - `Delivered` / `Removed`: the queue's journal ([`super::QueueEvent`]), ids as ranges.
//!
//! Enqueues go to the queue's log; a message's fate (delivered, removed) goes to the
//! acknowledgement file of the segment it was enqueued in, so a segment whose messages are all
//! gone can be deleted in any order (one long-unacked message then holds only its own segment).
//!
//! Recovery reads every segment once, keeping only ids ([`Index`]: bitmaps, three bits a
//! message), never the messages: an enqueue of a persistent message makes it live, a removal
//! ends it, a delivery marks it (it comes back redelivered, as RabbitMQ's are after a restart).
//! The messages themselves are read back later, in order, as the queue has room for them.
//!
//! Compaction: the few live messages of a mostly-acknowledged old segment are written again,
//! flagged *moved*, into the active segment, and the old segment goes once they are on disk.
//! A moved copy keeps its id; from then on its fates go to its new segment's acknowledgement
//! file. Recovery takes the copy in the latest segment as the message (an original still on
//! disk after a crash is passed over), and reads it back where the copy stands in the log.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes};
use tern_amqp::{BasicProperties, ShortStr};

use super::{MsgId, QueueEvent};
use crate::message::Message;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("queue log record cut short")]
    Truncated,
    #[error("unknown queue log record tag {0}")]
    Tag(u8),
    #[error("bad field in a queue log record: {0}")]
    Field(&'static str),
}

mod tag {
    pub const ENQUEUE: u8 = 1;
    pub const DELIVERED: u8 = 2;
    pub const REMOVED: u8 = 3;
}

#[derive(Debug, Clone, PartialEq)]
pub enum QueueRecord {
    Enqueue { id: MsgId, message: Box<Message> },
    Delivered(Vec<MsgId>),
    Removed(Vec<MsgId>),
}

const PERSISTENT: u8 = 1;
const PAGED: u8 = 2;
const MOVED: u8 = 4;

/// `paged`: the message went to disk instead of memory, and is to be read back from here.
pub fn encode_enqueue(id: MsgId, m: &Message, paged: bool, out: &mut Vec<u8>) {
    let flags = (u8::from(m.is_persistent()) * PERSISTENT) | (u8::from(paged) * PAGED);
    encode_with_flags(id, m, flags, out);
}

/// A live persistent message written again by compaction (see the module docs).
pub fn encode_moved(id: MsgId, m: &Message, out: &mut Vec<u8>) {
    encode_with_flags(id, m, PERSISTENT | MOVED, out);
}

fn encode_with_flags(id: MsgId, m: &Message, flags: u8, out: &mut Vec<u8>) {
    out.reserve(32 + m.exchange.len() + m.routing_key.len() + m.size_bytes());
    out.put_u8(tag::ENQUEUE);
    out.put_u64(id.0);
    out.put_u8(flags);
    put_str(out, &m.exchange);
    put_str(out, &m.routing_key);
    put_bytes(out, &m.raw_properties);
    put_bytes(out, &m.body);
}

/// The journal's events as (at most) two records: deliveries, removals.
pub fn encode_events(events: &[QueueEvent], out: &mut Vec<Vec<u8>>) {
    let mut delivered = Vec::new();
    let mut removed = Vec::new();
    for e in events {
        match *e {
            QueueEvent::Delivered(id) => delivered.push(id),
            QueueEvent::Removed(id) => removed.push(id),
        }
    }
    for (tag, ids) in [(tag::DELIVERED, delivered), (tag::REMOVED, removed)] {
        if !ids.is_empty() {
            let mut buf = Vec::new();
            buf.put_u8(tag);
            put_ranges(&mut buf, ids);
            out.push(buf);
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &ShortStr) {
    let b = s.as_slice();
    out.put_u8(b.len().min(255) as u8);
    out.put_slice(&b[..b.len().min(255)]);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.put_slice(&b[..b.len().min(u32::MAX as usize)]);
}

/// Ids as runs of consecutive ones: `count`, then (first, length) per run.
fn put_ranges(out: &mut Vec<u8>, mut ids: Vec<MsgId>) {
    ids.sort_unstable();
    ids.dedup();
    let mut runs: Vec<(u64, u32)> = Vec::new();
    for id in ids {
        match runs.last_mut() {
            Some((first, len)) if *first + u64::from(*len) == id.0 && *len < u32::MAX => *len += 1,
            _ => runs.push((id.0, 1)),
        }
    }
    out.put_u32(runs.len() as u32);
    for (first, len) in runs {
        out.put_u64(first);
        out.put_u32(len);
    }
}

pub fn decode(mut buf: Bytes) -> Result<QueueRecord, RecordError> {
    let b = &mut buf;
    let record = match get_u8(b)? {
        tag::ENQUEUE => {
            let id = MsgId(get_u64(b)?);
            let _flags = get_u8(b)?;
            let exchange = get_str(b)?;
            let routing_key = get_str(b)?;
            let raw_properties = get_bytes(b)?;
            let body = get_bytes(b)?;
            let properties = BasicProperties::decode(&mut raw_properties.clone())
                .map_err(|_| RecordError::Field("properties"))?;
            let message = Message {
                exchange,
                routing_key,
                properties,
                raw_properties,
                body,
            };
            QueueRecord::Enqueue {
                id,
                message: Box::new(message),
            }
        }
        tag::DELIVERED => QueueRecord::Delivered(get_ranges(b)?),
        tag::REMOVED => QueueRecord::Removed(get_ranges(b)?),
        other => return Err(RecordError::Tag(other)),
    };
    if !buf.is_empty() {
        return Err(RecordError::Field("trailing bytes"));
    }
    Ok(record)
}

fn need(b: &Bytes, n: usize) -> Result<(), RecordError> {
    if b.remaining() < n {
        return Err(RecordError::Truncated);
    }
    Ok(())
}

fn get_u8(b: &mut Bytes) -> Result<u8, RecordError> {
    need(b, 1)?;
    Ok(b.get_u8())
}

fn get_u64(b: &mut Bytes) -> Result<u64, RecordError> {
    need(b, 8)?;
    Ok(b.get_u64())
}

fn get_str(b: &mut Bytes) -> Result<ShortStr, RecordError> {
    let len = usize::from(get_u8(b)?);
    need(b, len)?;
    ShortStr::try_from_bytes(b.split_to(len)).map_err(|_| RecordError::Field("name"))
}

fn get_bytes(b: &mut Bytes) -> Result<Bytes, RecordError> {
    need(b, 4)?;
    let len = b.get_u32() as usize;
    need(b, len)?;
    Ok(b.split_to(len))
}

fn get_ranges(b: &mut Bytes) -> Result<Vec<MsgId>, RecordError> {
    need(b, 4)?;
    let runs = b.get_u32();
    let mut ids = Vec::new();
    for _ in 0..runs {
        let first = get_u64(b)?;
        need(b, 4)?;
        let len = b.get_u32();
        let end = first
            .checked_add(u64::from(len))
            .ok_or(RecordError::Field("id range"))?;
        ids.extend((first..end).map(MsgId));
    }
    Ok(ids)
}

/// What a record is, read without decoding a message: enough for recovery's one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    Enqueue {
        id: MsgId,
        persistent: bool,
        paged: bool,
        /// A copy written by compaction.
        moved: bool,
    },
    Delivered(Vec<MsgId>),
    Removed(Vec<MsgId>),
}

pub fn peek(bytes: &[u8]) -> Result<Peek, RecordError> {
    let mut b = Bytes::copy_from_slice(&bytes[..bytes.len().min(10)]);
    match get_u8(&mut b)? {
        tag::ENQUEUE => {
            let id = MsgId(get_u64(&mut b)?);
            let flags = get_u8(&mut b)?;
            Ok(Peek::Enqueue {
                id,
                persistent: flags & PERSISTENT != 0,
                paged: flags & PAGED != 0,
                moved: flags & MOVED != 0,
            })
        }
        tag::DELIVERED => Ok(Peek::Delivered(get_ranges(&mut Bytes::copy_from_slice(
            &bytes[1..],
        ))?)),
        tag::REMOVED => Ok(Peek::Removed(get_ranges(&mut Bytes::copy_from_slice(
            &bytes[1..],
        ))?)),
        other => Err(RecordError::Tag(other)),
    }
}

/// A set of ids as a bitmap from a base id (ids are dense: one bit each).
#[derive(Debug, Default, Clone)]
pub struct IdSet {
    base: u64,
    words: Vec<u64>,
    len: u64,
}

impl IdSet {
    pub fn from(base: MsgId) -> Self {
        IdSet {
            base: base.0,
            ..IdSet::default()
        }
    }

    /// Ids below the base are ignored (they belong to segments already gone).
    pub fn insert(&mut self, id: MsgId) {
        let Some(i) = id.0.checked_sub(self.base) else {
            return;
        };
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & (1 << bit) == 0 {
            self.words[word] |= 1 << bit;
            self.len += 1;
        }
    }

    pub fn contains(&self, id: MsgId) -> bool {
        let Some(i) = id.0.checked_sub(self.base) else {
            return false;
        };
        let (word, bit) = ((i / 64) as usize, i % 64);
        self.words.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = MsgId> + '_ {
        self.words.iter().enumerate().flat_map(move |(w, bits)| {
            (0..64)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| MsgId(self.base + w as u64 * 64 + b))
        })
    }
}

/// What one pass over a queue's segments found: which persistent messages are live, which
/// of those were delivered. Three bits a message, whatever its size, kept per segment (each
/// segment's ids start at its first enqueue), so segments may come and go in any order.
#[derive(Debug, Default)]
pub struct Index {
    segments: BTreeMap<u64, SegmentIndex>,
    /// First id of each segment -> segment.
    first_ids: BTreeMap<u64, u64>,
    max_id: MsgId,
    /// Messages compaction moved: their latest copy, and its fates.
    moved: BTreeMap<MsgId, Moved>,
}

#[derive(Debug, Clone, Copy)]
struct Moved {
    segment: u64,
    removed: bool,
    delivered: bool,
    /// Read back already (see [`Index::take`]).
    loaded: bool,
}

#[derive(Debug)]
struct SegmentIndex {
    enqueued: IdSet,
    removed: IdSet,
    delivered: IdSet,
}

impl Index {
    /// A moved copy (compaction) found in `segment`; a later one replaces an earlier.
    pub fn moved(&mut self, segment: u64, id: MsgId) {
        self.max_id = self.max_id.max(id);
        let fresh = Moved {
            segment,
            removed: false,
            delivered: false,
            loaded: false,
        };
        self.moved.insert(id, fresh);
    }

    /// An enqueue record found in `segment`.
    pub fn enqueued(&mut self, segment: u64, id: MsgId, persistent: bool) {
        self.max_id = self.max_id.max(id);
        let entry = self.segments.entry(segment).or_insert_with(|| {
            self.first_ids.insert(id.0, segment);
            SegmentIndex {
                enqueued: IdSet::from(id),
                removed: IdSet::from(id),
                delivered: IdSet::from(id),
            }
        });
        if persistent {
            entry.enqueued.insert(id);
        }
    }

    /// A record of `segment`'s acknowledgement file (its messages' fates). Read them after
    /// every enqueue: a moved message takes only the fates of its latest copy's segment.
    pub fn fate(&mut self, segment: u64, record: Peek) {
        let (ids, removed) = match record {
            Peek::Delivered(ids) => (ids, false),
            Peek::Removed(ids) => (ids, true),
            Peek::Enqueue { .. } => return,
        };
        for id in ids {
            if let Some(m) = self.moved.get_mut(&id) {
                if m.segment == segment {
                    m.removed |= removed;
                    m.delivered |= !removed;
                }
                continue;
            }
            let Some(entry) = self.segments.get_mut(&segment) else {
                continue;
            };
            if removed {
                entry.removed.insert(id);
            } else {
                entry.delivered.insert(id);
            }
        }
    }

    fn of(&self, id: MsgId) -> Option<&SegmentIndex> {
        let (_, segment) = self.first_ids.range(..=id.0).next_back()?;
        self.segments.get(segment)
    }

    /// A persistent message enqueued and not removed.
    pub fn is_live(&self, id: MsgId) -> bool {
        if let Some(m) = self.moved.get(&id) {
            return !m.removed;
        }
        self.of(id)
            .is_some_and(|s| s.enqueued.contains(id) && !s.removed.contains(id))
    }

    pub fn was_delivered(&self, id: MsgId) -> bool {
        if let Some(m) = self.moved.get(&id) {
            return m.delivered;
        }
        self.of(id).is_some_and(|s| s.delivered.contains(id))
    }

    /// Whether the enqueue of `id` read back from `segment` is the live message, not read back
    /// before (`last_loaded`: the highest id read back in log order; moved copies stand out of
    /// that order and are tracked here). Marks a moved one as read.
    pub fn take(&mut self, segment: u64, id: MsgId, last_loaded: MsgId) -> bool {
        if let Some(m) = self.moved.get_mut(&id) {
            let take = m.segment == segment && !m.removed && !m.loaded;
            m.loaded |= take;
            return take;
        }
        id > last_loaded && self.is_live(id)
    }

    /// (segment, id) of every live message: in id order, then the moved ones.
    pub fn live(&self) -> impl Iterator<Item = (u64, MsgId)> + '_ {
        let moved = &self.moved;
        let normal = self.first_ids.values().flat_map(move |segment| {
            let s = &self.segments[segment];
            s.enqueued
                .iter()
                .filter(|id| !s.removed.contains(*id) && !moved.contains_key(id))
                .map(move |id| (*segment, id))
        });
        let moved = moved
            .iter()
            .filter(|(_, m)| !m.removed)
            .map(|(id, m)| (m.segment, *id));
        normal.chain(moved)
    }

    /// The segment each live moved message's latest copy is in.
    pub fn moved_segments(&self) -> impl Iterator<Item = (MsgId, u64)> + '_ {
        self.moved
            .iter()
            .filter(|(_, m)| !m.removed)
            .map(|(id, m)| (*id, m.segment))
    }

    /// The highest id any enqueue named: new messages are numbered after it.
    pub fn max_id(&self) -> MsgId {
        self.max_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> Message {
        let properties = BasicProperties {
            delivery_mode: Some(2),
            correlation_id: Some(ShortStr::from("c")),
            ..Default::default()
        };
        let mut raw = bytes::BytesMut::new();
        properties.encode(&mut raw);
        Message {
            exchange: ShortStr::from("x"),
            routing_key: ShortStr::from("k.1"),
            properties,
            raw_properties: raw.freeze(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn roundtrip(bytes: Vec<u8>) -> QueueRecord {
        let full = Bytes::from(bytes);
        for cut in 0..full.len() {
            assert!(decode(full.slice(..cut)).is_err(), "cut at {cut}");
        }
        decode(full).expect("decodes")
    }

    #[test]
    fn records_decode_to_what_was_written() {
        let mut out = Vec::new();
        encode_enqueue(MsgId(7), &message("hello"), false, &mut out);
        let QueueRecord::Enqueue { id, message: m } = roundtrip(out) else {
            panic!("not an enqueue");
        };
        assert_eq!(
            (id, &m.body[..], m.properties.delivery_mode),
            (MsgId(7), &b"hello"[..], Some(2))
        );
        let events = [
            QueueEvent::Delivered(MsgId(3)),
            QueueEvent::Removed(MsgId(1)),
            QueueEvent::Removed(MsgId(2)),
            QueueEvent::Removed(MsgId(9)),
        ];
        let mut records = Vec::new();
        encode_events(&events, &mut records);
        assert_eq!(records.len(), 2);
        assert_eq!(
            roundtrip(records[0].clone()),
            QueueRecord::Delivered(vec![MsgId(3)])
        );
        assert_eq!(
            roundtrip(records[1].clone()),
            QueueRecord::Removed(vec![MsgId(1), MsgId(2), MsgId(9)])
        );
    }

    #[test]
    fn the_index_keeps_live_persistent_ids_and_flags_delivered_ones() {
        let mut index = Index::default();
        for i in 1..=4 {
            let mut out = Vec::new();
            let mut m = message(&i.to_string());
            if i == 3 {
                m.properties.delivery_mode = None; // a transient message paged out
            }
            encode_enqueue(MsgId(i), &m, true, &mut out);
            let Ok(Peek::Enqueue { id, persistent, .. }) = peek(&out) else {
                panic!("an enqueue");
            };
            index.enqueued(if i <= 2 { 1 } else { 2 }, id, persistent);
        }
        let mut fates = Vec::new();
        let events = [
            QueueEvent::Delivered(MsgId(1)),
            QueueEvent::Delivered(MsgId(2)),
            QueueEvent::Removed(MsgId(1)),
        ];
        encode_events(&events, &mut fates);
        fates.iter().for_each(|r| index.fate(1, peek(r).unwrap()));
        index.fate(9, Peek::Removed(vec![MsgId(4)])); // no such segment: ignored
        let live: Vec<(u64, u64, bool)> = index
            .live()
            .map(|(seg, id)| (seg, id.0, index.was_delivered(id)))
            .collect();
        assert_eq!(live, [(1, 2, true), (2, 4, false)]);
        assert!(index.is_live(MsgId(4)) && !index.is_live(MsgId(1)) && !index.is_live(MsgId(3)));
        assert_eq!(index.max_id(), MsgId(4));
    }

    #[test]
    fn an_id_set_is_a_bitmap_from_its_base() {
        let mut s = IdSet::from(MsgId(1000));
        for id in [1000, 1001, 1130, 1001] {
            s.insert(MsgId(id));
        }
        s.insert(MsgId(5)); // below the base: belongs to a segment already gone
        assert_eq!(s.len(), 3);
        assert!(s.contains(MsgId(1130)) && !s.contains(MsgId(5)) && !s.contains(MsgId(1002)));
        assert_eq!(
            s.iter().map(|i| i.0).collect::<Vec<_>>(),
            [1000, 1001, 1130]
        );
    }
}
