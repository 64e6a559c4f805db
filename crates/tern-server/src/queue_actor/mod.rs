//! A queue as an actor: a task that owns a [`QueueState`] and is fed by a bounded channel.
//!
//! Each wake-up takes every waiting command (publishes arrive in batches from each connection),
//! applies them, dispatches once, and sends each connection its deliveries as one event.
//!
//! The inbox is bounded in *messages*, not commands (`queue_inbox_messages`): a publish batch
//! first takes that many permits from the queue's publish credit, which the actor gives back
//! once it has taken the messages in. A publisher faster than the queue waits for credit and so
//! stops reading its socket — that is the backpressure. Other commands (acks, consumes, gets)
//! take no credit: they are bounded by prefetch and by the client's own request/reply pacing,
//! and they never wait behind more than one credit's worth of publishes. The actor itself never
//! waits on a connection, so a slow consumer cannot stall the queue or its other consumers.

mod disk;
mod flow;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use tern_amqp::{AmqpError, ReplyCode};
use tern_core::message::Message;
use tern_core::meta::QueueDef;
use tern_core::names::{ChannelKey, ConsumerId, QueueName, VhostName};
use tern_core::queue::{ConsumerSpec, Delivery, GetResult, MsgId, QueueOptions, QueueState};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use self::flow::PublishFlow;
use self::store::{ConfirmRequest, QueueStore};
use crate::broker::Broker;
use crate::remote::RemoteQueue;
use crate::sink::{ConnEvent, ConnSink};

pub enum QueueCmd {
    /// With `confirm`, the queue answers once it has the messages safely: for a durable
    /// queue, once its persistent ones are on disk.
    Publish {
        messages: Vec<Arc<Message>>,
        confirm: Option<ConfirmRequest>,
    },
    /// The queue's own: the fsync begun at `upto` returned.
    Synced {
        upto: u64,
        pending: tern_store::PendingSync,
        result: std::io::Result<()>,
    },
    /// Boxed: rare, and the largest variant; every inbox slot is sized by the largest.
    Consume {
        spec: Box<ConsumerSpec>,
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
        bytes: u64,
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
    /// Clean shutdown: make everything written durable, then answer.
    Flush {
        reply: oneshot::Sender<()>,
    },
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<Result<u32, AmqpError>>,
    },
}

#[derive(Clone, Copy, Debug, Default)]
pub struct QueueStats {
    /// Ready messages (what queue.declare-ok counts).
    pub messages: u32,
    pub consumers: u32,
    /// Delivered, not yet acknowledged.
    pub unacked: u32,
    /// Ready messages in memory, and their bytes.
    pub ready_in_memory: u64,
    pub ready_bytes_in_memory: u64,
    /// Ready messages on disk only (paged out), and their bytes.
    pub paged: u64,
    pub paged_bytes: u64,
    /// Bytes of the unacknowledged messages (held in memory).
    pub unacked_bytes: u64,
}

impl LocalQueue {
    /// Permits a publish of `n` messages takes (a batch larger than the whole inbox takes all).
    fn credit_for(&self, n: usize) -> u32 {
        n.min(self.inbox_messages) as u32
    }
}

/// A queue as connections see it: its definition, and where its commands go.
pub struct QueueShared {
    pub name: QueueName,
    pub vhost: VhostName,
    pub def: QueueDef,
    place: Place,
}

/// Where a queue runs: here (an actor), or on its home node (reached over the link to it).
enum Place {
    Local(Arc<LocalQueue>),
    Remote(RemoteQueue),
}

/// What a queue's actor on this node shares with its handles.
pub struct LocalQueue {
    tx: mpsc::UnboundedSender<QueueCmd>,
    /// Messages that may sit in the inbox; publishers take permits, the actor returns them.
    publish_credit: Semaphore,
    inbox_messages: usize,
    stop: Notify,
}

/// A cheap, cloneable reference to a queue, wherever it runs: commands sent through it mean
/// the same for a queue on this node and for one on another (see [`crate::remote`]).
#[derive(Clone)]
pub struct QueueHandle(pub Arc<QueueShared>);

/// The queue's actor has stopped (the queue was deleted), or its home node cannot be reached.
#[derive(Debug)]
pub struct QueueGone;

impl QueueHandle {
    /// A handle on a queue whose home is another node.
    pub fn remote(vhost: VhostName, def: QueueDef, remote: RemoteQueue) -> QueueHandle {
        QueueHandle(Arc::new(QueueShared {
            name: def.name.clone(),
            vhost,
            def,
            place: Place::Remote(remote),
        }))
    }

    pub fn name(&self) -> &QueueName {
        &self.0.name
    }

    pub fn def(&self) -> &QueueDef {
        &self.0.def
    }

    /// Send a command. A publish first waits for inbox credit (publisher backpressure).
    pub async fn send(&self, cmd: QueueCmd) -> Result<(), QueueGone> {
        let local = match &self.0.place {
            Place::Local(local) => local,
            Place::Remote(remote) => return remote.send(self, cmd).await,
        };
        if let QueueCmd::Publish { messages, .. } = &cmd {
            let permits = local.credit_for(messages.len());
            let credit = local.publish_credit.acquire_many(permits).await;
            credit.map_err(|_| QueueGone)?.forget();
        }
        local.tx.send(cmd).map_err(|_| QueueGone)
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
        if let Place::Local(local) = &self.0.place {
            local.stop.notify_one();
        }
    }

    pub fn same(&self, other: &QueueHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether the queue's actor here has stopped (a remote queue is never gone this way).
    pub fn is_gone(&self) -> bool {
        match &self.0.place {
            Place::Local(local) => local.tx.is_closed(),
            Place::Remote(_) => false,
        }
    }

    /// Whether the queue runs on this node.
    pub fn is_local(&self) -> bool {
        matches!(self.0.place, Place::Local(_))
    }

    /// RabbitMQ's 404 for a queue whose home node is down, if it is; `None` when the queue
    /// can be reached.
    pub fn unreachable(&self) -> Option<AmqpError> {
        match &self.0.place {
            Place::Local(_) => None,
            Place::Remote(remote) => remote.unreachable(&self.0),
        }
    }
}

struct Consumer {
    sink: ConnSink,
}

#[derive(Clone, Copy, Debug)]
struct MemoryLimits {
    messages: usize,
    bytes: u64,
}

struct QueueActor {
    shared: Arc<QueueShared>,
    /// The actor's side of `shared`.
    local: Arc<LocalQueue>,
    state: QueueState,
    consumers: HashMap<ConsumerId, Consumer>,
    broker: Weak<Broker>,
    deliveries: Vec<Delivery>,
    flow: PublishFlow,
    deleted: bool,
    /// queue.delete's answer, sent once the definition is gone.
    delete_reply: Option<(u32, oneshot::Sender<Result<u32, AmqpError>>)>,
    /// A durable queue's messages on disk (opened when the actor starts).
    store: Option<QueueStore>,
    /// Its storage could not be read: the queue refuses work instead of guessing.
    failed: bool,
    /// Stopped from outside (its vhost or definition went): its store goes too.
    stopped: bool,
    /// How many ready messages, and bytes of them, may stay in memory before paging.
    memory: MemoryLimits,
    data_dir: std::path::PathBuf,
    /// Where its store lives: the broker's file system.
    vfs: Arc<dyn tern_store::Vfs>,
}

pub fn spawn(
    broker: &Arc<Broker>,
    vhost: VhostName,
    def: QueueDef,
    options: QueueOptions,
) -> QueueHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let inbox_messages = broker
        .config
        .queue_inbox_messages
        .clamp(1, Semaphore::MAX_PERMITS);
    let local = Arc::new(LocalQueue {
        tx,
        publish_credit: Semaphore::new(inbox_messages),
        inbox_messages,
        stop: Notify::new(),
    });
    let shared = Arc::new(QueueShared {
        name: def.name.clone(),
        vhost: vhost.clone(),
        def: def.clone(),
        place: Place::Local(local.clone()),
    });
    let actor = QueueActor {
        shared: shared.clone(),
        local,
        state: QueueState::new(def.name.clone(), vhost, options),
        consumers: HashMap::new(),
        broker: Arc::downgrade(broker),
        deliveries: Vec::new(),
        flow: PublishFlow::new(broker.config.queue_flow_backlog_messages),
        deleted: false,
        delete_reply: None,
        store: None,
        failed: false,
        stopped: false,
        memory: MemoryLimits {
            messages: broker.config.queue_memory_messages.max(2),
            bytes: broker.config.queue_memory_bytes,
        },
        data_dir: broker.config.data_dir.clone(),
        vfs: broker.vfs.clone(),
    };
    // Every line the actor logs names its queue; no parent: the connection that declared the
    // queue is not the queue's context. ERROR level, as the connection span: kept by any filter.
    let span =
        tracing::error_span!(parent: None, "queue", vhost = %shared.vhost, queue = %shared.name);
    tokio::spawn(tracing::Instrument::instrument(actor.run(rx), span));
    QueueHandle(shared)
}

/// Commands taken per wake-up at most, so one busy queue yields to others.
const BATCH: usize = 512;
/// A wake-up with at most this many commands counts as quiet.
const IDLE_BATCH: usize = 4;

impl QueueActor {
    async fn run(mut self, rx: mpsc::UnboundedReceiver<QueueCmd>) {
        if self.shared.def.durable {
            self.recover().await;
        }
        self.serve(rx).await;
        // Publishers waiting for credit learn that the queue is gone.
        self.local.publish_credit.close();
        if let Some(store) = self.store.take() {
            if self.deleted || self.stopped || !store.is_durable() {
                store.destroy();
            }
        }
    }

    async fn serve(&mut self, mut rx: mpsc::UnboundedReceiver<QueueCmd>) {
        let mut cmds = Vec::new();
        let mut recheck: Option<Instant> = None;
        loop {
            let flow_timer = tokio::time::sleep_until(recheck.unwrap_or_else(Instant::now).into());
            tokio::select! {
                n = rx.recv_many(&mut cmds, BATCH) => if n == 0 { break },
                _ = self.local.stop.notified() => {
                    self.stopped = true;
                    break;
                }
                _ = flow_timer, if recheck.is_some() => {}
            }
            let taken = cmds.len();
            for cmd in cmds.drain(..) {
                self.handle(cmd);
            }
            if taken <= IDLE_BATCH {
                // A quiet queue keeps no command buffer: thousands of idle queues stay cheap.
                cmds = Vec::new();
            }
            if self.deleted {
                return self.finish_delete().await;
            }
            if self.work() {
                self.deleted = true;
                self.cancel_consumers();
                return self.finish_delete().await;
            }
            recheck = self.settle_publish_credit();
        }
        self.cancel_consumers();
    }

    /// After a wake-up's commands: page in, dispatch, write the journal (a queue that is down
    /// does none of it). Whether the queue should now delete itself (auto-delete).
    fn work(&mut self) -> bool {
        if self.failed {
            return false;
        }
        self.refill();
        self.dispatch();
        if self.refill() {
            self.dispatch();
        }
        self.persist();
        self.should_auto_delete()
    }

    fn handle(&mut self, cmd: QueueCmd) {
        match cmd {
            QueueCmd::Publish { messages, confirm } => {
                let permits = self.local.credit_for(messages.len());
                self.flow.hold(permits as usize);
                self.publish(messages, confirm);
            }
            QueueCmd::Synced {
                upto,
                pending,
                result,
            } => {
                if let Some(store) = self.store.as_mut() {
                    if let Err(e) = store.finish_sync(upto, &pending, result) {
                        self.storage_failed(&e);
                    }
                }
            }
            QueueCmd::Consume { reply, .. } if self.failed => {
                let _ = reply.send(Err(self.failed_error()));
            }
            QueueCmd::Get { reply, .. } if self.failed => {
                let _ = reply.send(None);
            }
            QueueCmd::Consume { spec, sink, reply } => {
                let id = spec.id;
                let result = self.state.add_consumer(*spec);
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
            QueueCmd::ReturnCredit { consumer, n, bytes } => {
                self.state.return_credit(consumer, n, bytes)
            }
            QueueCmd::Get {
                channel,
                no_ack,
                reply,
            } => {
                if self.state.in_memory() == 0 {
                    self.refill();
                }
                let _ = reply.send(self.state.get(channel, no_ack));
            }
            QueueCmd::Purge { reply } => {
                let _ = reply.send(self.state.purge());
                self.purge_store();
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
            QueueCmd::Flush { reply } => {
                self.persist();
                if let Some(store) = self.store.as_mut() {
                    if let Err(e) = store.sync_now() {
                        self.storage_failed(&e);
                    }
                }
                let _ = reply.send(());
            }
            QueueCmd::Delete {
                if_unused,
                if_empty,
                reply,
            } => self.try_delete(if_unused, if_empty, reply),
        }
    }

    fn failed_error(&self) -> AmqpError {
        let text = format!(
            "queue '{}' in vhost '{}' is down: its storage failed or is damaged (see the broker log)",
            self.shared.name, self.shared.vhost
        );
        AmqpError::new(ReplyCode::NotFound, text)
    }

    /// Give publishers back the credit flow control allows; when to look again if any is held.
    fn settle_publish_credit(&mut self) -> Option<Instant> {
        let backlog = self.state.message_count() as usize;
        let (permits, recheck) = self.flow.settle(backlog, Instant::now());
        if permits > 0 {
            self.local.publish_credit.add_permits(permits);
        }
        recheck
    }

    fn stats(&self) -> QueueStats {
        QueueStats {
            messages: self.state.message_count(),
            consumers: self.state.consumer_count(),
            unacked: self.state.unacked_count(),
            ready_in_memory: self.state.in_memory() as u64,
            ready_bytes_in_memory: self.state.ready_bytes(),
            paged: self.state.paged(),
            paged_bytes: self.state.paged_bytes(),
            unacked_bytes: self.state.unacked_bytes(),
        }
    }

    /// queue.delete: refuse, or cancel every consumer and go (answered by `finish_delete`).
    fn try_delete(
        &mut self,
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<Result<u32, AmqpError>>,
    ) {
        let (name, vhost) = (&self.shared.name, &self.shared.vhost);
        if if_unused && !self.state.is_unused() {
            let text = format!("queue '{name}' in vhost '{vhost}' in use");
            let _ = reply.send(Err(AmqpError::new(ReplyCode::PreconditionFailed, text)));
            return;
        }
        if if_empty && self.state.message_count() > 0 {
            let text = format!("queue '{name}' in vhost '{vhost}' is not empty");
            let _ = reply.send(Err(AmqpError::new(ReplyCode::PreconditionFailed, text)));
            return;
        }
        self.delete_reply = Some((self.state.message_count(), reply));
        self.deleted = true;
        self.cancel_consumers();
    }

    /// Drop the definition (through the metadata log) and the messages on disk, then answer
    /// queue.delete if asked.
    async fn finish_delete(&mut self) {
        if let Some(broker) = self.broker.upgrade() {
            broker
                .remove_queue(&self.shared.vhost, &self.shared.name)
                .await;
        }
        if let Some(store) = self.store.take() {
            let _ = tokio::task::spawn_blocking(move || store.destroy()).await;
        }
        if let Some((count, reply)) = self.delete_reply.take() {
            let _ = reply.send(Ok(count));
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
        self.flow.delivered(Instant::now());
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
