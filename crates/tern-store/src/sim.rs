//! An in-memory [`Vfs`] that can crash and misbehave, for testing every on-disk format.
//!
//! It models what a real disk promises and no more: file data is durable up to the last
//! successful `sync`, directory entries as of the last `sync_dir`. [`SimFs::crash`] returns the
//! file system a restarted process would find: unsynced data lost, kept, or torn at any byte
//! ([`Crash`]), files created or renamed since their directory's last sync gone or back under
//! their old name. Faults: ENOSPC once a byte budget is spent, EIO on a chosen sync, and
//! [`SimFs::flip_bit`] for corruption at rest.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::vfs::{Vfs, VfsFile};

type Inode = u64;

#[derive(Clone, Debug, Default)]
struct Data {
    bytes: Vec<u8>,
    /// `bytes[..synced]` survives a crash.
    synced: usize,
}

#[derive(Clone, Debug, Default)]
struct State {
    inodes: HashMap<Inode, Data>,
    /// What lookups see now: path -> inode.
    names: BTreeMap<PathBuf, Inode>,
    /// What a crash leaves: per directory, its entries as of its last sync_dir.
    durable_names: HashMap<PathBuf, BTreeMap<PathBuf, Inode>>,
    next_inode: Inode,
    /// Bytes that may still be written before ENOSPC.
    space_left: Option<u64>,
    /// Syncs that succeed before one fails with EIO.
    syncs_before_eio: Option<u64>,
}

/// What happens to data written but not synced when the machine goes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// All of it is lost.
    LoseUnsynced,
    /// The kernel wrote it back before the crash (a process kill keeps the page cache).
    KeepUnsynced,
    /// The first `n` unsynced bytes of every file survive (capped at what was written).
    TornAt(usize),
}

/// See the module docs. Clones share one file system.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    pub fn new() -> Self {
        SimFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file system as a process would find it after the machine crashed now.
    pub fn crash(&self, how: Crash) -> SimFs {
        let old = self.lock();
        let mut names = BTreeMap::new();
        for entries in old.durable_names.values() {
            names.extend(entries.iter().map(|(p, i)| (p.clone(), *i)));
        }
        let mut inodes = HashMap::new();
        for inode in names.values() {
            let Some(data) = old.inodes.get(inode) else {
                continue;
            };
            let keep = match how {
                Crash::LoseUnsynced => data.synced,
                Crash::KeepUnsynced => data.bytes.len(),
                Crash::TornAt(n) => (data.synced + n).min(data.bytes.len()),
            };
            let bytes = data.bytes[..keep].to_vec();
            let synced = bytes.len();
            inodes.insert(*inode, Data { bytes, synced });
        }
        let state = State {
            inodes,
            durable_names: old.durable_names.clone(),
            names,
            next_inode: old.next_inode,
            space_left: None,
            syncs_before_eio: None,
        };
        SimFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Writes fail with ENOSPC once `bytes` more have been written (a write that does not fit
    /// writes what fits, as a real one may).
    pub fn set_space_left(&self, bytes: Option<u64>) {
        self.lock().space_left = bytes;
    }

    /// The sync after `n` more successful ones fails with EIO (and so do all after it).
    pub fn fail_sync_after(&self, n: Option<u64>) {
        self.lock().syncs_before_eio = n;
    }

    /// Flip one bit of a file, durably (corruption at rest).
    pub fn flip_bit(&self, path: &Path, offset: usize, bit: u8) {
        let mut s = self.lock();
        let Some(&inode) = s.names.get(path) else {
            panic!("flip_bit: no file {}", path.display());
        };
        if let Some(d) = s.inodes.get_mut(&inode) {
            d.bytes[offset] ^= 1 << (bit % 8);
        }
    }

    /// The current bytes of a file, for assertions.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let inode = s.names.get(path)?;
        s.inodes.get(inode).map(|d| d.bytes.clone())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

struct SimFile {
    fs: SimFs,
    inode: Inode,
}

impl VfsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let s = self.fs.lock();
        let data = s
            .inodes
            .get(&self.inode)
            .ok_or_else(|| not_found(Path::new("inode")))?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.bytes.len());
        let n = buf.len().min(data.bytes.len() - start);
        buf[..n].copy_from_slice(&data.bytes[start..start + n]);
        Ok(n)
    }

    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.fs.lock();
        let fits = match s.space_left {
            Some(left) => bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
            None => bytes.len(),
        };
        if let Some(left) = s.space_left.as_mut() {
            *left -= fits as u64;
        }
        let data = s.inodes.entry(self.inode).or_default();
        data.bytes.extend_from_slice(&bytes[..fits]);
        if fits < bytes.len() {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.fs.lock();
        match s.syncs_before_eio.as_mut() {
            Some(0) => return Err(io::Error::from_raw_os_error(5)), // EIO
            Some(n) => *n -= 1,
            None => {}
        }
        let data = s.inodes.entry(self.inode).or_default();
        data.synced = data.bytes.len();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let s = self.fs.lock();
        Ok(s.inodes
            .get(&self.inode)
            .map_or(0, |d| d.bytes.len() as u64))
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut s = self.fs.lock();
        let data = s.inodes.entry(self.inode).or_default();
        let len = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(data.bytes.len());
        data.bytes.truncate(len);
        data.synced = data.synced.min(len);
        Ok(())
    }
}

impl Vfs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.lock()
            .durable_names
            .entry(dir.to_path_buf())
            .or_default();
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let mut s = self.lock();
        if s.names.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        if !s.durable_names.contains_key(&parent(path)) {
            return Err(not_found(&parent(path)));
        }
        let inode = s.next_inode;
        s.next_inode += 1;
        s.inodes.insert(inode, Data::default());
        s.names.insert(path.to_path_buf(), inode);
        drop(s);
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            inode,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let inode = *self.lock().names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            inode,
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        if !s.durable_names.contains_key(dir) {
            return Err(not_found(dir));
        }
        let names = s
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock()
            .names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if s.names.keys().any(|p| p.parent() == Some(dir)) {
            return Err(io::Error::from_raw_os_error(39)); // ENOTEMPTY
        }
        s.durable_names.remove(dir);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let inode = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let entries: BTreeMap<PathBuf, Inode> = s
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.insert(dir.to_path_buf(), entries);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.lock().names.contains_key(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SimFs, PathBuf) {
        let fs = SimFs::new();
        let dir = PathBuf::from("/d");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    #[test]
    fn a_crash_keeps_synced_data_and_loses_or_tears_the_rest() {
        let (fs, dir) = setup();
        let path = dir.join("f");
        let f = fs.create(&path).unwrap();
        fs.sync_dir(&dir).unwrap();
        f.append(b"synced").unwrap();
        f.sync().unwrap();
        f.append(b"-lost").unwrap();
        let contents = |fs: &SimFs| fs.contents(&path).unwrap();
        assert_eq!(contents(&fs.crash(Crash::LoseUnsynced)), b"synced");
        assert_eq!(contents(&fs.crash(Crash::KeepUnsynced)), b"synced-lost");
        assert_eq!(contents(&fs.crash(Crash::TornAt(2))), b"synced-l");
    }

    #[test]
    fn entries_are_durable_only_once_their_directory_is_synced() {
        let (fs, dir) = setup();
        fs.create(&dir.join("a")).unwrap();
        assert!(!fs.crash(Crash::KeepUnsynced).exists(&dir.join("a")));
        fs.sync_dir(&dir).unwrap();
        fs.rename(&dir.join("a"), &dir.join("b")).unwrap();
        let after = fs.crash(Crash::KeepUnsynced);
        assert!(after.exists(&dir.join("a")) && !after.exists(&dir.join("b")));
        fs.sync_dir(&dir).unwrap();
        assert!(fs.crash(Crash::KeepUnsynced).exists(&dir.join("b")));
    }

    #[test]
    fn faults_are_injected_where_asked() {
        let (fs, dir) = setup();
        let f = fs.create(&dir.join("f")).unwrap();
        fs.set_space_left(Some(4));
        let err = f.append(b"123456").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(f.len().unwrap(), 4, "what fit was written");
        fs.fail_sync_after(Some(1));
        f.sync().unwrap();
        assert_eq!(f.sync().unwrap_err().raw_os_error(), Some(5));
    }
}
