//! The basic, confirm and tx classes: publishing (routing, batching, confirms, transactions),
//! consuming, get, acknowledgements and qos.
//!
//! Publishing is batched: a completed message is routed at once, but what goes to each queue is
//! collected in [`PendingBatches`] and sent as one command per queue when the read buffer is
//! drained (or earlier, before any method that must see those messages). Publisher confirms
//! are sent after that hand-off, one `basic.ack(multiple)` per channel per batch.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tern_amqp::frame::{encode_body, encode_content_header_raw};
use tern_amqp::{
    AmqpError, BasicCancel, BasicCancelOk, BasicConsume, BasicConsumeOk, BasicGet, BasicGetOk,
    BasicPublish, BasicQos, BasicReturn, ContentHeader, FieldValue, Method, ReplyCode, ShortStr,
};
use tern_core::message::Message;
use tern_core::meta::access::{Op, Resource};
use tern_core::names::{ConsumerId, ExchangeName, QueueName};
use tern_core::queue::{ChannelCredit, ConsumerSpec, MsgId};
use tern_core::routing::ExchangeKind;

use super::confirms::Answer;
use super::deliver::{ConsumerInfo, UnackedEntry};
use super::reply_to::is_reply_address;
use super::Connection;
use crate::metrics::Counter;
use crate::queue_actor::store::ConfirmRequest;
use crate::queue_actor::{QueueCmd, QueueHandle};

/// Bodies up to this size are copied out of the read buffer, so a long-lived small message does
/// not keep a whole 128 KiB read buffer alive; larger ones are kept zero-copy.
const COPY_BODY_BELOW_BYTES: usize = 4096;
/// Most cached routing results per connection before the cache is cleared.
const ROUTE_CACHE_ENTRIES: usize = 1024;

pub struct PartialPublish {
    method: BasicPublish,
    header: Option<ContentHeader>,
    body: BytesMut,
    first_chunk: Option<Bytes>,
}

#[derive(Default)]
pub struct ConfirmState {
    pub next_seq: u64,
    /// The highest sequence number basic.ack / basic.nack has answered (confirms are counted
    /// per message, and one multiple ack covers many).
    pub answered_through: u64,
}

#[derive(Default)]
pub struct TxBuffer {
    publishes: Vec<(Arc<[QueueHandle]>, Arc<Message>)>,
    commands: Vec<(QueueHandle, QueueCmd)>,
}

/// One queue's share of a batch; `to_disk`: a durable queue got persistent messages, so its
/// confirm waits for its fsync.
struct QueueBatch {
    queue: QueueHandle,
    messages: Vec<Arc<Message>>,
    to_disk: bool,
}

/// Work collected while draining one read buffer, sent when it is drained.
#[derive(Default)]
pub struct PendingBatches {
    publishes: Vec<QueueBatch>,
    commands: Vec<(QueueHandle, QueueCmd)>,
    /// (channel, highest confirmed sequence number) to ack once the batch is safe.
    confirms: Vec<(u16, u64)>,
    /// Channels whose tx.commit-ok waits for this batch.
    commits: Vec<u16>,
}

impl PendingBatches {
    fn add_publish(&mut self, queue: &QueueHandle, message: &Arc<Message>) {
        let to_disk = queue.def().durable && message.is_persistent();
        match self.publishes.iter_mut().find(|b| b.queue.same(queue)) {
            Some(b) => {
                b.messages.push(message.clone());
                b.to_disk |= to_disk;
            }
            None => self.publishes.push(QueueBatch {
                queue: queue.clone(),
                messages: vec![message.clone()],
                to_disk,
            }),
        }
    }

    fn add_confirm(&mut self, ch: u16, seq: u64) {
        match self.confirms.iter_mut().find(|(c, _)| *c == ch) {
            Some(entry) => entry.1 = seq,
            None => self.confirms.push((ch, seq)),
        }
    }

    pub fn push_command(&mut self, queue: QueueHandle, cmd: QueueCmd) {
        self.commands.push((queue, cmd));
    }

    pub fn is_empty(&self) -> bool {
        self.publishes.is_empty()
            && self.commands.is_empty()
            && self.confirms.is_empty()
            && self.commits.is_empty()
    }
}

/// Routing results for (exchange, routing key), valid for one routing generation.
#[derive(Default)]
pub struct RouteCache {
    map: HashMap<(ShortStr, ShortStr), Arc<[QueueHandle]>>,
}

fn err(code: ReplyCode, text: impl Into<String>, class_id: u16, method_id: u16) -> AmqpError {
    AmqpError::new(code, text).on(class_id, method_id)
}

impl Connection {
    pub(super) async fn handle_basic_method(
        &mut self,
        ch: u16,
        method: Method,
    ) -> Result<(), AmqpError> {
        match method {
            Method::BasicPublish(m) => self.basic_publish(ch, m),
            Method::BasicAck(m) => self.settle(ch, m.delivery_tag, m.multiple, Settle::Ack),
            Method::BasicNack(m) => {
                self.settle(ch, m.delivery_tag, m.multiple, Settle::Reject(m.requeue))
            }
            Method::BasicReject(m) => {
                self.settle(ch, m.delivery_tag, false, Settle::Reject(m.requeue))
            }
            Method::BasicQos(m) => self.basic_qos(ch, m),
            Method::BasicConsume(m) => self.basic_consume(ch, m).await,
            Method::BasicCancel(m) => self.basic_cancel(ch, m).await,
            Method::BasicGet(m) => self.basic_get(ch, m).await,
            Method::BasicRecover(m) => self.basic_recover(ch, m.requeue, true),
            Method::BasicRecoverAsync(m) => self.basic_recover(ch, m.requeue, false),
            Method::ConfirmSelect(m) => self.confirm_select(ch, m.nowait),
            Method::TxSelect(_) => self.tx_select(ch),
            Method::TxCommit(_) => self.tx_commit(ch).await,
            Method::TxRollback(_) => self.tx_rollback(ch),
            other => {
                let text = format!("method {} is not valid from a client", other.name());
                Err(err(
                    ReplyCode::CommandInvalid,
                    text,
                    other.class_id(),
                    other.method_id(),
                ))
            }
        }
    }

    fn basic_publish(&mut self, ch: u16, m: BasicPublish) -> Result<(), AmqpError> {
        if m.immediate {
            return Err(err(ReplyCode::NotImplemented, "immediate=true", 60, 40));
        }
        self.published = true;
        if let Some(c) = self.channels.get_mut(&ch) {
            c.publishing = Some(PartialPublish {
                method: m,
                header: None,
                body: BytesMut::new(),
                first_chunk: None,
            });
        }
        Ok(())
    }

    pub(super) async fn handle_content_header(
        &mut self,
        ch: u16,
        header: ContentHeader,
    ) -> Result<(), AmqpError> {
        let max = self.broker.config.max_message_size_bytes;
        if self.channel_is_closing(ch) {
            return Ok(());
        }
        let Some(p) = self
            .channels
            .get_mut(&ch)
            .and_then(|c| c.publishing.as_mut())
        else {
            return Err(unexpected_content(ch, "content header"));
        };
        if p.header.is_some() {
            return Err(unexpected_content(ch, "second content header"));
        }
        if header.class_id != 60 {
            let text = format!(
                "content header for class {} on a basic.publish",
                header.class_id
            );
            return Err(err(ReplyCode::FrameError, text, 60, 40));
        }
        if header.body_size > max {
            if let Some(c) = self.channels.get_mut(&ch) {
                c.publishing = None;
            }
            let text = format!(
                "message size {} is larger than configured max size {max}",
                header.body_size
            );
            return Err(err(ReplyCode::PreconditionFailed, text, 60, 40));
        }
        let complete = header.body_size == 0;
        p.header = Some(header);
        if complete {
            return self.complete_publish(ch);
        }
        Ok(())
    }

    pub(super) async fn handle_content_body(
        &mut self,
        ch: u16,
        chunk: Bytes,
    ) -> Result<(), AmqpError> {
        if self.channel_is_closing(ch) {
            // The rest of a message whose channel we closed (e.g. it was too large): drop it.
            return Ok(());
        }
        let Some(p) = self
            .channels
            .get_mut(&ch)
            .and_then(|c| c.publishing.as_mut())
        else {
            return Err(unexpected_content(ch, "content body"));
        };
        let Some(header) = &p.header else {
            return Err(unexpected_content(ch, "content body before its header"));
        };
        let expected = header.body_size;
        let have = p.body.len() as u64 + p.first_chunk.as_ref().map_or(0, |b| b.len() as u64);
        let total = have + chunk.len() as u64;
        if total > expected {
            let text = format!("body of {total} bytes exceeds the announced {expected}");
            return Err(err(ReplyCode::FrameError, text, 60, 40));
        }
        if have == 0 && total == expected {
            p.first_chunk = Some(chunk);
        } else {
            if let Some(first) = p.first_chunk.take() {
                p.body.extend_from_slice(&first);
            }
            p.body.extend_from_slice(&chunk);
        }
        if total == expected {
            return self.complete_publish(ch);
        }
        Ok(())
    }

    /// We sent channel.close and wait for close-ok: content frames on it are dropped.
    fn channel_is_closing(&self, ch: u16) -> bool {
        self.channels.get(&ch).is_some_and(|c| c.closing)
    }

    /// Route a complete message and queue it for hand-off (or hold it in the transaction).
    fn complete_publish(&mut self, ch: u16) -> Result<(), AmqpError> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        let Some(p) = channel.publishing.take() else {
            return Ok(());
        };
        let Some(header) = p.header else {
            return Ok(());
        };
        self.permit_publish(&p.method.exchange, &p.method.routing_key)?;
        // Decoded only now, as RabbitMQ does; malformed properties close the connection.
        let mut properties = header
            .properties()
            .map_err(|e| super::decode_error(&e).on(60, 40))?;
        let mut raw_properties = Bytes::copy_from_slice(&header.raw_properties);
        self.rewrite_reply_to(ch, &mut properties, &mut raw_properties)?;
        let body = match p.first_chunk {
            Some(b) if b.len() < COPY_BODY_BELOW_BYTES => Bytes::copy_from_slice(&b),
            Some(b) => b,
            None => p.body.freeze(),
        };
        let message = Arc::new(Message {
            exchange: p.method.exchange,
            routing_key: p.method.routing_key,
            properties,
            raw_properties,
            body,
        });
        self.check_user_id(&message)?;
        // A direct reply goes to its requester, not through routing. It is not a queue: as in
        // RabbitMQ 3.x, a mandatory one comes back with basic.return even when delivered.
        let reply = is_reply_address(&message);
        let queues = if reply {
            Arc::from([])
        } else {
            self.route(&message)?
        };
        if queues.is_empty() && p.method.mandatory {
            self.send_return(ch, &message);
        }
        self.count_publish(reply || !queues.is_empty(), p.method.mandatory);
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if let Some(tx) = channel.tx.as_mut() {
            tx.publishes.push((queues, message));
            return Ok(());
        }
        if reply {
            self.send_direct_reply(&message);
        }
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        for q in queues.iter() {
            self.pending.add_publish(q, &message);
        }
        if let Some(confirm) = channel.confirm.as_mut() {
            self.counts.add(Counter::ReceivedConfirm, 1);
            confirm.next_seq += 1;
            self.pending.add_confirm(ch, confirm.next_seq);
        }
        Ok(())
    }

    /// RabbitMQ's publish counters: received, then routed, returned or dropped.
    fn count_publish(&mut self, routed: bool, mandatory: bool) {
        self.counts.add(Counter::Received, 1);
        let outcome = match (routed, mandatory) {
            (true, _) => Counter::Routed,
            (false, true) => Counter::UnroutableReturned,
            (false, false) => Counter::UnroutableDropped,
        };
        self.counts.add(outcome, 1);
    }

    /// Write on the exchange, and the topic permission on the key (RabbitMQ checks both before
    /// it decodes the properties).
    fn permit_publish(&mut self, exchange: &ShortStr, key: &ShortStr) -> Result<(), AmqpError> {
        let exchange = ExchangeName(exchange.clone());
        let (routing, vhost) = (&self.routing.snapshot, &self.vhost);
        let is_topic = || {
            let def = routing.exchange(vhost, &exchange);
            def.is_some_and(|d| d.kind == ExchangeKind::Topic)
        };
        self.authz
            .check_publish(&self.broker, &exchange, key, is_topic)
            .map_err(|e| e.on(60, 40))
    }

    /// RabbitMQ refuses a user_id property that is not the authenticated user.
    fn check_user_id(&self, message: &Message) -> Result<(), AmqpError> {
        match &message.properties.user_id {
            Some(id) if id.as_str() != self.authz.user() => {
                let text = format!(
                    "user_id property set to '{id}' but authenticated user was '{}'",
                    self.authz.user()
                );
                Err(err(ReplyCode::PreconditionFailed, text, 60, 40))
            }
            _ => Ok(()),
        }
    }

    /// The queues a message goes to, from the per-connection cache when the routing generation
    /// has not changed.
    fn route(&mut self, message: &Message) -> Result<Arc<[QueueHandle]>, AmqpError> {
        let generation = self.broker.generation();
        if generation != self.routing.generation {
            self.routing = self.broker.routing_view();
            self.route_cache.map.clear();
        }
        let key = (message.exchange.clone(), message.routing_key.clone());
        if let Some(hit) = self.route_cache.map.get(&key) {
            return Ok(hit.clone());
        }
        let mut names: Vec<QueueName> = Vec::new();
        let snapshot = &self.routing.snapshot;
        snapshot
            .route_message(&self.vhost, message, &mut names)
            .map_err(|e| e.on(60, 40))?;
        let mut handles = Vec::with_capacity(names.len());
        self.broker.queues_for(&self.vhost, &names, &mut handles);
        let handles: Arc<[QueueHandle]> = handles.into();
        if snapshot.is_cacheable(&self.vhost, &message.exchange) {
            if self.route_cache.map.len() >= ROUTE_CACHE_ENTRIES {
                self.route_cache.map.clear();
            }
            self.route_cache.map.insert(key, handles.clone());
        }
        Ok(handles)
    }

    fn send_return(&mut self, ch: u16, message: &Message) {
        let ret = Method::BasicReturn(BasicReturn {
            reply_code: ReplyCode::NoRoute.code(),
            reply_text: ShortStr::from_static("NO_ROUTE"),
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
        });
        self.send_method(ch, &ret);
        self.send_content(ch, message);
    }

    pub(super) fn send_content(&mut self, ch: u16, message: &Message) {
        let size = message.body.len() as u64;
        encode_content_header_raw(ch, 60, size, &message.raw_properties, &mut self.out);
        encode_body(ch, &message.body, self.frame_max, &mut self.out);
    }

    /// Hand every collected publish and queue command to its queue; answer the batch's
    /// confirms and commits once the queues that write it to disk say it is there.
    pub(super) async fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        let answers: Vec<Answer> = pending
            .confirms
            .drain(..)
            .map(|(channel, seq)| Answer::Ack { channel, seq })
            .chain(
                pending
                    .commits
                    .drain(..)
                    .map(|channel| Answer::CommitOk { channel }),
            )
            .collect();
        let to_disk = pending.publishes.iter().filter(|b| b.to_disk).count() as u32;
        let mut token = None;
        if !answers.is_empty() && (to_disk > 0 || !self.confirm_backlog.is_empty()) {
            let (t, now) = self.confirm_backlog.register(to_disk, answers);
            token = Some(t);
            self.send_answers(now);
        } else {
            self.send_answers(answers.into_iter().map(|a| (a, true)).collect());
        }
        for b in pending.publishes.drain(..) {
            let confirm = match token {
                Some(token) if b.to_disk => Some(ConfirmRequest {
                    sink: self.sink.clone(),
                    token,
                }),
                _ => None,
            };
            let cmd = QueueCmd::Publish {
                messages: b.messages,
                confirm,
            };
            if b.queue.send(cmd).await.is_err() {
                if let Some(token) = token.filter(|_| b.to_disk) {
                    // The queue is gone: what it would have held went with it.
                    let now = self.confirm_backlog.confirmed(token, true);
                    self.send_answers(now);
                }
            }
        }
        for (queue, cmd) in pending.commands.drain(..) {
            let _ = queue.send(cmd).await;
        }
        self.pending = pending;
    }

    /// A queue has a batch on disk (or could not take it).
    pub(super) fn on_confirmed(&mut self, token: u64, ok: bool) {
        let now = self.confirm_backlog.confirmed(token, ok);
        self.send_answers(now);
    }

    fn send_answers(&mut self, answers: Vec<(Answer, bool)>) {
        for (answer, ok) in answers {
            let (ch, method) = answer.method(ok);
            let Some(channel) = self.channels.get_mut(&ch).filter(|c| !c.closing) else {
                continue;
            };
            if let (Answer::Ack { seq, .. }, Some(confirm)) = (answer, channel.confirm.as_mut()) {
                let covered = seq.saturating_sub(confirm.answered_through);
                confirm.answered_through = confirm.answered_through.max(seq);
                if ok {
                    self.counts.add(Counter::Confirmed, covered);
                }
            }
            self.send_method(ch, &method);
        }
    }

    fn settle(&mut self, ch: u16, tag: u64, multiple: bool, how: Settle) -> Result<(), AmqpError> {
        let (class_id, method_id) = how.ids(multiple);
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        let entries = channel.unacked.take(tag, multiple).ok_or_else(|| {
            err(
                ReplyCode::PreconditionFailed,
                format!("unknown delivery tag {tag}"),
                class_id,
                method_id,
            )
        })?;
        if matches!(how, Settle::Ack) {
            self.counts.add(Counter::Acknowledged, entries.len() as u64);
        }
        let mut cmds = settle_commands(&channel.queues, channel.key, entries, how);
        if channel.channel_credit.is_some() && channel.queues.len() > 1 {
            // Settling frees channel-wide (global qos) credit that other queues may be waiting
            // for: they only look again when told.
            let settled: Vec<QueueHandle> = cmds.iter().map(|(q, _)| q.clone()).collect();
            for q in channel
                .queues
                .iter()
                .filter(|q| !settled.iter().any(|s| s.same(q)))
            {
                cmds.push((q.clone(), QueueCmd::Kick));
            }
        }
        match channel.tx.as_mut() {
            Some(tx) => tx.commands.extend(cmds),
            None => self.pending.commands.extend(cmds),
        }
        Ok(())
    }

    fn basic_qos(&mut self, ch: u16, m: BasicQos) -> Result<(), AmqpError> {
        if m.prefetch_size != 0 {
            let text = format!("prefetch_size!=0 ({})", m.prefetch_size);
            return Err(err(ReplyCode::NotImplemented, text, 60, 10));
        }
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if m.global {
            let limit = u32::from(m.prefetch_count);
            match &channel.channel_credit {
                Some(credit) => credit.set_limit(limit),
                None => channel.channel_credit = Some(ChannelCredit::new(limit)),
            }
            for q in &channel.queues {
                self.pending.commands.push((q.clone(), QueueCmd::Kick));
            }
        } else {
            channel.consumer_prefetch = m.prefetch_count;
        }
        self.send_method(ch, &Method::BasicQosOk(Default::default()));
        Ok(())
    }

    async fn basic_consume(&mut self, ch: u16, m: BasicConsume) -> Result<(), AmqpError> {
        if m.queue == crate::direct_reply::REPLY_QUEUE {
            return self.reply_consume(ch, &m);
        }
        let queue = self
            .expand_queue_name(ch, m.queue.clone())
            .and_then(|name| self.permit(Resource::Queue, &name, Op::Read).map(|()| name))
            .and_then(|name| self.usable_queue(&name))
            .map_err(|e| e.on(60, 20))?;
        let id = ConsumerId(self.broker.next_id());
        let tag = if m.consumer_tag.is_empty() {
            ShortStr::from(format!(
                "amq.ctag-{}",
                &super::channel::generated_queue_name(id.0)[8..]
            ))
        } else {
            m.consumer_tag.clone()
        };
        let max = self.broker.config.max_consumers_per_channel;
        let no_ack_credit = self.broker.config.no_ack_credit;
        let no_ack_credit_bytes = self.broker.config.no_ack_credit_bytes;
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if channel.consumer_tags.contains_key(&tag) {
            return Err(err(
                ReplyCode::NotAllowed,
                format!("attempt to reuse consumer tag '{tag}'"),
                60,
                20,
            ));
        }
        if channel.consumer_tags.len() >= max {
            // RabbitMQ's consumer_max_per_channel: a connection error.
            let text = format!("reached maximum ({max}) of consumers per channel");
            return Err(err(ReplyCode::NotAllowed, text, 60, 20));
        }
        let spec = ConsumerSpec {
            id,
            channel: channel.key,
            priority: consumer_priority(&m)?,
            prefetch: if m.no_ack {
                no_ack_credit
            } else {
                u32::from(channel.consumer_prefetch)
            },
            window_bytes: no_ack_credit_bytes,
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            channel_credit: if m.no_ack {
                None
            } else {
                channel.channel_credit.clone()
            },
        };
        let slot = channel.queue_slot(&queue);
        channel.consumer_tags.insert(tag.clone(), id);
        self.consumers.insert(
            id,
            ConsumerInfo {
                channel: ch,
                tag: tag.clone(),
                queue_slot: slot,
                no_ack: m.no_ack,
                exclusive: m.exclusive,
                prefetch: channel.consumer_prefetch,
                arguments: m.arguments.clone(),
            },
        );
        let sink = self.sink.clone();
        let result = queue
            .ask(|reply| QueueCmd::Consume {
                spec: Box::new(spec),
                sink,
                reply,
            })
            .await;
        let result =
            result.unwrap_or_else(|_| Err(crate::broker::no_queue(&self.vhost, queue.name())));
        if let Err(e) = result {
            self.forget_consumer(id);
            return Err(e.on(60, 20));
        }
        if !m.nowait {
            self.send_method(
                ch,
                &Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag }),
            );
        }
        Ok(())
    }

    async fn basic_cancel(&mut self, ch: u16, m: BasicCancel) -> Result<(), AmqpError> {
        let id = if self.reply_cancel(ch, &m.consumer_tag) {
            None
        } else {
            self.channels
                .get_mut(&ch)
                .and_then(|c| c.consumer_tags.get(&m.consumer_tag).copied())
        };
        if let Some(id) = id {
            if let Some(info) = self.forget_consumer(id) {
                let queue = self
                    .channels
                    .get(&ch)
                    .and_then(|c| c.queues.get(info.queue_slot).cloned());
                if let Some(queue) = queue {
                    let _ = queue.send(QueueCmd::Cancel { consumer: id }).await;
                }
            }
        }
        if !m.nowait {
            let ok = Method::BasicCancelOk(BasicCancelOk {
                consumer_tag: m.consumer_tag,
            });
            self.send_method(ch, &ok);
        }
        Ok(())
    }

    /// Drop a consumer from this connection's maps; returns what it was.
    pub(super) fn forget_consumer(&mut self, id: ConsumerId) -> Option<ConsumerInfo> {
        let info = self.consumers.remove(&id)?;
        if let Some(c) = self.channels.get_mut(&info.channel) {
            c.consumer_tags.remove(&info.tag);
        }
        Some(info)
    }

    async fn basic_get(&mut self, ch: u16, m: BasicGet) -> Result<(), AmqpError> {
        let queue = self
            .expand_queue_name(ch, m.queue)
            .and_then(|name| self.permit(Resource::Queue, &name, Op::Read).map(|()| name))
            .and_then(|name| self.usable_queue(&name))
            .map_err(|e| e.on(60, 70))?;
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if !queue.is_local() {
            // The home node keeps the channel from the get on: the channel's close must reach
            // it even when the get finds nothing.
            channel.queue_slot(&queue);
        }
        let (key, no_ack) = (channel.key, m.no_ack);
        let got = queue
            .ask(|reply| QueueCmd::Get {
                channel: key,
                no_ack,
                reply,
            })
            .await
            .ok()
            .flatten();
        let Some(got) = got else {
            self.counts.add(Counter::GetEmpty, 1);
            self.send_method(ch, &Method::BasicGetEmpty(Default::default()));
            return Ok(());
        };
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        let slot = channel.queue_slot(&queue);
        let tag = channel.unacked.next_tag();
        if !no_ack {
            channel.unacked.push(
                tag,
                UnackedEntry {
                    slot: slot as u32,
                    msg_id: got.msg_id,
                },
            );
        }
        let ok = Method::BasicGetOk(BasicGetOk {
            delivery_tag: tag,
            redelivered: got.redelivered,
            exchange: got.message.exchange.clone(),
            routing_key: got.message.routing_key.clone(),
            message_count: got.remaining,
        });
        self.send_method(ch, &ok);
        self.send_content(ch, &got.message);
        let kind = if no_ack {
            Counter::DeliveredGetAutoAck
        } else {
            Counter::DeliveredGetManualAck
        };
        self.count_delivery(kind, got.redelivered);
        Ok(())
    }

    fn basic_recover(&mut self, ch: u16, requeue: bool, reply: bool) -> Result<(), AmqpError> {
        if !requeue {
            return Err(err(
                ReplyCode::NotImplemented,
                "requeue=false",
                60,
                if reply { 110 } else { 100 },
            ));
        }
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        let entries = channel.unacked.take_all();
        let cmds = settle_commands(&channel.queues, channel.key, entries, Settle::Reject(true));
        self.pending.commands.extend(cmds);
        if reply {
            self.send_method(ch, &Method::BasicRecoverOk(Default::default()));
        }
        Ok(())
    }

    fn confirm_select(&mut self, ch: u16, nowait: bool) -> Result<(), AmqpError> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if channel.tx.is_some() {
            return Err(err(
                ReplyCode::PreconditionFailed,
                "cannot switch from tx to confirm mode",
                85,
                10,
            ));
        }
        channel.confirm.get_or_insert_with(ConfirmState::default);
        if !nowait {
            self.send_method(ch, &Method::ConfirmSelectOk(Default::default()));
        }
        Ok(())
    }

    fn tx_select(&mut self, ch: u16) -> Result<(), AmqpError> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if channel.confirm.is_some() {
            return Err(err(
                ReplyCode::PreconditionFailed,
                "cannot switch from confirm to tx mode",
                90,
                10,
            ));
        }
        channel.tx.get_or_insert_with(TxBuffer::default);
        self.send_method(ch, &Method::TxSelectOk(Default::default()));
        Ok(())
    }

    async fn tx_commit(&mut self, ch: u16) -> Result<(), AmqpError> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        let Some(tx) = channel.tx.as_mut() else {
            return Err(err(
                ReplyCode::PreconditionFailed,
                "channel is not transactional",
                90,
                20,
            ));
        };
        let TxBuffer {
            publishes,
            commands,
        } = std::mem::take(tx);
        for (queues, message) in &publishes {
            if is_reply_address(message) {
                self.send_direct_reply(message);
            }
            for q in queues.iter() {
                self.pending.add_publish(q, message);
            }
        }
        self.pending.commands.extend(commands);
        self.pending.commits.push(ch);
        self.flush_pending().await;
        Ok(())
    }

    fn tx_rollback(&mut self, ch: u16) -> Result<(), AmqpError> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        let Some(tx) = channel.tx.as_mut() else {
            return Err(err(
                ReplyCode::PreconditionFailed,
                "channel is not transactional",
                90,
                30,
            ));
        };
        *tx = TxBuffer::default();
        self.send_method(ch, &Method::TxRollbackOk(Default::default()));
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Settle {
    Ack,
    Reject(bool),
}

impl Settle {
    fn ids(self, multiple: bool) -> (u16, u16) {
        match self {
            Settle::Ack => (60, 80),
            Settle::Reject(_) if multiple => (60, 120),
            Settle::Reject(_) => (60, 90),
        }
    }
}

/// Group settled deliveries by queue into one command each.
fn settle_commands(
    queues: &[QueueHandle],
    channel: tern_core::names::ChannelKey,
    entries: Vec<UnackedEntry>,
    how: Settle,
) -> Vec<(QueueHandle, QueueCmd)> {
    let mut by_slot: Vec<(u32, Vec<MsgId>)> = Vec::new();
    for e in entries {
        match by_slot.iter_mut().find(|(s, _)| *s == e.slot) {
            Some((_, ids)) => ids.push(e.msg_id),
            None => by_slot.push((e.slot, vec![e.msg_id])),
        }
    }
    let mut cmds = Vec::with_capacity(by_slot.len());
    for (slot, ids) in by_slot {
        let Some(queue) = queues.get(slot as usize) else {
            continue;
        };
        let cmd = match how {
            Settle::Ack => QueueCmd::Ack { channel, ids },
            Settle::Reject(requeue) => QueueCmd::Reject {
                channel,
                ids,
                requeue,
            },
        };
        cmds.push((queue.clone(), cmd));
    }
    cmds
}

fn unexpected_content(ch: u16, what: &str) -> AmqpError {
    AmqpError::new(
        ReplyCode::UnexpectedFrame,
        format!("unexpected {what} on channel {ch}"),
    )
}

/// x-priority: any integer type; anything else is 406 as in RabbitMQ.
fn consumer_priority(m: &BasicConsume) -> Result<i32, AmqpError> {
    match m.arguments.get("x-priority") {
        None => Ok(0),
        Some(v) => v
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| {
                let shown = match v {
                    FieldValue::LongStr(_) => "longstr",
                    _ => "value",
                };
                let text = format!("invalid arg 'x-priority' for queue: unacceptable type {shown}");
                err(ReplyCode::PreconditionFailed, text, 60, 20)
            }),
    }
}
