//! Exchange and queue declares and deletes: every way they can be refused, with RabbitMQ's
//! code and text.

use bytes::Bytes;
use tern_amqp::{AmqpError, FieldTable, FieldValue, ReplyCode, ShortStr};

use super::*;

pub(super) fn vh() -> VhostName {
    VhostName::from("/")
}

pub(super) fn s(v: &str) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(v.as_bytes()))
}

pub(super) fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, v) in entries {
        t.insert(*k, v.clone());
    }
    t
}

pub(super) fn xdef(name: &str, kind: ExchangeKind) -> ExchangeDef {
    ExchangeDef {
        name: ExchangeName::from(name),
        kind,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::new(),
    }
}

pub(super) fn qdef(name: &str) -> QueueDef {
    QueueDef {
        name: QueueName::from(name),
        durable: false,
        exclusive_owner: None,
        home: None,
        auto_delete: false,
        arguments: FieldTable::new(),
    }
}

pub(super) fn declare_x(def: ExchangeDef) -> MetaCommand {
    MetaCommand::DeclareExchange {
        vhost: vh(),
        def,
        passive: false,
    }
}

pub(super) fn passive_x(name: &str) -> MetaCommand {
    MetaCommand::DeclareExchange {
        vhost: vh(),
        def: xdef(name, ExchangeKind::Topic),
        passive: true,
    }
}

pub(super) fn delete_x(name: &str, if_unused: bool) -> MetaCommand {
    MetaCommand::DeleteExchange {
        vhost: vh(),
        name: ExchangeName::from(name),
        if_unused,
    }
}

pub(super) fn declare_q(def: QueueDef, conn: u64) -> MetaCommand {
    MetaCommand::DeclareQueue {
        vhost: vh(),
        def,
        passive: false,
        server_named: false,
        requester: ConnectionId(conn),
    }
}

pub(super) fn passive_q(name: &str, conn: u64) -> MetaCommand {
    MetaCommand::DeclareQueue {
        vhost: vh(),
        def: qdef(name),
        passive: true,
        server_named: false,
        requester: ConnectionId(conn),
    }
}

pub(super) fn delete_q(name: &str) -> MetaCommand {
    MetaCommand::DeleteQueue {
        vhost: vh(),
        name: QueueName::from(name),
    }
}

pub(super) fn binding(
    source: &str,
    destination: Destination,
    key: &str,
    args: FieldTable,
) -> Binding {
    Binding {
        source: ExchangeName::from(source),
        destination,
        routing_key: ShortStr::from(key),
        arguments: args,
    }
}

pub(super) fn to_q(name: &str) -> Destination {
    Destination::Queue(QueueName::from(name))
}

pub(super) fn to_x(name: &str) -> Destination {
    Destination::Exchange(ExchangeName::from(name))
}

pub(super) fn bind(source: &str, destination: Destination, key: &str) -> MetaCommand {
    MetaCommand::Bind {
        vhost: vh(),
        binding: binding(source, destination, key, FieldTable::new()),
    }
}

pub(super) fn unbind(source: &str, destination: Destination, key: &str) -> MetaCommand {
    MetaCommand::Unbind {
        vhost: vh(),
        binding: binding(source, destination, key, FieldTable::new()),
    }
}

pub(super) fn ok(meta: &mut Metadata, cmd: MetaCommand) -> MetaOutcome {
    let outcome = meta
        .apply(cmd.clone())
        .unwrap_or_else(|e| panic!("{cmd:?} failed: {e}"));
    meta.vhosts.values().for_each(VhostState::check_invariants);
    outcome
}

/// Applies a command that must fail, checks that it changed nothing, returns the error.
pub(super) fn refused(meta: &mut Metadata, cmd: MetaCommand) -> AmqpError {
    let generation = meta.generation();
    let bindings: Vec<Binding> = meta.bindings(&vh()).cloned().collect();
    let err = meta
        .apply(cmd.clone())
        .expect_err("command should be refused");
    assert_eq!(
        meta.generation(),
        generation,
        "{cmd:?} changed the generation"
    );
    assert_eq!(meta.bindings(&vh()).cloned().collect::<Vec<_>>(), bindings);
    err
}

pub(super) fn assert_error(err: AmqpError, code: ReplyCode, text: &str) {
    assert_eq!(err.code, code, "{err}");
    assert_eq!(err.to_string(), text);
}

#[test]
fn a_new_node_has_the_default_vhost_and_exchanges() {
    let meta = Metadata::new();
    assert!(meta.vhost_exists(&vh()));
    let names: Vec<&str> = meta.exchanges(&vh()).map(|x| x.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "",
            "amq.direct",
            "amq.fanout",
            "amq.headers",
            "amq.match",
            "amq.rabbitmq.trace",
            "amq.topic"
        ]
    );
    assert!(meta.exchanges(&vh()).all(|x| x.durable && !x.auto_delete));
    let default = meta
        .exchange(&vh(), &ExchangeName::from(""))
        .expect("default exchange");
    assert_eq!(default.kind, ExchangeKind::Direct);
    assert_eq!(
        meta.exchange(&vh(), &"amq.match".into()).map(|x| x.kind),
        Some(ExchangeKind::Headers)
    );
    assert_eq!(meta.queues(&vh()).count(), 0);
}

#[test]
fn exchange_declare_creates_once_and_redeclare_is_a_no_op() {
    let mut meta = Metadata::new();
    let g = meta.generation();
    assert_eq!(
        ok(&mut meta, declare_x(xdef("x", ExchangeKind::Topic))),
        MetaOutcome::ExchangeDeclared { created: true }
    );
    assert_eq!(meta.generation(), g + 1);
    assert_eq!(
        ok(&mut meta, declare_x(xdef("x", ExchangeKind::Topic))),
        MetaOutcome::ExchangeDeclared { created: false }
    );
    assert_eq!(meta.generation(), g + 1);
    assert_eq!(
        ok(&mut meta, passive_x("x")),
        MetaOutcome::ExchangeDeclared { created: false }
    );
    // Passive declares ignore every other field.
    assert_eq!(
        ok(&mut meta, passive_x("amq.direct")),
        MetaOutcome::ExchangeDeclared { created: false }
    );
}

#[test]
fn exchange_declare_errors_match_rabbitmq() {
    let mut meta = Metadata::new();
    let mut with_ae = xdef("ae_x", ExchangeKind::Direct);
    with_ae.arguments = table(&[("alternate-exchange", s("ae1"))]);
    ok(&mut meta, declare_x(with_ae.clone()));
    ok(&mut meta, declare_x(xdef("x", ExchangeKind::Direct)));
    let mut hash_x = xdef("h", ExchangeKind::ConsistentHash);
    ok(&mut meta, declare_x(hash_x.clone()));

    let inequivalent = |what: &str| format!("PRECONDITION_FAILED - inequivalent arg {what}");
    let cases: Vec<(MetaCommand, ReplyCode, String)> = vec![
        (declare_x(xdef("amq.foo", ExchangeKind::Direct)), ReplyCode::AccessRefused,
            "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'".into()),
        (declare_x(xdef("", ExchangeKind::Direct)), ReplyCode::AccessRefused,
            "ACCESS_REFUSED - operation not permitted on the default exchange".into()),
        (passive_x(""), ReplyCode::AccessRefused,
            "ACCESS_REFUSED - operation not permitted on the default exchange".into()),
        (passive_x("missing"), ReplyCode::NotFound, "NOT_FOUND - no exchange 'missing' in vhost '/'".into()),
        (declare_x(xdef("x", ExchangeKind::Fanout)), ReplyCode::PreconditionFailed,
            inequivalent("'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'")),
        (declare_x(xdef("amq.direct", ExchangeKind::Topic)), ReplyCode::PreconditionFailed,
            inequivalent("'type' for exchange 'amq.direct' in vhost '/': received 'topic' but current is 'direct'")),
        (declare_x(xdef("h", ExchangeKind::Direct)), ReplyCode::PreconditionFailed,
            inequivalent("'type' for exchange 'h' in vhost '/': received 'direct' but current is ''x-consistent-hash''")),
        (declare_x(ExchangeDef { durable: false, ..xdef("x", ExchangeKind::Direct) }), ReplyCode::PreconditionFailed,
            inequivalent("'durable' for exchange 'x' in vhost '/': received 'false' but current is 'true'")),
        (declare_x(ExchangeDef { auto_delete: true, ..xdef("x", ExchangeKind::Direct) }), ReplyCode::PreconditionFailed,
            inequivalent("'auto_delete' for exchange 'x' in vhost '/': received 'true' but current is 'false'")),
        (declare_x(ExchangeDef { internal: true, ..xdef("x", ExchangeKind::Direct) }), ReplyCode::PreconditionFailed,
            inequivalent("'internal' for exchange 'x' in vhost '/': received 'true' but current is 'false'")),
        (declare_x(ExchangeDef { arguments: table(&[("alternate-exchange", s("ae2"))]), ..with_ae.clone() }),
            ReplyCode::PreconditionFailed,
            inequivalent("'alternate-exchange' for exchange 'ae_x' in vhost '/': received the value 'ae2' of type 'longstr' but current is the value 'ae1' of type 'longstr'")),
        (declare_x(xdef("ae_x", ExchangeKind::Direct)), ReplyCode::PreconditionFailed,
            inequivalent("'alternate-exchange' for exchange 'ae_x' in vhost '/': received none but current is the value 'ae1' of type 'longstr'")),
        (declare_x(ExchangeDef { arguments: table(&[("alternate-exchange", FieldValue::I32(5))]), ..xdef("new", ExchangeKind::Direct) }),
            ReplyCode::PreconditionFailed,
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in exchange 'new' in vhost '/'".into()),
        (declare_x(ExchangeDef { arguments: table(&[("hash-property", s("priority"))]), ..xdef("h2", ExchangeKind::ConsistentHash) }),
            ReplyCode::PreconditionFailed, "PRECONDITION_FAILED - Unsupported property: priority".into()),
    ];
    for (cmd, code, text) in cases {
        assert_error(refused(&mut meta, cmd), code, &text);
    }
    // Arguments other than alternate-exchange do not make an exchange inequivalent.
    hash_x.arguments = table(&[("x-whatever", s("1"))]);
    assert_eq!(
        ok(&mut meta, declare_x(hash_x)),
        MetaOutcome::ExchangeDeclared { created: false }
    );
}

#[test]
fn exchange_delete_errors_match_rabbitmq() {
    let mut meta = Metadata::new();
    ok(&mut meta, declare_x(xdef("x", ExchangeKind::Fanout)));
    ok(&mut meta, declare_q(qdef("q"), 1));
    ok(&mut meta, bind("x", to_q("q"), ""));
    let cases = [
        (
            delete_x("", false),
            ReplyCode::AccessRefused,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        ),
        (
            delete_x("amq.direct", false),
            ReplyCode::AccessRefused,
            "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed",
        ),
        (
            delete_x("x", true),
            ReplyCode::PreconditionFailed,
            "PRECONDITION_FAILED - exchange 'x' in vhost '/' in use",
        ),
    ];
    for (cmd, code, text) in cases {
        assert_error(refused(&mut meta, cmd), code, text);
    }
    let missing = ok(&mut meta, delete_x("missing", false));
    assert_eq!(
        missing,
        MetaOutcome::ExchangeDeleted {
            existed: false,
            auto_deleted: vec![]
        }
    );
}

#[test]
fn exchange_delete_if_unused_only_counts_bindings_as_source() {
    let mut meta = Metadata::new();
    ok(&mut meta, declare_x(xdef("x", ExchangeKind::Fanout)));
    ok(&mut meta, bind("amq.fanout", to_x("x"), ""));
    let deleted = ok(&mut meta, delete_x("x", true));
    assert_eq!(
        deleted,
        MetaOutcome::ExchangeDeleted {
            existed: true,
            auto_deleted: vec![]
        }
    );
    assert_eq!(meta.bindings(&vh()).count(), 0);
}

#[test]
fn deleting_an_exchange_removes_bindings_to_and_from_it() {
    let mut meta = Metadata::new();
    ok(&mut meta, declare_x(xdef("x", ExchangeKind::Fanout)));
    ok(&mut meta, declare_q(qdef("q"), 1));
    ok(&mut meta, bind("x", to_q("q"), ""));
    ok(&mut meta, bind("amq.topic", to_x("x"), "#"));
    ok(&mut meta, bind("amq.topic", to_q("q"), "a"));
    ok(&mut meta, delete_x("x", false));
    let left: Vec<Binding> = meta.bindings(&vh()).cloned().collect();
    assert_eq!(
        left,
        vec![binding("amq.topic", to_q("q"), "a", FieldTable::new())]
    );
    assert!(meta.exchange(&vh(), &"x".into()).is_none());
}

#[test]
fn queue_declare_creates_once_and_returns_the_current_definition() {
    let mut meta = Metadata::new();
    let def = QueueDef {
        arguments: table(&[("x-max-length", FieldValue::I32(10))]),
        ..qdef("q")
    };
    let created = ok(&mut meta, declare_q(def.clone(), 1));
    assert_eq!(
        created,
        MetaOutcome::QueueDeclared {
            created: true,
            def: def.clone()
        }
    );
    let g = meta.generation();
    // Same value in another integer width, plus an argument RabbitMQ does not compare.
    let again = QueueDef {
        arguments: table(&[("x-max-length", FieldValue::I64(10)), ("x-custom", s("y"))]),
        ..qdef("q")
    };
    assert_eq!(
        ok(&mut meta, declare_q(again, 2)),
        MetaOutcome::QueueDeclared {
            created: false,
            def: def.clone()
        }
    );
    assert_eq!(
        ok(&mut meta, passive_q("q", 3)),
        MetaOutcome::QueueDeclared {
            created: false,
            def
        }
    );
    assert_eq!(meta.generation(), g);
}

#[test]
fn queue_declare_errors_match_rabbitmq() {
    let mut meta = Metadata::new();
    ok(
        &mut meta,
        declare_q(
            QueueDef {
                arguments: table(&[("x-max-length", FieldValue::I32(10))]),
                ..qdef("q")
            },
            1,
        ),
    );
    let with = |args: &[(&str, FieldValue)]| QueueDef {
        arguments: table(args),
        ..qdef("q")
    };
    let inequivalent = |what: &str| format!("PRECONDITION_FAILED - inequivalent arg {what}");
    let cases: Vec<(MetaCommand, ReplyCode, String)> = vec![
        (declare_q(qdef("amq.x"), 1), ReplyCode::AccessRefused,
            "ACCESS_REFUSED - queue name 'amq.x' contains reserved prefix 'amq.*'".into()),
        (passive_q("missing", 1), ReplyCode::NotFound, "NOT_FOUND - no queue 'missing' in vhost '/'".into()),
        (declare_q(QueueDef { durable: true, ..with(&[("x-max-length", FieldValue::I32(10))]) }, 1),
            ReplyCode::PreconditionFailed,
            inequivalent("'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'")),
        (declare_q(QueueDef { auto_delete: true, ..with(&[("x-max-length", FieldValue::I32(10))]) }, 1),
            ReplyCode::PreconditionFailed,
            inequivalent("'auto_delete' for queue 'q' in vhost '/': received 'true' but current is 'false'")),
        (declare_q(with(&[("x-max-length", FieldValue::I32(20))]), 1), ReplyCode::PreconditionFailed,
            inequivalent("'x-max-length' for queue 'q' in vhost '/': received the value '20' of type 'signedint' but current is the value '10' of type 'signedint'")),
        (declare_q(with(&[]), 1), ReplyCode::PreconditionFailed,
            inequivalent("'x-max-length' for queue 'q' in vhost '/': received none but current is the value '10' of type 'signedint'")),
        (declare_q(with(&[("x-max-length", FieldValue::I32(10)), ("x-queue-type", s("quorum"))]), 1),
            ReplyCode::PreconditionFailed,
            inequivalent("'x-queue-type' for queue 'q' in vhost '/': received the value 'quorum' of type 'longstr' but current is none")),
        (declare_q(QueueDef { arguments: table(&[("x-max-length", FieldValue::I32(-1))]), ..qdef("new") }, 1),
            ReplyCode::PreconditionFailed,
            "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'new' in vhost '/': {value_negative,-1}".into()),
    ];
    for (cmd, code, text) in cases {
        assert_error(refused(&mut meta, cmd), code, &text);
    }
    // A classic queue need not say so.
    let classic = with(&[
        ("x-max-length", FieldValue::I32(10)),
        ("x-queue-type", s("classic")),
    ]);
    assert!(matches!(
        ok(&mut meta, declare_q(classic, 1)),
        MetaOutcome::QueueDeclared { created: false, .. }
    ));
}

#[test]
fn exclusive_queues_belong_to_their_connection() {
    let mut meta = Metadata::new();
    let exclusive = |conn: u64| QueueDef {
        exclusive_owner: Some(ConnectionId(conn)),
        durable: true,
        ..qdef("ex")
    };
    let MetaOutcome::QueueDeclared { def, .. } = ok(&mut meta, declare_q(exclusive(1), 1)) else {
        panic!()
    };
    assert!(!def.durable, "exclusive queues are never durable");
    // The owner may redeclare, even asking for durable again.
    assert!(matches!(
        ok(&mut meta, declare_q(exclusive(1), 1)),
        MetaOutcome::QueueDeclared { created: false, .. }
    ));
    assert!(matches!(
        ok(&mut meta, passive_q("ex", 1)),
        MetaOutcome::QueueDeclared { created: false, .. }
    ));
    let locked = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'ex' in vhost '/'. It could be \
                  originally declared on another connection or the exclusive property value does not match that \
                  of the original declaration.";
    assert_error(
        refused(&mut meta, declare_q(exclusive(2), 2)),
        ReplyCode::ResourceLocked,
        locked,
    );
    assert_error(
        refused(&mut meta, declare_q(qdef("ex"), 2)),
        ReplyCode::ResourceLocked,
        locked,
    );
    assert_error(
        refused(&mut meta, passive_q("ex", 2)),
        ReplyCode::ResourceLocked,
        locked,
    );
    // Strict on a non-passive declare: the owner asking for a non-exclusive queue is refused too.
    assert_error(
        refused(&mut meta, declare_q(qdef("ex"), 1)),
        ReplyCode::ResourceLocked,
        locked,
    );
    // And a shared queue cannot be redeclared exclusive.
    ok(&mut meta, declare_q(qdef("shared"), 1));
    let ex_shared = QueueDef {
        exclusive_owner: Some(ConnectionId(1)),
        ..qdef("shared")
    };
    let err = refused(&mut meta, declare_q(ex_shared, 1));
    assert_eq!(err.code, ReplyCode::ResourceLocked);
    assert!(matches!(
        ok(&mut meta, passive_q("shared", 9)),
        MetaOutcome::QueueDeclared { .. }
    ));

    ok(&mut meta, declare_q(exclusive(1).clone_named("ex2"), 1));
    ok(&mut meta, declare_q(exclusive(3).clone_named("other"), 3));
    let owned = meta.queues_owned_by(ConnectionId(1));
    assert_eq!(
        owned,
        vec![
            (vh(), QueueName::from("ex")),
            (vh(), QueueName::from("ex2"))
        ]
    );
    assert!(meta.queues_owned_by(ConnectionId(7)).is_empty());
}

trait CloneNamed {
    fn clone_named(&self, name: &str) -> Self;
}

impl CloneNamed for QueueDef {
    fn clone_named(&self, name: &str) -> Self {
        QueueDef {
            name: QueueName::from(name),
            ..self.clone()
        }
    }
}

#[test]
fn only_names_the_server_chose_pass_the_reserved_prefix_rule() {
    let mut meta = Metadata::new();
    let name = "amq.gen-AbCdEfGhIjKlMnOpQrStU_";
    // A client that picks a name shaped like a server-chosen one is refused, as in RabbitMQ.
    let err = refused(&mut meta, declare_q(qdef(name), 1));
    assert_eq!(err.code, ReplyCode::AccessRefused);
    let server_named = MetaCommand::DeclareQueue {
        vhost: vh(),
        def: qdef(name),
        passive: false,
        server_named: true,
        requester: ConnectionId(1),
    };
    assert!(matches!(
        ok(&mut meta, server_named),
        MetaOutcome::QueueDeclared { created: true, .. }
    ));
    // Redeclaring it by name is the client naming it: refused; a passive declare finds it.
    let err = refused(&mut meta, declare_q(qdef(name), 1));
    assert_eq!(err.code, ReplyCode::AccessRefused);
    assert!(matches!(
        ok(&mut meta, passive_q(name, 1)),
        MetaOutcome::QueueDeclared { created: false, .. }
    ));
}

#[test]
fn a_batch_applies_in_order_and_stops_at_the_first_refusal() {
    let mut meta = Metadata::new();
    let batch = MetaCommand::Batch(vec![
        declare_x(xdef("orders", ExchangeKind::Topic)),
        declare_q(qdef("q1"), 1),
        bind("orders", to_q("q1"), "#"),
        bind("orders", to_q("missing"), "#"),
        declare_q(qdef("never"), 1),
    ]);
    let mut seen = Vec::new();
    let outcome = meta.apply_with(batch, &mut |m, cmd, result| {
        seen.push((
            m.generation(),
            matches!(cmd, MetaCommand::Batch(_)),
            result.is_ok(),
        ));
    });
    let Ok(MetaOutcome::Batch { outcomes, refused }) = outcome else {
        panic!("not a batch outcome: {outcome:?}");
    };
    assert_eq!(outcomes.len(), 3);
    assert!(matches!(outcomes[2], MetaOutcome::Bound { created: true }));
    assert_error(
        refused.expect("the fourth is refused"),
        ReplyCode::NotFound,
        "NOT_FOUND - no queue 'missing' in vhost '/'",
    );
    let oks: Vec<bool> = seen.iter().map(|s| s.2).collect();
    assert_eq!(
        oks,
        [true, true, true, false],
        "each member reported, the batch never"
    );
    assert!(seen.iter().all(|s| !s.1));
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "reported with the state it left"
    );
    assert!(meta.queue(&vh(), &QueueName::from("q1")).is_some());
    assert!(meta.queue(&vh(), &QueueName::from("never")).is_none());
}

#[test]
fn a_batch_inside_a_batch_is_refused_without_changing_anything() {
    let mut meta = Metadata::new();
    let inner = MetaCommand::Batch(vec![declare_q(qdef("q1"), 1)]);
    let outcome = ok(&mut meta, MetaCommand::Batch(vec![inner]));
    let MetaOutcome::Batch { outcomes, refused } = outcome else {
        panic!("not a batch outcome");
    };
    assert!(outcomes.is_empty());
    assert_eq!(refused.map(|e| e.code), Some(ReplyCode::InternalError));
    assert!(meta.queue(&vh(), &QueueName::from("q1")).is_none());
}
