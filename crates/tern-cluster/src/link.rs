//! A link: one connection to a peer node, after the handshake, carrying calls both ways.
//!
//! Two tasks own the connection. The reader decodes frames and acts on each: a
//! [`Message::Call`] goes to the node's [`Handler`] (at most `calls_served` at once; the reader
//! waits for a slot, so a peer that floods us with calls is slowed by its own TCP window), a
//! [`Message::Reply`] completes the call that asked, a ping is answered with a pong. The writer
//! drains the send queue into one buffer per wake-up and writes it, and sends a ping every
//! `heartbeat`.
//!
//! Two lanes: Raft and control traffic (calls, their replies, heartbeats) goes ahead of bulk
//! traffic (queue operations, deliveries, node facts), so a busy queue never delays a Raft
//! heartbeat or vote into an election. The writer always empties the first lane first.
//!
//! Bounds: each lane's send queue holds `send_queue_frames` frames, and senders wait for room,
//! so a slow peer slows the callers instead of growing memory; calls awaiting a reply are at
//! most `calls_in_flight` per lane (more wait); a frame is at most `frame_max_bytes`. The
//! reader never waits on a bulk call: it hands it to the handler and goes on reading (the
//! peer's in-flight bound limits how many are open); Raft and control calls are served at most
//! `calls_served` at once. A peer silent for
//! `3 × heartbeat` is taken for dead: the link closes, and every call still waiting fails with
//! [`CallError::LinkDown`], as does every call made after.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;

use crate::handshake::Peer;
use crate::wire::{self, Message, Service, WireError};

/// A link's bounds (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct LinkLimits {
    pub frame_max_bytes: u32,
    pub send_queue_frames: usize,
    pub calls_in_flight: usize,
    pub calls_served: usize,
    pub heartbeat: Duration,
}

impl Default for LinkLimits {
    fn default() -> Self {
        LinkLimits {
            frame_max_bytes: wire::DEFAULT_FRAME_MAX_BYTES,
            send_queue_frames: 1024,
            calls_in_flight: 1024,
            calls_served: 256,
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// An answer to a call: its body, or why the service could not give one.
pub type Answer = Result<Bytes, String>;

/// What a node answers the calls its peers make.
///
/// The reader calls [`Handler::call`] and [`Handler::cast`] in the order the frames came in,
/// one at a time, with the link they came in on: what they do before returning (not the
/// returned future) happens in the peer's order. They must not block: the reader also reads
/// the replies and heartbeats.
pub trait Handler: Send + Sync + 'static {
    fn call(
        &self,
        from: &Link,
        service: Service,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send>>;

    /// A one-way message; a service that takes none drops it.
    fn cast(&self, from: &Link, service: Service, body: Bytes) {
        let _ = (from, service, body);
    }
}

/// Whether `service`'s traffic goes in the first lane (see the module docs).
fn urgent(service: Service) -> bool {
    matches!(service, Service::Raft { .. } | Service::Control)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    #[error("the link to {0} is down")]
    LinkDown(String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0} could not answer: {1}")]
    Failed(String, String),
}

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkEnd {
    #[error("closed here")]
    Closed,
    #[error("the peer closed the connection")]
    PeerClosed,
    #[error("nothing heard from the peer for {0:?}")]
    Silent(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("the peer sent {0} after the handshake")]
    Unexpected(&'static str),
}

/// A cheap handle on a running link.
#[derive(Clone)]
pub struct Link(Arc<Shared>);

struct Shared {
    peer: Peer,
    /// Unique among this process's links.
    id: u64,
    /// The first lane (Raft, control, heartbeats) and the bulk lane.
    urgent: mpsc::Sender<Message>,
    bulk: mpsc::Sender<Message>,
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    in_flight: Arc<Semaphore>,
    in_flight_bulk: Arc<Semaphore>,
    /// Set to true once the link has ended.
    down: watch::Sender<bool>,
}

/// Links made by this process, for [`Link::id`].
static LINKS: AtomicU64 = AtomicU64::new(1);

impl Shared {
    fn lane(&self, service: Service) -> (&mpsc::Sender<Message>, &Arc<Semaphore>) {
        if urgent(service) {
            (&self.urgent, &self.in_flight)
        } else {
            (&self.bulk, &self.in_flight_bulk)
        }
    }
}

impl Link {
    /// Run a link over `stream` (handshake done; `leftover` is what was read past it). The
    /// task ends, with the reason, when the link does; dropping every [`Link`] does not end it,
    /// [`Link::close`] does.
    pub fn spawn<S>(
        stream: S,
        leftover: BytesMut,
        peer: Peer,
        handler: Arc<dyn Handler>,
        limits: LinkLimits,
    ) -> (Link, tokio::task::JoinHandle<LinkEnd>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let frames = limits.send_queue_frames.max(1);
        let (urgent, urgent_queue) = mpsc::channel(frames);
        let (bulk, bulk_queue) = mpsc::channel(frames);
        let calls = limits.calls_in_flight.max(1);
        let shared = Arc::new(Shared {
            peer,
            id: LINKS.fetch_add(1, Ordering::Relaxed),
            urgent,
            bulk,
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(calls)),
            in_flight_bulk: Arc::new(Semaphore::new(calls)),
            down: watch::Sender::new(false),
        });
        let link = Link(shared.clone());
        let queues = (urgent_queue, bulk_queue);
        let task = tokio::spawn(run(stream, leftover, shared, queues, handler, limits));
        (link, task)
    }

    /// This link's id, unique among the links this process made.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    pub fn peer(&self) -> &Peer {
        &self.0.peer
    }

    pub fn is_down(&self) -> bool {
        *self.0.down.borrow()
    }

    /// Wait until the link is down.
    pub async fn down(&self) {
        let mut rx = self.0.down.subscribe();
        let _ = rx.wait_for(|down| *down).await;
    }

    /// End the link: calls waiting fail, the connection closes.
    pub fn close(&self) {
        self.0.down.send_replace(true);
    }

    /// Whether `other` is this same link (not a later one to the same peer).
    pub fn same(&self, other: &Link) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Call `service` on the peer and wait for its answer, at most `timeout` (waiting for room
    /// in the send queue included).
    pub async fn call(
        &self,
        service: Service,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let name = &self.0.peer.node_name;
        let call = async { self.begin_call(service, body).await?.answer().await };
        match tokio::time::timeout(timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err(CallError::Timeout(name.clone(), timeout)),
        }
    }

    /// Send a call and return once it is in the send queue (so calls begun one after the
    /// other reach the peer in that order); its answer comes through the [`PendingCall`].
    /// Waits for a slot among the calls in flight and for room in the send queue.
    pub async fn begin_call(
        &self,
        service: Service,
        body: Bytes,
    ) -> Result<PendingCall, CallError> {
        let shared = &self.0;
        let (out, in_flight) = shared.lane(service);
        let slot = in_flight.clone().acquire_owned().await;
        let slot = slot.map_err(|_| shared.link_down())?;
        if self.is_down() {
            return Err(shared.link_down());
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting::register(shared.clone(), id, tx);
        let call = Message::Call { id, service, body };
        out.send(call).await.map_err(|_| shared.link_down())?;
        Ok(PendingCall {
            rx,
            _waiting: waiting,
            _slot: slot,
        })
    }

    /// Send a one-way message, once there is room in the send queue.
    pub async fn cast(&self, service: Service, body: Bytes) -> Result<(), CallError> {
        let shared = &self.0;
        if self.is_down() {
            return Err(shared.link_down());
        }
        let (out, _) = shared.lane(service);
        let cast = Message::Cast { service, body };
        out.send(cast).await.map_err(|_| shared.link_down())
    }
}

/// A call sent and not yet answered; it keeps its slot among the calls in flight until then.
/// Dropping it gives up on the answer.
pub struct PendingCall {
    rx: oneshot::Receiver<Answer>,
    _waiting: Waiting,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl PendingCall {
    /// The answer: the service's body, its refusal, or the link going down first.
    pub async fn answer(self) -> Result<Bytes, CallError> {
        let shared = self._waiting.shared.clone();
        match self.rx.await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(why)) => Err(CallError::Failed(shared.peer.node_name.clone(), why)),
            Err(_) => Err(shared.link_down()),
        }
    }
}

/// A call's place in the waiting table, given up when the caller stops waiting (an answer,
/// a timeout, a dropped future).
struct Waiting {
    shared: Arc<Shared>,
    id: u64,
}

impl Waiting {
    fn register(shared: Arc<Shared>, id: u64, tx: oneshot::Sender<Answer>) -> Self {
        shared.lock_waiting().insert(id, tx);
        Waiting { shared, id }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.shared.lock_waiting().remove(&self.id);
    }
}

impl Shared {
    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Answer>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn link_down(&self) -> CallError {
        CallError::LinkDown(self.peer.node_name.clone())
    }

    /// The link is down: fail every call waiting (dropping its sender), refuse new ones.
    fn go_down(&self) {
        self.down.send_replace(true);
        self.in_flight.close();
        self.in_flight_bulk.close();
        self.lock_waiting().clear();
    }
}

type Lanes = (mpsc::Receiver<Message>, mpsc::Receiver<Message>);

async fn run<S>(
    stream: S,
    leftover: BytesMut,
    shared: Arc<Shared>,
    queues: Lanes,
    handler: Arc<dyn Handler>,
    limits: LinkLimits,
) -> LinkEnd
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let mut down = shared.down.subscribe();
    let reading = read_loop(reader, leftover, shared.clone(), handler, limits);
    let writing = write_loop(writer, queues, limits.heartbeat);
    let end = tokio::select! {
        end = reading => end,
        end = writing => end,
        _ = down.wait_for(|d| *d) => LinkEnd::Closed,
    };
    shared.go_down();
    tracing::info!(peer = %shared.peer.node_name, reason = %end, "node link down");
    end
}

/// Frames of the bulk lane written per wake-up at most, so the first lane waits little.
const BULK_BATCH: usize = 64;

async fn write_loop<W: AsyncWrite>(writer: W, lanes: Lanes, heartbeat: Duration) -> LinkEnd {
    let (mut urgent, mut bulk) = lanes;
    tokio::pin!(writer);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut batch = Vec::new();
    let mut more = Vec::new();
    let mut ping = tokio::time::interval(heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            n = urgent.recv_many(&mut batch, 256) => if n == 0 { return LinkEnd::Closed },
            _ = ping.tick() => {
                seq += 1;
                batch.push(Message::Ping(seq));
            }
            n = bulk.recv_many(&mut more, BULK_BATCH) => if n == 0 { return LinkEnd::Closed },
        }
        batch.append(&mut more);
        while let Ok(m) = urgent.try_recv() {
            batch.push(m);
        }
        for m in batch.drain(..) {
            wire::encode(&m, &mut buf);
        }
        if let Err(e) = writer.write_all(&buf).await {
            return e.into();
        }
        buf.clear();
        if buf.capacity() > 1024 * 1024 {
            buf = BytesMut::with_capacity(64 * 1024);
        }
    }
}

async fn read_loop<R: AsyncRead>(
    reader: R,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    limits: LinkLimits,
) -> LinkEnd {
    tokio::pin!(reader);
    let serving = Arc::new(Semaphore::new(limits.calls_served.max(1)));
    let silence = limits.heartbeat * 3;
    loop {
        loop {
            let message = match wire::decode(&mut buf, limits.frame_max_bytes) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return e.into(),
            };
            if let Err(end) = receive(message, &shared, &handler, &serving).await {
                return end;
            }
        }
        let deadline = Instant::now() + silence;
        match tokio::time::timeout_at(deadline, reader.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return LinkEnd::PeerClosed,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return e.into(),
            Err(_) => return LinkEnd::Silent(silence),
        }
    }
}

/// Act on one frame from the peer.
async fn receive(
    message: Message,
    shared: &Arc<Shared>,
    handler: &Arc<dyn Handler>,
    serving: &Arc<Semaphore>,
) -> Result<(), LinkEnd> {
    match message {
        // A full send queue means pongs are not needed: the peer hears from us anyway.
        Message::Ping(n) => drop(shared.urgent.try_send(Message::Pong(n))),
        Message::Pong(_) => {}
        Message::Reply { id, result } => {
            if let Some(tx) = shared.lock_waiting().remove(&id) {
                let _ = tx.send(result);
            }
        }
        Message::Call { id, service, body } => {
            // Bulk calls take no slot: the reader must not wait behind a slow queue.
            let slot = match urgent(service) {
                true => match serving.clone().acquire_owned().await {
                    Ok(slot) => Some(slot),
                    Err(_) => return Err(LinkEnd::Closed),
                },
                false => None,
            };
            let answer = handler.call(&Link(shared.clone()), service, body);
            let out = shared.lane(service).0.clone();
            tokio::spawn(async move {
                let result = answer.await;
                let _ = out.send(Message::Reply { id, result }).await;
                drop(slot);
            });
        }
        Message::Cast { service, body } => handler.cast(&Link(shared.clone()), service, body),
        Message::Hello(_) => return Err(LinkEnd::Unexpected("hello")),
        Message::Proof(_) => return Err(LinkEnd::Unexpected("a proof")),
        Message::Refused(why) => {
            tracing::warn!(peer = %shared.peer.node_name, reason = %why, "node link refused by the peer");
            return Err(LinkEnd::PeerClosed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
