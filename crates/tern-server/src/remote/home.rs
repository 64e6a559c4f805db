//! A queue's home node: operations from other nodes applied to the queue's actor in the
//! order they came, and what the queue sends their consumers carried back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tern_cluster::link::Link;
use tern_cluster::queue_ops::{Answer, ConsumeSpec, QueueOp, QueueRef};
use tern_cluster::wire::Service;
use tern_core::names::ChannelKey;
use tern_core::queue::{ChannelCredit, ConsumerSpec, Delivery};
use tokio::sync::{mpsc, oneshot};

use super::origin::stats_figures;
use super::{refuse, RemoteQueues, Reply};
use crate::queue_actor::store::ConfirmRequest;
use crate::queue_actor::{QueueCmd, QueueHandle};
use crate::sink::{ConnEvent, ConnSink};

/// What failed calls answer when the queue is not (or no longer) here.
const GONE: &str = "no such queue on this node";

/// Every link over which peers use queues homed here, by link id.
#[derive(Default)]
pub(super) struct Home {
    peers: Mutex<HashMap<u64, Arc<PeerState>>>,
}

/// A command for a queue's actor; `sent` hears once the actor has it (a publish: once the
/// queue's inbox had room for it).
type Forward = (QueueCmd, Option<oneshot::Sender<()>>);

/// One peer's use of this node's queues, over one link.
struct PeerState {
    /// Where the queues send the peer's deliveries, cancellations and confirms: a task casts
    /// them over the link.
    sink: ConnSink,
    forwarders: Mutex<HashMap<QueueRef, mpsc::UnboundedSender<Forward>>>,
    /// The peer's channels on each queue, closed for it if the link goes down.
    channels: Mutex<HashSet<(QueueRef, ChannelKey)>>,
    /// The global prefetch of the peer's channels (basic.qos global), as the queues here
    /// share it.
    credits: Mutex<HashMap<ChannelKey, Arc<ChannelCredit>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RemoteQueues {
    /// A call from `from` about a queue homed here.
    pub(super) fn serve_call(self: &Arc<Self>, from: &Link, op: QueueOp) -> Reply {
        let Some(peer) = self.home_peer(from) else {
            return refuse(format!("the link from {} is down", from.peer().node_name));
        };
        match op {
            QueueOp::Publish {
                queue,
                confirm,
                messages,
            } => {
                let confirm = confirm.map(|token| ConfirmRequest {
                    sink: peer.sink.clone(),
                    token,
                });
                let (sent, taken) = oneshot::channel();
                let cmd = QueueCmd::Publish { messages, confirm };
                self.forward(&peer, queue, cmd, Some(sent));
                answer_after(taken, |()| Answer::Done(Ok(())))
            }
            QueueOp::Consume { queue, spec } => self.consume(&peer, queue, spec),
            QueueOp::Get {
                queue,
                channel,
                no_ack,
            } => {
                peer.note_channel(&queue, channel);
                let (reply, got) = oneshot::channel();
                let cmd = QueueCmd::Get {
                    channel,
                    no_ack,
                    reply,
                };
                self.forward(&peer, queue, cmd, None);
                answer_after(got, Answer::Got)
            }
            op => self.serve_admin(&peer, op),
        }
    }

    fn consume(self: &Arc<Self>, peer: &Arc<PeerState>, queue: QueueRef, s: ConsumeSpec) -> Reply {
        peer.note_channel(&queue, s.channel);
        let spec = ConsumerSpec {
            id: s.id,
            channel: s.channel,
            priority: s.priority,
            prefetch: s.prefetch,
            window_bytes: s.window_bytes,
            no_ack: s.no_ack,
            exclusive: s.exclusive,
            channel_credit: s.global_prefetch.map(|n| peer.credit(s.channel, n)),
        };
        let (reply, added) = oneshot::channel();
        let cmd = QueueCmd::Consume {
            spec: Box::new(spec),
            sink: peer.sink.clone(),
            reply,
        };
        self.forward(peer, queue, cmd, None);
        answer_after(added, Answer::Done)
    }

    fn serve_admin(self: &Arc<Self>, peer: &Arc<PeerState>, op: QueueOp) -> Reply {
        match op {
            QueueOp::Purge { queue } => {
                let (reply, purged) = oneshot::channel();
                self.forward(peer, queue, QueueCmd::Purge { reply }, None);
                answer_after(purged, Answer::Count)
            }
            QueueOp::Stats { queue } => {
                let (reply, stats) = oneshot::channel();
                self.forward(peer, queue, QueueCmd::Stats { reply }, None);
                answer_after(stats, |s| Answer::Stats(stats_figures(&s)))
            }
            QueueOp::Delete {
                queue,
                if_unused,
                if_empty,
            } => {
                let (reply, deleted) = oneshot::channel();
                let cmd = QueueCmd::Delete {
                    if_unused,
                    if_empty,
                    reply,
                };
                self.forward(peer, queue, cmd, None);
                answer_after(deleted, Answer::Deleted)
            }
            _ => refuse("not a queue call".into()),
        }
    }

    /// A one-way operation from `from` about a queue homed here.
    pub(super) fn serve_settle(self: &Arc<Self>, from: &Link, op: QueueOp) {
        let Some(peer) = self.home_peer(from) else {
            return;
        };
        let (queue, cmd) = match op {
            QueueOp::Cancel { queue, consumer } => (queue, QueueCmd::Cancel { consumer }),
            QueueOp::Ack {
                queue,
                channel,
                ids,
            } => (queue, QueueCmd::Ack { channel, ids }),
            QueueOp::Reject {
                queue,
                channel,
                ids,
                requeue,
            } => (
                queue,
                QueueCmd::Reject {
                    channel,
                    ids,
                    requeue,
                },
            ),
            QueueOp::ReturnCredit {
                queue,
                consumer,
                n,
                bytes,
            } => (queue, QueueCmd::ReturnCredit { consumer, n, bytes }),
            QueueOp::ChannelClosed { queue, channel } => {
                peer.forget_channel(&queue, channel);
                (queue, QueueCmd::ChannelClosed { channel })
            }
            QueueOp::Kick { queue } => (queue, QueueCmd::Kick),
            _ => return,
        };
        self.forward(&peer, queue, cmd, None);
    }

    /// The state of what comes over `link` (a new link starts afresh); `None` once it is down.
    fn home_peer(self: &Arc<Self>, link: &Link) -> Option<Arc<PeerState>> {
        if link.is_down() {
            return None;
        }
        self.watch(link);
        let mut peers = lock(&self.home.peers);
        let peer = peers
            .entry(link.id())
            .or_insert_with(|| PeerState::start(link.clone()));
        Some(peer.clone())
    }

    /// Hand `cmd` to the queue's forwarder for this link (started if need be), which applies
    /// it in order. A queue not homed here drops it, and with it any answer it waits for.
    fn forward(
        self: &Arc<Self>,
        peer: &Arc<PeerState>,
        queue: QueueRef,
        cmd: QueueCmd,
        sent: Option<oneshot::Sender<()>>,
    ) {
        let mut forwarders = lock(&peer.forwarders);
        let mut item = (cmd, sent);
        if let Some(tx) = forwarders.get(&queue) {
            match tx.send(item) {
                Ok(()) => return,
                Err(refused) => item = refused.0,
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(item);
        forwarders.insert(queue.clone(), tx);
        let forwarder = Forwarder {
            node: Arc::downgrade(self),
            peer: Arc::downgrade(peer),
            key: queue,
        };
        tokio::spawn(forwarder.run(rx));
    }

    fn local_queue(&self, queue: &QueueRef) -> Option<QueueHandle> {
        let broker = self.broker.upgrade()?;
        broker
            .queue(&queue.vhost, &queue.name)
            .filter(QueueHandle::is_local)
    }

    /// A link went down: the channels that came over it close on the queues here (their
    /// unacknowledged messages are requeued, their consumers go), each after whatever its
    /// queue's forwarder still holds from that link.
    pub(super) async fn home_link_lost(self: &Arc<Self>, link: &Link) {
        let peer = lock(&self.home.peers).remove(&link.id());
        let Some(peer) = peer else {
            return;
        };
        let channels: Vec<(QueueRef, ChannelKey)> = lock(&peer.channels).drain().collect();
        for (queue, channel) in channels {
            self.forward(&peer, queue, QueueCmd::ChannelClosed { channel }, None);
        }
    }
}

/// How long a forwarder waits for a queue it does not find: this node may not have applied
/// the metadata change that created it yet (the declaring node answered once it had).
const RESOLVE_WAIT: Duration = Duration::from_secs(5);
/// A forwarder with nothing to do for this long ends if its queue is gone.
const IDLE: Duration = Duration::from_secs(30);

/// Applies one link's commands for one queue in the order they came.
struct Forwarder {
    node: Weak<RemoteQueues>,
    peer: Weak<PeerState>,
    key: QueueRef,
}

impl Forwarder {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Forward>) {
        let mut queue: Option<QueueHandle> = None;
        loop {
            let next = tokio::time::timeout(IDLE, rx.recv()).await;
            let (cmd, sent) = match next {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) if queue.as_ref().is_none_or(QueueHandle::is_gone) => break,
                Err(_) => continue,
            };
            if queue.as_ref().is_none_or(QueueHandle::is_gone) {
                queue = self.resolve().await;
            }
            let Some(handle) = &queue else {
                break;
            };
            if handle.send(cmd).await.is_err() {
                queue = None;
                continue;
            }
            if let Some(sent) = sent {
                let _ = sent.send(());
            }
        }
        rx.close();
        self.forget();
    }

    /// The queue's actor here, waiting for the metadata a little if need be.
    async fn resolve(&self) -> Option<QueueHandle> {
        let deadline = tokio::time::Instant::now() + RESOLVE_WAIT;
        loop {
            let node = self.node.upgrade()?;
            if let Some(handle) = node.local_queue(&self.key) {
                return Some(handle);
            }
            drop(node);
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn forget(&self) {
        if let Some(peer) = self.peer.upgrade() {
            let mut forwarders = lock(&peer.forwarders);
            if forwarders.get(&self.key).is_some_and(|tx| tx.is_closed()) {
                forwarders.remove(&self.key);
            }
        }
    }
}

/// The call's answer once the queue gives it; none (the queue is gone) fails the call.
fn answer_after<T: Send + 'static>(
    rx: oneshot::Receiver<T>,
    make: impl FnOnce(T) -> Answer + Send + 'static,
) -> Reply {
    Box::pin(async move {
        match rx.await {
            Ok(value) => Ok(make(value).encode()),
            Err(_) => Err(GONE.into()),
        }
    })
}

impl PeerState {
    fn start(link: Link) -> Arc<PeerState> {
        let (sink, events) = mpsc::unbounded_channel();
        tokio::spawn(send_back(link, events));
        Arc::new(PeerState {
            sink,
            forwarders: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashSet::new()),
            credits: Mutex::new(HashMap::new()),
        })
    }

    fn note_channel(&self, queue: &QueueRef, channel: ChannelKey) {
        lock(&self.channels).insert((queue.clone(), channel));
    }

    fn forget_channel(&self, queue: &QueueRef, channel: ChannelKey) {
        let mut channels = lock(&self.channels);
        channels.remove(&(queue.clone(), channel));
        if !channels.iter().any(|(_, c)| *c == channel) {
            lock(&self.credits).remove(&channel);
        }
    }

    /// The channel's global prefetch as the queues here share it, set to `limit`.
    fn credit(&self, channel: ChannelKey, limit: u32) -> Arc<ChannelCredit> {
        let mut credits = lock(&self.credits);
        let credit = credits
            .entry(channel)
            .or_insert_with(|| ChannelCredit::new(limit));
        credit.set_limit(limit);
        credit.clone()
    }
}

/// Carry what the queues send the peer's consumers and publishers back over the link, until
/// it goes down (then the queues' sends fail, and they drop the peer's consumers).
async fn send_back(link: Link, mut events: mpsc::UnboundedReceiver<ConnEvent>) {
    let mut batch = Vec::new();
    while events.recv_many(&mut batch, 64).await > 0 {
        for event in batch.drain(..) {
            let Some(op) = back_op(event) else {
                continue;
            };
            if link.cast(Service::Queue, op.encode()).await.is_err() {
                return;
            }
        }
    }
}

fn back_op(event: ConnEvent) -> Option<QueueOp> {
    Some(match event {
        ConnEvent::Deliver { queue, deliveries } => QueueOp::Deliver {
            queue: QueueRef {
                vhost: queue.0.vhost.clone(),
                name: queue.0.name.clone(),
            },
            deliveries: deliveries.into_iter().collect::<Vec<Delivery>>(),
        },
        ConnEvent::ConsumerCancelled { consumer } => QueueOp::Cancelled { consumer },
        ConnEvent::Confirmed { token, ok } => QueueOp::Confirmed { id: token, ok },
        _ => return None,
    })
}
