//! A queue as an actor: a task that owns a [`QueueState`] and is fed by a bounded channel.
//!
//! Each wake-up takes every waiting command (publishes arrive in batches from each connection),
//! applies them, dispatches once, and sends each connection its deliveries as one event. The
//! inbox is bounded (`queue_inbox_capacity`): a publisher faster than the queue waits on `send`,
//! and so stops reading its socket — that is the backpressure. The actor itself never waits on a
//! connection, so a slow consumer cannot stall the queue or its other consumers.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tern_amqp::{AmqpError, ReplyCode};
use tern_core::message::Message;
use tern_core::meta::QueueDef;
use tern_core::names::{ChannelKey, ConsumerId, QueueName, VhostName};
use tern_core::queue::{ConsumerSpec, Delivery, GetResult, MsgId, QueueOptions, QueueState};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::broker::Broker;
use crate::sink::{ConnEvent, ConnSink};

pub enum QueueCmd {
    Publish(Vec<Arc<Message>>),
    Consume {
        spec: ConsumerSpec,
        sink: ConnSink,
        reply: oneshot::Sender<Result<(), AmqpError>>,
    },
    Cancel {
        consumer: ConsumerId,
    },
    Ack {
        channel: ChannelKey,
        ids: Vec<MsgId>,
    },
    Reject {
        channel: ChannelKey,
        ids: Vec<MsgId>,
        requeue: bool,
    },
    ReturnCredit {
        consumer: ConsumerId,
        n: u32,
    },
    Get {
        channel: ChannelKey,
        no_ack: bool,
        reply: oneshot::Sender<Option<GetResult>>,
    },
    Purge {
        reply: oneshot::Sender<u32>,
    },
    Stats {
        reply: oneshot::Sender<QueueStats>,
    },
    ChannelClosed {
        channel: ChannelKey,
    },
    /// Channel-wide credit came back: try to dispatch.
    Kick,
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<Result<u32, AmqpError>>,
    },
}

#[derive(Clone, Copy, Debug, Default)]
pub struct QueueStats {
    pub messages: u32,
    pub consumers: u32,
}

pub struct QueueShared {
    pub name: QueueName,
    pub vhost: VhostName,
    pub def: QueueDef,
    tx: mpsc::Sender<QueueCmd>,
    stop: Notify,
}

/// A cheap, cloneable reference to a running queue.
#[derive(Clone)]
pub struct QueueHandle(pub Arc<QueueShared>);

/// The queue's actor has stopped (the queue was deleted).
#[derive(Debug)]
pub struct QueueGone;

impl QueueHandle {
    pub fn name(&self) -> &QueueName {
        &self.0.name
    }

    pub fn def(&self) -> &QueueDef {
        &self.0.def
    }

    /// Send a command, waiting while the inbox is full (publisher backpressure).
    pub async fn send(&self, cmd: QueueCmd) -> Result<(), QueueGone> {
        self.0.tx.send(cmd).await.map_err(|_| QueueGone)
    }

    /// Ask the queue something and wait for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> QueueCmd,
    ) -> Result<T, QueueGone> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| QueueGone)
    }

    /// Stop the actor without further checks (its vhost was deleted).
    pub fn stop(&self) {
        self.0.stop.notify_one();
    }

    pub fn same(&self, other: &QueueHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

struct Consumer {
    sink: ConnSink,
}

struct QueueActor {
    shared: Arc<QueueShared>,
    state: QueueState,
    consumers: HashMap<ConsumerId, Consumer>,
    broker: Weak<Broker>,
    deliveries: Vec<Delivery>,
    deleted: bool,
}

pub fn spawn(
    broker: &Arc<Broker>,
    vhost: VhostName,
    def: QueueDef,
    options: QueueOptions,
) -> QueueHandle {
    let (tx, rx) = mpsc::channel(broker.config.queue_inbox_capacity.max(1));
    let shared = Arc::new(QueueShared {
        name: def.name.clone(),
        vhost: vhost.clone(),
        def: def.clone(),
        tx,
        stop: Notify::new(),
    });
    let actor = QueueActor {
        shared: shared.clone(),
        state: QueueState::new(def.name.clone(), vhost, options),
        consumers: HashMap::new(),
        broker: Arc::downgrade(broker),
        deliveries: Vec::new(),
        deleted: false,
    };
    tokio::spawn(actor.run(rx));
    QueueHandle(shared)
}

/// Commands taken per wake-up at most, so one busy queue yields to others.
const BATCH: usize = 512;

impl QueueActor {
    async fn run(mut self, mut rx: mpsc::Receiver<QueueCmd>) {
        let mut cmds = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut cmds, BATCH) => if n == 0 { break },
                _ = self.shared.stop.notified() => break,
            }
            for cmd in cmds.drain(..) {
                self.handle(cmd);
            }
            if self.deleted {
                return;
            }
            self.dispatch();
            if self.should_auto_delete() {
                self.delete_self();
                return;
            }
        }
        self.cancel_consumers();
    }

    fn handle(&mut self, cmd: QueueCmd) {
        match cmd {
            QueueCmd::Publish(messages) => {
                for m in messages {
                    self.state.push(m);
                }
            }
            QueueCmd::Consume { spec, sink, reply } => {
                let id = spec.id;
                let result = self.state.add_consumer(spec);
                if result.is_ok() {
                    self.consumers.insert(id, Consumer { sink });
                }
                let _ = reply.send(result);
            }
            QueueCmd::Cancel { consumer } => {
                self.state.remove_consumer(consumer);
                self.consumers.remove(&consumer);
            }
            QueueCmd::Ack { channel, ids } => self.state.ack(channel, &ids),
            QueueCmd::Reject {
                channel,
                ids,
                requeue,
            } => self.state.reject(channel, &ids, requeue),
            QueueCmd::ReturnCredit { consumer, n } => self.state.return_credit(consumer, n),
            QueueCmd::Get {
                channel,
                no_ack,
                reply,
            } => {
                let _ = reply.send(self.state.get(channel, no_ack));
            }
            QueueCmd::Purge { reply } => {
                let _ = reply.send(self.state.purge());
            }
            QueueCmd::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            QueueCmd::ChannelClosed { channel } => {
                self.state.channel_closed(channel);
                let state = &self.state;
                self.consumers.retain(|id, _| state.has_consumer(*id));
            }
            QueueCmd::Kick => {}
            QueueCmd::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                let _ = reply.send(self.try_delete(if_unused, if_empty));
            }
        }
    }

    fn stats(&self) -> QueueStats {
        QueueStats {
            messages: self.state.message_count(),
            consumers: self.state.consumer_count(),
        }
    }

    fn try_delete(&mut self, if_unused: bool, if_empty: bool) -> Result<u32, AmqpError> {
        let (name, vhost) = (&self.shared.name, &self.shared.vhost);
        if if_unused && !self.state.is_unused() {
            let text = format!("queue '{name}' in vhost '{vhost}' in use");
            return Err(AmqpError::new(ReplyCode::PreconditionFailed, text));
        }
        if if_empty && self.state.message_count() > 0 {
            let text = format!("queue '{name}' in vhost '{vhost}' is not empty");
            return Err(AmqpError::new(ReplyCode::PreconditionFailed, text));
        }
        let count = self.state.message_count();
        self.delete_self();
        Ok(count)
    }

    /// Cancel every consumer, drop the definition and leave the registry.
    fn delete_self(&mut self) {
        self.deleted = true;
        self.cancel_consumers();
        if let Some(broker) = self.broker.upgrade() {
            broker.remove_queue(&self.shared.vhost, &self.shared.name);
        }
    }

    fn cancel_consumers(&mut self) {
        for (consumer, c) in self.consumers.drain() {
            let _ = c.sink.send(ConnEvent::ConsumerCancelled { consumer });
        }
    }

    fn should_auto_delete(&self) -> bool {
        self.shared.def.auto_delete
            && self.state.ever_had_consumer()
            && self.state.consumer_count() == 0
    }

    /// Dispatch what credit allows and hand each connection its share in one event.
    fn dispatch(&mut self) {
        self.state.dispatch(&mut self.deliveries);
        if self.deliveries.is_empty() {
            return;
        }
        let handle = QueueHandle(self.shared.clone());
        let first = self.deliveries[0].consumer;
        if self.deliveries.iter().all(|d| d.consumer == first) {
            let batch = std::mem::take(&mut self.deliveries);
            self.send_to(first, handle, batch);
            return;
        }
        let mut by_consumer: Vec<(ConsumerId, Vec<Delivery>)> = Vec::new();
        for d in self.deliveries.drain(..) {
            match by_consumer.iter_mut().find(|(c, _)| *c == d.consumer) {
                Some((_, batch)) => batch.push(d),
                None => by_consumer.push((d.consumer, vec![d])),
            }
        }
        for (consumer, batch) in by_consumer {
            self.send_to(consumer, handle.clone(), batch);
        }
    }

    fn send_to(&mut self, consumer: ConsumerId, queue: QueueHandle, deliveries: Vec<Delivery>) {
        let Some(c) = self.consumers.get(&consumer) else {
            // Cannot happen: dispatch only picks registered consumers. Requeue rather than lose.
            let channel = deliveries[0].channel;
            let ids: Vec<MsgId> = deliveries.iter().map(|d| d.msg_id).collect();
            self.state.reject(channel, &ids, true);
            return;
        };
        if c.sink
            .send(ConnEvent::Deliver { queue, deliveries })
            .is_err()
        {
            // The connection is gone; its ChannelClosed will requeue. Stop dispatching to it.
            self.state.remove_consumer(consumer);
            self.consumers.remove(&consumer);
        }
    }
}
