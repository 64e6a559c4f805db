//! One client connection: a single task that owns the socket and every channel's state.
//!
//! The task waits on three things: bytes from the client, events from queue actors
//! (deliveries, consumer cancellations), and the heartbeat timer. Each wake-up decodes every
//! whole frame in the read buffer, sends the publishes it produced to their queues as one batch
//! per queue (waiting while a queue's inbox is full: that is how a fast publisher is slowed),
//! then writes everything it has to say in one write.
//!
//! - `handshake`: protocol header, SASL, tune, open.
//! - `authz`: the permission checks of every operation.
//! - `channel`: per-channel state and the channel/exchange/queue class methods.
//! - `basic`: publish (with confirms and tx), consume, cancel, get, ack/nack/reject, qos.
//! - `deliver`: turning queue deliveries into basic.deliver frames and tracking delivery tags.
//! - `describe`: what operators see of its channels and consumers.
//! - `reply_to`: direct reply-to (the `amq.rabbitmq.reply-to` pseudo-queue).

mod authz;
mod basic;
mod channel;
mod confirms;
mod deliver;
mod describe;
mod handshake;
mod reply_to;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tern_amqp::frame::{decode_frame, encode_heartbeat, encode_method};
use tern_amqp::{
    AmqpError, ChannelClose, ConnectionClose, DecodeError, FieldTable, FieldValue, Frame,
    FramePayload, Method, ReplyCode,
};
use tern_core::names::{ConnectionId, ConsumerId, VhostName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::broker::{Broker, RoutingView};
use crate::metrics::Counter;
use crate::sink::{ConnEvent, ConnSink};
use basic::PendingBatches;
use channel::Channel;
pub(crate) use deliver::requeue;
use deliver::ConsumerInfo;
pub use describe::{ChannelDetail, ConnDetail, ConsumerDetail};

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the socket")]
    Eof,
    #[error("wrong protocol header")]
    BadProtocolHeader,
    #[error("authentication failed (client cannot take connection.close)")]
    AuthFailedSilently,
    #[error("{0}")]
    Amqp(AmqpError),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("missed heartbeats from client")]
    HeartbeatTimeout,
    #[error("connection closed")]
    Closed,
}

impl From<DecodeError> for ConnError {
    fn from(e: DecodeError) -> Self {
        ConnError::Amqp(decode_error(&e))
    }
}

pub(super) fn decode_error(e: &DecodeError) -> AmqpError {
    AmqpError::new(e.reply_code(), e.to_string())
}

impl From<AmqpError> for ConnError {
    fn from(e: AmqpError) -> Self {
        ConnError::Amqp(e)
    }
}

/// What the client said it understands (client-properties.capabilities).
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientCaps {
    pub consumer_cancel_notify: bool,
    pub authentication_failure_close: bool,
    pub connection_blocked: bool,
}

impl ClientCaps {
    fn from_properties(props: &FieldTable) -> Self {
        let Some(FieldValue::Table(caps)) = props.get("capabilities") else {
            return ClientCaps::default();
        };
        let flag = |k: &str| caps.get(k).and_then(FieldValue::as_bool).unwrap_or(false);
        ClientCaps {
            consumer_cancel_notify: flag("consumer_cancel_notify"),
            authentication_failure_close: flag("authentication_failure_close"),
            connection_blocked: flag("connection.blocked"),
        }
    }
}

pub struct Connection {
    broker: Arc<Broker>,
    id: ConnectionId,
    vhost: VhostName,
    /// The authenticated user and its permissions in `vhost`.
    authz: authz::Authz,
    /// Counted against max_connections_per_vhost while the connection lives.
    _vhost_slot: crate::broker::VhostSlot,
    /// What operators see of it (the channel count is kept here).
    info: Arc<crate::broker::ConnInfo>,
    frame_max: u32,
    channel_max: u16,
    caps: ClientCaps,
    channels: HashMap<u16, Channel>,
    consumers: HashMap<ConsumerId, ConsumerInfo>,
    sink: ConnSink,
    routing: RoutingView,
    route_cache: basic::RouteCache,
    pending: PendingBatches,
    /// No-ack deliveries written since the last flush, per (queue, consumer).
    noack_credit: Vec<deliver::NoAckCredit>,
    /// Confirms and commits waiting for durable queues' fsyncs.
    confirm_backlog: confirms::ConfirmBacklog,
    /// Bytes of direct replies sent to this connection and not yet written (see
    /// `crate::direct_reply`).
    reply_backlog: Arc<std::sync::atomic::AtomicU64>,
    out: BytesMut,
    /// Set once connection.close was sent or received: only close / close-ok matter now.
    closing: bool,
    /// The client has published: an alarm blocks it (RabbitMQ blocks publishers only).
    published: bool,
    /// connection.blocked was sent and not yet followed by connection.unblocked.
    blocked_sent: bool,
    /// The client answered our close, or sent its own: stop after the next write.
    done: bool,
    /// With `done`: close-ok answered a close we sent, so the socket goes at once (the client
    /// sent its last frame); otherwise we wait for the client to hang up after our close-ok.
    hang_up: bool,
    /// Message counts since the last wake-up, handed to `broker.metrics` before each write.
    counts: crate::metrics::LocalCounts,
}

/// A client's byte stream: plain TCP, or TLS over TCP.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send;
    type Write: AsyncWrite + Unpin + Send;
    fn split(self) -> (Self::Read, Self::Write);
}

impl ClientStream for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// An in-memory pipe (the fuzzing harness and tests).
impl ClientStream for tokio::io::DuplexStream {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// Where a connection came from and what it brought before AMQP started.
pub struct Accepted {
    pub peer: SocketAddr,
    /// Our end of the socket.
    pub local: SocketAddr,
    /// The handshake (TLS included) must reach connection.open-ok by then.
    pub deadline: tokio::time::Instant,
    /// The user name the client's TLS certificate carries, for SASL EXTERNAL.
    pub cert_user: Option<String>,
    /// What the TLS handshake negotiated; None: not TLS (amqp).
    pub tls_session: Option<crate::tls::TlsSession>,
}

/// Serve one accepted socket until it closes. Never panics on client input.
pub async fn serve<S: ClientStream>(broker: Arc<Broker>, mut stream: S, accepted: Accepted) {
    let peer = accepted.peer;
    let accepted_meta = (accepted.peer, accepted.local, accepted.tls_session);
    let mut buf = BytesMut::with_capacity(1024);
    let handshake = handshake::Handshake {
        stream: &mut stream,
        buf: &mut buf,
        broker: &broker,
        peer,
        cert_user: accepted.cert_user,
    };
    let negotiated = match tokio::time::timeout_at(accepted.deadline, handshake.run()).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return handshake_failed(&mut stream, e).await,
        Err(_) => return handshake_failed(&mut stream, ConnError::HandshakeTimeout).await,
    };
    let (sink, events) = mpsc::unbounded_channel();
    let id = ConnectionId(broker.next_id());
    let info = Arc::new(conn_info(id, accepted_meta, &negotiated));
    // Read after the handshake's permissions: a change since then is noticed at the next check.
    let access_generation = 0;
    // The listener's `connection` span (named `peer -> local`) learns who this is.
    let span = tracing::Span::current();
    span.record("user", tracing::field::display(&negotiated.user));
    span.record("vhost", tracing::field::display(&negotiated.vhost));
    tracing::info!(tls = info.tls, "connection opened");
    let mut conn = Connection {
        routing: broker.routing_view(),
        broker: broker.clone(),
        id,
        vhost: VhostName::from(negotiated.vhost),
        authz: authz::Authz::new(negotiated.access, access_generation),
        _vhost_slot: negotiated.vhost_slot,
        info: info.clone(),
        frame_max: negotiated.frame_max,
        channel_max: negotiated.channel_max,
        caps: negotiated.caps,
        channels: HashMap::new(),
        consumers: HashMap::new(),
        sink,
        route_cache: basic::RouteCache::default(),
        pending: PendingBatches::default(),
        noack_credit: Vec::new(),
        confirm_backlog: Default::default(),
        reply_backlog: Arc::default(),
        out: BytesMut::new(),
        closing: false,
        published: false,
        blocked_sent: false,
        done: false,
        hang_up: false,
        counts: Default::default(),
    };
    broker.register_connection(id, conn.sink.clone(), info);
    let result = conn.run(stream, buf, events, negotiated.heartbeat).await;
    match &result {
        Ok(()) | Err(ConnError::Eof) => tracing::info!("connection closed"),
        Err(e) => tracing::warn!(error = %e, "connection closed with error"),
    }
    conn.cleanup().await;
    broker.unregister_connection(id);
}

fn conn_info(
    id: ConnectionId,
    (peer, local, tls_session): (SocketAddr, SocketAddr, Option<crate::tls::TlsSession>),
    n: &handshake::Negotiated,
) -> crate::broker::ConnInfo {
    let connected_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    crate::broker::ConnInfo {
        id,
        name: format!("{peer} -> {local}"),
        peer,
        local,
        user: n.user.to_string(),
        vhost: n.vhost.to_string(),
        tls: tls_session.is_some(),
        connected_at,
        client_properties: n.client_properties.clone(),
        frame_max: n.frame_max,
        channel_max: n.channel_max,
        heartbeat: n.heartbeat,
        channels: Default::default(),
        mechanism: n.mechanism.clone(),
        io: Default::default(),
        tls_session,
    }
}

async fn handshake_failed<S: ClientStream>(stream: &mut S, error: ConnError) {
    tracing::warn!(%error, "connection handshake failed");
    if let ConnError::Amqp(e) = &error {
        let mut out = BytesMut::new();
        encode_method(0, &close_method(e), &mut out);
        let _ = stream.write_all(&out).await;
        // Give the client a moment to read the close before the socket goes.
        let mut scratch = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut scratch)).await;
    }
}

/// After close / close-ok: let the client close the socket first (RabbitMQ waits for that
/// too, up to a timeout), so our close never races the client's reading of its close-ok.
async fn finish_close<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    writer: W,
    mut reader: R,
) -> Result<(), ConnError> {
    let mut scratch = [0u8; 1024];
    let drain = async { while matches!(reader.read(&mut scratch).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(CLOSE_OK_WAIT, drain).await;
    drop(writer);
    Ok(())
}

fn close_method(e: &AmqpError) -> Method {
    Method::ConnectionClose(ConnectionClose {
        reply_code: e.code.code(),
        reply_text: e.reply_text(),
        class_id: e.class_id,
        method_id: e.method_id,
    })
}

/// Read buffer sizes: small while idle (an idle connection must stay cheap), larger when busy.
const READ_IDLE_BYTES: usize = 4 * 1024;
const READ_BUSY_BYTES: usize = 128 * 1024;
/// Events taken per wake-up.
const EVENT_BATCH: usize = 64;
/// How long we wait for connection.close-ok after sending connection.close.
const CLOSE_OK_WAIT: Duration = Duration::from_secs(2);

impl Connection {
    async fn run<S: ClientStream>(
        &mut self,
        stream: S,
        mut rbuf: BytesMut,
        mut events: mpsc::UnboundedReceiver<ConnEvent>,
        heartbeat_secs: u16,
    ) -> Result<(), ConnError> {
        let (mut reader, mut writer) = stream.split();
        let mut evbuf = Vec::with_capacity(EVENT_BATCH);
        let beat = Duration::from_secs(u64::from(heartbeat_secs.max(1))) / 2;
        let mut ticker = tokio::time::interval(beat);
        let mut last_read = Instant::now();
        let mut wrote = false;
        let mut last_read_len = 0;
        let mut closing_since: Option<Instant> = None;
        let mut alarms = self.broker.alarms.subscribe();
        // Any bytes that arrived with the handshake's last read.
        self.process_frames(&mut rbuf).await?;
        let mut paused = false;
        loop {
            if paused {
                // A blocked peer may not be able to send even heartbeats: do not time it out.
                last_read = Instant::now();
            }
            let want = if last_read_len > READ_IDLE_BYTES / 2 {
                READ_BUSY_BYTES
            } else {
                READ_IDLE_BYTES
            };
            if rbuf.capacity() - rbuf.len() < want / 2 {
                rbuf.reserve(want);
            }
            tokio::select! {
                biased;
                n = events.recv_many(&mut evbuf, EVENT_BATCH) => {
                    for ev in evbuf.drain(..) {
                        self.on_event(ev).await;
                    }
                    let _ = n;
                }
                _ = alarms.changed() => {}
                r = reader.read_buf(&mut rbuf), if !paused => {
                    last_read_len = r?;
                    if last_read_len == 0 {
                        return Err(ConnError::Eof);
                    }
                    self.info.io.received(last_read_len);
                    last_read = Instant::now();
                    self.process_frames(&mut rbuf).await?;
                }
                _ = tokio::time::sleep(CLOSE_OK_WAIT), if self.closing => {
                    // No close-ok in time: the check below ends the connection.
                }
                _ = ticker.tick(), if heartbeat_secs > 0 => {
                    if last_read.elapsed() > beat * 4 {
                        return Err(ConnError::HeartbeatTimeout);
                    }
                    if !wrote {
                        encode_heartbeat(&mut self.out);
                    }
                    wrote = false;
                }
            }
            paused = self.follow_alarms(*alarms.borrow_and_update());
            // Before the write: what a client has seen is counted by the next scrape.
            self.broker.metrics.absorb(&mut self.counts);
            if !self.out.is_empty() {
                writer.write_all(&self.out).await?;
                self.info.io.sent(self.out.len());
                self.out.clear();
                wrote = true;
                self.after_flush().await;
            }
            if self.done && self.hang_up {
                return Ok(());
            }
            if self.done {
                return finish_close(writer, reader).await;
            }
            if self.closing
                && closing_since.get_or_insert_with(Instant::now).elapsed() > CLOSE_OK_WAIT
            {
                return Err(ConnError::Closed);
            }
        }
    }

    /// Whether reading must pause for an alarm: only a connection that has published is
    /// blocked, as in RabbitMQ. Tells clients that take it (`connection.blocked` capability)
    /// when that starts and ends.
    fn follow_alarms(&mut self, alarms: crate::alarms::AlarmState) -> bool {
        let block = alarms.any() && self.published;
        if block != self.blocked_sent {
            self.blocked_sent = block;
            tracing::info!(blocked = block, reason = alarms.reason(), "publisher flow");
            if self.caps.connection_blocked {
                let method = if block {
                    Method::ConnectionBlocked(tern_amqp::ConnectionBlocked {
                        reason: tern_amqp::ShortStr::from_static(alarms.reason()),
                    })
                } else {
                    Method::ConnectionUnblocked(Default::default())
                };
                self.send_method(0, &method);
            }
        }
        block
    }

    /// Decode and handle every whole frame in the buffer, then send the batched publishes.
    async fn process_frames(&mut self, rbuf: &mut BytesMut) -> Result<(), ConnError> {
        loop {
            let frame = match decode_frame(rbuf, self.frame_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.close_connection(decode_error(&e));
                    // The framing is lost: drop what is buffered, so that the client's
                    // close-ok, when it comes, is read as the next frame.
                    rbuf.clear();
                    break;
                }
            };
            let channel = frame.channel;
            if let Err(e) = self.handle_frame(frame).await {
                self.fail(channel, e);
            }
            if self.done {
                break;
            }
        }
        self.flush_pending().await;
        Ok(())
    }

    async fn handle_frame(&mut self, frame: Frame) -> Result<(), AmqpError> {
        if self.closing {
            return self.handle_while_closing(frame);
        }
        match frame.payload {
            FramePayload::Heartbeat => Ok(()),
            FramePayload::Method(m) if frame.channel == 0 => self.handle_connection_method(m),
            FramePayload::Method(m) => self.handle_channel_method(frame.channel, m).await,
            FramePayload::Header(h) => self.handle_content_header(frame.channel, h).await,
            FramePayload::Body(b) => self.handle_content_body(frame.channel, b).await,
        }
    }

    /// After we sent connection.close, only close-ok (or the client's own close) matters.
    fn handle_while_closing(&mut self, frame: Frame) -> Result<(), AmqpError> {
        match frame.payload {
            FramePayload::Method(Method::ConnectionCloseOk(_)) => {
                self.done = true;
                self.hang_up = true;
            }
            FramePayload::Method(Method::ConnectionClose(_)) => {
                self.send_method(0, &Method::ConnectionCloseOk(Default::default()));
                self.done = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_connection_method(&mut self, method: Method) -> Result<(), AmqpError> {
        match method {
            Method::ConnectionClose(_) => {
                self.send_method(0, &Method::ConnectionCloseOk(Default::default()));
                self.done = true;
                Ok(())
            }
            Method::ConnectionCloseOk(_) => {
                self.done = true;
                self.hang_up = true;
                Ok(())
            }
            Method::ConnectionUpdateSecret(_) => {
                self.send_method(0, &Method::ConnectionUpdateSecretOk(Default::default()));
                Ok(())
            }
            Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_) => Ok(()),
            other => {
                let text = format!("unexpected method {} on channel 0", other.name());
                Err(AmqpError::new(ReplyCode::CommandInvalid, text)
                    .on(other.class_id(), other.method_id()))
            }
        }
    }

    /// Publish the channel count for operators, and count the channels opened and closed
    /// since the last call (the churn `/api/overview` and Prometheus show).
    fn count_channels(&mut self) {
        let n = self.channels.len();
        let was = self
            .info
            .channels
            .swap(n, std::sync::atomic::Ordering::Relaxed);
        match n.cmp(&was) {
            std::cmp::Ordering::Greater => {
                self.counts.add(Counter::ChannelsOpened, (n - was) as u64)
            }
            std::cmp::Ordering::Less => self.counts.add(Counter::ChannelsClosed, (was - n) as u64),
            std::cmp::Ordering::Equal => {}
        }
    }

    fn fail(&mut self, channel: u16, error: AmqpError) {
        if error.code.is_channel_error() && channel != 0 && self.channels.contains_key(&channel) {
            self.close_channel(channel, error);
        } else {
            self.close_connection(error);
        }
    }

    fn close_channel(&mut self, ch: u16, error: AmqpError) {
        tracing::info!(channel = ch, error = %error, "channel error");
        let close = Method::ChannelClose(ChannelClose {
            reply_code: error.code.code(),
            reply_text: error.reply_text(),
            class_id: error.class_id,
            method_id: error.method_id,
        });
        self.send_method(ch, &close);
        self.channel_closing(ch);
    }

    fn close_connection(&mut self, error: AmqpError) {
        if self.closing {
            return;
        }
        tracing::warn!(error = %error, "closing connection");
        self.send_method(0, &close_method(&error));
        self.closing = true;
    }

    pub(crate) fn send_method(&mut self, channel: u16, method: &Method) {
        encode_method(channel, method, &mut self.out);
    }

    async fn on_event(&mut self, event: ConnEvent) {
        match event {
            ConnEvent::Deliver { queue, deliveries } => self.deliver(queue, deliveries).await,
            ConnEvent::ConsumerCancelled { consumer } => self.consumer_cancelled(consumer),
            ConnEvent::DirectReply {
                channel,
                suffix,
                message,
            } => self.on_direct_reply(channel, &suffix, &message),
            ConnEvent::Close { code, text } => self.close_connection(AmqpError::new(code, text)),
            ConnEvent::Confirmed { token, ok } => self.on_confirmed(token, ok),
            ConnEvent::Describe { reply } => {
                let _ = reply.send(self.describe());
            }
        }
    }
}
