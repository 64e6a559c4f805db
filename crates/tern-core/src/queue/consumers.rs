//! A queue's consumers and which of them may receive next.
//!
//! Each consumer is in exactly one scheduling state:
//! - `Ring`: in its priority level's round-robin ring (it had credit when put there);
//! - `Blocked`: its own credit (prefetch, or the no-ack window) is used up; it goes back into
//!   its ring when a settle or returned credit gives it room;
//! - `Parked`: its channel's global credit was full when its turn came; parked consumers are
//!   re-checked at the start of each dispatch, because another queue may have freed the credit;
//! - `Standby`: single active consumer is on and this one is not the active one.
//!
//! So dispatch only ever looks at consumers that can take a message, plus at most one failed
//! look per consumer per dispatch call.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::credit::ChannelCredit;
use super::rings::{PriorityRings, Slot};
use super::ConsumerSpec;
use crate::names::{ChannelKey, ConsumerId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sched {
    Ring,
    Blocked,
    Parked,
    Standby,
}

struct Consumer {
    id: ConsumerId,
    channel: ChannelKey,
    priority: i32,
    /// 0 = unlimited. For a no-ack consumer, the window of deliveries in flight to its writer.
    prefetch: u32,
    no_ack: bool,
    exclusive: bool,
    credit: Option<Arc<ChannelCredit>>,
    /// Unacked deliveries (ack mode) or deliveries whose credit is not yet returned (no-ack).
    in_flight: u32,
    /// No-ack only: the bytes of those deliveries, against `window_bytes` (0 = unlimited).
    in_flight_bytes: u64,
    window_bytes: u64,
    sched: Sched,
}

impl Consumer {
    fn has_own_credit(&self) -> bool {
        let count_ok = self.prefetch == 0 || self.in_flight < self.prefetch;
        count_ok && (self.window_bytes == 0 || self.in_flight_bytes < self.window_bytes)
    }
}

/// Names a consumer from an unacked entry; the id guards against the slot being reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConsumerRef {
    pub slot: Slot,
    pub id: ConsumerId,
}

/// A consumer chosen to receive the next message; channel credit is already taken.
pub(super) struct Claim {
    pub holder: ConsumerRef,
    pub channel: ChannelKey,
    pub no_ack: bool,
    pub credit: Option<Arc<ChannelCredit>>,
    level: usize,
}

pub(super) struct Consumers {
    slots: Vec<Option<Consumer>>,
    free: Vec<Slot>,
    by_id: HashMap<ConsumerId, Slot>,
    rings: PriorityRings,
    parked: Vec<Slot>,
    /// Registration order, kept only with single active consumer; the front is active.
    sac_order: VecDeque<Slot>,
    sac: bool,
    exclusive_held: bool,
    ever_had: bool,
}

impl Consumers {
    pub fn new(single_active_consumer: bool) -> Self {
        Consumers {
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            rings: PriorityRings::default(),
            parked: Vec::new(),
            sac_order: VecDeque::new(),
            sac: single_active_consumer,
            exclusive_held: false,
            ever_had: false,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn contains(&self, id: ConsumerId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn ever_had(&self) -> bool {
        self.ever_had
    }

    pub fn active(&self) -> Option<ConsumerId> {
        let slot = *self.sac_order.front()?;
        self.get(slot).map(|c| c.id)
    }

    /// RabbitMQ's exclusive-use rule: an exclusive consumer must be alone, and nobody joins it;
    /// with single active consumer, exclusive consumers are not allowed at all.
    pub fn refuses(&self, exclusive: bool) -> bool {
        self.exclusive_held || (exclusive && (self.sac || !self.by_id.is_empty()))
    }

    pub fn add(&mut self, spec: ConsumerSpec) {
        let standby = self.sac && !self.sac_order.is_empty();
        let consumer = Consumer {
            id: spec.id,
            channel: spec.channel,
            priority: spec.priority,
            prefetch: spec.prefetch,
            no_ack: spec.no_ack,
            exclusive: spec.exclusive,
            // No-ack deliveries are never unacked, so they hold no channel credit.
            credit: if spec.no_ack {
                None
            } else {
                spec.channel_credit
            },
            in_flight: 0,
            in_flight_bytes: 0,
            window_bytes: if spec.no_ack { spec.window_bytes } else { 0 },
            sched: if standby { Sched::Standby } else { Sched::Ring },
        };
        let slot = self.alloc(consumer);
        self.by_id.insert(spec.id, slot);
        self.rings.join(spec.priority);
        if !standby {
            self.rings.push(spec.priority, slot);
        }
        if self.sac {
            self.sac_order.push_back(slot);
        }
        self.exclusive_held |= spec.exclusive;
        self.ever_had = true;
    }

    fn alloc(&mut self, consumer: Consumer) -> Slot {
        if let Some(slot) = self.free.pop() {
            self.slots[slot as usize] = Some(consumer);
            return slot;
        }
        self.slots.push(Some(consumer));
        Slot::try_from(self.slots.len() - 1).unwrap_or(Slot::MAX)
    }

    pub fn remove(&mut self, id: ConsumerId) -> bool {
        let Some(slot) = self.by_id.remove(&id) else {
            return false;
        };
        let Some(c) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            debug_assert!(false, "consumer {id:?} indexed at an empty slot");
            return false;
        };
        match c.sched {
            Sched::Ring => {
                let found = self.rings.remove(c.priority, slot);
                debug_assert!(found, "a Ring consumer is in its ring");
            }
            Sched::Parked => self.parked.retain(|&s| s != slot),
            Sched::Blocked | Sched::Standby => {}
        }
        self.rings.leave(c.priority);
        self.free.push(slot);
        if c.exclusive {
            self.exclusive_held = false;
        }
        if self.sac {
            self.remove_from_sac_order(slot);
        }
        true
    }

    fn remove_from_sac_order(&mut self, slot: Slot) {
        let was_active = self.sac_order.front() == Some(&slot);
        self.sac_order.retain(|&s| s != slot);
        let Some(&next) = self.sac_order.front() else {
            return;
        };
        if was_active {
            if let Some(c) = self.slots.get_mut(next as usize).and_then(Option::as_mut) {
                c.sched = Sched::Blocked;
            }
            self.wake(next);
        }
    }

    /// Consumers on `channel`, for channel close.
    pub fn on_channel(&self, channel: ChannelKey) -> Vec<ConsumerId> {
        self.slots
            .iter()
            .flatten()
            .filter(|c| c.channel == channel)
            .map(|c| c.id)
            .collect()
    }

    fn get(&self, slot: Slot) -> Option<&Consumer> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, holder: ConsumerRef) -> Option<&mut Consumer> {
        let c = self
            .slots
            .get_mut(holder.slot as usize)
            .and_then(Option::as_mut)?;
        (c.id == holder.id).then_some(c)
    }

    /// Put parked consumers whose channel has room again back into their rings.
    pub fn unpark(&mut self) {
        let (slots, rings) = (&mut self.slots, &mut self.rings);
        self.parked.retain(|&slot| {
            let Some(c) = slots.get_mut(slot as usize).and_then(Option::as_mut) else {
                return false;
            };
            if c.credit.as_ref().is_some_and(|credit| !credit.has_room()) {
                return true;
            }
            c.sched = Sched::Ring;
            rings.push(c.priority, slot);
            false
        });
    }

    /// The next consumer in priority and round-robin order that can take a message now.
    /// Consumers found without credit on the way are blocked or parked.
    pub fn claim(&mut self) -> Option<Claim> {
        while let Some((level, slot)) = self.rings.pop() {
            let Some(c) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
                debug_assert!(false, "ring holds an empty slot {slot}");
                continue;
            };
            debug_assert_eq!(c.sched, Sched::Ring);
            if !c.has_own_credit() {
                c.sched = Sched::Blocked;
                continue;
            }
            if c.credit
                .as_ref()
                .is_some_and(|credit| !credit.try_acquire())
            {
                c.sched = Sched::Parked;
                self.parked.push(slot);
                continue;
            }
            let holder = ConsumerRef { slot, id: c.id };
            let credit = c.credit.clone();
            return Some(Claim {
                holder,
                channel: c.channel,
                no_ack: c.no_ack,
                credit,
                level,
            });
        }
        None
    }

    /// The claimed consumer was given a message of `bytes`: count it and take its turn.
    pub fn delivered(&mut self, claim: &Claim, bytes: u64) {
        let Some(c) = self.get_mut(claim.holder) else {
            return;
        };
        c.in_flight += 1;
        if c.no_ack {
            c.in_flight_bytes += bytes;
        }
        debug_assert!(
            c.prefetch == 0 || c.in_flight <= c.prefetch,
            "in flight beyond prefetch"
        );
        if c.has_own_credit() {
            self.rings.push_at(claim.level, claim.holder.slot);
        } else {
            c.sched = Sched::Blocked;
        }
    }

    /// `n` deliveries of `holder` were settled (or their no-ack credit returned).
    pub fn settled(&mut self, holder: ConsumerRef, n: u32) {
        let Some(c) = self.get_mut(holder) else {
            return;
        };
        debug_assert!(c.in_flight >= n, "settled {n} of {} in flight", c.in_flight);
        c.in_flight = c.in_flight.saturating_sub(n);
        self.wake(holder.slot);
    }

    /// The connection flushed `n` no-ack deliveries of `id`, of `bytes` in all.
    pub fn return_credit(&mut self, id: ConsumerId, n: u32, bytes: u64) {
        let Some(&slot) = self.by_id.get(&id) else {
            return;
        };
        let Some(c) = self.get_mut(ConsumerRef { slot, id }) else {
            return;
        };
        if c.no_ack {
            debug_assert!(c.in_flight_bytes >= bytes, "returned more bytes than sent");
            c.in_flight_bytes = c.in_flight_bytes.saturating_sub(bytes);
            self.settled(ConsumerRef { slot, id }, n);
        }
    }

    fn wake(&mut self, slot: Slot) {
        let Some(c) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if c.sched == Sched::Blocked && c.has_own_credit() {
            c.sched = Sched::Ring;
            self.rings.push(c.priority, slot);
        }
    }

    /// Full consistency check (O(consumers)), for tests.
    #[cfg(test)]
    pub fn check(&self) {
        let in_rings: Vec<Slot> = self.rings.slots().collect();
        for (slot, c) in self.slots.iter().enumerate() {
            let Some(c) = c else { continue };
            let slot = slot as Slot;
            assert_eq!(self.by_id.get(&c.id), Some(&slot));
            assert!(c.prefetch == 0 || c.in_flight <= c.prefetch);
            let rung = in_rings.iter().filter(|&&s| s == slot).count();
            assert_eq!(rung, usize::from(c.sched == Sched::Ring), "{:?}", c.sched);
            assert_eq!(self.parked.contains(&slot), c.sched == Sched::Parked);
            if c.sched == Sched::Blocked {
                assert!(!c.has_own_credit());
            }
            let active = self.sac_order.front() == Some(&slot);
            assert_eq!(c.sched == Sched::Standby, self.sac && !active);
        }
        assert_eq!(self.slots.iter().flatten().count(), self.by_id.len());
    }

    /// In-flight count of a consumer, for tests.
    #[cfg(test)]
    pub fn in_flight(&self, id: ConsumerId) -> Option<u32> {
        let slot = *self.by_id.get(&id)?;
        self.get(slot).map(|c| c.in_flight)
    }
}
