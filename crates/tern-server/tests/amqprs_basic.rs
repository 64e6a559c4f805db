//! The basic, confirm and tx classes, driven by amqprs.

mod common;

use amqprs::channel::{
    BasicCancelArguments, BasicConsumeArguments, BasicGetArguments, BasicNackArguments,
    BasicPublishArguments, BasicQosArguments, BasicRejectArguments, QueueDeleteArguments,
};
use amqprs::{BasicProperties, DecimalValue, FieldArray, FieldTable, FieldValue};
use common::amqprs_support::{self as rs, table, ChanEvent, Publisher};
use common::{patterned_body, unique, within, TestBroker};

fn text(s: &str) -> FieldValue {
    FieldValue::S(s.try_into().unwrap())
}

fn every_field_type() -> FieldTable {
    let array: FieldArray = vec![FieldValue::I(1), text("two"), FieldValue::t(false)]
        .try_into()
        .unwrap();
    table(vec![
        ("t", FieldValue::t(true)),
        ("b", FieldValue::b(-5)),
        ("B", FieldValue::B(200)),
        ("s", FieldValue::s(-300)),
        ("u", FieldValue::u(60_000)),
        ("I", FieldValue::I(-70_000)),
        ("i", FieldValue::i(4_000_000_000)),
        ("l", FieldValue::l(-5_000_000_000_000)),
        ("f", FieldValue::f(1.5)),
        ("d", FieldValue::d(-2.25)),
        ("D", FieldValue::D(DecimalValue::new(2, 12_345))),
        ("S", text("héllo")),
        ("A", FieldValue::A(array)),
        ("T", FieldValue::T(1_700_000_000)),
        ("F", FieldValue::F(table(vec![("inner", text("deep"))]))),
        (
            "x",
            FieldValue::x(vec![0u8, 1, 254, 255].try_into().unwrap()),
        ),
        ("V", FieldValue::V),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_preserves_every_property_and_every_field_value_type() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    let (_, mut rx) = rs::consume(&ch, &q).await;
    let headers = every_field_type();
    let props = BasicProperties::default()
        .with_content_type("text/plain")
        .with_content_encoding("utf-8")
        .with_headers(headers.clone())
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("c-9")
        .with_reply_to("replies-here")
        .with_expiration("30000")
        .with_message_id("m-9")
        .with_timestamp(1_700_000_999)
        .with_message_type("kind")
        .with_user_id("guest")
        .with_app_id("amqprs-test")
        .with_cluster_id("c")
        .finish();
    rs::publish_with(&ch, "", &q, b"payload", props).await;
    let m = rs::next_msg(&mut rx).await;
    assert_eq!(m.body, b"payload");
    let p = &m.props;
    assert_eq!(p.content_type().map(String::as_str), Some("text/plain"));
    assert_eq!(p.content_encoding().map(String::as_str), Some("utf-8"));
    assert_eq!(
        p.headers().map(|h| h.as_ref().clone()),
        Some(headers.as_ref().clone())
    );
    assert_eq!(p.delivery_mode(), Some(2));
    assert_eq!(p.priority(), Some(3));
    assert_eq!(p.correlation_id().map(String::as_str), Some("c-9"));
    assert_eq!(p.reply_to().map(String::as_str), Some("replies-here"));
    assert_eq!(p.expiration().map(String::as_str), Some("30000"));
    assert_eq!(p.message_id().map(String::as_str), Some("m-9"));
    assert_eq!(p.timestamp(), Some(1_700_000_999));
    assert_eq!(p.message_type().map(String::as_str), Some("kind"));
    assert_eq!(p.user_id().map(String::as_str), Some("guest"));
    assert_eq!(p.app_id().map(String::as_str), Some("amqprs-test"));
    assert_eq!(p.cluster_id().map(String::as_str), Some("c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_message_arrives_intact() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    let (_, mut rx) = rs::consume(&ch, &q).await;
    let body = patterned_body(1 << 20);
    rs::publish(&ch, "", &q, &body).await;
    let m = rs::next_msg(&mut rx).await;
    assert_eq!(m.body.len(), body.len());
    assert!(m.body == body, "body corrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_mandatory_message_comes_back_as_basic_return_312() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, mut events) = rs::open_channel(&conn).await;
    let key = unique("nowhere");
    let args = BasicPublishArguments::new("amq.topic", &key)
        .mandatory(true)
        .finish();
    within(
        "publish",
        ch.basic_publish(BasicProperties::default(), b"back to you".to_vec(), args),
    )
    .await
    .unwrap();
    match events.next().await {
        ChanEvent::Returned {
            code,
            text,
            exchange,
            routing_key,
            body,
        } => {
            assert_eq!((code, text.as_str()), (312, "NO_ROUTE"));
            assert_eq!(
                (exchange.as_str(), routing_key.as_str()),
                ("amq.topic", key.as_str())
            );
            assert_eq!(body, b"back to you");
        }
        other => panic!("expected basic.return, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_publish_closes_the_connection_with_540() {
    let broker = TestBroker::start().await;
    let (conn, mut closes) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    let args = BasicPublishArguments::new("", &q).immediate(true).finish();
    within(
        "publish",
        ch.basic_publish(BasicProperties::default(), b"now".to_vec(), args),
    )
    .await
    .unwrap();
    assert_eq!(rs::next_conn_close(&mut closes).await.code, 540);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetch_size_other_than_zero_closes_the_connection_with_540() {
    let broker = TestBroker::start().await;
    let (conn, mut closes) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let r = within("qos", ch.basic_qos(BasicQosArguments::new(4096, 10, false))).await;
    assert!(r.is_err(), "qos with prefetch_size was accepted");
    let closed = rs::next_conn_close(&mut closes).await;
    assert_eq!(closed.code, 540, "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_consumer_makes_other_consume_attempts_fail_with_403() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    rs::consume_with(
        &ch,
        BasicConsumeArguments::new(&q, "").exclusive(true).finish(),
    )
    .await;
    let (other, mut events) = rs::open_channel(&conn).await;
    assert!(within(
        "consume",
        other.basic_consume_rx(BasicConsumeArguments::new(&q, ""))
    )
    .await
    .is_err());
    assert_eq!(events.next_close().await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_ack_consumer_needs_no_acks_and_leaves_nothing_behind() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let q = rs::temp_queue(&p.ch).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let (tag, mut rx) = rs::consume_with(
        &ch,
        BasicConsumeArguments::new(&q, "").auto_ack(true).finish(),
    )
    .await;
    assert!(tag.starts_with("amq.ctag-"), "{tag}");
    for i in 0..5 {
        p.publish("", &q, format!("{i}").as_bytes()).await;
    }
    for i in 0..5 {
        let m = rs::next_msg(&mut rx).await;
        assert_eq!(
            (m.text(), m.deliver.consumer_tag().as_str()),
            (format!("{i}"), tag.as_str())
        );
    }
    within("close", ch.close()).await.expect("close");
    assert_eq!(rs::message_count(&p.ch, &q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_priorities_serve_the_highest_consumer_with_credit() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let q = rs::temp_queue(&p.ch).await;
    let (ch, _) = rs::open_channel(&conn).await;
    within("qos", ch.basic_qos(BasicQosArguments::new(0, 2, false)))
        .await
        .unwrap();
    let prio = |n: i32| table(vec![("x-priority", FieldValue::I(n))]);
    let (_, mut low) = rs::consume_with(
        &ch,
        BasicConsumeArguments::new(&q, "")
            .arguments(prio(-5))
            .finish(),
    )
    .await;
    let (_, mut high) = rs::consume_with(
        &ch,
        BasicConsumeArguments::new(&q, "")
            .arguments(prio(5))
            .finish(),
    )
    .await;
    for i in 0..3 {
        p.publish("", &q, format!("{i}").as_bytes()).await;
    }
    assert_eq!(rs::next_msg(&mut high).await.text(), "0");
    assert_eq!(rs::next_msg(&mut high).await.text(), "1");
    assert_eq!(rs::next_msg(&mut low).await.text(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_a_queue_evenly() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let q = rs::temp_queue(&p.ch).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let (_, mut a) = rs::consume_with(
        &ch,
        BasicConsumeArguments::new(&q, "a").auto_ack(true).finish(),
    )
    .await;
    let (_, mut b) = rs::consume_with(
        &ch,
        BasicConsumeArguments::new(&q, "b").auto_ack(true).finish(),
    )
    .await;
    for i in 0..10 {
        p.publish("", &q, format!("{i}").as_bytes()).await;
    }
    for _ in 0..5 {
        rs::next_msg(&mut a).await;
        rs::next_msg(&mut b).await;
    }
    rs::assert_no_msg(&mut a).await;
    rs::assert_no_msg(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_counts_down_then_reports_get_empty() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let q = rs::temp_queue(&p.ch).await;
    p.publish("", &q, b"one").await;
    p.publish("", &q, b"two").await;
    let (ch, _) = rs::open_channel(&conn).await;
    let (ok, _, body) = within("get", ch.basic_get(BasicGetArguments::new(&q)))
        .await
        .unwrap()
        .expect("get-ok");
    assert_eq!(
        (ok.message_count(), body.as_slice(), ok.redelivered()),
        (1, &b"one"[..], false)
    );
    rs::ack(&ch, ok.delivery_tag()).await;
    let (ok, _, body) = within("get", ch.basic_get(BasicGetArguments::new(&q)))
        .await
        .unwrap()
        .expect("get-ok");
    assert_eq!((ok.message_count(), body.as_slice()), (0, &b"two"[..]));
    rs::ack(&ch, ok.delivery_tag()).await;
    assert!(within("get", ch.basic_get(BasicGetArguments::new(&q)))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_requeue_redelivers_flagged_redelivered() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    let (_, mut rx) = rs::consume(&ch, &q).await;
    rs::publish(&ch, "", &q, b"try again").await;
    let m = rs::next_msg(&mut rx).await;
    assert!(!m.deliver.redelivered());
    within(
        "nack",
        ch.basic_nack(BasicNackArguments::new(m.tag(), false, true)),
    )
    .await
    .unwrap();
    let again = rs::next_msg(&mut rx).await;
    assert_eq!(
        (again.text().as_str(), again.deliver.redelivered()),
        ("try again", true)
    );
    assert!(
        again.tag() > m.tag(),
        "a redelivery gets a new delivery tag"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_without_requeue_discards_the_message() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    let (_, mut rx) = rs::consume(&ch, &q).await;
    rs::publish(&ch, "", &q, b"poison").await;
    let m = rs::next_msg(&mut rx).await;
    within(
        "reject",
        ch.basic_reject(BasicRejectArguments::new(m.tag(), false)),
    )
    .await
    .unwrap();
    rs::assert_no_msg(&mut rx).await;
    assert_eq!(rs::message_count(&ch, &q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_an_unknown_delivery_tag_closes_the_channel_with_406() {
    let broker = TestBroker::start().await;
    let (conn, mut conn_closes) = rs::connect(&broker).await;
    let (ch, mut events) = rs::open_channel(&conn).await;
    rs::ack(&ch, 42).await;
    let (code, text) = events.next_close().await;
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("unknown delivery tag 42"), "{text}");
    assert!(conn_closes.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_requeues_unacked_deliveries_as_redelivered() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    let (_, mut rx) = rs::consume(&ch, &q).await;
    rs::publish(&ch, "", &q, b"a").await;
    rs::publish(&ch, "", &q, b"b").await;
    rs::next_msg(&mut rx).await;
    rs::next_msg(&mut rx).await;
    within("recover", ch.basic_recover(true))
        .await
        .expect("recover-ok");
    let mut again: Vec<(String, bool)> = Vec::new();
    for _ in 0..2 {
        let m = rs::next_msg(&mut rx).await;
        again.push((m.text(), m.deliver.redelivered()));
    }
    again.sort();
    assert_eq!(again, [("a".to_string(), true), ("b".to_string(), true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_holds_deliveries_at_the_limit_until_acks_free_credit() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let q = rs::temp_queue(&p.ch).await;
    for i in 0..6 {
        p.publish("", &q, format!("{i}").as_bytes()).await;
    }
    let (ch, _) = rs::open_channel(&conn).await;
    within("qos", ch.basic_qos(BasicQosArguments::new(0, 2, false)))
        .await
        .unwrap();
    let (_, mut rx) = rs::consume(&ch, &q).await;
    rs::next_msg(&mut rx).await;
    let second = rs::next_msg(&mut rx).await;
    rs::assert_no_msg(&mut rx).await;
    // Multiple ack of both frees two slots.
    within(
        "ack",
        ch.basic_ack(amqprs::channel::BasicAckArguments::new(second.tag(), true)),
    )
    .await
    .unwrap();
    assert_eq!(rs::next_msg(&mut rx).await.text(), "2");
    assert_eq!(rs::next_msg(&mut rx).await.text(), "3");
    rs::assert_no_msg(&mut rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_prefetch_limits_the_channel_as_a_whole() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let (q1, q2) = (rs::temp_queue(&p.ch).await, rs::temp_queue(&p.ch).await);
    for i in 0..3 {
        p.publish("", &q1, format!("a{i}").as_bytes()).await;
        p.publish("", &q2, format!("b{i}").as_bytes()).await;
    }
    let (ch, _) = rs::open_channel(&conn).await;
    within("qos", ch.basic_qos(BasicQosArguments::new(0, 2, true)))
        .await
        .unwrap();
    let (_, mut a) = rs::consume(&ch, &q1).await;
    let m = rs::next_msg(&mut a).await;
    let _ = rs::next_msg(&mut a).await;
    // The channel's two credits are spent on q1: q2's consumer gets nothing.
    let (_, mut b) = rs::consume(&ch, &q2).await;
    rs::assert_no_msg(&mut b).await;
    rs::assert_no_msg(&mut a).await;
    rs::ack(&ch, m.tag()).await;
    tokio::select! {
        Some(_) = a.recv() => {}
        Some(_) = b.recv() => {}
        _ = tokio::time::sleep(common::STEP) => panic!("an ack freed no credit"),
    }
    rs::assert_no_msg(&mut a).await;
    rs::assert_no_msg(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_sends_basic_cancel_to_its_consumers() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, mut events) = rs::open_channel(&conn).await;
    let q = unique("doomed");
    rs::declare_queue(&ch, &q).await;
    let (tag, _rx) = rs::consume(&ch, &q).await;
    let (admin, _) = rs::open_channel(&conn).await;
    within("delete", admin.queue_delete(QueueDeleteArguments::new(&q)))
        .await
        .expect("delete");
    match events.next().await {
        ChanEvent::Cancelled { consumer_tag } => assert_eq!(consumer_tag, tag),
        other => panic!("expected basic.cancel, got {other:?}"),
    }
    assert!(ch.is_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_consumer_is_confirmed_with_its_tag() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    let (tag, mut rx) = rs::consume(&ch, &q).await;
    let cancelled = within("cancel", ch.basic_cancel(BasicCancelArguments::new(&tag)))
        .await
        .expect("cancel-ok");
    assert_eq!(cancelled, tag);
    rs::publish(&ch, "", &q, b"stays").await;
    rs::assert_no_msg(&mut rx).await;
    assert_eq!(rs::drain(&ch, &q).await, ["stays"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_cover_every_publish() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, mut events) = rs::open_confirmed_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    for i in 0..300 {
        rs::publish(&ch, "", &q, format!("{i}").as_bytes()).await;
    }
    events.await_acks_through(300).await;
    assert_eq!(rs::message_count(&ch, &q).await, 300);
    // Nothing beyond what was published is confirmed.
    rs::publish(&ch, "amq.direct", &unique("unroutable"), b"x").await;
    events.await_acks_through(301).await;
    assert_eq!(events.acked_through, 301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_makes_publishes_visible_only_on_commit() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (observer, _) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&observer).await;
    let (ch, _) = rs::open_channel(&conn).await;
    within("tx.select", ch.tx_select())
        .await
        .expect("select-ok");
    rs::publish(&ch, "", &q, b"never").await;
    within("tx.rollback", ch.tx_rollback())
        .await
        .expect("rollback-ok");
    rs::publish(&ch, "", &q, b"yes").await;
    assert!(
        rs::drain(&observer, &q).await.is_empty(),
        "visible before commit"
    );
    within("tx.commit", ch.tx_commit())
        .await
        .expect("commit-ok");
    assert_eq!(rs::drain(&observer, &q).await, ["yes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_on_is_acknowledged() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let active = within("flow", ch.flow(true)).await.expect("flow-ok");
    assert!(active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_above_max_message_size_is_refused_with_406_and_the_connection_survives() {
    let Some(broker) = TestBroker::start_with(|c| c.max_message_size_bytes = 1000).await else {
        return;
    };
    let (conn, mut conn_closes) = rs::connect(&broker).await;
    let (ch, mut events) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    rs::publish(&ch, "", &q, &[1u8; 1001]).await;
    let (code, text) = events.next_close().await;
    assert_eq!(code, 406, "{text}");
    let mut p = Publisher::open(&conn).await;
    let q = rs::temp_queue(&p.ch).await;
    p.publish("", &q, &[2u8; 1000]).await;
    assert_eq!(rs::drain(&p.ch, &q).await.len(), 1);
    assert!(conn_closes.try_recv().is_err(), "the connection was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_requeues_its_unacked_deliveries() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let q = rs::temp_queue(&ch).await;
    let (consumer_ch, _) = rs::open_channel(&conn).await;
    let (_, mut rx) = rs::consume(&consumer_ch, &q).await;
    rs::publish(&ch, "", &q, b"unfinished").await;
    rs::next_msg(&mut rx).await;
    within("close", consumer_ch.close()).await.expect("close");
    let (ok, _, body) = within(
        "get",
        ch.basic_get(BasicGetArguments::new(&q).no_ack(true).finish()),
    )
    .await
    .unwrap()
    .expect("the message is back");
    assert_eq!(
        (body.as_slice(), ok.redelivered()),
        (&b"unfinished"[..], true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_publisher_gets_everything_through_a_slow_consumer_in_order() {
    let broker = TestBroker::start().await;
    let (consumer_conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&consumer_conn).await;
    let q = rs::temp_queue(&ch).await;
    within("qos", ch.basic_qos(BasicQosArguments::new(0, 1, false)))
        .await
        .unwrap();
    let (_, mut rx) = rs::consume(&ch, &q).await;
    let (publisher_conn, _) = rs::connect(&broker).await;
    let (publisher, _) = rs::open_channel(&publisher_conn).await;
    let total = 3000;
    let target = q.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..total {
            rs::publish(&publisher, "", &target, i.to_string().as_bytes()).await;
        }
        publisher
    });
    for i in 0..total {
        let m = rs::next_msg(&mut rx).await;
        assert_eq!(m.text(), i.to_string(), "out of order");
        rs::ack(&ch, m.tag()).await;
    }
    within("publisher", publishing).await.unwrap();
    rs::assert_no_msg(&mut rx).await;
}
