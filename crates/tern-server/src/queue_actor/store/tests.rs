//! The queue store on the simulated file system: confirms wait for fsyncs, recovery keeps
//! what it must, paging reads messages back in order, space comes back.

use std::path::Path;
use std::sync::Arc;

use tern_amqp::{BasicProperties, ShortStr};
use tern_store::sim::{Crash, SimFs};
use tokio::sync::mpsc;

use super::*;

fn message(body: &str, persistent: bool) -> Message {
    let properties = BasicProperties {
        delivery_mode: Some(if persistent { 2 } else { 1 }),
        ..Default::default()
    };
    let mut raw = bytes::BytesMut::new();
    properties.encode(&mut raw);
    Message {
        exchange: ShortStr::default(),
        routing_key: ShortStr::from("q"),
        properties,
        raw_properties: raw.freeze(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn names() -> (VhostName, QueueName) {
    (VhostName::from("/"), QueueName::from("q"))
}

fn fs() -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/data/queues")).unwrap();
    fs.create_dir_all(Path::new("/data/paging")).unwrap();
    fs
}

fn open_sized(fs: &SimFs, segment_bytes: u64) -> (QueueStore, Recovered) {
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let (vh, q) = names();
    let dir = queue_dir(Path::new("/data"), &vh, &q);
    QueueStore::open_with(vfs, &dir, &vh, &q, segment_bytes).unwrap()
}

fn open(fs: &SimFs) -> (QueueStore, Recovered) {
    open_sized(fs, 64 << 20)
}

fn sync(store: &mut QueueStore) {
    if let Some((upto, pending)) = store.begin_sync().unwrap() {
        store.finish_sync(upto, &pending, pending.run()).unwrap();
    }
}

fn load_all(store: &mut QueueStore) -> Vec<(u64, String, bool)> {
    let mut out = Vec::new();
    loop {
        let batch = store.load(7, u64::MAX).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.into_iter().map(|l| {
            let body = String::from_utf8_lossy(&l.message.body).into_owned();
            (l.id.0, body, l.redelivered)
        }));
    }
}

#[test]
fn queue_directories_are_fixed_length_and_differ_by_vhost_and_name() {
    let d = |v: &str, q: &str| dir_name(&VhostName::from(v), &QueueName::from(q));
    assert_eq!(d("/", "a").len(), 32);
    assert_ne!(d("/", "ab"), d("/a", "b"));
    assert_ne!(d("/", "a"), d("/", "b"));
}

#[test]
fn a_confirm_waits_for_the_sync_that_covers_its_records() {
    let fs = fs();
    let (mut store, recovered) = open(&fs);
    assert_eq!(recovered.messages, 0);
    let (sink, mut events) = mpsc::unbounded_channel();
    store
        .append(MsgId(1), &message("one", true), false)
        .unwrap();
    store.confirm_after_sync(ConfirmRequest {
        sink: sink.clone(),
        token: 1,
    });
    let (upto, first) = store.begin_sync().unwrap().expect("a sync to run");
    // Appended while the first fsync runs: waits for the next one.
    store
        .append(MsgId(2), &message("two", true), false)
        .unwrap();
    store.confirm_after_sync(ConfirmRequest { sink, token: 2 });
    assert!(store.begin_sync().unwrap().is_none(), "one fsync at a time");
    assert!(
        events.try_recv().is_err(),
        "nothing confirmed before the disk says so"
    );
    store.finish_sync(upto, &first, first.run()).unwrap();
    assert!(matches!(
        events.try_recv(),
        Ok(ConnEvent::Confirmed { token: 1, ok: true })
    ));
    assert!(events.try_recv().is_err());
    // A crash now keeps the first, confirmed message.
    let (mut after, recovered) = open(&fs.crash(Crash::LoseUnsynced));
    assert_eq!(recovered.messages, 1);
    assert_eq!(load_all(&mut after), [(1, "one".to_string(), false)]);
    let (upto, second) = store.begin_sync().unwrap().expect("the next sync");
    store.finish_sync(upto, &second, second.run()).unwrap();
    assert!(matches!(
        events.try_recv(),
        Ok(ConnEvent::Confirmed { token: 2, ok: true })
    ));
}

#[test]
fn removed_messages_stay_removed_and_delivered_ones_come_back_redelivered() {
    let fs = fs();
    let (mut store, _) = open(&fs);
    for i in 1..=3 {
        let m = message(&i.to_string(), true);
        store.append(MsgId(i), &m, false).unwrap();
    }
    store
        .append(MsgId(4), &message("transient", false), true)
        .unwrap();
    let events = [
        QueueEvent::Delivered(MsgId(2)),
        QueueEvent::Removed(MsgId(1)),
    ];
    store.append_events(&events).unwrap();
    sync(&mut store);
    // Acknowledgements are written, not synced: a process crash keeps them.
    let (mut after, recovered) = open(&fs.crash(Crash::KeepUnsynced));
    assert_eq!((recovered.messages, recovered.max_id), (2, MsgId(4)));
    assert_eq!(
        load_all(&mut after),
        [(2, "2".to_string(), true), (3, "3".to_string(), false)],
        "the transient paged message is not recovered"
    );
}

#[test]
fn paged_messages_come_back_in_order_and_in_memory_ones_are_not_read_twice() {
    let fs = fs();
    let (mut store, _) = open(&fs);
    for i in 1..=5 {
        store
            .append(MsgId(i), &message(&format!("m{i}"), true), false)
            .unwrap();
    }
    for i in 6..=20 {
        let persistent = i % 2 == 0;
        store
            .append(MsgId(i), &message(&format!("m{i}"), persistent), true)
            .unwrap();
    }
    let loaded = load_all(&mut store);
    let ids: Vec<u64> = loaded.iter().map(|l| l.0).collect();
    assert_eq!(
        ids,
        (6..=20).collect::<Vec<_>>(),
        "only what was paged, in order"
    );
    // After a restart: every persistent message not removed, paged or not.
    sync(&mut store);
    let (mut after, _) = open(&fs.crash(Crash::LoseUnsynced));
    let ids: Vec<u64> = load_all(&mut after).iter().map(|l| l.0).collect();
    let expect: Vec<u64> = (1..=20).filter(|i| *i <= 5 || i % 2 == 0).collect();
    assert_eq!(ids, expect);
}

#[test]
fn a_purge_drops_the_paged_messages_but_not_the_unacked_ones() {
    let fs = fs();
    let (mut store, _) = open(&fs);
    store
        .append(MsgId(1), &message("unacked", true), false)
        .unwrap();
    for i in 2..=10 {
        store
            .append(MsgId(i), &message("paged", true), true)
            .unwrap();
    }
    store.purge_paged().unwrap();
    assert!(store.load(100, u64::MAX).unwrap().is_empty());
    sync(&mut store);
    let (mut after, recovered) = open(&fs.crash(Crash::KeepUnsynced));
    assert_eq!(recovered.messages, 1);
    assert_eq!(load_all(&mut after), [(1, "unacked".to_string(), false)]);
}

#[test]
fn a_segment_whose_messages_are_all_gone_is_deleted_even_behind_a_live_one() {
    let fs = fs();
    let (mut store, _) = open_sized(&fs, 16 << 10);
    let body = "x".repeat(1000);
    for i in 1..=100 {
        store
            .append(MsgId(i), &message(&body, true), false)
            .unwrap();
    }
    sync(&mut store);
    let before = store.segment_count();
    assert!(before >= 6, "{before} segments");
    // Everything but message 1 goes: only the head segment (with 1) and the active one stay.
    let gone: Vec<QueueEvent> = (2..=100).map(|i| QueueEvent::Removed(MsgId(i))).collect();
    store.append_events(&gone).unwrap();
    sync(&mut store);
    assert_eq!(store.segment_count(), 2, "{before} segments before");
    let (mut recovered, _) = open_sized(&fs.crash(Crash::KeepUnsynced), 16 << 10);
    let ids: Vec<u64> = load_all(&mut recovered).iter().map(|l| l.0).collect();
    assert_eq!(
        ids,
        [1],
        "the one live message survived the deletions around it"
    );
}

#[test]
fn lost_acknowledgements_bring_messages_back_they_never_lose_one() {
    let fs = fs();
    let (mut store, _) = open(&fs);
    for i in 1..=3 {
        let m = message(&i.to_string(), true);
        store.append(MsgId(i), &m, false).unwrap();
    }
    sync(&mut store);
    store
        .append_events(&[QueueEvent::Removed(MsgId(2))])
        .unwrap();
    store.write().unwrap();
    // Power loss: the unsynced acknowledgement is gone, so the message comes back.
    let (mut after, _) = open(&fs.crash(Crash::LoseUnsynced));
    let ids: Vec<u64> = load_all(&mut after).iter().map(|l| l.0).collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[test]
fn a_paging_store_starts_empty_never_syncs_and_frees_what_was_read_back() {
    let fs = fs();
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let (vh, q) = names();
    let dir = paging_dir(Path::new("/data"), &vh, &q);
    let mut store = QueueStore::create_paging_with(vfs.clone(), &dir, 16 << 10).unwrap();
    let body = "y".repeat(1000);
    for i in 1..=60 {
        store
            .append(MsgId(i), &message(&body, false), true)
            .unwrap();
    }
    assert!(!store.wants_sync() && store.begin_sync().unwrap().is_none());
    let segments = store.segment_count();
    assert_eq!(load_all(&mut store).len(), 60);
    assert!(
        store.segment_count() < segments,
        "read-back segments are deleted"
    );
    // A new paging store on the same directory starts empty.
    let again = QueueStore::create_paging_with(vfs, &dir, 16 << 10).unwrap();
    assert_eq!(again.paged, 0);
}
