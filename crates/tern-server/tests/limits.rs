//! Limits that need a Tern configuration: connections (total and per vhost), consumers per
//! channel, the pre-login frame budget, and many clients that never finish the handshake.

mod common;

use std::time::Duration;

use common::lapin_support::{self as lp, closed_of};
use common::raw::{self, RawClient};
use common::{within, TestBroker, STEP};
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::io::AsyncReadExt;

async fn try_connect(uri: &str) -> Result<Connection, Option<(u16, String)>> {
    let result = within(
        "connect",
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await;
    result.map_err(|e| closed_of(&e).map(|c| (c.code, c.text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_socket_is_closed_at_once_and_a_freed_place_is_reused() {
    let Some(broker) = TestBroker::start_with(|c| c.max_connections = 2).await else {
        return;
    };
    let first = lp::connect(&broker).await;
    let _second = lp::connect(&broker).await;
    assert!(
        try_connect(&broker.uri).await.is_err(),
        "a third is refused"
    );
    within("close", first.close(200, "bye"))
        .await
        .expect("close");
    broker.await_open_connections(1).await;
    let third = try_connect(&broker.uri).await;
    assert!(third.is_ok(), "the freed place is taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_per_vhost_connection_open_gets_530() {
    let Some(broker) = TestBroker::start_with(|c| c.max_connections_per_vhost = 2).await else {
        return;
    };
    broker.ctl_ok(None, &["add_vhost", "other"]).await;
    broker
        .ctl_ok(
            Some("other"),
            &["set_permissions", "guest", ".*", ".*", ".*"],
        )
        .await;
    let first = lp::connect(&broker).await;
    let _second = lp::connect(&broker).await;
    let refused = try_connect(&broker.uri).await.err().flatten();
    let text = "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (2) is reached";
    assert_eq!(refused, Some((530, text.to_string())));
    let _other = try_connect(&broker.uri_with_vhost("other"))
        .await
        .expect("another vhost has its own count");
    within("close", first.close(200, "bye"))
        .await
        .expect("close");
    broker.await_open_connections(2).await;
    try_connect(&broker.uri).await.expect("a place in / again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_consumers_per_channel_the_connection_is_closed_with_530() {
    let Some(broker) = TestBroker::start_with(|c| c.max_consumers_per_channel = 2).await else {
        return;
    };
    let (conn, mut errors) = lp::connect_watched(&broker).await;
    let ch = lp::channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    let _first = lp::consume(&ch, &q).await;
    let _second = lp::consume(&ch, &q).await;
    let third = ch.basic_consume(
        &q,
        "",
        BasicConsumeOptions::default(),
        FieldTable::default(),
    );
    let third = within("basic.consume", third).await;
    assert!(third.is_err(), "{third:?}");
    let closed = errors.next_hard().await;
    assert_eq!(closed.code, 530);
    assert_eq!(
        closed.text,
        "NOT_ALLOWED - reached maximum (2) of consumers per channel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_above_the_pre_login_budget_closes_the_connection_with_501() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let (mut c, _) = RawClient::start(broker.addr).await;
    // A start-ok whose response alone is 16 KiB: more than the 8 KiB allowed before login.
    let big = vec![b'x'; 16 * 1024];
    c.send(&raw::start_ok("PLAIN", &big)).await.expect("send");
    c.expect_close(501).await;
    // A normal client is not affected.
    lp::temp_queue(&lp::channel(&lp::connect(&broker).await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_that_never_finish_the_handshake_are_closed_and_others_still_work() {
    let timeout = Duration::from_secs(2);
    let Some(broker) = TestBroker::start_with(|c| c.handshake_timeout = timeout).await else {
        return;
    };
    let mut loris = Vec::new();
    for i in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(broker.addr)
            .await
            .expect("connect");
        if i % 2 == 0 {
            // Half send the protocol header and stop there; half send nothing at all.
            use tokio::io::AsyncWriteExt;
            s.write_all(b"AMQP\x00\x00\x09\x01").await.expect("header");
        }
        loris.push(s);
    }
    // While they hang on, a real client connects and works.
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    lp::publish(&ch, "", &q, b"still served").await;
    assert_eq!(lp::drain(&ch, &q).await, ["still served"]);
    let closed = loris.into_iter().map(|mut s| async move {
        let mut buf = vec![0u8; 1024];
        // connection.start may come first; then the socket must end.
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    });
    let all = futures_util::future::join_all(closed);
    tokio::time::timeout(timeout + STEP, all)
        .await
        .expect("every stalled client closed by the handshake timeout");
    assert_eq!(
        broker.handle().open_connections(),
        1,
        "only the real client is left"
    );
}
