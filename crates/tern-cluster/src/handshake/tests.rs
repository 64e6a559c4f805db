//! Both ends of the handshake over an in-memory pipe, and peers that get it wrong: another
//! secret, another cluster, another version, not a node at all, silence, and a proof reflected
//! back to its maker.

use tokio::io::duplex;

use super::*;

const STEP: Duration = Duration::from_secs(5);

fn identity(name: &str, cluster: &str) -> Identity {
    Identity {
        cluster_name: cluster.into(),
        node_name: format!("{name}@host"),
        listen: format!("{name}:25672"),
    }
}

fn secret(s: &str) -> Secret {
    Secret::from_bytes(s.as_bytes()).expect("a secret")
}

type Outcome = Result<(Peer, Leftover), HandshakeError>;

/// A dialer `a` and an acceptor `b`, each with its own identity and secret.
async fn pair(a: (Identity, Secret), b: (Identity, Secret)) -> (Outcome, Outcome) {
    let (mut x, mut y) = duplex(64 * 1024);
    let limit = wire::DEFAULT_FRAME_MAX_BYTES;
    let dial = handshake(&mut x, Role::Dialer, &a.0, &a.1, limit, STEP);
    let accept = handshake(&mut y, Role::Acceptor, &b.0, &b.1, limit, STEP);
    tokio::join!(dial, accept)
}

#[tokio::test]
async fn nodes_with_one_secret_and_cluster_name_learn_each_other() {
    let a = (identity("a", "tern"), secret("s3cret\n"));
    let b = (identity("b", "tern"), secret("  s3cret"));
    let (dialed, accepted) = pair(a, b).await;
    let (to_b, _) = dialed.expect("the dialer gets through");
    let (to_a, _) = accepted.expect("the acceptor lets it in");
    assert_eq!(to_b.node_name, "b@host");
    assert_eq!(to_b.listen, "b:25672");
    assert_eq!(to_a.node_name, "a@host");
}

#[tokio::test]
async fn a_peer_with_another_secret_is_refused_and_told_why() {
    let a = (identity("a", "tern"), secret("one"));
    let b = (identity("b", "tern"), secret("two"));
    let (dialed, accepted) = pair(a, b).await;
    assert!(
        matches!(accepted, Err(HandshakeError::BadProof)),
        "{accepted:?}"
    );
    match dialed {
        Err(HandshakeError::Refused(why)) => assert!(why.contains("secret"), "{why}"),
        other => panic!("the dialer is told: {other:?}"),
    }
}

#[tokio::test]
async fn a_peer_of_another_cluster_is_refused_naming_both() {
    let a = (identity("a", "blue"), secret("s"));
    let b = (identity("b", "green"), secret("s"));
    let (dialed, accepted) = pair(a, b).await;
    let Err(HandshakeError::ClusterName { ours, theirs }) = accepted else {
        panic!("{accepted:?}");
    };
    assert_eq!((ours.as_str(), theirs.as_str()), ("green", "blue"));
    match dialed {
        Err(HandshakeError::Refused(why)) => {
            assert!(why.contains("'blue'") && why.contains("'green'"), "{why}")
        }
        other => panic!("the dialer is told: {other:?}"),
    }
}

/// Everything the peer sent until it closed, decoded after its preamble.
async fn frames_after_preamble(mut stream: tokio::io::DuplexStream) -> (u16, Vec<Message>) {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut raw)).await;
    let mut buf = BytesMut::from(&raw[..]);
    let version = wire::decode_preamble(&mut buf)
        .expect("a preamble")
        .expect("whole");
    let mut frames = Vec::new();
    while let Ok(Some(m)) = wire::decode(&mut buf, 1 << 20) {
        frames.push(m);
    }
    (version, frames)
}

#[tokio::test]
async fn a_peer_of_another_version_is_refused_naming_both_versions() {
    let (mut ours, mut theirs) = duplex(4096);
    let mut future = BytesMut::from(&wire::PREAMBLE[..]);
    future.extend_from_slice(&(VERSION + 1).to_be_bytes());
    theirs.write_all(&future).await.expect("write");
    let (me, s) = (identity("b", "tern"), secret("s"));
    let limit = wire::DEFAULT_FRAME_MAX_BYTES;
    let accepted = handshake(&mut ours, Role::Acceptor, &me, &s, limit, STEP).await;
    let Err(HandshakeError::Version { ours: v, theirs: t }) = accepted else {
        panic!("{accepted:?}");
    };
    assert_eq!((v, t), (VERSION, VERSION + 1));
    drop(ours);
    let (version, frames) = frames_after_preamble(theirs).await;
    assert_eq!(version, VERSION);
    let [Message::Refused(why)] = &frames[..] else {
        panic!("{frames:?}");
    };
    assert!(why.contains(&format!("version {}", VERSION + 1)), "{why}");
}

#[tokio::test]
async fn something_that_is_not_a_node_is_refused_at_its_first_bytes() {
    let (mut ours, mut theirs) = duplex(4096);
    theirs
        .write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .expect("write");
    let (me, s) = (identity("b", "tern"), secret("s"));
    let limit = wire::DEFAULT_FRAME_MAX_BYTES;
    let accepted = handshake(&mut ours, Role::Acceptor, &me, &s, limit, STEP).await;
    assert!(
        matches!(accepted, Err(HandshakeError::Wire(WireError::NotTern))),
        "{accepted:?}"
    );
}

#[tokio::test]
async fn a_silent_peer_times_out() {
    let (mut ours, _theirs) = duplex(4096);
    let (me, s) = (identity("b", "tern"), secret("s"));
    let limit = wire::DEFAULT_FRAME_MAX_BYTES;
    let wait = Duration::from_millis(200);
    let accepted = handshake(&mut ours, Role::Acceptor, &me, &s, limit, wait).await;
    assert!(
        matches!(accepted, Err(HandshakeError::Timeout(_))),
        "{accepted:?}"
    );
}

/// A fake acceptor without the secret copies the dialer's hello (its nonce and name) and sends
/// the dialer's own proof back: the role in the transcript makes the dialer refuse it.
#[tokio::test]
async fn a_proof_reflected_back_to_its_maker_is_refused() {
    let (mut ours, mut theirs) = duplex(64 * 1024);
    let (me, s) = (identity("a", "tern"), secret("s"));
    let limit = wire::DEFAULT_FRAME_MAX_BYTES;
    let fake = async move {
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 4096];
        let next = |buf: &mut BytesMut| wire::decode(buf, limit).expect("frame");
        loop {
            let n = theirs.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > wire::PREAMBLE_LEN {
                break;
            }
        }
        wire::decode_preamble(&mut buf).expect("preamble");
        let hello = loop {
            if let Some(m) = next(&mut buf) {
                break m;
            }
            let n = theirs.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
        };
        let mut out = BytesMut::new();
        wire::encode_preamble(&mut out);
        wire::encode(&hello, &mut out);
        theirs.write_all(&out).await.expect("write");
        let proof = loop {
            if let Some(m) = next(&mut buf) {
                break m;
            }
            let n = theirs.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
        };
        out.clear();
        wire::encode(&proof, &mut out);
        theirs.write_all(&out).await.expect("write");
        theirs
    };
    let dial = handshake(&mut ours, Role::Dialer, &me, &s, limit, STEP);
    let (dialed, _fake) = tokio::join!(dial, fake);
    assert!(
        matches!(dialed, Err(HandshakeError::BadProof)),
        "{dialed:?}"
    );
}

#[test]
fn an_empty_secret_is_no_secret() {
    assert!(Secret::from_bytes(b" \n").is_none());
}
