//! The node protocol's codec: every message survives a round trip, split anywhere; no input
//! makes the decoder panic; the frame limit holds before anything is allocated.

use proptest::prelude::*;

use super::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", Just(String::new()), Just("é".repeat(300))]
}

fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)
}

fn message() -> impl Strategy<Value = Message> {
    let hello = (text(), text(), text(), any::<[u8; NONCE_LEN]>()).prop_map(
        |(cluster_name, node_name, listen, nonce)| {
            Message::Hello(Hello {
                cluster_name,
                node_name,
                listen,
                nonce,
            })
        },
    );
    let service = prop_oneof![
        any::<u64>().prop_map(|group| Service::Raft { group }),
        Just(Service::Control),
        Just(Service::Queue),
        Just(Service::Node),
    ];
    let cast =
        (service.clone(), bytes()).prop_map(|(service, body)| Message::Cast { service, body });
    let call = (any::<u64>(), service, bytes()).prop_map(|(id, service, body)| Message::Call {
        id,
        service,
        body,
    });
    let reply = (any::<u64>(), prop::result::maybe_ok(bytes(), text()))
        .prop_map(|(id, result)| Message::Reply { id, result });
    prop_oneof![
        hello,
        any::<[u8; NONCE_LEN]>().prop_map(Message::Proof),
        text().prop_map(Message::Refused),
        any::<u64>().prop_map(Message::Ping),
        any::<u64>().prop_map(Message::Pong),
        call,
        reply,
        cast,
    ]
}

proptest! {
    #[test]
    fn every_message_survives_a_round_trip_however_the_bytes_arrive(
        messages in proptest::collection::vec(message(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        for m in &messages {
            encode(m, &mut wire);
        }
        let cut = cut.index(wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(m) = decode(&mut buf, DEFAULT_FRAME_MAX_BYTES).expect("valid") {
            got.push(m);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(m) = decode(&mut buf, DEFAULT_FRAME_MAX_BYTES).expect("valid") {
            got.push(m);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, messages);
    }

    #[test]
    fn no_input_makes_the_decoder_panic(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&input[..]);
        let _ = decode_preamble(&mut buf.clone());
        while let Ok(Some(_)) = decode(&mut buf, 4096) {}
    }
}

#[test]
fn a_string_longer_than_the_limit_is_cut_at_a_char_boundary() {
    let long = "é".repeat(TEXT_MAX_BYTES);
    let mut wire = BytesMut::new();
    encode(&Message::Refused(long.clone()), &mut wire);
    let Some(Message::Refused(got)) = decode(&mut wire, DEFAULT_FRAME_MAX_BYTES).unwrap() else {
        panic!("a refusal");
    };
    assert_eq!(got.len(), TEXT_MAX_BYTES);
    assert!(long.starts_with(&got));
}

#[test]
fn a_frame_over_the_limit_is_refused_from_its_size_alone() {
    let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
    let err = decode(&mut buf, DEFAULT_FRAME_MAX_BYTES).unwrap_err();
    assert_eq!(
        err,
        WireError::TooLarge {
            size: 0x7fff_ffff,
            limit: DEFAULT_FRAME_MAX_BYTES
        }
    );
    assert!(buf.capacity() < 1024, "nothing reserved for it");
}

#[test]
fn empty_unknown_short_and_padded_frames_are_errors() {
    let cases: [(&[u8], WireError); 4] = [
        (&[0, 0, 0, 0], WireError::Empty),
        (&[0, 0, 0, 1, 99], WireError::Kind(99)),
        (
            &[0, 0, 0, 3, kind::PING, 0, 0],
            WireError::Truncated("ping"),
        ),
        (
            &[0, 0, 0, 10, kind::PONG, 0, 0, 0, 0, 0, 0, 0, 7, 1],
            WireError::Trailing(1, "pong"),
        ),
    ];
    for (bytes, want) in cases {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf, 64), Err(want), "{bytes:?}");
    }
}

#[test]
fn the_preamble_names_the_version_and_anything_else_is_not_tern() {
    let mut out = BytesMut::new();
    encode_preamble(&mut out);
    let mut partial = BytesMut::from(&out[..5]);
    assert_eq!(decode_preamble(&mut partial), Ok(None));
    assert_eq!(decode_preamble(&mut out), Ok(Some(VERSION)));
    assert!(out.is_empty());
    let mut amqp = BytesMut::from(&b"AMQP\x00\x00\x09\x01"[..]);
    assert_eq!(decode_preamble(&mut amqp), Err(WireError::NotTern));
}

/// The fuzz target's seeds (`fuzz/corpus/node_frame`) stay valid input: each is a preamble
/// or not, then whole frames that decode and re-encode to the same bytes.
#[test]
fn the_fuzz_seeds_decode_to_the_end_and_re_encode_byte_for_byte() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/node_frame");
    let seeds = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut count = 0;
    for seed in seeds {
        let path = seed.expect("entry").path();
        let data = std::fs::read(&path).expect("read seed");
        let mut buf = BytesMut::from(&data[..]);
        if decode_preamble(&mut buf).is_err() {
            buf = BytesMut::from(&data[..]);
        }
        let mut again = BytesMut::new();
        while let Some(m) = decode(&mut buf, DEFAULT_FRAME_MAX_BYTES).expect("valid frames") {
            encode(&m, &mut again);
        }
        assert!(buf.is_empty(), "{} ends in a whole frame", path.display());
        assert!(data.ends_with(&again), "{} re-encodes", path.display());
        count += 1;
    }
    assert!(count >= 5, "seeds in {}", dir.display());
}
