//! A durable queue's log records, and recovery from them. Pure: the server writes and reads
//! the bytes (with `tern-store`), this module says what they mean.
//!
//! - `Enqueue`: a persistent message and its id, written when it is enqueued;
//! - `Delivered` / `Removed`: the queue's journal ([`super::QueueEvent`]), ids as ranges.
//!
//! Recovery folds them in log order: an enqueue makes a message live, a removal ends it, a
//! delivery marks it (it comes back redelivered, as RabbitMQ's are after a restart).

use std::collections::BTreeMap;
use std::sync::Arc;

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

pub fn encode_enqueue(id: MsgId, m: &Message, out: &mut Vec<u8>) {
    out.reserve(32 + m.exchange.len() + m.routing_key.len() + m.size_bytes());
    out.put_u8(tag::ENQUEUE);
    out.put_u64(id.0);
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

/// Folds a queue's records, in log order, into the messages to restore.
#[derive(Debug, Default)]
pub struct Recovery {
    live: BTreeMap<MsgId, (Arc<Message>, bool)>,
}

impl Recovery {
    pub fn apply(&mut self, record: QueueRecord) {
        match record {
            QueueRecord::Enqueue { id, message } => {
                self.live.insert(id, (Arc::new(*message), false));
            }
            QueueRecord::Delivered(ids) => {
                for id in ids {
                    if let Some(entry) = self.live.get_mut(&id) {
                        entry.1 = true;
                    }
                }
            }
            QueueRecord::Removed(ids) => {
                for id in ids {
                    self.live.remove(&id);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// The ids still live, in order.
    pub fn ids(&self) -> impl Iterator<Item = MsgId> + '_ {
        self.live.keys().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// (id, message, redelivered), in id order.
    pub fn finish(self) -> impl Iterator<Item = (MsgId, Arc<Message>, bool)> {
        self.live.into_iter().map(|(id, (m, d))| (id, m, d))
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
        encode_enqueue(MsgId(7), &message("hello"), &mut out);
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
    fn recovery_keeps_what_was_not_removed_and_flags_what_was_delivered() {
        let mut r = Recovery::default();
        for i in 1..=4 {
            r.apply(QueueRecord::Enqueue {
                id: MsgId(i),
                message: Box::new(message(&i.to_string())),
            });
        }
        r.apply(QueueRecord::Delivered(vec![MsgId(1), MsgId(2)]));
        r.apply(QueueRecord::Removed(vec![MsgId(1), MsgId(99)]));
        let got: Vec<(u64, bool)> = r.finish().map(|(id, _, d)| (id.0, d)).collect();
        assert_eq!(got, [(2, true), (3, false), (4, false)]);
    }
}
