//! The frame decoder over any byte stream, as a connection reads it: whole frames until the
//! bytes run out or an error, with content properties decoded as a complete publish would.
//! Two frame_max values: the negotiated default and the protocol minimum.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern_amqp::frame::{decode_frame, encode_frame, FramePayload};

fuzz_target!(|data: &[u8]| {
    for frame_max in [131_072, 4096] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(frame)) = decode_frame(&mut buf, frame_max) {
            if let FramePayload::Header(h) = &frame.payload {
                let _ = h.properties();
            }
            // What decodes re-encodes to a frame that decodes and re-encodes to the same
            // bytes (compared as bytes: a NaN in a table is not equal to itself).
            let mut once = BytesMut::new();
            encode_frame(&frame, &mut once);
            let mut copy = once.clone();
            let back = decode_frame(&mut copy, 0).expect("re-encoded frame decodes");
            let mut twice = BytesMut::new();
            encode_frame(&back.expect("a whole frame"), &mut twice);
            assert_eq!(once, twice);
        }
    }
});
