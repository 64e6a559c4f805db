//! Direct reply-to, as RabbitMQ has it: an RPC client consumes (no-ack) from the pseudo-queue
//! `amq.rabbitmq.reply-to` and publishes requests with that as `reply-to`; the broker rewrites
//! it to `amq.rabbitmq.reply-to.<suffix>`, and a reply published to the default exchange with
//! that routing key goes straight to the requester's channel, through no queue.
//!
//! The registry maps each live suffix (random, so it cannot be guessed) to the channel that
//! consumes it. Replies are at most once, as in RabbitMQ: one for a requester that is gone is
//! dropped, and so is one for a requester whose connection already has
//! `direct_reply_backlog_bytes` of replies it has not written yet (a reply flood cannot grow
//! the broker's memory without bound).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tern_amqp::ShortStr;
use tern_core::message::Message;
use tern_core::names::ChannelKey;

use crate::sink::{ConnEvent, ConnSink};

/// The pseudo-queue requesters consume from and name as `reply-to`.
pub const REPLY_QUEUE: &str = "amq.rabbitmq.reply-to";
/// What the broker turns `reply-to` into: this, then the channel's suffix.
pub const REPLY_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// Where replies to one suffix go.
#[derive(Clone)]
pub struct ReplyTarget {
    pub sink: ConnSink,
    pub channel: ChannelKey,
    /// Bytes of replies sent to this connection that it has not written yet.
    pub backlog: Arc<AtomicU64>,
}

/// What became of a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Delivered,
    /// No such requester (any more).
    NoRequester,
    /// The requester's backlog is full.
    Dropped,
}

#[derive(Default)]
pub struct ReplyRegistry {
    targets: Mutex<HashMap<ShortStr, ReplyTarget>>,
}

impl ReplyRegistry {
    pub fn register(&self, suffix: ShortStr, target: ReplyTarget) {
        self.lock().insert(suffix, target);
    }

    pub fn unregister(&self, suffix: &ShortStr) {
        self.lock().remove(suffix);
    }

    pub fn exists(&self, suffix: &str) -> bool {
        self.lock().contains_key(suffix.as_bytes())
    }

    /// Send `message` to the requester behind `suffix`.
    pub fn send(&self, suffix: &str, message: Arc<Message>, backlog_max: u64) -> Sent {
        let Some(target) = self.lock().get(suffix.as_bytes()).cloned() else {
            return Sent::NoRequester;
        };
        let size = message.size_bytes() as u64;
        let before = target.backlog.fetch_add(size, Ordering::AcqRel);
        if before > 0 && before + size > backlog_max {
            target.backlog.fetch_sub(size, Ordering::AcqRel);
            return Sent::Dropped;
        }
        let event = ConnEvent::DirectReply {
            channel: target.channel,
            suffix: ShortStr::from(suffix),
            message,
        };
        if target.sink.send(event).is_err() {
            target.backlog.fetch_sub(size, Ordering::AcqRel);
            return Sent::NoRequester;
        }
        Sent::Delivered
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ShortStr, ReplyTarget>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::sync::mpsc;

    fn message(len: usize) -> Arc<Message> {
        Arc::new(Message {
            exchange: ShortStr::default(),
            routing_key: ShortStr::from("amq.rabbitmq.reply-to.s"),
            properties: Default::default(),
            raw_properties: Bytes::new(),
            body: Bytes::from(vec![0u8; len]),
        })
    }

    #[test]
    fn replies_reach_a_registered_requester_until_its_backlog_is_full() {
        let registry = ReplyRegistry::default();
        let (sink, mut events) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicU64::new(0));
        let target = ReplyTarget {
            sink,
            channel: ChannelKey(7),
            backlog: backlog.clone(),
        };
        registry.register(ShortStr::from("s"), target);
        assert!(registry.exists("s"));
        let size = message(1000).size_bytes() as u64;
        // The first reply always goes, however large; then up to the limit.
        assert_eq!(registry.send("s", message(1000), size), Sent::Delivered);
        assert_eq!(registry.send("s", message(1000), size * 2), Sent::Delivered);
        assert_eq!(registry.send("s", message(1000), size * 2), Sent::Dropped);
        assert_eq!(backlog.load(Ordering::Acquire), size * 2);
        assert!(matches!(
            events.try_recv(),
            Ok(ConnEvent::DirectReply {
                channel: ChannelKey(7),
                ..
            })
        ));
        assert_eq!(
            registry.send("other", message(1), u64::MAX),
            Sent::NoRequester
        );
        registry.unregister(&ShortStr::from("s"));
        assert_eq!(registry.send("s", message(1), u64::MAX), Sent::NoRequester);
    }

    #[test]
    fn a_requester_whose_connection_is_gone_gets_nothing() {
        let registry = ReplyRegistry::default();
        let (sink, events) = mpsc::unbounded_channel();
        drop(events);
        let backlog = Arc::new(AtomicU64::new(0));
        let channel = ChannelKey(1);
        let target = ReplyTarget {
            sink,
            channel,
            backlog: backlog.clone(),
        };
        registry.register(ShortStr::from("s"), target);
        assert_eq!(registry.send("s", message(10), u64::MAX), Sent::NoRequester);
        assert_eq!(backlog.load(Ordering::Acquire), 0);
    }
}
