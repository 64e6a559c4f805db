//! Queues: declare, exclusivity, auto-delete, counts, purge, delete, bindings; driven by lapin.

mod common;

use common::lapin_support::{self as lp, body_text, code_of};
use common::{eventually, unique, within, TestBroker};
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ExchangeKind};

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

/// Wait until a passive declare of `queue` says 404 (deletion may be asynchronous, in
/// RabbitMQ as here). Each attempt takes a fresh channel, since a 404 closes the channel.
async fn await_queue_gone(conn: &Connection, queue: &str) {
    eventually(&format!("queue {queue} to be deleted"), || async {
        let ch = conn.create_channel().await.expect("channel");
        let r = ch
            .queue_declare(queue, passive(), FieldTable::default())
            .await;
        match r {
            Ok(_) => false,
            Err(e) => {
                let closed = lp::closed_of(&e).unwrap_or_else(|| panic!("unexpected error {e:?}"));
                assert_eq!(closed.code, 404, "{closed:?}");
                true
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_named_queue_gets_a_fresh_amq_gen_name() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let a = lp::temp_queue(&ch).await;
    let b = lp::temp_queue(&ch).await;
    assert!(a.starts_with("amq.gen-"), "{a}");
    assert!(b.starts_with("amq.gen-"), "{b}");
    assert_ne!(a, b);
    let q = within(
        "passive",
        ch.queue_declare(&a, passive(), FieldTable::default()),
    )
    .await
    .expect("it exists");
    assert_eq!(q.name().as_str(), a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_a_missing_queue_fails_with_404_and_the_connection_stays_usable() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let r = ch
        .queue_declare(&unique("missing"), passive(), FieldTable::default())
        .await;
    assert_eq!(code_of(r), 404);
    assert!(!ch.status().connected(), "the channel is closed");
    assert!(conn.status().connected(), "the connection is not");
    let other = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&other).await;
    lp::publish(&other, "", &q, b"ok").await;
    assert_eq!(lp::drain(&other, &q).await, ["ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_a_queue_with_different_arguments_or_durability_fails_with_406() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let name = unique("q");
    let args = |n: i64| lp::table(vec![("x-max-length", AMQPValue::LongLongInt(n))]);
    let opts = QueueDeclareOptions::default();
    within("declare", ch.queue_declare(&name, opts, args(10)))
        .await
        .expect("declare");
    within("same again", ch.queue_declare(&name, opts, args(10)))
        .await
        .expect("an equal redeclare is fine");

    let other = lp::channel(&conn).await;
    assert_eq!(
        code_of(other.queue_declare(&name, opts, args(20)).await),
        406,
        "x-max-length 20 vs 10"
    );
    let other = lp::channel(&conn).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..opts
    };
    assert_eq!(
        code_of(other.queue_declare(&name, durable, args(10)).await),
        406,
        "durable vs transient"
    );
    // A passive declare ignores the arguments.
    let other = lp::channel(&conn).await;
    within("passive", other.queue_declare(&name, passive(), args(99)))
        .await
        .expect("passive ignores arguments");
    other
        .queue_delete(&name, QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_a_queue_with_the_reserved_amq_prefix_fails_with_403() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let r = ch
        .queue_declare(
            &unique("amq.mine"),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_queue_is_locked_to_its_connection_with_resource_locked_405() {
    let broker = TestBroker::start().await;
    let owner = lp::connect(&broker).await;
    let ch = lp::channel(&owner).await;
    let name = unique("excl");
    let opts = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    within(
        "declare",
        ch.queue_declare(&name, opts, FieldTable::default()),
    )
    .await
    .expect("declare");

    let stranger = lp::connect(&broker).await;
    let c = lp::channel(&stranger).await;
    assert_eq!(
        code_of(
            c.queue_declare(&name, passive(), FieldTable::default())
                .await
        ),
        405,
        "passive declare"
    );
    let c = lp::channel(&stranger).await;
    assert_eq!(
        code_of(c.queue_declare(&name, opts, FieldTable::default()).await),
        405,
        "declare"
    );
    let c = lp::channel(&stranger).await;
    let r = c
        .basic_consume(
            &name,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 405, "consume");
    let c = lp::channel(&stranger).await;
    assert_eq!(
        code_of(c.queue_delete(&name, QueueDeleteOptions::default()).await),
        405,
        "delete"
    );
    let c = lp::channel(&stranger).await;
    assert_eq!(
        code_of(c.queue_purge(&name, QueuePurgeOptions::default()).await),
        405,
        "purge"
    );
    // The owner is unaffected.
    within(
        "owner passive",
        ch.queue_declare(&name, passive(), FieldTable::default()),
    )
    .await
    .expect("owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_queue_is_deleted_when_its_connection_closes() {
    let broker = TestBroker::start().await;
    let owner = lp::connect(&broker).await;
    let ch = lp::channel(&owner).await;
    let name = unique("excl");
    let opts = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    within(
        "declare",
        ch.queue_declare(&name, opts, FieldTable::default()),
    )
    .await
    .expect("declare");
    let _ = within("close", owner.close(200, "bye")).await;
    let observer = lp::connect(&broker).await;
    await_queue_gone(&observer, &name).await;
    // The name is free again, for anyone.
    let ch = lp::channel(&observer).await;
    within(
        "declare",
        ch.queue_declare(&name, opts, FieldTable::default()),
    )
    .await
    .expect("redeclare");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_queue_goes_when_its_last_consumer_is_cancelled() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let name = unique("auto");
    let opts = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    within(
        "declare",
        ch.queue_declare(&name, opts, FieldTable::default()),
    )
    .await
    .expect("declare");
    let first = lp::consume(&ch, &name).await;
    let second = lp::consume(&ch, &name).await;
    within(
        "cancel",
        ch.basic_cancel(first.tag().as_str(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel");
    let q = within(
        "passive",
        ch.queue_declare(&name, passive(), FieldTable::default()),
    )
    .await
    .expect("still there");
    assert_eq!(q.consumer_count(), 1);
    within(
        "cancel",
        ch.basic_cancel(second.tag().as_str(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel");
    await_queue_gone(&conn, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_queue_that_never_had_a_consumer_stays() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let name = unique("auto");
    // Exclusive as well, so it does not outlive the test on a long-lived reference broker.
    let opts = QueueDeclareOptions {
        auto_delete: true,
        exclusive: true,
        ..Default::default()
    };
    within(
        "declare",
        ch.queue_declare(&name, opts, FieldTable::default()),
    )
    .await
    .expect("declare");
    let other = lp::channel(&conn).await;
    within("close", other.close(200, "bye"))
        .await
        .expect("close");
    let q = within(
        "passive",
        ch.queue_declare(&name, passive(), FieldTable::default()),
    )
    .await;
    assert!(q.is_ok(), "{q:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_reports_ready_messages_and_consumers() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    for i in 0..3 {
        lp::publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    let info = within(
        "passive",
        ch.queue_declare(&q, passive(), FieldTable::default()),
    )
    .await
    .unwrap();
    assert_eq!((info.message_count(), info.consumer_count()), (3, 0));

    // Two consumers with prefetch 1 hold one unacked message each: one is left ready.
    let cons = lp::channel(&conn).await;
    cons.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut a = lp::consume(&cons, &q).await;
    let mut b = lp::consume(&cons, &q).await;
    lp::next_delivery(&mut a).await;
    lp::next_delivery(&mut b).await;
    let info = within(
        "passive",
        ch.queue_declare(&q, passive(), FieldTable::default()),
    )
    .await
    .unwrap();
    assert_eq!((info.message_count(), info.consumer_count()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_ready_messages_and_reports_how_many() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    for i in 0..6 {
        lp::publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    // One message delivered and unacked: purge leaves it alone.
    let cons = lp::channel(&conn).await;
    cons.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = lp::consume(&cons, &q).await;
    let held = lp::next_delivery(&mut consumer).await;
    assert_eq!(lp::body_text(&held), "m0");
    let purged = within("purge", ch.queue_purge(&q, QueuePurgeOptions::default()))
        .await
        .expect("purge");
    assert_eq!(purged, 5);
    assert_eq!(lp::message_count(&ch, &q).await, 0);
    // Requeued, the held message is back and is all there is.
    held.acker
        .nack(lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let again = lp::next_delivery(&mut consumer).await;
    assert_eq!(
        (lp::body_text(&again).as_str(), again.redelivered),
        ("m0", true)
    );
    lp::assert_no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_fails_with_406_while_the_queue_has_a_consumer() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let _consumer = lp::consume(&ch, &q).await;
    let other = lp::channel(&conn).await;
    let r = other
        .queue_delete(
            &q,
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(code_of(r), 406);
    within(
        "passive",
        ch.queue_declare(&q, passive(), FieldTable::default()),
    )
    .await
    .expect("still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_empty_fails_with_406_while_the_queue_has_messages() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    lp::publish(&ch, "", &q, b"keep me").await;
    let other = lp::channel(&conn).await;
    let r = other
        .queue_delete(
            &q,
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(code_of(r), 406);
    assert_eq!(lp::drain(&ch, &q).await, ["keep me"]);
    let n = within(
        "delete",
        ch.queue_delete(
            &q,
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        ),
    )
    .await
    .expect("an empty queue deletes");
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ok_reports_how_many_messages_went_with_the_queue() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    for _ in 0..4 {
        lp::publish(&ch, "", &q, b"x").await;
    }
    let n = within("delete", ch.queue_delete(&q, QueueDeleteOptions::default()))
        .await
        .expect("delete");
    assert_eq!(n, 4);
    let r = ch.queue_declare(&q, passive(), FieldTable::default()).await;
    assert_eq!(code_of(r), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_removes_its_bindings() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let ex = unique("ex");
    lp::declare_exchange(&ch, &ex, ExchangeKind::Fanout).await;
    let name = unique("q");
    let opts = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    within(
        "declare",
        ch.queue_declare(&name, opts, FieldTable::default()),
    )
    .await
    .unwrap();
    lp::bind(&ch, &name, &ex, "").await;
    ch.queue_delete(&name, QueueDeleteOptions::default())
        .await
        .unwrap();
    within(
        "declare",
        ch.queue_declare(&name, opts, FieldTable::default()),
    )
    .await
    .unwrap();
    lp::publish(&ch, &ex, "", b"old binding").await;
    assert!(
        lp::drain(&ch, &name).await.is_empty(),
        "the binding outlived its queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_unbind_switch_routing_on_and_off() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let key = unique("key");
    lp::publish(&ch, "amq.direct", &key, b"before").await;
    lp::bind(&ch, &q, "amq.direct", &key).await;
    lp::bind(&ch, &q, "amq.direct", &key).await; // binding twice is one binding
    lp::publish(&ch, "amq.direct", &key, b"bound").await;
    within(
        "unbind",
        ch.queue_unbind(&q, "amq.direct", &key, FieldTable::default()),
    )
    .await
    .expect("unbind");
    lp::publish(&ch, "amq.direct", &key, b"after").await;
    assert_eq!(lp::drain(&ch, &q).await, ["bound"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_queue_declared_from_two_connections_is_one_queue() {
    let broker = TestBroker::start().await;
    let (c1, c2) = (lp::connect(&broker).await, lp::connect(&broker).await);
    let (ch1, ch2) = (lp::confirmed_channel(&c1).await, lp::channel(&c2).await);
    let name = unique("shared");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(
        "declare",
        ch1.queue_declare(&name, durable, FieldTable::default()),
    )
    .await
    .unwrap();
    lp::publish(&ch1, "", &name, b"from c1").await;
    let q = within(
        "declare",
        ch2.queue_declare(&name, durable, FieldTable::default()),
    )
    .await
    .unwrap();
    assert_eq!(q.message_count(), 1);
    assert_eq!(lp::drain(&ch2, &name).await, ["from c1"]);
    ch2.queue_delete(&name, QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_or_exchange_that_does_not_exist_succeeds() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let n = within(
        "queue.delete",
        ch.queue_delete(&unique("never"), QueueDeleteOptions::default()),
    )
    .await;
    assert_eq!(n.expect("delete-ok"), 0);
    let r = within(
        "exchange.delete",
        ch.exchange_delete(&unique("never"), Default::default()),
    )
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert!(ch.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_connections_may_publish_to_an_exclusive_queue_but_not_get_from_or_claim_it() {
    let broker = TestBroker::start().await;
    let owner = lp::connect(&broker).await;
    let ch = lp::channel(&owner).await;
    // Client-named: redeclaring an amq.gen- name would be refused for its prefix (403) first.
    let q = unique("excl");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    within(
        "declare",
        ch.queue_declare(&q, exclusive, FieldTable::default()),
    )
    .await
    .expect("declare");
    let mut consumer = lp::consume(&ch, &q).await;

    let stranger = lp::connect(&broker).await;
    let pch = lp::confirmed_channel(&stranger).await;
    lp::publish(&pch, "", &q, b"from a stranger").await;
    assert_eq!(
        body_text(&lp::next_delivery(&mut consumer).await),
        "from a stranger"
    );

    let c = lp::channel(&stranger).await;
    assert_eq!(
        code_of(c.basic_get(&q, Default::default()).await),
        405,
        "basic.get"
    );
    let c = lp::channel(&stranger).await;
    assert_eq!(
        code_of(c.queue_declare(&q, exclusive, FieldTable::default()).await),
        405,
        "exclusive declare"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_an_existing_shared_queue_as_exclusive_fails_with_405() {
    let broker = TestBroker::start().await;
    let first = lp::connect(&broker).await;
    let ch = lp::channel(&first).await;
    let name = unique("shared");
    lp::declare_queue(&ch, &name).await;
    let second = lp::connect(&broker).await;
    let c = lp::channel(&second).await;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    assert_eq!(
        code_of(
            c.queue_declare(&name, exclusive, FieldTable::default())
                .await
        ),
        405
    );
    ch.queue_delete(&name, QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_a_missing_queue_fails_with_404() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    assert_eq!(
        code_of(
            ch.queue_purge(&unique("missing"), QueuePurgeOptions::default())
                .await
        ),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_queue_name_means_the_queue_the_channel_declared_last() {
    // RabbitMQ's most_recently_declared_queue shortcut, in bind, get, purge and delete; an
    // empty binding key with it is the queue's own name.
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    within(
        "bind ''",
        ch.queue_bind(
            "",
            "amq.direct",
            "",
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("bind with the shortcut");
    lp::publish(&ch, "amq.direct", &q, b"one").await;
    lp::publish(&ch, "amq.direct", &q, b"two").await;
    let got = within("get ''", ch.basic_get("", Default::default()))
        .await
        .expect("get")
        .expect("a message");
    assert_eq!(lp::body_text(&got.delivery), "one");
    let purged = within("purge ''", ch.queue_purge("", QueuePurgeOptions::default()))
        .await
        .expect("purge");
    assert_eq!(purged, 1, "the second message was still there");
    within(
        "delete ''",
        ch.queue_delete("", QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
    await_queue_gone(&conn, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_queue_name_on_a_channel_that_declared_none_is_not_found_404() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    assert_eq!(
        code_of(ch.queue_purge("", QueuePurgeOptions::default()).await),
        404
    );
    // The shortcut is per channel: another channel's declare does not count.
    let other = lp::channel(&conn).await;
    lp::temp_queue(&other).await;
    let ch = lp::channel(&conn).await;
    assert_eq!(code_of(ch.basic_get("", Default::default()).await), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_chosen_name_shaped_like_a_server_named_queue_is_refused_403() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let r = ch
        .queue_declare(
            "amq.gen-AbCdEfGhIjKlMnOpQrStU_",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(code_of(r), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_breaks_in_a_declared_queue_name_are_dropped() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let name = unique("line-break");
    let q = within(
        "declare",
        ch.queue_declare(
            &format!("{name}\r\n"),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    assert_eq!(q.name().as_str(), name);
    within(
        "passive",
        ch.queue_declare(&name, passive(), FieldTable::default()),
    )
    .await
    .expect("found under the stripped name");
}
