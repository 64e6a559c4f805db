//! The method, field-table and content-property decoders. The first byte picks the decoder
//! (0: a method frame's payload, 1: a field table, 2: content properties); the rest is its
//! input. Whatever decodes must re-encode to bytes that decode and re-encode to the same bytes
//! (compared as bytes: a NaN float is not equal to itself).

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tern_amqp::{BasicProperties, FieldTable, Method};

fn stable<T>(
    first: T,
    encode: impl Fn(&T, &mut BytesMut),
    decode: impl Fn(Bytes) -> Result<T, tern_amqp::DecodeError>,
) {
    let mut once = BytesMut::new();
    encode(&first, &mut once);
    let once = once.freeze();
    let again = decode(once.clone()).expect("what we encoded decodes");
    let mut twice = BytesMut::new();
    encode(&again, &mut twice);
    assert_eq!(once, twice.freeze());
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let input = Bytes::copy_from_slice(rest);
    match which % 3 {
        0 => {
            if let Ok(m) = Method::decode(input) {
                stable(m, |m, out| m.encode(out), Method::decode);
            }
        }
        1 => {
            if let Ok(t) = FieldTable::decode(&mut input.clone()) {
                stable(
                    t,
                    |t, out| t.encode(out),
                    |mut b| FieldTable::decode(&mut b),
                );
            }
        }
        _ => {
            if let Ok(p) = BasicProperties::decode(&mut input.clone()) {
                let decode = |mut b: Bytes| BasicProperties::decode(&mut b);
                stable(p, |p, out| p.encode(out), decode);
            }
        }
    }
});
