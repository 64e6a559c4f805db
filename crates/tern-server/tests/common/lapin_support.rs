//! lapin helpers: connecting, catching the reply codes of channel and connection closes,
//! consuming with timeouts.

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::protocol::AMQPErrorKind;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::mpsc;

use super::{within, TestBroker, QUIET};

pub async fn connect(broker: &TestBroker) -> Connection {
    within(
        "lapin connect",
        Connection::connect(&broker.uri, ConnectionProperties::default()),
    )
    .await
    .expect("lapin connect")
}

/// A connection plus the connection-level errors it reports (a connection.close from the
/// server, with its reply code).
pub async fn connect_watched(broker: &TestBroker) -> (Connection, Errors) {
    let conn = connect(broker).await;
    let errors = Errors::watch(&conn);
    (conn, errors)
}

pub async fn channel(conn: &Connection) -> Channel {
    within("lapin create_channel", conn.create_channel())
        .await
        .expect("create channel")
}

/// A channel in publisher-confirm mode: [`publish`] then returns once the message has landed
/// in its queues (RabbitMQ does not otherwise promise that a publish is counted by a later
/// queue.declare, even on the same channel).
pub async fn confirmed_channel(conn: &Connection) -> Channel {
    let ch = channel(conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    ch
}

/// A channel plus the channel.close the server may send it (lapin hands that to the channel's
/// own error handler, whether or not a call was waiting).
pub async fn channel_watched(conn: &Connection) -> (Channel, Errors) {
    let ch = channel(conn).await;
    let (tx, rx) = mpsc::unbounded_channel();
    ch.on_error(move |e| {
        let _ = tx.send(e);
    });
    (ch, Errors(rx))
}

/// A reply code and text the server closed something with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    /// true for a connection-level (hard) error.
    pub hard: bool,
    pub text: String,
}

pub struct Errors(mpsc::UnboundedReceiver<lapin::Error>);

impl Errors {
    pub fn watch(conn: &Connection) -> Errors {
        let (tx, rx) = mpsc::unbounded_channel();
        conn.on_error(move |e| {
            let _ = tx.send(e);
        });
        Errors(rx)
    }

    /// The next close the server sent (channel or connection).
    pub async fn next(&mut self) -> Closed {
        loop {
            let e = within("a close from the server", self.0.recv())
                .await
                .expect("error handler dropped");
            if let Some(c) = closed_of(&e) {
                return c;
            }
        }
    }

    /// The next connection-level close.
    pub async fn next_hard(&mut self) -> Closed {
        loop {
            let c = self.next().await;
            if c.hard {
                return c;
            }
        }
    }
}

/// The reply code of a protocol error.
pub fn closed_of(e: &lapin::Error) -> Option<Closed> {
    match e {
        lapin::Error::ProtocolError(err) => Some(Closed {
            code: err.get_id(),
            hard: matches!(err.kind(), AMQPErrorKind::Hard(_)),
            text: err.get_message().to_string(),
        }),
        _ => None,
    }
}

/// The reply code a failed call carries; panics if it succeeded or failed otherwise.
pub fn code_of<T: std::fmt::Debug>(result: lapin::Result<T>) -> u16 {
    match result {
        Ok(v) => panic!("expected the server to refuse, but it answered {v:?}"),
        Err(e) => {
            closed_of(&e)
                .unwrap_or_else(|| panic!("expected a protocol error, got {e:?}"))
                .code
        }
    }
}

pub async fn declare_queue(ch: &Channel, name: &str) -> lapin::Queue {
    within(
        "queue.declare",
        ch.queue_declare(name, QueueDeclareOptions::default(), FieldTable::default()),
    )
    .await
    .expect("queue.declare")
}

/// An exclusive server-named queue.
pub async fn temp_queue(ch: &Channel) -> String {
    let opts = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let q = within(
        "queue.declare",
        ch.queue_declare("", opts, FieldTable::default()),
    )
    .await
    .expect("queue.declare");
    q.name().to_string()
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
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions::default(),
            body,
            props,
        ),
    )
    .await
    .expect("basic.publish");
    within("publisher confirm", confirm)
        .await
        .expect("publisher confirm");
}

pub async fn consume(ch: &Channel, queue: &str) -> Consumer {
    consume_with(
        ch,
        queue,
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
}

pub async fn consume_with(
    ch: &Channel,
    queue: &str,
    opts: BasicConsumeOptions,
    args: FieldTable,
) -> Consumer {
    within("basic.consume", ch.basic_consume(queue, "", opts, args))
        .await
        .expect("basic.consume")
}

pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match within("a delivery", consumer.next()).await {
        Some(Ok(d)) => d,
        Some(Err(e)) => panic!("consumer failed: {e:?}"),
        None => panic!("consumer ended before the expected delivery"),
    }
}

/// Take `n` deliveries, acking each.
pub async fn take_acked(consumer: &mut Consumer, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let d = next_delivery(consumer).await;
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
        out.push(d);
    }
    out
}

/// Assert that nothing is delivered for a while.
pub async fn assert_no_delivery(consumer: &mut Consumer) {
    if let Ok(Some(item)) = tokio::time::timeout(QUIET, consumer.next()).await {
        panic!(
            "expected no delivery, got {:?}",
            item.map(|d| String::from_utf8_lossy(&d.data).into_owned())
        );
    }
}

/// Number of ready messages, by a passive declare.
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = within(
        "passive queue.declare",
        ch.queue_declare(queue, opts, FieldTable::default()),
    )
    .await
    .expect("passive queue.declare");
    q.message_count()
}

pub fn body_text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

/// Every message in `queue`, by basic.get (no-ack) until get-empty: what routing put there.
pub async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let opts = lapin::options::BasicGetOptions { no_ack: true };
        match within("basic.get", ch.basic_get(queue, opts))
            .await
            .expect("basic.get")
        {
            Some(m) => out.push(String::from_utf8_lossy(&m.delivery.data).into_owned()),
            None => return out,
        }
    }
}

/// Bind `queue` to `exchange` with `key`.
pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    bind_with(ch, queue, exchange, key, FieldTable::default()).await;
}

pub async fn bind_with(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    let opts = lapin::options::QueueBindOptions::default();
    within(
        "queue.bind",
        ch.queue_bind(queue, exchange, key, opts, args),
    )
    .await
    .expect("queue.bind");
}

pub async fn declare_exchange(ch: &Channel, name: &str, kind: lapin::ExchangeKind) {
    declare_exchange_with(
        ch,
        name,
        kind,
        lapin::options::ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
}

pub async fn declare_exchange_with(
    ch: &Channel,
    name: &str,
    kind: lapin::ExchangeKind,
    opts: lapin::options::ExchangeDeclareOptions,
    args: FieldTable,
) {
    within(
        "exchange.declare",
        ch.exchange_declare(name, kind, opts, args),
    )
    .await
    .expect("exchange.declare");
}

/// Build a field table from (key, value) pairs.
pub fn table(entries: Vec<(&str, lapin::types::AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

pub fn long_str(s: &str) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongString(s.into())
}
