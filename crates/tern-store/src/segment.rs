//! An append-only log of records in numbered segment files, with recovery.
//!
//! A log is a directory of `NNNNNNNNNNNNNNNNNNNN.seg` files. Records are appended to the last
//! (active) segment, buffered until [`SegmentLog::write`] or [`SegmentLog::sync`]; one `sync`
//! makes everything appended since the last one durable (group commit is the caller's: append
//! many, sync once). A segment over `max_segment_bytes` is synced, sealed, and a new one started
//! (its directory entry synced too).
//!
//! Recovery ([`SegmentLog::open`]) reads every segment in order:
//! - a sealed segment must be intact: it was synced before the next was started, so damage
//!   there is corruption at rest and the log is refused ([`StoreError::Corrupt`]);
//! - in the active segment, damage past what was known durable is a torn tail from a crash and
//!   is cut off, with any good records after it (they were not synced either: writes can reach
//!   the disk out of order); damage before it is refused. What is durable is recorded in the
//!   log itself: after each sync a small marker record saying "synced through offset N" starts
//!   the next write, and recovery looks past damage for such markers. The last batch synced
//!   before a crash has no marker yet, so damage *at rest* inside it reads as a torn tail.
//!
//! Each record's payload starts with one kind byte (data or marker); callers see data only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::record::{self, HEADER_BYTES};
use crate::vfs::{Vfs, VfsFile};
use crate::StoreError;

const KIND_DATA: u8 = 0;
const KIND_SYNCED: u8 = 1;
const SUFFIX: &str = ".seg";

#[derive(Clone, Copy, Debug)]
pub struct LogOptions {
    /// A segment is sealed once it holds this much.
    pub max_segment_bytes: u64,
    /// The largest payload a record may have; anything longer is damage.
    pub max_record_bytes: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_segment_bytes: 64 << 20,
            max_record_bytes: 64 << 20,
        }
    }
}

/// Where one record is: its segment and the offset of its header there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

struct Segment {
    file: Arc<dyn VfsFile>,
    /// Bytes in the file.
    len: u64,
}

pub struct SegmentLog {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    opts: LogOptions,
    /// Every segment, the active one last.
    segments: BTreeMap<u64, Segment>,
    active: u64,
    /// Records appended but not yet written to the active segment.
    buf: Vec<u8>,
    /// Offset in the active segment through which data is durable.
    synced: u64,
    /// A sync happened since the last write: the next write starts with a marker.
    mark: bool,
    /// A sync failed: after an fsync error nothing about the file can be trusted (the kernel
    /// may have dropped the dirty pages), so the log refuses all further writes.
    failed: bool,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

fn corrupt(path: &Path, offset: u64, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        detail,
    }
}

impl SegmentLog {
    /// Open (or create) the log in `dir`, calling `visit` with every data record in order.
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        opts: LogOptions,
        mut visit: impl FnMut(Position, &[u8]) -> Result<(), StoreError>,
    ) -> Result<SegmentLog, StoreError> {
        vfs.create_dir_all(dir)?;
        let mut ids: Vec<u64> = vfs
            .list(dir)?
            .iter()
            .filter_map(|n| n.strip_suffix(SUFFIX)?.parse().ok())
            .collect();
        ids.sort_unstable();
        let mut log = SegmentLog {
            vfs,
            dir: dir.to_path_buf(),
            opts,
            segments: BTreeMap::new(),
            active: 0,
            buf: Vec::new(),
            synced: 0,
            mark: false,
            failed: false,
        };
        let last = ids.last().copied();
        for id in ids {
            log.recover_segment(id, Some(id) == last, &mut visit)?;
        }
        if log.segments.is_empty() {
            log.start_segment(1)?;
        }
        Ok(log)
    }

    fn recover_segment(
        &mut self,
        id: u64,
        is_active: bool,
        visit: &mut impl FnMut(Position, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, id);
        let file = self.vfs.open(&path)?;
        let len = file.len()?;
        let mut bytes = vec![0u8; usize::try_from(len).map_err(|_| StoreError::TooLarge)?];
        file.read_exact_at(&mut bytes, 0)?;
        let scan = scan(&bytes, self.opts.max_record_bytes);
        let end = match scan.damage {
            None => bytes.len(),
            Some(at) if !is_active => {
                return Err(corrupt(
                    &path,
                    at as u64,
                    "damaged record in a sealed segment".into(),
                ))
            }
            Some(at) if scan.synced_through > at as u64 => {
                let detail = "damaged record inside the synced part of the log".to_string();
                return Err(corrupt(&path, at as u64, detail));
            }
            Some(at) => {
                tracing::warn!(path = %path.display(), offset = at, dropped = len - at as u64, "cutting a torn tail");
                file.truncate(at as u64)?;
                at
            }
        };
        for (offset, payload) in scan.records.iter().filter(|(o, _)| *o < end) {
            if payload[0] == KIND_DATA {
                let pos = Position {
                    segment: id,
                    offset: *offset as u64,
                };
                visit(pos, &payload[1..])?;
            }
        }
        self.segments.insert(
            id,
            Segment {
                file,
                len: end as u64,
            },
        );
        self.active = id;
        self.synced = end as u64;
        Ok(())
    }

    fn start_segment(&mut self, id: u64) -> Result<(), StoreError> {
        let file = self.vfs.create(&segment_path(&self.dir, id))?;
        self.vfs.sync_dir(&self.dir)?;
        self.segments.insert(id, Segment { file, len: 0 });
        self.active = id;
        self.synced = 0;
        self.mark = false;
        Ok(())
    }

    /// Append one record (buffered); where it will be.
    pub fn append(&mut self, data: &[u8]) -> Result<Position, StoreError> {
        if data.len() >= self.opts.max_record_bytes as usize {
            return Err(StoreError::TooLarge);
        }
        let framed = (HEADER_BYTES + 1 + data.len()) as u64;
        let active_len = self.active_len() + self.buf.len() as u64;
        if active_len > 0 && active_len + framed > self.opts.max_segment_bytes {
            self.roll()?;
        }
        if self.mark {
            self.mark = false;
            let synced = self.synced.to_le_bytes();
            record::encode_parts(&[&[KIND_SYNCED], &synced], &mut self.buf);
        }
        let pos = Position {
            segment: self.active,
            offset: self.active_len() + self.buf.len() as u64,
        };
        record::encode_parts(&[&[KIND_DATA], data], &mut self.buf);
        Ok(pos)
    }

    fn active_len(&self) -> u64 {
        self.segments.get(&self.active).map_or(0, |s| s.len)
    }

    /// Seal the active segment (synced) and start the next.
    fn roll(&mut self) -> Result<(), StoreError> {
        self.sync()?;
        self.start_segment(self.active + 1)
    }

    /// Write buffered records to the active segment (not durable yet). On failure (ENOSPC,
    /// say) whatever part was written is cut off again and the records stay buffered, so a
    /// later write can retry; if even the cut fails the log is failed.
    pub fn write(&mut self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Failed);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(seg) = self.segments.get_mut(&self.active) else {
            return Err(StoreError::Io(std::io::ErrorKind::NotFound.into()));
        };
        if let Err(e) = seg.file.append(&self.buf) {
            if seg.file.truncate(seg.len).is_err() {
                self.failed = true;
            }
            return Err(e.into());
        }
        seg.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Write and make durable everything appended so far. An error here means the log can no
    /// longer promise anything: the caller must stop (see the durability contract).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let Some(pending) = self.begin_sync()? else {
            return Ok(());
        };
        let result = pending.run();
        self.finish_sync(&pending, result)
    }

    /// The first half of [`sync`](Self::sync): write what is buffered and return the fsync to
    /// run, which may run on another thread while this log takes more appends (group commit
    /// with a pipeline). None if everything is durable already.
    pub fn begin_sync(&mut self) -> Result<Option<PendingSync>, StoreError> {
        self.write()?;
        let Some(seg) = self.segments.get(&self.active) else {
            return Ok(None);
        };
        if seg.len == self.synced {
            return Ok(None);
        }
        Ok(Some(PendingSync {
            file: seg.file.clone(),
            segment: self.active,
            upto: seg.len,
        }))
    }

    /// The second half: record what `pending.run()` returned. After an error the log is failed.
    pub fn finish_sync(
        &mut self,
        pending: &PendingSync,
        result: std::io::Result<()>,
    ) -> Result<(), StoreError> {
        if let Err(e) = result {
            self.failed = true;
            return Err(e.into());
        }
        // A segment sealed meanwhile was synced whole when it was sealed.
        if pending.segment == self.active && pending.upto > self.synced {
            self.synced = pending.upto;
            self.mark = true;
        }
        Ok(())
    }

    /// Whether anything appended is not yet durable.
    pub fn is_dirty(&self) -> bool {
        !self.buf.is_empty() || self.active_len() != self.synced
    }

    /// The data of the record at `pos`.
    pub fn read(&self, pos: Position) -> Result<Vec<u8>, StoreError> {
        let path = || segment_path(&self.dir, pos.segment);
        let seg = self
            .segments
            .get(&pos.segment)
            .ok_or_else(|| corrupt(&path(), pos.offset, "no such segment".into()))?;
        if pos.segment == self.active && pos.offset >= seg.len {
            let at = (pos.offset - seg.len) as usize;
            let (payload, _) = record::decode(&self.buf[at..], self.opts.max_record_bytes)
                .map_err(|e| corrupt(&path(), pos.offset, format!("{e:?}")))?;
            return Ok(payload[1..].to_vec());
        }
        let mut header = [0u8; HEADER_BYTES];
        seg.file.read_exact_at(&mut header, pos.offset)?;
        let (len, _) = record::parse_header(&header, self.opts.max_record_bytes)
            .map_err(|e| corrupt(&path(), pos.offset, format!("{e:?}")))?;
        let mut framed = vec![0u8; HEADER_BYTES + len as usize];
        seg.file.read_exact_at(&mut framed, pos.offset)?;
        let (payload, _) = record::decode(&framed, self.opts.max_record_bytes)
            .map_err(|e| corrupt(&path(), pos.offset, format!("{e:?}")))?;
        match payload.split_first() {
            Some((&KIND_DATA, data)) => Ok(data.to_vec()),
            _ => Err(corrupt(&path(), pos.offset, "not a data record".into())),
        }
    }

    /// The first data record at or after `from` (written or still buffered), and where the one
    /// after it starts: for reading a log front to back without holding it in memory.
    pub fn read_next(
        &self,
        mut from: Position,
    ) -> Result<Option<(Position, Vec<u8>, Position)>, StoreError> {
        loop {
            let seg = match self.segments.get(&from.segment) {
                Some(seg) if from.offset < self.readable_len(from.segment, seg) => seg,
                // Past the end of this segment, or a segment since deleted: the next one.
                found => {
                    let after = from.segment + u64::from(found.is_some());
                    let Some((&id, _)) = self.segments.range(after..).next() else {
                        return Ok(None);
                    };
                    from = Position {
                        segment: id,
                        offset: 0,
                    };
                    continue;
                }
            };
            let (kind, data, framed) = self.read_framed(from, seg)?;
            let next = Position {
                segment: from.segment,
                offset: from.offset + framed,
            };
            if kind == KIND_DATA {
                return Ok(Some((from, data, next)));
            }
            from = next;
        }
    }

    /// Bytes of `segment` that can be read: the file, plus the buffer for the active one.
    fn readable_len(&self, segment: u64, seg: &Segment) -> u64 {
        let buffered = if segment == self.active {
            self.buf.len() as u64
        } else {
            0
        };
        seg.len + buffered
    }

    /// The record at `pos`: its kind byte, its data and its framed size.
    fn read_framed(&self, pos: Position, seg: &Segment) -> Result<(u8, Vec<u8>, u64), StoreError> {
        let path = || segment_path(&self.dir, pos.segment);
        let bad = |e: record::Bad| corrupt(&path(), pos.offset, format!("{e:?}"));
        let max = self.opts.max_record_bytes;
        let (payload, framed) = if pos.segment == self.active && pos.offset >= seg.len {
            let at = (pos.offset - seg.len) as usize;
            let (payload, n) = record::decode(&self.buf[at..], max).map_err(bad)?;
            (payload.to_vec(), n)
        } else {
            let mut header = [0u8; HEADER_BYTES];
            seg.file.read_exact_at(&mut header, pos.offset)?;
            let (len, _) = record::parse_header(&header, max).map_err(bad)?;
            let mut buf = vec![0u8; HEADER_BYTES + len as usize];
            seg.file.read_exact_at(&mut buf, pos.offset)?;
            let (payload, n) = record::decode(&buf, max).map_err(bad)?;
            (payload.to_vec(), n)
        };
        match payload.split_first() {
            Some((&kind, data)) => Ok((kind, data.to_vec(), framed as u64)),
            None => Err(corrupt(&path(), pos.offset, "empty record".into())),
        }
    }

    /// Where the next record appended will go.
    pub fn end(&self) -> Position {
        Position {
            segment: self.active,
            offset: self.active_len() + self.buf.len() as u64,
        }
    }

    /// Segment ids, oldest first; the last is the active one.
    pub fn segment_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.segments.keys().copied()
    }

    pub fn active_segment(&self) -> u64 {
        self.active
    }

    /// Delete a sealed segment (its directory entry synced). The active one is never deleted.
    pub fn remove_segment(&mut self, id: u64) -> Result<(), StoreError> {
        if id == self.active || self.segments.remove(&id).is_none() {
            return Ok(());
        }
        self.vfs.remove(&segment_path(&self.dir, id))?;
        self.vfs.sync_dir(&self.dir)?;
        Ok(())
    }

    /// Bytes on disk and buffered, over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum::<u64>() + self.buf.len() as u64
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// An fsync to run without holding the log ([`SegmentLog::begin_sync`]).
pub struct PendingSync {
    file: Arc<dyn VfsFile>,
    segment: u64,
    upto: u64,
}

impl PendingSync {
    pub fn run(&self) -> std::io::Result<()> {
        self.file.sync()
    }
}

/// What a scan of one segment's bytes found.
struct Scan<'a> {
    /// (offset, payload incl. kind byte) of every good record before the first damage.
    records: Vec<(usize, &'a [u8])>,
    /// Offset of the first damaged record, if any.
    damage: Option<usize>,
    /// The highest "synced through" marker among all good records.
    synced_through: u64,
}

fn scan(bytes: &[u8], max: u32) -> Scan<'_> {
    let mut out = Scan {
        records: Vec::new(),
        damage: None,
        synced_through: 0,
    };
    let mut at = 0;
    while at < bytes.len() {
        match record::decode(&bytes[at..], max) {
            Ok((payload, n)) if !payload.is_empty() => {
                note_marker(payload, &mut out.synced_through);
                out.records.push((at, payload));
                at += n;
            }
            _ => {
                out.damage = Some(at);
                break;
            }
        }
    }
    let Some(damage) = out.damage else {
        return out;
    };
    // Look past the damage for markers that prove it had been synced.
    let mut from = damage + 1;
    while let Some(next) = record::find_next_valid(bytes, from, max) {
        if let Ok((payload, n)) = record::decode(&bytes[next..], max) {
            note_marker(payload, &mut out.synced_through);
            from = next + n;
        } else {
            from = next + 1;
        }
    }
    out
}

fn note_marker(payload: &[u8], synced_through: &mut u64) {
    if let [KIND_SYNCED, rest @ ..] = payload {
        if let Ok(bytes) = <[u8; 8]>::try_from(rest) {
            *synced_through = (*synced_through).max(u64::from_le_bytes(bytes));
        }
    }
}
