//! Decoding never panics, whatever a peer sends: random bytes, and valid frames with bytes
//! flipped or cut off.

mod common;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tern_amqp::frame::{decode_frame, encode_frame, FRAME_BODY, FRAME_HEADER, FRAME_METHOD};
use tern_amqp::*;

/// Decode frames until the buffer runs dry or an error stops the connection.
fn decode_all(mut buf: BytesMut, frame_max: u32) {
    while let Ok(Some(_)) = decode_frame(&mut buf, frame_max) {}
}

/// Random payloads behind a well-formed frame header, so the payload decoders are exercised.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        Just(FRAME_METHOD),
        Just(FRAME_HEADER),
        Just(FRAME_BODY),
        Just(8u8)
    ];
    (
        kind,
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(k, ch, payload)| {
            let mut wire = vec![k];
            wire.extend_from_slice(&ch.to_be_bytes());
            wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            wire.extend_from_slice(&payload);
            wire.push(0xce);
            wire
        })
}

/// A method payload with a valid class/method id followed by random argument bytes.
fn method_garbage() -> impl Strategy<Value = Vec<u8>> {
    let ids = common::method()
        .prop_map(|m| [m.class_id().to_be_bytes(), m.method_id().to_be_bytes()].concat());
    (ids, prop::collection::vec(any::<u8>(), 0..120)).prop_map(|(mut ids, args)| {
        ids.extend_from_slice(&args);
        ids
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn decode_frame_never_panics_on_random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        frame_max in prop_oneof![Just(0u32), 0u32..300, any::<u32>()],
    ) {
        decode_all(BytesMut::from(&bytes[..]), frame_max);
    }

    #[test]
    fn decode_frame_never_panics_on_framed_garbage(wire in framed_garbage()) {
        decode_all(BytesMut::from(&wire[..]), 0);
    }

    #[test]
    fn method_decode_never_panics(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        method_garbage(),
    ]) {
        let _ = Method::decode(Bytes::from(bytes));
    }

    #[test]
    fn table_and_properties_decode_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = FieldTable::decode(&mut Bytes::from(bytes.clone()));
        let _ = decode_array(&mut Bytes::from(bytes.clone()));
        let _ = FieldValue::decode(&mut Bytes::from(bytes.clone()));
        let _ = BasicProperties::decode(&mut Bytes::from(bytes));
    }

    #[test]
    fn valid_frames_with_a_byte_changed_never_panic(
        frame in common::frame(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut wire = BytesMut::new();
        encode_frame(&frame, &mut wire);
        let i = at.index(wire.len());
        wire[i] ^= xor;
        decode_all(wire, 0);
    }

    #[test]
    fn valid_tables_with_a_byte_changed_never_panic(
        table in common::table(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut wire = BytesMut::new();
        table.encode(&mut wire);
        let i = at.index(wire.len());
        wire[i] ^= xor;
        let _ = FieldTable::decode(&mut wire.freeze());
    }
}
