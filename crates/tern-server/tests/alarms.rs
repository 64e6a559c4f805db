//! The disk and memory alarms: below the free-space limit, or above the memory high
//! watermark, connections that publish are blocked (connection.blocked, their sockets not
//! read) until the resource returns; others go on.

mod common;

use std::time::Duration;

use common::lapin_support as lp;
use common::raw::{self, Args, RawClient};
use common::{unique, within, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_blocked_while_disk_is_low_and_unblocked_when_it_is_not() {
    let low_disk = |c: &mut tern_server::Config| {
        c.disk_free_limit_bytes = u64::MAX; // no disk has that much free: the alarm is on
        c.disk_check_interval = Duration::from_millis(20);
    };
    let clear = |h: &tern_server::ServerHandle| h.set_disk_free_limit(0);
    blocked_until_cleared(low_disk, "low on disk", clear).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_blocked_above_the_memory_high_watermark() {
    let high_memory = |c: &mut tern_server::Config| {
        c.memory_high_watermark = tern_server::config::MemoryWatermark::Bytes(1);
        c.memory_check_interval = Duration::from_millis(20);
    };
    let clear = |h: &tern_server::ServerHandle| h.set_memory_high_watermark(u64::MAX);
    blocked_until_cleared(high_memory, "low on memory", clear).await;
}

async fn blocked_until_cleared(
    alarmed: impl FnOnce(&mut tern_server::Config),
    reason: &str,
    clear: impl FnOnce(&tern_server::ServerHandle),
) {
    let Some(broker) = TestBroker::start_with(alarmed).await else {
        return;
    };
    let q = unique("alarmed");
    let other = lp::connect(&broker).await;
    let och = lp::channel(&other).await;
    lp::declare_queue(&och, &q).await;

    let (mut publisher, _) = RawClient::open(broker.addr, 0).await;
    publisher.open_channel(1).await;
    publisher
        .send(&raw::publish_frames(1, "", &q, b"first"))
        .await
        .unwrap();
    let blocked = publisher.expect_method(10, 60).await;
    assert_eq!(blocked.args().shortstr().as_deref(), Some(reason));
    // Blocked: what it sends now is not read, so it cannot reach the queue.
    publisher
        .send(&raw::publish_frames(1, "", &q, b"second"))
        .await
        .unwrap();
    // A connection that does not publish is not blocked: it still gets answers.
    assert_eq!(lp::message_count(&och, &q).await, 1);
    tokio::time::sleep(common::QUIET).await;
    assert_eq!(
        lp::message_count(&och, &q).await,
        1,
        "the blocked publish stayed unread"
    );

    clear(broker.handle());
    publisher.expect_method(10, 61).await;
    common::eventually("the second publish to be read", || async {
        lp::message_count(&och, &q).await == 2
    })
    .await;
    // And the unblocked connection is fully usable again.
    let declare = Args::new().u16(0).shortstr(&q).u8(0b0001).table(&[]);
    publisher
        .send(&raw::method_frame(1, 50, 10, declare))
        .await
        .unwrap();
    within("declare-ok", publisher.expect_method(50, 11)).await;
}
