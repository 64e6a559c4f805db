//! Node-wide message and connection counters: what RabbitMQ exports as
//! `rabbitmq_global_messages_*_total` and the churn (`rabbitmq_connections_opened_total`,
//! `..._channels_...`, `..._queues_{declared,created,deleted}_total`), and what
//! the management API's `message_stats` shows.
//!
//! The hot path never touches a shared cache line per message: a connection counts into its own
//! [`LocalCounts`] (plain integers) and adds them to the node's [`Counters`] once per wake-up
//! ([`Counters::absorb`]), before it writes what that wake-up produced. So a client that has
//! seen a confirm or a delivery finds it counted by the next scrape.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One counter. The discriminant indexes [`Counters`] and [`LocalCounts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// basic.publish completed (header and body in).
    Received,
    /// … on a channel in confirm mode.
    ReceivedConfirm,
    /// Routed to at least one queue (or a direct reply-to consumer).
    Routed,
    /// No queue, not mandatory: dropped.
    UnroutableDropped,
    /// No queue, mandatory: basic.return.
    UnroutableReturned,
    /// Publisher confirms (basic.ack) sent, counted per message.
    Confirmed,
    /// Deliveries to consumers plus basic.get-ok.
    Delivered,
    DeliveredConsumeManualAck,
    DeliveredConsumeAutoAck,
    DeliveredGetManualAck,
    DeliveredGetAutoAck,
    /// basic.get-empty answers.
    GetEmpty,
    /// Deliveries (consume or get) with the redelivered flag.
    Redelivered,
    /// Messages settled by basic.ack.
    Acknowledged,
    /// Client connections that finished the handshake.
    ConnectionsOpened,
    ConnectionsClosed,
    ChannelsOpened,
    ChannelsClosed,
    /// queue.declare (and the API's PUT) that succeeded, passive ones included.
    QueuesDeclared,
    QueuesCreated,
    QueuesDeleted,
}

const COUNTERS: usize = Counter::QueuesDeleted as usize + 1;

/// Every counter with RabbitMQ's name (after `rabbitmq_global_`, or `rabbitmq_` for the
/// connection counters) and help text, in export order.
#[rustfmt::skip]
pub const EXPORTED: [(Counter, &str, &str); COUNTERS] = [
    (Counter::Received, "messages_received_total", "Total number of messages received from publishers"),
    (Counter::ReceivedConfirm, "messages_received_confirm_total", "Total number of messages received from publishers expecting confirmations"),
    (Counter::Routed, "messages_routed_total", "Total number of messages routed to queues or streams"),
    (Counter::UnroutableDropped, "messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable"),
    (Counter::UnroutableReturned, "messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable"),
    (Counter::Confirmed, "messages_confirmed_total", "Total number of messages confirmed to publishers"),
    (Counter::Delivered, "messages_delivered_total", "Total number of messages delivered to consumers"),
    (Counter::DeliveredConsumeManualAck, "messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment"),
    (Counter::DeliveredConsumeAutoAck, "messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment"),
    (Counter::DeliveredGetManualAck, "messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment"),
    (Counter::DeliveredGetAutoAck, "messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment"),
    (Counter::GetEmpty, "messages_get_empty_total", "Total number of times basic.get operations fetched no message"),
    (Counter::Redelivered, "messages_redelivered_total", "Total number of messages redelivered to consumers"),
    (Counter::Acknowledged, "messages_acknowledged_total", "Total number of messages acknowledged by consumers"),
    (Counter::ConnectionsOpened, "connections_opened_total", "Total number of connections opened"),
    (Counter::ConnectionsClosed, "connections_closed_total", "Total number of connections closed or terminated"),
    (Counter::ChannelsOpened, "channels_opened_total", "Total number of channels opened"),
    (Counter::ChannelsClosed, "channels_closed_total", "Total number of channels closed"),
    (Counter::QueuesDeclared, "queues_declared_total", "Total number of queues declared"),
    (Counter::QueuesCreated, "queues_created_total", "Total number of queues created"),
    (Counter::QueuesDeleted, "queues_deleted_total", "Total number of queues deleted"),
];

impl Counter {
    /// Connections, channels and queues coming and going (exported without `global_`).
    pub fn is_churn(self) -> bool {
        self as usize >= Counter::ConnectionsOpened as usize
    }
}

/// The node's totals (held by the broker as `metrics`).
#[derive(Default)]
pub struct Counters {
    values: [AtomicU64; COUNTERS],
    /// Earlier snapshots, for rates (see [`Counters::rates`]).
    samples: Mutex<VecDeque<(Instant, MessageTotals)>>,
}

/// Seconds over which a rate is taken (RabbitMQ's management rates: the last 5 s).
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Snapshots kept for rates: at most one a second, so this bounds the memory.
const RATE_SAMPLES: usize = 16;

/// A connection's counts since it last handed them to [`Counters::absorb`].
#[derive(Default)]
pub struct LocalCounts {
    values: [u64; COUNTERS],
}

impl LocalCounts {
    #[inline]
    pub fn add(&mut self, counter: Counter, n: u64) {
        self.values[counter as usize] += n;
    }
}

/// The message totals as the management API's `message_stats` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MessageTotals {
    pub publish: u64,
    pub deliver: u64,
    pub deliver_no_ack: u64,
    pub get: u64,
    pub get_no_ack: u64,
    pub get_empty: u64,
    /// deliver + deliver_no_ack + get + get_no_ack.
    pub deliver_get: u64,
    pub redeliver: u64,
    pub ack: u64,
    pub confirm: u64,
    pub return_unroutable: u64,
    pub drop_unroutable: u64,
}

/// How many figures [`MessageTotals`] has.
pub const TOTALS: usize = 12;

impl MessageTotals {
    /// The figures under their `message_stats` names, in declaration order.
    pub fn named(&self) -> [(&'static str, u64); TOTALS] {
        [
            ("publish", self.publish),
            ("deliver", self.deliver),
            ("deliver_no_ack", self.deliver_no_ack),
            ("get", self.get),
            ("get_no_ack", self.get_no_ack),
            ("get_empty", self.get_empty),
            ("deliver_get", self.deliver_get),
            ("redeliver", self.redeliver),
            ("ack", self.ack),
            ("confirm", self.confirm),
            ("return_unroutable", self.return_unroutable),
            ("drop_unroutable", self.drop_unroutable),
        ]
    }

    fn values(&self) -> [u64; TOTALS] {
        self.named().map(|(_, v)| v)
    }
}

impl Counters {
    /// Add a connection's counts to the totals and zero them.
    pub fn absorb(&self, local: &mut LocalCounts) {
        for (total, n) in self.values.iter().zip(local.values.iter_mut()) {
            if *n != 0 {
                total.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
    }

    /// Count one event at once (rare ones: connections opening and closing).
    pub fn add(&self, counter: Counter, n: u64) {
        self.values[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize].load(Ordering::Relaxed)
    }

    /// The totals now, and per second over about the last [`RATE_WINDOW`] (from the newest
    /// earlier snapshot at least that old, or the oldest one; zero on the first call). Each
    /// call leaves a snapshot for the next, at most one a second.
    pub fn rates(&self) -> (MessageTotals, [f64; TOTALS]) {
        let now = Instant::now();
        let totals = self.snapshot();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let base = samples
            .iter()
            .rev()
            .find(|(at, _)| now.duration_since(*at) >= RATE_WINDOW)
            .or(samples.front())
            .copied();
        let mut rates = [0.0; TOTALS];
        if let Some((at, before)) = base {
            let secs = now.duration_since(at).as_secs_f64();
            if secs > 0.0 {
                for (r, (a, b)) in rates
                    .iter_mut()
                    .zip(totals.values().iter().zip(before.values()))
                {
                    *r = a.saturating_sub(b) as f64 / secs;
                }
            }
        }
        let fresh = samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1));
        if fresh {
            if samples.len() >= RATE_SAMPLES {
                samples.pop_front();
            }
            samples.push_back((now, totals));
        }
        (totals, rates)
    }

    /// The message totals for `/api/overview`'s `message_stats`.
    pub fn snapshot(&self) -> MessageTotals {
        let deliver = self.get(Counter::DeliveredConsumeManualAck);
        let deliver_no_ack = self.get(Counter::DeliveredConsumeAutoAck);
        let get = self.get(Counter::DeliveredGetManualAck);
        let get_no_ack = self.get(Counter::DeliveredGetAutoAck);
        MessageTotals {
            publish: self.get(Counter::Received),
            deliver,
            deliver_no_ack,
            get,
            get_no_ack,
            get_empty: self.get(Counter::GetEmpty),
            deliver_get: deliver + deliver_no_ack + get + get_no_ack,
            redeliver: self.get(Counter::Redelivered),
            ack: self.get(Counter::Acknowledged),
            confirm: self.get(Counter::Confirmed),
            return_unroutable: self.get(Counter::UnroutableReturned),
            drop_unroutable: self.get(Counter::UnroutableDropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_start_at_zero_then_follow_the_counts() {
        let c = Counters::default();
        let (totals, rates) = c.rates();
        assert_eq!((totals.publish, rates[0]), (0, 0.0));
        c.add(Counter::Received, 500);
        let (totals, rates) = c.rates();
        assert_eq!(totals.publish, 500);
        assert!(rates[0] > 0.0, "{rates:?}");
        assert_eq!(rates[1], 0.0, "nothing delivered");
    }

    #[test]
    fn exported_names_follow_the_enum_order() {
        for (i, (counter, name, _)) in EXPORTED.iter().enumerate() {
            assert_eq!(*counter as usize, i, "{name}");
        }
    }

    #[test]
    fn absorbed_local_counts_reach_the_totals_once() {
        let totals = Counters::default();
        let mut local = LocalCounts::default();
        local.add(Counter::Received, 3);
        local.add(Counter::DeliveredConsumeManualAck, 2);
        local.add(Counter::DeliveredGetAutoAck, 1);
        totals.absorb(&mut local);
        totals.absorb(&mut local);
        totals.add(Counter::ConnectionsOpened, 1);
        let s = totals.snapshot();
        assert_eq!((s.publish, s.deliver, s.get_no_ack), (3, 2, 1));
        assert_eq!(s.deliver_get, 3);
        assert_eq!(totals.get(Counter::ConnectionsOpened), 1);
    }
}
