//! What queue actors (and the node) send to a connection task.

use std::sync::Arc;

use tern_amqp::{ReplyCode, ShortStr};
use tern_core::message::Message;
use tern_core::names::{ChannelKey, ConsumerId};
use tern_core::queue::Delivery;
use tokio::sync::mpsc;

use crate::queue_actor::QueueHandle;

pub enum ConnEvent {
    /// Messages for consumers on this connection, from one queue, in dispatch order.
    Deliver {
        queue: QueueHandle,
        deliveries: Vec<Delivery>,
    },
    /// The queue went away (deleted): tell the client with a server-sent basic.cancel.
    ConsumerCancelled { consumer: ConsumerId },
    /// A direct reply for the reply consumer with `suffix` on `channel`.
    DirectReply {
        channel: ChannelKey,
        suffix: ShortStr,
        message: Arc<Message>,
    },
    /// A queue has the publishes of batch `token` safely (on disk, for a durable queue), or
    /// (`ok` false) could not take them.
    Confirmed { token: u64, ok: bool },
    /// Close the connection with this code and text (operator action, shutdown).
    Close { code: ReplyCode, text: String },
    /// Say what channels and consumers the connection has (the management API).
    Describe {
        reply: tokio::sync::oneshot::Sender<crate::connection::ConnDetail>,
    },
}

/// Unbounded because what flows through it is bounded elsewhere: deliveries by consumer credit
/// (prefetch, or the no-ack window that is returned only once the writer has flushed), the rest
/// by the number of consumers, direct replies by `direct_reply_backlog_bytes`.
pub type ConnSink = mpsc::UnboundedSender<ConnEvent>;
