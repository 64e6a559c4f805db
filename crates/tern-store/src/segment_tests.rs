//! The segment log against the simulated file system: crashes at every byte, faults, damage.

use std::path::PathBuf;
use std::sync::Arc;

use crate::segment::{LogOptions, Position, SegmentLog};
use crate::sim::{Crash, SimFs};
use crate::vfs::Vfs;
use crate::StoreError;

fn dir() -> PathBuf {
    PathBuf::from("/data/log")
}

fn opts(max_segment_bytes: u64) -> LogOptions {
    LogOptions {
        max_segment_bytes,
        max_record_bytes: 1 << 16,
    }
}

/// Open the log and collect what recovery visits.
fn open(fs: &SimFs, o: LogOptions) -> Result<(SegmentLog, Vec<Vec<u8>>), StoreError> {
    let mut seen = Vec::new();
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let log = SegmentLog::open(vfs, &dir(), o, |_, data| {
        seen.push(data.to_vec());
        Ok(())
    })?;
    Ok((log, seen))
}

fn rec(i: usize) -> Vec<u8> {
    format!("record-{i:04}").into_bytes()
}

fn append_all(log: &mut SegmentLog, range: std::ops::Range<usize>) -> Vec<Position> {
    range.map(|i| log.append(&rec(i)).unwrap()).collect()
}

fn segment_file(id: u64) -> PathBuf {
    dir().join(format!("{id:020}.seg"))
}

#[test]
fn records_come_back_in_order_after_a_restart_and_can_be_read_by_position() {
    let fs = SimFs::new();
    let (mut log, seen) = open(&fs, opts(1 << 20)).unwrap();
    assert!(seen.is_empty());
    let positions = append_all(&mut log, 0..100);
    assert_eq!(
        log.read(positions[7]).unwrap(),
        rec(7),
        "readable while buffered"
    );
    log.sync().unwrap();
    assert_eq!(log.read(positions[42]).unwrap(), rec(42));
    drop(log);
    let (log, seen) = open(&fs.crash(Crash::LoseUnsynced), opts(1 << 20)).unwrap();
    assert_eq!(seen, (0..100).map(rec).collect::<Vec<_>>());
    assert_eq!(log.read(positions[99]).unwrap(), rec(99));
}

#[test]
fn full_segments_are_sealed_and_a_sealed_one_can_be_removed() {
    let fs = SimFs::new();
    let (mut log, _) = open(&fs, opts(200)).unwrap();
    let positions = append_all(&mut log, 0..40);
    log.sync().unwrap();
    let ids: Vec<u64> = log.segment_ids().collect();
    assert!(ids.len() > 3, "{ids:?}");
    let first = ids[0];
    let in_first = positions.iter().filter(|p| p.segment == first).count();
    log.remove_segment(first).unwrap();
    log.remove_segment(log.active_segment()).unwrap();
    assert!(
        fs.exists(&segment_file(log.active_segment())),
        "the active one stays"
    );
    drop(log);
    let (_, seen) = open(&fs.crash(Crash::LoseUnsynced), opts(200)).unwrap();
    assert_eq!(seen, (in_first..40).map(rec).collect::<Vec<_>>());
}

#[test]
fn a_crash_at_any_byte_of_an_unsynced_batch_keeps_the_synced_records_and_a_prefix() {
    let fs = SimFs::new();
    let (mut log, _) = open(&fs, opts(1 << 20)).unwrap();
    append_all(&mut log, 0..10);
    log.sync().unwrap();
    append_all(&mut log, 10..20);
    log.write().unwrap();
    let unsynced = 10 * (12 + 1 + rec(0).len()) + 12 + 9; // ten records and a marker
    for torn in 0..=unsynced {
        let crashed = fs.crash(Crash::TornAt(torn));
        let (mut log, seen) =
            open(&crashed, opts(1 << 20)).unwrap_or_else(|e| panic!("torn at {torn}: {e}"));
        assert!(seen.len() >= 10 && seen.len() <= 20, "torn at {torn}");
        assert_eq!(seen, (0..seen.len()).map(rec).collect::<Vec<_>>());
        // The log goes on from where recovery cut it.
        let n = seen.len();
        log.append(&rec(n)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, again) = open(&crashed.crash(Crash::LoseUnsynced), opts(1 << 20)).unwrap();
        assert_eq!(
            again,
            (0..=n).map(rec).collect::<Vec<_>>(),
            "torn at {torn}"
        );
    }
}

#[test]
fn damage_in_a_sealed_segment_is_refused() {
    let fs = SimFs::new();
    let (mut log, _) = open(&fs, opts(200)).unwrap();
    append_all(&mut log, 0..40);
    log.sync().unwrap();
    let first = log.segment_ids().next().unwrap();
    drop(log);
    fs.flip_bit(&segment_file(first), 30, 3);
    let err = open(&fs, opts(200)).err().expect("refused");
    assert!(
        matches!(err, StoreError::Corrupt { offset: 24, .. }),
        "{err}"
    );
}

#[test]
fn damage_in_synced_records_of_the_active_segment_is_refused_not_cut() {
    let fs = SimFs::new();
    let (mut log, _) = open(&fs, opts(1 << 20)).unwrap();
    append_all(&mut log, 0..10);
    log.sync().unwrap();
    append_all(&mut log, 10..12); // starts with the marker for the first ten
    log.sync().unwrap();
    drop(log);
    fs.flip_bit(&segment_file(1), 40, 0);
    let err = open(&fs, opts(1 << 20)).err().expect("refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn damage_after_the_last_marker_is_a_torn_tail() {
    let fs = SimFs::new();
    let (mut log, _) = open(&fs, opts(1 << 20)).unwrap();
    append_all(&mut log, 0..5);
    log.sync().unwrap();
    append_all(&mut log, 5..10);
    log.write().unwrap();
    drop(log);
    let len = fs.contents(&segment_file(1)).unwrap().len();
    fs.flip_bit(&segment_file(1), len - 3, 1); // inside the last, unsynced record
    let (_, seen) = open(&fs, opts(1 << 20)).unwrap();
    assert_eq!(seen, (0..9).map(rec).collect::<Vec<_>>());
}

#[test]
fn enospc_leaves_no_half_record_and_a_later_write_succeeds() {
    let fs = SimFs::new();
    let (mut log, _) = open(&fs, opts(1 << 20)).unwrap();
    append_all(&mut log, 0..3);
    log.sync().unwrap();
    let before = fs.contents(&segment_file(1)).unwrap();
    append_all(&mut log, 3..6);
    fs.set_space_left(Some(20));
    assert!(matches!(log.sync(), Err(StoreError::Io(e)) if e.raw_os_error() == Some(28)));
    assert_eq!(
        fs.contents(&segment_file(1)).unwrap(),
        before,
        "the partial write was cut"
    );
    fs.set_space_left(None);
    log.sync().unwrap();
    drop(log);
    let (_, seen) = open(&fs.crash(Crash::LoseUnsynced), opts(1 << 20)).unwrap();
    assert_eq!(seen, (0..6).map(rec).collect::<Vec<_>>());
}

#[test]
fn after_an_fsync_error_the_log_accepts_nothing() {
    let fs = SimFs::new();
    let (mut log, _) = open(&fs, opts(1 << 20)).unwrap();
    append_all(&mut log, 0..3);
    fs.fail_sync_after(Some(0));
    assert!(matches!(log.sync(), Err(StoreError::Io(_))));
    fs.fail_sync_after(None);
    append_all(&mut log, 3..4);
    assert!(matches!(log.sync(), Err(StoreError::Failed)));
    assert!(matches!(log.write(), Err(StoreError::Failed)));
}

#[test]
fn a_new_segment_is_durable_once_created() {
    // Its directory entry is synced before anything goes into it.
    let fs = SimFs::new();
    let (mut log, _) = open(&fs, opts(100)).unwrap();
    append_all(&mut log, 0..20);
    log.sync().unwrap();
    let ids: Vec<u64> = log.segment_ids().collect();
    drop(log);
    let crashed = fs.crash(Crash::LoseUnsynced);
    for id in ids {
        assert!(crashed.exists(&segment_file(id)), "segment {id}");
    }
}

#[test]
fn read_next_walks_the_log_across_segments_markers_and_the_buffer() {
    let fs = SimFs::new();
    let (mut log, _) = open(&fs, opts(200)).unwrap();
    append_all(&mut log, 0..20);
    log.sync().unwrap();
    append_all(&mut log, 20..25); // after a marker, partly buffered
    let mut at = Position {
        segment: 0,
        offset: 0,
    };
    let mut seen = Vec::new();
    while let Some((pos, data, next)) = log.read_next(at).unwrap() {
        assert!(pos >= at);
        seen.push(data);
        at = next;
    }
    assert_eq!(seen, (0..25).map(rec).collect::<Vec<_>>());
    assert_eq!(at.segment, log.end().segment);
}
