//! Exchanges and routing, driven by lapin. Routing is checked by publishing with confirms and
//! then draining each queue with basic.get.

mod common;

use common::lapin_support::{self as lp, code_of, long_str, table};
use common::{unique, within, TestBroker};
use lapin::options::{
    BasicPublishOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    ExchangeUnbindOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

fn passive() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_exchanges_exist() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        let r = within(
            "passive exchange.declare",
            ch.exchange_declare(name, kind, passive(), FieldTable::default()),
        )
        .await;
        assert!(r.is_ok(), "{name}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_an_exchange_with_the_same_definition_succeeds() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let name = unique("ex");
    let opts = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    for _ in 0..2 {
        lp::declare_exchange_with(&ch, &name, ExchangeKind::Topic, opts, FieldTable::default())
            .await;
    }
    let r = ch
        .exchange_declare(&name, ExchangeKind::Topic, passive(), FieldTable::default())
        .await;
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_an_exchange_with_another_type_or_durability_fails_with_precondition_failed_406(
) {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let name = unique("ex");
    let auto_delete = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    lp::declare_exchange_with(
        &ch,
        &name,
        ExchangeKind::Direct,
        auto_delete,
        FieldTable::default(),
    )
    .await;
    // Keep it alive across the failing declares (auto-delete goes with the last binding).
    let queue = lp::temp_queue(&ch).await;
    lp::bind(&ch, &queue, &name, "k").await;

    let other_type = conn.create_channel().await.unwrap();
    let r = other_type
        .exchange_declare(
            &name,
            ExchangeKind::Fanout,
            auto_delete,
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 406, "different type");

    let other_durability = conn.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        auto_delete: true,
        ..Default::default()
    };
    let r = other_durability
        .exchange_declare(&name, ExchangeKind::Direct, durable, FieldTable::default())
        .await;
    assert_eq!(code_of(r), 406, "different durability");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_an_exchange_with_the_reserved_amq_prefix_fails_with_access_refused_403() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let r = ch
        .exchange_declare(
            &unique("amq.mine"),
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_a_missing_exchange_fails_with_not_found_404_and_only_closes_the_channel(
) {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let r = ch
        .exchange_declare(
            &unique("missing"),
            ExchangeKind::Direct,
            passive(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 404);
    assert!(!ch.status().connected(), "the channel should be closed");
    let other = lp::channel(&conn).await;
    lp::declare_exchange(&other, &unique("ex"), ExchangeKind::Fanout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_bound_exchange_with_if_unused_fails_with_406_and_without_succeeds() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let name = unique("ex");
    lp::declare_exchange(&ch, &name, ExchangeKind::Direct).await;
    let queue = lp::temp_queue(&ch).await;
    lp::bind(&ch, &queue, &name, "k").await;

    let doomed = lp::channel(&conn).await;
    let r = doomed
        .exchange_delete(
            &name,
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(code_of(r), 406);

    within(
        "exchange.delete",
        ch.exchange_delete(&name, ExchangeDeleteOptions::default()),
    )
    .await
    .expect("delete");
    let after = lp::channel(&conn).await;
    let r = after
        .exchange_declare(
            &name,
            ExchangeKind::Direct,
            passive(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 404, "the exchange is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_or_binding_the_default_exchange_is_refused_with_403() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let r = ch
        .exchange_delete("amq.direct", ExchangeDeleteOptions::default())
        .await;
    assert_eq!(code_of(r), 403, "delete amq.direct");
    let ch = lp::channel(&conn).await;
    let queue = lp::temp_queue(&ch).await;
    let r = ch
        .queue_bind(
            &queue,
            "",
            "key",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 403, "bind to the default exchange");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_exchange_routes_by_queue_name() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let a = lp::temp_queue(&ch).await;
    let b = lp::temp_queue(&ch).await;
    lp::publish(&ch, "", &a, b"for a").await;
    lp::publish(&ch, "", &b, b"for b").await;
    lp::publish(&ch, "", &unique("nobody"), b"lost").await;
    assert_eq!(lp::drain(&ch, &a).await, ["for a"]);
    assert_eq!(lp::drain(&ch, &b).await, ["for b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_exchange_routes_by_exact_routing_key() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let ex = unique("direct");
    lp::declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let (red, blue) = (lp::temp_queue(&ch).await, lp::temp_queue(&ch).await);
    lp::bind(&ch, &red, &ex, "red").await;
    lp::bind(&ch, &blue, &ex, "blue").await;
    lp::bind(&ch, &blue, &ex, "navy").await;
    for key in ["red", "blue", "navy", "Red", "red.x", "green"] {
        lp::publish(&ch, &ex, key, key.as_bytes()).await;
    }
    assert_eq!(lp::drain(&ch, &red).await, ["red"]);
    assert_eq!(lp::drain(&ch, &blue).await, ["blue", "navy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_exchange_delivers_to_every_bound_queue_whatever_the_key() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let ex = unique("fanout");
    lp::declare_exchange(&ch, &ex, ExchangeKind::Fanout).await;
    let mut queues = Vec::new();
    for i in 0..3 {
        let q = lp::temp_queue(&ch).await;
        lp::bind(&ch, &q, &ex, &format!("ignored-{i}")).await;
        queues.push(q);
    }
    lp::publish(&ch, &ex, "any", b"one").await;
    lp::publish(&ch, &ex, "", b"two").await;
    for q in &queues {
        assert_eq!(lp::drain(&ch, q).await, ["one", "two"], "queue {q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_exchange_matches_star_as_one_word_and_hash_as_zero_or_more() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    // (pattern, keys that match, keys that do not)
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("a.b", &["a.b"], &["a", "a.b.c", "a.bc", "b.a"]),
        ("a.*", &["a.b", "a.x"], &["a", "a.b.c", "b.a"]),
        ("*.b.*", &["a.b.c", "x.b.y"], &["b.c", "a.b", "a.b.c.d"]),
        ("a.#", &["a", "a.b", "a.b.c.d"], &["b", "ab.c"]),
        ("#.z", &["z", "a.z", "a.b.z"], &["z.a", "az"]),
        (
            "a.#.z",
            &["a.z", "a.b.z", "a.b.c.z"],
            &["a", "a.z.b", "b.a.z"],
        ),
        ("#", &["a", "a.b.c", ""], &[]),
        ("*", &["a", "word"], &["a.b"]),
        ("a.*.#", &["a.b", "a.b.c"], &["a", "b.a"]),
        ("#.#", &["a", "a.b"], &[]),
    ];
    for (pattern, matching, other) in cases {
        let ex = unique("topic");
        lp::declare_exchange(&ch, &ex, ExchangeKind::Topic).await;
        let q = lp::temp_queue(&ch).await;
        lp::bind(&ch, &q, &ex, pattern).await;
        for key in matching.iter().chain(other.iter()) {
            lp::publish(&ch, &ex, key, key.as_bytes()).await;
        }
        assert_eq!(lp::drain(&ch, &q).await, *matching, "pattern {pattern:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_exchange_delivers_once_to_a_queue_bound_by_several_matching_patterns() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let ex = unique("topic");
    lp::declare_exchange(&ch, &ex, ExchangeKind::Topic).await;
    let q = lp::temp_queue(&ch).await;
    for pattern in ["a.*", "a.#", "#", "*.b"] {
        lp::bind(&ch, &q, &ex, pattern).await;
    }
    lp::publish(&ch, &ex, "a.b", b"once").await;
    assert_eq!(lp::drain(&ch, &q).await, ["once"]);
}

fn with_headers(entries: Vec<(&str, AMQPValue)>) -> BasicProperties {
    BasicProperties::default().with_headers(table(entries))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headers_exchange_matches_all_or_any_of_the_binding_headers() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let ex = unique("headers");
    lp::declare_exchange(&ch, &ex, ExchangeKind::Headers).await;
    let (all, any) = (lp::temp_queue(&ch).await, lp::temp_queue(&ch).await);
    let binding = |x_match: &str| {
        table(vec![
            ("x-match", long_str(x_match)),
            ("format", long_str("pdf")),
            ("size", AMQPValue::LongInt(7)),
        ])
    };
    lp::bind_with(&ch, &all, &ex, "", binding("all")).await;
    lp::bind_with(&ch, &any, &ex, "ignored", binding("any")).await;
    let messages: Vec<(&str, Vec<(&str, AMQPValue)>)> = vec![
        (
            "both",
            vec![("format", long_str("pdf")), ("size", AMQPValue::LongInt(7))],
        ),
        (
            "both+extra",
            vec![
                ("format", long_str("pdf")),
                ("size", AMQPValue::LongInt(7)),
                ("x", AMQPValue::Boolean(true)),
            ],
        ),
        ("format-only", vec![("format", long_str("pdf"))]),
        ("size-only", vec![("size", AMQPValue::LongInt(7))]),
        (
            "wrong-values",
            vec![("format", long_str("zip")), ("size", AMQPValue::LongInt(8))],
        ),
        ("unrelated", vec![("colour", long_str("red"))]),
    ];
    for (body, headers) in messages {
        lp::publish_with(&ch, &ex, "key", body.as_bytes(), with_headers(headers)).await;
    }
    lp::publish(&ch, &ex, "key", b"no-headers").await;
    assert_eq!(lp::drain(&ch, &all).await, ["both", "both+extra"]);
    assert_eq!(
        lp::drain(&ch, &any).await,
        ["both", "both+extra", "format-only", "size-only"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_matching_ignores_x_headers_unless_asked_with_all_with_x() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let ex = unique("headers");
    lp::declare_exchange(&ch, &ex, ExchangeKind::Headers).await;
    let (plain, with_x) = (lp::temp_queue(&ch).await, lp::temp_queue(&ch).await);
    let binding = |x_match: &str| {
        table(vec![
            ("x-match", long_str(x_match)),
            ("x-tenant", long_str("t1")),
        ])
    };
    lp::bind_with(&ch, &plain, &ex, "", binding("any")).await;
    lp::bind_with(&ch, &with_x, &ex, "", binding("any-with-x")).await;
    lp::publish_with(
        &ch,
        &ex,
        "",
        b"tenant",
        with_headers(vec![("x-tenant", long_str("t1"))]),
    )
    .await;
    assert_eq!(
        lp::drain(&ch, &plain).await,
        Vec::<String>::new(),
        "x- headers do not count for 'any'"
    );
    assert_eq!(lp::drain(&ch, &with_x).await, ["tenant"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amq_match_and_amq_headers_route_like_headers_exchanges() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let tag = unique("tag");
    let q = lp::temp_queue(&ch).await;
    let args = table(vec![("x-match", long_str("all")), ("tag", long_str(&tag))]);
    lp::bind_with(&ch, &q, "amq.match", "", args.clone()).await;
    lp::bind_with(&ch, &q, "amq.headers", "", args).await;
    lp::publish_with(
        &ch,
        "amq.match",
        "",
        b"via amq.match",
        with_headers(vec![("tag", long_str(&tag))]),
    )
    .await;
    lp::publish_with(
        &ch,
        "amq.headers",
        "",
        b"via amq.headers",
        with_headers(vec![("tag", long_str(&tag))]),
    )
    .await;
    assert_eq!(
        lp::drain(&ch, &q).await,
        ["via amq.match", "via amq.headers"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings_forward_until_unbound() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let (source, middle) = (unique("src"), unique("mid"));
    lp::declare_exchange(&ch, &source, ExchangeKind::Topic).await;
    lp::declare_exchange(&ch, &middle, ExchangeKind::Direct).await;
    let q = lp::temp_queue(&ch).await;
    lp::bind(&ch, &q, &middle, "orders.new").await;
    within(
        "exchange.bind",
        ch.exchange_bind(
            &middle,
            &source,
            "orders.*",
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.bind");
    lp::publish(&ch, &source, "orders.new", b"forwarded").await;
    lp::publish(
        &ch,
        &source,
        "orders.old",
        b"filtered by the middle exchange",
    )
    .await;
    lp::publish(&ch, &source, "invoices.new", b"filtered by the binding").await;
    assert_eq!(lp::drain(&ch, &q).await, ["forwarded"]);

    within(
        "exchange.unbind",
        ch.exchange_unbind(
            &middle,
            &source,
            "orders.*",
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.unbind");
    lp::publish(&ch, &source, "orders.new", b"after unbind").await;
    assert_eq!(lp::drain(&ch, &q).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_bindings_may_form_a_cycle_without_duplicating_messages() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let (a, b) = (unique("a"), unique("b"));
    lp::declare_exchange(&ch, &a, ExchangeKind::Fanout).await;
    lp::declare_exchange(&ch, &b, ExchangeKind::Fanout).await;
    for (dest, src) in [(&b, &a), (&a, &b)] {
        ch.exchange_bind(
            dest,
            src,
            "",
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }
    let q = lp::temp_queue(&ch).await;
    lp::bind(&ch, &q, &b, "").await;
    lp::publish(&ch, &a, "", b"round").await;
    assert_eq!(lp::drain(&ch, &q).await, ["round"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternate_exchange_receives_what_its_exchange_cannot_route() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let (main, alternate) = (unique("main"), unique("ae"));
    lp::declare_exchange(&ch, &alternate, ExchangeKind::Fanout).await;
    let args = table(vec![("alternate-exchange", long_str(&alternate))]);
    lp::declare_exchange_with(&ch, &main, ExchangeKind::Direct, Default::default(), args).await;
    let (routed, unrouted) = (lp::temp_queue(&ch).await, lp::temp_queue(&ch).await);
    lp::bind(&ch, &routed, &main, "known").await;
    lp::bind(&ch, &unrouted, &alternate, "").await;
    lp::publish(&ch, &main, "known", b"routed").await;
    // mandatory: routed through the alternate exchange counts as routed, so no basic.return.
    let opts = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = ch
        .basic_publish(
            &main,
            "unknown",
            opts,
            b"to the alternate",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let confirmation = within("confirm", confirm).await.expect("confirm");
    assert!(
        confirmation.take_message().is_none(),
        "a message routed via the alternate exchange was returned"
    );
    assert_eq!(lp::drain(&ch, &routed).await, ["routed"]);
    assert_eq!(lp::drain(&ch, &unrouted).await, ["to the alternate"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_an_internal_exchange_fails_with_403_but_bindings_into_it_work() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let (public, internal) = (unique("public"), unique("internal"));
    lp::declare_exchange(&ch, &public, ExchangeKind::Fanout).await;
    let opts = ExchangeDeclareOptions {
        internal: true,
        ..Default::default()
    };
    lp::declare_exchange_with(
        &ch,
        &internal,
        ExchangeKind::Fanout,
        opts,
        FieldTable::default(),
    )
    .await;
    ch.exchange_bind(
        &internal,
        &public,
        "",
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = lp::temp_queue(&ch).await;
    lp::bind(&ch, &q, &internal, "").await;
    lp::publish(&ch, &public, "", b"via binding").await;
    assert_eq!(lp::drain(&ch, &q).await, ["via binding"]);

    let (direct, mut errors) = lp::channel_watched(&conn).await;
    let _ = direct
        .basic_publish(
            &internal,
            "",
            Default::default(),
            b"direct",
            BasicProperties::default(),
        )
        .await;
    let closed = errors.next().await;
    assert_eq!((closed.code, closed.hard), (403, false), "{closed:?}");
    assert_eq!(lp::drain(&ch, &q).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_missing_exchange_closes_the_channel_with_not_found_404() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let (ch, mut errors) = lp::channel_watched(&conn).await;
    let _ = ch
        .basic_publish(
            &unique("missing"),
            "k",
            Default::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    let closed = errors.next().await;
    assert_eq!((closed.code, closed.hard), (404, false), "{closed:?}");
    assert!(conn.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_exchange_goes_when_its_last_binding_is_removed() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let ex = unique("auto");
    let opts = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    lp::declare_exchange_with(&ch, &ex, ExchangeKind::Direct, opts, FieldTable::default()).await;
    let q = lp::temp_queue(&ch).await;
    lp::bind(&ch, &q, &ex, "a").await;
    lp::bind(&ch, &q, &ex, "b").await;
    for key in ["a", "b"] {
        ch.queue_unbind(&q, &ex, key, FieldTable::default())
            .await
            .expect("unbind");
    }
    let r = ch
        .exchange_declare(&ex, ExchangeKind::Direct, passive(), FieldTable::default())
        .await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_hash_exchange_sends_each_routing_key_to_one_queue_and_spreads_keys_by_weight()
{
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let ex = unique("hash");
    lp::declare_exchange(&ch, &ex, ExchangeKind::Custom("x-consistent-hash".into())).await;
    let (light, heavy) = (lp::temp_queue(&ch).await, lp::temp_queue(&ch).await);
    lp::bind(&ch, &light, &ex, "10").await;
    lp::bind(&ch, &heavy, &ex, "40").await;
    let keys: Vec<String> = (0..400).map(|i| format!("customer-{i}")).collect();
    for key in &keys {
        lp::publish(&ch, &ex, key, key.as_bytes()).await;
    }
    // The same keys again: they must land where they did the first time.
    for key in keys.iter().take(50) {
        lp::publish(&ch, &ex, key, key.as_bytes()).await;
    }
    let (l, h) = (lp::drain(&ch, &light).await, lp::drain(&ch, &heavy).await);
    assert_eq!(l.len() + h.len(), 450, "every message routed exactly once");
    for key in keys.iter().take(50) {
        let in_l = l.iter().filter(|k| *k == key).count();
        let in_h = h.iter().filter(|k| *k == key).count();
        assert!(
            (in_l, in_h) == (2, 0) || (in_l, in_h) == (0, 2),
            "{key}: {in_l} in light, {in_h} in heavy"
        );
    }
    assert!(!l.is_empty(), "the light queue got nothing");
    assert!(
        h.len() > l.len(),
        "weights 10:40 but light got {} and heavy {}",
        l.len(),
        h.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_hash_exchange_can_hash_a_header_instead_of_the_routing_key() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let ex = unique("hash");
    let args = table(vec![("hash-header", long_str("user"))]);
    lp::declare_exchange_with(
        &ch,
        &ex,
        ExchangeKind::Custom("x-consistent-hash".into()),
        Default::default(),
        args,
    )
    .await;
    let (a, b) = (lp::temp_queue(&ch).await, lp::temp_queue(&ch).await);
    lp::bind(&ch, &a, &ex, "10").await;
    lp::bind(&ch, &b, &ex, "10").await;
    // One user, many routing keys: all in one queue.
    for i in 0..20 {
        let props = with_headers(vec![("user", long_str("alice"))]);
        lp::publish_with(&ch, &ex, &format!("rk-{i}"), b"alice", props).await;
    }
    let (in_a, in_b) = (
        lp::drain(&ch, &a).await.len(),
        lp::drain(&ch, &b).await.len(),
    );
    assert!(
        (in_a, in_b) == (20, 0) || (in_a, in_b) == (0, 20),
        "alice split {in_a}/{in_b}"
    );
    // Many users: both queues get some.
    for i in 0..200 {
        let props = with_headers(vec![("user", long_str(&format!("user-{i}")))]);
        lp::publish_with(&ch, &ex, "same-key", b"u", props).await;
    }
    let (in_a, in_b) = (
        lp::drain(&ch, &a).await.len(),
        lp::drain(&ch, &b).await.len(),
    );
    assert_eq!(in_a + in_b, 200);
    assert!(
        in_a > 0 && in_b > 0,
        "200 users all in one queue ({in_a}/{in_b})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_to_a_missing_exchange_or_queue_fails_with_not_found_404() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let r = ch
        .queue_bind(
            &q,
            &unique("missing"),
            "k",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 404, "missing exchange");
    let ch = lp::channel(&conn).await;
    let r = ch
        .queue_bind(
            &unique("missing"),
            "amq.direct",
            "k",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 404, "missing queue");
    let ch = lp::channel(&conn).await;
    let passive_queue = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(&q, passive_queue, FieldTable::default())
        .await
        .expect("the queue survives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headers_binding_without_x_match_means_all() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let ex = unique("headers");
    lp::declare_exchange(&ch, &ex, ExchangeKind::Headers).await;
    let q = lp::temp_queue(&ch).await;
    let args = table(vec![("a", long_str("1")), ("b", long_str("2"))]);
    lp::bind_with(&ch, &q, &ex, "", args).await;
    lp::publish_with(
        &ch,
        &ex,
        "",
        b"one",
        with_headers(vec![("a", long_str("1"))]),
    )
    .await;
    let both = with_headers(vec![("a", long_str("1")), ("b", long_str("2"))]);
    lp::publish_with(&ch, &ex, "", b"both", both).await;
    assert_eq!(lp::drain(&ch, &q).await, ["both"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_an_exchange_to_a_missing_exchange_fails_with_404() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let r = ch
        .exchange_bind(
            &unique("missing"),
            "amq.fanout",
            "",
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 404);
}
