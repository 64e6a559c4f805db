//! Links over in-memory pipes: calls both ways, failures carried back, every bound hit, and
//! each way a link ends (closed here, closed there, a silent peer, a peer breaking protocol).

use tokio::io::{duplex, DuplexStream};

use super::*;

const STEP: Duration = Duration::from_secs(5);

fn peer(name: &str) -> Peer {
    Peer {
        node_name: name.into(),
        listen: format!("{name}:25672"),
    }
}

/// Answers with the body reversed; "fail" fails, "wait" never answers.
struct Echo;

impl Handler for Echo {
    fn call(
        &self,
        from: &Link,
        _service: Service,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        let from = from.peer().node_name.clone();
        Box::pin(async move {
            match &body[..] {
                b"fail" => Err(format!("refused for {from}")),
                b"wait" => std::future::pending().await,
                _ => Ok(body.iter().rev().copied().collect::<Vec<u8>>().into()),
            }
        })
    }
}

const RAFT: Service = Service::Raft { group: 0 };

fn limits() -> LinkLimits {
    LinkLimits {
        heartbeat: Duration::from_millis(100),
        ..LinkLimits::default()
    }
}

/// Two linked nodes, a and b.
fn linked(
    limits: LinkLimits,
) -> (
    (Link, tokio::task::JoinHandle<LinkEnd>),
    (Link, tokio::task::JoinHandle<LinkEnd>),
) {
    let (x, y) = duplex(256 * 1024);
    let a = Link::spawn(x, BytesMut::new(), peer("b"), Arc::new(Echo), limits);
    let b = Link::spawn(y, BytesMut::new(), peer("a"), Arc::new(Echo), limits);
    (a, b)
}

#[tokio::test]
async fn calls_go_both_ways_and_each_answer_finds_its_caller() {
    let ((a, _), (b, _)) = linked(limits());
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let from = if i % 2 == 0 { a.clone() } else { b.clone() };
            let body = format!("call {i}");
            tokio::spawn(
                async move { (body.clone(), from.call(RAFT, Bytes::from(body), STEP).await) },
            )
        })
        .collect();
    for call in calls {
        let (body, answer) = call.await.expect("task");
        let want: Vec<u8> = body.bytes().rev().collect();
        assert_eq!(answer.expect("answered"), Bytes::from(want));
    }
}

#[tokio::test]
async fn a_service_that_fails_says_why_to_the_caller() {
    let ((a, _), _b) = linked(limits());
    let answer = a.call(RAFT, Bytes::from_static(b"fail"), STEP).await;
    assert_eq!(
        answer,
        Err(CallError::Failed("b".into(), "refused for a".into()))
    );
}

#[tokio::test]
async fn a_call_without_an_answer_times_out_and_frees_its_place() {
    let limits = LinkLimits {
        calls_in_flight: 1,
        ..limits()
    };
    let ((a, _), _b) = linked(limits);
    let short = Duration::from_millis(100);
    let waited = a.call(RAFT, Bytes::from_static(b"wait"), short).await;
    assert_eq!(waited, Err(CallError::Timeout("b".into(), short)));
    assert!(a.0.lock_waiting().is_empty(), "no entry left behind");
    let next = a.call(RAFT, Bytes::from_static(b"ok"), STEP).await;
    assert_eq!(
        next,
        Ok(Bytes::from_static(b"ko")),
        "the one place is free again"
    );
}

#[tokio::test]
async fn calls_beyond_the_in_flight_limit_wait_for_a_place() {
    let limits = LinkLimits {
        calls_in_flight: 2,
        ..limits()
    };
    let ((a, _), _b) = linked(limits);
    let a2 = a.clone();
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.call(RAFT, Bytes::from_static(b"wait"), STEP).await })
        })
        .collect();
    while a2.0.in_flight.available_permits() > 0 {
        tokio::task::yield_now().await;
    }
    let third = a
        .call(RAFT, Bytes::from_static(b"x"), Duration::from_millis(100))
        .await;
    assert!(matches!(third, Err(CallError::Timeout(..))), "{third:?}");
    assert_eq!(
        a.0.lock_waiting().len(),
        2,
        "only two calls ever waited for answers"
    );
    a.close();
    for s in stuck {
        let r = s.await.expect("task");
        assert_eq!(r, Err(CallError::LinkDown("b".into())));
    }
}

#[tokio::test]
async fn a_peer_that_does_not_read_fills_the_send_queue_and_callers_wait() {
    let limits = LinkLimits {
        send_queue_frames: 4,
        heartbeat: Duration::from_secs(60),
        ..LinkLimits::default()
    };
    // A pipe of 64 bytes that nobody reads: the writer blocks after a frame or two.
    let (x, _deaf) = duplex(64);
    let (a, _task) = Link::spawn(x, BytesMut::new(), peer("deaf"), Arc::new(Echo), limits);
    let body = Bytes::from(vec![7u8; 200]);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (a, body) = (a.clone(), body.clone());
            tokio::spawn(async move { a.call(RAFT, body, Duration::from_millis(300)).await })
        })
        .collect();
    for c in calls {
        let r = c.await.expect("task");
        assert!(matches!(r, Err(CallError::Timeout(..))), "{r:?}");
    }
    let out = &a.0.urgent;
    assert_eq!(
        (out.max_capacity(), out.capacity()),
        (4, 0),
        "the queue is full at its bound; the other calls waited for room and timed out"
    );
}

#[tokio::test]
async fn a_silent_peer_is_taken_for_dead_and_its_calls_fail() {
    let (x, _silent) = duplex(64 * 1024);
    let (a, task) = Link::spawn(x, BytesMut::new(), peer("mute"), Arc::new(Echo), limits());
    let waiting = a.call(RAFT, Bytes::from_static(b"hi"), STEP).await;
    assert_eq!(waiting, Err(CallError::LinkDown("mute".into())));
    let end = tokio::time::timeout(STEP, task)
        .await
        .expect("ended")
        .expect("task");
    assert!(matches!(end, LinkEnd::Silent(_)), "{end}");
    assert!(a.is_down());
}

#[tokio::test]
async fn heartbeats_keep_an_idle_link_up() {
    let ((a, _), (b, _)) = linked(limits());
    // Five silence periods with no calls: pings and pongs alone keep both ends up.
    tokio::time::sleep(limits().heartbeat * 15).await;
    assert!(!a.is_down() && !b.is_down());
    let answer = a.call(RAFT, Bytes::from_static(b"ab"), STEP).await;
    assert_eq!(answer, Ok(Bytes::from_static(b"ba")));
}

#[tokio::test]
async fn closing_one_end_fails_the_calls_of_both_and_later_ones() {
    let ((a, a_task), (b, b_task)) = linked(limits());
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.call(RAFT, Bytes::from_static(b"wait"), STEP).await }
    });
    while a.0.lock_waiting().is_empty() && b.0.lock_waiting().is_empty() {
        tokio::task::yield_now().await;
    }
    a.close();
    assert!(matches!(a_task.await.expect("task"), LinkEnd::Closed));
    assert!(matches!(b_task.await.expect("task"), LinkEnd::PeerClosed));
    assert_eq!(
        waiting.await.expect("task"),
        Err(CallError::LinkDown("a".into()))
    );
    let later = a.call(RAFT, Bytes::from_static(b"x"), STEP).await;
    assert_eq!(later, Err(CallError::LinkDown("b".into())));
}

/// Raw bytes to a link, as a broken peer would send them; how the link ended.
async fn link_fed(bytes: Vec<u8>) -> LinkEnd {
    let (x, mut y): (DuplexStream, DuplexStream) = duplex(64 * 1024);
    let (_a, task) = Link::spawn(x, BytesMut::new(), peer("odd"), Arc::new(Echo), limits());
    y.write_all(&bytes).await.expect("write");
    let end = tokio::time::timeout(STEP, task).await.expect("ended");
    drop(y);
    end.expect("task")
}

#[tokio::test]
async fn a_handshake_frame_after_the_handshake_ends_the_link() {
    let mut out = BytesMut::new();
    wire::encode(&Message::Proof([0; wire::NONCE_LEN]), &mut out);
    let end = link_fed(out.to_vec()).await;
    assert!(matches!(end, LinkEnd::Unexpected("a proof")), "{end}");
}

#[tokio::test]
async fn a_frame_over_the_limit_ends_the_link_before_it_is_read() {
    let end = link_fed(vec![0x7f, 0xff, 0xff, 0xff]).await;
    assert!(
        matches!(end, LinkEnd::Wire(WireError::TooLarge { .. })),
        "{end}"
    );
}
