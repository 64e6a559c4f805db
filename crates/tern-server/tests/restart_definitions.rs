//! Durable definitions survive a restart; transient ones, exclusive queues and what goes with
//! them do not. Driven by lapin against a server restarted on the same data directory.

mod common;

use common::lapin_support::{self as lp, code_of};
use common::{unique, within, TestBroker};
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

fn durable_q() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn passive_q() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

async fn exchange(ch: &Channel, name: &str, durable: bool) {
    let opts = ExchangeDeclareOptions {
        durable,
        ..Default::default()
    };
    within(
        "exchange.declare",
        ch.exchange_declare(name, ExchangeKind::Topic, opts, FieldTable::default()),
    )
    .await
    .expect("exchange.declare");
}

async fn queue_exists(conn: &lapin::Connection, name: &str) -> bool {
    let ch = lp::channel(conn).await;
    match ch
        .queue_declare(name, passive_q(), FieldTable::default())
        .await
    {
        Ok(_) => true,
        Err(e) => {
            assert_eq!(code_of::<()>(Err(e)), 404);
            false
        }
    }
}

async fn exchange_exists(conn: &lapin::Connection, name: &str) -> bool {
    let ch = lp::channel(conn).await;
    let opts = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match ch
        .exchange_declare(name, ExchangeKind::Topic, opts, FieldTable::default())
        .await
    {
        Ok(()) => true,
        Err(e) => {
            assert_eq!(code_of::<()>(Err(e)), 404);
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_definitions_survive_a_restart_and_transient_ones_do_not() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let (dx, tx) = (unique("durable-x"), unique("transient-x"));
    let (dq, tq) = (unique("durable-q"), unique("transient-q"));
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    exchange(&ch, &dx, true).await;
    exchange(&ch, &tx, false).await;
    within(
        "declare",
        ch.queue_declare(&dq, durable_q(), FieldTable::default()),
    )
    .await
    .unwrap();
    lp::declare_queue(&ch, &tq).await;
    let exclusive = lp::temp_queue(&ch).await;
    lp::bind(&ch, &dq, &dx, "orders.*").await;
    lp::bind(&ch, &tq, &dx, "#").await;

    let broker = broker.restart().await;
    let conn = lp::connect(&broker).await;
    assert!(exchange_exists(&conn, &dx).await, "durable exchange");
    assert!(queue_exists(&conn, &dq).await, "durable queue");
    assert!(!exchange_exists(&conn, &tx).await, "transient exchange");
    assert!(!queue_exists(&conn, &tq).await, "transient queue");
    assert!(!queue_exists(&conn, &exclusive).await, "exclusive queue");
    // The durable binding routes; the one to the transient queue went with it.
    let ch = lp::confirmed_channel(&conn).await;
    lp::publish(&ch, &dx, "orders.new", b"routed").await;
    lp::publish(&ch, &dx, "other", b"dropped").await;
    assert_eq!(lp::drain(&ch, &dq).await, ["routed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_durable_definitions_stay_deleted_after_a_restart() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let (x, q) = (unique("x"), unique("q"));
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    exchange(&ch, &x, true).await;
    within(
        "declare",
        ch.queue_declare(&q, durable_q(), FieldTable::default()),
    )
    .await
    .unwrap();
    within("delete", ch.exchange_delete(&x, Default::default()))
        .await
        .unwrap();
    within("delete", ch.queue_delete(&q, Default::default()))
        .await
        .unwrap();
    let broker = broker.restart().await;
    let conn = lp::connect(&broker).await;
    assert!(!exchange_exists(&conn, &x).await);
    assert!(!queue_exists(&conn, &q).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_cannot_use_a_data_directory_in_use() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let mut config = tern_server::Config::for_tests();
    config.data_dir = broker.data_dir().to_path_buf();
    let second = tern_server::start(config).await;
    assert!(
        matches!(second, Err(tern_server::StartError::DataDir(_))),
        "{:?}",
        second.err()
    );
}
