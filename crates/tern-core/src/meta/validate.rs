//! The errors definitions are refused with, worded as RabbitMQ words them, and the equivalence
//! checks a redeclare must pass (`rabbit_exchange:assert_equivalence`,
//! `rabbit_amqqueue:assert_equivalence`, `rabbit_misc:assert_args_equivalence`).

use tern_amqp::{AmqpError, FieldTable, FieldValue, ReplyCode};

use super::{ExchangeDef, QueueDef};
use crate::names::VhostName;
use crate::routing::{plain_value, type_name, validate_hash_exchange, values_equal, ExchangeKind};

/// A resource as RabbitMQ names it in texts (`rabbit_misc:rs/1`): `queue 'q' in vhost '/'`.
pub(crate) fn rs(kind: &str, name: &str, vhost: &VhostName) -> String {
    format!("{kind} '{name}' in vhost '{vhost}'")
}

pub(crate) fn precondition_failed(text: String) -> AmqpError {
    AmqpError::new(ReplyCode::PreconditionFailed, text)
}

pub(crate) fn no_queue(vhost: &VhostName, name: &str) -> AmqpError {
    AmqpError::new(
        ReplyCode::NotFound,
        format!("no {}", rs("queue", name, vhost)),
    )
}

/// A command for a vhost that does not exist (it was deleted under an open connection).
pub(crate) fn no_vhost(vhost: &VhostName) -> AmqpError {
    AmqpError::new(ReplyCode::NotAllowed, format!("vhost '{vhost}' not found"))
}

pub(crate) fn default_exchange_refused() -> AmqpError {
    AmqpError::new(
        ReplyCode::AccessRefused,
        "operation not permitted on the default exchange",
    )
}

pub(crate) fn reserved_name(kind: &str, name: &str) -> AmqpError {
    let text = format!("{kind} name '{name}' contains reserved prefix 'amq.*'");
    AmqpError::new(ReplyCode::AccessRefused, text)
}

pub(crate) fn system_exchange_deletion(vhost: &VhostName, name: &str) -> AmqpError {
    let text = format!(
        "deletion of system {} not allowed",
        rs("exchange", name, vhost)
    );
    AmqpError::new(ReplyCode::AccessRefused, text)
}

pub(crate) fn in_use(vhost: &VhostName, name: &str) -> AmqpError {
    precondition_failed(format!("{} in use", rs("exchange", name, vhost)))
}

/// 405 for a queue another connection holds exclusively (or whose exclusivity differs).
pub(crate) fn resource_locked(vhost: &VhostName, name: &str) -> AmqpError {
    let text = format!(
        "cannot obtain exclusive access to locked {}. It could be originally declared on \
         another connection or the exclusive property value does not match that of the \
         original declaration.",
        rs("queue", name, vhost)
    );
    AmqpError::new(ReplyCode::ResourceLocked, text)
}

/// An Erlang atom as `~tp` prints it: quoted unless it is a plain lower-case word.
fn atom(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@');
    if plain {
        name.to_string()
    } else {
        format!("'{name}'")
    }
}

/// An argument as `rabbit_misc:val/1` prints it.
fn argument_text(value: Option<&FieldValue>) -> String {
    match value {
        None => "none".to_string(),
        Some(v) => format!("the value '{}' of type '{}'", plain_value(v), type_name(v)),
    }
}

fn inequivalent(key: &str, resource: &str, received: &str, current: &str) -> AmqpError {
    precondition_failed(format!(
        "inequivalent arg '{key}' for {resource}: received {received} but current is {current}"
    ))
}

fn same_field(key: &str, resource: &str, current: bool, received: bool) -> Result<(), AmqpError> {
    if current == received {
        return Ok(());
    }
    Err(inequivalent(
        key,
        resource,
        &format!("'{received}'"),
        &format!("'{current}'"),
    ))
}

/// Integers of any width (and decimals) are one class, floats another, as `type_class/1` says.
fn type_class(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::I8(_)
        | FieldValue::U8(_)
        | FieldValue::I16(_)
        | FieldValue::U16(_)
        | FieldValue::I32(_)
        | FieldValue::U32(_)
        | FieldValue::I64(_)
        | FieldValue::U64(_)
        | FieldValue::Decimal(_) => "int",
        FieldValue::F32(_) | FieldValue::F64(_) => "float",
        other => type_name(other),
    }
}

fn same_argument(key: &str, current: Option<&FieldValue>, received: Option<&FieldValue>) -> bool {
    let is_classic =
        |v: Option<&FieldValue>| matches!(v, Some(FieldValue::LongStr(b)) if &b[..] == b"classic");
    match (current, received) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b || (type_class(a) == type_class(b) && values_equal(a, b)),
        // A classic queue need not carry x-queue-type (rabbitmq-common#341).
        (None, v) | (v, None) => key == "x-queue-type" && is_classic(v),
    }
}

/// Compare the arguments under `keys` only, in that order, reporting the first difference.
fn same_arguments(
    resource: &str,
    current: &FieldTable,
    received: &FieldTable,
    keys: &[&str],
) -> Result<(), AmqpError> {
    for key in keys {
        let (c, r) = (current.get(key), received.get(key));
        if !same_argument(key, c, r) {
            return Err(inequivalent(
                key,
                resource,
                &argument_text(r),
                &argument_text(c),
            ));
        }
    }
    Ok(())
}

pub(crate) fn exchange_equivalent(
    current: &ExchangeDef,
    wanted: &ExchangeDef,
    vhost: &VhostName,
) -> Result<(), AmqpError> {
    let resource = rs("exchange", &current.name, vhost);
    if current.kind != wanted.kind {
        let received = format!("'{}'", atom(wanted.kind.as_str()));
        let now = format!("'{}'", atom(current.kind.as_str()));
        return Err(inequivalent("type", &resource, &received, &now));
    }
    same_field("durable", &resource, current.durable, wanted.durable)?;
    same_field(
        "auto_delete",
        &resource,
        current.auto_delete,
        wanted.auto_delete,
    )?;
    same_field("internal", &resource, current.internal, wanted.internal)?;
    // "The only arg we care about is alternate-exchange" (rabbit_exchange).
    same_arguments(
        &resource,
        &current.arguments,
        &wanted.arguments,
        &["alternate-exchange"],
    )
}

/// The queue arguments a redeclare must repeat exactly, in the order RabbitMQ checks them.
const QUEUE_EQUIVALENCE_KEYS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
    "x-queue-master-locator",
];

pub(crate) fn queue_equivalent(
    current: &QueueDef,
    wanted: &QueueDef,
    vhost: &VhostName,
) -> Result<(), AmqpError> {
    // Strict: the declared exclusivity (and owner) must be the queue's.
    if current.exclusive_owner != wanted.exclusive_owner {
        return Err(resource_locked(vhost, &current.name));
    }
    let resource = rs("queue", &current.name, vhost);
    same_field("durable", &resource, current.durable, wanted.durable)?;
    same_field(
        "auto_delete",
        &resource,
        current.auto_delete,
        wanted.auto_delete,
    )?;
    same_arguments(
        &resource,
        &current.arguments,
        &wanted.arguments,
        QUEUE_EQUIVALENCE_KEYS,
    )
}

/// An argument naming an exchange must be a long string
/// (`rabbit_misc:r_arg` in `rabbit_channel`).
pub(crate) fn exchange_name_argument(
    arguments: &FieldTable,
    key: &str,
    resource: &str,
) -> Result<(), AmqpError> {
    match arguments.get(key) {
        None | Some(FieldValue::LongStr(_)) => Ok(()),
        Some(other) => Err(precondition_failed(format!(
            "invalid type '{}' for arg '{key}' in {resource}",
            type_name(other)
        ))),
    }
}

/// Checks for an exchange about to be created.
pub(crate) fn new_exchange(def: &ExchangeDef, vhost: &VhostName) -> Result<(), AmqpError> {
    if def.name.starts_with("amq.") {
        return Err(reserved_name("exchange", &def.name));
    }
    let resource = rs("exchange", &def.name, vhost);
    exchange_name_argument(&def.arguments, "alternate-exchange", &resource)?;
    if def.kind == ExchangeKind::ConsistentHash {
        validate_hash_exchange(&def.arguments).map_err(precondition_failed)?;
    }
    Ok(())
}
