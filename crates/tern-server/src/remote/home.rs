//! A queue's home node: operations from other nodes applied to the queue's actor in the
//! order they came, and what the queue sends their consumers carried back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use tern_cluster::handshake::Peer;
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

/// Every peer that uses queues homed here.
#[derive(Default)]
pub(super) struct Home {
    peers: Mutex<HashMap<String, Arc<PeerState>>>,
}

/// A command for a queue's actor; `sent` hears once the actor has it (a publish: once the
/// queue's inbox had room for it).
type Forward = (QueueCmd, Option<oneshot::Sender<()>>);

/// One peer's use of this node's queues, over one link.
struct PeerState {
    link: Link,
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
    pub(super) fn serve_call(self: &Arc<Self>, from: &Peer, op: QueueOp) -> Reply {
        let Some(peer) = self.home_peer(from) else {
            return refuse(format!("no link to {}", from.node_name));
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
    pub(super) fn serve_settle(self: &Arc<Self>, from: &Peer, op: QueueOp) {
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

    /// `from`'s state over its current link (a new link starts afresh).
    fn home_peer(self: &Arc<Self>, from: &Peer) -> Option<Arc<PeerState>> {
        let link = self.link(&from.node_name)?;
        let mut peers = lock(&self.home.peers);
        if let Some(peer) = peers.get(&from.node_name).filter(|p| p.link.same(&link)) {
            return Some(peer.clone());
        }
        let peer = PeerState::start(link);
        peers.insert(from.node_name.clone(), peer.clone());
        Some(peer)
    }

    /// Hand `cmd` to the queue's forwarder for this peer (started if need be). A queue not
    /// homed here drops it, and with it any answer the command waits for.
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
        let Some(handle) = self.local_queue(&queue) else {
            forwarders.remove(&queue);
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(item);
        forwarders.insert(queue.clone(), tx);
        tokio::spawn(run_forwarder(handle, rx, Arc::downgrade(peer), queue));
    }

    fn local_queue(&self, queue: &QueueRef) -> Option<QueueHandle> {
        let broker = self.broker.upgrade()?;
        broker
            .queue(&queue.vhost, &queue.name)
            .filter(QueueHandle::is_local)
    }

    /// The link to a peer went down: its channels on the queues here close (their
    /// unacknowledged messages are requeued, their consumers go).
    pub(super) async fn home_link_lost(&self, link: &Link) {
        let peer = {
            let mut peers = lock(&self.home.peers);
            let name = &link.peer().node_name;
            match peers.get(name) {
                Some(p) if p.link.same(link) => peers.remove(name),
                _ => None,
            }
        };
        let Some(peer) = peer else {
            return;
        };
        let channels: Vec<(QueueRef, ChannelKey)> = lock(&peer.channels).drain().collect();
        for (queue, channel) in channels {
            if let Some(handle) = self.local_queue(&queue) {
                let _ = handle.send(QueueCmd::ChannelClosed { channel }).await;
            }
        }
    }
}

/// Apply one peer's commands for one queue in the order they came.
async fn run_forwarder(
    queue: QueueHandle,
    mut rx: mpsc::UnboundedReceiver<Forward>,
    peer: Weak<PeerState>,
    key: QueueRef,
) {
    while let Some((cmd, sent)) = rx.recv().await {
        if queue.send(cmd).await.is_err() {
            break;
        }
        if let Some(sent) = sent {
            let _ = sent.send(());
        }
    }
    rx.close();
    if let Some(peer) = peer.upgrade() {
        let mut forwarders = lock(&peer.forwarders);
        if forwarders.get(&key).is_some_and(|tx| tx.is_closed()) {
            forwarders.remove(&key);
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
        tokio::spawn(send_back(link.clone(), events));
        Arc::new(PeerState {
            link,
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
