//! Exchanges and routing, driven by amqprs. Routing is checked by publishing with confirms and
//! then draining each queue with basic.get.

mod common;

use amqprs::channel::{
    BasicPublishArguments, ExchangeBindArguments, ExchangeDeclareArguments,
    ExchangeDeleteArguments, ExchangeUnbindArguments,
};
use amqprs::{BasicProperties, FieldTable, FieldValue};
use common::amqprs_support::{self as rs, table, Publisher};
use common::{unique, within, TestBroker};

fn text(s: &str) -> FieldValue {
    FieldValue::S(s.try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_exchanges_exist() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    for (name, kind) in [
        ("amq.direct", "direct"),
        ("amq.fanout", "fanout"),
        ("amq.topic", "topic"),
        ("amq.headers", "headers"),
        ("amq.match", "headers"),
    ] {
        let args = ExchangeDeclareArguments::new(name, kind)
            .passive(true)
            .finish();
        let r = within("passive exchange.declare", ch.exchange_declare(args)).await;
        assert!(r.is_ok(), "{name}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_an_exchange_with_another_type_closes_the_channel_with_406() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let name = unique("ex");
    rs::declare_exchange(&ch, &name, "direct").await;
    rs::declare_exchange(&ch, &name, "direct").await;
    let (other, mut events) = rs::open_channel(&conn).await;
    let args = ExchangeDeclareArguments::new(&name, "topic");
    assert!(within("declare", other.exchange_declare(args))
        .await
        .is_err());
    assert_eq!(events.next_close().await.0, 406);
    within(
        "delete",
        ch.exchange_delete(ExchangeDeleteArguments::new(&name)),
    )
    .await
    .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_an_amq_prefixed_exchange_closes_the_channel_with_403() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, mut events) = rs::open_channel(&conn).await;
    let args = ExchangeDeclareArguments::new(&unique("amq.custom"), "fanout");
    assert!(within("declare", ch.exchange_declare(args)).await.is_err());
    assert_eq!(events.next_close().await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_a_missing_exchange_closes_the_channel_with_404_and_the_connection_lives_on(
) {
    let broker = TestBroker::start().await;
    let (conn, mut conn_closes) = rs::connect(&broker).await;
    let (ch, mut events) = rs::open_channel(&conn).await;
    let args = ExchangeDeclareArguments::new(&unique("missing"), "direct")
        .passive(true)
        .finish();
    assert!(within("declare", ch.exchange_declare(args)).await.is_err());
    assert_eq!(events.next_close().await.0, 404);
    let (other, _) = rs::open_channel(&conn).await;
    rs::declare_exchange(&other, &unique("ex"), "fanout").await;
    assert!(conn_closes.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_bound_exchange_if_unused_closes_the_channel_with_406() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let name = unique("ex");
    rs::declare_exchange(&ch, &name, "fanout").await;
    let q = rs::temp_queue(&ch).await;
    rs::bind(&ch, &q, &name, "").await;
    let (other, mut events) = rs::open_channel(&conn).await;
    let args = ExchangeDeleteArguments::new(&name).if_unused(true).finish();
    assert!(within("delete", other.exchange_delete(args)).await.is_err());
    assert_eq!(events.next_close().await.0, 406);
    within(
        "delete",
        ch.exchange_delete(ExchangeDeleteArguments::new(&name)),
    )
    .await
    .expect("unconditional delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_fanout_and_topic_exchanges_route_as_bound() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let ch = p.ch.clone();
    let (direct, fanout, topic) = (unique("d"), unique("f"), unique("t"));
    rs::declare_exchange(&ch, &direct, "direct").await;
    rs::declare_exchange(&ch, &fanout, "fanout").await;
    rs::declare_exchange(&ch, &topic, "topic").await;
    let (q1, q2, q3) = (
        rs::temp_queue(&ch).await,
        rs::temp_queue(&ch).await,
        rs::temp_queue(&ch).await,
    );
    rs::bind(&ch, &q1, &direct, "eu").await;
    rs::bind(&ch, &q1, &fanout, "").await;
    rs::bind(&ch, &q2, &fanout, "whatever").await;
    rs::bind(&ch, &q2, &topic, "*.eu.#").await;
    rs::bind(&ch, &q3, &topic, "#.paid").await;

    p.publish(&direct, "eu", b"d:eu").await;
    p.publish(&direct, "us", b"d:us").await;
    p.publish(&fanout, "x", b"f").await;
    p.publish(&topic, "orders.eu", b"t:orders.eu").await;
    p.publish(&topic, "orders.eu.paid", b"t:orders.eu.paid")
        .await;
    p.publish(&topic, "eu.orders", b"t:eu.orders").await;
    p.publish(&topic, "paid", b"t:paid").await;

    assert_eq!(rs::drain(&ch, &q1).await, ["d:eu", "f"]);
    assert_eq!(
        rs::drain(&ch, &q2).await,
        ["f", "t:orders.eu", "t:orders.eu.paid"]
    );
    assert_eq!(rs::drain(&ch, &q3).await, ["t:orders.eu.paid", "t:paid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headers_exchange_matches_all_and_any_with_typed_values() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let ch = p.ch.clone();
    let ex = unique("h");
    rs::declare_exchange(&ch, &ex, "headers").await;
    let (all, any) = (rs::temp_queue(&ch).await, rs::temp_queue(&ch).await);
    let binding = |m: &str| {
        table(vec![
            ("x-match", text(m)),
            ("region", text("eu")),
            ("tier", FieldValue::I(2)),
        ])
    };
    rs::bind_with(&ch, &all, &ex, "", binding("all")).await;
    rs::bind_with(&ch, &any, &ex, "", binding("any")).await;
    let cases: Vec<(&str, FieldTable)> = vec![
        (
            "both",
            table(vec![("region", text("eu")), ("tier", FieldValue::I(2))]),
        ),
        ("region", table(vec![("region", text("eu"))])),
        (
            "tier",
            table(vec![
                ("tier", FieldValue::I(2)),
                ("other", FieldValue::t(true)),
            ]),
        ),
        (
            "neither",
            table(vec![("region", text("us")), ("tier", FieldValue::I(3))]),
        ),
    ];
    for (body, headers) in cases {
        p.publish_with(
            &ex,
            "",
            body.as_bytes(),
            BasicProperties::default().with_headers(headers).finish(),
        )
        .await;
    }
    assert_eq!(rs::drain(&ch, &all).await, ["both"]);
    assert_eq!(rs::drain(&ch, &any).await, ["both", "region", "tier"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings_forward_until_unbound() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let ch = p.ch.clone();
    let (upstream, downstream) = (unique("up"), unique("down"));
    rs::declare_exchange(&ch, &upstream, "direct").await;
    rs::declare_exchange(&ch, &downstream, "fanout").await;
    let q = rs::temp_queue(&ch).await;
    rs::bind(&ch, &q, &downstream, "").await;
    let bind = ExchangeBindArguments::new(&downstream, &upstream, "k");
    within("exchange.bind", ch.exchange_bind(bind))
        .await
        .expect("exchange.bind");
    p.publish(&upstream, "k", b"forwarded").await;
    p.publish(&upstream, "other", b"not bound").await;
    assert_eq!(rs::drain(&ch, &q).await, ["forwarded"]);
    let unbind = ExchangeUnbindArguments::new(&downstream, &upstream, "k");
    within("exchange.unbind", ch.exchange_unbind(unbind))
        .await
        .expect("exchange.unbind");
    p.publish(&upstream, "k", b"after unbind").await;
    assert!(rs::drain(&ch, &q).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternate_exchange_catches_unroutable_messages() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let ch = p.ch.clone();
    let (main, ae) = (unique("main"), unique("ae"));
    rs::declare_exchange(&ch, &ae, "fanout").await;
    let args = ExchangeDeclareArguments::new(&main, "direct")
        .arguments(table(vec![("alternate-exchange", text(&ae))]))
        .finish();
    within("exchange.declare", ch.exchange_declare(args))
        .await
        .expect("declare");
    let (routed, caught) = (rs::temp_queue(&ch).await, rs::temp_queue(&ch).await);
    rs::bind(&ch, &routed, &main, "ok").await;
    rs::bind(&ch, &caught, &ae, "").await;
    p.publish(&main, "ok", b"routed").await;
    p.publish(&main, "nope", b"caught").await;
    assert_eq!(rs::drain(&ch, &routed).await, ["routed"]);
    assert_eq!(rs::drain(&ch, &caught).await, ["caught"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_an_internal_exchange_closes_the_channel_with_403() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, mut events) = rs::open_channel(&conn).await;
    let name = unique("internal");
    let args = ExchangeDeclareArguments::new(&name, "fanout")
        .internal(true)
        .finish();
    within("exchange.declare", ch.exchange_declare(args))
        .await
        .expect("declare");
    rs::publish(&ch, &name, "", b"not allowed").await;
    assert_eq!(events.next_close().await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_missing_exchange_closes_the_channel_with_404() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, mut events) = rs::open_channel(&conn).await;
    let args = BasicPublishArguments::new(&unique("missing"), "k");
    within(
        "publish",
        ch.basic_publish(BasicProperties::default(), b"x".to_vec(), args),
    )
    .await
    .expect("sent");
    assert_eq!(events.next_close().await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_hash_exchange_keeps_a_routing_key_on_one_queue() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let ch = p.ch.clone();
    let ex = unique("hash");
    rs::declare_exchange(&ch, &ex, "x-consistent-hash").await;
    let (a, b) = (rs::temp_queue(&ch).await, rs::temp_queue(&ch).await);
    rs::bind(&ch, &a, &ex, "20").await;
    rs::bind(&ch, &b, &ex, "20").await;
    for _round in 0..2 {
        for i in 0..100 {
            p.publish(&ex, &format!("order-{i}"), format!("order-{i}").as_bytes())
                .await;
        }
    }
    let (in_a, in_b) = (rs::drain(&ch, &a).await, rs::drain(&ch, &b).await);
    assert_eq!(in_a.len() + in_b.len(), 200);
    assert!(
        !in_a.is_empty() && !in_b.is_empty(),
        "100 keys all in one queue"
    );
    for i in 0..100 {
        let key = format!("order-{i}");
        let (x, y) = (
            in_a.iter().filter(|k| **k == key).count(),
            in_b.iter().filter(|k| **k == key).count(),
        );
        assert!((x, y) == (2, 0) || (x, y) == (0, 2), "{key} split {x}/{y}");
    }
}
