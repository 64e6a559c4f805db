//! The node a client is connected to: its commands for a queue homed elsewhere go out as
//! queue operations; deliveries, cancellations and confirms come back in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tern_amqp::{AmqpError, ReplyCode};
use tern_cluster::link::Link;
use tern_cluster::queue_ops::{Answer, ConsumeSpec, OpError, QueueOp, QueueRef};
use tern_cluster::wire::Service;
use tern_core::message::Message;
use tern_core::names::{ChannelKey, ConsumerId};
use tern_core::queue::{ConsumerSpec, Delivery};
use tokio::sync::{oneshot, Semaphore};

use super::{RemoteQueues, CALL_TIMEOUT};
use crate::queue_actor::store::ConfirmRequest;
use crate::queue_actor::{QueueCmd, QueueGone, QueueHandle, QueueShared, QueueStats};
use crate::sink::{ConnEvent, ConnSink};

/// A queue whose home is another node, as this node's connections reach it.
pub struct RemoteQueue {
    home: String,
    node: Arc<RemoteQueues>,
    /// Messages published to it that its queue has not taken in yet (at most the window).
    credit: Arc<Semaphore>,
    window: usize,
}

/// A consumer on this node of a queue homed elsewhere, and the link it was made over.
struct Consumer {
    link: u64,
    channel: ChannelKey,
    sink: ConnSink,
    queue: QueueHandle,
}

/// What this node waits for from the homes of the queues its clients use.
#[derive(Default)]
pub(super) struct Origin {
    consumers: Mutex<HashMap<ConsumerId, Consumer>>,
    /// Publishes waiting for a confirm, by the id sent with them, with the link they went by.
    confirms: Mutex<HashMap<u64, (u64, ConfirmRequest)>>,
    next_confirm: AtomicU64,
}

impl RemoteQueue {
    pub fn new(node: &Arc<RemoteQueues>, home: String, window: usize) -> RemoteQueue {
        let window = window.clamp(1, Semaphore::MAX_PERMITS);
        RemoteQueue {
            home,
            node: node.clone(),
            credit: Arc::new(Semaphore::new(window)),
            window,
        }
    }

    /// The node the queue runs on.
    pub fn home(&self) -> &str {
        &self.home
    }

    /// RabbitMQ's 404 while the home node cannot be reached.
    pub fn unreachable(&self, queue: &QueueShared) -> Option<AmqpError> {
        if self.node.link(&self.home).is_some() {
            return None;
        }
        let kind = if queue.def.durable {
            "durable"
        } else {
            "transient"
        };
        let text = format!(
            "home node '{}' of {kind} queue '{}' in vhost '{}' is down or inaccessible",
            self.home, queue.name, queue.vhost
        );
        Some(AmqpError::new(ReplyCode::NotFound, text))
    }

    /// Carry `cmd` to the queue's home (see the module docs of [`super`]).
    pub async fn send(&self, handle: &QueueHandle, cmd: QueueCmd) -> Result<(), QueueGone> {
        let queue = QueueRef {
            vhost: handle.0.vhost.clone(),
            name: handle.0.name.clone(),
        };
        let cmd = match cmd {
            QueueCmd::Publish { messages, confirm } => {
                return self.publish(queue, messages, confirm).await;
            }
            QueueCmd::Flush { reply } => return reply.send(()).map_err(|_| QueueGone),
            QueueCmd::Synced { .. } => return Ok(()),
            cmd => cmd,
        };
        let link = self.node.link(&self.home).ok_or(QueueGone)?;
        let get = Answer::decode_got;
        match cmd {
            QueueCmd::Consume { spec, sink, reply } => {
                self.consume(&link, handle, queue, *spec, sink, reply).await
            }
            QueueCmd::Get {
                channel,
                no_ack,
                reply,
            } => {
                ask(
                    &link,
                    QueueOp::Get {
                        queue,
                        channel,
                        no_ack,
                    },
                    get,
                    reply,
                )
                .await
            }
            QueueCmd::Purge { reply } => {
                ask(&link, QueueOp::Purge { queue }, Answer::decode_count, reply).await
            }
            QueueCmd::Stats { reply } => ask(&link, QueueOp::Stats { queue }, stats, reply).await,
            QueueCmd::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                self.delete(&link, handle, queue, (if_unused, if_empty), reply)
                    .await
            }
            cmd => self.settle(&link, handle, queue, cmd).await,
        }
    }

    /// Messages go once the window has room for them; the permits come back when the home
    /// node's queue has taken them in. A confirm is answered when the home says so, or nacked
    /// if the home cannot be reached.
    async fn publish(
        &self,
        queue: QueueRef,
        messages: Vec<Arc<Message>>,
        confirm: Option<ConfirmRequest>,
    ) -> Result<(), QueueGone> {
        let permits = messages.len().clamp(1, self.window) as u32;
        let held = self.credit.clone().acquire_many_owned(permits).await;
        let held = held.map_err(|_| QueueGone)?;
        let Some(link) = self.node.link(&self.home) else {
            if let Some(confirm) = confirm {
                confirm.answer(false);
            }
            return Ok(());
        };
        let origin = &self.node.origin;
        let id = confirm.map(|c| origin.expect_confirm(link.id(), c));
        let op = QueueOp::Publish {
            queue,
            confirm: id,
            messages,
        };
        let node = self.node.clone();
        let nack = move |node: &RemoteQueues| {
            if let Some(id) = id {
                node.origin.confirm(id, false);
            }
        };
        let pending = match link.begin_call(Service::Queue, op.encode()).await {
            Ok(pending) => pending,
            Err(_) => {
                nack(&node);
                return Ok(());
            }
        };
        tokio::spawn(async move {
            let taken = tokio::time::timeout(CALL_TIMEOUT, pending.answer()).await;
            drop(held);
            if !matches!(taken, Ok(Ok(_))) {
                nack(&node);
            }
        });
        Ok(())
    }

    /// The consumer is known here before the home can deliver to it.
    async fn consume(
        &self,
        link: &Link,
        handle: &QueueHandle,
        queue: QueueRef,
        spec: ConsumerSpec,
        sink: ConnSink,
        reply: oneshot::Sender<Result<(), AmqpError>>,
    ) -> Result<(), QueueGone> {
        let id = spec.id;
        let consumer = Consumer {
            link: link.id(),
            channel: spec.channel,
            sink,
            queue: handle.clone(),
        };
        self.node.origin.lock_consumers().insert(id, consumer);
        let spec = ConsumeSpec {
            id,
            channel: spec.channel,
            priority: spec.priority,
            prefetch: spec.prefetch,
            window_bytes: spec.window_bytes,
            no_ack: spec.no_ack,
            exclusive: spec.exclusive,
            global_prefetch: spec.channel_credit.as_ref().map(|c| c.limit()),
        };
        let node = self.node.clone();
        let op = QueueOp::Consume { queue, spec };
        let Ok(pending) = link.begin_call(Service::Queue, op.encode()).await else {
            node.origin.lock_consumers().remove(&id);
            return Err(QueueGone);
        };
        tokio::spawn(async move {
            let answer = tokio::time::timeout(CALL_TIMEOUT, pending.answer()).await;
            let result = match answer {
                Ok(Ok(body)) => Answer::decode_done(body).ok(),
                _ => None,
            };
            if !matches!(result, Some(Ok(()))) {
                node.origin.lock_consumers().remove(&id);
            }
            if let Some(result) = result {
                let _ = reply.send(result);
            }
        });
        Ok(())
    }

    /// queue.delete: answered once this node's registry no longer has the queue, so that what
    /// the client does next here (declare it again, say) sees it gone.
    async fn delete(
        &self,
        link: &Link,
        handle: &QueueHandle,
        queue: QueueRef,
        (if_unused, if_empty): (bool, bool),
        reply: oneshot::Sender<Result<u32, AmqpError>>,
    ) -> Result<(), QueueGone> {
        let op = QueueOp::Delete {
            queue,
            if_unused,
            if_empty,
        };
        let (tx, rx) = oneshot::channel();
        ask(link, op, Answer::decode_deleted, tx).await?;
        let (node, handle) = (self.node.clone(), handle.clone());
        tokio::spawn(async move {
            let Ok(answer) = rx.await else {
                return;
            };
            if answer.is_ok() {
                node.await_gone(&handle).await;
            }
            let _ = reply.send(answer);
        });
        Ok(())
    }

    /// Commands without an answer: one-way.
    async fn settle(
        &self,
        link: &Link,
        handle: &QueueHandle,
        queue: QueueRef,
        cmd: QueueCmd,
    ) -> Result<(), QueueGone> {
        let op = match cmd {
            QueueCmd::Cancel { consumer } => {
                self.node.origin.lock_consumers().remove(&consumer);
                QueueOp::Cancel { queue, consumer }
            }
            QueueCmd::Ack { channel, ids } => QueueOp::Ack {
                queue,
                channel,
                ids,
            },
            QueueCmd::Reject {
                channel,
                ids,
                requeue,
            } => QueueOp::Reject {
                queue,
                channel,
                ids,
                requeue,
            },
            QueueCmd::ReturnCredit { consumer, n, bytes } => QueueOp::ReturnCredit {
                queue,
                consumer,
                n,
                bytes,
            },
            QueueCmd::ChannelClosed { channel } => {
                let mut consumers = self.node.origin.lock_consumers();
                consumers.retain(|_, c| c.channel != channel || !c.queue.same(handle));
                drop(consumers);
                QueueOp::ChannelClosed { queue, channel }
            }
            QueueCmd::Kick => QueueOp::Kick { queue },
            _ => return Ok(()),
        };
        link.cast(Service::Queue, op.encode())
            .await
            .map_err(|_| QueueGone)
    }
}

/// Send a call now (in order with what else goes to the queue); answer `reply` when the home
/// node does. No answer (the link went down, the queue is gone) drops `reply`: the asker sees
/// the queue gone, as for a local queue.
async fn ask<T: Send + 'static>(
    link: &Link,
    op: QueueOp,
    decode: fn(Bytes) -> Result<T, OpError>,
    reply: oneshot::Sender<T>,
) -> Result<(), QueueGone> {
    let pending = link.begin_call(Service::Queue, op.encode()).await;
    let pending = pending.map_err(|_| QueueGone)?;
    tokio::spawn(async move {
        let answer = tokio::time::timeout(CALL_TIMEOUT, pending.answer()).await;
        if let Ok(Ok(body)) = answer {
            if let Ok(value) = decode(body) {
                let _ = reply.send(value);
            }
        }
    });
    Ok(())
}

/// A queue's counts, in the order [`stats_figures`] lists them.
fn stats(body: Bytes) -> Result<QueueStats, OpError> {
    let f = Answer::decode_stats(body)?;
    if f.len() < 8 {
        return Err(OpError::Field("queue stats"));
    }
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(QueueStats {
        messages: count(f[0]),
        consumers: count(f[1]),
        unacked: count(f[2]),
        ready_in_memory: f[3],
        ready_bytes_in_memory: f[4],
        paged: f[5],
        paged_bytes: f[6],
        unacked_bytes: f[7],
    })
}

/// A queue's counts as the home node sends them.
pub(super) fn stats_figures(s: &QueueStats) -> Vec<u64> {
    vec![
        s.messages.into(),
        s.consumers.into(),
        s.unacked.into(),
        s.ready_in_memory,
        s.ready_bytes_in_memory,
        s.paged,
        s.paged_bytes,
        s.unacked_bytes,
    ]
}

impl Origin {
    fn lock_consumers(&self) -> std::sync::MutexGuard<'_, HashMap<ConsumerId, Consumer>> {
        self.consumers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_confirms(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, ConfirmRequest)>> {
        self.confirms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expect_confirm(&self, link: u64, request: ConfirmRequest) -> u64 {
        let id = self.next_confirm.fetch_add(1, Ordering::Relaxed);
        self.lock_confirms().insert(id, (link, request));
        id
    }

    /// The home node answered a confirm (or it will not).
    pub(super) fn confirm(&self, id: u64, ok: bool) {
        let waiting = self.lock_confirms().remove(&id);
        if let Some((_, request)) = waiting {
            request.answer(ok);
        }
    }

    /// The home cancelled a consumer (its queue was deleted, say).
    pub(super) fn cancelled(&self, consumer: ConsumerId) {
        if let Some(c) = self.lock_consumers().remove(&consumer) {
            let _ = c.sink.send(ConnEvent::ConsumerCancelled { consumer });
        }
    }

    /// Hand deliveries to their consumers' connections; what has no consumer here any more
    /// goes back to the queue (the consumer was cancelled while they were on the way).
    pub(super) fn deliver(&self, deliveries: Vec<Delivery>) -> Vec<Delivery> {
        let mut orphans = Vec::new();
        let consumers = self.lock_consumers();
        let mut rest = deliveries;
        while let Some(first) = rest.first().map(|d| d.consumer) {
            let (batch, others): (Vec<Delivery>, Vec<Delivery>) =
                rest.into_iter().partition(|d| d.consumer == first);
            rest = others;
            let event = |queue: &QueueHandle, deliveries| ConnEvent::Deliver {
                queue: queue.clone(),
                deliveries,
            };
            match consumers.get(&first) {
                Some(c) => {
                    if let Err(refused) = c.sink.send(event(&c.queue, batch)) {
                        if let ConnEvent::Deliver { deliveries, .. } = refused.0 {
                            orphans.extend(deliveries);
                        }
                    }
                }
                None => orphans.extend(batch),
            }
        }
        orphans
    }

    /// Link `link` is down: the consumers made over it are cancelled (the client gets
    /// basic.cancel), and publishes waiting for a confirm sent over it are nacked.
    pub(super) fn link_lost(&self, link: u64) {
        let gone: Vec<(ConsumerId, Consumer)> = {
            let mut consumers = self.lock_consumers();
            let ids: Vec<ConsumerId> = consumers
                .iter()
                .filter(|(_, c)| c.link == link)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| consumers.remove(&id).map(|c| (id, c)))
                .collect()
        };
        for (consumer, c) in gone {
            let _ = c.sink.send(ConnEvent::ConsumerCancelled { consumer });
        }
        let nacked: Vec<ConfirmRequest> = {
            let mut confirms = self.lock_confirms();
            let ids: Vec<u64> = confirms
                .iter()
                .filter(|(_, (l, _))| *l == link)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| confirms.remove(id).map(|(_, r)| r))
                .collect()
        };
        nacked.into_iter().for_each(|r| r.answer(false));
    }
}
