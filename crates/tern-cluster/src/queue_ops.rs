//! Queue operations between nodes: the bodies of `Service::Queue` calls and casts (ours, sans
//! IO).
//!
//! A classic queue lives on its home node. A client connected elsewhere reaches it through
//! its node, which sends the home node a [`QueueOp`]: calls for what has an answer (publish —
//! answered once the queue has taken the messages in —, consume, get, purge, stats, delete),
//! casts for what has none (acks, rejects, credit, cancel, channel closed). The home node
//! sends back casts of its own: deliveries to the consumers on the other node, consumers the
//! queue cancelled, and the confirms of publishes made with one.
//!
//! Each body: a tag byte, then the fields; numbers big-endian, names as short strings, messages
//! as exchange, routing key, the content-header properties as published and the body (each
//! with a u32 length). The answers have their own encoders below ([`Answer`]).

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tern_amqp::{AmqpError, BasicProperties, ReplyCode, ShortStr};
use tern_core::message::Message;
use tern_core::names::{ChannelKey, ConsumerId, QueueName, VhostName};
use tern_core::queue::{Delivery, GetResult, MsgId};

/// A queue, by vhost and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueRef {
    pub vhost: VhostName,
    pub name: QueueName,
}

/// A consumer on another node, as the home node's queue takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumeSpec {
    pub id: ConsumerId,
    pub channel: ChannelKey,
    pub priority: i32,
    pub prefetch: u32,
    pub window_bytes: u64,
    pub no_ack: bool,
    pub exclusive: bool,
    /// The channel's global prefetch (basic.qos global), if it has one.
    pub global_prefetch: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum QueueOp {
    /// Call. `confirm`: the id the home node's [`QueueOp::Confirmed`] will carry.
    Publish {
        queue: QueueRef,
        confirm: Option<u64>,
        messages: Vec<Arc<Message>>,
    },
    /// Call, answered with [`Answer::Done`].
    Consume {
        queue: QueueRef,
        spec: ConsumeSpec,
    },
    /// Call, answered with [`Answer::Got`].
    Get {
        queue: QueueRef,
        channel: ChannelKey,
        no_ack: bool,
    },
    /// Call, answered with [`Answer::Count`].
    Purge {
        queue: QueueRef,
    },
    /// Call, answered with [`Answer::Stats`].
    Stats {
        queue: QueueRef,
    },
    /// Call, answered with [`Answer::Deleted`].
    Delete {
        queue: QueueRef,
        if_unused: bool,
        if_empty: bool,
    },
    Cancel {
        queue: QueueRef,
        consumer: ConsumerId,
    },
    Ack {
        queue: QueueRef,
        channel: ChannelKey,
        ids: Vec<MsgId>,
    },
    Reject {
        queue: QueueRef,
        channel: ChannelKey,
        ids: Vec<MsgId>,
        requeue: bool,
    },
    ReturnCredit {
        queue: QueueRef,
        consumer: ConsumerId,
        n: u32,
        bytes: u64,
    },
    ChannelClosed {
        queue: QueueRef,
        channel: ChannelKey,
    },
    Kick {
        queue: QueueRef,
    },
    /// From the home node: messages from `queue` for consumers on the receiving node.
    Deliver {
        queue: QueueRef,
        deliveries: Vec<Delivery>,
    },
    /// From the home node: the queue cancelled this consumer (deleted, say).
    Cancelled {
        consumer: ConsumerId,
    },
    /// From the home node: the publish sent with `confirm: Some(id)` is safe (`ok`) or not.
    Confirmed {
        id: u64,
        ok: bool,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpError {
    #[error("queue operation cut short")]
    Truncated,
    #[error("unknown queue operation tag {0}")]
    Tag(u8),
    #[error("bad {0} in a queue operation")]
    Field(&'static str),
    #[error("{0} bytes left over after a queue operation")]
    Trailing(usize),
}

mod tag {
    pub const PUBLISH: u8 = 1;
    pub const CONSUME: u8 = 2;
    pub const GET: u8 = 3;
    pub const PURGE: u8 = 4;
    pub const STATS: u8 = 5;
    pub const DELETE: u8 = 6;
    pub const CANCEL: u8 = 7;
    pub const ACK: u8 = 8;
    pub const REJECT: u8 = 9;
    pub const RETURN_CREDIT: u8 = 10;
    pub const CHANNEL_CLOSED: u8 = 11;
    pub const KICK: u8 = 12;
    pub const DELIVER: u8 = 13;
    pub const CANCELLED: u8 = 14;
    pub const CONFIRMED: u8 = 15;
}

impl QueueOp {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.payload_bytes());
        match self {
            QueueOp::Publish {
                queue,
                confirm,
                messages,
            } => {
                put_head(&mut out, tag::PUBLISH, queue);
                put_option(&mut out, *confirm);
                out.put_u32(messages.len() as u32);
                messages.iter().for_each(|m| put_message(&mut out, m));
            }
            QueueOp::Consume { queue, spec } => {
                put_head(&mut out, tag::CONSUME, queue);
                put_spec(&mut out, spec);
            }
            QueueOp::Get {
                queue,
                channel,
                no_ack,
            } => {
                put_head(&mut out, tag::GET, queue);
                out.put_u64(channel.0);
                out.put_u8(u8::from(*no_ack));
            }
            QueueOp::Purge { queue } => put_head(&mut out, tag::PURGE, queue),
            QueueOp::Stats { queue } => put_head(&mut out, tag::STATS, queue),
            QueueOp::Delete {
                queue,
                if_unused,
                if_empty,
            } => {
                put_head(&mut out, tag::DELETE, queue);
                out.put_u8(u8::from(*if_unused) | u8::from(*if_empty) << 1);
            }
            other => other.encode_settle(&mut out),
        }
        out.freeze()
    }

    /// The casts: settlement and credit one way, deliveries and confirms the other.
    fn encode_settle(&self, out: &mut BytesMut) {
        match self {
            QueueOp::Cancel { queue, consumer } => {
                put_head(out, tag::CANCEL, queue);
                out.put_u64(consumer.0);
            }
            QueueOp::Ack {
                queue,
                channel,
                ids,
            } => {
                put_head(out, tag::ACK, queue);
                out.put_u64(channel.0);
                put_ids(out, ids);
            }
            QueueOp::Reject {
                queue,
                channel,
                ids,
                requeue,
            } => {
                put_head(out, tag::REJECT, queue);
                out.put_u64(channel.0);
                put_ids(out, ids);
                out.put_u8(u8::from(*requeue));
            }
            QueueOp::ReturnCredit {
                queue,
                consumer,
                n,
                bytes,
            } => {
                put_head(out, tag::RETURN_CREDIT, queue);
                out.put_u64(consumer.0);
                out.put_u32(*n);
                out.put_u64(*bytes);
            }
            other => other.encode_back(out),
        }
    }

    fn encode_back(&self, out: &mut BytesMut) {
        match self {
            QueueOp::ChannelClosed { queue, channel } => {
                put_head(out, tag::CHANNEL_CLOSED, queue);
                out.put_u64(channel.0);
            }
            QueueOp::Kick { queue } => put_head(out, tag::KICK, queue),
            QueueOp::Deliver { queue, deliveries } => {
                put_head(out, tag::DELIVER, queue);
                out.put_u32(deliveries.len() as u32);
                deliveries.iter().for_each(|d| put_delivery(out, d));
            }
            QueueOp::Cancelled { consumer } => {
                out.put_u8(tag::CANCELLED);
                out.put_u64(consumer.0);
            }
            QueueOp::Confirmed { id, ok } => {
                out.put_u8(tag::CONFIRMED);
                out.put_u64(*id);
                out.put_u8(u8::from(*ok));
            }
            _ => {}
        }
    }

    /// Bytes of message content the encoding will hold (to size its buffer once).
    fn payload_bytes(&self) -> usize {
        let message = |m: &Message| 64 + m.size_bytes();
        match self {
            QueueOp::Publish { messages, .. } => messages.iter().map(|m| message(m)).sum(),
            QueueOp::Deliver { deliveries, .. } => {
                deliveries.iter().map(|d| message(&d.message)).sum()
            }
            QueueOp::Ack { ids, .. } | QueueOp::Reject { ids, .. } => ids.len() * 8,
            _ => 0,
        }
    }

    pub fn decode(mut body: Bytes) -> Result<QueueOp, OpError> {
        let b = &mut body;
        let op = match get_u8(b)? {
            tag::CANCELLED => QueueOp::Cancelled {
                consumer: ConsumerId(get_u64(b)?),
            },
            tag::CONFIRMED => QueueOp::Confirmed {
                id: get_u64(b)?,
                ok: get_flag(b)?,
            },
            tag => decode_for_queue(tag, get_queue(b)?, b)?,
        };
        if !b.is_empty() {
            return Err(OpError::Trailing(b.len()));
        }
        Ok(op)
    }
}

fn decode_for_queue(tag: u8, queue: QueueRef, b: &mut Bytes) -> Result<QueueOp, OpError> {
    Ok(match tag {
        tag::PUBLISH => QueueOp::Publish {
            queue,
            confirm: get_option(b)?,
            messages: get_messages(b)?,
        },
        tag::CONSUME => QueueOp::Consume {
            queue,
            spec: get_spec(b)?,
        },
        tag::GET => QueueOp::Get {
            queue,
            channel: ChannelKey(get_u64(b)?),
            no_ack: get_flag(b)?,
        },
        tag::PURGE => QueueOp::Purge { queue },
        tag::STATS => QueueOp::Stats { queue },
        tag::DELETE => {
            let flags = get_u8(b)?;
            if flags > 3 {
                return Err(OpError::Field("delete flags"));
            }
            QueueOp::Delete {
                queue,
                if_unused: flags & 1 != 0,
                if_empty: flags & 2 != 0,
            }
        }
        tag => decode_settle(tag, queue, b)?,
    })
}

fn decode_settle(tag: u8, queue: QueueRef, b: &mut Bytes) -> Result<QueueOp, OpError> {
    Ok(match tag {
        tag::CANCEL => QueueOp::Cancel {
            queue,
            consumer: ConsumerId(get_u64(b)?),
        },
        tag::ACK => QueueOp::Ack {
            queue,
            channel: ChannelKey(get_u64(b)?),
            ids: get_ids(b)?,
        },
        tag::REJECT => QueueOp::Reject {
            queue,
            channel: ChannelKey(get_u64(b)?),
            ids: get_ids(b)?,
            requeue: get_flag(b)?,
        },
        tag::RETURN_CREDIT => QueueOp::ReturnCredit {
            queue,
            consumer: ConsumerId(get_u64(b)?),
            n: get_u32(b)?,
            bytes: get_u64(b)?,
        },
        tag::CHANNEL_CLOSED => QueueOp::ChannelClosed {
            queue,
            channel: ChannelKey(get_u64(b)?),
        },
        tag::KICK => QueueOp::Kick { queue },
        tag::DELIVER => QueueOp::Deliver {
            queue,
            deliveries: get_deliveries(b)?,
        },
        other => return Err(OpError::Tag(other)),
    })
}

/// What the home node answers a call.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Publish: the queue took the messages in. Consume: added, or why not.
    Done(Result<(), AmqpError>),
    Got(Option<GetResult>),
    /// Purge: messages removed.
    Count(u32),
    /// The queue's counts, as the server's stats list them.
    Stats(Vec<u64>),
    /// Delete: messages the queue had, or why it was not deleted.
    Deleted(Result<u32, AmqpError>),
}

impl Answer {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Answer::Done(result) => put_result(&mut out, result.as_ref().map(|_| 0)),
            Answer::Deleted(result) => put_result(&mut out, result.as_ref().copied()),
            Answer::Got(None) => out.put_u8(0),
            Answer::Got(Some(got)) => {
                out.put_u8(1);
                out.put_u64(got.msg_id.0);
                out.put_u8(u8::from(got.redelivered));
                out.put_u32(got.remaining);
                put_message(&mut out, &got.message);
            }
            Answer::Count(n) => out.put_u32(*n),
            Answer::Stats(figures) => {
                out.put_u32(figures.len() as u32);
                figures.iter().for_each(|n| out.put_u64(*n));
            }
        }
        out.freeze()
    }

    pub fn decode_done(mut b: Bytes) -> Result<Result<(), AmqpError>, OpError> {
        whole(&mut b, |b| Ok(get_result(b)?.map(|_| ())))
    }

    pub fn decode_deleted(mut b: Bytes) -> Result<Result<u32, AmqpError>, OpError> {
        whole(&mut b, get_result)
    }

    pub fn decode_count(mut b: Bytes) -> Result<u32, OpError> {
        whole(&mut b, get_u32)
    }

    pub fn decode_stats(mut b: Bytes) -> Result<Vec<u64>, OpError> {
        whole(&mut b, |b| {
            let n = get_u32(b)? as usize;
            need(b, n.saturating_mul(8))?;
            Ok((0..n).map(|_| b.get_u64()).collect())
        })
    }

    pub fn decode_got(mut b: Bytes) -> Result<Option<GetResult>, OpError> {
        whole(&mut b, |b| {
            if !get_flag(b)? {
                return Ok(None);
            }
            Ok(Some(GetResult {
                msg_id: MsgId(get_u64(b)?),
                redelivered: get_flag(b)?,
                remaining: get_u32(b)?,
                message: Arc::new(get_message(b)?),
            }))
        })
    }
}

fn whole<T>(
    b: &mut Bytes,
    read: impl FnOnce(&mut Bytes) -> Result<T, OpError>,
) -> Result<T, OpError> {
    let value = read(b)?;
    if !b.is_empty() {
        return Err(OpError::Trailing(b.len()));
    }
    Ok(value)
}

fn put_result(out: &mut BytesMut, result: Result<u32, &AmqpError>) {
    match result {
        Ok(n) => {
            out.put_u8(0);
            out.put_u32(n);
        }
        Err(e) => {
            out.put_u8(1);
            out.put_u16(e.code.code());
            out.put_u16(e.class_id);
            out.put_u16(e.method_id);
            put_long(out, e.message.as_bytes());
        }
    }
}

fn get_result(b: &mut Bytes) -> Result<Result<u32, AmqpError>, OpError> {
    if !get_flag(b)? {
        return Ok(Ok(get_u32(b)?));
    }
    let code = ReplyCode::from_code(get_u16(b)?).ok_or(OpError::Field("reply code"))?;
    let class_id = get_u16(b)?;
    let method_id = get_u16(b)?;
    let text = get_long(b)?;
    let message = String::from_utf8(text.to_vec()).map_err(|_| OpError::Field("error text"))?;
    Ok(Err(AmqpError {
        code,
        message,
        class_id,
        method_id,
    }))
}

fn put_head(out: &mut BytesMut, tag: u8, queue: &QueueRef) {
    out.put_u8(tag);
    put_short(out, &queue.vhost.0);
    put_short(out, &queue.name.0);
}

fn get_queue(b: &mut Bytes) -> Result<QueueRef, OpError> {
    Ok(QueueRef {
        vhost: VhostName(get_short(b)?),
        name: QueueName(get_short(b)?),
    })
}

fn put_option(out: &mut BytesMut, value: Option<u64>) {
    match value {
        Some(n) => {
            out.put_u8(1);
            out.put_u64(n);
        }
        None => out.put_u8(0),
    }
}

fn get_option(b: &mut Bytes) -> Result<Option<u64>, OpError> {
    Ok(if get_flag(b)? {
        Some(get_u64(b)?)
    } else {
        None
    })
}

fn put_spec(out: &mut BytesMut, s: &ConsumeSpec) {
    out.put_u64(s.id.0);
    out.put_u64(s.channel.0);
    out.put_i32(s.priority);
    out.put_u32(s.prefetch);
    out.put_u64(s.window_bytes);
    out.put_u8(u8::from(s.no_ack) | u8::from(s.exclusive) << 1);
    put_option(out, s.global_prefetch.map(u64::from));
}

fn get_spec(b: &mut Bytes) -> Result<ConsumeSpec, OpError> {
    let (id, channel) = (ConsumerId(get_u64(b)?), ChannelKey(get_u64(b)?));
    let priority = get_u32(b)? as i32;
    let prefetch = get_u32(b)?;
    let window_bytes = get_u64(b)?;
    let flags = get_u8(b)?;
    if flags > 3 {
        return Err(OpError::Field("consumer flags"));
    }
    let global = get_option(b)?;
    let global_prefetch = match global {
        Some(n) => Some(u32::try_from(n).map_err(|_| OpError::Field("global prefetch"))?),
        None => None,
    };
    Ok(ConsumeSpec {
        id,
        channel,
        priority,
        prefetch,
        window_bytes,
        no_ack: flags & 1 != 0,
        exclusive: flags & 2 != 0,
        global_prefetch,
    })
}

fn put_ids(out: &mut BytesMut, ids: &[MsgId]) {
    out.put_u32(ids.len() as u32);
    ids.iter().for_each(|id| out.put_u64(id.0));
}

fn get_ids(b: &mut Bytes) -> Result<Vec<MsgId>, OpError> {
    let n = get_u32(b)? as usize;
    need(b, n.saturating_mul(8))?;
    Ok((0..n).map(|_| MsgId(b.get_u64())).collect())
}

fn put_message(out: &mut BytesMut, m: &Message) {
    put_short(out, &m.exchange);
    put_short(out, &m.routing_key);
    put_long(out, &m.raw_properties);
    put_long(out, &m.body);
}

fn get_message(b: &mut Bytes) -> Result<Message, OpError> {
    let exchange = get_short(b)?;
    let routing_key = get_short(b)?;
    let raw_properties = get_long(b)?;
    let body = get_long(b)?;
    let properties = BasicProperties::decode(&mut raw_properties.clone())
        .map_err(|_| OpError::Field("message properties"))?;
    Ok(Message {
        exchange,
        routing_key,
        properties,
        raw_properties,
        body,
    })
}

/// Each message takes at least this many bytes: a count larger than the body could hold is
/// refused before anything is reserved for it.
const MESSAGE_MIN_BYTES: usize = 10;

fn get_messages(b: &mut Bytes) -> Result<Vec<Arc<Message>>, OpError> {
    let n = get_u32(b)? as usize;
    need(b, n.saturating_mul(MESSAGE_MIN_BYTES))?;
    (0..n).map(|_| get_message(b).map(Arc::new)).collect()
}

fn put_delivery(out: &mut BytesMut, d: &Delivery) {
    out.put_u64(d.consumer.0);
    out.put_u64(d.channel.0);
    out.put_u64(d.msg_id.0);
    out.put_u8(u8::from(d.redelivered) | u8::from(d.no_ack) << 1);
    put_message(out, &d.message);
}

fn get_deliveries(b: &mut Bytes) -> Result<Vec<Delivery>, OpError> {
    let n = get_u32(b)? as usize;
    need(b, n.saturating_mul(25 + MESSAGE_MIN_BYTES))?;
    (0..n).map(|_| get_delivery(b)).collect()
}

fn get_delivery(b: &mut Bytes) -> Result<Delivery, OpError> {
    let consumer = ConsumerId(get_u64(b)?);
    let channel = ChannelKey(get_u64(b)?);
    let msg_id = MsgId(get_u64(b)?);
    let flags = get_u8(b)?;
    if flags > 3 {
        return Err(OpError::Field("delivery flags"));
    }
    Ok(Delivery {
        consumer,
        channel,
        msg_id,
        message: Arc::new(get_message(b)?),
        redelivered: flags & 1 != 0,
        no_ack: flags & 2 != 0,
    })
}

fn put_short(out: &mut BytesMut, s: &ShortStr) {
    let bytes = s.as_slice();
    out.put_u8(bytes.len() as u8);
    out.put_slice(bytes);
}

fn get_short(b: &mut Bytes) -> Result<ShortStr, OpError> {
    let len = usize::from(get_u8(b)?);
    need(b, len)?;
    ShortStr::try_from_bytes(b.split_to(len)).map_err(|_| OpError::Field("name"))
}

fn put_long(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn get_long(b: &mut Bytes) -> Result<Bytes, OpError> {
    let len = get_u32(b)? as usize;
    need(b, len)?;
    Ok(b.split_to(len))
}

fn need(b: &Bytes, n: usize) -> Result<(), OpError> {
    if b.remaining() < n {
        return Err(OpError::Truncated);
    }
    Ok(())
}

fn get_u8(b: &mut Bytes) -> Result<u8, OpError> {
    need(b, 1)?;
    Ok(b.get_u8())
}

fn get_flag(b: &mut Bytes) -> Result<bool, OpError> {
    match get_u8(b)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(OpError::Field("flag")),
    }
}

fn get_u16(b: &mut Bytes) -> Result<u16, OpError> {
    need(b, 2)?;
    Ok(b.get_u16())
}

fn get_u32(b: &mut Bytes) -> Result<u32, OpError> {
    need(b, 4)?;
    Ok(b.get_u32())
}

fn get_u64(b: &mut Bytes) -> Result<u64, OpError> {
    need(b, 8)?;
    Ok(b.get_u64())
}

#[cfg(test)]
mod tests;
