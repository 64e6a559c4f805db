//! Resource alarms, as RabbitMQ has them: when free disk space on the data directory's file
//! system falls below `disk_free_limit_bytes`, publishing connections are blocked —
//! `connection.blocked` to clients that take it, and their sockets are not read — until space
//! returns, then `connection.unblocked`. Nothing already confirmed is touched, and nothing is
//! half-written: a blocked connection simply stops being read between frames.
//!
//! The monitor checks every `disk_check_interval`. The limit can be changed while running
//! ([`Alarms::set_disk_free_limit`], what `rabbitmqctl set_disk_free_limit` does).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Which alarms are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlarmState {
    pub disk: bool,
}

impl AlarmState {
    pub fn any(self) -> bool {
        self.disk
    }

    /// The reason `connection.blocked` carries (RabbitMQ's words).
    pub fn reason(self) -> &'static str {
        if self.disk {
            "low on disk"
        } else {
            ""
        }
    }
}

pub struct Alarms {
    state: watch::Sender<AlarmState>,
    disk_free_limit_bytes: AtomicU64,
}

impl Alarms {
    pub fn new(disk_free_limit_bytes: u64) -> Self {
        Alarms {
            state: watch::Sender::new(AlarmState::default()),
            disk_free_limit_bytes: AtomicU64::new(disk_free_limit_bytes),
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
        self.state.send_if_modified(|s| {
            if s.disk == low {
                return false;
            }
            s.disk = low;
            if low {
                tracing::warn!(
                    free_bytes = free,
                    limit_bytes = limit,
                    "disk alarm set: publishers are blocked"
                );
            } else {
                tracing::info!(free_bytes = free, limit_bytes = limit, "disk alarm cleared");
            }
            true
        });
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
        let alarms = Alarms::new(100);
        let mut rx = alarms.subscribe();
        alarms.check_disk(500);
        assert!(!rx.has_changed().unwrap());
        alarms.check_disk(99);
        assert!(rx.has_changed().unwrap() && rx.borrow_and_update().disk);
        alarms.set_disk_free_limit(50);
        alarms.check_disk(99);
        assert!(!rx.borrow_and_update().disk);
        assert_eq!(AlarmState { disk: true }.reason(), "low on disk");
    }

    #[test]
    fn free_space_of_a_real_directory_is_read() {
        let free = free_bytes(&std::env::temp_dir()).expect("statvfs");
        assert!(free > 0);
    }
}
