//! Flow control between a queue and its publishers.
//!
//! A publish takes inbox credit; normally the queue gives it back as soon as it has taken the
//! messages in. But a queue is cheaper to fill than to drain (delivering and settling costs more
//! than enqueueing), so a publisher running flat out would build an ever-growing backlog in
//! front of consumers that are keeping busy. While the ready backlog is above
//! `backlog_limit` *and* consumers are actively taking messages, the queue holds the credit back
//! until they have drained it below the limit: publishers are slowed to the consumers' pace, as
//! RabbitMQ's credit flow does. If no delivery happened for [`STALL`] (no consumers, or all of
//! them stuck at their prefetch limit), the credit goes back: a stuck consumer must never stop
//! publishers, messages then simply queue up.

use std::time::{Duration, Instant};

/// How long without a delivery before the queue stops holding publishers back.
pub const STALL: Duration = Duration::from_millis(20);

pub struct PublishFlow {
    held: usize,
    backlog_limit: usize,
    last_delivery: Option<Instant>,
}

impl PublishFlow {
    pub fn new(backlog_limit: usize) -> Self {
        PublishFlow {
            held: 0,
            backlog_limit,
            last_delivery: None,
        }
    }

    /// Credit of messages just taken in, to give back when [`settle`](Self::settle) says so.
    pub fn hold(&mut self, permits: usize) {
        self.held += permits;
    }

    /// The queue delivered to a consumer at `now`.
    pub fn delivered(&mut self, now: Instant) {
        self.last_delivery = Some(now);
    }

    /// Permits to give back now (possibly 0), and when to look again if some are still held.
    pub fn settle(&mut self, backlog: usize, now: Instant) -> (usize, Option<Instant>) {
        if self.held == 0 {
            return (0, None);
        }
        let draining_until = self
            .last_delivery
            .map(|t| t + STALL)
            .filter(|until| *until > now);
        match draining_until {
            Some(until) if backlog > self.backlog_limit => (0, Some(until)),
            _ => (std::mem::take(&mut self.held), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_goes_back_at_once_while_the_backlog_is_small() {
        let now = Instant::now();
        let mut flow = PublishFlow::new(100);
        flow.delivered(now);
        flow.hold(50);
        assert_eq!(flow.settle(100, now), (50, None));
        assert_eq!(flow.settle(100, now), (0, None), "given back once");
    }

    #[test]
    fn credit_is_held_while_active_consumers_drain_a_large_backlog() {
        let now = Instant::now();
        let mut flow = PublishFlow::new(100);
        flow.delivered(now);
        flow.hold(50);
        assert_eq!(flow.settle(101, now), (0, Some(now + STALL)));
        assert_eq!(flow.settle(100, now + Duration::from_millis(1)), (50, None));
    }

    #[test]
    fn credit_goes_back_when_consumers_stall_or_never_were() {
        let now = Instant::now();
        let mut flow = PublishFlow::new(100);
        flow.hold(10);
        assert_eq!(
            flow.settle(1_000, now),
            (10, None),
            "no consumer ever took a message"
        );
        flow.delivered(now);
        flow.hold(10);
        assert_eq!(
            flow.settle(1_000, now + STALL),
            (10, None),
            "no delivery for STALL"
        );
    }
}
