//! Consumers that may receive now, grouped by priority: one round-robin ring per priority
//! level, highest level first, and a bitset of the non-empty rings so that finding the next
//! consumer costs O(levels / 64) however many consumers are blocked.
//!
//! Levels exist while they have members (consumers registered at that priority, whether or not
//! they are in the ring), so blocking and unblocking a consumer never allocates.

use std::collections::VecDeque;

/// Index of a consumer in the registry's slab.
pub(super) type Slot = u32;

struct Level {
    priority: i32,
    ring: VecDeque<Slot>,
    members: u32,
}

#[derive(Default)]
pub(super) struct PriorityRings {
    /// Sorted by priority, highest first.
    levels: Vec<Level>,
    /// Bit i set ⇔ `levels[i].ring` is not empty.
    nonempty: Vec<u64>,
}

impl PriorityRings {
    fn index(&self, priority: i32) -> Result<usize, usize> {
        self.levels.binary_search_by(|l| priority.cmp(&l.priority))
    }

    /// A consumer at `priority` was registered.
    pub fn join(&mut self, priority: i32) {
        match self.index(priority) {
            Ok(i) => self.levels[i].members += 1,
            Err(i) => {
                let level = Level {
                    priority,
                    ring: VecDeque::new(),
                    members: 1,
                };
                self.levels.insert(i, level);
                self.rebuild_bits();
            }
        }
    }

    /// A consumer at `priority` was removed (and is no longer in the ring).
    pub fn leave(&mut self, priority: i32) {
        let Ok(i) = self.index(priority) else {
            debug_assert!(false, "leave of an unknown priority level {priority}");
            return;
        };
        let level = &mut self.levels[i];
        level.members = level.members.saturating_sub(1);
        if level.members == 0 {
            debug_assert!(
                level.ring.is_empty(),
                "a level without members has an empty ring"
            );
            self.levels.remove(i);
            self.rebuild_bits();
        }
    }

    /// Append to the back of its level's ring.
    pub fn push(&mut self, priority: i32, slot: Slot) {
        match self.index(priority) {
            Ok(i) => self.push_at(i, slot),
            Err(_) => debug_assert!(false, "push to an unknown priority level {priority}"),
        }
    }

    /// Append to the ring at `level`, an index [`pop`](Self::pop) returned (levels have not
    /// changed since).
    pub fn push_at(&mut self, level: usize, slot: Slot) {
        self.levels[level].ring.push_back(slot);
        self.nonempty[level / 64] |= 1 << (level % 64);
    }

    /// The front of the highest non-empty ring, with its level index.
    pub fn pop(&mut self) -> Option<(usize, Slot)> {
        let i = self.first_nonempty()?;
        let ring = &mut self.levels[i].ring;
        let slot = ring.pop_front()?;
        if ring.is_empty() {
            self.nonempty[i / 64] &= !(1 << (i % 64));
        }
        Some((i, slot))
    }

    /// Take `slot` out of its level's ring (the consumer is going away). O(ring length).
    pub fn remove(&mut self, priority: i32, slot: Slot) -> bool {
        let Ok(i) = self.index(priority) else {
            return false;
        };
        let ring = &mut self.levels[i].ring;
        let Some(pos) = ring.iter().position(|&s| s == slot) else {
            return false;
        };
        ring.remove(pos);
        if ring.is_empty() {
            self.nonempty[i / 64] &= !(1 << (i % 64));
        }
        true
    }

    fn first_nonempty(&self) -> Option<usize> {
        let (word, bits) = self
            .nonempty
            .iter()
            .enumerate()
            .find(|(_, bits)| **bits != 0)?;
        Some(word * 64 + bits.trailing_zeros() as usize)
    }

    fn rebuild_bits(&mut self) {
        self.nonempty.clear();
        self.nonempty.resize(self.levels.len().div_ceil(64), 0);
        for (i, level) in self.levels.iter().enumerate() {
            if !level.ring.is_empty() {
                self.nonempty[i / 64] |= 1 << (i % 64);
            }
        }
    }

    /// Slots currently in rings, for invariant checks.
    #[cfg(test)]
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.levels.iter().flat_map(|l| l.ring.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_the_highest_priority_first_and_rotates_within_a_level() {
        let mut rings = PriorityRings::default();
        for p in [0, 5, 0] {
            rings.join(p);
        }
        rings.push(0, 1);
        rings.push(0, 2);
        rings.push(5, 3);
        assert_eq!(rings.pop(), Some((0, 3)));
        let (level, slot) = rings.pop().unwrap();
        assert_eq!(slot, 1);
        rings.push_at(level, slot);
        assert_eq!(rings.pop().map(|p| p.1), Some(2));
        assert_eq!(rings.pop().map(|p| p.1), Some(1));
        assert_eq!(rings.pop(), None);
    }

    #[test]
    fn many_levels_use_more_than_one_bitset_word() {
        let mut rings = PriorityRings::default();
        for p in 0..200 {
            rings.join(p);
        }
        rings.push(3, 7);
        assert_eq!(rings.pop(), Some((196, 7)));
        assert!(!rings.remove(0, 9));
        rings.push(0, 9);
        rings.leave(150);
        assert!(rings.remove(0, 9));
        assert_eq!(rings.pop(), None);
    }
}
