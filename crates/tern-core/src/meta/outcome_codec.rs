//! The binary form of a command's answer (`Result<MetaOutcome, AmqpError>`): what a metadata
//! leader sends back to the node that forwarded a change to it. A tag byte, then the fields;
//! names and texts as in the command codec.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tern_amqp::{AmqpError, ReplyCode, ShortStr};

use super::codec::{get_queue, get_str, get_u8, put_queue, put_str, CodecError};
use super::MetaOutcome;
use crate::names::{ExchangeName, QueueName, VhostName};

mod tag {
    pub const REFUSED: u8 = 0;
    pub const EXCHANGE_DECLARED: u8 = 1;
    pub const EXCHANGE_DELETED: u8 = 2;
    pub const QUEUE_DECLARED: u8 = 3;
    pub const QUEUE_DELETED: u8 = 4;
    pub const BOUND: u8 = 5;
    pub const UNBOUND: u8 = 6;
    pub const VHOST_ADDED: u8 = 7;
    pub const VHOST_DELETED: u8 = 8;
    pub const TRANSIENT_DROPPED: u8 = 9;
    pub const ACCESS_CHANGED: u8 = 10;
    pub const BATCH: u8 = 11;
}

/// Outcomes in one batch at most, and names in one list (bounds on what a count may claim).
const COUNT_MAX: u32 = 1 << 20;

pub fn encode_outcome(outcome: &Result<MetaOutcome, AmqpError>, out: &mut BytesMut) {
    match outcome {
        Ok(o) => put_outcome(out, o),
        Err(e) => {
            out.put_u8(tag::REFUSED);
            put_error(out, e);
        }
    }
}

pub fn decode_outcome(buf: &mut Bytes) -> Result<Result<MetaOutcome, AmqpError>, CodecError> {
    if buf.first() == Some(&tag::REFUSED) {
        buf.advance(1);
        return Ok(Err(get_error(buf)?));
    }
    Ok(Ok(get_outcome(buf)?))
}

fn put_outcome(out: &mut BytesMut, o: &MetaOutcome) {
    match o {
        MetaOutcome::ExchangeDeclared { created } => flag(out, tag::EXCHANGE_DECLARED, *created),
        MetaOutcome::ExchangeDeleted {
            existed,
            auto_deleted,
        } => {
            flag(out, tag::EXCHANGE_DELETED, *existed);
            put_names(out, auto_deleted.iter().map(|n| &n.0));
        }
        MetaOutcome::QueueDeclared { created, def } => {
            flag(out, tag::QUEUE_DECLARED, *created);
            put_queue(out, def);
        }
        MetaOutcome::QueueDeleted {
            existed,
            auto_deleted,
        } => {
            flag(out, tag::QUEUE_DELETED, *existed);
            put_names(out, auto_deleted.iter().map(|n| &n.0));
        }
        MetaOutcome::Bound { created } => flag(out, tag::BOUND, *created),
        MetaOutcome::Unbound {
            existed,
            auto_deleted,
        } => {
            flag(out, tag::UNBOUND, *existed);
            put_names(out, auto_deleted.iter().map(|n| &n.0));
        }
        MetaOutcome::VhostAdded { created } => flag(out, tag::VHOST_ADDED, *created),
        MetaOutcome::VhostDeleted { existed, queues } => {
            flag(out, tag::VHOST_DELETED, *existed);
            put_names(out, queues.iter().map(|n| &n.0));
        }
        MetaOutcome::QueuesDropped { queues } => {
            out.put_u8(tag::TRANSIENT_DROPPED);
            out.put_u32(queues.len() as u32);
            for (vhost, queue) in queues {
                put_str(out, &vhost.0);
                put_str(out, &queue.0);
            }
        }
        MetaOutcome::AccessChanged { changed } => flag(out, tag::ACCESS_CHANGED, *changed),
        MetaOutcome::Batch { outcomes, refused } => {
            out.put_u8(tag::BATCH);
            out.put_u32(outcomes.len() as u32);
            outcomes.iter().for_each(|o| put_outcome(out, o));
            match refused {
                Some(e) => {
                    out.put_u8(1);
                    put_error(out, e);
                }
                None => out.put_u8(0),
            }
        }
    }
}

fn get_outcome(buf: &mut Bytes) -> Result<MetaOutcome, CodecError> {
    let t = get_u8(buf)?;
    Ok(match t {
        tag::EXCHANGE_DECLARED => MetaOutcome::ExchangeDeclared {
            created: get_bool(buf)?,
        },
        tag::EXCHANGE_DELETED => MetaOutcome::ExchangeDeleted {
            existed: get_bool(buf)?,
            auto_deleted: get_names(buf, ExchangeName)?,
        },
        tag::QUEUE_DECLARED => MetaOutcome::QueueDeclared {
            created: get_bool(buf)?,
            def: get_queue(buf)?,
        },
        tag::QUEUE_DELETED => MetaOutcome::QueueDeleted {
            existed: get_bool(buf)?,
            auto_deleted: get_names(buf, ExchangeName)?,
        },
        tag::BOUND => MetaOutcome::Bound {
            created: get_bool(buf)?,
        },
        tag::UNBOUND => MetaOutcome::Unbound {
            existed: get_bool(buf)?,
            auto_deleted: get_names(buf, ExchangeName)?,
        },
        tag::VHOST_ADDED => MetaOutcome::VhostAdded {
            created: get_bool(buf)?,
        },
        tag::VHOST_DELETED => MetaOutcome::VhostDeleted {
            existed: get_bool(buf)?,
            queues: get_names(buf, QueueName)?,
        },
        tag::TRANSIENT_DROPPED => {
            let mut queues = Vec::new();
            for _ in 0..get_count(buf, 2)? {
                queues.push((VhostName(get_str(buf)?), QueueName(get_str(buf)?)));
            }
            MetaOutcome::QueuesDropped { queues }
        }
        tag::ACCESS_CHANGED => MetaOutcome::AccessChanged {
            changed: get_bool(buf)?,
        },
        tag::BATCH => get_batch(buf)?,
        other => return Err(CodecError::Tag(other)),
    })
}

fn get_batch(buf: &mut Bytes) -> Result<MetaOutcome, CodecError> {
    let mut outcomes = Vec::new();
    for _ in 0..get_count(buf, 2)? {
        if buf.first() == Some(&tag::BATCH) {
            return Err(CodecError::Field("a batch inside a batch"));
        }
        outcomes.push(get_outcome(buf)?);
    }
    let refused = match get_u8(buf)? {
        0 => None,
        1 => Some(get_error(buf)?),
        _ => return Err(CodecError::Field("batch refusal")),
    };
    Ok(MetaOutcome::Batch { outcomes, refused })
}

fn flag(out: &mut BytesMut, tag: u8, value: bool) {
    out.put_u8(tag);
    out.put_u8(u8::from(value));
}

fn get_bool(buf: &mut Bytes) -> Result<bool, CodecError> {
    match get_u8(buf)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(CodecError::Field("flag")),
    }
}

fn put_names<'a>(out: &mut BytesMut, names: impl ExactSizeIterator<Item = &'a ShortStr>) {
    out.put_u32(names.len() as u32);
    names.for_each(|n| put_str(out, n));
}

fn get_names<T>(buf: &mut Bytes, make: fn(ShortStr) -> T) -> Result<Vec<T>, CodecError> {
    (0..get_count(buf, 1)?)
        .map(|_| get_str(buf).map(make))
        .collect()
}

/// A count of items that take at least `min_bytes` each: no more than the bytes could hold.
fn get_count(buf: &mut Bytes, min_bytes: usize) -> Result<u32, CodecError> {
    if buf.remaining() < 4 {
        return Err(CodecError::Truncated);
    }
    let n = buf.get_u32();
    if n > COUNT_MAX || n as usize > buf.remaining() / min_bytes {
        return Err(CodecError::Field("count"));
    }
    Ok(n)
}

fn put_error(out: &mut BytesMut, e: &AmqpError) {
    out.put_u16(e.code.code());
    out.put_u16(e.class_id);
    out.put_u16(e.method_id);
    out.put_u32(e.message.len() as u32);
    out.put_slice(e.message.as_bytes());
}

fn get_error(buf: &mut Bytes) -> Result<AmqpError, CodecError> {
    if buf.remaining() < 10 {
        return Err(CodecError::Truncated);
    }
    let code = ReplyCode::from_code(buf.get_u16()).ok_or(CodecError::Field("reply code"))?;
    let (class_id, method_id) = (buf.get_u16(), buf.get_u16());
    let len = buf.get_u32() as usize;
    if buf.remaining() < len {
        return Err(CodecError::Truncated);
    }
    let message = String::from_utf8(buf.split_to(len).to_vec())
        .map_err(|_| CodecError::Field("error text"))?;
    Ok(AmqpError::new(code, message).on(class_id, method_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::QueueDef;
    use crate::names::ConnectionId;
    use tern_amqp::FieldTable;

    fn all() -> Vec<Result<MetaOutcome, AmqpError>> {
        let def = QueueDef {
            name: QueueName::from("q"),
            durable: true,
            exclusive_owner: Some(ConnectionId(7)),
            home: Some("tern@b".into()),
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        let x = || vec![ExchangeName::from("x"), ExchangeName::from("y")];
        let refusal = AmqpError::new(ReplyCode::PreconditionFailed, "inequivalent arg").on(50, 10);
        let outcomes = vec![
            MetaOutcome::ExchangeDeclared { created: true },
            MetaOutcome::ExchangeDeleted {
                existed: true,
                auto_deleted: x(),
            },
            MetaOutcome::QueueDeclared {
                created: false,
                def,
            },
            MetaOutcome::QueueDeleted {
                existed: false,
                auto_deleted: vec![],
            },
            MetaOutcome::Bound { created: true },
            MetaOutcome::Unbound {
                existed: true,
                auto_deleted: x(),
            },
            MetaOutcome::VhostAdded { created: true },
            MetaOutcome::VhostDeleted {
                existed: true,
                queues: vec![QueueName::from("q")],
            },
            MetaOutcome::QueuesDropped {
                queues: vec![(VhostName::from("/"), QueueName::from("t"))],
            },
            MetaOutcome::AccessChanged { changed: false },
        ];
        let batch = MetaOutcome::Batch {
            outcomes: outcomes.clone(),
            refused: Some(refusal.clone()),
        };
        let mut all: Vec<_> = outcomes.into_iter().map(Ok).collect();
        all.push(Ok(batch));
        all.push(Err(refusal));
        all
    }

    #[test]
    fn every_outcome_decodes_to_itself_and_any_cut_is_an_error() {
        for outcome in all() {
            let mut out = BytesMut::new();
            encode_outcome(&outcome, &mut out);
            let bytes = out.freeze();
            let mut buf = bytes.clone();
            assert_eq!(decode_outcome(&mut buf).expect("decodes"), outcome);
            assert!(buf.is_empty());
            for cut in 0..bytes.len() {
                let mut short = bytes.slice(..cut);
                assert!(
                    decode_outcome(&mut short).is_err(),
                    "{outcome:?} cut at {cut}"
                );
            }
        }
    }
}
