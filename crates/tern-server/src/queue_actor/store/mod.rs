//! A queue's messages on disk: its own `tern_store::SegmentLog` of `tern_core::queue::records`.
//!
//! Two uses, one format:
//! - a **durable** queue writes every persistent message (and its journal: delivered, removed)
//!   and recovers them at start;
//! - **paging**: a queue with more ready messages than it may hold in memory writes the rest
//!   here instead (transient ones too, flagged so) and reads them back in order as consumers
//!   catch up ([`QueueStore::load`]). A non-durable queue pages into a scratch store that is
//!   never synced and is wiped at boot.
//!
//! Recovery is one pass that keeps ids, not messages (`records::Index`, a few bits a message);
//! the messages are then read back like paged ones. So a queue of ten million messages comes
//! back without ten million messages in memory.
//!
//! Group commit, pipelined: the actor appends records (buffered), and when something is
//! unsynced and no fsync is running it starts one on a blocking thread ([`QueueStore::begin_sync`]);
//! records appended meanwhile wait for the next. A publisher confirm that needs the disk waits
//! for the fsync that covers its records ([`QueueStore::confirm_after_sync`]). Removals and
//! deliveries are written but never waited for: losing them in a crash only redelivers.
//!
//! A message's fate (delivered, removed) is written to the acknowledgement file of the segment
//! it was enqueued in (`NNN.acks` beside `NNN.seg`), appended lazily and never waited for.
//! So space comes back segment by segment in any order: a sealed segment goes, with its
//! acknowledgement file, once none of its messages is still needed (paged and not read back, or
//! persistent and not removed). A message left unacknowledged for a long time holds its own
//! segment (at most 64 MiB), not the ones after it, and compaction (`compact`) moves a few
//! such messages out of an old segment so that it can go too.
//!
//! Each durable queue's directory is `queues/<128-bit hash of vhost and name>/` with a `NAME`
//! file holding the vhost and name (queue names may hold any byte, file names may not); paging
//! stores live under `paging/`.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tern_core::message::Message;
use tern_core::names::{QueueName, VhostName};
use tern_core::queue::records::{self, Index, Peek};
use tern_core::queue::{MsgId, QueueEvent};
use tern_store::{LogOptions, PendingSync, Position, SegmentLog, StoreError, Vfs};

use crate::sink::{ConnEvent, ConnSink};

mod compact;
#[cfg(test)]
mod tests;

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

/// What a segment still holds that matters.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    /// Paged messages not yet read back.
    paged: u64,
    /// Persistent messages read back (or never paged) and not yet removed.
    live: u64,
    /// The active segment when `live` first fell to compaction's threshold: compaction waits
    /// until the log has moved on past it, so a segment being drained in order is not copied.
    low_since: Option<u64>,
}

/// A message read back from the store.
pub struct Loaded {
    pub id: MsgId,
    pub message: Message,
    pub redelivered: bool,
}

/// What recovery found: live messages, all still on disk, and the highest id used.
pub struct Recovered {
    pub messages: u64,
    pub max_id: MsgId,
}

pub struct QueueStore {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    log: SegmentLog,
    durable: bool,
    /// Records appended so far; a sync begun at `n` covers the first `n`.
    appended: u64,
    synced: u64,
    in_flight: Option<u64>,
    waiting: VecDeque<(u64, ConfirmRequest)>,
    /// A persistent enqueue was appended since the last sync began: it should reach the disk
    /// soon even if no publisher waits. Deliveries and removals alone never cost an fsync.
    enqueued_since_sync: bool,
    scratch: Vec<u8>,
    /// The first id enqueued in each segment that holds enqueues: id -> segment.
    first_ids: BTreeMap<u64, u64>,
    held: BTreeMap<u64, Held>,
    /// Reading paged messages back: where to look next, and the last id read.
    cursor: Position,
    last_loaded: MsgId,
    /// Paged messages not read back yet.
    paged: u64,
    /// Each segment's acknowledgement file, opened when first written, and what is buffered
    /// for it.
    fates: BTreeMap<u64, Arc<dyn tern_store::VfsFile>>,
    fate_buf: BTreeMap<u64, Vec<u8>>,
    /// What recovery found (ids up to its max_id are live only if it says so).
    index: Index,
    /// Messages compaction moved out of the segment their id falls in: id -> segment.
    moved: BTreeMap<u64, u64>,
    /// Segments compacted, each deleted once the sync covering its moved copies (the
    /// `appended` count after them) is done.
    compacted: Vec<(u64, u64)>,
    /// Segments moved copies were written to since the last compaction ended.
    copied_to: std::collections::BTreeSet<u64>,
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
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

/// The directory a durable queue's messages live in, under `data_dir`.
pub fn queue_dir(data_dir: &Path, vhost: &VhostName, name: &QueueName) -> PathBuf {
    data_dir.join("queues").join(dir_name(vhost, name))
}

/// The directory a non-durable queue pages into, under `data_dir`.
pub fn paging_dir(data_dir: &Path, vhost: &VhostName, name: &QueueName) -> PathBuf {
    data_dir.join("paging").join(dir_name(vhost, name))
}

fn log_options(max_segment_bytes: u64) -> LogOptions {
    LogOptions {
        max_record_bytes: u32::MAX / 2,
        max_segment_bytes,
    }
}

impl QueueStore {
    /// Open (or create) a durable queue's store and index what it holds. Blocking.
    pub fn open_durable(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        vhost: &VhostName,
        name: &QueueName,
    ) -> Result<(QueueStore, Recovered), StoreError> {
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
    ) -> Result<(QueueStore, Recovered), StoreError> {
        vfs.create_dir_all(dir)?;
        write_name(&*vfs, dir, vhost, name)?;
        let mut index = Index::default();
        let mut first_ids: BTreeMap<u64, u64> = BTreeMap::new();
        let mut bad = None;
        let log = SegmentLog::open(
            vfs.clone(),
            dir,
            log_options(max_segment_bytes),
            |pos, data| {
                match records::peek(data) {
                    Ok(Peek::Enqueue {
                        id, moved: true, ..
                    }) => index.moved(pos.segment, id),
                    Ok(Peek::Enqueue { id, persistent, .. }) => {
                        if first_ids.values().next_back() != Some(&pos.segment) {
                            first_ids.insert(id.0, pos.segment);
                        }
                        index.enqueued(pos.segment, id, persistent);
                    }
                    Ok(_) => {}
                    Err(e) => bad = Some((pos, e)),
                }
                Ok(())
            },
        )?;
        for segment in log.segment_ids() {
            read_fates(&*vfs, &fate_path(dir, segment), |peek| {
                index.fate(segment, peek)
            });
        }
        if let Some((pos, e)) = bad {
            return Err(StoreError::Corrupt {
                path: dir.to_path_buf(),
                offset: pos.offset,
                detail: format!("segment {}: {e}", pos.segment),
            });
        }
        let mut store = Self::new(vfs, dir, log, true, index);
        store.first_ids = first_ids;
        store.moved = store
            .index
            .moved_segments()
            .map(|(id, s)| (id.0, s))
            .collect();
        for (segment, _) in store.index.live().collect::<Vec<_>>() {
            store.held.entry(segment).or_default().paged += 1;
            store.paged += 1;
        }
        store.cursor = Position {
            segment: 0,
            offset: 0,
        };
        if store.moved.values().next().is_some() {
            // Moved copies may be only in the page cache (a process crash): make them durable
            // before reclaim deletes the originals they stand for.
            store.log.sync()?;
        }
        store.reclaim()?;
        let recovered = Recovered {
            messages: store.paged,
            max_id: store.index.max_id(),
        };
        Ok((store, recovered))
    }

    /// A fresh scratch store for a non-durable queue's paged messages: never synced, its
    /// directory cleared first. Blocking.
    pub fn create_paging(vfs: Arc<dyn Vfs>, dir: &Path) -> Result<QueueStore, StoreError> {
        Self::create_paging_with(vfs, dir, LogOptions::default().max_segment_bytes)
    }

    fn create_paging_with(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        max_segment_bytes: u64,
    ) -> Result<QueueStore, StoreError> {
        if vfs.exists(dir) || vfs.create_dir_all(dir).is_ok() {
            for name in vfs.list(dir)? {
                vfs.remove(&dir.join(name))?;
            }
        }
        let log = SegmentLog::open(vfs.clone(), dir, log_options(max_segment_bytes), |_, _| {
            Ok(())
        })?;
        let mut store = Self::new(vfs, dir, log, false, Index::default());
        store.cursor = store.log.end();
        Ok(store)
    }

    fn new(vfs: Arc<dyn Vfs>, dir: &Path, log: SegmentLog, durable: bool, index: Index) -> Self {
        QueueStore {
            vfs,
            dir: dir.to_path_buf(),
            log,
            durable,
            appended: 0,
            synced: 0,
            in_flight: None,
            waiting: VecDeque::new(),
            enqueued_since_sync: false,
            scratch: Vec::new(),
            first_ids: BTreeMap::new(),
            held: BTreeMap::new(),
            cursor: Position {
                segment: 0,
                offset: 0,
            },
            last_loaded: MsgId(0),
            paged: 0,
            fates: BTreeMap::new(),
            fate_buf: BTreeMap::new(),
            index,
            moved: BTreeMap::new(),
            compacted: Vec::new(),
            copied_to: Default::default(),
        }
    }

    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// Write a message: `paged`, it goes to disk instead of memory (to be read back by
    /// [`load`](Self::load)); else it is a durable queue's persistent message kept in memory too.
    pub fn append(&mut self, id: MsgId, message: &Message, paged: bool) -> Result<(), StoreError> {
        self.scratch.clear();
        records::encode_enqueue(id, message, paged, &mut self.scratch);
        let pos = self.log.append(&self.scratch)?;
        if self.first_ids.values().next_back() != Some(&pos.segment) {
            self.first_ids.insert(id.0, pos.segment);
        }
        let held = self.held.entry(pos.segment).or_default();
        if paged {
            held.paged += 1;
            self.paged += 1;
        } else {
            held.live += 1;
        }
        self.appended += 1;
        self.enqueued_since_sync |= self.durable && message.is_persistent();
        Ok(())
    }

    /// Read back up to `max` paged messages (fewer once `max_bytes` of bodies are read), oldest
    /// first.
    pub fn load(&mut self, max: usize, max_bytes: u64) -> Result<Vec<Loaded>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        while self.paged > 0 && out.len() < max && bytes < max_bytes {
            let Some((pos, data, next)) = self.log.read_next(self.cursor)? else {
                break;
            };
            self.cursor = next;
            let Ok(Peek::Enqueue {
                id,
                persistent,
                paged,
                ..
            }) = records::peek(&data)
            else {
                continue;
            };
            let recovered = id <= self.index.max_id();
            if !self.wanted(pos.segment, id, paged) {
                continue;
            }
            let Some(message) = self.decode_message(pos, data)? else {
                continue;
            };
            self.last_loaded = self.last_loaded.max(id);
            self.paged -= 1;
            let held = self.held.entry(pos.segment).or_default();
            held.paged = held.paged.saturating_sub(1);
            if self.durable && persistent {
                held.live += 1;
            }
            bytes += message.size_bytes() as u64;
            let redelivered = recovered && self.index.was_delivered(id);
            out.push(Loaded {
                id,
                message,
                redelivered,
            });
        }
        if self.paged == 0 {
            // Nothing left behind the cursor: later pages start at the end.
            self.cursor = self.log.end();
        }
        self.reclaim()?;
        Ok(out)
    }

    /// The message of the enqueue record read at `pos` (None for another kind of record); a
    /// record that does not decode is damage, reported with where it is.
    fn decode_message(&self, pos: Position, data: Vec<u8>) -> Result<Option<Message>, StoreError> {
        match records::decode(Bytes::from(data)) {
            Ok(records::QueueRecord::Enqueue { message, .. }) => Ok(Some(*message)),
            Ok(_) => Ok(None),
            Err(e) => Err(StoreError::Corrupt {
                path: self.dir.clone(),
                offset: pos.offset,
                detail: format!("segment {}: {e}", pos.segment),
            }),
        }
    }

    /// Whether the enqueue of `id` read at `segment` is a paged message still to read back:
    /// a recovered one the index says is live (and this its copy), or a paged one appended
    /// since, in log order.
    fn wanted(&mut self, segment: u64, id: MsgId, paged: bool) -> bool {
        if id <= self.index.max_id() {
            self.index.take(segment, id, self.last_loaded)
        } else {
            paged && id > self.last_loaded
        }
    }

    /// queue.purge took every paged message: a durable store writes their removal.
    pub fn purge_paged(&mut self) -> Result<(), StoreError> {
        let mut ids = Vec::new();
        let mut at = self.cursor;
        while self.paged > 0 {
            let Some((pos, data, next)) = self.log.read_next(at)? else {
                break;
            };
            at = next;
            if let Ok(Peek::Enqueue { id, paged, .. }) = records::peek(&data) {
                if self.wanted(pos.segment, id, paged) {
                    ids.push(QueueEvent::Removed(id));
                    self.last_loaded = self.last_loaded.max(id);
                }
            }
        }
        self.paged = 0;
        self.held.values_mut().for_each(|h| h.paged = 0);
        self.cursor = self.log.end();
        if self.durable {
            self.buffer_fates(&ids);
        }
        self.reclaim()
    }

    /// Buffer the journal's events for their segments' acknowledgement files; removals free
    /// space.
    pub fn append_events(&mut self, events: &[QueueEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.buffer_fates(events);
        let mut freed = false;
        for e in events {
            if let QueueEvent::Removed(id) = e {
                if let Some(segment) = self.segment_of(*id) {
                    let active = self.log.active_segment();
                    let held = self.held.entry(segment).or_default();
                    held.live = held.live.saturating_sub(1);
                    freed |= held.live == 0 && held.paged == 0;
                    if held.live <= compact::COMPACT_LIVE_MAX && held.low_since.is_none() {
                        held.low_since = Some(active);
                    }
                }
            }
        }
        if freed {
            self.reclaim()?;
        }
        self.maybe_compact()
    }

    /// Frame `events` into the buffers of the segments their messages were enqueued in.
    fn buffer_fates(&mut self, events: &[QueueEvent]) {
        let mut by_segment: BTreeMap<u64, Vec<QueueEvent>> = BTreeMap::new();
        for e in events {
            let (QueueEvent::Delivered(id) | QueueEvent::Removed(id)) = *e;
            if let Some(segment) = self.segment_of(id) {
                by_segment.entry(segment).or_default().push(*e);
            }
        }
        for (segment, events) in by_segment {
            let mut records = Vec::new();
            records::encode_events(&events, &mut records);
            let buf = self.fate_buf.entry(segment).or_default();
            for r in records {
                tern_store::record::encode(&r, buf);
            }
        }
    }

    /// Append what is buffered to the acknowledgement files (not synced: see the module docs).
    fn write_fates(&mut self) -> Result<(), StoreError> {
        for (segment, buf) in std::mem::take(&mut self.fate_buf) {
            let file = match self.fates.get(&segment) {
                Some(f) => f.clone(),
                None => {
                    let path = fate_path(&self.dir, segment);
                    let f = if self.vfs.exists(&path) {
                        self.vfs.open(&path)?
                    } else {
                        // Once a segment: the file's name lasts, its contents follow unsynced.
                        let f = self.vfs.create(&path)?;
                        self.vfs.sync_dir(&self.dir)?;
                        f
                    };
                    if self.fates.len() >= OPEN_FATE_FILES {
                        // Acknowledgements come mostly for the oldest segments: keep those.
                        self.fates.pop_last();
                    }
                    self.fates.insert(segment, f.clone());
                    f
                }
            };
            file.append(&buf)?;
        }
        Ok(())
    }

    fn segment_of(&self, id: MsgId) -> Option<u64> {
        if let Some(s) = self.moved.get(&id.0) {
            return Some(*s);
        }
        self.first_ids.range(..=id.0).next_back().map(|(_, s)| *s)
    }

    /// Delete sealed segments, with their acknowledgement files, that hold nothing needed.
    fn reclaim(&mut self) -> Result<(), StoreError> {
        let active = self.log.active_segment();
        let dead: Vec<u64> = self
            .log
            .segment_ids()
            .filter(|s| {
                *s != active && self.held.get(s).is_none_or(|h| h.paged == 0 && h.live == 0)
            })
            .collect();
        for segment in dead {
            self.log.remove_segment(segment)?;
            self.held.remove(&segment);
            self.first_ids.retain(|_, s| *s != segment);
            self.moved.retain(|_, s| *s != segment);
            self.fates.remove(&segment);
            self.fate_buf.remove(&segment);
            let path = fate_path(&self.dir, segment);
            if self.vfs.exists(&path) {
                self.vfs.remove(&path)?;
            }
        }
        Ok(())
    }

    /// Whether an fsync should start: a confirm waits, or a persistent enqueue is not yet on
    /// disk. A scratch (paging) store never syncs.
    pub fn wants_sync(&self) -> bool {
        self.durable && (!self.waiting.is_empty() || self.enqueued_since_sync)
    }

    /// Confirm `request` once everything appended so far is on disk (now, if it is, or if this
    /// store is not durable).
    pub fn confirm_after_sync(&mut self, request: ConfirmRequest) {
        if !self.durable || self.synced >= self.appended {
            request.confirm();
        } else {
            self.waiting.push_back((self.appended, request));
        }
    }

    /// Start an fsync if records wait for one and none is running: the fsync to run elsewhere.
    pub fn begin_sync(&mut self) -> Result<Option<(u64, PendingSync)>, StoreError> {
        if !self.durable {
            return Ok(None);
        }
        self.write_fates()?;
        if self.in_flight.is_some() || self.synced >= self.appended {
            return Ok(None);
        }
        let upto = self.appended;
        self.enqueued_since_sync = false;
        let Some(pending) = self.log.begin_sync()? else {
            self.synced = upto;
            self.release();
            self.finish_compactions()?;
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
        self.finish_compactions()
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

    /// Write buffered records without waiting for the disk (removals, deliveries, pages).
    pub fn write(&mut self) -> Result<(), StoreError> {
        self.write_fates()?;
        self.log.write()
    }

    /// Make everything durable now (a clean shutdown). Blocking.
    pub fn sync_now(&mut self) -> Result<(), StoreError> {
        if self.durable {
            self.write_fates()?;
            self.fates.clear();
            for name in self.vfs.list(&self.dir)? {
                if name.ends_with(".acks") {
                    self.vfs.open(&self.dir.join(name))?.sync()?;
                }
            }
            self.vfs.sync_dir(&self.dir)?;
            self.log.sync()?;
            self.synced = self.appended;
            self.release();
            self.finish_compactions()?;
        }
        Ok(())
    }

    /// Writing or syncing failed: what waits for a sync may never be on disk, so its confirms
    /// are negative (basic.nack). The files stay as they are, for recovery to judge.
    pub fn abandon(mut self) {
        for (_, request) in self.waiting.drain(..) {
            request.answer(false);
        }
    }

    /// The queue is deleted: its files go, and confirms still waiting are answered (the
    /// messages went with the queue, as in RabbitMQ).
    pub fn destroy(mut self) {
        for (_, request) in self.waiting.drain(..) {
            request.confirm();
        }
        let remove = |path: &Path| {
            if let Err(e) = self.vfs.remove(path) {
                tracing::warn!(path = %path.display(), error = %e, "removing a deleted queue's file");
            }
        };
        for name in self.vfs.list(&self.dir).unwrap_or_default() {
            remove(&self.dir.join(name));
        }
        let _ = self.vfs.remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = self.vfs.sync_dir(parent);
        }
    }

    /// Segment files on disk.
    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.log.segment_ids().count()
    }
}

/// Acknowledgement files a store keeps open (others are opened again when written to).
const OPEN_FATE_FILES: usize = 4;

fn fate_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.acks"))
}

/// Read an acknowledgement file's records; a damaged or torn one ends the reading there (what
/// is lost are acknowledgements: those messages come back, nothing is lost).
fn read_fates(vfs: &dyn Vfs, path: &Path, mut visit: impl FnMut(Peek)) {
    if !vfs.exists(path) {
        return;
    }
    let read = || -> Result<Vec<u8>, StoreError> {
        let file = vfs.open(path)?;
        let len = usize::try_from(file.len()?).map_err(|_| StoreError::TooLarge)?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    };
    let bytes = match read() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "acknowledgements unreadable: their messages come back");
            return;
        }
    };
    let mut at = 0;
    while at < bytes.len() {
        let Ok((payload, n)) = tern_store::record::decode(&bytes[at..], u32::MAX / 2) else {
            tracing::warn!(path = %path.display(), offset = at, "acknowledgements cut short: the rest come back");
            return;
        };
        if let Ok(peek) = records::peek(payload) {
            visit(peek);
        }
        at += n;
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
