//! A channel's global prefetch (basic.qos with global = true), shared by every queue the
//! channel consumes from. Queue actors run on different tasks, so the counter is atomic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Deliveries a channel may have unacknowledged across all its queues.
///
/// A queue takes one unit per delivery to a consumer on the channel ([`try_acquire`]) and gives
/// it back when that delivery leaves its unacked set — ack, reject or channel close
/// ([`release`]). A limit of 0 means unlimited; the count is still kept, so that a limit set
/// later applies to what is already outstanding.
///
/// [`try_acquire`]: ChannelCredit::try_acquire
/// [`release`]: ChannelCredit::release
#[derive(Debug, Default)]
pub struct ChannelCredit {
    limit: AtomicU32,
    used: AtomicU32,
}

impl ChannelCredit {
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(ChannelCredit {
            limit: AtomicU32::new(limit),
            used: AtomicU32::new(0),
        })
    }

    /// A new basic.qos. Lowering it below what is outstanding only stops new deliveries.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Release);
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Acquire)
    }

    /// Deliveries currently holding a unit.
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }

    pub fn has_room(&self) -> bool {
        let limit = self.limit();
        limit == 0 || self.used() < limit
    }

    /// Take one unit if the channel has room.
    pub fn try_acquire(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let limit = self.limit.load(Ordering::Acquire);
                (limit == 0 || used < limit).then(|| used.saturating_add(1))
            })
            .is_ok()
    }

    /// Give back `n` units. True when this took the channel from full to having room: the
    /// other queues the channel consumes from may now dispatch to it.
    pub fn release(&self, n: u32) -> bool {
        if n == 0 {
            return false;
        }
        let update = |used: u32| Some(used.saturating_sub(n));
        let Ok(prev) = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, update)
        else {
            return false;
        };
        debug_assert!(prev >= n, "released {n} units but only {prev} were held");
        let limit = self.limit();
        limit != 0 && prev >= limit && prev.saturating_sub(n) < limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_stops_at_the_limit_and_release_reports_room() {
        let credit = ChannelCredit::new(2);
        assert!(credit.try_acquire());
        assert!(credit.try_acquire());
        assert!(!credit.try_acquire());
        assert!(!credit.has_room());
        assert!(credit.release(1), "full to room is reported");
        assert!(!credit.release(1), "room to more room is not");
        assert_eq!(credit.used(), 0);
    }

    #[test]
    fn zero_limit_is_unlimited_but_still_counts() {
        let credit = ChannelCredit::new(0);
        for _ in 0..1000 {
            assert!(credit.try_acquire());
        }
        assert_eq!(credit.used(), 1000);
        credit.set_limit(10);
        assert!(
            !credit.try_acquire(),
            "a limit applies to what is already outstanding"
        );
        assert!(!credit.release(900));
        assert!(credit.release(91));
        assert!(credit.has_room());
    }

    #[test]
    fn raising_the_limit_makes_room() {
        let credit = ChannelCredit::new(1);
        assert!(credit.try_acquire());
        assert!(!credit.try_acquire());
        credit.set_limit(2);
        assert!(credit.try_acquire());
    }
}
