//! Deliveries from queues to the client: delivery tags, unacked tracking, basic.deliver
//! encoding, server-sent basic.cancel, and channel / connection teardown.

use std::collections::VecDeque;

use bytes::BufMut;
use tern_amqp::frame::{FRAME_END, FRAME_METHOD};
use tern_amqp::{BasicCancel, Method, ShortStr};
use tern_core::names::ConsumerId;
use tern_core::queue::{Delivery, MsgId};

use super::Connection;
use crate::metrics::Counter;
use crate::queue_actor::{QueueCmd, QueueHandle};

/// A consumer as its connection knows it.
pub struct ConsumerInfo {
    pub channel: u16,
    pub tag: ShortStr,
    /// Index of its queue in the channel's queue list.
    pub queue_slot: usize,
    /// What basic.consume asked for, as operators see it (`/api/consumers`).
    pub no_ack: bool,
    pub exclusive: bool,
    pub prefetch: u16,
    pub arguments: tern_amqp::FieldTable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnackedEntry {
    pub slot: u32,
    pub msg_id: MsgId,
}

/// A channel's delivery tags and the deliveries still waiting for an ack.
///
/// Tags grow by one per delivery (acked or not), so the outstanding ones live in a deque indexed
/// by `tag - base`; settled entries become `None` and are popped from the front.
#[derive(Default)]
pub struct Unacked {
    last_tag: u64,
    base: u64,
    entries: VecDeque<Option<UnackedEntry>>,
    live: usize,
}

impl Unacked {
    pub fn next_tag(&mut self) -> u64 {
        self.last_tag += 1;
        self.last_tag
    }

    pub fn push(&mut self, tag: u64, entry: UnackedEntry) {
        if self.live == 0 {
            self.entries.clear();
            self.base = tag;
        }
        while self.base + (self.entries.len() as u64) < tag {
            self.entries.push_back(None);
        }
        self.entries.push_back(Some(entry));
        self.live += 1;
    }

    /// Settle `tag` (or everything up to it with `multiple`; tag 0 with multiple = all).
    /// None if the tag is not outstanding: the caller answers 406 "unknown delivery tag".
    pub fn take(&mut self, tag: u64, multiple: bool) -> Option<Vec<UnackedEntry>> {
        if multiple && tag == 0 {
            return Some(self.take_all());
        }
        if tag < self.base || tag >= self.base + self.entries.len() as u64 {
            return None;
        }
        let index = (tag - self.base) as usize;
        let taken = if multiple {
            let mut out = Vec::new();
            for slot in self.entries.iter_mut().take(index + 1) {
                if let Some(e) = slot.take() {
                    out.push(e);
                }
            }
            if out.is_empty() {
                return None;
            }
            out
        } else {
            vec![self.entries.get_mut(index)?.take()?]
        };
        self.live -= taken.len();
        while let Some(None) = self.entries.front() {
            self.entries.pop_front();
            self.base += 1;
        }
        Some(taken)
    }

    pub fn take_all(&mut self) -> Vec<UnackedEntry> {
        let out: Vec<UnackedEntry> = self.entries.drain(..).flatten().collect();
        self.live = 0;
        out
    }

    /// Deliveries waiting for an ack.
    pub fn len(&self) -> usize {
        self.live
    }
}

/// No-ack deliveries written since the last flush, for one consumer: returned to its queue
/// once the write is done.
pub struct NoAckCredit {
    queue: QueueHandle,
    consumer: ConsumerId,
    n: u32,
    bytes: u64,
}

impl Connection {
    /// Write a queue's deliveries as basic.deliver frames; requeue any for consumers that are
    /// gone (cancelled or channel closed while the deliveries were in flight).
    pub(super) async fn deliver(&mut self, queue: QueueHandle, deliveries: Vec<Delivery>) {
        let mut orphans: Vec<Delivery> = Vec::new();
        let mut no_ack: Vec<(ConsumerId, u32, u64)> = Vec::new();
        for d in deliveries {
            if !self.deliver_one(&d) {
                orphans.push(d);
                continue;
            }
            if d.no_ack {
                let bytes = d.message.size_bytes() as u64;
                match no_ack.last_mut() {
                    Some((c, n, b)) if *c == d.consumer => (*n, *b) = (*n + 1, *b + bytes),
                    _ => no_ack.push((d.consumer, 1, bytes)),
                }
            }
        }
        for (consumer, n, bytes) in no_ack {
            self.noack_credit.push(NoAckCredit {
                queue: queue.clone(),
                consumer,
                n,
                bytes,
            });
        }
        if !orphans.is_empty() {
            requeue(&queue, orphans).await;
        }
    }

    fn deliver_one(&mut self, d: &Delivery) -> bool {
        let Some(info) = self.consumers.get(&d.consumer) else {
            return false;
        };
        let Some(channel) = self.channels.get_mut(&info.channel) else {
            return false;
        };
        if channel.closing {
            return false;
        }
        let tag = channel.unacked.next_tag();
        if !d.no_ack {
            let entry = UnackedEntry {
                slot: info.queue_slot as u32,
                msg_id: d.msg_id,
            };
            channel.unacked.push(tag, entry);
        }
        let ch = info.channel;
        let (exchange, key) = (
            d.message.exchange.as_bytes(),
            d.message.routing_key.as_bytes(),
        );
        encode_deliver(
            &mut self.out,
            ch,
            info.tag.as_bytes(),
            tag,
            d.redelivered,
            exchange,
            key,
        );
        self.send_content(ch, &d.message);
        let kind = if d.no_ack {
            Counter::DeliveredConsumeAutoAck
        } else {
            Counter::DeliveredConsumeManualAck
        };
        self.count_delivery(kind, d.redelivered);
        true
    }

    /// A delivery (consume or get) for RabbitMQ's global counters.
    pub(super) fn count_delivery(&mut self, kind: Counter, redelivered: bool) {
        self.counts.add(Counter::Delivered, 1);
        self.counts.add(kind, 1);
        if redelivered {
            self.counts.add(Counter::Redelivered, 1);
        }
    }

    /// After a write: give no-ack consumers their window back for what was flushed.
    pub(super) async fn after_flush(&mut self) {
        for c in std::mem::take(&mut self.noack_credit) {
            let (consumer, n, bytes) = (c.consumer, c.n, c.bytes);
            let cmd = QueueCmd::ReturnCredit { consumer, n, bytes };
            let _ = c.queue.send(cmd).await;
        }
    }

    /// The queue cancelled a consumer (it was deleted): tell clients that can take it.
    pub(super) fn consumer_cancelled(&mut self, consumer: ConsumerId) {
        let Some(info) = self.forget_consumer(consumer) else {
            return;
        };
        if self.caps.consumer_cancel_notify {
            let cancel = Method::BasicCancel(BasicCancel {
                consumer_tag: info.tag,
                nowait: true,
            });
            self.send_method(info.channel, &cancel);
        }
    }

    /// We sent channel.close: stop its consumers and requeue its unacked now; the channel
    /// record stays until close-ok so that late frames on it are ignored.
    pub(super) fn channel_closing(&mut self, ch: u16) {
        self.drop_reply_consumer(ch);
        if let Some(c) = self.channels.get_mut(&ch) {
            c.closing = true;
            c.publishing = None;
            for q in &c.queues {
                self.pending
                    .push_command(q.clone(), QueueCmd::ChannelClosed { channel: c.key });
            }
            c.unacked.take_all();
        }
        self.consumers.retain(|_, info| info.channel != ch);
    }

    /// The client closed the channel (or the connection went): release everything it held.
    pub(super) async fn remove_channel(&mut self, ch: u16) {
        self.drop_reply_consumer(ch);
        let removed = self.channels.remove(&ch);
        self.count_channels();
        let Some(c) = removed else {
            return;
        };
        for q in &c.queues {
            let _ = q.send(QueueCmd::ChannelClosed { channel: c.key }).await;
        }
        self.consumers.retain(|_, info| info.channel != ch);
    }

    /// The socket is gone: close every channel, delete this connection's exclusive queues.
    pub(super) async fn cleanup(&mut self) {
        self.flush_pending().await;
        let channels: Vec<u16> = self.channels.keys().copied().collect();
        for ch in channels {
            self.remove_channel(ch).await;
        }
        for (vhost, name) in self.broker.queues_owned_by(self.id) {
            if let Some(q) = self.broker.queue(&vhost, &name) {
                let _ = q
                    .ask(|reply| QueueCmd::Delete {
                        if_unused: false,
                        if_empty: false,
                        reply,
                    })
                    .await;
            }
        }
        self.broker.metrics.absorb(&mut self.counts);
    }
}

/// basic.deliver written straight into the output buffer (the hottest encoder: no method
/// struct, no string clones).
pub(super) fn encode_deliver(
    out: &mut bytes::BytesMut,
    channel: u16,
    consumer_tag: &[u8],
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
) {
    let size = 4 + 1 + consumer_tag.len() + 8 + 1 + 1 + exchange.len() + 1 + routing_key.len();
    out.reserve(size + 8);
    out.put_u8(FRAME_METHOD);
    out.put_u16(channel);
    out.put_u32(size as u32);
    out.put_u16(60);
    out.put_u16(60);
    out.put_u8(consumer_tag.len() as u8);
    out.put_slice(consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(redelivered));
    out.put_u8(exchange.len() as u8);
    out.put_slice(exchange);
    out.put_u8(routing_key.len() as u8);
    out.put_slice(routing_key);
    out.put_u8(FRAME_END);
}

/// Give deliveries that found no consumer back to their queue: an unacknowledged one is
/// requeued where it was, a no-ack one (already gone from the queue) is published again.
pub(crate) async fn requeue(queue: &QueueHandle, orphans: Vec<Delivery>) {
    let mut republish = Vec::new();
    for d in orphans {
        if d.no_ack {
            republish.push(d.message);
        } else {
            let cmd = QueueCmd::Reject {
                channel: d.channel,
                ids: vec![d.msg_id],
                requeue: true,
            };
            let _ = queue.send(cmd).await;
        }
    }
    if !republish.is_empty() {
        let cmd = QueueCmd::Publish {
            messages: republish,
            confirm: None,
        };
        let _ = queue.send(cmd).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> UnackedEntry {
        UnackedEntry {
            slot: 0,
            msg_id: MsgId(n),
        }
    }

    #[test]
    fn single_and_multiple_acks_settle_the_right_tags() {
        let mut u = Unacked::default();
        for _ in 0..5 {
            let t = u.next_tag();
            u.push(t, entry(t));
        }
        assert_eq!(u.take(2, false), Some(vec![entry(2)]));
        assert_eq!(u.take(2, false), None, "a tag settles once");
        assert_eq!(u.take(4, true), Some(vec![entry(1), entry(3), entry(4)]));
        assert_eq!(u.len(), 1);
        assert_eq!(u.take(9, false), None);
        assert_eq!(u.take(0, true), Some(vec![entry(5)]));
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn no_ack_tags_leave_gaps_that_are_not_acknowledgeable() {
        let mut u = Unacked::default();
        let t1 = u.next_tag();
        u.push(t1, entry(1));
        let _noack = u.next_tag();
        let t3 = u.next_tag();
        u.push(t3, entry(3));
        assert_eq!(u.take(2, false), None);
        assert_eq!(u.take(3, true), Some(vec![entry(1), entry(3)]));
    }
}
