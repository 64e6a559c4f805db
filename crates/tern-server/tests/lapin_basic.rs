//! The basic, confirm and tx classes, driven by lapin: publishing, consuming, acknowledgements,
//! prefetch, returns, confirms, transactions.

mod common;

use common::lapin_support::{self as lp, body_text, code_of};
use common::{patterned_body, unique, within, TestBroker};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRecoverOptions, BasicRejectOptions,
    ChannelFlowOptions, ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use lapin::BasicProperties;

fn every_field_type() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongString("deep".into()));
    nested.insert("n".into(), AMQPValue::LongInt(-1));
    let array: FieldArray = vec![
        AMQPValue::LongInt(1),
        AMQPValue::LongString("two".into()),
        AMQPValue::Boolean(false),
    ]
    .into();
    lp::table(vec![
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-5)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-300)),
        ("u16", AMQPValue::ShortUInt(60_000)),
        ("i32", AMQPValue::LongInt(-70_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-5_000_000_000_000)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12_345,
            }),
        ),
        ("text", AMQPValue::LongString("héllo wörld".into())),
        ("array", AMQPValue::FieldArray(array)),
        ("timestamp", AMQPValue::Timestamp(1_700_000_000)),
        ("table", AMQPValue::FieldTable(nested)),
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2, 255])),
        ),
        ("void", AMQPValue::Void),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_preserves_every_basic_property_and_every_header_field_type() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(every_field_type())
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("tern-tests".into())
        .with_cluster_id("cluster-a".into());
    let mut consumer = lp::consume(&ch, &q).await;
    lp::publish_with(&ch, "", &q, b"{\"id\":1}", props.clone()).await;
    let d = lp::next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"{\"id\":1}");
    assert_eq!(d.properties, props);
    assert_eq!(
        (d.exchange.as_str(), d.routing_key.as_str(), d.redelivered),
        ("", q.as_str(), false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_body_and_no_properties_round_trip() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let mut consumer = lp::consume(&ch, &q).await;
    lp::publish(&ch, "", &q, b"").await;
    let d = lp::next_delivery(&mut consumer).await;
    assert!(d.data.is_empty());
    assert_eq!(d.properties, BasicProperties::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_message_is_split_across_frames_and_arrives_intact() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let body = patterned_body(1024 * 1024 + 17);
    let mut consumer = lp::consume(&ch, &q).await;
    lp::publish(&ch, "", &q, &body).await;
    lp::publish(&ch, "", &q, b"after").await;
    let d = lp::next_delivery(&mut consumer).await;
    assert_eq!(d.data.len(), body.len());
    assert!(d.data == body, "body corrupted");
    assert_eq!(body_text(&lp::next_delivery(&mut consumer).await), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_one_publisher_arrive_in_publish_order() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let consume_ch = lp::channel(&conn).await;
    let mut consumer = lp::consume_with(
        &consume_ch,
        &q,
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await;
    for i in 0..1000 {
        lp::publish(&ch, "", &q, format!("{i}").as_bytes()).await;
    }
    for i in 0..1000 {
        assert_eq!(
            body_text(&lp::next_delivery(&mut consumer).await),
            format!("{i}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_mandatory_message_is_returned_with_312_no_route_and_still_confirmed() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let key = unique("nowhere");
    let opts = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let props = BasicProperties::default().with_message_id("m-1".into());
    let confirm = ch
        .basic_publish("amq.direct", &key, opts, b"bounce", props.clone())
        .await
        .unwrap();
    match within("confirm", confirm).await.expect("confirm") {
        Confirmation::Ack(Some(returned)) => {
            assert_eq!(returned.reply_code, 312);
            assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
            assert_eq!(returned.delivery.exchange.as_str(), "amq.direct");
            assert_eq!(returned.delivery.routing_key.as_str(), key);
            assert_eq!(returned.delivery.data, b"bounce");
            assert_eq!(returned.delivery.properties, props);
        }
        other => panic!("expected an ack carrying the returned message, got {other:?}"),
    }
    // Without mandatory the message is dropped silently (and still acked).
    let confirm = ch
        .basic_publish("amq.direct", &key, Default::default(), b"drop", props)
        .await
        .unwrap();
    assert!(matches!(
        within("confirm", confirm).await.expect("confirm"),
        Confirmation::Ack(None)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_publish_closes_the_connection_with_not_implemented_540() {
    let broker = TestBroker::start().await;
    let (conn, mut errors) = lp::connect_watched(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let opts = BasicPublishOptions {
        immediate: true,
        ..Default::default()
    };
    let _ = ch
        .basic_publish("", &q, opts, b"now", BasicProperties::default())
        .await;
    let closed = errors.next_hard().await;
    assert_eq!(closed.code, 540, "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_consumer_keeps_other_consumers_out_with_403() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..Default::default()
    };
    let _owner = lp::consume_with(&ch, &q, exclusive, FieldTable::default()).await;
    let other = lp::channel(&conn).await;
    let r = other
        .basic_consume(
            &q,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 403, "a second consumer");

    // And an exclusive consumer cannot join a queue that already has consumers.
    let q2 = lp::temp_queue(&ch).await;
    let _plain = lp::consume(&ch, &q2).await;
    let other = lp::channel(&conn).await;
    let r = other
        .basic_consume(&q2, "", exclusive, FieldTable::default())
        .await;
    assert_eq!(code_of(r), 403, "exclusive after a plain consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_ack_consumer_takes_messages_off_the_queue_at_delivery() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    for i in 0..3 {
        lp::publish(&ch, "", &q, format!("{i}").as_bytes()).await;
    }
    let consume_ch = lp::channel(&conn).await;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = lp::consume_with(&consume_ch, &q, no_ack, FieldTable::default()).await;
    for i in 0..3 {
        assert_eq!(
            body_text(&lp::next_delivery(&mut consumer).await),
            format!("{i}")
        );
    }
    within("close", consume_ch.close(200, "bye"))
        .await
        .expect("close");
    assert_eq!(
        lp::message_count(&ch, &q).await,
        0,
        "no-ack deliveries are not requeued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_generates_consumer_tags_and_echoes_client_chosen_ones() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let a = lp::consume(&ch, &q).await;
    let b = lp::consume(&ch, &q).await;
    assert!(a.tag().as_str().starts_with("amq.ctag-"), "{}", a.tag());
    assert_ne!(a.tag(), b.tag());
    let mine = within(
        "consume",
        ch.basic_consume(&q, "my-tag", Default::default(), FieldTable::default()),
    )
    .await
    .expect("consume");
    assert_eq!(mine.tag().as_str(), "my-tag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_consumer_tag_on_a_channel_closes_the_connection_with_530() {
    let broker = TestBroker::start().await;
    let (conn, mut errors) = lp::connect_watched(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    within(
        "consume",
        ch.basic_consume(&q, "dup", Default::default(), FieldTable::default()),
    )
    .await
    .unwrap();
    let _ = ch
        .basic_consume(&q, "dup", Default::default(), FieldTable::default())
        .await;
    let closed = errors.next_hard().await;
    assert_eq!(closed.code, 530, "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_from_a_missing_queue_fails_with_404() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let r = ch
        .basic_consume(
            &unique("missing"),
            "",
            Default::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 404);
}

fn priority(p: i32) -> FieldTable {
    lp::table(vec![("x-priority", AMQPValue::LongInt(p))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_priority_consumer_is_served_first_while_it_has_credit() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    let ch = lp::channel(&conn).await;
    ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let mut low = lp::consume_with(&ch, &q, Default::default(), priority(1)).await;
    let mut high = lp::consume_with(&ch, &q, Default::default(), priority(10)).await;
    for i in 0..8 {
        lp::publish(&publisher, "", &q, format!("{i}").as_bytes()).await;
    }
    for i in 0..5 {
        assert_eq!(
            body_text(&lp::next_delivery(&mut high).await),
            format!("{i}"),
            "the high-priority consumer first"
        );
    }
    for i in 5..8 {
        assert_eq!(
            body_text(&lp::next_delivery(&mut low).await),
            format!("{i}"),
            "the rest, once high is full"
        );
    }
    lp::assert_no_delivery(&mut high).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_one_queue_are_served_round_robin() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    let ch = lp::channel(&conn).await;
    let mut consumers = Vec::new();
    for _ in 0..3 {
        consumers.push(lp::consume(&ch, &q).await);
    }
    for i in 0..9 {
        lp::publish(&publisher, "", &q, format!("{i}").as_bytes()).await;
    }
    let mut seen = Vec::new();
    for c in consumers.iter_mut() {
        let got: Vec<String> = lp::take_acked(c, 3).await.iter().map(body_text).collect();
        lp::assert_no_delivery(c).await;
        seen.extend(got);
    }
    seen.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(seen, (0..9).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_returns_messages_with_the_remaining_count_then_get_empty() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    for i in 0..3 {
        lp::publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    for i in 0..3u32 {
        let got = within("get", ch.basic_get(&q, BasicGetOptions { no_ack: false }))
            .await
            .unwrap()
            .expect("get-ok");
        assert_eq!(got.message_count, 2 - i);
        assert_eq!(body_text(&got.delivery), format!("m{i}"));
        assert!(!got.delivery.redelivered);
        got.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    let empty = within("get", ch.basic_get(&q, BasicGetOptions::default()))
        .await
        .unwrap();
    assert!(empty.is_none(), "expected get-empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_with_multiple_settles_every_delivery_up_to_the_tag() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    for i in 0..5 {
        lp::publish(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    let ch = lp::channel(&conn).await;
    let mut consumer = lp::consume(&ch, &q).await;
    let mut deliveries = Vec::new();
    for _ in 0..5 {
        deliveries.push(lp::next_delivery(&mut consumer).await);
    }
    deliveries[2]
        .acker
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
    within("close", ch.close(200, "bye")).await.expect("close");
    // m3 and m4 were not covered: closing the channel requeued them, flagged redelivered.
    let left = within(
        "get",
        publisher.basic_get(&q, BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (
            body_text(&left.delivery).as_str(),
            left.delivery.redelivered,
            left.message_count
        ),
        ("m3", true, 1)
    );
    assert_eq!(lp::drain(&publisher, &q).await, ["m4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_requeue_redelivers_to_another_consumer() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    let (ch_a, ch_b) = (lp::channel(&conn).await, lp::channel(&conn).await);
    let mut a = lp::consume(&ch_a, &q).await;
    lp::publish(&publisher, "", &q, b"hot potato").await;
    let first = lp::next_delivery(&mut a).await;
    assert!(!first.redelivered);
    let mut b = lp::consume(&ch_b, &q).await;
    // A stops consuming, then gives the message back.
    within(
        "cancel",
        ch_a.basic_cancel(a.tag().as_str(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    first
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let again = lp::next_delivery(&mut b).await;
    assert_eq!(body_text(&again), "hot potato");
    assert!(
        again.redelivered,
        "a requeued message is flagged redelivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_multiple_with_requeue_puts_every_delivery_up_to_the_tag_back_in_order() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    for i in 0..4 {
        lp::publish(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    let ch = lp::channel(&conn).await;
    ch.basic_qos(4, BasicQosOptions::default()).await.unwrap();
    let mut consumer = lp::consume(&ch, &q).await;
    let mut deliveries = Vec::new();
    for _ in 0..4 {
        deliveries.push(lp::next_delivery(&mut consumer).await);
    }
    deliveries[2]
        .acker
        .nack(BasicNackOptions {
            multiple: true,
            requeue: true,
        })
        .await
        .unwrap();
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = lp::next_delivery(&mut consumer).await;
        assert!(d.redelivered, "{}", body_text(&d));
        again.push(body_text(&d));
    }
    assert_eq!(again, ["m0", "m1", "m2"]);
    lp::assert_no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_without_requeue_drops_the_message_and_with_requeue_redelivers_it() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    lp::publish(&publisher, "", &q, b"bad").await;
    lp::publish(&publisher, "", &q, b"retry").await;
    let ch = lp::channel(&conn).await;
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = lp::consume(&ch, &q).await;
    let bad = lp::next_delivery(&mut consumer).await;
    assert_eq!(body_text(&bad), "bad");
    bad.acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let retry = lp::next_delivery(&mut consumer).await;
    assert_eq!(
        (body_text(&retry).as_str(), retry.redelivered),
        ("retry", false)
    );
    retry
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let retry = lp::next_delivery(&mut consumer).await;
    assert_eq!(
        (body_text(&retry).as_str(), retry.redelivered),
        ("retry", true)
    );
    retry.acker.ack(BasicAckOptions::default()).await.unwrap();
    lp::assert_no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_an_unknown_delivery_tag_closes_the_channel_with_precondition_failed_406() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let (ch, mut errors) = lp::channel_watched(&conn).await;
    let q = lp::temp_queue(&ch).await;
    lp::publish(&ch, "", &q, b"x").await;
    let mut consumer = lp::consume(&ch, &q).await;
    let d = lp::next_delivery(&mut consumer).await;
    ch.basic_ack(d.delivery_tag + 100, BasicAckOptions::default())
        .await
        .unwrap();
    let closed = errors.next().await;
    assert_eq!((closed.code, closed.hard), (406, false), "{closed:?}");
    assert!(closed.text.contains("unknown delivery tag"), "{closed:?}");
    assert!(conn.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_a_delivery_twice_closes_the_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let (ch, mut errors) = lp::channel_watched(&conn).await;
    let q = lp::temp_queue(&ch).await;
    lp::publish(&ch, "", &q, b"x").await;
    let mut consumer = lp::consume(&ch, &q).await;
    let d = lp::next_delivery(&mut consumer).await;
    ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
        .await
        .unwrap();
    let closed = errors.next().await;
    assert_eq!((closed.code, closed.hard), (406, false), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_redelivers_unacked_messages_flagged_redelivered() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let mut consumer = lp::consume(&ch, &q).await;
    lp::publish(&ch, "", &q, b"again").await;
    let first = lp::next_delivery(&mut consumer).await;
    assert!(!first.redelivered);
    within(
        "recover",
        ch.basic_recover(BasicRecoverOptions { requeue: true }),
    )
    .await
    .expect("recover-ok");
    let second = lp::next_delivery(&mut consumer).await;
    assert_eq!(
        (body_text(&second).as_str(), second.redelivered),
        ("again", true)
    );
    assert_ne!(first.delivery_tag, second.delivery_tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_consumer_prefetch_delivers_exactly_that_many_until_an_ack() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    for i in 0..10 {
        lp::publish(&publisher, "", &q, format!("{i}").as_bytes()).await;
    }
    let ch = lp::channel(&conn).await;
    ch.basic_qos(3, BasicQosOptions { global: false })
        .await
        .unwrap();
    let mut consumer = lp::consume(&ch, &q).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(lp::next_delivery(&mut consumer).await);
    }
    lp::assert_no_delivery(&mut consumer).await;
    held.remove(0)
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    assert_eq!(body_text(&lp::next_delivery(&mut consumer).await), "3");
    lp::assert_no_delivery(&mut consumer).await;
    assert_eq!(lp::message_count(&publisher, &q).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_prefetch_is_shared_by_the_consumers_of_a_channel() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let (q1, q2) = (
        lp::temp_queue(&publisher).await,
        lp::temp_queue(&publisher).await,
    );
    let ch = lp::channel(&conn).await;
    ch.basic_qos(4, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut c1 = lp::consume(&ch, &q1).await;
    let mut c2 = lp::consume(&ch, &q2).await;
    for i in 0..5 {
        lp::publish(&publisher, "", &q1, format!("a{i}").as_bytes()).await;
        lp::publish(&publisher, "", &q2, format!("b{i}").as_bytes()).await;
    }
    // Four deliveries in all across both consumers, then nothing until an ack.
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + common::STEP;
    while held.len() < 4 {
        tokio::select! {
            Some(Ok(d)) = c1.next() => held.push(d),
            Some(Ok(d)) = c2.next() => held.push(d),
            _ = tokio::time::sleep_until(deadline) => panic!("only {} deliveries under a global prefetch of 4", held.len()),
        }
    }
    lp::assert_no_delivery(&mut c1).await;
    lp::assert_no_delivery(&mut c2).await;
    held.remove(0)
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    let _one_more = tokio::select! {
        Some(Ok(d)) = c1.next() => d,
        Some(Ok(d)) = c2.next() => d,
        _ = tokio::time::sleep(common::STEP) => panic!("no delivery after an ack freed the channel's credit"),
    };
    lp::assert_no_delivery(&mut c1).await;
    lp::assert_no_delivery(&mut c2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_cancels_its_consumers_with_basic_cancel() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = unique("doomed");
    lp::declare_queue(&ch, &q).await;
    let mut consumer = lp::consume(&ch, &q).await;
    let admin = lp::channel(&conn).await;
    within(
        "delete",
        admin.queue_delete(&q, QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
    // lapin ends the consumer's stream when the server cancels it.
    match within("the consumer to be cancelled", consumer.next()).await {
        None => {}
        Some(other) => panic!("expected the stream to end, got {other:?}"),
    }
    assert!(ch.status().connected(), "the channel stays open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_consumer_stops_its_deliveries_and_leaves_messages_queued() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let consumer = lp::consume(&ch, &q).await;
    within(
        "cancel",
        ch.basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel-ok");
    lp::publish(&ch, "", &q, b"stays").await;
    assert_eq!(lp::drain(&ch, &q).await, ["stays"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_requeues_its_unacked_messages_for_other_consumers() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    for i in 0..3 {
        lp::publish(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    let greedy = lp::channel(&conn).await;
    let mut consumer = lp::consume(&greedy, &q).await;
    for _ in 0..3 {
        lp::next_delivery(&mut consumer).await;
    }
    within("close", greedy.close(200, "bye"))
        .await
        .expect("close");
    let other = lp::channel(&conn).await;
    let mut next = lp::consume(&other, &q).await;
    for i in 0..3 {
        let d = lp::next_delivery(&mut next).await;
        assert_eq!((body_text(&d), d.redelivered), (format!("m{i}"), true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_ack_every_publish() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("select-ok");
    let q = lp::temp_queue(&ch).await;
    let mut confirms = Vec::new();
    for i in 0..200 {
        let body = format!("{i}");
        let c = ch.basic_publish(
            "",
            &q,
            Default::default(),
            body.as_bytes(),
            Default::default(),
        );
        confirms.push(c.await.expect("publish"));
    }
    for c in confirms {
        assert!(within("confirm", c).await.expect("confirm").is_ack());
    }
    let returned = within("wait_for_confirms", ch.wait_for_confirms())
        .await
        .expect("all confirmed");
    assert!(returned.is_empty());
    assert_eq!(lp::message_count(&ch, &q).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_publishes_on_commit_and_discards_on_rollback() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let observer = lp::channel(&conn).await;
    let q = lp::temp_queue(&observer).await;
    let ch = lp::channel(&conn).await;
    within("tx.select", ch.tx_select())
        .await
        .expect("select-ok");
    lp::publish(&ch, "", &q, b"rolled back").await;
    within("tx.rollback", ch.tx_rollback())
        .await
        .expect("rollback-ok");
    lp::publish(&ch, "", &q, b"committed 1").await;
    lp::publish(&ch, "", &q, b"committed 2").await;
    // Nothing is visible before the commit.
    assert!(within("get", observer.basic_get(&q, Default::default()))
        .await
        .unwrap()
        .is_none());
    within("tx.commit", ch.tx_commit())
        .await
        .expect("commit-ok");
    assert_eq!(
        lp::drain(&observer, &q).await,
        ["committed 1", "committed 2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_in_a_rolled_back_transaction_are_discarded() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    lp::publish(&publisher, "", &q, b"keep").await;
    let ch = lp::channel(&conn).await;
    within("tx.select", ch.tx_select()).await.unwrap();
    let got = within("get", ch.basic_get(&q, BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .unwrap();
    got.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    within("tx.rollback", ch.tx_rollback()).await.unwrap();
    within("close", ch.close(200, "bye")).await.unwrap();
    // The ack never happened: closing the channel requeued the message.
    let again = within(
        "get",
        publisher.basic_get(&q, BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap();
    let again = again.expect("the message is back");
    assert_eq!(
        (
            body_text(&again.delivery).as_str(),
            again.delivery.redelivered
        ),
        ("keep", true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_without_select_closes_the_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    assert_eq!(code_of(within("tx.commit", ch.tx_commit()).await), 406);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_is_acknowledged() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let active = within(
        "channel.flow",
        ch.channel_flow(ChannelFlowOptions { active: true }),
    )
    .await
    .expect("flow-ok");
    assert!(active);
    lp::temp_queue(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_above_max_message_size_closes_the_channel_with_406() {
    let Some(broker) = TestBroker::start_with(|c| c.max_message_size_bytes = 64 * 1024).await
    else {
        return;
    };
    let (conn, mut conn_errors) = lp::connect_watched(&broker).await;
    let ok = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ok).await;
    lp::publish(&ok, "", &q, &patterned_body(64 * 1024)).await;
    let (ch, mut errors) = lp::channel_watched(&conn).await;
    let _ = ch
        .basic_publish(
            "",
            &q,
            Default::default(),
            &patterned_body(64 * 1024 + 1),
            Default::default(),
        )
        .await;
    let closed = errors.next().await;
    assert_eq!((closed.code, closed.hard), (406, false), "{closed:?}");
    assert!(
        closed.text.contains("larger than configured max size"),
        "{closed:?}"
    );
    // The refused message's body frames were already on the wire: they must be discarded with
    // the channel, not taken for a protocol violation that closes the connection.
    if let Ok(hard) = tokio::time::timeout(common::QUIET, conn_errors.next_hard()).await {
        panic!("the connection was closed too: {hard:?}");
    }
    assert_eq!(
        lp::drain(&ok, &q).await.len(),
        1,
        "only the message at the limit got in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_with_another_users_user_id_closes_the_channel_with_406() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let (ch, mut errors) = lp::channel_watched(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let props = BasicProperties::default().with_user_id("mallory".into());
    let _ = ch
        .basic_publish("", &q, Default::default(), b"forged", props)
        .await;
    let closed = errors.next().await;
    assert_eq!((closed.code, closed.hard), (406, false), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_of_tag_zero_with_multiple_settles_everything_outstanding() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    for i in 0..3 {
        lp::publish(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    let ch = lp::channel(&conn).await;
    let mut consumer = lp::consume(&ch, &q).await;
    for _ in 0..3 {
        lp::next_delivery(&mut consumer).await;
    }
    ch.basic_ack(0, BasicAckOptions { multiple: true })
        .await
        .unwrap();
    within("close", ch.close(200, "bye")).await.expect("close");
    assert!(
        lp::drain(&publisher, &q).await.is_empty(),
        "acked messages came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_mode_channel_cannot_become_transactional_406() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    assert_eq!(code_of(within("tx.select", ch.tx_select()).await), 406);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_unknown_consumer_tag_is_answered_with_cancel_ok() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let r = within(
        "cancel",
        ch.basic_cancel("never-consumed", BasicCancelOptions::default()),
    )
    .await;
    assert!(r.is_ok(), "{r:?}");
    lp::temp_queue(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_active_consumer_queue_feeds_one_consumer_until_it_goes() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = unique("sac");
    let args = lp::table(vec![("x-single-active-consumer", AMQPValue::Boolean(true))]);
    let opts = lapin::options::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    within("declare", publisher.queue_declare(&q, opts, args))
        .await
        .expect("declare");
    let (ch_a, ch_b) = (lp::channel(&conn).await, lp::channel(&conn).await);
    let mut a = lp::consume(&ch_a, &q).await;
    let mut b = lp::consume(&ch_b, &q).await;
    for i in 0..4 {
        lp::publish(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    let got: Vec<String> = lp::take_acked(&mut a, 4)
        .await
        .iter()
        .map(body_text)
        .collect();
    assert_eq!(got, ["m0", "m1", "m2", "m3"]);
    lp::assert_no_delivery(&mut b).await;
    // The active consumer leaves: the next one takes over.
    within(
        "cancel",
        ch_a.basic_cancel(a.tag().as_str(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    lp::publish(&publisher, "", &q, b"m4").await;
    assert_eq!(body_text(&lp::take_acked(&mut b, 1).await[0]), "m4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_priority_that_is_not_an_integer_fails_with_406() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let args = lp::table(vec![("x-priority", AMQPValue::LongString("high".into()))]);
    let r = ch.basic_consume(&q, "", Default::default(), args).await;
    assert_eq!(code_of(r), 406);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_tags_count_from_one_on_each_channel() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let publisher = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&publisher).await;
    for _ in 0..4 {
        lp::publish(&publisher, "", &q, b"x").await;
    }
    let (a, b) = (lp::channel(&conn).await, lp::channel(&conn).await);
    let get = |ch: lapin::Channel, q: String| async move {
        let m = ch
            .basic_get(&q, BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("get-ok");
        m.delivery.delivery_tag
    };
    assert_eq!(get(a.clone(), q.clone()).await, 1);
    assert_eq!(get(a.clone(), q.clone()).await, 2);
    assert_eq!(get(b.clone(), q.clone()).await, 1);
    assert_eq!(get(a.clone(), q.clone()).await, 3);
}
