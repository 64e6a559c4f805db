//! Resource alarms, as RabbitMQ has them: when free disk space on the data directory's file
//! system falls below `disk_free_limit_bytes`, or the node's resident memory rises above the
//! memory high watermark, publishing connections are blocked — `connection.blocked` to clients
//! that take it, and their sockets are not read — until the resource returns, then
//! `connection.unblocked`. Nothing already confirmed is touched, and nothing is half-written: a
//! blocked connection simply stops being read between frames.
//!
//! The monitors check every `disk_check_interval` / `memory_check_interval`. The limits can be
//! changed while running ([`Alarms::set_disk_free_limit`] and
//! [`Alarms::set_memory_high_watermark`], what `rabbitmqctl set_disk_free_limit` and
//! `set_vm_memory_high_watermark` do).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Which alarms are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlarmState {
    pub disk: bool,
    pub memory: bool,
}

impl AlarmState {
    pub fn any(self) -> bool {
        self.disk || self.memory
    }

    /// The reason `connection.blocked` carries (RabbitMQ's words).
    pub fn reason(self) -> &'static str {
        match (self.disk, self.memory) {
            (true, true) => "low on disk & memory",
            (true, false) => "low on disk",
            (false, true) => "low on memory",
            (false, false) => "",
        }
    }
}

pub struct Alarms {
    state: watch::Sender<AlarmState>,
    disk_free_limit_bytes: AtomicU64,
    memory_high_watermark_bytes: AtomicU64,
}

impl Alarms {
    pub fn new(disk_free_limit_bytes: u64, memory_high_watermark_bytes: u64) -> Self {
        Alarms {
            state: watch::Sender::new(AlarmState::default()),
            disk_free_limit_bytes: AtomicU64::new(disk_free_limit_bytes),
            memory_high_watermark_bytes: AtomicU64::new(memory_high_watermark_bytes),
        }
    }

    /// The memory high watermark in bytes, as now set.
    pub fn memory_high_watermark(&self) -> u64 {
        self.memory_high_watermark_bytes.load(Ordering::Relaxed)
    }

    /// The free-disk limit in bytes, as now set.
    pub fn disk_free_limit(&self) -> u64 {
        self.disk_free_limit_bytes.load(Ordering::Relaxed)
    }

    /// Which alarms are on now.
    pub fn state(&self) -> AlarmState {
        *self.state.borrow()
    }

    pub fn set_memory_high_watermark(&self, bytes: u64) {
        self.memory_high_watermark_bytes
            .store(bytes, Ordering::Relaxed);
    }

    /// Set one alarm on or off; whether that changed it (subscribers hear of changes only).
    fn switch(&self, alarm: fn(&mut AlarmState) -> &mut bool, on: bool) -> bool {
        self.state.send_if_modified(|s| {
            let flag = alarm(s);
            let changed = *flag != on;
            *flag = on;
            changed
        })
    }

    /// Compare resident memory with the watermark; raise or clear the memory alarm.
    pub fn check_memory(&self, used: u64) {
        let limit = self.memory_high_watermark_bytes.load(Ordering::Relaxed);
        let high = used > limit;
        if !self.switch(|s| &mut s.memory, high) {
            return;
        }
        if high {
            tracing::warn!(
                used_bytes = used,
                watermark_bytes = limit,
                "memory alarm set: publishers are blocked"
            );
        } else {
            tracing::info!(
                used_bytes = used,
                watermark_bytes = limit,
                "memory alarm cleared"
            );
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<AlarmState> {
        self.state.subscribe()
    }

    pub fn set_disk_free_limit(&self, bytes: u64) {
        self.disk_free_limit_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Compare `free` with the limit; raise or clear the disk alarm on a change.
    pub fn check_disk(&self, free: u64) {
        let limit = self.disk_free_limit_bytes.load(Ordering::Relaxed);
        let low = free < limit;
        if !self.switch(|s| &mut s.disk, low) {
            return;
        }
        if low {
            tracing::warn!(
                free_bytes = free,
                limit_bytes = limit,
                "disk alarm set: publishers are blocked"
            );
        } else {
            tracing::info!(free_bytes = free, limit_bytes = limit, "disk alarm cleared");
        }
    }
}

/// Bytes available to unprivileged writers on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `stat` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Both are u64 on the 64-bit Linux targets Tern runs on.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Ok(blocks.saturating_mul(size))
}

/// The node's resident set size, from /proc/self/statm.
/// What the operating system says about the node (None: could not be read).
pub struct NodeResources {
    pub resident_bytes: Option<u64>,
    pub disk_free_bytes: Option<u64>,
}

/// Resident memory and free disk space on `data_dir`, read off the runtime's workers
/// (statvfs can block on a sick file system).
pub async fn node_resources(data_dir: &Path) -> NodeResources {
    let dir = data_dir.to_path_buf();
    let read = move || NodeResources {
        resident_bytes: resident_bytes().ok(),
        disk_free_bytes: free_bytes(&dir).ok(),
    };
    tokio::task::spawn_blocking(read)
        .await
        .unwrap_or(NodeResources {
            resident_bytes: None,
            disk_free_bytes: None,
        })
}

pub fn resident_bytes() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "/proc/self/statm"))?;
    Ok(pages.saturating_mul(page_size()))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// The machine's physical memory, for a watermark given as a fraction of it.
pub fn total_memory_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    u64::try_from(pages)
        .unwrap_or(0)
        .saturating_mul(page_size())
}

/// Check resident memory every `interval`, for as long as `alarms` lives.
pub fn spawn_memory_monitor(alarms: &Arc<Alarms>, interval: Duration) {
    let weak = Arc::downgrade(alarms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let Some(alarms) = weak.upgrade() else { return };
            match resident_bytes() {
                Ok(used) => alarms.check_memory(used),
                Err(e) => tracing::warn!(error = %e, "cannot read resident memory"),
            }
        }
    });
}

/// Check the data directory's free space every `interval`, for as long as `alarms` lives.
pub fn spawn_disk_monitor(alarms: &Arc<Alarms>, data_dir: PathBuf, interval: Duration) {
    let weak = Arc::downgrade(alarms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let Some(alarms) = weak.upgrade() else { return };
            let dir = data_dir.clone();
            match tokio::task::spawn_blocking(move || free_bytes(&dir)).await {
                Ok(Ok(free)) => alarms.check_disk(free),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read free disk space"),
                Err(_) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarm_follows_free_space_against_the_limit() {
        let alarms = Alarms::new(100, u64::MAX);
        let mut rx = alarms.subscribe();
        alarms.check_disk(500);
        assert!(!rx.has_changed().unwrap());
        alarms.check_disk(99);
        assert!(rx.has_changed().unwrap() && rx.borrow_and_update().disk);
        alarms.set_disk_free_limit(50);
        alarms.check_disk(99);
        assert!(!rx.borrow_and_update().disk);
        let disk = AlarmState {
            disk: true,
            memory: false,
        };
        assert_eq!(disk.reason(), "low on disk");
    }

    #[test]
    fn the_memory_alarm_follows_resident_memory_against_the_watermark() {
        let alarms = Alarms::new(0, 1000);
        let mut rx = alarms.subscribe();
        alarms.check_memory(1000);
        assert!(
            !rx.has_changed().unwrap(),
            "at the watermark is not above it"
        );
        alarms.check_memory(1001);
        assert!(rx.borrow_and_update().memory);
        assert_eq!(rx.borrow().reason(), "low on memory");
        alarms.set_memory_high_watermark(2000);
        alarms.check_memory(1001);
        assert!(!rx.borrow_and_update().memory);
        let used = resident_bytes().expect("statm");
        assert!(used > 0 && used < total_memory_bytes());
    }

    #[test]
    fn free_space_of_a_real_directory_is_read() {
        let free = free_bytes(&std::env::temp_dir()).expect("statvfs");
        assert!(free > 0);
    }
}
