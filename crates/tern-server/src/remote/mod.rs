//! Queues on other nodes: any node serves any queue.
//!
//! A classic queue runs on one node, its home (`QueueDef::home`). Every other node holds a
//! [`RemoteQueue`] for it behind the same [`QueueHandle`] connections use for local queues,
//! so the channel code does not know where a queue runs: the commands it sends
//! ([`QueueCmd`]) are carried to the home node as `tern_cluster::queue_ops`, and what they
//! wait for comes back the way a local queue answers — a one-shot answer, a confirm, a
//! delivery in the connection's inbox. One-shot senders and connection sinks never cross a
//! link: each side keeps them and the link carries ids.
//!
//! - `origin`: the side of the node a client is connected to: commands out; deliveries,
//!   cancellations and confirms in.
//! - `home`: the queue's node: operations in, applied to the queue's actor in the order they
//!   came (one forwarder task per peer and queue, so one slow queue does not hold up another);
//!   what the queue sends the peer's consumers goes back over the link.
//!
//! Bounds: a node has at most `queue_inbox_messages` messages of one remote queue's publishes
//! in flight (sent, not yet taken in by the queue), as a local publisher has in the queue's
//! inbox; the link's send queue and calls in flight bound the rest. Deliveries are bounded by
//! consumer credit, as for local consumers.
//!
//! When a link goes down, each side cleans up what went through it: the home node closes the
//! peer's channels on its queues (their unacknowledged messages are requeued), the other node
//! cancels its consumers of the peer's queues (clients get basic.cancel) and nacks the
//! publishes that waited for a confirm from there.

mod home;
mod origin;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tern_cluster::link::{Answer, Handler, Link};
use tern_cluster::nodes::Nodes;
use tern_cluster::queue_ops::{QueueOp, QueueRef};
use tern_cluster::wire::Service;
use tern_core::names::ConsumerId;
use tern_core::queue::Delivery;

use crate::broker::Broker;
use crate::connection::requeue;
#[cfg(doc)]
use crate::queue_actor::QueueCmd;
use crate::queue_actor::QueueHandle;

pub use origin::RemoteQueue;

/// How long a command that has an answer waits for the home node's.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// This node's side of every remote queue, and its service for the queues homed here.
pub struct RemoteQueues {
    broker: Weak<Broker>,
    nodes: OnceLock<Nodes>,
    origin: origin::Origin,
    home: home::Home,
    /// The links whose loss is being watched, by id.
    watched: Mutex<HashMap<u64, Link>>,
}

impl RemoteQueues {
    pub fn new(broker: Weak<Broker>) -> Arc<RemoteQueues> {
        Arc::new(RemoteQueues {
            broker,
            nodes: OnceLock::new(),
            origin: origin::Origin::default(),
            home: home::Home::default(),
            watched: Mutex::new(HashMap::new()),
        })
    }

    /// The node's links, once the cluster has started.
    pub fn set_nodes(&self, nodes: Nodes) {
        let _ = self.nodes.set(nodes);
    }

    /// What serves `Service::Queue` for the node's links.
    pub fn service(self: &Arc<Self>) -> Arc<dyn Handler> {
        Arc::new(QueueService(self.clone()))
    }

    /// The live link to `node`, watched for its loss.
    fn link(self: &Arc<Self>, node: &str) -> Option<Link> {
        let link = self.nodes.get()?.link(node).filter(|l| !l.is_down())?;
        self.watch(&link);
        Some(link)
    }

    /// Clean up after `link` once it goes down (see the module docs): what went through it,
    /// and only that (two nodes may briefly have two links).
    fn watch(self: &Arc<Self>, link: &Link) {
        {
            let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            if watched.contains_key(&link.id()) {
                return;
            }
            watched.insert(link.id(), link.clone());
        }
        let (this, link) = (self.clone(), link.clone());
        tokio::spawn(async move {
            link.down().await;
            {
                let mut watched = this.watched.lock().unwrap_or_else(|p| p.into_inner());
                watched.remove(&link.id());
            }
            this.origin.link_lost(link.id());
            this.home_link_lost(&link).await;
        });
    }
}

impl RemoteQueues {
    /// A one-way operation: what a home node sends back, or settlement for a queue here.
    fn serve_cast(self: &Arc<Self>, from: &Link, op: QueueOp) {
        match op {
            QueueOp::Deliver { queue, deliveries } => {
                let orphans = self.origin.deliver(deliveries);
                if !orphans.is_empty() {
                    self.orphaned(from, queue, orphans);
                }
            }
            QueueOp::Cancelled { consumer } => self.origin.cancelled(consumer),
            QueueOp::Confirmed { id, ok } => self.origin.confirm(id, ok),
            op => self.serve_settle(from, op),
        }
    }
}

impl RemoteQueues {
    /// What `node` says of itself (`/api/nodes`' fields), if it answers in time.
    pub async fn node_facts(self: &Arc<Self>, node: &str) -> Option<serde_json::Value> {
        let link = self.link(node)?;
        let wait = Duration::from_secs(2);
        let body = link.call(Service::Node, Bytes::new(), wait).await.ok()?;
        serde_json::from_slice(&body).ok()
    }
}

impl RemoteQueues {
    /// Wait (a little) until this node's registry no longer holds `handle`: the metadata
    /// change that removed it has been applied here.
    async fn await_gone(&self, handle: &QueueHandle) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let (vhost, name) = (&handle.0.vhost, &handle.0.name);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while broker.queue(vhost, name).is_some_and(|h| h.same(handle)) {
            if tokio::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Deliveries for consumers this node no longer has: back to the queue, and the home told
    /// to drop those consumers (in case their cancel was lost with a link).
    fn orphaned(&self, from: &Link, queue: QueueRef, orphans: Vec<Delivery>) {
        let broker = self.broker.upgrade();
        let handle = broker.and_then(|b| b.queue(&queue.vhost, &queue.name));
        let mut consumers: Vec<ConsumerId> = orphans.iter().map(|d| d.consumer).collect();
        consumers.dedup();
        let link = from.clone();
        tokio::spawn(async move {
            if let Some(handle) = handle {
                requeue(&handle, orphans).await;
            }
            for consumer in consumers {
                let queue = queue.clone();
                let cancel = QueueOp::Cancel { queue, consumer };
                let _ = link.cast(Service::Queue, cancel.encode()).await;
            }
        });
    }
}

/// The `Service::Queue` handler: operations for queues homed here, and what queues homed
/// elsewhere send back.
struct QueueService(Arc<RemoteQueues>);

type Reply = Pin<Box<dyn Future<Output = Answer> + Send>>;

impl Handler for QueueService {
    fn call(&self, from: &Link, service: Service, body: Bytes) -> Reply {
        if service == Service::Node {
            let broker = self.0.broker.upgrade();
            return Box::pin(async move {
                let broker = broker.ok_or("the node is stopping")?;
                let facts = crate::management::health::node_json(&broker).await;
                serde_json::to_vec(&facts)
                    .map(Bytes::from)
                    .map_err(|e| e.to_string())
            });
        }
        match QueueOp::decode(body) {
            Ok(op) => self.0.serve_call(from, op),
            Err(e) => refuse(e.to_string()),
        }
    }

    fn cast(&self, from: &Link, service: Service, body: Bytes) {
        if service != Service::Queue {
            return;
        }
        match QueueOp::decode(body) {
            Ok(op) => self.0.serve_cast(from, op),
            Err(e) => {
                tracing::warn!(peer = %from.peer().node_name, error = %e, "bad queue operation from a node")
            }
        }
    }
}

fn refuse(why: String) -> Reply {
    Box::pin(async move { Err(why) })
}
