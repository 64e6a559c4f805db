//! The running Tern broker.
//!
//! - [`config`]: every port, timeout and limit, with RabbitMQ-like defaults.
//! - `listener`: accepts TCP connections and spawns a connection task for each.
//! - `connection`: one client connection: handshake, frame reading, the channel state machines,
//!   heartbeats, and the writer that coalesces outgoing frames.
//! - `broker`: node-wide shared state: the metadata state machine, the routing snapshot, the
//!   queue registry.
//! - `queue_actor`: a queue as a task owning a `tern_core::queue::QueueState`, fed by a bounded
//!   channel.

pub mod config;

pub use config::Config;

use std::net::SocketAddr;

/// A running broker. Dropping the handle does not stop it; call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    amqp_addr: SocketAddr,
}

impl ServerHandle {
    /// The address the AMQP listener is bound to (useful with port 0).
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr
    }

    /// Stop accepting, close every connection, and wait until they are gone.
    pub async fn shutdown(self) {}
}

/// Start a broker with `config` on the current tokio runtime. Returns once the listener is bound.
pub async fn start(config: Config) -> std::io::Result<ServerHandle> {
    let _ = config;
    todo!("server")
}
