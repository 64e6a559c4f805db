//! Queues driven by amqprs: declare, exclusivity, auto-delete, counts, purge, delete.

mod common;

use amqprs::channel::{
    BasicCancelArguments, BasicQosArguments, QueueDeclareArguments, QueueDeleteArguments,
    QueuePurgeArguments, QueueUnbindArguments,
};
use amqprs::connection::Connection;
use amqprs::FieldValue;
use common::amqprs_support::{self as rs, table, Publisher};
use common::{eventually, unique, within, TestBroker};

/// Wait until a passive declare of `queue` fails with 404 (a fresh channel per attempt).
async fn await_queue_gone(conn: &Connection, queue: &str) {
    eventually(&format!("queue {queue} to be deleted"), || async {
        let (ch, mut events) = rs::open_channel(conn).await;
        let args = QueueDeclareArguments::new(queue).passive(true).finish();
        match ch.queue_declare(args).await {
            Ok(_) => false,
            // 405: still there, still its closed owner's (it goes right after).
            Err(_) => match events.next_close().await.0 {
                404 => true,
                405 => false,
                other => panic!("passive declare of {queue}: {other}, not 404"),
            },
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_named_queue_gets_an_amq_gen_name() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let (name, messages, consumers) =
        rs::declare(&ch, QueueDeclareArguments::exclusive_server_named()).await;
    assert!(name.starts_with("amq.gen-"), "{name}");
    assert_eq!((messages, consumers), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_a_missing_queue_closes_the_channel_with_404_and_the_connection_lives_on(
) {
    let broker = TestBroker::start().await;
    let (conn, mut conn_closes) = rs::connect(&broker).await;
    let (ch, mut events) = rs::open_channel(&conn).await;
    let args = QueueDeclareArguments::new(&unique("missing"))
        .passive(true)
        .finish();
    assert!(within("declare", ch.queue_declare(args)).await.is_err());
    let (code, text) = events.next_close().await;
    assert_eq!(code, 404, "{text}");
    assert!(!ch.is_open());
    let mut p = Publisher::open(&conn).await;
    let q = rs::temp_queue(&p.ch).await;
    p.publish("", &q, b"still works").await;
    assert_eq!(rs::drain(&p.ch, &q).await, ["still works"]);
    assert!(conn_closes.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_a_queue_with_different_arguments_closes_the_channel_with_406() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let name = unique("q");
    let with_ttl = |ms: i32| {
        QueueDeclareArguments::new(&name)
            .exclusive(true)
            .arguments(table(vec![("x-message-ttl", FieldValue::I(ms))]))
            .finish()
    };
    rs::declare(&ch, with_ttl(1000)).await;
    let (other, mut events) = rs::open_channel(&conn).await;
    assert!(within("declare", other.queue_declare(with_ttl(2000)))
        .await
        .is_err());
    assert_eq!(events.next_close().await.0, 406);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connection_cannot_use_an_exclusive_queue_405() {
    let broker = TestBroker::start().await;
    let (owner, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&owner).await;
    let name = unique("excl");
    rs::declare(
        &ch,
        QueueDeclareArguments::new(&name).exclusive(true).finish(),
    )
    .await;
    let (stranger, _) = rs::connect(&broker).await;
    let (c, mut events) = rs::open_channel(&stranger).await;
    let r = within(
        "consume",
        c.basic_consume_rx(amqprs::channel::BasicConsumeArguments::new(&name, "")),
    )
    .await;
    assert!(r.is_err());
    assert_eq!(events.next_close().await.0, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_queue_goes_with_its_connection() {
    let broker = TestBroker::start().await;
    let (owner, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&owner).await;
    let (name, ..) = rs::declare(&ch, QueueDeclareArguments::exclusive_server_named()).await;
    within("close", owner.close()).await.expect("close");
    let (observer, _) = rs::connect(&broker).await;
    await_queue_gone(&observer, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_queue_goes_when_its_only_consumer_is_cancelled() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    let name = unique("auto");
    rs::declare(&ch, QueueDeclareArguments::transient_autodelete(&name)).await;
    let (tag, _rx) = rs::consume(&ch, &name).await;
    assert_eq!(
        rs::declare(
            &ch,
            QueueDeclareArguments::new(&name).passive(true).finish()
        )
        .await
        .2,
        1
    );
    within("cancel", ch.basic_cancel(BasicCancelArguments::new(&tag)))
        .await
        .expect("cancel");
    await_queue_gone(&conn, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_purge_and_delete_report_message_numbers() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let ch = p.ch.clone();
    let q = rs::temp_queue(&ch).await;
    for i in 0..5 {
        p.publish("", &q, format!("{i}").as_bytes()).await;
    }
    let (_, messages, consumers) =
        rs::declare(&ch, QueueDeclareArguments::new(&q).passive(true).finish()).await;
    assert_eq!((messages, consumers), (5, 0));
    let purged = within("purge", ch.queue_purge(QueuePurgeArguments::new(&q)))
        .await
        .expect("purge");
    assert_eq!(purged, Some(5));
    for i in 0..2 {
        p.publish("", &q, format!("{i}").as_bytes()).await;
    }
    let deleted = within("delete", ch.queue_delete(QueueDeleteArguments::new(&q)))
        .await
        .expect("delete");
    assert_eq!(deleted, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_deletes_fail_with_406_while_the_condition_does_not_hold() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let q = rs::temp_queue(&p.ch).await;
    p.publish("", &q, b"x").await;

    let (c, mut events) = rs::open_channel(&conn).await;
    let mut if_empty = QueueDeleteArguments::new(&q);
    if_empty.if_empty = true;
    assert!(within("delete", c.queue_delete(if_empty)).await.is_err());
    assert_eq!(events.next_close().await.0, 406, "if-empty with a message");

    let (consuming, _) = rs::open_channel(&conn).await;
    within(
        "qos",
        consuming.basic_qos(BasicQosArguments::new(0, 1, false)),
    )
    .await
    .unwrap();
    let (_tag, mut rx) = rs::consume(&consuming, &q).await;
    rs::next_msg(&mut rx).await;
    let (c, mut events) = rs::open_channel(&conn).await;
    let mut if_unused = QueueDeleteArguments::new(&q);
    if_unused.if_unused = true;
    assert!(within("delete", c.queue_delete(if_unused)).await.is_err());
    assert_eq!(
        events.next_close().await.0,
        406,
        "if-unused with a consumer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbinding_a_queue_stops_routing_to_it() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let mut p = Publisher::open(&conn).await;
    let ch = p.ch.clone();
    let q = rs::temp_queue(&ch).await;
    let key = unique("k");
    rs::bind(&ch, &q, "amq.topic", &key).await;
    p.publish("amq.topic", &key, b"bound").await;
    within(
        "unbind",
        ch.queue_unbind(QueueUnbindArguments::new(&q, "amq.topic", &key)),
    )
    .await
    .expect("unbind");
    p.publish("amq.topic", &key, b"unbound").await;
    assert_eq!(rs::drain(&ch, &q).await, ["bound"]);
}
