//! Tern's consensus and node-to-node parts.
//!
//! - [`meta`]: the metadata Raft group (openraft): every definition change is a command in its
//!   log, stored on `tern_store`; one member on a single node, more in a cluster.

pub mod meta;
