//! The queue state machine: ready messages, unacked deliveries, consumers with credit,
//! dispatch, ack / reject / requeue, get, purge. Sans IO: the queue actor in `tern-server`
//! feeds it commands and sends the [`Delivery`]s it produces to connections.
//!
//! Contract with the server:
//! - Every message is, at any time, in exactly one of: ready, unacked (keyed by the channel it
//!   was delivered on and its [`MsgId`]), or gone (acked, rejected without requeue, purged,
//!   delivered no-ack).
//! - Unacked deliveries belong to the channel, not the consumer (AMQP 0-9-1): cancelling a
//!   consumer leaves them unacked; closing the channel requeues them.
//! - Credit: a consumer with prefetch `n > 0` has at most `n` deliveries in flight. For an
//!   ack-mode consumer "in flight" means unacked; for a no-ack consumer it is the window of
//!   deliveries its connection has not yet flushed, given back with
//!   [`QueueState::return_credit`]. A channel's global prefetch ([`ChannelCredit`]) is taken per
//!   ack-mode delivery and released by this queue when the delivery leaves unacked.
//! - Ready messages are kept in [`MsgId`] order; requeued messages go back to their original
//!   position, as RabbitMQ does, flagged redelivered.
//! - Paging: ready messages beyond what the server keeps in memory are *paged* — on disk
//!   only, counted here ([`QueueState::push_paged`]), all younger than every ready message in
//!   memory; the server loads them back in id order as consumers catch up
//!   ([`QueueState::load`]). Paged messages count as ready for message counts.
//! - With a journal ([`QueueState::enable_journal`], for durable queues), every change to a
//!   persistent message's fate is recorded as a [`QueueEvent`] for the server to write down:
//!   delivered (so it comes back redelivered after a restart) and removed (acked, rejected,
//!   delivered no-ack, purged). [`QueueState::restore`] puts recovered messages back.

mod consumers;
mod credit;
pub mod records;
mod rings;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_model;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tern_amqp::{AmqpError, ReplyCode};

use crate::message::Message;
use crate::names::{ChannelKey, ConsumerId, QueueName, VhostName};
use consumers::{ConsumerRef, Consumers};
pub use credit::ChannelCredit;

/// A message's identity within one queue: assigned by [`QueueState::push`], increasing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId(pub u64);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueOptions {
    /// x-single-active-consumer: only the first registered consumer receives.
    pub single_active_consumer: bool,
}

/// A basic.consume as the queue sees it.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    pub id: ConsumerId,
    pub channel: ChannelKey,
    /// x-priority; higher is served first.
    pub priority: i32,
    /// Most deliveries in flight; 0 = unlimited. For a no-ack consumer: its flow window.
    pub prefetch: u32,
    /// A no-ack consumer's flow window in bytes (0 = unlimited): no new delivery while this
    /// much is in flight, so the window holds at most this plus one message. Ack-mode
    /// consumers ignore it (their deliveries stay in the queue until acked).
    pub window_bytes: u64,
    pub no_ack: bool,
    pub exclusive: bool,
    /// The channel's global prefetch (basic.qos global = true), if set.
    pub channel_credit: Option<Arc<ChannelCredit>>,
}

/// A message handed to a consumer.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub consumer: ConsumerId,
    pub channel: ChannelKey,
    pub msg_id: MsgId,
    pub message: Arc<Message>,
    pub redelivered: bool,
    pub no_ack: bool,
}

/// The answer to basic.get.
#[derive(Clone, Debug, PartialEq)]
pub struct GetResult {
    pub msg_id: MsgId,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Ready messages left after this one (basic.get-ok message-count).
    pub remaining: u32,
}

struct ReadyMsg {
    id: MsgId,
    message: Arc<Message>,
    redelivered: bool,
}

struct UnackedMsg {
    message: Arc<Message>,
    /// The consumer it was delivered to; None for basic.get.
    holder: Option<ConsumerRef>,
    /// The channel credit unit it holds, if any.
    credit: Option<Arc<ChannelCredit>>,
}

pub struct QueueState {
    name: QueueName,
    vhost: VhostName,
    next_id: u64,
    /// Sorted by id.
    ready: VecDeque<ReadyMsg>,
    ready_bytes: u64,
    unacked: BTreeMap<(ChannelKey, MsgId), UnackedMsg>,
    unacked_bytes: u64,
    consumers: Consumers,
    /// Reused buffer for messages being requeued.
    requeue: Vec<ReadyMsg>,
    /// What happened to persistent messages since the last [`QueueState::take_journal`].
    journal: Option<Vec<QueueEvent>>,
    /// Ready messages on disk only (see the module docs), and their bytes.
    paged: u64,
    paged_bytes: u64,
}

/// A change to a persistent message's fate, for a durable queue's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueEvent {
    /// Handed to a consumer (or basic.get) in ack mode: it is unacked now.
    Delivered(MsgId),
    /// Gone for good.
    Removed(MsgId),
}

fn size_of(message: &Message) -> u64 {
    message.size_bytes() as u64
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl QueueState {
    pub fn new(name: QueueName, vhost: VhostName, options: QueueOptions) -> Self {
        QueueState {
            name,
            vhost,
            next_id: 0,
            ready: VecDeque::new(),
            ready_bytes: 0,
            unacked: BTreeMap::new(),
            unacked_bytes: 0,
            consumers: Consumers::new(options.single_active_consumer),
            requeue: Vec::new(),
            journal: None,
            paged: 0,
            paged_bytes: 0,
        }
    }

    /// A message that goes straight to disk (the server has written it): it gets its id and
    /// is counted, but not kept. Paging starts when the server decides memory is full, and
    /// lasts while anything is paged: ids must stay in order.
    pub fn push_paged(&mut self, size_bytes: u64) -> MsgId {
        self.next_id += 1;
        self.paged += 1;
        self.paged_bytes += size_bytes;
        MsgId(self.next_id)
    }

    /// Count `n` recovered messages of `bytes` that stay on disk for now, with ids up to
    /// `max_id`.
    pub fn restore_paged(&mut self, n: u64, bytes: u64, max_id: MsgId) {
        self.paged += n;
        self.paged_bytes += bytes;
        self.next_id = self.next_id.max(max_id.0);
    }

    /// A paged message read back from disk, the oldest paged one: it joins the ready messages
    /// in memory, at the back.
    pub fn load(&mut self, id: MsgId, message: Arc<Message>, redelivered: bool) {
        debug_assert!(self.paged > 0, "loading a message that was not paged");
        debug_assert!(
            self.ready.back().is_none_or(|m| m.id < id),
            "loaded out of order"
        );
        self.paged = self.paged.saturating_sub(1);
        self.paged_bytes = self.paged_bytes.saturating_sub(size_of(&message));
        self.ready_bytes += size_of(&message);
        self.ready.push_back(ReadyMsg {
            id,
            message,
            redelivered,
        });
    }

    /// Messages on disk only.
    pub fn paged(&self) -> u64 {
        self.paged
    }

    /// Bytes of the messages on disk only.
    pub fn paged_bytes(&self) -> u64 {
        self.paged_bytes
    }

    /// Ready messages held in memory.
    pub fn in_memory(&self) -> usize {
        self.ready.len()
    }

    /// Record [`QueueEvent`]s for persistent messages from now on.
    pub fn enable_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The events recorded since the last call (empty without a journal).
    pub fn take_journal(&mut self) -> Vec<QueueEvent> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn note(&mut self, message: &Message, event: QueueEvent) {
        if let Some(journal) = self.journal.as_mut() {
            if message.is_persistent() {
                journal.push(event);
            }
        }
    }

    /// Put back a message recovered from disk, with the id it had. Recovered messages come in
    /// id order, before anything new is pushed.
    pub fn restore(&mut self, id: MsgId, message: Arc<Message>, redelivered: bool) {
        debug_assert!(id.0 > self.next_id, "restored out of order");
        self.next_id = self.next_id.max(id.0);
        self.ready_bytes += size_of(&message);
        self.ready.push_back(ReadyMsg {
            id,
            message,
            redelivered,
        });
    }

    pub fn name(&self) -> &QueueName {
        &self.name
    }

    pub fn vhost(&self) -> &VhostName {
        &self.vhost
    }

    /// Enqueue at the tail.
    pub fn push(&mut self, message: Arc<Message>) -> MsgId {
        self.next_id += 1;
        let id = MsgId(self.next_id);
        self.ready_bytes += size_of(&message);
        self.ready.push_back(ReadyMsg {
            id,
            message,
            redelivered: false,
        });
        id
    }

    /// basic.consume. 403 if an exclusive consumer holds the queue, or if this one asks for
    /// exclusive use of a queue that has consumers (or single active consumer).
    pub fn add_consumer(&mut self, spec: ConsumerSpec) -> Result<(), AmqpError> {
        if self.consumers.refuses(spec.exclusive) {
            let text = format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            );
            return Err(AmqpError::new(ReplyCode::AccessRefused, text));
        }
        debug_assert!(!self.consumers.contains(spec.id), "consumer ids are unique");
        // Defensive: a reused id replaces the old registration rather than corrupting it.
        self.consumers.remove(spec.id);
        self.consumers.add(spec);
        Ok(())
    }

    /// basic.cancel. Its unacked deliveries stay unacked: they belong to the channel.
    pub fn remove_consumer(&mut self, id: ConsumerId) -> bool {
        self.consumers.remove(id)
    }

    pub fn has_consumer(&self, id: ConsumerId) -> bool {
        self.consumers.contains(id)
    }

    /// Hand ready messages to consumers with credit: highest priority first, round-robin within
    /// a priority. Stops when nothing is ready or nobody has credit. O(deliveries) plus one
    /// look at each consumer parked on a full channel.
    pub fn dispatch(&mut self, out: &mut Vec<Delivery>) {
        if self.ready.is_empty() {
            return;
        }
        self.consumers.unpark();
        while let Some(m) = self.ready.pop_front() {
            let Some(claim) = self.consumers.claim() else {
                self.ready.push_front(m);
                break;
            };
            let size = size_of(&m.message);
            self.ready_bytes -= size;
            if !claim.no_ack {
                self.unacked_bytes += size;
                let entry = UnackedMsg {
                    message: m.message.clone(),
                    holder: Some(claim.holder),
                    credit: claim.credit.clone(),
                };
                let prev = self.unacked.insert((claim.channel, m.id), entry);
                debug_assert!(prev.is_none(), "{:?} was already unacked", m.id);
            }
            let event = if claim.no_ack {
                QueueEvent::Removed(m.id)
            } else {
                QueueEvent::Delivered(m.id)
            };
            self.note(&m.message, event);
            out.push(Delivery {
                consumer: claim.holder.id,
                channel: claim.channel,
                msg_id: m.id,
                message: m.message,
                redelivered: m.redelivered,
                no_ack: claim.no_ack,
            });
            self.consumers.delivered(&claim, size);
        }
        self.debug_check_bytes();
    }

    /// basic.ack. Ids not unacked on `channel` are ignored.
    pub fn ack(&mut self, channel: ChannelKey, ids: &[MsgId]) {
        self.settle(channel, ids, false);
    }

    /// basic.reject / basic.nack. With requeue the messages go back to their original
    /// positions, redelivered; without, they are dropped.
    pub fn reject(&mut self, channel: ChannelKey, ids: &[MsgId], requeue: bool) {
        self.settle(channel, ids, requeue);
    }

    /// basic.get: the head message. Without no-ack it becomes unacked on `channel`, held by no
    /// consumer (basic.get ignores prefetch, as in RabbitMQ).
    pub fn get(&mut self, channel: ChannelKey, no_ack: bool) -> Option<GetResult> {
        let m = self.ready.pop_front()?;
        let size = size_of(&m.message);
        self.ready_bytes -= size;
        let event = if no_ack {
            QueueEvent::Removed(m.id)
        } else {
            QueueEvent::Delivered(m.id)
        };
        self.note(&m.message, event);
        if !no_ack {
            self.unacked_bytes += size;
            let entry = UnackedMsg {
                message: m.message.clone(),
                holder: None,
                credit: None,
            };
            let prev = self.unacked.insert((channel, m.id), entry);
            debug_assert!(prev.is_none(), "{:?} was already unacked", m.id);
        }
        let remaining = self.message_count();
        Some(GetResult {
            msg_id: m.id,
            message: m.message,
            redelivered: m.redelivered,
            remaining,
        })
    }

    /// queue.purge: drops ready messages only; unacked ones stay (RabbitMQ). Returns how many.
    pub fn purge(&mut self) -> u32 {
        let n = self.message_count();
        if let Some(journal) = self.journal.as_mut() {
            let gone = self.ready.iter().filter(|m| m.message.is_persistent());
            journal.extend(gone.map(|m| QueueEvent::Removed(m.id)));
        }
        // Paged messages go too; the server drops them from its store (it knows their ids).
        self.paged = 0;
        self.paged_bytes = 0;
        self.ready.clear();
        self.ready_bytes = 0;
        n
    }

    /// The channel closed: its consumers go and its unacked messages are requeued.
    pub fn channel_closed(&mut self, channel: ChannelKey) {
        for id in self.consumers.on_channel(channel) {
            self.consumers.remove(id);
        }
        let range = (channel, MsgId(0))..=(channel, MsgId(u64::MAX));
        let ids: Vec<MsgId> = self.unacked.range(range).map(|(key, _)| key.1).collect();
        self.settle(channel, &ids, true);
    }

    /// A no-ack consumer's connection flushed `n` of its deliveries: widen its window again.
    /// Unknown consumers (cancelled meanwhile) and ack-mode consumers are ignored.
    pub fn return_credit(&mut self, consumer: ConsumerId, n: u32, bytes: u64) {
        self.consumers.return_credit(consumer, n, bytes);
    }

    /// Ready messages.
    /// Ready messages, paged ones included.
    pub fn message_count(&self) -> u32 {
        u32::try_from(self.ready.len() as u64 + self.paged).unwrap_or(u32::MAX)
    }

    pub fn unacked_count(&self) -> u32 {
        count(self.unacked.len())
    }

    pub fn consumer_count(&self) -> u32 {
        count(self.consumers.len())
    }

    /// Bytes of ready messages in memory (paged ones not included).
    pub fn ready_bytes(&self) -> u64 {
        self.ready_bytes
    }

    pub fn unacked_bytes(&self) -> u64 {
        self.unacked_bytes
    }

    /// No consumers: what queue.delete if-unused checks (RabbitMQ).
    pub fn is_unused(&self) -> bool {
        self.consumers.len() == 0
    }

    /// For auto-delete: the queue goes when its last consumer does, if it ever had one.
    pub fn ever_had_consumer(&self) -> bool {
        self.consumers.ever_had()
    }

    /// With single active consumer, the one receiving; None otherwise.
    pub fn active_consumer(&self) -> Option<ConsumerId> {
        self.consumers.active()
    }

    /// Take `ids` out of `channel`'s unacked set, give back their credit, and requeue or drop.
    fn settle(&mut self, channel: ChannelKey, ids: &[MsgId], requeue: bool) {
        let mut credit = Releases::default();
        for &id in ids {
            let Some(entry) = self.unacked.remove(&(channel, id)) else {
                continue;
            };
            let size = size_of(&entry.message);
            debug_assert!(self.unacked_bytes >= size);
            self.unacked_bytes -= size;
            credit.add(&mut self.consumers, entry.holder, entry.credit);
            if !requeue {
                self.note(&entry.message, QueueEvent::Removed(id));
            }
            if requeue {
                let m = ReadyMsg {
                    id,
                    message: entry.message,
                    redelivered: true,
                };
                self.requeue.push(m);
            }
        }
        credit.finish(&mut self.consumers);
        self.requeue_pending();
        self.debug_check_bytes();
    }

    /// Put the messages in `self.requeue` back into ready at their original positions.
    fn requeue_pending(&mut self) {
        if self.requeue.is_empty() {
            return;
        }
        self.requeue.sort_unstable_by_key(|m| m.id);
        for m in &self.requeue {
            self.ready_bytes += size_of(&m.message);
        }
        let fits_at_head = match (self.requeue.last(), self.ready.front()) {
            (Some(last), Some(first)) => last.id < first.id,
            _ => true,
        };
        if fits_at_head {
            // The common case: everything requeued is older than everything ready.
            for m in self.requeue.drain(..).rev() {
                self.ready.push_front(m);
            }
            return;
        }
        // Ready ids below a requeued one are only earlier requeues, so positions are near the
        // head and VecDeque::insert shifts little.
        for m in self.requeue.drain(..) {
            let pos = self.ready.partition_point(|r| r.id < m.id);
            debug_assert!(
                self.ready.get(pos).is_none_or(|r| r.id != m.id),
                "{:?} twice",
                m.id
            );
            self.ready.insert(pos, m);
        }
    }

    fn debug_check_bytes(&self) {
        debug_assert!(
            !self.ready.is_empty() || self.ready_bytes == 0,
            "ready bytes leak"
        );
        debug_assert!(
            !self.unacked.is_empty() || self.unacked_bytes == 0,
            "unacked bytes leak"
        );
    }
}

/// Credit given back by one settle, batched: runs of the same consumer and the same channel
/// credit become one call each (a multi-ack is usually one run).
#[derive(Default)]
struct Releases {
    consumer: Option<(ConsumerRef, u32)>,
    channel: Option<(Arc<ChannelCredit>, u32)>,
}

impl Releases {
    fn add(
        &mut self,
        consumers: &mut Consumers,
        holder: Option<ConsumerRef>,
        credit: Option<Arc<ChannelCredit>>,
    ) {
        if let Some(h) = holder {
            match &mut self.consumer {
                Some((current, n)) if *current == h => *n += 1,
                _ => {
                    self.flush_consumer(consumers);
                    self.consumer = Some((h, 1));
                }
            }
        }
        if let Some(c) = credit {
            match &mut self.channel {
                Some((current, n)) if Arc::ptr_eq(current, &c) => *n += 1,
                _ => {
                    self.flush_channel();
                    self.channel = Some((c, 1));
                }
            }
        }
    }

    fn flush_consumer(&mut self, consumers: &mut Consumers) {
        if let Some((holder, n)) = self.consumer.take() {
            consumers.settled(holder, n);
        }
    }

    fn flush_channel(&mut self) {
        if let Some((credit, n)) = self.channel.take() {
            // Whether this made room is for the server to act on (kick the channel's other
            // queues); this queue dispatches after every command batch anyway.
            credit.release(n);
        }
    }

    fn finish(mut self, consumers: &mut Consumers) {
        self.flush_consumer(consumers);
        self.flush_channel();
    }
}

#[cfg(test)]
impl QueueState {
    /// Full consistency check, O(messages + consumers).
    fn check_invariants(&self) {
        let ready_ids: Vec<MsgId> = self.ready.iter().map(|m| m.id).collect();
        assert!(
            ready_ids.windows(2).all(|w| w[0] < w[1]),
            "ready is sorted and unique"
        );
        let ready_bytes: u64 = self.ready.iter().map(|m| size_of(&m.message)).sum();
        assert_eq!(ready_bytes, self.ready_bytes);
        let unacked_bytes: u64 = self.unacked.values().map(|e| size_of(&e.message)).sum();
        assert_eq!(unacked_bytes, self.unacked_bytes);
        let mut unacked_ids: Vec<MsgId> = self.unacked.keys().map(|k| k.1).collect();
        unacked_ids.sort_unstable();
        assert!(
            unacked_ids.windows(2).all(|w| w[0] < w[1]),
            "unacked on one channel only"
        );
        for id in &unacked_ids {
            assert!(
                ready_ids.binary_search(id).is_err(),
                "{id:?} both ready and unacked"
            );
        }
        self.consumers.check();
    }

    fn in_flight(&self, id: ConsumerId) -> Option<u32> {
        self.consumers.in_flight(id)
    }
}
