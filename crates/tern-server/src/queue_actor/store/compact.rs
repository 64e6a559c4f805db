//! Compaction: a sealed segment two or more behind the active one, with nothing paged left in
//! it and at most [`COMPACT_LIVE_MAX`] live messages since before the active segment last
//! changed (so not one a consumer is draining right now), has those messages written again
//! (flagged moved, with their ids and delivered marks) at the end of the log; the segment is
//! deleted once the fsync covering the copies is done. Until then it stays, so a crash at any
//! point leaves every message on disk at least once (recovery takes the latest copy: see
//! `tern_core::queue::records`). A handful of long-unacknowledged messages then costs their
//! own bytes on disk, not whole 64 MiB segments.

use std::collections::BTreeSet;

use tern_core::message::Message;
use tern_core::queue::records::{self, Peek};
use tern_core::queue::{MsgId, QueueEvent};
use tern_store::{Position, StoreError};

use super::{fate_path, read_fates, QueueStore};

/// Live messages a segment may have left for compaction to move them.
pub const COMPACT_LIVE_MAX: u64 = 64;

impl QueueStore {
    /// Compact the segments that qualify (see the module docs). Called as acknowledgements
    /// come in; the scan of a segment (at most 64 MiB, mostly from the page cache) runs on the
    /// queue's task, once per stuck segment.
    pub(super) fn maybe_compact(&mut self) -> Result<(), StoreError> {
        if !self.durable {
            return Ok(());
        }
        let active = self.log.active_segment();
        let due: Vec<u64> = self
            .held
            .iter()
            .filter(|(s, h)| {
                **s + 2 <= active
                    && h.low_since.is_some_and(|low| low < active)
                    && h.paged == 0
                    && (1..=COMPACT_LIVE_MAX).contains(&h.live)
                    && !self.compacted.iter().any(|(c, _)| c == *s)
            })
            .map(|(s, _)| *s)
            .collect();
        for segment in due {
            self.compact(segment)?;
        }
        Ok(())
    }

    fn compact(&mut self, segment: u64) -> Result<(), StoreError> {
        self.write_fates()?;
        let (mut removed, mut delivered) = (BTreeSet::new(), BTreeSet::new());
        read_fates(
            &*self.vfs,
            &fate_path(&self.dir, segment),
            |peek| match peek {
                Peek::Removed(ids) => removed.extend(ids.into_iter().map(|i| i.0)),
                Peek::Delivered(ids) => delivered.extend(ids.into_iter().map(|i| i.0)),
                Peek::Enqueue { .. } => {}
            },
        );
        let live = self.live_records(segment, &removed)?;
        let expected = self.held.get(&segment).map_or(0, |h| h.live);
        if live.len() as u64 != expected {
            // The counts disagree with the files: leave the segment as it is (never lose one).
            tracing::warn!(dir = %self.dir.display(), segment, found = live.len(), expected, "compaction skipped");
            self.compacted.push((segment, u64::MAX));
            return Ok(());
        }
        for (id, message) in live {
            self.append_moved(id, &message, delivered.contains(&id.0))?;
        }
        self.compacted.push((segment, self.appended));
        self.copied_to.insert(self.log.active_segment());
        Ok(())
    }

    /// The persistent messages of `segment` not removed and not moved elsewhere.
    fn live_records(
        &self,
        segment: u64,
        removed: &BTreeSet<u64>,
    ) -> Result<Vec<(MsgId, Message)>, StoreError> {
        let mut at = Position { segment, offset: 0 };
        let mut out = Vec::new();
        while let Some((pos, data, next)) = self.log.read_next(at)? {
            if pos.segment != segment {
                break;
            }
            at = next;
            let Ok(Peek::Enqueue {
                id,
                persistent: true,
                ..
            }) = records::peek(&data)
            else {
                continue;
            };
            let home = self.moved.get(&id.0).copied().unwrap_or(segment);
            if removed.contains(&id.0) || home != segment {
                continue;
            }
            if let Some(message) = self.decode_message(pos, data)? {
                out.push((id, message));
            }
        }
        Ok(out)
    }

    fn append_moved(
        &mut self,
        id: MsgId,
        message: &Message,
        delivered: bool,
    ) -> Result<(), StoreError> {
        self.scratch.clear();
        records::encode_moved(id, message, &mut self.scratch);
        let pos = self.log.append(&self.scratch)?;
        self.moved.insert(id.0, pos.segment);
        self.held.entry(pos.segment).or_default().live += 1;
        self.appended += 1;
        self.enqueued_since_sync = true;
        if delivered {
            self.buffer_fates(&[QueueEvent::Delivered(id)]);
        }
        Ok(())
    }

    /// The fsync up to `synced` is done: compacted segments whose copies it covers go.
    pub(super) fn finish_compactions(&mut self) -> Result<(), StoreError> {
        let synced = self.synced;
        let done: Vec<u64> = self
            .compacted
            .iter()
            .filter(|(_, upto)| *upto <= synced)
            .map(|(s, _)| *s)
            .collect();
        if done.is_empty() {
            return Ok(());
        }
        self.compacted.retain(|(_, upto)| *upto > synced);
        self.sync_copies_fates()?;
        for segment in done {
            self.held.remove(&segment);
        }
        self.reclaim()
    }

    /// The moved copies' delivered marks are in their new segments' acknowledgement files:
    /// sync those before the originals (and their marks) go, so a power loss cannot turn a
    /// redelivery into a first delivery. One fsync per file, and only when a compaction ends.
    fn sync_copies_fates(&mut self) -> Result<(), StoreError> {
        self.write_fates()?;
        for segment in std::mem::take(&mut self.copied_to) {
            let path = fate_path(&self.dir, segment);
            if self.vfs.exists(&path) {
                self.vfs.open(&path)?.sync()?;
            }
        }
        Ok(())
    }
}
