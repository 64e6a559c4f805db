//! The vhost-scoped commands, in the order of checks RabbitMQ's `rabbit_channel` makes, so that
//! a command breaking several rules fails with the same error it would there. Every check
//! comes before the first change: a refused command changes nothing.

use tern_amqp::{AmqpError, FieldTable};

use super::validate::{self as v, precondition_failed};
use super::vhost::{Effects, VhostState};
use super::{arguments, Binding, ExchangeDef, MetaOutcome, QueueDef};
use crate::names::{ConnectionId, ExchangeName, QueueName, VhostName};
use crate::routing::{no_exchange, Destination, ExchangeKind};

pub(crate) fn declare_exchange(
    vh: &mut VhostState,
    vhost: &VhostName,
    def: ExchangeDef,
    passive: bool,
    fx: &mut Effects,
) -> Result<MetaOutcome, AmqpError> {
    if def.name.is_empty() {
        return Err(v::default_exchange_refused());
    }
    if passive {
        return match vh.exchange(&def.name) {
            Some(_) => Ok(MetaOutcome::ExchangeDeclared { created: false }),
            None => Err(no_exchange(vhost, &def.name)),
        };
    }
    if let Some(existing) = vh.exchange(&def.name) {
        v::exchange_equivalent(existing, &def, vhost)?;
        return Ok(MetaOutcome::ExchangeDeclared { created: false });
    }
    v::new_exchange(&def, vhost)?;
    vh.insert_exchange(def, fx);
    Ok(MetaOutcome::ExchangeDeclared { created: true })
}

pub(crate) fn delete_exchange(
    vh: &mut VhostState,
    vhost: &VhostName,
    name: &ExchangeName,
    if_unused: bool,
    fx: &mut Effects,
) -> Result<MetaOutcome, AmqpError> {
    if name.is_empty() {
        return Err(v::default_exchange_refused());
    }
    if name.starts_with("amq.") {
        return Err(v::system_exchange_deletion(vhost, name));
    }
    if vh.exchange(name).is_none() {
        // RabbitMQ 3.x and later answer delete-ok for an exchange that does not exist.
        return Ok(MetaOutcome::ExchangeDeleted {
            existed: false,
            auto_deleted: Vec::new(),
        });
    }
    if if_unused && vh.has_bindings_from(name) {
        return Err(v::in_use(vhost, name));
    }
    vh.delete_exchange(name, fx);
    let auto_deleted = std::mem::take(&mut fx.auto_deleted);
    Ok(MetaOutcome::ExchangeDeleted {
        existed: true,
        auto_deleted,
    })
}

/// The arguments of `MetaCommand::DeclareQueue`.
pub(crate) struct QueueDeclare {
    pub(crate) def: QueueDef,
    pub(crate) passive: bool,
    pub(crate) server_named: bool,
    pub(crate) requester: ConnectionId,
}

pub(crate) fn declare_queue(
    vh: &mut VhostState,
    vhost: &VhostName,
    declare: QueueDeclare,
    fx: &mut Effects,
) -> Result<MetaOutcome, AmqpError> {
    let QueueDeclare {
        mut def,
        passive,
        server_named,
        requester,
    } = declare;
    if passive {
        let existing = vh
            .queue(&def.name)
            .ok_or_else(|| v::no_queue(vhost, &def.name))?;
        // Passive declares check exclusivity "lax": only another connection's queue is locked.
        if existing
            .exclusive_owner
            .is_some_and(|owner| owner != requester)
        {
            return Err(v::resource_locked(vhost, &def.name));
        }
        return Ok(MetaOutcome::QueueDeclared {
            created: false,
            def: existing.clone(),
        });
    }
    if def.name.is_empty() {
        return Err(v::no_queue(vhost, &def.name));
    }
    // RabbitMQ: `Durable = DurableDeclare andalso not ExclusiveDeclare`.
    def.durable &= def.exclusive_owner.is_none();
    if def.name.starts_with("amq.") && !server_named {
        return Err(v::reserved_name("queue", &def.name));
    }
    if let Some(existing) = vh.queue(&def.name) {
        v::queue_equivalent(existing, &def, vhost)?;
        return Ok(MetaOutcome::QueueDeclared {
            created: false,
            def: existing.clone(),
        });
    }
    arguments::validate_new_queue(&def, vhost)?;
    vh.insert_queue(def.clone(), fx);
    Ok(MetaOutcome::QueueDeclared { created: true, def })
}

pub(crate) fn delete_queue(vh: &mut VhostState, name: &QueueName, fx: &mut Effects) -> MetaOutcome {
    let existed = vh.delete_queue(name, fx);
    let auto_deleted = std::mem::take(&mut fx.auto_deleted);
    MetaOutcome::QueueDeleted {
        existed,
        auto_deleted,
    }
}

/// Neither end of a binding may be the default exchange (checked destination first).
fn check_not_default(binding: &Binding) -> Result<(), AmqpError> {
    let to_default = matches!(&binding.destination, Destination::Exchange(x) if x.is_empty());
    if to_default || binding.source.is_empty() {
        return Err(v::default_exchange_refused());
    }
    Ok(())
}

pub(crate) fn bind(
    vh: &mut VhostState,
    vhost: &VhostName,
    mut binding: Binding,
    fx: &mut Effects,
) -> Result<MetaOutcome, AmqpError> {
    check_not_default(&binding)?;
    let source = vh
        .exchange(&binding.source)
        .ok_or_else(|| no_exchange(vhost, &binding.source))?;
    if !vh.destination_exists(&binding.destination) {
        return Err(match &binding.destination {
            Destination::Queue(q) => v::no_queue(vhost, q),
            Destination::Exchange(x) => no_exchange(vhost, x),
        });
    }
    validate_binding(source.kind, &binding)?;
    sort_arguments(&mut binding.arguments);
    let created = vh.add_binding(binding, fx);
    Ok(MetaOutcome::Bound { created })
}

/// What the source's exchange type refuses (rabbit_exchange:validate_binding).
fn validate_binding(kind: ExchangeKind, binding: &Binding) -> Result<(), AmqpError> {
    let checked = match kind {
        ExchangeKind::Headers => crate::routing::validate_headers_binding(&binding.arguments),
        ExchangeKind::ConsistentHash => {
            crate::routing::parse_weight(&binding.routing_key).map(drop)
        }
        _ => Ok(()),
    };
    checked.map_err(precondition_failed)
}

/// RabbitMQ keeps binding arguments sorted by key, so argument order does not make a binding.
fn sort_arguments(arguments: &mut FieldTable) {
    arguments.0.sort_by(|a, b| a.0.cmp(&b.0));
}

/// Unbinding what is not bound — even from or to something that does not exist — is fine.
pub(crate) fn unbind(
    vh: &mut VhostState,
    mut binding: Binding,
    fx: &mut Effects,
) -> Result<MetaOutcome, AmqpError> {
    check_not_default(&binding)?;
    sort_arguments(&mut binding.arguments);
    let existed = vh.remove_binding(&binding, fx);
    let auto_deleted = std::mem::take(&mut fx.auto_deleted);
    Ok(MetaOutcome::Unbound {
        existed,
        auto_deleted,
    })
}
