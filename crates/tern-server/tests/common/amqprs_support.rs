//! amqprs helpers. amqprs reports what the server sends on its own (channel.close,
//! connection.close, basic.return, basic.cancel, publisher acks) only through callbacks; these
//! callbacks forward it to channels that tests await.

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, Channel,
    ConfirmSelectArguments, ConsumerMessage, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{
    Ack, BasicProperties, Cancel, Close, CloseChannel, Deliver, FieldTable, FieldValue, Nack,
    Return,
};
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{within, TestBroker, QUIET};

/// A connection.close from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnClosed {
    pub code: u16,
    pub text: String,
}

struct ConnEvents(mpsc::UnboundedSender<ConnClosed>);

#[async_trait]
impl ConnectionCallback for ConnEvents {
    async fn close(&mut self, _: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        let _ = self.0.send(ConnClosed {
            code: close.reply_code(),
            text: close.reply_text().clone(),
        });
        Ok(())
    }
    async fn blocked(&mut self, _: &Connection, _: String) {}
    async fn unblocked(&mut self, _: &Connection) {}
    async fn secret_updated(&mut self, _: &Connection) {}
}

pub fn open_args(broker: &TestBroker) -> OpenConnectionArguments {
    OpenConnectionArguments::new(&broker.host(), broker.port(), "guest", "guest")
}

pub async fn connect(broker: &TestBroker) -> (Connection, mpsc::UnboundedReceiver<ConnClosed>) {
    connect_with(&open_args(broker)).await
}

pub async fn connect_with(
    args: &OpenConnectionArguments,
) -> (Connection, mpsc::UnboundedReceiver<ConnClosed>) {
    let conn = within("amqprs connect", Connection::open(args))
        .await
        .expect("amqprs connect");
    let (tx, rx) = mpsc::unbounded_channel();
    conn.register_callback(ConnEvents(tx))
        .await
        .expect("register connection callback");
    (conn, rx)
}

pub async fn next_conn_close(rx: &mut mpsc::UnboundedReceiver<ConnClosed>) -> ConnClosed {
    within("connection.close from the server", rx.recv())
        .await
        .expect("connection callback dropped")
}

/// What the server told a channel on its own.
#[derive(Debug)]
pub enum ChanEvent {
    Closed {
        code: u16,
        text: String,
    },
    Cancelled {
        consumer_tag: String,
    },
    Ack {
        tag: u64,
        multiple: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
    },
    Returned {
        code: u16,
        text: String,
        exchange: String,
        routing_key: String,
        body: Vec<u8>,
    },
}

struct ChanEvents(mpsc::UnboundedSender<ChanEvent>);

#[async_trait]
impl ChannelCallback for ChanEvents {
    async fn close(
        &mut self,
        _: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        let _ = self.0.send(ChanEvent::Closed {
            code: close.reply_code(),
            text: close.reply_text().clone(),
        });
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, cancel: Cancel) -> Result<(), amqprs::error::Error> {
        let _ = self.0.send(ChanEvent::Cancelled {
            consumer_tag: cancel.consumer_tag().clone(),
        });
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let _ = self.0.send(ChanEvent::Ack {
            tag: ack.delivery_tag(),
            multiple: ack.mutiple(),
        });
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        let _ = self.0.send(ChanEvent::Nack {
            tag: nack.delivery_tag(),
            multiple: nack.multiple(),
        });
    }
    async fn publish_return(
        &mut self,
        _: &Channel,
        ret: Return,
        _: BasicProperties,
        content: Vec<u8>,
    ) {
        let _ = self.0.send(ChanEvent::Returned {
            code: ret.reply_code(),
            text: ret.reply_text().clone(),
            exchange: ret.exchange().clone(),
            routing_key: ret.routing_key().clone(),
            body: content,
        });
    }
}

pub struct ChannelEvents {
    pub rx: mpsc::UnboundedReceiver<ChanEvent>,
    /// Publisher confirms: every sequence number up to this one is acked.
    pub acked_through: u64,
    acked_singly: std::collections::BTreeSet<u64>,
}

impl ChannelEvents {
    pub async fn next(&mut self) -> ChanEvent {
        within("a channel event", self.rx.recv())
            .await
            .expect("channel callback dropped")
    }

    /// The channel.close the server sent, skipping other events.
    pub async fn next_close(&mut self) -> (u16, String) {
        loop {
            if let ChanEvent::Closed { code, text } = self.next().await {
                return (code, text);
            }
        }
    }

    /// Wait until publisher confirms cover sequence numbers 1..=seq; panics on a nack.
    pub async fn await_acks_through(&mut self, seq: u64) {
        while self.acked_through < seq {
            match self.next().await {
                ChanEvent::Ack {
                    tag,
                    multiple: true,
                } => self.acked_through = self.acked_through.max(tag),
                ChanEvent::Ack {
                    tag,
                    multiple: false,
                } => {
                    self.acked_singly.insert(tag);
                }
                ChanEvent::Nack { tag, .. } => panic!("publish {tag} was nacked"),
                ChanEvent::Closed { code, text } => panic!("channel closed {code} {text}"),
                _ => {}
            }
            while self.acked_singly.remove(&(self.acked_through + 1)) {
                self.acked_through += 1;
            }
        }
    }
}

pub async fn open_channel(conn: &Connection) -> (Channel, ChannelEvents) {
    let ch = within("amqprs open_channel", conn.open_channel(None))
        .await
        .expect("open channel");
    let (tx, rx) = mpsc::unbounded_channel();
    ch.register_callback(ChanEvents(tx))
        .await
        .expect("register channel callback");
    (
        ch,
        ChannelEvents {
            rx,
            acked_through: 0,
            acked_singly: Default::default(),
        },
    )
}

/// A channel in publisher-confirm mode: `events.await_acks_through(n)` tells when the first n
/// publishes have landed in their queues (RabbitMQ does not otherwise promise that a publish
/// is counted by a later queue.declare, even on the same channel).
pub async fn open_confirmed_channel(conn: &Connection) -> (Channel, ChannelEvents) {
    let (ch, events) = open_channel(conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectArguments::new(false)),
    )
    .await
    .expect("confirm.select");
    (ch, events)
}

/// Declare a queue; returns (name, message_count, consumer_count).
pub async fn declare(ch: &Channel, args: QueueDeclareArguments) -> (String, u32, u32) {
    within("queue.declare", ch.queue_declare(args))
        .await
        .expect("queue.declare")
        .expect("declare-ok")
}

pub async fn declare_queue(ch: &Channel, name: &str) -> String {
    declare(ch, QueueDeclareArguments::new(name)).await.0
}

pub async fn publish(ch: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    publish_with(ch, exchange, routing_key, body, BasicProperties::default()).await;
}

pub async fn publish_with(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let args = BasicPublishArguments::new(exchange, routing_key);
    within(
        "basic.publish",
        ch.basic_publish(props, body.to_vec(), args),
    )
    .await
    .expect("basic.publish");
}

pub type Rx = mpsc::UnboundedReceiver<ConsumerMessage>;

/// A manual-ack consumer with a server-generated tag.
pub async fn consume(ch: &Channel, queue: &str) -> (String, Rx) {
    consume_with(ch, BasicConsumeArguments::new(queue, "")).await
}

pub async fn consume_with(ch: &Channel, args: BasicConsumeArguments) -> (String, Rx) {
    within("basic.consume", ch.basic_consume_rx(args))
        .await
        .expect("basic.consume")
}

/// A delivery as a test looks at it.
pub struct Msg {
    pub deliver: Deliver,
    pub props: BasicProperties,
    pub body: Vec<u8>,
}

impl Msg {
    pub fn tag(&self) -> u64 {
        self.deliver.delivery_tag()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn next_msg(rx: &mut Rx) -> Msg {
    let mut m = within("a delivery", rx.recv())
        .await
        .expect("consumer ended before the expected delivery");
    Msg {
        deliver: m.deliver.take().expect("deliver"),
        props: m.basic_properties.take().expect("properties"),
        body: m.content.take().expect("content"),
    }
}

pub async fn ack(ch: &Channel, tag: u64) {
    within(
        "basic.ack",
        ch.basic_ack(BasicAckArguments::new(tag, false)),
    )
    .await
    .expect("basic.ack");
}

pub async fn assert_no_msg(rx: &mut Rx) {
    if let Ok(Some(mut m)) = tokio::time::timeout(QUIET, rx.recv()).await {
        let body = m.content.take().unwrap_or_default();
        panic!(
            "expected no delivery, got {:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// Ready messages in `queue`, by a passive declare.
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    declare(ch, QueueDeclareArguments::new(queue).passive(true).finish())
        .await
        .1
}

/// Every message in `queue`: as many as a passive declare counts, taken by a no-ack consumer
/// that is then cancelled. Not by basic.get: amqprs 2.1 registers a get's responder with its
/// dispatcher task through a second channel, and when the get-ok is read first (a fast broker
/// on a loaded machine) the dispatcher panics ("get responder must be registered").
pub async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let n = message_count(ch, queue).await;
    if n == 0 {
        return Vec::new();
    }
    let args = BasicConsumeArguments::new(queue, "")
        .manual_ack(false)
        .finish();
    let (tag, mut rx) = consume_with(ch, args).await;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next_msg(&mut rx).await.text());
    }
    within(
        "basic.cancel",
        ch.basic_cancel(amqprs::channel::BasicCancelArguments::new(&tag)),
    )
    .await
    .expect("basic.cancel");
    out
}

pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    bind_with(ch, queue, exchange, key, FieldTable::new()).await;
}

pub async fn bind_with(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    let args = amqprs::channel::QueueBindArguments::new(queue, exchange, key)
        .arguments(args)
        .finish();
    within("queue.bind", ch.queue_bind(args))
        .await
        .expect("queue.bind");
}

pub async fn declare_exchange(ch: &Channel, name: &str, kind: &str) {
    let args = amqprs::channel::ExchangeDeclareArguments::new(name, kind);
    within("exchange.declare", ch.exchange_declare(args))
        .await
        .expect("exchange.declare");
}

/// An exclusive server-named queue.
pub async fn temp_queue(ch: &Channel) -> String {
    declare(ch, QueueDeclareArguments::exclusive_server_named())
        .await
        .0
}

/// Build a field table from (key, value) pairs.
pub fn table(entries: Vec<(&str, FieldValue)>) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, v) in entries {
        t.insert(k.try_into().expect("short string key"), v);
    }
    t
}

/// A confirm-mode channel that waits for each publish's ack, so that what a test reads next
/// sees it.
pub struct Publisher {
    pub ch: Channel,
    pub events: ChannelEvents,
    seq: u64,
}

impl Publisher {
    pub async fn open(conn: &Connection) -> Publisher {
        let (ch, events) = open_confirmed_channel(conn).await;
        Publisher { ch, events, seq: 0 }
    }

    pub async fn publish(&mut self, exchange: &str, routing_key: &str, body: &[u8]) {
        self.publish_with(exchange, routing_key, body, BasicProperties::default())
            .await;
    }

    pub async fn publish_with(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) {
        publish_with(&self.ch, exchange, routing_key, body, props).await;
        self.seq += 1;
        self.events.await_acks_through(self.seq).await;
    }
}
