//! The node-to-node protocol's decoder over any byte stream, as a link reads it: the preamble,
//! then whole frames until the bytes run out or an error (frame limits: the default and a
//! small one). What decodes re-encodes to the same bytes.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern_cluster::wire::{decode, decode_preamble, encode, DEFAULT_FRAME_MAX_BYTES};

fuzz_target!(|data: &[u8]| {
    for limit in [DEFAULT_FRAME_MAX_BYTES, 64] {
        let mut buf = BytesMut::from(data);
        if !matches!(decode_preamble(&mut buf), Ok(Some(_))) {
            // Also read the bytes as frames straight away: the handshake is not the only way
            // in to the frame decoder a fuzzer should find.
            buf = BytesMut::from(data);
        }
        let mut at = data.len() - buf.len();
        while let Ok(Some(message)) = decode(&mut buf, limit) {
            let used = data.len() - buf.len();
            let mut again = BytesMut::new();
            encode(&message, &mut again);
            assert_eq!(&again[..], &data[at..used], "re-encodes to the same bytes");
            at = used;
        }
    }
});
