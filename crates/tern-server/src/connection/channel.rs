//! Per-channel state, and the channel, access, exchange and queue class methods.

use std::collections::HashMap;
use std::sync::Arc;

use tern_amqp::{
    AccessRequestOk, AmqpError, ChannelFlowOk, ExchangeBind, ExchangeDeclare, ExchangeDelete,
    ExchangeUnbind, FieldTable, Method, QueueBind, QueueDeclare, QueueDeclareOk, QueueDelete,
    QueueDeleteOk, QueuePurge, QueuePurgeOk, QueueUnbind, ReplyCode, ShortStr,
};
use tern_core::meta::access::{Op, Resource};
use tern_core::meta::{Binding, ExchangeDef, MetaCommand, MetaOutcome, QueueDef};
use tern_core::names::{ChannelKey, ConsumerId, ExchangeName, QueueName};
use tern_core::queue::ChannelCredit;
use tern_core::routing::{Destination, ExchangeKind};

use super::basic::{ConfirmState, PartialPublish, TxBuffer};
use super::deliver::Unacked;
use super::reply_to::{is_reply_queue, ReplyConsumer};
use super::Connection;
use crate::broker::no_queue;
use crate::queue_actor::{QueueCmd, QueueHandle};

pub struct Channel {
    pub key: ChannelKey,
    /// We sent channel.close and wait for close-ok: everything else is dropped.
    pub closing: bool,
    pub confirm: Option<ConfirmState>,
    pub tx: Option<TxBuffer>,
    pub publishing: Option<PartialPublish>,
    /// basic.qos prefetch_count for consumers started from now on (global = false).
    pub consumer_prefetch: u16,
    /// basic.qos with global = true: one limit shared by the channel's consumers.
    pub channel_credit: Option<Arc<ChannelCredit>>,
    pub unacked: Unacked,
    /// Queues this channel consumed or got from: told when the channel closes.
    pub queues: Vec<QueueHandle>,
    pub consumer_tags: HashMap<ShortStr, ConsumerId>,
    /// The queue this channel declared last: what an empty queue name means in queue.bind,
    /// unbind, purge, delete, basic.consume and basic.get (RabbitMQ's
    /// most_recently_declared_queue).
    pub last_declared: Option<QueueName>,
    pub reply_consumer: Option<ReplyConsumer>,
}

impl Channel {
    pub fn new(key: ChannelKey) -> Self {
        Channel {
            key,
            closing: false,
            confirm: None,
            tx: None,
            publishing: None,
            consumer_prefetch: 0,
            channel_credit: None,
            unacked: Unacked::default(),
            queues: Vec::new(),
            consumer_tags: HashMap::new(),
            last_declared: None,
            reply_consumer: None,
        }
    }

    /// Index of `queue` in this channel's queue list, adding it if new.
    pub fn queue_slot(&mut self, queue: &QueueHandle) -> usize {
        if let Some(i) = self.queues.iter().position(|q| q.same(queue)) {
            return i;
        }
        self.queues.push(queue.clone());
        self.queues.len() - 1
    }
}

fn err(code: ReplyCode, text: impl Into<String>, class_id: u16, method_id: u16) -> AmqpError {
    AmqpError::new(code, text).on(class_id, method_id)
}

impl Connection {
    /// Methods on channels 1..=channel_max.
    pub(super) async fn handle_channel_method(
        &mut self,
        ch: u16,
        method: Method,
    ) -> Result<(), AmqpError> {
        let (class_id, method_id) = (method.class_id(), method.method_id());
        match self.channels.get(&ch) {
            None => return self.handle_unopened(ch, method),
            Some(c) if c.closing => return self.handle_on_closing(ch, method),
            Some(c) if c.publishing.is_some() => {
                let text = format!(
                    "expected content header for class 60, got {}",
                    method.name()
                );
                return Err(err(ReplyCode::UnexpectedFrame, text, class_id, method_id));
            }
            Some(_) => {}
        }
        if !matches!(method, Method::BasicPublish(_) | Method::BasicAck(_)) {
            // Keep queue commands in the order the client sent them.
            self.flush_pending().await;
        }
        let result = self.dispatch_method(ch, method).await;
        result.map_err(|e| {
            if e.class_id == 0 {
                e.on(class_id, method_id)
            } else {
                e
            }
        })
    }

    async fn dispatch_method(&mut self, ch: u16, method: Method) -> Result<(), AmqpError> {
        match method {
            Method::ChannelOpen(_) => Err(err(
                ReplyCode::ChannelError,
                "second 'channel.open' seen",
                20,
                10,
            )),
            Method::ChannelClose(_) => {
                self.send_method(ch, &Method::ChannelCloseOk(Default::default()));
                self.remove_channel(ch).await;
                Ok(())
            }
            Method::ChannelCloseOk(_) => Ok(()),
            Method::ChannelFlow(f) if f.active => {
                self.send_method(ch, &Method::ChannelFlowOk(ChannelFlowOk { active: true }));
                Ok(())
            }
            Method::ChannelFlow(_) => Err(err(ReplyCode::NotImplemented, "active=false", 20, 20)),
            Method::AccessRequest(_) => {
                self.send_method(ch, &Method::AccessRequestOk(AccessRequestOk { ticket: 1 }));
                Ok(())
            }
            Method::ExchangeDeclare(m) => self.exchange_declare(ch, m).await,
            Method::ExchangeDelete(m) => self.exchange_delete(ch, m).await,
            Method::ExchangeBind(m) => self.exchange_bind(ch, m).await,
            Method::ExchangeUnbind(m) => self.exchange_unbind(ch, m).await,
            Method::QueueDeclare(m) => self.queue_declare(ch, m).await,
            Method::QueueBind(m) => self.queue_bind(ch, m).await,
            Method::QueueUnbind(m) => self.queue_unbind(ch, m).await,
            Method::QueuePurge(m) => self.queue_purge(ch, m).await,
            Method::QueueDelete(m) => self.queue_delete(ch, m).await,
            other => self.handle_basic_method(ch, other).await,
        }
    }

    fn handle_unopened(&mut self, ch: u16, method: Method) -> Result<(), AmqpError> {
        match method {
            Method::ChannelOpen(_) if ch > self.channel_max => {
                let text = format!(
                    "channel {ch} exceeds the negotiated channel_max {}",
                    self.channel_max
                );
                Err(err(ReplyCode::NotAllowed, text, 20, 10))
            }
            Method::ChannelOpen(_) => {
                let key = ChannelKey(self.broker.next_id());
                self.channels.insert(ch, Channel::new(key));
                self.count_channels();
                self.send_method(ch, &Method::ChannelOpenOk(Default::default()));
                Ok(())
            }
            // A close for a channel that is already gone: answer it (RabbitMQ does).
            Method::ChannelClose(_) => {
                self.send_method(ch, &Method::ChannelCloseOk(Default::default()));
                Ok(())
            }
            Method::ChannelCloseOk(_) => Ok(()),
            other => {
                let text = format!(
                    "expected 'channel.open' on channel {ch}, got {}",
                    other.name()
                );
                Err(err(
                    ReplyCode::ChannelError,
                    text,
                    other.class_id(),
                    other.method_id(),
                ))
            }
        }
    }

    /// After we sent channel.close: wait for close-ok, answer a crossing close, drop the rest.
    fn handle_on_closing(&mut self, ch: u16, method: Method) -> Result<(), AmqpError> {
        match method {
            Method::ChannelCloseOk(_) => {
                self.channels.remove(&ch);
                self.count_channels();
            }
            Method::ChannelClose(_) => {
                self.send_method(ch, &Method::ChannelCloseOk(Default::default()));
                self.channels.remove(&ch);
                self.count_channels();
            }
            _ => {}
        }
        Ok(())
    }

    fn reply(&mut self, ch: u16, nowait: bool, method: Method) {
        if !nowait {
            self.send_method(ch, &method);
        }
    }

    async fn exchange_declare(&mut self, ch: u16, m: ExchangeDeclare) -> Result<(), AmqpError> {
        let kind = match ExchangeKind::parse(m.kind.as_str()) {
            Some(kind) => kind,
            None if m.passive => ExchangeKind::Direct,
            None => {
                let text = format!("unknown exchange type '{}'", m.kind);
                return Err(err(ReplyCode::CommandInvalid, text, 40, 10));
            }
        };
        let def = ExchangeDef {
            name: ExchangeName::from(strip_cr_lf(m.exchange)),
            kind,
            durable: m.durable,
            auto_delete: m.auto_delete,
            internal: m.internal,
            arguments: m.arguments,
        };
        if !m.passive {
            self.permit_exchange_declare(&def)?;
        }
        let vhost = self.vhost.clone();
        self.broker
            .apply(MetaCommand::DeclareExchange {
                vhost,
                def,
                passive: m.passive,
            })
            .await?;
        self.reply(ch, m.nowait, Method::ExchangeDeclareOk(Default::default()));
        Ok(())
    }

    async fn exchange_delete(&mut self, ch: u16, m: ExchangeDelete) -> Result<(), AmqpError> {
        self.permit_exchange_delete(&m.exchange)?;
        let cmd = MetaCommand::DeleteExchange {
            vhost: self.vhost.clone(),
            name: ExchangeName::from(m.exchange),
            if_unused: m.if_unused,
        };
        self.broker.apply(cmd).await?;
        self.reply(ch, m.nowait, Method::ExchangeDeleteOk(Default::default()));
        Ok(())
    }

    async fn exchange_bind(&mut self, ch: u16, m: ExchangeBind) -> Result<(), AmqpError> {
        let binding = exchange_binding(m.source, m.destination, m.routing_key, m.arguments);
        self.permit_binding(&binding)?;
        self.broker
            .apply(MetaCommand::Bind {
                vhost: self.vhost.clone(),
                binding,
            })
            .await?;
        self.reply(ch, m.nowait, Method::ExchangeBindOk(Default::default()));
        Ok(())
    }

    async fn exchange_unbind(&mut self, ch: u16, m: ExchangeUnbind) -> Result<(), AmqpError> {
        let binding = exchange_binding(m.source, m.destination, m.routing_key, m.arguments);
        self.permit_binding(&binding)?;
        self.broker
            .apply(MetaCommand::Unbind {
                vhost: self.vhost.clone(),
                binding,
            })
            .await?;
        self.reply(ch, m.nowait, Method::ExchangeUnbindOk(Default::default()));
        Ok(())
    }

    /// `name`, or the channel's last declared queue when `name` is empty.
    pub(super) fn expand_queue_name(
        &self,
        ch: u16,
        name: ShortStr,
    ) -> Result<QueueName, AmqpError> {
        if !name.is_empty() {
            return Ok(QueueName::from(name));
        }
        let last = self.channels.get(&ch).and_then(|c| c.last_declared.clone());
        last.ok_or_else(|| AmqpError::new(ReplyCode::NotFound, "no previously declared queue"))
    }

    async fn queue_declare(&mut self, ch: u16, m: QueueDeclare) -> Result<(), AmqpError> {
        if is_reply_queue(&m.queue) {
            self.declare_reply_queue(ch, &m.queue, m.nowait)?;
            if let Some(c) = self.channels.get_mut(&ch) {
                c.last_declared = Some(QueueName::from(m.queue));
            }
            return Ok(());
        }
        let server_named = m.queue.is_empty() && !m.passive;
        let name = if server_named {
            QueueName::from(generated_queue_name(self.broker.next_id()).as_str())
        } else {
            QueueName::from(strip_cr_lf(m.queue))
        };
        if name.is_empty() {
            // Passive declare of "" refers to the channel's last declared queue in RabbitMQ;
            // we keep no such state, so it is simply not found.
            return Err(no_queue(&self.vhost, &name).on(50, 10));
        }
        let def = QueueDef {
            name: name.clone(),
            durable: m.durable,
            exclusive_owner: m.exclusive.then_some(self.id),
            home: None,
            auto_delete: m.auto_delete,
            arguments: m.arguments,
        };
        if !m.passive {
            self.permit_queue_declare(&def, server_named)?;
        }
        let cmd = MetaCommand::DeclareQueue {
            vhost: self.vhost.clone(),
            def,
            passive: m.passive,
            server_named,
            requester: self.id,
        };
        let outcome = self.broker.apply(cmd).await?;
        let created = matches!(outcome, MetaOutcome::QueueDeclared { created: true, .. });
        if let Some(c) = self.channels.get_mut(&ch) {
            c.last_declared = Some(name.clone());
        }
        let queue = self
            .broker
            .queue(&self.vhost, &name)
            .ok_or_else(|| no_queue(&self.vhost, &name))?;
        if let Some(down) = queue.unreachable() {
            return Err(down.on(50, 10));
        }
        // A queue just created has nothing yet: no need to wait for its actor (a durable
        // one creates its files first).
        let stats = match created {
            true => Default::default(),
            false => queue
                .ask(|reply| QueueCmd::Stats { reply })
                .await
                .unwrap_or_default(),
        };
        let ok = QueueDeclareOk {
            queue: name.0.clone(),
            message_count: stats.messages,
            consumer_count: stats.consumers,
        };
        self.reply(ch, m.nowait, Method::QueueDeclareOk(ok));
        Ok(())
    }

    /// queue.bind / unbind with both the queue name and the key empty bind with the last
    /// declared queue's name as the key.
    fn expand_routing_key(
        &self,
        ch: u16,
        queue: &ShortStr,
        key: ShortStr,
    ) -> Result<ShortStr, AmqpError> {
        if queue.is_empty() && key.is_empty() {
            return Ok(self.expand_queue_name(ch, key)?.0);
        }
        Ok(key)
    }

    /// The queue, if it exists and this connection may use it (405 for another's exclusive queue).
    pub(super) fn usable_queue(&self, name: &QueueName) -> Result<QueueHandle, AmqpError> {
        let queue = self
            .broker
            .queue(&self.vhost, name)
            .ok_or_else(|| no_queue(&self.vhost, name))?;
        if let Some(down) = queue.unreachable() {
            return Err(down);
        }
        match queue.def().exclusive_owner {
            Some(owner) if owner != self.id => {
                let text = format!(
                    "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                    self.vhost
                );
                Err(AmqpError::new(ReplyCode::ResourceLocked, text))
            }
            _ => Ok(queue),
        }
    }

    async fn queue_bind(&mut self, ch: u16, m: QueueBind) -> Result<(), AmqpError> {
        let key = self.expand_routing_key(ch, &m.queue, m.routing_key)?;
        let queue = self.expand_queue_name(ch, m.queue)?;
        if self.broker.queue(&self.vhost, &queue).is_some() {
            self.usable_queue(&queue)?;
        }
        let binding = queue_binding(m.exchange, queue, key, m.arguments);
        self.permit_binding(&binding)?;
        self.broker
            .apply(MetaCommand::Bind {
                vhost: self.vhost.clone(),
                binding,
            })
            .await?;
        self.reply(ch, m.nowait, Method::QueueBindOk(Default::default()));
        Ok(())
    }

    async fn queue_unbind(&mut self, ch: u16, m: QueueUnbind) -> Result<(), AmqpError> {
        let key = self.expand_routing_key(ch, &m.queue, m.routing_key)?;
        let queue = self.expand_queue_name(ch, m.queue)?;
        if self.broker.queue(&self.vhost, &queue).is_some() {
            self.usable_queue(&queue)?;
        }
        let binding = queue_binding(m.exchange, queue, key, m.arguments);
        self.permit_binding(&binding)?;
        self.broker
            .apply(MetaCommand::Unbind {
                vhost: self.vhost.clone(),
                binding,
            })
            .await?;
        self.reply(ch, false, Method::QueueUnbindOk(Default::default()));
        Ok(())
    }

    async fn queue_purge(&mut self, ch: u16, m: QueuePurge) -> Result<(), AmqpError> {
        let name = self.expand_queue_name(ch, m.queue)?;
        self.permit(Resource::Queue, &name, Op::Read)?;
        let queue = self.usable_queue(&name)?;
        let message_count = queue
            .ask(|reply| QueueCmd::Purge { reply })
            .await
            .unwrap_or(0);
        self.reply(
            ch,
            m.nowait,
            Method::QueuePurgeOk(QueuePurgeOk { message_count }),
        );
        Ok(())
    }

    async fn queue_delete(&mut self, ch: u16, m: QueueDelete) -> Result<(), AmqpError> {
        let name = self.expand_queue_name(ch, m.queue)?;
        self.permit(Resource::Queue, &name, Op::Configure)?;
        let message_count = match self.broker.queue(&self.vhost, &name) {
            // Deleting a queue that does not exist succeeds, as in RabbitMQ 3.x.
            None => 0,
            Some(_) => {
                let queue = self.usable_queue(&name)?;
                let (if_unused, if_empty) = (m.if_unused, m.if_empty);
                match queue
                    .ask(|reply| QueueCmd::Delete {
                        if_unused,
                        if_empty,
                        reply,
                    })
                    .await
                {
                    Ok(result) => result?,
                    Err(_) => 0,
                }
            }
        };
        self.reply(
            ch,
            m.nowait,
            Method::QueueDeleteOk(QueueDeleteOk { message_count }),
        );
        Ok(())
    }
}

/// RabbitMQ drops CR and LF from the names given to queue.declare and exchange.declare.
fn strip_cr_lf(name: ShortStr) -> ShortStr {
    if name.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n')) {
        ShortStr::from(name.replace(['\r', '\n'], ""))
    } else {
        name
    }
}

fn exchange_binding(
    source: ShortStr,
    destination: ShortStr,
    key: ShortStr,
    args: FieldTable,
) -> Binding {
    Binding {
        source: ExchangeName::from(source),
        destination: Destination::Exchange(ExchangeName::from(destination)),
        routing_key: key,
        arguments: args,
    }
}

fn queue_binding(exchange: ShortStr, queue: QueueName, key: ShortStr, args: FieldTable) -> Binding {
    Binding {
        source: ExchangeName::from(exchange),
        destination: Destination::Queue(queue),
        routing_key: key,
        arguments: args,
    }
}

/// `amq.gen-` followed by 22 URL-safe base64 characters, like RabbitMQ's server-named queues.
pub fn generated_queue_name(seed: u64) -> String {
    format!("amq.gen-{}", crate::token::random_token(seed, 22))
}
