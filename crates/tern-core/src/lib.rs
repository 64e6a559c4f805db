//! Tern's broker domain, sans IO: no sockets, no files, no clock, no async.
//!
//! - [`names`]: newtypes for vhost, exchange and queue names and for connection / channel /
//!   consumer identities.
//! - [`message`]: a published message as queues hold it (shared, never copied per queue).
//! - [`meta`]: the metadata state machine: vhosts, exchanges, queues, bindings, users and
//!   permissions (`meta::access`).
//!   `Metadata::apply(command) -> outcome` is the one path every definition change takes.
//! - [`routing`]: the immutable routing snapshot the metadata produces, and the matchers behind it
//!   (direct, fanout, topic trie, headers, consistent hash), exchange-to-exchange bindings and
//!   alternate exchanges.
//! - [`queue`]: the queue state machine: ready messages, unacked deliveries, consumers with
//!   credit, dispatch, ack / reject / requeue, get, purge.

pub mod message;
pub mod meta;
pub mod names;
pub mod queue;
pub mod routing;
