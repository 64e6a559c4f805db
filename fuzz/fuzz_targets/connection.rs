//! One connection's state machine, fed frame sequences: a broker without a listener
//! (`tern_server::harness`), a well-formed guest login, then the input as the client's next
//! bytes. The broker lives across inputs (queues and bindings made by one input are there for
//! the next), as a long-running node's are. A panic anywhere in the connection fails, and so
//! does a connection that has not ended 2 s after its client hung up.
//!
//! Run it with `-detect_leaks=0`: the broker's tasks (queue actors, the metadata log) outlive
//! each input by design, which LeakSanitizer's per-input accounting reports as leaks.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tern_server::harness::Harness;

fn harness() -> &'static (Harness, Vec<u8>) {
    static H: OnceLock<(Harness, Vec<u8>)> = OnceLock::new();
    H.get_or_init(|| {
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        };
        (Harness::new(&base), Harness::login())
    })
}

fuzz_target!(|data: &[u8]| {
    let (h, login) = harness();
    assert!(
        h.run(login, data),
        "the connection outlived its client by 2 s"
    );
});
