//! Isolation and backpressure: a misbehaving or slow client never hurts another, and a fast
//! publisher is slowed rather than losing or reordering messages.

mod common;

use common::lapin_support::{self as lp, body_text};
use common::raw::{self, Args, RawClient};
use common::{patterned_body, within, TestBroker};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sending_garbage_do_not_disturb_a_working_client() {
    let broker = TestBroker::start().await;
    let (conn, mut errors) = lp::connect_watched(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let mut consumer = lp::consume(&ch, &q).await;
    lp::publish(&ch, "", &q, b"before").await;
    assert_eq!(
        body_text(&lp::take_acked(&mut consumer, 1).await[0]),
        "before"
    );

    // One client that never speaks AMQP, one that breaks the framing after logging in, one
    // that disappears mid-frame.
    let mut not_amqp = RawClient::connect(broker.addr).await;
    not_amqp
        .send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (mut broken, _) = RawClient::open(broker.addr, 0).await;
    broken.send(&[0xFF; 64]).await.unwrap();
    let (mut vanishing, _) = RawClient::open(broker.addr, 0).await;
    vanishing.open_channel(1).await;
    let partial = raw::method_frame(
        1,
        60,
        40,
        Args::new().u16(0).shortstr("").shortstr(&q).u8(0),
    );
    vanishing.send(&partial[..partial.len() / 2]).await.unwrap();
    drop(vanishing);
    not_amqp.await_close_or_eof().await;
    broken.await_close_or_eof().await;

    for i in 0..100 {
        lp::publish(&ch, "", &q, format!("after {i}").as_bytes()).await;
    }
    let got = lp::take_acked(&mut consumer, 100).await;
    assert_eq!(body_text(&got[99]), "after 99");
    assert!(
        tokio::time::timeout(common::QUIET, errors.next())
            .await
            .is_err(),
        "the good client saw an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_error_on_one_connection_leaves_the_others_working() {
    let broker = TestBroker::start().await;
    let (bad, mut bad_errors) = lp::connect_watched(&broker).await;
    let (good, mut good_errors) = lp::connect_watched(&broker).await;
    let good_ch = lp::channel(&good).await;
    let q = lp::temp_queue(&good_ch).await;
    let mut consumer = lp::consume(&good_ch, &q).await;

    let bad_ch = lp::channel(&bad).await;
    let immediate = BasicPublishOptions {
        immediate: true,
        ..Default::default()
    };
    let _ = bad_ch
        .basic_publish("", &q, immediate, b"x", BasicProperties::default())
        .await;
    assert_eq!(bad_errors.next_hard().await.code, 540);

    lp::publish(&good_ch, "", &q, b"unaffected").await;
    assert_eq!(
        body_text(&lp::next_delivery(&mut consumer).await),
        "unaffected"
    );
    assert!(
        tokio::time::timeout(common::QUIET, good_errors.next())
            .await
            .is_err(),
        "the good client saw an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_with_a_full_prefetch_does_not_stall_another_queue() {
    let broker = TestBroker::start().await;
    let slow_conn = lp::connect(&broker).await;
    let fast_conn = lp::connect(&broker).await;
    let publisher = lp::channel(&lp::connect(&broker).await).await;

    let slow_ch = lp::channel(&slow_conn).await;
    slow_ch
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let slow_q = lp::temp_queue(&slow_ch).await;
    let mut slow = lp::consume(&slow_ch, &slow_q).await;

    let fast_ch = lp::channel(&fast_conn).await;
    let fast_q = lp::temp_queue(&fast_ch).await;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut fast = lp::consume_with(&fast_ch, &fast_q, no_ack, FieldTable::default()).await;

    for i in 0..500 {
        lp::publish(&publisher, "", &slow_q, format!("slow {i}").as_bytes()).await;
    }
    // The slow consumer takes one message and never acks it.
    let _held = lp::next_delivery(&mut slow).await;
    for i in 0..500 {
        lp::publish(&publisher, "", &fast_q, format!("fast {i}").as_bytes()).await;
    }
    for i in 0..500 {
        assert_eq!(
            body_text(&lp::next_delivery(&mut fast).await),
            format!("fast {i}")
        );
    }
    lp::assert_no_delivery(&mut slow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_its_socket_does_not_stall_the_queues_other_consumers() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = common::unique("shared");
    let opts = lapin::options::QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    ch.queue_declare(&q, opts, FieldTable::default())
        .await
        .unwrap();

    // A raw no-ack consumer that never reads what it is sent.
    let (mut stuck, _) = RawClient::open(broker.addr, 0).await;
    stuck.open_channel(1).await;
    let consume = Args::new()
        .u16(0)
        .shortstr(&q)
        .shortstr("stuck")
        .u8(0b10)
        .table(&[]);
    stuck
        .send(&raw::method_frame(1, 60, 20, consume))
        .await
        .unwrap();
    stuck.expect_method(60, 21).await;

    let reader = lp::channel(&conn).await;
    reader
        .basic_qos(50, BasicQosOptions::default())
        .await
        .unwrap();
    let mut live = lp::consume(&reader, &q).await;

    // 40 MB: far more than the stuck client's socket buffers and any in-flight allowance, so
    // the stuck consumer is saturated long before the queue is drained.
    let total = 10_000;
    let publisher = lp::confirmed_channel(&lp::connect(&broker).await).await;
    let target = q.clone();
    let publishing = tokio::spawn(async move {
        let body = patterned_body(4096);
        let mut confirms = Vec::with_capacity(total);
        for _ in 0..total {
            confirms.push(
                publisher
                    .basic_publish("", &target, Default::default(), &body, Default::default())
                    .await
                    .unwrap(),
            );
        }
        for c in confirms {
            c.await.expect("confirm");
        }
        publisher
    });
    // The live consumer keeps taking messages until none is left for it.
    let mut received = 0;
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(std::time::Duration::from_secs(1), live.next()).await
    {
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        received += 1;
    }
    let publisher = within("publishing", publishing)
        .await
        .expect("publisher task");
    let ready = lp::message_count(&publisher, &q).await;
    assert_eq!(
        ready, 0,
        "{ready} messages left undelivered; the live consumer got {received}"
    );
    assert!(
        received >= total / 4,
        "the live consumer got only {received} of {total}"
    );
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_publisher_gets_everything_through_a_slow_consumer_in_order() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let consume_ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&consume_ch).await;
    consume_ch
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = lp::consume(&consume_ch, &q).await;

    let publisher = lp::channel(&lp::connect(&broker).await).await;
    let total = 3000;
    let target = q.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..total {
            let body = format!("{i}");
            publisher
                .basic_publish(
                    "",
                    &target,
                    Default::default(),
                    body.as_bytes(),
                    Default::default(),
                )
                .await
                .unwrap();
        }
        publisher
    });
    // One message at a time, acked one by one: far slower than the publisher.
    for i in 0..total {
        let d = lp::next_delivery(&mut consumer).await;
        assert_eq!(body_text(&d), i.to_string(), "out of order");
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    within("publisher", publishing).await.unwrap();
    lp::assert_no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_queue_inboxes_slow_publishers_without_losing_or_reordering_messages() {
    let tiny = |c: &mut tern_server::Config| {
        c.queue_inbox_messages = 1;
        c.queue_flow_backlog_messages = 16;
    };
    let Some(broker) = TestBroker::start_with(tiny).await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let (q1, q2) = (lp::temp_queue(&ch).await, lp::temp_queue(&ch).await);
    let fanout = common::unique("fan");
    lp::declare_exchange(&ch, &fanout, lapin::ExchangeKind::Fanout).await;
    lp::bind(&ch, &q1, &fanout, "").await;
    lp::bind(&ch, &q2, &fanout, "").await;
    let consume_ch = lp::channel(&conn).await;
    consume_ch
        .basic_qos(5, BasicQosOptions::default())
        .await
        .unwrap();
    let mut c1 = lp::consume(&consume_ch, &q1).await;

    let publisher = lp::connect(&broker).await;
    let pch = lp::confirmed_channel(&publisher).await;
    let publishing = tokio::spawn(async move {
        let mut confirms = Vec::new();
        for i in 0..2000 {
            let body = format!("{i}");
            confirms.push(
                pch.basic_publish(
                    &fanout,
                    "",
                    Default::default(),
                    body.as_bytes(),
                    Default::default(),
                )
                .await
                .unwrap(),
            );
        }
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
    });
    for i in 0..2000 {
        let d = lp::next_delivery(&mut c1).await;
        assert_eq!(body_text(&d), i.to_string());
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    within("publisher confirms", publishing).await.unwrap();
    // q2 had no consumer: it holds every message, in order.
    let held = lp::drain(&ch, &q2).await;
    assert_eq!(held.len(), 2000);
    assert!(
        held.iter().enumerate().all(|(i, b)| *b == i.to_string()),
        "q2 out of order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_ack_consumer_that_stops_reading_takes_no_more_than_its_byte_window() {
    // 2000 deliveries of credit by count, 1 MiB by size: with 256 KiB messages the size wins,
    // so the messages a stalled reader has not taken stay in the queue, not in buffers.
    let Some(broker) = TestBroker::start_with(|c| c.no_ack_credit_bytes = 1 << 20).await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = common::unique("stalled-no-ack");
    lp::declare_queue(&ch, &q).await;
    let (mut reader, _) = RawClient::open(broker.addr, 0).await;
    reader.open_channel(1).await;
    let consume = Args::new()
        .u16(0)
        .shortstr(&q)
        .shortstr("")
        .u8(0b10)
        .table(&[]);
    reader
        .send(&raw::method_frame(1, 60, 20, consume))
        .await
        .unwrap();
    reader.expect_method(60, 21).await;
    const MESSAGES: u32 = 120;
    let body = patterned_body(256 * 1024);
    lp::publish(&ch, "", &q, &body).await;
    // Deliveries flow: the first one arrives. From now on the reader reads nothing.
    reader.expect_method(60, 60).await;
    for _ in 1..MESSAGES {
        lp::publish(&ch, "", &q, &body).await;
    }
    // What left the queue: the window plus one message, plus what the sockets buffer (a few
    // MiB on loopback). Wait until the queue stops handing out messages, then check.
    let mut ready = lp::message_count(&ch, &q).await;
    loop {
        tokio::time::sleep(common::QUIET).await;
        let now = lp::message_count(&ch, &q).await;
        if now == ready {
            break;
        }
        ready = now;
    }
    assert!(
        ready >= MESSAGES / 2,
        "only {ready} of {MESSAGES} still queued"
    );
    drop(reader);
}
