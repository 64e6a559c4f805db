//! Oversize input: a content header declaring a 2 GiB body, and a frame header declaring a
//! 2 GiB frame. Each is refused with RabbitMQ's code before anything that size is held, and
//! the broker's resident memory stays flat. One test in its own file (its own process), so
//! that no other test moves the RSS it watches.

mod common;

use common::raw::{self, Args, RawClient};
use common::TestBroker;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss");
    pages * 4096
}

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_gib_body_or_frame_is_refused_and_memory_stays_flat() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let (mut c, tune) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    let before = rss_bytes();
    // basic.publish, then a header declaring 2 GiB: 406 on the channel, as RabbitMQ does.
    let publish = Args::new().u16(0).shortstr("").shortstr("q").u8(0);
    c.send(&raw::method_frame(1, 60, 40, publish))
        .await
        .expect("send");
    let header = Args::new().u16(60).u16(0).u64(2 << 30).u16(0);
    c.send(&raw::frame(raw::FRAME_HEADER, 1, &header.0))
        .await
        .expect("send");
    // The client goes on sending 64 MiB of that body before it reads the close: discarded.
    let chunk = vec![b'x'; tune.frame_max as usize - 8];
    let mut sent = 0;
    while sent < 64 * MIB {
        c.send(&raw::frame(raw::FRAME_BODY, 1, &chunk))
            .await
            .expect("send body");
        sent += chunk.len() as u64;
    }
    let close = c.expect_method(20, 40).await;
    assert_eq!(close.close_code(), Some(406));
    assert_eq!(
        close.close_text().as_deref(),
        Some("PRECONDITION_FAILED - message size 2147483648 is larger than configured max size 16777216")
    );
    c.send(&raw::method_frame(1, 20, 41, Args::new()))
        .await
        .expect("close-ok");
    c.open_channel(1).await;
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 32 * MIB,
        "RSS grew {} MiB for a refused 2 GiB body",
        grown / MIB
    );

    // A frame header declaring 2 GiB: 501 FRAME_ERROR for the connection, nothing buffered.
    let mut huge = vec![raw::FRAME_BODY];
    huge.extend_from_slice(&1u16.to_be_bytes());
    huge.extend_from_slice(&(2u32 << 30).to_be_bytes());
    huge.extend_from_slice(&[b'x'; 4096]);
    c.send(&huge).await.expect("send");
    c.expect_close(501).await;
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 32 * MIB,
        "RSS grew {} MiB for a refused 2 GiB frame",
        grown / MIB
    );
}
