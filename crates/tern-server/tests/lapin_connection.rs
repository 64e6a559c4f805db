//! Connections and channels, driven by lapin.

mod common;

use common::lapin_support::{self as lp, code_of};
use common::{unique, within, TestBroker};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_negotiates_frame_max_131072_channel_max_2047_and_heartbeat_60() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let config = conn.configuration();
    assert_eq!(config.frame_max(), 131_072);
    assert_eq!(config.channel_max(), 2047);
    assert_eq!(config.heartbeat(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_lower_the_heartbeat() {
    let broker = TestBroker::start().await;
    let uri = format!("{}?heartbeat=5", broker.uri);
    let conn = within(
        "connect",
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await
    .expect("connect");
    assert_eq!(conn.configuration().heartbeat(), 5);
    let ch = lp::channel(&conn).await;
    lp::temp_queue(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_with_access_refused_403() {
    let broker = TestBroker::start().await;
    for (user, password) in [("guest", "wrong"), ("nobody", "guest")] {
        let uri = broker.uri_with_user(user, password);
        let result = within(
            "connect",
            Connection::connect(&uri, ConnectionProperties::default()),
        )
        .await;
        // lapin advertises authentication_failure_close, so the refusal is a connection.close.
        assert_eq!(code_of(result.map(|_| ())), 403, "{user}/{password}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_vhost_is_refused_with_not_allowed_530() {
    let broker = TestBroker::start().await;
    let uri = broker.uri_with_vhost("no-such-vhost");
    let result = within(
        "connect",
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await;
    assert_eq!(code_of(result.map(|_| ())), 530);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_connection_from_the_client_is_clean_and_releases_it() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    lp::temp_queue(&ch).await;
    if !broker.is_reference() {
        broker.await_open_connections(1).await;
    }
    within("connection.close", conn.close(200, "bye"))
        .await
        .expect("close-ok from the server");
    if !broker.is_reference() {
        broker.await_open_connections(0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_closes_clients_with_connection_forced_320() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let (conn, mut errors) = lp::connect_watched(&broker).await;
    let ch = lp::channel(&conn).await;
    lp::temp_queue(&ch).await;
    broker.shutdown().await;
    let closed = errors.next_hard().await;
    assert_eq!(closed.code, 320, "{closed:?}");
    assert_eq!(
        closed.text,
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_leaves_the_connection_and_its_other_channels_usable() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let a = lp::channel(&conn).await;
    let b = lp::confirmed_channel(&conn).await;
    let queue = lp::temp_queue(&a).await;
    within("channel.close", a.close(200, "done"))
        .await
        .expect("channel close-ok");
    assert!(!a.status().connected());
    lp::publish(&b, "", &queue, b"still here").await;
    assert_eq!(lp::message_count(&b, &queue).await, 1);
    let c = lp::channel(&conn).await;
    assert_eq!(lp::message_count(&c, &queue).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_channels_can_be_used_at_once_on_one_connection() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let mut channels = Vec::new();
    for _ in 0..100 {
        // Channels are independent streams: confirms tell when each publish has landed.
        channels.push(lp::confirmed_channel(&conn).await);
    }
    let queue = lp::temp_queue(&channels[0]).await;
    for (i, ch) in channels.iter().enumerate() {
        lp::publish(ch, "", &queue, format!("{i}").as_bytes()).await;
    }
    assert_eq!(lp::message_count(&channels[99], &queue).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_error_leaves_the_connection_usable_on_another_channel() {
    let broker = TestBroker::start().await;
    let conn = lp::connect(&broker).await;
    let (doomed, mut errors) = lp::channel_watched(&conn).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let result = within(
        "passive declare",
        doomed.queue_declare(&unique("missing"), passive, FieldTable::default()),
    )
    .await;
    assert_eq!(code_of(result), 404);
    let closed = errors.next().await;
    assert_eq!((closed.code, closed.hard), (404, false), "{closed:?}");
    assert!(conn.status().connected());
    let other = lp::confirmed_channel(&conn).await;
    let queue = lp::temp_queue(&other).await;
    lp::publish(&other, "", &queue, b"fine").await;
    assert_eq!(lp::message_count(&other, &queue).await, 1);
    // The closed channel refuses further use on the client side.
    assert!(doomed
        .queue_delete(&queue, QueueDeleteOptions::default())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_from_one_client_are_independent() {
    let broker = TestBroker::start().await;
    let first = lp::connect(&broker).await;
    let second = lp::connect(&broker).await;
    let ch1 = lp::channel(&first).await;
    let ch2 = lp::confirmed_channel(&second).await;
    let queue = unique("shared");
    lp::declare_queue(&ch1, &queue).await;
    // (Whether close-ok arrives cleanly is checked by its own test.)
    let _ = within("close first", first.close(200, "bye")).await;
    lp::publish(&ch2, "", &queue, b"x").await;
    assert_eq!(
        lp::message_count(&ch2, &queue).await,
        1,
        "a non-exclusive queue outlives its declarer"
    );
    ch2.queue_delete(&queue, QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_with_a_one_second_heartbeat_stays_open() {
    let broker = TestBroker::start().await;
    let uri = format!("{}?heartbeat=1", broker.uri);
    let conn = within(
        "connect",
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await
    .expect("connect");
    let mut errors = lp::Errors::watch(&conn);
    let ch = lp::channel(&conn).await;
    // Idle for three heartbeat intervals: both sides must keep beating and neither may give up.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        conn.status().connected(),
        "state {:?}",
        conn.status().state()
    );
    lp::temp_queue(&ch).await;
    if let Ok(e) = tokio::time::timeout(common::QUIET, errors.next()).await {
        panic!("the connection reported {e:?}");
    }
}
