//! Connections and channels, driven by amqprs.

mod common;

use amqprs::channel::QueueDeclareArguments;
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::security::SecurityCredentials;
use common::amqprs_support::{self as rs, open_args};
use common::{unique, within, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_sees_a_product_version_and_rabbitmq_capabilities() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let props = conn.server_properties();
    assert!(
        !props.product().is_empty() && props.product() != "unknown",
        "product {:?}",
        props.product()
    );
    assert!(
        !props.version().is_empty() && props.version() != "unknown",
        "version {:?}",
        props.version()
    );
    let caps = props.capabilities();
    assert!(caps.publisher_confirms(), "publisher_confirms");
    assert!(
        caps.exchange_exchange_bindings(),
        "exchange_exchange_bindings"
    );
    assert!(caps.basic_nack(), "basic.nack");
    assert!(caps.consumer_cancel_notify(), "consumer_cancel_notify");
    assert!(caps.connection_blocked(), "connection.blocked");
    assert!(caps.consumer_priorities(), "consumer_priorities");
    assert!(
        caps.authentication_failure_close(),
        "authentication_failure_close"
    );
    assert!(caps.per_consumer_qos(), "per_consumer_qos");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_negotiates_frame_max_131072_channel_max_2047_and_heartbeat_60() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    assert_eq!(conn.frame_max(), 131_072);
    assert_eq!(conn.channel_max(), 2047);
    assert_eq!(conn.heartbeat(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_may_lower_the_heartbeat_and_keep_working() {
    let broker = TestBroker::start().await;
    let args = open_args(&broker).heartbeat(10).finish();
    let (conn, _) = rs::connect_with(&args).await;
    assert_eq!(conn.heartbeat(), 10);
    let (ch, _) = rs::open_channel(&conn).await;
    rs::declare(&ch, QueueDeclareArguments::exclusive_server_named()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqplain_login_works() {
    let broker = TestBroker::start().await;
    let args = open_args(&broker)
        .credentials(SecurityCredentials::new_amqplain("guest", "guest"))
        .finish();
    let (conn, _) = rs::connect_with(&args).await;
    let (ch, _) = rs::open_channel(&conn).await;
    rs::declare(&ch, QueueDeclareArguments::exclusive_server_named()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_the_open_and_a_right_one_still_works() {
    let broker = TestBroker::start().await;
    // amqprs does not advertise authentication_failure_close: RabbitMQ just drops the socket.
    let bad = OpenConnectionArguments::new(&broker.host(), broker.port(), "guest", "nope");
    let result = within("open with a wrong password", Connection::open(&bad)).await;
    assert!(result.is_err(), "login with a wrong password succeeded");
    let (conn, _) = rs::connect(&broker).await;
    assert!(conn.is_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_vhost_fails_the_open_with_not_allowed_530() {
    let broker = TestBroker::start().await;
    let args = open_args(&broker).virtual_host("no-such-vhost").finish();
    let Err(err) = within("open", Connection::open(&args)).await else {
        panic!("opened a vhost that does not exist");
    };
    assert!(err.to_string().contains("530"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_connection_from_the_client_is_acknowledged() {
    let broker = TestBroker::start().await;
    let (conn, _) = rs::connect(&broker).await;
    let (ch, _) = rs::open_channel(&conn).await;
    rs::declare(&ch, QueueDeclareArguments::exclusive_server_named()).await;
    within("channel close", ch.close())
        .await
        .expect("channel close-ok");
    within("connection close", conn.close())
        .await
        .expect("connection close-ok");
    if !broker.is_reference() {
        broker.await_open_connections(0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_sends_connection_forced_320() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let (conn, mut closes) = rs::connect(&broker).await;
    let (_ch, _) = rs::open_channel(&conn).await;
    broker.shutdown().await;
    let closed = rs::next_conn_close(&mut closes).await;
    assert_eq!(closed.code, 320, "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_error_closes_only_that_channel() {
    let broker = TestBroker::start().await;
    let (conn, mut conn_closes) = rs::connect(&broker).await;
    let (doomed, mut events) = rs::open_channel(&conn).await;
    let passive = QueueDeclareArguments::new(&unique("missing"))
        .passive(true)
        .finish();
    assert!(within("passive declare", doomed.queue_declare(passive))
        .await
        .is_err());
    let (code, text) = events.next_close().await;
    assert_eq!(code, 404, "{text}");
    let (other, mut other_events) = rs::open_confirmed_channel(&conn).await;
    let (queue, ..) = rs::declare(&other, QueueDeclareArguments::exclusive_server_named()).await;
    rs::publish(&other, "", &queue, b"fine").await;
    other_events.await_acks_through(1).await;
    assert_eq!(rs::message_count(&other, &queue).await, 1);
    assert!(conn_closes.try_recv().is_err(), "the connection was closed");
}
