//! decode(encode(x)) == x for every wire type, over arbitrary values.

mod common;

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tern_amqp::frame::{decode_frame, encode_frame, encode_method};
use tern_amqp::*;

fn encoded<T>(value: &T, encode: impl Fn(&T, &mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    encode(value, &mut out);
    out.freeze()
}

#[test]
fn the_method_strategy_covers_all_66_methods() {
    let strategies = common::each_method();
    assert_eq!(strategies.len(), 66);
    let mut runner = TestRunner::deterministic();
    let mut names = BTreeSet::new();
    for (i, strategy) in strategies.iter().enumerate() {
        let method = strategy.new_tree(&mut runner).unwrap().current();
        assert!(
            names.insert(method.name()),
            "strategy {i} repeats {}",
            method.name()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_method_decodes_to_what_was_encoded(method in common::method()) {
        let bytes = encoded(&method, Method::encode);
        prop_assert_eq!(Method::decode(bytes.clone()), Ok(method.clone()));
        // And decoding is exact: re-encoding gives the same bytes.
        prop_assert_eq!(encoded(&method, Method::encode), bytes);
    }

    #[test]
    fn every_method_cut_short_fails_to_decode(method in common::method(), cut in any::<prop::sample::Index>()) {
        let bytes = encoded(&method, Method::encode);
        let len = cut.index(bytes.len());
        prop_assert!(Method::decode(bytes.slice(..len)).is_err());
    }
}

proptest! {
    #[test]
    fn field_tables_decode_to_what_was_encoded(table in common::table()) {
        let mut bytes = encoded(&table, FieldTable::encode);
        prop_assert_eq!(FieldTable::decode(&mut bytes), Ok(table));
        prop_assert!(bytes.is_empty());
    }

    #[test]
    fn field_arrays_decode_to_what_was_encoded(array in prop::collection::vec(common::value(), 0..8)) {
        let mut bytes = encoded(&array, encode_array);
        prop_assert_eq!(decode_array(&mut bytes), Ok(array));
        prop_assert!(bytes.is_empty());
    }

    #[test]
    fn basic_properties_decode_to_what_was_encoded(props in common::properties()) {
        let mut bytes = encoded(&props, BasicProperties::encode);
        prop_assert_eq!(BasicProperties::decode(&mut bytes), Ok(props));
        prop_assert!(bytes.is_empty());
    }

    #[test]
    fn frames_decode_to_what_was_encoded(frames in prop::collection::vec(common::frame(), 1..6)) {
        let mut buf = BytesMut::new();
        for frame in &frames {
            encode_frame(frame, &mut buf);
        }
        for frame in &frames {
            prop_assert_eq!(decode_frame(&mut buf, 0), Ok(Some(frame.clone())));
        }
        prop_assert_eq!(decode_frame(&mut buf, 0), Ok(None));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn a_frame_arriving_in_two_pieces_decodes_once_whole(
        frame in common::frame(),
        split in any::<prop::sample::Index>(),
    ) {
        let wire = encoded(&frame, encode_frame);
        let at = split.index(wire.len());
        let mut buf = BytesMut::from(&wire[..at]);
        prop_assert_eq!(decode_frame(&mut buf, 0), Ok(None));
        buf.extend_from_slice(&wire[at..]);
        prop_assert_eq!(decode_frame(&mut buf, 0), Ok(Some(frame)));
    }

    #[test]
    fn bodies_split_by_frame_max_reassemble(
        body in prop::collection::vec(any::<u8>(), 0..3000),
        frame_max in 9u32..600,
    ) {
        let mut buf = BytesMut::new();
        frame::encode_body(5, &body, frame_max, &mut buf);
        let mut joined = Vec::new();
        while let Some(frame) = decode_frame(&mut buf, frame_max).unwrap() {
            let FramePayload::Body(part) = frame.payload else { panic!("not a body frame") };
            prop_assert!(!part.is_empty() && part.len() <= frame_max as usize - 8);
            joined.extend_from_slice(&part);
        }
        prop_assert_eq!(joined, body);
    }

    #[test]
    fn method_frames_within_frame_max_are_accepted(method in common::method()) {
        let mut buf = BytesMut::new();
        encode_method(1, &method, &mut buf);
        let frame_max = u32::try_from(buf.len()).unwrap();
        let decoded = decode_frame(&mut buf.clone(), frame_max);
        prop_assert!(matches!(decoded, Ok(Some(_))));
        let refused = decode_frame(&mut buf, frame_max - 1);
        let too_large = DecodeError::FrameTooLarge { size: u64::from(frame_max), frame_max: frame_max - 1 };
        prop_assert_eq!(refused, Err(too_large));
    }
}
