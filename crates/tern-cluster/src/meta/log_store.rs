//! The metadata Raft log on a `tern_store::SegmentLog`.
//!
//! Every change is a record appended to the log (entries, votes, truncations, purges); replay
//! at start rebuilds the in-memory view, which is what readers are served from. An append is
//! synced before openraft hears it is flushed, so a command is on disk before its declare-ok
//! goes out. Appends do not wait for their fsync: a syncer task runs one fsync for every
//! append made while the last one ran (group commit) and then tells openraft, so concurrent
//! changes share fsyncs instead of queueing for one each.
//! Votes are synced too (Raft needs that for safety). Fully purged segments are deleted, after
//! the current vote is written again so that it never lives only in a deleted segment.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use tern_store::{LogOptions, SegmentLog, StoreError, Vfs};
use tokio::sync::mpsc;

use super::records::{self, LogRecord};
use super::{Entry, NodeId, TypeConfig};

struct Inner {
    log: SegmentLog,
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    /// The highest entry index each segment holds.
    segment_max: BTreeMap<u64, u64>,
}

/// The log store; clones share one log.
#[derive(Clone)]
pub struct MetaLogStore {
    inner: Arc<Mutex<Inner>>,
    /// Appends waiting for the fsync that covers them (the syncer starts with the first).
    syncer: Arc<std::sync::OnceLock<mpsc::UnboundedSender<LogFlushed<TypeConfig>>>>,
}

fn io_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl MetaLogStore {
    /// Open the log in `dir`, replaying it. Damage in it is an error: the metadata is refused
    /// rather than guessed at.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path) -> Result<MetaLogStore, StoreError> {
        let mut records: Vec<(u64, LogRecord)> = Vec::new();
        let mut bad = None;
        let log = SegmentLog::open(vfs, dir, LogOptions::default(), |pos, data| {
            match records::decode(Bytes::copy_from_slice(data)) {
                Ok(r) => records.push((pos.segment, r)),
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
        let mut inner = Inner {
            log,
            entries: BTreeMap::new(),
            last_purged: None,
            vote: None,
            committed: None,
            segment_max: BTreeMap::new(),
        };
        for (segment, record) in records {
            inner.replay(segment, record);
        }
        Ok(MetaLogStore {
            inner: Arc::new(Mutex::new(inner)),
            syncer: Arc::new(std::sync::OnceLock::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the log has never been written (a node that was never initialized).
    pub fn is_empty(&self) -> bool {
        let inner = self.lock();
        inner.entries.is_empty() && inner.vote.is_none() && inner.last_purged.is_none()
    }

    /// Append records and (if `sync`) make them durable, off the async threads.
    async fn write(&self, records: Vec<LogRecord>, sync: bool) -> Result<(), StorageError<NodeId>> {
        let inner = self.inner.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
            for r in &records {
                inner.append(r)?;
                let segment = inner.log.active_segment();
                inner.replay(segment, r.clone());
            }
            if sync {
                inner.log.sync()?;
            } else {
                inner.log.write()?;
            }
            Ok::<(), StoreError>(())
        })
        .await;
        match done {
            Ok(result) => result.map_err(io_error),
            Err(join) => Err(io_error(join)),
        }
    }
}

/// One fsync for every append waiting, run outside the log's lock (appends go on meanwhile),
/// then each waiting append is told.
async fn run_syncer(
    inner: Arc<Mutex<Inner>>,
    mut waiting: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>,
) {
    let mut batch = Vec::new();
    while waiting.recv_many(&mut batch, 4096).await > 0 {
        let inner = inner.clone();
        let synced = tokio::task::spawn_blocking(move || sync_outside_lock(&inner)).await;
        let synced = synced.unwrap_or_else(|join| Err(join.to_string()));
        for flushed in batch.drain(..) {
            let result = synced.clone().map_err(std::io::Error::other);
            flushed.log_io_completed(result);
        }
    }
}

fn sync_outside_lock(inner: &Mutex<Inner>) -> Result<(), String> {
    let pending = lock_inner(inner).log.begin_sync();
    let Some(pending) = pending.map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let result = pending.run();
    let finished = lock_inner(inner).log.finish_sync(&pending, result);
    finished.map_err(|e| e.to_string())
}

fn lock_inner(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn append(&mut self, record: &LogRecord) -> Result<(), StoreError> {
        let mut buf = BytesMut::new();
        records::encode(record, &mut buf);
        self.log.append(&buf)?;
        Ok(())
    }

    /// Bring the in-memory view up to `record`.
    fn replay(&mut self, segment: u64, record: LogRecord) {
        match record {
            LogRecord::Entry(e) => {
                let index = e.log_id.index;
                let max = self.segment_max.entry(segment).or_default();
                *max = (*max).max(index);
                self.entries.insert(index, e);
            }
            LogRecord::Truncate { from } => {
                self.entries.split_off(&from);
            }
            LogRecord::Purge(id) => {
                self.entries = self.entries.split_off(&(id.index + 1));
                self.last_purged = Some(id);
            }
            LogRecord::Vote(v) => self.vote = Some(v),
            LogRecord::Committed(c) => self.committed = c,
        }
    }

    /// Delete sealed segments holding only purged entries, oldest first.
    fn remove_purged_segments(&mut self) -> Result<(), StoreError> {
        let Some(purged) = self.last_purged.map(|p| p.index) else {
            return Ok(());
        };
        let active = self.log.active_segment();
        let removable: Vec<u64> = self
            .log
            .segment_ids()
            .take_while(|id| *id != active && self.segment_max.get(id).is_none_or(|m| *m <= purged))
            .collect();
        if removable.is_empty() {
            return Ok(());
        }
        // Write the vote (and committed mark) again so they outlive the segments going.
        if let Some(v) = self.vote {
            self.append(&LogRecord::Vote(v))?;
        }
        let committed = self.committed;
        self.append(&LogRecord::Committed(committed))?;
        self.log.sync()?;
        for id in removable {
            self.log.remove_segment(id)?;
            self.segment_max.remove(&id);
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for MetaLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let inner = self.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MetaLogStore {
    type LogReader = MetaLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.lock();
        let last = inner.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write(vec![LogRecord::Vote(*vote)], true).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not synced: losing it only means re-applying from an older point.
        self.write(vec![LogRecord::Committed(committed)], false)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let records = entries.into_iter().map(LogRecord::Entry).collect();
        if let Err(e) = self.write(records, false).await {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(e);
        }
        let syncer = self.syncer.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_syncer(self.inner.clone(), rx));
            tx
        });
        if let Err(refused) = syncer.send(callback) {
            let gone = std::io::Error::other("the metadata log's syncer stopped");
            refused.0.log_io_completed(Err(gone));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let record = LogRecord::Truncate { from: log_id.index };
        self.write(vec![record], true).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write(vec![LogRecord::Purge(log_id)], false).await?;
        let inner = self.inner.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.remove_purged_segments()
        })
        .await;
        match done {
            Ok(result) => result.map_err(io_error),
            Err(join) => Err(io_error(join)),
        }
    }
}
