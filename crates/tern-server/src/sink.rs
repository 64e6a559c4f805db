//! What queue actors (and the node) send to a connection task.

use tern_amqp::ReplyCode;
use tern_core::names::ConsumerId;
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
    /// Close the connection with this code and text (operator action, shutdown).
    Close { code: ReplyCode, text: String },
}

/// Unbounded because what flows through it is bounded elsewhere: deliveries by consumer credit
/// (prefetch, or the no-ack window that is returned only once the writer has flushed), the rest
/// by the number of consumers.
pub type ConnSink = mpsc::UnboundedSender<ConnEvent>;
