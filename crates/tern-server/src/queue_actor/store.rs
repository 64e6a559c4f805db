//! A durable queue's messages on disk: its own `tern_store::SegmentLog` of
//! `tern_core::queue::records` (persistent enqueues, delivered and removed ids).
//!
//! Group commit, pipelined: the actor appends records (buffered), and when something is
//! unsynced and no fsync is running it starts one on a blocking thread ([`QueueStore::begin_sync`]);
//! records appended meanwhile wait for the next. A publisher confirm that needs the disk waits
//! for the fsync that covers its records ([`QueueStore::confirm_after_sync`]). Removals and
//! deliveries are written but never waited for: losing them in a crash only redelivers.
//!
//! Space comes back segment by segment from the oldest: a sealed segment goes once none of the
//! messages enqueued in it is live. Only from the oldest, because a segment's removal records
//! may be all that keeps an older segment's message from coming back. (A few long-unacked
//! messages at the head can hold segments behind them; compacting such a head is left to do.)
//!
//! Each queue's directory is `queues/<128-bit hash of vhost and name>/` with a `NAME` file
//! holding the vhost and name (queue names may hold any byte, file names may not).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tern_core::message::Message;
use tern_core::names::{QueueName, VhostName};
use tern_core::queue::records::{self, Recovery};
use tern_core::queue::{MsgId, QueueEvent};
use tern_store::{LogOptions, PendingSync, SegmentLog, StoreError, Vfs};

use crate::sink::{ConnEvent, ConnSink};

/// Who to tell once a publish batch is on disk.
pub struct ConfirmRequest {
    pub sink: ConnSink,
    pub token: u64,
}

impl ConfirmRequest {
    pub fn confirm(self) {
        self.answer(true);
    }

    pub fn answer(self, ok: bool) {
        let _ = self.sink.send(ConnEvent::Confirmed {
            token: self.token,
            ok,
        });
    }
}

pub struct QueueStore {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    log: SegmentLog,
    /// Records appended so far; a sync begun at `n` covers the first `n`.
    appended: u64,
    synced: u64,
    in_flight: Option<u64>,
    waiting: VecDeque<(u64, ConfirmRequest)>,
    /// An enqueue was appended since the last sync began: it should reach the disk soon even
    /// if no publisher waits for it. Deliveries and removals alone never cost an fsync.
    enqueued_since_sync: bool,
    scratch: Vec<u8>,
    /// The first id enqueued in each segment that holds enqueues: id -> segment.
    first_ids: BTreeMap<u64, u64>,
    /// Live messages enqueued in each such segment.
    live: BTreeMap<u64, u64>,
}

/// FNV-1a 64 under two offset bases: 128 bits, stable across builds and platforms.
fn dir_name(vhost: &VhostName, name: &QueueName) -> String {
    let mut key = Vec::with_capacity(2 + vhost.len() + name.len());
    key.push(vhost.len() as u8);
    key.extend_from_slice(vhost.0.as_slice());
    key.push(name.len() as u8);
    key.extend_from_slice(name.0.as_slice());
    let fnv = |basis: u64| {
        key.iter().fold(basis, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x84222325_cbf29ce4)
    )
}

/// The directory a queue's messages live in, under `data_dir`.
pub fn queue_dir(data_dir: &Path, vhost: &VhostName, name: &QueueName) -> PathBuf {
    data_dir.join("queues").join(dir_name(vhost, name))
}

impl QueueStore {
    /// Open (or create) the store in `dir` and recover what it holds. Blocking.
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        vhost: &VhostName,
        name: &QueueName,
    ) -> Result<(QueueStore, Recovery), StoreError> {
        Self::open_with(
            vfs,
            dir,
            vhost,
            name,
            LogOptions::default().max_segment_bytes,
        )
    }

    fn open_with(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        vhost: &VhostName,
        name: &QueueName,
        max_segment_bytes: u64,
    ) -> Result<(QueueStore, Recovery), StoreError> {
        vfs.create_dir_all(dir)?;
        write_name(&*vfs, dir, vhost, name)?;
        let mut recovery = Recovery::default();
        let mut bad = None;
        let mut first_ids: BTreeMap<u64, u64> = BTreeMap::new();
        let opts = LogOptions {
            max_record_bytes: u32::MAX / 2,
            max_segment_bytes,
        };
        let log = SegmentLog::open(vfs.clone(), dir, opts, |pos, data| {
            match records::decode(Bytes::copy_from_slice(data)) {
                Ok(r) => {
                    if let records::QueueRecord::Enqueue { id, .. } = &r {
                        if first_ids.values().next_back() != Some(&pos.segment) {
                            first_ids.insert(id.0, pos.segment);
                        }
                    }
                    recovery.apply(r)
                }
                Err(e) => bad = Some((pos, e)),
            }
            Ok(())
        })?;
        if let Some((pos, e)) = bad {
            return Err(StoreError::Corrupt {
                path: dir.to_path_buf(),
                offset: pos.offset,
                detail: format!("segment {}: {e}", pos.segment),
            });
        }
        let mut store = QueueStore {
            vfs,
            dir: dir.to_path_buf(),
            log,
            appended: 0,
            synced: 0,
            in_flight: None,
            waiting: VecDeque::new(),
            enqueued_since_sync: false,
            scratch: Vec::new(),
            first_ids,
            live: BTreeMap::new(),
        };
        for id in recovery.ids() {
            if let Some(segment) = store.segment_of(id) {
                *store.live.entry(segment).or_default() += 1;
            }
        }
        store.reclaim()?;
        Ok((store, recovery))
    }

    pub fn append_enqueue(&mut self, id: MsgId, message: &Message) -> Result<(), StoreError> {
        self.scratch.clear();
        records::encode_enqueue(id, message, &mut self.scratch);
        let pos = self.log.append(&self.scratch)?;
        if self.first_ids.values().next_back() != Some(&pos.segment) {
            self.first_ids.insert(id.0, pos.segment);
        }
        *self.live.entry(pos.segment).or_default() += 1;
        self.appended += 1;
        self.enqueued_since_sync = true;
        Ok(())
    }

    /// Whether an fsync should start: a confirm waits, or an enqueue is not yet on disk.
    pub fn wants_sync(&self) -> bool {
        !self.waiting.is_empty() || self.enqueued_since_sync
    }

    pub fn append_events(&mut self, events: &[QueueEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        records::encode_events(events, &mut out);
        for record in out {
            self.log.append(&record)?;
            self.appended += 1;
        }
        let mut head_freed = false;
        for e in events {
            if let QueueEvent::Removed(id) = e {
                if let Some(segment) = self.segment_of(*id) {
                    let live = self.live.entry(segment).or_default();
                    *live = live.saturating_sub(1);
                    head_freed |= *live == 0;
                }
            }
        }
        if head_freed {
            self.reclaim()?;
        }
        Ok(())
    }

    fn segment_of(&self, id: MsgId) -> Option<u64> {
        self.first_ids.range(..=id.0).next_back().map(|(_, s)| *s)
    }

    /// Delete sealed segments from the oldest while none of their messages is live.
    fn reclaim(&mut self) -> Result<(), StoreError> {
        let active = self.log.active_segment();
        let dead: Vec<u64> = self
            .log
            .segment_ids()
            .take_while(|s| *s != active && self.live.get(s).is_none_or(|n| *n == 0))
            .collect();
        for segment in dead {
            self.log.remove_segment(segment)?;
            self.live.remove(&segment);
            self.first_ids.retain(|_, s| *s != segment);
        }
        Ok(())
    }

    /// Segment files on disk.
    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.log.segment_ids().count()
    }

    /// Confirm `request` once everything appended so far is on disk (now, if it is).
    pub fn confirm_after_sync(&mut self, request: ConfirmRequest) {
        if self.synced >= self.appended {
            request.confirm();
        } else {
            self.waiting.push_back((self.appended, request));
        }
    }

    /// Start an fsync if records wait for one and none is running: the fsync to run elsewhere.
    pub fn begin_sync(&mut self) -> Result<Option<(u64, PendingSync)>, StoreError> {
        if self.in_flight.is_some() || self.synced >= self.appended {
            return Ok(None);
        }
        let upto = self.appended;
        self.enqueued_since_sync = false;
        let Some(pending) = self.log.begin_sync()? else {
            self.synced = upto;
            self.release();
            return Ok(None);
        };
        self.in_flight = Some(upto);
        Ok(Some((upto, pending)))
    }

    /// The fsync begun at `upto` returned `result`: confirm what it covers.
    pub fn finish_sync(
        &mut self,
        upto: u64,
        pending: &PendingSync,
        result: std::io::Result<()>,
    ) -> Result<(), StoreError> {
        self.in_flight = None;
        self.log.finish_sync(pending, result)?;
        self.synced = self.synced.max(upto);
        self.release();
        Ok(())
    }

    fn release(&mut self) {
        while self
            .waiting
            .front()
            .is_some_and(|(seq, _)| *seq <= self.synced)
        {
            if let Some((_, request)) = self.waiting.pop_front() {
                request.confirm();
            }
        }
    }

    /// Write buffered records without waiting for the disk (removals, deliveries).
    pub fn write(&mut self) -> Result<(), StoreError> {
        self.log.write()
    }

    /// The queue is deleted: its files go, and confirms still waiting are answered (the
    /// messages went with the queue, as in RabbitMQ).
    pub fn destroy(mut self) {
        for (_, request) in self.waiting.drain(..) {
            request.confirm();
        }
        let ids: Vec<u64> = self.log.segment_ids().collect();
        let remove = |path: &Path| {
            if let Err(e) = self.vfs.remove(path) {
                tracing::warn!(path = %path.display(), error = %e, "removing a deleted queue's file");
            }
        };
        for id in ids {
            remove(&self.dir.join(format!("{id:020}.seg")));
        }
        remove(&self.dir.join("NAME"));
        let _ = self.vfs.remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = self.vfs.sync_dir(parent);
        }
    }
}

fn write_name(
    vfs: &dyn Vfs,
    dir: &Path,
    vhost: &VhostName,
    name: &QueueName,
) -> Result<(), StoreError> {
    let path = dir.join("NAME");
    if vfs.exists(&path) {
        return Ok(());
    }
    let file = vfs.create(&path)?;
    let mut text = Vec::new();
    text.extend_from_slice(vhost.0.as_slice());
    text.push(b'\n');
    text.extend_from_slice(name.0.as_slice());
    text.push(b'\n');
    file.append(&text)?;
    file.sync()?;
    vfs.sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_amqp::{BasicProperties, ShortStr};
    use tern_store::sim::{Crash, SimFs};
    use tokio::sync::mpsc;

    fn message(body: &str) -> Message {
        let properties = BasicProperties {
            delivery_mode: Some(2),
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

    fn open(fs: &SimFs) -> (QueueStore, Recovery) {
        let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
        let (vh, q) = (VhostName::from("/"), QueueName::from("q"));
        QueueStore::open(vfs, &queue_dir(Path::new("/data"), &vh, &q), &vh, &q).unwrap()
    }

    fn sync(store: &mut QueueStore) {
        if let Some((upto, pending)) = store.begin_sync().unwrap() {
            store.finish_sync(upto, &pending, pending.run()).unwrap();
        }
    }

    #[test]
    fn segments_whose_messages_are_all_gone_are_deleted_oldest_first() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/data/queues")).unwrap();
        let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
        let (vh, q) = (VhostName::from("/"), QueueName::from("q"));
        let dir = queue_dir(Path::new("/data"), &vh, &q);
        let open = |vfs: Arc<dyn Vfs>| QueueStore::open_with(vfs, &dir, &vh, &q, 16 << 10).unwrap();
        let (mut store, _) = open(vfs.clone());
        let body = "x".repeat(1000);
        for i in 1..=100 {
            store.append_enqueue(MsgId(i), &message(&body)).unwrap();
        }
        sync(&mut store);
        let before = store.segment_count();
        assert!(before >= 6, "{before} segments");
        // Removing a message from the middle frees nothing: the head still holds live ones.
        store
            .append_events(&[QueueEvent::Removed(MsgId(60))])
            .unwrap();
        assert_eq!(store.segment_count(), before);
        let head: Vec<QueueEvent> = (1..=50).map(|i| QueueEvent::Removed(MsgId(i))).collect();
        store.append_events(&head).unwrap();
        sync(&mut store);
        let after = store.segment_count();
        assert!(after < before - 2, "{before} -> {after} segments");
        let (_, recovered) = open(Arc::new(fs.crash(Crash::LoseUnsynced)));
        let ids: Vec<u64> = recovered.ids().map(|id| id.0).collect();
        let expect: Vec<u64> = (51..=100).filter(|i| *i != 60).collect();
        assert_eq!(
            ids, expect,
            "nothing live was lost with the deleted segments"
        );
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
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/data/queues")).unwrap();
        let (mut store, recovery) = open(&fs);
        assert!(recovery.is_empty());
        let (sink, mut events) = mpsc::unbounded_channel();
        store.append_enqueue(MsgId(1), &message("one")).unwrap();
        store.confirm_after_sync(ConfirmRequest {
            sink: sink.clone(),
            token: 1,
        });
        let (upto, first) = store.begin_sync().unwrap().expect("a sync to run");
        // Appended while the first fsync runs: waits for the next one.
        store.append_enqueue(MsgId(2), &message("two")).unwrap();
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
        let (_, recovered) = open(&fs.crash(Crash::LoseUnsynced));
        let ids: Vec<u64> = recovered.finish().map(|(id, _, _)| id.0).collect();
        assert_eq!(ids, [1]);
        let (upto, second) = store.begin_sync().unwrap().expect("the next sync");
        store.finish_sync(upto, &second, second.run()).unwrap();
        assert!(matches!(
            events.try_recv(),
            Ok(ConnEvent::Confirmed { token: 2, ok: true })
        ));
    }

    #[test]
    fn removed_messages_stay_removed_and_delivered_ones_come_back_redelivered() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/data/queues")).unwrap();
        let (mut store, _) = open(&fs);
        for i in 1..=3 {
            store
                .append_enqueue(MsgId(i), &message(&i.to_string()))
                .unwrap();
        }
        store
            .append_events(&[
                QueueEvent::Delivered(MsgId(2)),
                QueueEvent::Removed(MsgId(1)),
            ])
            .unwrap();
        let (upto, sync) = store.begin_sync().unwrap().unwrap();
        store.finish_sync(upto, &sync, sync.run()).unwrap();
        let (_, recovered) = open(&fs.crash(Crash::LoseUnsynced));
        let got: Vec<(u64, bool)> = recovered.finish().map(|(id, _, d)| (id.0, d)).collect();
        assert_eq!(got, [(2, true), (3, false)]);
    }
}
