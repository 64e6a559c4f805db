//! A rough check of the codec's speed on the publish path. Ignored by default; run with
//! `cargo test --release -p tern-amqp --test throughput -- --ignored --nocapture`.

use std::time::Instant;

use bytes::BytesMut;
use tern_amqp::frame::{decode_frame, encode_body, encode_content_header, encode_method};
use tern_amqp::{BasicDeliver, BasicProperties, BasicPublish, Method};

const MESSAGES: usize = 1_000_000;

fn publish_batch(messages: usize) -> BytesMut {
    let publish: Method = BasicPublish {
        exchange: "amq.direct".into(),
        routing_key: "orders.eu".into(),
        ..Default::default()
    }
    .into();
    let props = BasicProperties {
        content_type: Some("application/json".into()),
        delivery_mode: Some(2),
        ..Default::default()
    };
    let body = [b'x'; 64];
    let mut buf = BytesMut::new();
    for _ in 0..messages {
        encode_method(1, &publish, &mut buf);
        encode_content_header(1, 60, body.len() as u64, &props, &mut buf);
        encode_body(1, &body, 131_072, &mut buf);
    }
    buf
}

#[test]
#[ignore]
fn decodes_and_encodes_over_a_million_frames_a_second() {
    let start = Instant::now();
    let mut buf = publish_batch(MESSAGES);
    let encode_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut frames = 0usize;
    while let Some(frame) = decode_frame(&mut buf, 131_072).unwrap() {
        frames += 1;
        std::hint::black_box(frame);
    }
    let decode_secs = start.elapsed().as_secs_f64();
    assert_eq!(frames, 3 * MESSAGES);

    let deliver: Method = BasicDeliver {
        consumer_tag: "amq.ctag-1".into(),
        delivery_tag: 1,
        exchange: "amq.direct".into(),
        routing_key: "orders.eu".into(),
        ..Default::default()
    }
    .into();
    let mut out = BytesMut::with_capacity(64 * MESSAGES);
    let start = Instant::now();
    for _ in 0..MESSAGES {
        encode_method(1, &deliver, &mut out);
    }
    let deliver_secs = start.elapsed().as_secs_f64();

    let rate = |n: usize, secs: f64| n as f64 / secs / 1e6;
    println!(
        "encode publish+header+body: {:.1} M frames/s",
        rate(3 * MESSAGES, encode_secs)
    );
    println!(
        "decode publish+header+body: {:.1} M frames/s",
        rate(frames, decode_secs)
    );
    println!(
        "encode basic.deliver:       {:.1} M frames/s",
        rate(MESSAGES, deliver_secs)
    );
    assert!(
        rate(frames, decode_secs) > 1.0,
        "decoding under 1M frames/s"
    );
}
