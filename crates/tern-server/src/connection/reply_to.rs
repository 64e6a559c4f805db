//! Direct reply-to on a connection (see `crate::direct_reply`): the requester's reply consumer,
//! the rewriting of `reply-to`, the responder's replies, and a declare of the pseudo-queue.
//! Errors and texts are RabbitMQ's (`rabbit_channel`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tern_amqp::{
    AmqpError, BasicConsume, BasicConsumeOk, BasicProperties, Method, QueueDeclareOk, ReplyCode,
    ShortStr,
};
use tern_core::message::Message;
use tern_core::names::{ChannelKey, QueueName};

use super::deliver::encode_deliver;
use super::Connection;
use crate::broker::no_queue;
use crate::direct_reply::{ReplyTarget, Sent, REPLY_PREFIX, REPLY_QUEUE};

/// A channel's consumer of `amq.rabbitmq.reply-to` (at most one per channel).
pub struct ReplyConsumer {
    pub tag: ShortStr,
    /// What follows `amq.rabbitmq.reply-to.` in the address replies are published to.
    pub suffix: ShortStr,
}

fn precondition(text: &str, class_id: u16, method_id: u16) -> AmqpError {
    AmqpError::new(ReplyCode::PreconditionFailed, text).on(class_id, method_id)
}

impl Connection {
    /// basic.consume from `amq.rabbitmq.reply-to`: no-ack only, one per channel.
    pub(super) fn reply_consume(&mut self, ch: u16, m: &BasicConsume) -> Result<(), AmqpError> {
        if !m.no_ack {
            return Err(precondition("reply consumer cannot acknowledge", 60, 20));
        }
        let seed = self.broker.next_id();
        let target = ReplyTarget {
            sink: self.sink.clone(),
            channel: ChannelKey(0),
            backlog: self.reply_backlog.clone(),
        };
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if channel.reply_consumer.is_some() {
            return Err(precondition("reply consumer already set", 60, 20));
        }
        let tag = if m.consumer_tag.is_empty() {
            ShortStr::from(format!("amq.ctag-{}", crate::token::random_token(seed, 22)))
        } else {
            m.consumer_tag.clone()
        };
        if channel.consumer_tags.contains_key(&tag) {
            let text = format!("attempt to reuse consumer tag '{tag}'");
            return Err(AmqpError::new(ReplyCode::NotAllowed, text).on(60, 20));
        }
        let suffix = ShortStr::from(crate::token::random_token(seed, 32));
        let target = ReplyTarget {
            channel: channel.key,
            ..target
        };
        self.broker.replies.register(suffix.clone(), target);
        channel.reply_consumer = Some(ReplyConsumer {
            tag: tag.clone(),
            suffix,
        });
        if !m.nowait {
            let ok = Method::BasicConsumeOk(BasicConsumeOk { consumer_tag: tag });
            self.send_method(ch, &ok);
        }
        Ok(())
    }

    /// basic.cancel of the reply consumer; false if `tag` is not it.
    pub(super) fn reply_cancel(&mut self, ch: u16, tag: &ShortStr) -> bool {
        let is_reply = self
            .channels
            .get(&ch)
            .and_then(|c| c.reply_consumer.as_ref())
            .is_some_and(|r| r.tag == *tag);
        if is_reply {
            self.drop_reply_consumer(ch);
        }
        is_reply
    }

    /// The channel is closing or gone: replies to it are dropped from now on.
    pub(super) fn drop_reply_consumer(&mut self, ch: u16) {
        let gone = self
            .channels
            .get_mut(&ch)
            .and_then(|c| c.reply_consumer.take());
        if let Some(reply) = gone {
            self.broker.replies.unregister(&reply.suffix);
        }
    }

    /// A request published with `reply-to: amq.rabbitmq.reply-to` names this channel's reply
    /// address instead (406 when the channel has no reply consumer).
    pub(super) fn rewrite_reply_to(
        &self,
        ch: u16,
        properties: &mut BasicProperties,
        raw: &mut Bytes,
    ) -> Result<(), AmqpError> {
        if !matches!(&properties.reply_to, Some(r) if *r == REPLY_QUEUE) {
            return Ok(());
        }
        let reply = self
            .channels
            .get(&ch)
            .and_then(|c| c.reply_consumer.as_ref());
        let Some(reply) = reply else {
            return Err(precondition("fast reply consumer does not exist", 60, 40));
        };
        let address = format!("{REPLY_PREFIX}{}", reply.suffix);
        properties.reply_to = Some(ShortStr::from(address));
        let mut encoded = BytesMut::new();
        properties.encode(&mut encoded);
        *raw = encoded.freeze();
        Ok(())
    }

    /// A reply (see [`is_reply_address`]) goes to its requester, or nowhere if it is gone.
    /// RabbitMQ 3.x treats the address as no queue (a mandatory reply is returned); 4.x counts
    /// it as routed. We follow 3.x, the version the suite is checked against.
    pub(super) fn send_direct_reply(&self, message: &Arc<Message>) {
        let Some(suffix) = message.routing_key.strip_prefix(REPLY_PREFIX) else {
            return;
        };
        let limit = self.broker.config.direct_reply_backlog_bytes;
        match self.broker.replies.send(suffix, message.clone(), limit) {
            Sent::Delivered | Sent::NoRequester => {}
            Sent::Dropped => {
                tracing::warn!("direct reply dropped: requester is not keeping up");
            }
        }
    }

    /// A reply for one of our channels: basic.deliver to its reply consumer, if still there.
    pub(super) fn on_direct_reply(&mut self, key: ChannelKey, suffix: &ShortStr, m: &Message) {
        let size = m.size_bytes() as u64;
        self.reply_backlog.fetch_sub(size, Ordering::AcqRel);
        let found = self.channels.iter_mut().find(|(_, c)| c.key == key);
        let Some((&ch, channel)) = found else {
            return;
        };
        let Some(reply) = channel
            .reply_consumer
            .as_ref()
            .filter(|r| r.suffix == *suffix)
        else {
            return;
        };
        let tag = channel.unacked.next_tag();
        let consumer_tag = reply.tag.clone();
        let (exchange, key) = (m.exchange.as_slice(), m.routing_key.as_slice());
        encode_deliver(
            &mut self.out,
            ch,
            consumer_tag.as_slice(),
            tag,
            false,
            exchange,
            key,
        );
        self.send_content(ch, m);
    }

    /// queue.declare of the pseudo-queue (passive or not, it cannot be created): ok with one
    /// consumer while the requester is there, else 404.
    pub(super) fn declare_reply_queue(
        &mut self,
        ch: u16,
        name: &ShortStr,
        nowait: bool,
    ) -> Result<(), AmqpError> {
        let exists = match name.strip_prefix(REPLY_PREFIX) {
            None => *name == REPLY_QUEUE,
            Some(suffix) => self.broker.replies.exists(suffix),
        };
        if !exists {
            return Err(no_queue(&self.vhost, &QueueName::from(name.clone())).on(50, 10));
        }
        if !nowait {
            let ok = QueueDeclareOk {
                queue: name.clone(),
                message_count: 0,
                consumer_count: 1,
            };
            self.send_method(ch, &Method::QueueDeclareOk(ok));
        }
        Ok(())
    }
}

/// A message to the default exchange with a reply address as routing key: a direct reply.
pub(super) fn is_reply_address(message: &Message) -> bool {
    message.exchange.is_empty() && message.routing_key.starts_with(REPLY_PREFIX)
}

/// Whether `name` is the pseudo-queue or a reply address.
pub(super) fn is_reply_queue(name: &str) -> bool {
    name == REPLY_QUEUE || name.starts_with(REPLY_PREFIX)
}
