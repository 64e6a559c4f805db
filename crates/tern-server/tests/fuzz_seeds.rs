//! The fuzz targets' inputs on the stable toolchain: the connection harness runs every seed
//! of `fuzz/corpus/connection` (recorded from lapin and amqprs sessions) and a few hostile
//! inputs, and really drives the broker. The fuzzing itself is `fuzz/README.md`.

use std::path::PathBuf;

use bytes::BytesMut;
use tern_amqp::frame::{decode_frame, encode_method};
use tern_amqp::{FieldTable, Method, QueueDeclare, ShortStr};
use tern_server::harness::Harness;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read seed"))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

fn declare(name: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_method(1, &Method::ChannelOpen(Default::default()), &mut out);
    let declare = QueueDeclare {
        queue: ShortStr::from(name),
        arguments: FieldTable::new(),
        ..Default::default()
    };
    encode_method(1, &Method::QueueDeclare(declare), &mut out);
    out.to_vec()
}

#[test]
fn the_connection_harness_drives_a_real_broker_through_every_seed() {
    let h = Harness::new(&std::env::temp_dir());
    let login = Harness::login();
    assert!(h.run(&login, &declare("made-by-the-harness")));
    assert!(
        h.has_queue("made-by-the-harness"),
        "the harness's bytes reached the broker"
    );
    for seed in corpus("connection") {
        assert!(
            h.run(&login, &seed),
            "the connection ends when its client hangs up"
        );
    }
    // Hostile inputs: garbage, a truncated frame, a frame of the wrong type.
    for input in [
        &b"\xff\xff\xff"[..],
        &[1, 0, 1, 0, 0, 0, 200, 0][..],
        &[9; 64][..],
    ] {
        assert!(h.run(&login, input));
    }
    assert!(h.run(&login, &declare("still-served")));
    assert!(h.has_queue("still-served"));
}

#[test]
fn every_frame_seed_decodes_to_whole_frames() {
    for seed in corpus("frame") {
        let mut buf = BytesMut::from(&seed[..]);
        let mut n = 0;
        while let Ok(Some(_)) = decode_frame(&mut buf, 0) {
            n += 1;
        }
        assert!(
            n > 10 && buf.is_empty(),
            "{n} frames, {} bytes left",
            buf.len()
        );
    }
}
