//! Tern's consensus and node-to-node parts.
//!
//! - [`cluster`]: a node's place in a cluster: its links and metadata member, and how a fresh
//!   set of nodes forms one cluster.
//! - [`meta`]: the metadata Raft group (openraft): every definition change is a command in its
//!   log, stored on `tern_store`; one member on a single node, more in a cluster.
//! - [`wire`]: the node-to-node protocol's frames (ours, versioned), sans IO.
//! - [`handshake`]: what opens every link between two nodes: version and cluster name
//!   checked, knowledge of the cluster secret proven both ways (HMAC challenge-response).
//! - [`link`]: one connection to a peer after the handshake: calls both ways, heartbeats, a
//!   bounded send queue.
//! - [`nodes`]: every link of a node: the cluster listener, a dialer per peer address that
//!   reconnects with backoff, one link per peer.
//! - [`queue_ops`]: what nodes send each other about queues: operations for a queue's home
//!   node, and the deliveries and confirms it sends back.

pub mod cluster;
pub mod handshake;
pub mod link;
pub mod meta;
pub mod nodes;
pub mod queue_ops;
pub mod wire;
