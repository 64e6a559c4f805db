//! What a node does when it must stop: a shutdown racing definition changes, and a disk that
//! fails under it. Neither may exit the process from inside the library (these tests run in
//! the same process as the broker: an exit would end them all). Clients in flight get an
//! AMQP error; a storage failure is reported to the broker's owner through
//! `ServerHandle::failed`, which `tern server` turns into a non-zero exit.

mod common;

use std::sync::Arc;

use common::lapin_support::{self as lp};
use common::{eventually, unique, within, TestBroker};
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use tern_store::sim::SimFs;
use tokio::sync::mpsc;

/// Clients that declare queues in a loop until the broker refuses.
const DECLARERS: usize = 6;

/// Declare queues until the broker refuses; tell `running` after the first one. The refusal's reply code, or 0 for a
/// refusal without one (the socket closed before the answer).
async fn declare_until_refused(conn: Connection, running: mpsc::UnboundedSender<()>) -> u16 {
    let Ok(ch) = conn.create_channel().await else {
        return 0;
    };
    for i in 0u64.. {
        let declared = ch
            .queue_declare(&unique("race"), Default::default(), FieldTable::default())
            .await;
        match declared {
            Ok(_) if i == 0 => {
                let _ = running.send(());
            }
            Ok(_) => {}
            Err(e) => return lp::closed_of(&e).map_or(0, |c| c.code),
        }
    }
    unreachable!("the loop ends with the broker's refusal")
}

/// Exchanges in the definitions import that is in flight when the node stops: enough batches
/// (256 commands each) that the metadata group stops before the last one is written.
/// Exchanges, not queues: durable queues would make the shutdown's flush slow.
const IMPORTED_EXCHANGES: usize = 50_000;

/// POST a large definitions import; its answer's status.
async fn import_definitions(api: String) -> reqwest::Result<reqwest::StatusCode> {
    let exchanges: Vec<_> = (0..IMPORTED_EXCHANGES)
        .map(|i| serde_json::json!({"name": format!("imported-{i}"), "vhost": "/", "type": "fanout", "durable": true}))
        .collect();
    let defs = serde_json::json!({ "exchanges": exchanges });
    let posted = reqwest::Client::new()
        .post(format!("{api}/api/definitions"))
        .basic_auth("guest", Some("guest"))
        .json(&defs)
        .send()
        .await?;
    Ok(posted.status())
}

/// Whether the management API lists an exchange `name`.
async fn has_exchange(api: &str, name: &str) -> bool {
    let got = reqwest::Client::new()
        .get(format!("{api}/api/exchanges/%2f/{name}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await;
    got.is_ok_and(|r| r.status().is_success())
}

/// The metadata group stops while AMQP clients declare and an HTTP import is half written:
/// the import's next write reaches a stopped group (which used to exit the process with 70).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definition_changes_racing_a_shutdown_are_refused_and_the_process_lives() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = format!("http://{}", broker.handle().management_addr());
    let (running, mut started) = mpsc::unbounded_channel();
    let mut amqp = Vec::new();
    for _ in 0..DECLARERS {
        let conn = lp::connect(&broker).await;
        amqp.push(tokio::spawn(declare_until_refused(conn, running.clone())));
    }
    for _ in 0..DECLARERS {
        within("every client declaring", started.recv()).await;
    }
    let import = tokio::spawn(import_definitions(api.clone()));
    eventually("the import under way", || has_exchange(&api, "imported-0")).await;

    broker.shutdown().await;
    let status = within("the import answered", import).await.expect("task");
    assert_eq!(
        status.expect("an HTTP answer"),
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "the import's writes after the metadata group stopped are refused with 503"
    );
    for task in amqp {
        let code = within("the AMQP client refused", task).await.expect("task");
        assert!(
            code == 320 || code == 0,
            "a declare in flight at shutdown is refused with 320 CONNECTION_FORCED, got {code}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_metadata_fsync_refuses_the_change_and_reports_the_failure() {
    let fs = SimFs::new();
    let Some(broker) = TestBroker::start_on(Arc::new(fs.clone())).await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let mut errors = lp::Errors::watch(&conn);
    let ch = lp::channel(&conn).await;
    lp::declare_queue(&ch, &unique("before")).await;

    fs.fail_sync_after(Some(0));
    let refused = ch
        .queue_declare(&unique("lost"), Default::default(), FieldTable::default())
        .await;
    assert_eq!(lp::code_of(refused), 541, "541 INTERNAL_ERROR");
    let closed = errors.next_hard().await;
    assert!(
        closed.text.contains("metadata storage failed"),
        "{}",
        closed.text
    );
    let why = within("the failure reported", broker.handle().failed()).await;
    assert!(why.contains("metadata storage failed"), "{why}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_queue_fsync_nacks_the_publish_and_reports_the_failure() {
    let fs = SimFs::new();
    let Some(broker) = TestBroker::start_on(Arc::new(fs.clone())).await else {
        return;
    };
    let q = unique("sick");
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(
        "declare",
        ch.queue_declare(&q, durable, FieldTable::default()),
    )
    .await
    .expect("queue.declare");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let persistent = BasicProperties::default().with_delivery_mode(2);
    lp::publish_with(&ch, "", &q, b"kept", persistent.clone()).await;

    fs.fail_sync_after(Some(0));
    let confirm = ch
        .basic_publish("", &q, Default::default(), b"not on disk", persistent)
        .await
        .expect("basic.publish");
    let answer = within("the publisher's answer", confirm).await;
    assert!(
        answer.expect("an answer").is_nack(),
        "a message whose fsync failed is nacked, never confirmed"
    );
    let why = within("the failure reported", broker.handle().failed()).await;
    assert!(why.contains(&format!("storage of queue '{q}'")), "{why}");
    let ch = lp::channel(&conn).await;
    let consume = ch
        .basic_consume(&q, "", Default::default(), FieldTable::default())
        .await;
    assert_eq!(lp::code_of(consume), 404, "the queue is down");
    broker.shutdown().await;
}
