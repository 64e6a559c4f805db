//! A published message as queues hold it.
//!
//! One `Arc<Message>` is shared by every queue the message was routed to: the body is
//! `bytes::Bytes` decoded once from the publisher's frames and never copied per queue.

use bytes::Bytes;
use tern_amqp::{BasicProperties, ShortStr};

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The exchange it was published to (as the client named it; empty for the default).
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    /// Decoded content-header properties (headers are needed for routing and by later features).
    pub properties: BasicProperties,
    /// The property flags and list exactly as published, re-sent verbatim on delivery.
    pub raw_properties: Bytes,
    pub body: Bytes,
}

impl Message {
    /// delivery-mode 2.
    pub fn is_persistent(&self) -> bool {
        self.properties.delivery_mode == Some(2)
    }

    /// Bytes this message holds in memory: body plus properties, for queue byte counts.
    pub fn size_bytes(&self) -> usize {
        self.body.len() + self.raw_properties.len()
    }
}
