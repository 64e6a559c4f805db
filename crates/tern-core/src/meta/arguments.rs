//! Queue arguments a new queue is refused for, as `rabbit_amqqueue:check_declare_arguments`
//! refuses them: 406 `invalid arg 'x-…' for queue 'q' in vhost '/': <reason>`, the reason
//! printed as the Erlang term RabbitMQ prints.

use tern_amqp::{AmqpError, FieldTable, FieldValue};

use super::validate::{exchange_name_argument, precondition_failed, rs};
use super::QueueDef;
use crate::names::VhostName;
use crate::routing::type_name;

/// Largest `x-expires` / `x-message-ttl`, in milliseconds (`?MAX_EXPIRY_TIMER`).
const MAX_EXPIRY_MS: i128 = 4_294_967_295;
/// Largest `x-max-priority` (`?MAX_SUPPORTED_PRIORITY`).
const MAX_PRIORITY: i128 = 255;

type Check = fn(&FieldValue, &FieldTable) -> Result<(), String>;

/// (argument, check), in the order RabbitMQ checks them.
const CHECKS: &[(&str, Check)] = &[
    ("x-expires", check_expires),
    ("x-message-ttl", check_message_ttl),
    ("x-dead-letter-exchange", check_string),
    ("x-dead-letter-routing-key", check_dead_letter_routing_key),
    ("x-dead-letter-strategy", check_dead_letter_strategy),
    ("x-max-length", check_non_negative),
    ("x-max-length-bytes", check_non_negative),
    ("x-max-in-memory-length", check_non_negative),
    ("x-max-in-memory-bytes", check_non_negative),
    ("x-max-priority", check_max_priority),
    ("x-overflow", check_overflow),
    ("x-queue-mode", check_queue_mode),
    ("x-queue-version", check_queue_version),
    ("x-queue-master-locator", check_master_locator),
    ("x-queue-leader-locator", check_leader_locator),
    ("x-single-active-consumer", check_bool),
    ("x-queue-type", check_queue_type),
    ("x-quorum-initial-group-size", check_positive_size),
    ("x-stream-max-segment-size-bytes", check_non_negative),
    ("x-initial-cluster-size", check_positive_size),
];

/// Checks for a queue about to be created.
pub(crate) fn validate_new_queue(def: &QueueDef, vhost: &VhostName) -> Result<(), AmqpError> {
    let resource = rs("queue", &def.name, vhost);
    // rabbit_channel checks the dead-letter exchange's type before rabbit_amqqueue looks.
    exchange_name_argument(&def.arguments, "x-dead-letter-exchange", &resource)?;
    let queue_type = CHECKS.iter().filter(|(key, _)| *key == "x-queue-type");
    let others = CHECKS.iter().filter(|(key, _)| *key != "x-queue-type");
    for (key, check) in queue_type.chain(others) {
        if let Some(value) = def.arguments.get(key) {
            check(value, &def.arguments).map_err(|reason| {
                precondition_failed(format!("invalid arg '{key}' for {resource}: {reason}"))
            })?;
        }
    }
    Ok(())
}

fn integer(v: &FieldValue) -> Result<i128, String> {
    match *v {
        FieldValue::I8(n) => Ok(n.into()),
        FieldValue::U8(n) => Ok(n.into()),
        FieldValue::I16(n) => Ok(n.into()),
        FieldValue::U16(n) => Ok(n.into()),
        FieldValue::I32(n) => Ok(n.into()),
        FieldValue::U32(n) => Ok(n.into()),
        FieldValue::I64(n) => Ok(n.into()),
        FieldValue::U64(n) => Ok(n.into()),
        // An Erlang string printed with ~p: in double quotes.
        ref other => Err(format!("\"expected integer, got {}\"", type_name(other))),
    }
}

fn unacceptable(v: &FieldValue) -> String {
    format!("{{unacceptable_type,{}}}", type_name(v))
}

fn long_str(v: &FieldValue) -> Result<&[u8], String> {
    match v {
        FieldValue::LongStr(b) => Ok(b),
        other => Err(unacceptable(other)),
    }
}

fn one_of(
    v: &FieldValue,
    allowed: &[&str],
    reason: impl FnOnce(&str) -> String,
) -> Result<(), String> {
    let s = long_str(v)?;
    if allowed.iter().any(|a| a.as_bytes() == s) {
        return Ok(());
    }
    Err(reason(&String::from_utf8_lossy(s)))
}

fn check_expiry(n: i128) -> Result<(), String> {
    if n < 0 {
        Err(format!("{{value_negative,{n}}}"))
    } else if n > MAX_EXPIRY_MS {
        Err(format!("{{value_too_large,{n}}}"))
    } else {
        Ok(())
    }
}

fn check_expires(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    match integer(v)? {
        0 => Err("{value_zero,0}".to_string()),
        n => check_expiry(n),
    }
}

fn check_message_ttl(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    check_expiry(integer(v)?)
}

fn check_non_negative(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    match integer(v)? {
        n if n < 0 => Err(format!("{{value_negative,{n}}}")),
        _ => Ok(()),
    }
}

fn check_max_priority(v: &FieldValue, args: &FieldTable) -> Result<(), String> {
    check_non_negative(v, args)?;
    match integer(v)? {
        n if n > MAX_PRIORITY => Err(format!("{{max_value_exceeded,{n}}}")),
        _ => Ok(()),
    }
}

fn check_positive_size(v: &FieldValue, args: &FieldTable) -> Result<(), String> {
    check_non_negative(v, args)?;
    match integer(v)? {
        0 => Err("{value_zero,0}".to_string()),
        _ => Ok(()),
    }
}

fn check_string(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    long_str(v).map(drop)
}

fn check_bool(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    match v {
        FieldValue::Bool(_) => Ok(()),
        other => Err(unacceptable(other)),
    }
}

fn check_dead_letter_routing_key(v: &FieldValue, args: &FieldTable) -> Result<(), String> {
    long_str(v)?;
    match args.get("x-dead-letter-exchange") {
        Some(_) => Ok(()),
        None => Err("routing_key_but_no_dlx_defined".to_string()),
    }
}

fn check_dead_letter_strategy(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    one_of(v, &["at-most-once", "at-least-once"], |_| {
        "invalid_dlx_strategy".to_string()
    })
}

fn check_overflow(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    let modes = ["drop-head", "reject-publish", "reject-publish-dlx"];
    one_of(v, &modes, |_| "invalid_overflow".to_string())
}

/// Where a new queue's home is chosen (`x-queue-leader-locator`): the node the declaring
/// client is connected to, or the one with the fewest queues.
pub const LEADER_LOCATORS: [&str; 2] = ["client-local", "balanced"];
/// The classic queues' older argument: `min-masters` and `random` pick as `balanced` does.
pub const MASTER_LOCATORS: [&str; 3] = ["client-local", "min-masters", "random"];

fn check_leader_locator(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    one_of(v, &LEADER_LOCATORS, |_| {
        "invalid_queue_locator_arg".to_string()
    })
}

fn check_master_locator(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    one_of(v, &MASTER_LOCATORS, |_| {
        "invalid_queue_locator_arg".to_string()
    })
}

fn check_queue_mode(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    one_of(v, &["default", "lazy"], |m| {
        format!("\"unsupported queue mode '{m}'\"")
    })
}

fn check_queue_type(v: &FieldValue, _: &FieldTable) -> Result<(), String> {
    one_of(v, &["classic", "quorum", "stream"], |t| {
        format!("\"unsupported queue type '{t}'\"")
    })
}

fn check_queue_version(v: &FieldValue, args: &FieldTable) -> Result<(), String> {
    check_non_negative(v, args)?;
    match integer(v)? {
        1 | 2 => Ok(()),
        n => Err(format!("\"unsupported queue version '{n}'\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::QueueName;
    use bytes::Bytes;

    fn declare(args: &[(&str, FieldValue)]) -> Result<(), AmqpError> {
        let mut arguments = FieldTable::new();
        for (k, v) in args {
            arguments.insert(*k, v.clone());
        }
        let def = QueueDef {
            name: QueueName::from("q"),
            durable: false,
            exclusive_owner: None,
            home: None,
            auto_delete: false,
            arguments,
        };
        validate_new_queue(&def, &VhostName::from("/"))
    }

    fn s(v: &'static str) -> FieldValue {
        FieldValue::LongStr(Bytes::from_static(v.as_bytes()))
    }

    #[test]
    fn good_arguments_pass() {
        let args = [
            ("x-expires", FieldValue::I32(1000)),
            ("x-message-ttl", FieldValue::I64(0)),
            ("x-dead-letter-exchange", s("dlx")),
            ("x-dead-letter-routing-key", s("rk")),
            ("x-max-length", FieldValue::U8(10)),
            ("x-max-priority", FieldValue::I16(10)),
            ("x-overflow", s("reject-publish")),
            ("x-single-active-consumer", FieldValue::Bool(true)),
            ("x-queue-type", s("classic")),
            ("x-queue-leader-locator", s("balanced")),
            ("x-queue-master-locator", s("min-masters")),
            ("x-custom", s("anything")),
        ];
        assert_eq!(declare(&args), Ok(()));
    }

    #[test]
    fn bad_arguments_are_refused_with_rabbitmq_texts() {
        use FieldValue::{Bool, I32, I64};
        let prefix = "invalid arg";
        let cases: Vec<(Vec<(&str, FieldValue)>, String)> = vec![
            (vec![("x-max-length", I32(-1))], format!("{prefix} 'x-max-length' for queue 'q' in vhost '/': {{value_negative,-1}}")),
            (vec![("x-max-length", s("10"))], format!("{prefix} 'x-max-length' for queue 'q' in vhost '/': \"expected integer, got longstr\"")),
            (vec![("x-expires", I32(0))], format!("{prefix} 'x-expires' for queue 'q' in vhost '/': {{value_zero,0}}")),
            (vec![("x-message-ttl", I64(5_000_000_000))], format!("{prefix} 'x-message-ttl' for queue 'q' in vhost '/': {{value_too_large,5000000000}}")),
            (vec![("x-max-priority", I32(256))], format!("{prefix} 'x-max-priority' for queue 'q' in vhost '/': {{max_value_exceeded,256}}")),
            (vec![("x-overflow", s("drop-tail"))], format!("{prefix} 'x-overflow' for queue 'q' in vhost '/': invalid_overflow")),
            (vec![("x-queue-leader-locator", s("random"))], format!("{prefix} 'x-queue-leader-locator' for queue 'q' in vhost '/': invalid_queue_locator_arg")),
            (vec![("x-queue-master-locator", I32(1))], format!("{prefix} 'x-queue-master-locator' for queue 'q' in vhost '/': {{unacceptable_type,signedint}}")),
            (vec![("x-single-active-consumer", s("true"))], format!("{prefix} 'x-single-active-consumer' for queue 'q' in vhost '/': {{unacceptable_type,longstr}}")),
            (vec![("x-queue-type", s("fancy"))], format!("{prefix} 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'fancy'\"")),
            (vec![("x-dead-letter-routing-key", s("rk"))], format!("{prefix} 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined")),
            (vec![("x-dead-letter-exchange", I32(1))], "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'".to_string()),
            // x-queue-type is checked before everything else.
            (vec![("x-max-length", I32(-1)), ("x-queue-type", Bool(true))], format!("{prefix} 'x-queue-type' for queue 'q' in vhost '/': {{unacceptable_type,bool}}")),
        ];
        for (args, text) in cases {
            let err = declare(&args).unwrap_err();
            assert_eq!(
                err.code,
                tern_amqp::ReplyCode::PreconditionFailed,
                "{args:?}"
            );
            assert_eq!(err.message, text);
        }
    }
}
