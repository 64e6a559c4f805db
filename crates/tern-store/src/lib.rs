//! Tern's on-disk formats. Knows nothing of AMQP, queues or Raft: it stores records.
//!
//! - [`vfs`]: the file operations storage needs, as a trait ([`vfs::OsFs`] for real files), and
//!   [`vfs::DirLock`], the lock that keeps two nodes off one data directory.
//! - [`sim`]: an in-memory file system that crashes (losing or tearing unsynced writes) and
//!   fails (ENOSPC, EIO) on demand, for testing every format built here.
//! - [`record`]: record framing: length, payload CRC32C, header CRC32C.
//! - [`segment`]: an append-only log in numbered segment files: buffered appends, one sync for
//!   many records (group commit), sealing, and recovery that cuts a torn tail but refuses damage
//!   in data known to be durable.

pub mod record;
pub mod segment;
pub mod sim;
pub mod vfs;

#[cfg(test)]
mod segment_tests;

pub use segment::{LogOptions, PendingSync, Position, SegmentLog};
pub use vfs::{DirLock, OsFs, Vfs, VfsFile};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Damage where the data was known durable: refused, never skipped.
    #[error("corrupt data in {path} at offset {offset}: {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("data directory lock {0} is held by another process")]
    Locked(PathBuf),
    #[error("record too large")]
    TooLarge,
    /// An earlier fsync failed; the log accepts nothing more (the node must stop).
    #[error("the log failed earlier (an fsync error) and accepts no more writes")]
    Failed,
}
