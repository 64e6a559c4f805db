//! Queues longer than their memory limit: the rest is paged to disk and read back in order,
//! for durable and non-durable queues alike, through purges and restarts.

mod common;

use common::lapin_support::{self as lp};
use common::{unique, within, TestBroker};
use lapin::options::{BasicAckOptions, BasicQosOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;

fn small_memory(c: &mut tern_server::Config) {
    c.queue_memory_messages = 20;
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn bodies(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_longer_than_its_memory_delivers_everything_in_order() {
    let Some(broker) = TestBroker::start_with(small_memory).await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    for b in bodies(0..500) {
        lp::publish(&ch, "", &q, b.as_bytes()).await;
    }
    assert_eq!(
        lp::message_count(&ch, &q).await,
        500,
        "paged messages count as ready"
    );
    assert!(
        broker.data_dir().join("paging").exists(),
        "a non-durable queue pages into a scratch store"
    );
    let cons = lp::channel(&conn).await;
    cons.basic_qos(50, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = lp::consume(&cons, &q).await;
    let mut got = Vec::new();
    for _ in 0..500 {
        let d = lp::next_delivery(&mut consumer).await;
        got.push(lp::body_text(&d));
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(got, bodies(0..500));
    lp::assert_no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_reads_paged_messages_back_and_purge_drops_them() {
    let Some(broker) = TestBroker::start_with(small_memory).await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    for b in bodies(0..100) {
        lp::publish(&ch, "", &q, b.as_bytes()).await;
    }
    let mut got = Vec::new();
    for _ in 0..30 {
        let m = within("get", ch.basic_get(&q, Default::default()))
            .await
            .unwrap()
            .expect("a message");
        got.push(lp::body_text(&m.delivery));
        m.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(got, bodies(0..30));
    let purged = within("purge", ch.queue_purge(&q, QueuePurgeOptions::default()))
        .await
        .unwrap();
    assert_eq!(purged, 70, "in memory and paged alike");
    for b in bodies(100..105) {
        lp::publish(&ch, "", &q, b.as_bytes()).await;
    }
    assert_eq!(
        lp::drain(&ch, &q).await,
        bodies(100..105),
        "paging starts afresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_durable_queue_comes_back_whole_after_a_restart() {
    let Some(broker) = TestBroker::start_with(small_memory).await else {
        return;
    };
    let q = unique("long");
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    within(
        "declare",
        ch.queue_declare(&q, durable(), FieldTable::default()),
    )
    .await
    .unwrap();
    let persistent = BasicProperties::default().with_delivery_mode(2);
    for (i, b) in bodies(0..300).into_iter().enumerate() {
        // Every third one transient: those are paged too, but do not survive.
        let props = if i % 3 == 2 {
            BasicProperties::default()
        } else {
            persistent.clone()
        };
        lp::publish_with(&ch, "", &q, b.as_bytes(), props).await;
    }
    let _ = within("get", ch.basic_get(&q, Default::default())).await;
    drop(conn);
    let broker = broker.restart().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let expect: Vec<String> = (0..300)
        .filter(|i| i % 3 != 2)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(lp::message_count(&ch, &q).await, expect.len() as u32);
    assert_eq!(lp::drain(&ch, &q).await, expect);
}
