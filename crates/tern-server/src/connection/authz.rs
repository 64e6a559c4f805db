//! A connection's permissions: its user's `VhostAccess`, re-read whenever users or
//! permissions change (`Broker::access_generation`), so `set_permissions` and
//! `clear_permissions` apply to open connections at their next operation.
//!
//! Which permission each operation needs is RabbitMQ's access-control table:
//! declare / delete need configure; queue.bind needs write on the queue and read on the
//! exchange (exchange.bind: write on the destination, read on the source); publish needs write
//! on the exchange; consume, get and purge need read on the queue. A declare with an
//! alternate or dead-letter exchange also needs write on that exchange and read on what is
//! declared. Topic permissions narrow publishing (write) and binding (read) on topic exchanges.

use tern_amqp::{AmqpError, FieldTable, FieldValue};
use tern_core::meta::access::{refused, topic_refused, Op, Resource, VhostAccess};
use tern_core::meta::{Binding, ExchangeDef, QueueDef};
use tern_core::names::{ExchangeName, UserName, VhostName};
use tern_core::routing::{Destination, ExchangeKind};

use super::Connection;
use crate::broker::Broker;

pub struct Authz {
    /// None once the user lost its permissions in the vhost (or was deleted): every check
    /// is refused.
    access: Option<VhostAccess>,
    user: UserName,
    vhost: VhostName,
    generation: u64,
    /// The exchange the last publish was allowed to, and whether its keys are narrowed by
    /// topic permissions: the publish path checks only this, most of the time.
    last_write: Option<(ExchangeName, bool)>,
}

impl Authz {
    pub fn new(access: VhostAccess, generation: u64) -> Self {
        Authz {
            user: access.user.clone(),
            vhost: access.vhost.clone(),
            access: Some(access),
            generation,
            last_write: None,
        }
    }

    pub fn user(&self) -> &str {
        self.user.as_str()
    }

    fn refresh(&mut self, broker: &Broker) -> Option<&VhostAccess> {
        let generation = broker.access_generation();
        if generation != self.generation {
            self.generation = generation;
            self.last_write = None;
            self.access = broker.vhost_access(&self.vhost, &self.user);
        }
        self.access.as_ref()
    }

    /// 403 unless `op` on the resource is allowed.
    pub fn check(
        &mut self,
        broker: &Broker,
        kind: Resource,
        name: &str,
        op: Op,
    ) -> Result<(), AmqpError> {
        match self.refresh(broker) {
            Some(access) => access.check(kind, name, op),
            None => Err(refused(kind, name, &self.vhost, &self.user)),
        }
    }

    /// 403 unless the routing key may be bound (Read) or published (Write) on a topic
    /// exchange; other exchanges pass.
    pub fn check_topic(
        &mut self,
        broker: &Broker,
        exchange: &ExchangeName,
        key: &str,
        op: Op,
    ) -> Result<(), AmqpError> {
        match self.refresh(broker) {
            Some(access) => access.check_topic(exchange, key, op),
            None => Err(topic_refused(exchange, key, &self.vhost, &self.user)),
        }
    }

    /// basic.publish: write on the exchange, and the topic permission on the key when the
    /// user's topic permissions name the exchange and `is_topic` says it is a topic exchange.
    pub fn check_publish(
        &mut self,
        broker: &Broker,
        exchange: &ExchangeName,
        key: &str,
        is_topic: impl FnOnce() -> bool,
    ) -> Result<(), AmqpError> {
        let fresh = broker.access_generation() == self.generation;
        let narrowed = match &self.last_write {
            Some((x, narrowed)) if fresh && x == exchange => *narrowed,
            _ => {
                self.check(broker, Resource::Exchange, exchange, Op::Write)?;
                let names = self
                    .access
                    .as_ref()
                    .is_some_and(|a| a.narrows_topic(exchange));
                let narrowed = names && is_topic();
                self.last_write = Some((exchange.clone(), narrowed));
                narrowed
            }
        };
        if narrowed {
            return self.check_topic(broker, exchange, key, Op::Write);
        }
        Ok(())
    }
}

/// The access-control table, one method per AMQP operation that needs more than one check.
impl Connection {
    pub(super) fn permit(&mut self, kind: Resource, name: &str, op: Op) -> Result<(), AmqpError> {
        self.authz.check(&self.broker, kind, name, op)
    }

    fn exchange_exists(&self, name: &str) -> bool {
        let view = self.broker.routing_view();
        view.snapshot.exchange(&self.vhost, name).is_some()
    }

    /// exchange.declare (not passive): configure on it; when it is new and names an
    /// alternate exchange, read on it and write on the alternate.
    pub(super) fn permit_exchange_declare(&mut self, def: &ExchangeDef) -> Result<(), AmqpError> {
        if def.name.is_empty() {
            return Ok(()); // refused as the default exchange, as RabbitMQ does first
        }
        self.permit(Resource::Exchange, &def.name, Op::Configure)?;
        if self.exchange_exists(&def.name) {
            return Ok(());
        }
        if let Some(ae) = text_argument(&def.arguments, "alternate-exchange") {
            self.permit(Resource::Exchange, &def.name, Op::Read)?;
            self.permit(Resource::Exchange, &ae, Op::Write)?;
        }
        Ok(())
    }

    /// exchange.delete: configure (the default and `amq.*` exchanges are refused as such).
    pub(super) fn permit_exchange_delete(&mut self, name: &str) -> Result<(), AmqpError> {
        if name.is_empty() || name.starts_with("amq.") {
            return Ok(());
        }
        self.permit(Resource::Exchange, name, Op::Configure)
    }

    /// queue.declare (not passive): configure on it; when it is new and names a dead-letter
    /// exchange, read on the queue and write on that exchange.
    pub(super) fn permit_queue_declare(
        &mut self,
        def: &QueueDef,
        server_named: bool,
    ) -> Result<(), AmqpError> {
        if !server_named && def.name.starts_with("amq.") {
            return Ok(()); // refused for the reserved prefix, as RabbitMQ does first
        }
        self.permit(Resource::Queue, &def.name, Op::Configure)?;
        if self.broker.queue(&self.vhost, &def.name).is_some() {
            return Ok(());
        }
        if let Some(dlx) = text_argument(&def.arguments, "x-dead-letter-exchange") {
            self.permit(Resource::Queue, &def.name, Op::Read)?;
            self.permit(Resource::Exchange, &dlx, Op::Write)?;
        }
        Ok(())
    }

    /// queue.bind / exchange.bind and their unbinds: write on the destination, read on the
    /// source, and the topic permission (read) on the key if the source is a topic exchange.
    pub(super) fn permit_binding(&mut self, binding: &Binding) -> Result<(), AmqpError> {
        match &binding.destination {
            Destination::Queue(q) => self.permit(Resource::Queue, q, Op::Write)?,
            Destination::Exchange(x) => self.permit(Resource::Exchange, x, Op::Write)?,
        }
        let source = &binding.source;
        if source.is_empty() {
            return Ok(()); // refused as the default exchange
        }
        self.permit(Resource::Exchange, source, Op::Read)?;
        let view = self.broker.routing_view();
        let def = view.snapshot.exchange(&self.vhost, source);
        if def.is_some_and(|d| d.kind == ExchangeKind::Topic) {
            let key = binding.routing_key.as_str();
            self.authz
                .check_topic(&self.broker, source, key, Op::Read)?;
        }
        Ok(())
    }
}

/// A string-valued x-argument (longstr, or bytes as some clients send them).
fn text_argument(args: &FieldTable, key: &str) -> Option<String> {
    match args.get(key)? {
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        _ => None,
    }
}
