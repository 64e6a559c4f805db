//! Persistent messages in durable queues survive a restart; transient ones do not. Delivered
//! but unacknowledged messages come back redelivered; acknowledged ones do not come back.

mod common;

use common::lapin_support::{self as lp};
use common::{unique, within, TestBroker};
use lapin::options::{BasicAckOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

async fn declare_durable(ch: &Channel, name: &str) {
    within(
        "declare",
        ch.queue_declare(name, durable(), FieldTable::default()),
    )
    .await
    .expect("queue.declare");
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_persistent_messages_survive_a_restart_and_transient_ones_do_not() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let q = unique("durable");
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    declare_durable(&ch, &q).await;
    for i in 0..100 {
        lp::publish_with(&ch, "", &q, format!("p{i}").as_bytes(), persistent()).await;
        lp::publish(&ch, "", &q, format!("t{i}").as_bytes()).await;
    }
    drop(conn);
    let broker = broker.restart().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let got = lp::drain(&ch, &q).await;
    let want: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
    assert_eq!(
        got, want,
        "every persistent message, in order, and no transient one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_unacked_messages_come_back_redelivered_and_acked_ones_do_not() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let q = unique("durable");
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    declare_durable(&ch, &q).await;
    for i in 0..8 {
        lp::publish_with(&ch, "", &q, format!("m{i}").as_bytes(), persistent()).await;
    }
    let cons = lp::channel(&conn).await;
    cons.basic_qos(4, BasicQosOptions::default()).await.unwrap();
    let mut consumer = lp::consume(&cons, &q).await;
    let mut held = Vec::new();
    for i in 0..4 {
        let d = lp::next_delivery(&mut consumer).await;
        assert_eq!(lp::body_text(&d), format!("m{i}"));
        held.push(d);
    }
    // Ack the first two: m4 and m5 are delivered in their place; m6 and m7 never are.
    for d in held.drain(..2) {
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    for i in 4..6 {
        let d = lp::next_delivery(&mut consumer).await;
        assert_eq!(lp::body_text(&d), format!("m{i}"));
        held.push(d);
    }
    // Round-trip a method so both acks have reached the queue before the restart.
    lp::message_count(&ch, &q).await;
    drop(held);
    let broker = broker.restart().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let mut consumer = lp::consume(&ch, &q).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let d = lp::next_delivery(&mut consumer).await;
        seen.push((lp::body_text(&d), d.redelivered));
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    let expect = [
        ("m2", true),
        ("m3", true),
        ("m4", true),
        ("m5", true),
        ("m6", false),
        ("m7", false),
    ];
    let expect: Vec<(String, bool)> = expect.iter().map(|(b, r)| (b.to_string(), *r)).collect();
    assert_eq!(seen, expect);
    lp::assert_no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_durable_queue_takes_its_messages_and_files_with_it() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let q = unique("durable");
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    declare_durable(&ch, &q).await;
    lp::publish_with(&ch, "", &q, b"gone", persistent()).await;
    let queues_dir = broker.data_dir().join("queues");
    assert_eq!(std::fs::read_dir(&queues_dir).unwrap().count(), 1);
    within("delete", ch.queue_delete(&q, Default::default()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_dir(&queues_dir).unwrap().count(),
        0,
        "its directory is gone"
    );
    declare_durable(&ch, &q).await;
    let broker = broker.restart().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    assert_eq!(
        lp::message_count(&ch, &q).await,
        0,
        "a new queue of that name starts empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_synced_data_is_damaged_is_failed_and_the_rest_keeps_serving() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let (bad, good) = (unique("damaged"), unique("intact"));
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    declare_durable(&ch, &bad).await;
    declare_durable(&ch, &good).await;
    for q in [&bad, &good] {
        for i in 0..20 {
            lp::publish_with(&ch, "", q, format!("m{i}").as_bytes(), persistent()).await;
        }
    }
    drop(conn);
    let data_dir = broker.data_dir().to_path_buf();
    let broker = broker
        .restart_with(|| {
            // Flip a byte inside the first record of the damaged queue's log, between restarts.
            let queues = data_dir.join("queues");
            for dir in std::fs::read_dir(&queues).unwrap().flatten() {
                let name = std::fs::read_to_string(dir.path().join("NAME")).unwrap();
                if name.contains(bad.as_str()) {
                    let seg = dir.path().join(format!("{:020}.seg", 1));
                    let mut bytes = std::fs::read(&seg).unwrap();
                    bytes[30] ^= 0x20;
                    std::fs::write(&seg, bytes).unwrap();
                }
            }
        })
        .await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let consume = ch
        .basic_consume(&bad, "", Default::default(), FieldTable::default())
        .await;
    assert_eq!(lp::code_of(consume), 404, "the damaged queue is down");
    let ch = lp::channel(&conn).await;
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(
        lp::drain(&ch, &good).await,
        want,
        "the other queue is whole"
    );
}
