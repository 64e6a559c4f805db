//! Direct reply-to (`amq.rabbitmq.reply-to`), RabbitMQ's RPC replies without a reply queue;
//! driven by lapin, with a raw socket where a requester must stop reading.

mod common;

use common::lapin_support::{self as lp, body_text, code_of};
use common::raw::{self, Args, RawClient};
use common::{unique, within, TestBroker, QUIET};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel};

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    }
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

fn reply_to_of(request: &lapin::message::Delivery) -> String {
    let reply_to = request.properties.reply_to().clone();
    reply_to.expect("the request has a reply-to").to_string()
}

/// Publish a request with `reply-to: amq.rabbitmq.reply-to` to `queue`.
async fn request(ch: &Channel, queue: &str, body: &[u8]) {
    let props = BasicProperties::default().with_reply_to(ShortString::from(REPLY_TO));
    lp::publish_with(ch, "", queue, body, props).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_the_rewritten_address_reaches_the_requesting_channel() {
    let broker = TestBroker::start().await;
    let requester = lp::connect(&broker).await;
    let rch = lp::confirmed_channel(&requester).await;
    let mut replies = lp::consume_with(&rch, REPLY_TO, no_ack(), FieldTable::default()).await;
    let responder = lp::connect(&broker).await;
    let sch = lp::confirmed_channel(&responder).await;
    let rpc = unique("rpc");
    lp::declare_queue(&sch, &rpc).await;
    let mut requests = lp::consume(&sch, &rpc).await;

    request(&rch, &rpc, b"ping").await;
    let req = lp::next_delivery(&mut requests).await;
    let address = reply_to_of(&req);
    assert!(
        address.starts_with("amq.rabbitmq.reply-to.") && address.len() > REPLY_TO.len() + 1,
        "{address}"
    );
    // While the requester is there, its address declares (passive or not) with one consumer.
    let q = within(
        "declare",
        sch.queue_declare(&address, passive(), FieldTable::default()),
    )
    .await
    .expect("the reply address exists");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 1));

    let props = BasicProperties::default().with_correlation_id(ShortString::from("c1"));
    lp::publish_with(&sch, "", &address, b"pong", props).await;
    let reply = lp::next_delivery(&mut replies).await;
    assert_eq!(body_text(&reply), "pong");
    assert_eq!(reply.routing_key.as_str(), address);
    assert_eq!(reply.exchange.as_str(), "");
    assert_eq!(
        reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("c1")
    );
    assert!(!reply.redelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pseudo_queue_needs_a_no_ack_consumer_one_per_channel() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let acking = ch
        .basic_consume(
            REPLY_TO,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(acking), 406, "reply consumer cannot acknowledge");
    let ch = lp::channel(&conn).await;
    // Held: lapin cancels a consumer it drops.
    let _replies = lp::consume_with(&ch, REPLY_TO, no_ack(), FieldTable::default()).await;
    let second = ch
        .basic_consume(REPLY_TO, "", no_ack(), FieldTable::default())
        .await;
    assert_eq!(code_of(second), 406, "reply consumer already set");
    // The pseudo-queue itself always declares, even passively.
    let ch = lp::channel(&conn).await;
    let q = within(
        "declare",
        ch.queue_declare(REPLY_TO, passive(), FieldTable::default()),
    )
    .await
    .expect("amq.rabbitmq.reply-to declares");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_the_pseudo_queue_without_a_reply_consumer_fails_with_406() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let (ch, mut errors) = lp::channel_watched(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let props = BasicProperties::default().with_reply_to(ShortString::from(REPLY_TO));
    ch.basic_publish("", &q, BasicPublishOptions::default(), b"req", props)
        .await
        .expect("publish is asynchronous");
    let closed = errors.next().await;
    assert_eq!(closed.code, 406, "{closed:?}");
    assert!(
        closed.text.contains("fast reply consumer does not exist"),
        "{closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_requester_is_gone_its_address_is_not_found_and_replies_vanish() {
    let broker = TestBroker::start().await;
    let requester = lp::connect(&broker).await;
    let rch = lp::confirmed_channel(&requester).await;
    let _replies = lp::consume_with(&rch, REPLY_TO, no_ack(), FieldTable::default()).await;
    let rpc = lp::temp_queue(&rch).await;
    request(&rch, &rpc, b"ping").await;
    let req = within("get", rch.basic_get(&rpc, Default::default()))
        .await
        .expect("get")
        .expect("the request");
    let address = reply_to_of(&req);
    within("channel.close", rch.close(200, "bye"))
        .await
        .expect("close");

    let responder = lp::connect(&broker).await;
    let sch = lp::confirmed_channel(&responder).await;
    // A reply address is not a queue (RabbitMQ 3.x): a mandatory reply comes back with
    // basic.return, and is confirmed.
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = within(
        "publish",
        sch.basic_publish("", &address, mandatory, b"late", BasicProperties::default()),
    )
    .await
    .expect("publish");
    let confirmation = within("confirm", confirm).await.expect("confirm");
    assert!(confirmation.is_ack());
    let returned = confirmation.take_message().expect("basic.return");
    assert_eq!(returned.reply_code, 312);
    let gone = sch
        .queue_declare(&address, passive(), FieldTable::default())
        .await;
    assert_eq!(code_of(gone), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_beyond_the_backlog_of_a_requester_that_stopped_reading_are_dropped() {
    let Some(broker) = TestBroker::start_with(|c| c.direct_reply_backlog_bytes = 256 * 1024).await
    else {
        return;
    };
    // The requester: a raw socket that consumes from the pseudo-queue and then reads nothing.
    let (mut requester, _) = RawClient::open(broker.addr, 0).await;
    requester.open_channel(1).await;
    let consume = Args::new()
        .u16(0)
        .shortstr(REPLY_TO)
        .shortstr("")
        .u8(0b10)
        .table(&[]);
    requester
        .send(&raw::method_frame(1, 60, 20, consume))
        .await
        .unwrap();
    requester.expect_method(60, 21).await;
    let rpc = unique("rpc");
    let conn = lp::connect(&broker).await;
    let sch = lp::confirmed_channel(&conn).await;
    lp::declare_queue(&sch, &rpc).await;
    let mut requests = lp::consume(&sch, &rpc).await;
    // reply-to is property bit 9 of the flags; the rest of the header is empty.
    let mut props = (1u16 << 9).to_be_bytes().to_vec();
    props.push(REPLY_TO.len() as u8);
    props.extend(REPLY_TO.as_bytes());
    let mut frames = raw::method_frame(
        1,
        60,
        40,
        Args::new().u16(0).shortstr("").shortstr(&rpc).u8(0),
    );
    let mut header = Args::new().u16(60).u16(0).u64(0).0;
    header.extend(&props);
    frames.extend(raw::frame(raw::FRAME_HEADER, 1, &header));
    requester.send(&frames).await.unwrap();
    let req = lp::next_delivery(&mut requests).await;
    let address = reply_to_of(&req);

    const REPLIES: usize = 1000;
    let body = common::patterned_body(64 * 1024);
    for _ in 0..REPLIES {
        lp::publish(&sch, "", &address, &body).await;
    }
    // Now read whatever the broker kept for the requester: far fewer than were sent.
    let mut delivered = 0;
    while let Ok(Ok(Some(frame))) = tokio::time::timeout(QUIET, requester.read_frame()).await {
        delivered += usize::from(frame.method() == Some((60, 60)));
    }
    assert!(delivered > 0, "replies arrive");
    assert!(
        delivered < REPLIES / 2,
        "{delivered} of {REPLIES} were kept"
    );
}
