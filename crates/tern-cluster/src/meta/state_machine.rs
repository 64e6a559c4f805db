//! The metadata state machine: `tern_core::meta::Metadata` behind openraft, with snapshots.
//!
//! Applying an entry applies its command to the shared [`Metadata`] and then calls the
//! [`ApplyHook`] under the same lock, so the broker starts and stops queue actors and publishes
//! routing in step with every node's copy of the state — also while the log is replayed at
//! start. A snapshot is a file of records: a header (last log id, membership) and then the
//! commands that rebuild the state (`Metadata::snapshot_commands`), written to a temporary
//! name, synced, renamed into place, its directory synced.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use tern_amqp::AmqpError;
use tern_core::meta::{decode_command, encode_command, MetaCommand, MetaOutcome, Metadata};
use tern_store::{record, StoreError, Vfs};

use super::records::{self, RecordError};
use super::{Entry, MetaResponse, NodeId, TypeConfig};

/// What the broker does when the metadata changes. Called with the metadata lock held.
pub trait ApplyHook: Send + Sync + 'static {
    /// `cmd` was applied with `outcome` (a refused command changed nothing).
    fn applied(&self, meta: &Metadata, cmd: &MetaCommand, outcome: &Result<MetaOutcome, AmqpError>);
    /// The whole state was replaced (a snapshot was loaded or installed).
    fn replaced(&self, meta: &Metadata);
}

/// The metadata every part of the node reads, and the hook that follows its changes.
pub struct SharedMeta {
    meta: Mutex<Metadata>,
    hook: Arc<dyn ApplyHook>,
}

impl SharedMeta {
    pub fn new(hook: Arc<dyn ApplyHook>) -> Self {
        SharedMeta {
            meta: Mutex::new(Metadata::new()),
            hook,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Metadata> {
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }
}

const MAGIC: &[u8] = b"TERNSNAP\x01";

#[derive(Clone)]
struct SnapshotFiles {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
}

impl SnapshotFiles {
    fn path(&self) -> PathBuf {
        self.dir.join("snapshot")
    }

    fn save(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.dir.join("snapshot.tmp");
        if self.vfs.exists(&tmp) {
            self.vfs.remove(&tmp)?;
        }
        let file = self.vfs.create(&tmp)?;
        file.append(bytes)?;
        file.sync()?;
        self.vfs.rename(&tmp, &self.path())?;
        self.vfs.sync_dir(&self.dir)?;
        Ok(())
    }

    /// [`save`](Self::save) on a blocking thread.
    async fn save_off_thread(&self, bytes: Vec<u8>) -> Result<(), StorageError<NodeId>> {
        let files = self.clone();
        tokio::task::spawn_blocking(move || files.save(&bytes))
            .await
            .map_err(sm_error)?
            .map_err(sm_error)
    }

    fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path();
        if !self.vfs.exists(&path) {
            return Ok(None);
        }
        let file = self.vfs.open(&path)?;
        let mut bytes = vec![0u8; usize::try_from(file.len()?).map_err(|_| StoreError::TooLarge)?];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(Some(bytes))
    }
}

/// A snapshot's bytes: header record, then one record per command.
fn encode_snapshot(meta: &SnapshotMeta<NodeId, BasicNode>, commands: &[MetaCommand]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut header = BytesMut::from(MAGIC);
    records::put_opt_log_id(&mut header, meta.last_log_id.as_ref());
    records::put_stored_membership(&mut header, &meta.last_membership);
    header.extend_from_slice(meta.snapshot_id.as_bytes());
    record::encode(&header, &mut out);
    for cmd in commands {
        let mut buf = BytesMut::new();
        encode_command(cmd, &mut buf);
        record::encode(&buf, &mut out);
    }
    out
}

type Decoded = (SnapshotMeta<NodeId, BasicNode>, Vec<MetaCommand>);

fn decode_snapshot(bytes: &[u8]) -> Result<Decoded, RecordError> {
    let mut at = 0;
    let mut next = || -> Result<Option<Bytes>, RecordError> {
        if at == bytes.len() {
            return Ok(None);
        }
        let (payload, n) =
            record::decode(&bytes[at..], u32::MAX).map_err(|_| RecordError::Truncated)?;
        at += n;
        Ok(Some(Bytes::copy_from_slice(payload)))
    };
    let mut header = next()?.ok_or(RecordError::Truncated)?;
    if !header.starts_with(MAGIC) {
        return Err(RecordError::Field("snapshot magic"));
    }
    let _ = header.split_to(MAGIC.len());
    let last_log_id = records::get_opt_log_id(&mut header)?;
    let last_membership = records::get_stored_membership(&mut header)?;
    let snapshot_id =
        String::from_utf8(header.to_vec()).map_err(|_| RecordError::Field("snapshot id"))?;
    let mut commands = Vec::new();
    while let Some(mut cmd) = next()? {
        commands.push(decode_command(&mut cmd)?);
    }
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id,
    };
    Ok((meta, commands))
}

fn rebuild(commands: Vec<MetaCommand>) -> Result<Metadata, AmqpError> {
    let mut meta = Metadata::new();
    for cmd in commands {
        meta.apply(cmd)?;
    }
    Ok(meta)
}

pub struct MetaStateMachine {
    shared: Arc<SharedMeta>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    files: SnapshotFiles,
    current: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
}

fn sm_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

impl MetaStateMachine {
    /// The state machine as of the snapshot in `dir`, if there is one.
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        shared: Arc<SharedMeta>,
    ) -> Result<Self, StoreError> {
        vfs.create_dir_all(dir)?;
        let files = SnapshotFiles {
            vfs,
            dir: dir.to_path_buf(),
        };
        let mut sm = MetaStateMachine {
            shared,
            last_applied: None,
            membership: StoredMembership::default(),
            files,
            current: None,
        };
        if let Some(bytes) = sm.files.load()? {
            let path = sm.files.path();
            let corrupt = |detail: String| StoreError::Corrupt {
                path: path.clone(),
                offset: 0,
                detail,
            };
            let (meta, commands) = decode_snapshot(&bytes).map_err(|e| corrupt(e.to_string()))?;
            sm.replace(&meta, commands)
                .map_err(|e| corrupt(e.to_string()))?;
            sm.current = Some((meta, bytes));
        }
        Ok(sm)
    }

    fn replace(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        commands: Vec<MetaCommand>,
    ) -> Result<(), AmqpError> {
        let rebuilt = rebuild(commands)?;
        let mut guard = self.shared.lock();
        *guard = rebuilt;
        self.shared.hook.replaced(&guard);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    fn apply_one(&mut self, entry: Entry) -> MetaResponse {
        self.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => MetaResponse(None),
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m);
                MetaResponse(None)
            }
            EntryPayload::Normal(cmd) => {
                let mut meta = self.shared.lock();
                let hook = &self.shared.hook;
                let outcome = meta.apply_with(cmd, &mut |m, c, o| hook.applied(m, c, o));
                MetaResponse(Some(outcome))
            }
        }
    }
}

pub struct MetaSnapshotBuilder {
    shared: Arc<SharedMeta>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    files: SnapshotFiles,
}

impl RaftSnapshotBuilder<TypeConfig> for MetaSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let commands = self.shared.lock().snapshot_commands();
        let id = self.last_applied.map_or(0, |l| l.index);
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{id}"),
        };
        let bytes = encode_snapshot(&meta, &commands);
        self.files.save_off_thread(bytes.clone()).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        Ok(entries.into_iter().map(|e| self.apply_one(e)).collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MetaSnapshotBuilder {
            shared: self.shared.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            files: self.files.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let (_, commands) = decode_snapshot(&bytes).map_err(sm_error)?;
        self.replace(meta, commands).map_err(sm_error)?;
        self.files.save_off_thread(bytes.clone()).await?;
        self.current = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.current.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::names::VhostName;

    #[test]
    fn a_snapshot_file_decodes_to_its_meta_and_commands_and_damage_is_refused() {
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), 17)),
            last_membership: StoredMembership::default(),
            snapshot_id: "17".into(),
        };
        let commands = vec![MetaCommand::AddVhost {
            name: VhostName::from("v"),
        }];
        let bytes = encode_snapshot(&meta, &commands);
        let (m, c) = decode_snapshot(&bytes).unwrap();
        assert_eq!(
            (m.last_log_id, m.snapshot_id.as_str(), c),
            (meta.last_log_id, "17", commands)
        );
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_snapshot(&bad).is_err());
        assert!(decode_snapshot(&bytes[..bytes.len() - 2]).is_err());
    }
}
