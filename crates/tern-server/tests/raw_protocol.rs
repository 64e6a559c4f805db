//! What only raw bytes can check: protocol header negotiation, exact start/tune contents,
//! frame limits and garbage, handshake timeout, heartbeats.

mod common;

use std::time::Duration;

use common::raw::{
    self, Args, Ending, RawClient, Value, FRAME_BODY, FRAME_HEARTBEAT, PROTOCOL_HEADER,
};
use common::{TestBroker, STEP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_headers_are_answered_with_the_0_9_1_header_and_closed() {
    let broker = TestBroker::start().await;
    // Spec 4.2.2: a header the server does not accept gets the one it does, then the socket
    // closes. (RabbitMQ also speaks 0-8 and 0-9, so those headers are left out.)
    let headers: [&[u8; 8]; 5] = [
        b"AMQP\x00\x01\x00\x00", // AMQP 1.0
        b"AMQP\x01\x01\x00\x0a", // 0-10
        b"AMQP\x00\x00\x09\x02", // a 0-9-2 that does not exist
        b"AMQP\x00\x00\x08\x00",
        b"HTTP/1.1",
    ];
    for header in headers {
        let mut c = RawClient::connect(broker.addr).await;
        c.send(header).await.unwrap();
        let answer = c.read_bytes(9).await;
        assert_eq!(
            answer,
            PROTOCOL_HEADER.to_vec(),
            "answer to {header:?}, then EOF"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_start_offers_0_9_with_plain_amqplain_and_en_us() {
    let broker = TestBroker::start().await;
    let (_c, start) = RawClient::start(broker.addr).await;
    assert_eq!(start.version, (0, 9));
    let mechanisms: Vec<&str> = start.mechanisms.split(' ').collect();
    assert!(mechanisms.contains(&"PLAIN"), "mechanisms {mechanisms:?}");
    assert!(
        mechanisms.contains(&"AMQPLAIN"),
        "mechanisms {mechanisms:?}"
    );
    assert!(
        start.locales.split(' ').any(|l| l == "en_US"),
        "locales {}",
        start.locales
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_properties_carry_product_version_platform_and_rabbitmq_capabilities() {
    let broker = TestBroker::start().await;
    let (_c, start) = RawClient::start(broker.addr).await;
    let props = &start.server_properties;
    for key in ["product", "version", "platform"] {
        match props.get(key) {
            Some(Value::Str(s)) if !s.is_empty() => {}
            other => panic!("server property {key} should be a non-empty longstr, got {other:?}"),
        }
    }
    let Some(Value::Table(caps)) = props.get("capabilities") else {
        panic!("no capabilities table in {props:?}");
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        assert_eq!(caps.get(cap), Some(&Value::Bool(true)), "capability {cap}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_offers_frame_max_131072_channel_max_2047_and_heartbeat_60() {
    let broker = TestBroker::start().await;
    let (_c, tune) = RawClient::until_tune(broker.addr).await;
    assert_eq!(
        tune,
        raw::Tune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqplain_login_as_guest_succeeds() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::start(broker.addr).await;
    // AMQPLAIN: a field table without its length prefix.
    let mut resp = Vec::new();
    for (k, v) in [("LOGIN", "guest"), ("PASSWORD", "guest")] {
        resp.push(k.len() as u8);
        resp.extend_from_slice(k.as_bytes());
        resp.push(b'S');
        resp.extend_from_slice(&(v.len() as u32).to_be_bytes());
        resp.extend_from_slice(v.as_bytes());
    }
    c.send(&raw::start_ok("AMQPLAIN", &resp)).await.unwrap();
    c.expect_method(10, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_with_access_refused_403() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::start(broker.addr).await;
    c.send(&raw::start_ok("PLAIN", b"\0guest\0wrong"))
        .await
        .unwrap();
    match c.await_end(STEP).await {
        Ending::Closed { code, .. } => assert_eq!(code, 403),
        Ending::Eof => {
            panic!("a client with authentication_failure_close should get connection.close 403")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_an_unknown_vhost_is_refused_with_not_allowed_530() {
    let broker = TestBroker::start().await;
    let (mut c, tune) = RawClient::until_tune(broker.addr).await;
    c.send(&raw::method_frame(
        0,
        10,
        31,
        Args::new().u16(tune.channel_max).u32(tune.frame_max).u16(0),
    ))
    .await
    .unwrap();
    c.send(&raw::method_frame(
        0,
        10,
        40,
        Args::new().shortstr("no-such-vhost").shortstr("").u8(0),
    ))
    .await
    .unwrap();
    c.expect_close(530).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_larger_than_frame_max_closes_the_connection_with_frame_error_501() {
    let broker = TestBroker::start().await;
    let (mut c, tune) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    let oversized = vec![7u8; tune.frame_max as usize + 1000];
    let mut bytes = raw::method_frame(
        1,
        60,
        40,
        Args::new().u16(0).shortstr("").shortstr("q").u8(0),
    );
    bytes.extend(raw::frame(
        2,
        1,
        &Args::new()
            .u16(60)
            .u16(0)
            .u64(oversized.len() as u64)
            .u16(0)
            .0,
    ));
    bytes.extend(raw::frame(FRAME_BODY, 1, &oversized));
    let _ = c.send(&bytes).await;
    match c.await_end(STEP).await {
        Ending::Closed { code, .. } => assert_eq!(code, 501),
        Ending::Eof => panic!("expected connection.close 501 before the socket closed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_frame_type_closes_the_connection_with_frame_error_501() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.send(&raw::frame(42, 0, b"garbage")).await.unwrap();
    c.expect_close(501).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_end_octet_closes_the_connection_with_frame_error_501() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    let mut bytes = raw::method_frame(1, 20, 10, Args::new().shortstr(""));
    *bytes.last_mut().unwrap() = 0x00;
    c.send(&bytes).await.unwrap();
    c.expect_close(501).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_on_a_channel_that_was_never_opened_closes_the_connection_with_channel_error_504()
{
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    // queue.declare on channel 3 without channel.open.
    let declare = Args::new().u16(0).shortstr("q").u8(0).table(&[]);
    c.send(&raw::method_frame(3, 50, 10, declare))
        .await
        .unwrap();
    c.expect_close(504).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_body_without_a_publish_closes_the_connection_with_unexpected_frame_505() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    c.send(&raw::frame(FRAME_BODY, 1, b"orphan body"))
        .await
        .unwrap();
    c.expect_close(505).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_where_a_content_header_is_due_closes_the_connection_with_unexpected_frame_505() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    c.send(&raw::method_frame(
        1,
        60,
        40,
        Args::new().u16(0).shortstr("").shortstr("q").u8(0),
    ))
    .await
    .unwrap();
    // basic.qos instead of the content header.
    c.send(&raw::method_frame(
        1,
        60,
        10,
        Args::new().u32(0).u16(1).u8(0),
    ))
    .await
    .unwrap();
    c.expect_close(505).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_on_a_channel_other_than_zero_closes_the_connection_with_unexpected_frame_505()
{
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    c.send(&raw::frame(FRAME_HEARTBEAT, 1, &[])).await.unwrap();
    // Spec 4.2.7 asks for 501 here, but RabbitMQ (the reference) answers
    // "505 UNEXPECTED_FRAME - type 8".
    let ending = c.await_end(STEP).await;
    assert!(
        matches!(ending, Ending::Closed { code: 505, .. }),
        "{ending:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_ends_the_connection() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    c.send(&raw::method_frame(1, 60, 999, Args::new()))
        .await
        .unwrap();
    // RabbitMQ drops the socket; a connection.close with a hard error code is as good.
    match c.await_end(STEP).await {
        Ending::Eof => {}
        Ending::Closed { code, text } => assert!(code >= 500, "closed with {code} {text}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_false_from_the_client_closes_the_connection_with_not_implemented_540()
{
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    c.send(&raw::method_frame(1, 20, 20, Args::new().u8(1)))
        .await
        .unwrap();
    let flow_ok = c.expect_method(20, 21).await;
    assert_eq!(flow_ok.args().u8(), Some(1), "flow-ok echoes active=true");
    c.send(&raw::method_frame(1, 20, 20, Args::new().u8(0)))
        .await
        .unwrap();
    let ending = c.await_end(STEP).await;
    assert!(
        matches!(ending, Ending::Closed { code: 540, .. }),
        "{ending:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_channel_open_on_an_open_channel_closes_the_connection_with_channel_error_504() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    c.send(&raw::method_frame(1, 20, 10, Args::new().shortstr("")))
        .await
        .unwrap();
    c.expect_close(504).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_more_channels_than_the_negotiated_channel_max_is_refused_with_not_allowed_530() {
    let broker = TestBroker::start().await;
    let (mut c, tune) = RawClient::until_tune(broker.addr).await;
    c.send(&raw::method_frame(
        0,
        10,
        31,
        Args::new().u16(10).u32(tune.frame_max).u16(0),
    ))
    .await
    .unwrap();
    c.send(&raw::method_frame(
        0,
        10,
        40,
        Args::new().shortstr("/").shortstr("").u8(0),
    ))
    .await
    .unwrap();
    c.expect_method(10, 41).await;
    for ch in 1..=10 {
        c.open_channel(ch).await;
    }
    c.send(&raw::method_frame(11, 20, 10, Args::new().shortstr("")))
        .await
        .unwrap();
    let ending = c.await_end(STEP).await;
    assert!(
        matches!(ending, Ending::Closed { code: 530, .. }),
        "{ending:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_socket_is_closed_after_the_handshake_timeout() {
    let Some(broker) =
        TestBroker::start_with(|c| c.handshake_timeout = Duration::from_millis(300)).await
    else {
        return;
    };
    // Connected, protocol header sent, then silence.
    let mut c = RawClient::connect(broker.addr).await;
    c.send(PROTOCOL_HEADER).await.unwrap();
    c.expect_method(10, 10).await;
    let started = std::time::Instant::now();
    c.await_end(STEP).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        started.elapsed()
    );

    // And a socket that never even sends the protocol header.
    let mut silent = RawClient::connect(broker.addr).await;
    assert_eq!(silent.await_end(STEP).await, Ending::Eof);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_heartbeats_is_disconnected() {
    let broker = TestBroker::start().await;
    // Negotiate a 1 s heartbeat, then go silent: the server must notice within a few intervals
    // (RabbitMQ: after two missed heartbeats).
    let (mut c, _) = RawClient::open(broker.addr, 1).await;
    let started = std::time::Instant::now();
    c.await_end(Duration::from_secs(8)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sends_heartbeats_at_the_negotiated_interval() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 1).await;
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while seen < 2 {
        c.send(&raw::heartbeat_frame()).await.unwrap();
        let f = tokio::time::timeout_at(deadline, c.read_frame())
            .await
            .expect("no heartbeat from the server within 4 s")
            .expect("read")
            .expect("connection closed although we kept sending heartbeats");
        assert_eq!(f.kind, FRAME_HEARTBEAT, "unexpected frame {f:?}");
        assert_eq!(f.channel, 0);
        seen += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_heartbeats_stays_connected_past_the_timeout() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 1).await;
    // Keep beating for 3 s (three intervals); the connection must survive and still work.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        c.send(&raw::heartbeat_frame()).await.unwrap();
        if let Ok(f) = tokio::time::timeout(Duration::from_millis(400), c.read_frame()).await {
            let f = f
                .expect("read")
                .expect("connection closed although we kept sending heartbeats");
            assert_eq!(f.kind, FRAME_HEARTBEAT, "unexpected frame {f:?}");
        }
    }
    c.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_close_is_answered_with_close_ok() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    c.send(&raw::method_frame(
        0,
        10,
        50,
        Args::new().u16(200).shortstr("bye").u16(0).u16(0),
    ))
    .await
    .unwrap();
    // The client closes the socket once it has close-ok (RabbitMQ waits for it to).
    c.expect_method(10, 51).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_on_a_raw_connection_returns_what_was_published() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    let queue = common::unique("raw-q");
    c.send(&raw::method_frame(
        1,
        50,
        10,
        Args::new().u16(0).shortstr(&queue).u8(0b0100).table(&[]),
    ))
    .await
    .unwrap();
    c.expect_method(50, 11).await;
    c.send(&raw::publish_frames(1, "", &queue, b"raw hello"))
        .await
        .unwrap();
    c.send(&raw::method_frame(
        1,
        60,
        70,
        Args::new().u16(0).shortstr(&queue).u8(1),
    ))
    .await
    .unwrap();
    let get_ok = c.expect_method(60, 71).await;
    let mut r = get_ok.args();
    assert_eq!(r.u64(), Some(1), "first delivery tag");
    let header = c.read_frame().await.unwrap().unwrap();
    assert_eq!(header.kind, 2);
    let body = c.read_frame().await.unwrap().unwrap();
    assert_eq!(body.kind, FRAME_BODY);
    assert_eq!(body.payload, b"raw hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_qos_with_a_prefetch_size_closes_the_connection_with_not_implemented_540() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    c.send(&raw::method_frame(
        1,
        60,
        10,
        Args::new().u32(65_536).u16(10).u8(0),
    ))
    .await
    .unwrap();
    c.expect_close(540).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_in_flight_on_a_channel_the_server_closed_are_discarded_and_the_channel_can_be_reopened(
) {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    // Passive declare of a missing queue: channel.close 404 on channel 1.
    let declare = Args::new()
        .u16(0)
        .shortstr(&common::unique("missing"))
        .u8(0b1)
        .table(&[]);
    c.send(&raw::method_frame(1, 50, 10, declare))
        .await
        .unwrap();
    let close = c.expect_method(20, 40).await;
    assert_eq!((close.channel, close.close_code()), (1, Some(404)));
    // Frames the client sent before it saw the close (a method, a whole publish with its
    // content) are discarded, not errors (spec 4.2.7 / channel.close).
    c.send(&raw::method_frame(
        1,
        60,
        10,
        Args::new().u32(0).u16(1).u8(0),
    ))
    .await
    .unwrap();
    c.send(&raw::publish_frames(1, "", "q", b"in flight"))
        .await
        .unwrap();
    c.send(&raw::method_frame(1, 20, 41, Args::new()))
        .await
        .unwrap();
    c.open_channel(1).await;
    c.open_channel(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn having_closed_a_connection_the_server_drops_the_socket_as_soon_as_it_has_close_ok() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.send(&raw::frame(42, 0, b"garbage")).await.unwrap();
    let close = c.expect_method(10, 50).await;
    assert_eq!(close.close_code(), Some(501));
    c.send(&raw::method_frame(0, 10, 51, Args::new()))
        .await
        .unwrap();
    // connection.close-ok "tells the recipient that it is safe to ... close the socket": the
    // side that asked for the close does so then (RabbitMQ at once), it does not wait for the
    // client to hang up.
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_millis(500), c.read_frame()).await;
    assert!(
        matches!(end, Ok(Ok(None)) | Ok(Err(_))),
        "socket still open {:?} after close-ok: {end:?}",
        started.elapsed()
    );
}

/// Answer tune with these values and open vhost `/`; what happens is the test's business.
async fn tune_and_open(broker: &TestBroker, channel_max: u16, frame_max: u32) -> RawClient {
    let (mut c, _) = RawClient::until_tune(broker.addr).await;
    c.send(&raw::method_frame(
        0,
        10,
        31,
        Args::new().u16(channel_max).u32(frame_max).u16(0),
    ))
    .await
    .unwrap();
    c.send(&raw::method_frame(
        0,
        10,
        40,
        Args::new().shortstr("/").shortstr("").u8(0),
    ))
    .await
    .unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_ok_values_outside_what_the_server_offered_are_refused() {
    let broker = TestBroker::start().await;
    // RabbitMQ: "failed to negotiate connection parameters: negotiated channel_max = 4000 is
    // higher than the maximum allowed value (2047)", and likewise for 0 (= unlimited) and for
    // frame_max below 4096 or above the offer.
    let cases = [
        (0, 131_072),
        (4000, 131_072),
        (2047, 0),
        (2047, 1024),
        (2047, 1 << 20),
    ];
    // In parallel: RabbitMQ takes a few seconds over each refusal.
    let attempts = cases.map(|(channel_max, frame_max)| {
        let broker = &broker;
        async move {
            let mut c = tune_and_open(broker, channel_max, frame_max).await;
            let what = format!("tune-ok channel_max={channel_max} frame_max={frame_max}");
            loop {
                let Ok(read) = tokio::time::timeout(STEP, c.read_frame()).await else {
                    return Err(format!("{what}: no answer"));
                };
                match read {
                    // The socket closed (RabbitMQ closes at once, so a reset may eat its close).
                    Ok(None) | Err(_) => return Ok(()),
                    Ok(Some(f)) if f.method() == Some((10, 50)) => {
                        return match f.close_code() {
                            Some(530) => Ok(()),
                            other => Err(format!(
                                "{what}: closed with {other:?} {:?}",
                                f.close_text()
                            )),
                        };
                    }
                    Ok(Some(f)) if f.method() == Some((10, 41)) => {
                        return Err(format!("{what} was accepted"))
                    }
                    Ok(Some(_)) => {}
                }
            }
        }
    });
    let failures: Vec<String> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_max_the_client_lowered_is_enforced_on_its_frames() {
    let broker = TestBroker::start().await;
    let mut c = tune_and_open(&broker, 2047, 4096).await;
    c.expect_method(10, 41).await;
    c.open_channel(1).await;
    let body = vec![1u8; 5000];
    let mut bytes = raw::method_frame(
        1,
        60,
        40,
        Args::new().u16(0).shortstr("").shortstr("q").u8(0),
    );
    bytes.extend(raw::frame(
        2,
        1,
        &Args::new().u16(60).u16(0).u64(body.len() as u64).u16(0).0,
    ));
    bytes.extend(raw::frame(FRAME_BODY, 1, &body));
    c.send(&bytes).await.unwrap();
    c.expect_close(501).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_split_to_a_frame_max_the_client_lowered() {
    let broker = TestBroker::start().await;
    let mut c = tune_and_open(&broker, 2047, 4096).await;
    c.expect_method(10, 41).await;
    c.open_channel(1).await;
    let queue = common::unique("small-frames");
    c.send(&raw::method_frame(
        1,
        50,
        10,
        Args::new().u16(0).shortstr(&queue).u8(0b0100).table(&[]),
    ))
    .await
    .unwrap();
    c.expect_method(50, 11).await;
    let body = common::patterned_body(20_000);
    // Published in 4088-byte body frames, as the client must.
    let mut bytes = raw::method_frame(
        1,
        60,
        40,
        Args::new().u16(0).shortstr("").shortstr(&queue).u8(0),
    );
    bytes.extend(raw::frame(
        2,
        1,
        &Args::new().u16(60).u16(0).u64(body.len() as u64).u16(0).0,
    ));
    for chunk in body.chunks(4096 - 8) {
        bytes.extend(raw::frame(FRAME_BODY, 1, chunk));
    }
    c.send(&bytes).await.unwrap();
    c.send(&raw::method_frame(
        1,
        60,
        70,
        Args::new().u16(0).shortstr(&queue).u8(1),
    ))
    .await
    .unwrap();
    c.expect_method(60, 71).await;
    let mut got = Vec::new();
    while got.len() < body.len() {
        let f = tokio::time::timeout(STEP, c.read_frame())
            .await
            .expect("body frames")
            .unwrap()
            .unwrap();
        assert!(
            f.payload.len() + 8 <= 4096,
            "a {}-byte frame exceeds frame_max 4096",
            f.payload.len() + 8
        );
        if f.kind == FRAME_BODY {
            got.extend_from_slice(&f.payload);
        }
    }
    assert!(got == body, "body corrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_an_exchange_of_an_unknown_type_closes_the_connection_with_command_invalid_503() {
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    let declare = Args::new()
        .u16(0)
        .shortstr(&common::unique("ex"))
        .shortstr("x-no-such-type")
        .u8(0)
        .table(&[]);
    c.send(&raw::method_frame(1, 40, 10, declare))
        .await
        .unwrap();
    c.expect_close(503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_that_are_not_utf8_reach_the_consumer_byte_for_byte() {
    // A Go client's raw UUID as correlation-id, a header key with a stray byte: RabbitMQ takes
    // short strings as bytes and hands them on unchanged.
    let broker = TestBroker::start().await;
    let (mut c, _) = RawClient::open(broker.addr, 0).await;
    c.open_channel(1).await;
    let queue = common::unique("raw-binary-props");
    let declare = Args::new().u16(0).shortstr(&queue).u8(0b0100).table(&[]);
    c.send(&raw::method_frame(1, 50, 10, declare))
        .await
        .unwrap();
    c.expect_method(50, 11).await;
    let headers: &[u8] = b"\x02k\xffS\x00\x00\x00\x01v";
    let mut properties = ((1u16 << 13) | (1 << 10)).to_be_bytes().to_vec();
    properties.extend((headers.len() as u32).to_be_bytes());
    properties.extend(headers);
    properties.extend(b"\x04\xff\x00\xfe\x80");
    let publish = Args::new().u16(0).shortstr("").shortstr(&queue).u8(0);
    let mut frames = raw::method_frame(1, 60, 40, publish);
    let mut header = Args::new().u16(60).u16(0).u64(2).0;
    header.extend(&properties);
    frames.extend(raw::frame(raw::FRAME_HEADER, 1, &header));
    frames.extend(raw::frame(FRAME_BODY, 1, b"hi"));
    c.send(&frames).await.unwrap();
    let get = Args::new().u16(0).shortstr(&queue).u8(1);
    c.send(&raw::method_frame(1, 60, 70, get)).await.unwrap();
    c.expect_method(60, 71).await;
    let got = c.read_frame().await.unwrap().unwrap();
    assert_eq!(got.kind, raw::FRAME_HEADER);
    assert_eq!(
        &got.payload[12..],
        &properties[..],
        "properties as published"
    );
}
