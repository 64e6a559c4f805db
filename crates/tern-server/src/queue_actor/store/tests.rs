//! The queue store on the simulated file system: confirms wait for fsyncs, recovery keeps
//! what it must, paging reads messages back in order, space comes back.

use std::collections::BTreeSet;
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

/// 100 persistent messages of 1000 bytes in 16 KiB segments (seven or so), synced.
fn hundred_in_small_segments(fs: &SimFs) -> QueueStore {
    let (mut store, _) = open_sized(fs, 16 << 10);
    let body = "x".repeat(1000);
    for i in 1..=100 {
        store
            .append(MsgId(i), &message(&body, true), false)
            .unwrap();
    }
    sync(&mut store);
    assert!(
        store.segment_count() >= 6,
        "{} segments",
        store.segment_count()
    );
    store
}

fn removed_except(keep: &[u64]) -> Vec<QueueEvent> {
    (1..=100)
        .filter(|i| !keep.contains(i))
        .map(|i| QueueEvent::Removed(MsgId(i)))
        .collect()
}

/// New traffic that moves the log on by a segment or two (ids 1001..), then removed again.
fn roll_on(store: &mut QueueStore) {
    let body = "y".repeat(1000);
    for i in 1001..=1040 {
        store
            .append(MsgId(i), &message(&body, true), false)
            .unwrap();
    }
    let gone: Vec<QueueEvent> = (1001..=1040)
        .map(|i| QueueEvent::Removed(MsgId(i)))
        .collect();
    store.append_events(&gone).unwrap();
}

fn ids_and_redelivered(store: &mut QueueStore) -> Vec<(u64, bool)> {
    load_all(store).into_iter().map(|l| (l.0, l.2)).collect()
}

#[test]
fn drained_segments_are_deleted_and_a_few_live_messages_are_moved_out_of_theirs() {
    let fs = fs();
    let mut store = hundred_in_small_segments(&fs);
    // Everything but 1, 2 (delivered, unacked) and 50 goes: their segments are compacted.
    let mut events = vec![
        QueueEvent::Delivered(MsgId(1)),
        QueueEvent::Delivered(MsgId(2)),
    ];
    events.extend(removed_except(&[1, 2, 50]));
    store.append_events(&events).unwrap();
    roll_on(&mut store);
    sync(&mut store);
    assert!(
        store.segment_count() <= 2,
        "{} segments left",
        store.segment_count()
    );
    for crash in [Crash::KeepUnsynced, Crash::LoseUnsynced] {
        let (mut after, recovered) = open_sized(&fs.crash(crash), 16 << 10);
        assert_eq!(recovered.messages, 3);
        assert_eq!(
            ids_and_redelivered(&mut after),
            [(1, true), (2, true), (50, false)],
            "{crash:?}: each once, delivered ones redelivered"
        );
    }
}

#[test]
fn segments_drained_in_order_are_deleted_without_being_copied() {
    let fs = fs();
    let mut store = hundred_in_small_segments(&fs);
    for i in 1..=100 {
        let gone = [QueueEvent::Removed(MsgId(i))];
        store.append_events(&gone).unwrap();
        assert!(store.moved.is_empty(), "message {} was copied", i);
    }
    sync(&mut store);
    assert_eq!(store.segment_count(), 1);
}

#[test]
fn a_crash_before_the_moved_copies_are_synced_loses_nothing() {
    let fs = fs();
    let mut store = hundred_in_small_segments(&fs);
    store.append_events(&removed_except(&[1, 50])).unwrap();
    roll_on(&mut store);
    store.write().unwrap();
    // Power loss now: copies and acknowledgements were never synced, the originals stay
    // (acknowledged messages may come back, from segments not yet deleted; none twice).
    let (mut after, _) = open_sized(&fs.crash(Crash::LoseUnsynced), 16 << 10);
    let ids: Vec<u64> = load_all(&mut after).iter().map(|l| l.0).collect();
    assert!(ids.contains(&1) && ids.contains(&50), "{ids:?}");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "each once, in order: {ids:?}"
    );
    // A process crash instead: the copies are read back, the originals go once the copies
    // are synced (at open), and a power loss after that still finds them.
    let fs = self::fs();
    let mut store = hundred_in_small_segments(&fs);
    store.append_events(&removed_except(&[1, 50])).unwrap();
    roll_on(&mut store);
    store.write().unwrap();
    let crashed = fs.crash(Crash::KeepUnsynced);
    let (mut after, _) = open_sized(&crashed, 16 << 10);
    assert_eq!(after.segment_count(), 1, "the originals went at open");
    let ids: Vec<u64> = load_all(&mut after).iter().map(|l| l.0).collect();
    assert_eq!(ids, [1, 50]);
    let (mut again, _) = open_sized(&crashed.crash(Crash::LoseUnsynced), 16 << 10);
    let ids: Vec<u64> = load_all(&mut again).iter().map(|l| l.0).collect();
    assert_eq!(
        ids,
        [1, 50],
        "what open deleted was covered by a sync first"
    );
}

#[test]
fn a_moved_message_acknowledged_later_stays_acknowledged() {
    let fs = fs();
    let mut store = hundred_in_small_segments(&fs);
    store.append_events(&removed_except(&[1, 50])).unwrap();
    roll_on(&mut store);
    sync(&mut store);
    assert!(!store.moved.is_empty(), "1 and 50 were moved");
    store
        .append_events(&[QueueEvent::Removed(MsgId(50))])
        .unwrap();
    sync(&mut store);
    let (mut after, _) = open_sized(&fs.crash(Crash::KeepUnsynced), 16 << 10);
    assert_eq!(ids_and_redelivered(&mut after), [(1, false)]);
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

/// A small deterministic PRNG (xorshift), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What one crash-and-recover round must show: every confirmed live message back exactly
/// once, nothing that was never written.
fn check_recovery(recovered: &[u64], confirmed_live: &BTreeSet<u64>, written: u64, seed: u64) {
    let set: BTreeSet<u64> = recovered.iter().copied().collect();
    assert_eq!(
        set.len(),
        recovered.len(),
        "seed {seed}: a message came back twice"
    );
    let lost: Vec<&u64> = confirmed_live.difference(&set).collect();
    assert!(lost.is_empty(), "seed {seed}: lost {lost:?}");
    assert!(
        set.iter().all(|id| *id <= written),
        "seed {seed}: unknown ids"
    );
}

#[test]
fn random_traffic_with_compaction_and_crashes_never_loses_or_doubles_a_message() {
    let mut compactions = 0;
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut fs = fs();
        let (mut store, _) = open_sized(&fs, 8 << 10);
        let (mut next, mut live, mut confirmed) = (1u64, BTreeSet::new(), BTreeSet::new());
        for _round in 0..5 {
            for _ in 0..rng.below(300) {
                let body = "b".repeat(50 + rng.below(700) as usize);
                store
                    .append(MsgId(next), &message(&body, true), false)
                    .unwrap();
                live.insert(next);
                next += 1;
                if rng.below(20) == 0 {
                    sync(&mut store);
                    confirmed = live.clone();
                }
                if rng.below(4) == 0 {
                    let ids: Vec<u64> = live.iter().copied().collect();
                    let id = ids[rng.below(ids.len() as u64) as usize];
                    // Most go; one in eight is only delivered and stays (long-unacked).
                    let e = if rng.below(8) == 0 {
                        QueueEvent::Delivered(MsgId(id))
                    } else {
                        live.remove(&id);
                        confirmed.remove(&id);
                        QueueEvent::Removed(MsgId(id))
                    };
                    store.append_events(&[e]).unwrap();
                }
            }
            store.write().unwrap();
            compactions += store.compacted.len() + store.moved.len();
            let crash = if rng.below(2) == 0 {
                Crash::KeepUnsynced
            } else {
                Crash::LoseUnsynced
            };
            if crash == Crash::KeepUnsynced {
                confirmed = live.clone(); // a process crash keeps what was written
            }
            fs = fs.crash(crash);
            let (recovered_store, _) = open_sized(&fs, 8 << 10);
            store = recovered_store;
            let ids: Vec<u64> = load_all(&mut store).iter().map(|l| l.0).collect();
            check_recovery(&ids, &confirmed, next - 1, seed);
            live = ids.into_iter().collect();
            confirmed = live.clone();
            next = next.max(live.iter().next_back().map_or(0, |m| m + 1));
        }
    }
    assert!(compactions > 0, "the traffic made compaction run");
}
