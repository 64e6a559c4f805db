//! The file operations storage needs, behind a trait: [`OsFs`] does them on the real file
//! system, `sim::SimFs` in memory with crashes and faults injected, so every on-disk format is
//! tested against torn writes, lost unsynced data, ENOSPC and EIO.
//!
//! Files are shared (`Arc<dyn VfsFile>`, every method `&self`), so one thread can fsync a file
//! while another appends to it: that is what lets a log keep taking records during a sync.
//!
//! The contract a [`Vfs`] keeps (and `SimFs` models): data written to a file is durable only
//! once [`VfsFile::sync`] returned Ok; a file created, removed or renamed is durable only once
//! [`Vfs::sync_dir`] of its directory returned Ok.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One open file, read anywhere and appended to at its end.
pub trait VfsFile: Send + Sync {
    /// Read up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Append all of `data` at the end of the file.
    fn append(&self, data: &[u8]) -> io::Result<()>;
    /// Make everything written so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    /// Cut the file to `len` bytes (a torn tail found at recovery).
    fn truncate(&self, len: u64) -> io::Result<()>;

    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Read exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// A file system: directories of files.
pub trait Vfs: Send + Sync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// A new, empty file; an error if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>>;
    /// An existing file, for reading and appending.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>>;
    /// The names of the files in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Remove an empty directory.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Rename `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Make the directory's entries (creations, removals, renames) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFs;

struct OsFile {
    file: File,
}

impl VfsFile for OsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
    }

    fn append(&self, data: &[u8]) -> io::Result<()> {
        // The file is opened for appending: every write goes to its end.
        io::Write::write_all(&mut &self.file, data)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()
    }
}

impl Vfs for OsFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(OsFile { file }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        Ok(Arc::new(OsFile { file }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Hold an exclusive lock on a data directory for as long as this lives, so two nodes can never
/// share one (`flock` on a `LOCK` file in it; released by the kernel if the process dies).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, crate::StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => Err(crate::StoreError::Locked(path)),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_data_directory_cannot_be_locked_again() {
        let dir = std::env::temp_dir().join(format!("tern-lock-{}", std::process::id()));
        let lock = DirLock::acquire(&dir).unwrap();
        assert!(matches!(
            DirLock::acquire(&dir),
            Err(crate::StoreError::Locked(_))
        ));
        drop(lock);
        DirLock::acquire(&dir).expect("free again once released");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_append_read_back_and_truncate() {
        let dir = std::env::temp_dir().join(format!("tern-osfs-{}", std::process::id()));
        let fs = OsFs;
        fs.create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let _ = fs.remove(&path);
        let f = fs.create(&path).unwrap();
        assert!(fs.create(&path).is_err(), "create refuses an existing file");
        f.append(b"hello ").unwrap();
        f.append(b"world").unwrap();
        f.sync().unwrap();
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        f.truncate(5).unwrap();
        assert_eq!(fs.open(&path).unwrap().len().unwrap(), 5);
        assert_eq!(fs.list(&dir).unwrap(), ["f"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
