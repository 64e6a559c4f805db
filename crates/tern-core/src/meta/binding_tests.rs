//! Bindings: their errors, their identity, and the cascades that deleting things sets off.

use tern_amqp::{FieldTable, FieldValue, ReplyCode};

use super::tests::*;
use super::*;

#[test]
fn deleting_a_queue_removes_its_bindings() {
    let mut meta = Metadata::new();
    ok(&mut meta, declare_q(qdef("q"), 1));
    ok(&mut meta, declare_q(qdef("r"), 1));
    ok(&mut meta, bind("amq.direct", to_q("q"), "k"));
    ok(&mut meta, bind("amq.fanout", to_q("q"), ""));
    ok(&mut meta, bind("amq.fanout", to_q("r"), ""));
    let deleted = ok(&mut meta, delete_q("q"));
    assert_eq!(
        deleted,
        MetaOutcome::QueueDeleted {
            existed: true,
            auto_deleted: vec![]
        }
    );
    let left: Vec<Binding> = meta.bindings(&vh()).cloned().collect();
    assert_eq!(
        left,
        vec![binding("amq.fanout", to_q("r"), "", FieldTable::new())]
    );
    assert_eq!(
        ok(&mut meta, delete_q("q")),
        MetaOutcome::QueueDeleted {
            existed: false,
            auto_deleted: vec![]
        }
    );
}

#[test]
fn bind_errors_match_rabbitmq() {
    let mut meta = Metadata::new();
    ok(&mut meta, declare_q(qdef("q"), 1));
    ok(
        &mut meta,
        declare_x(xdef("ring", ExchangeKind::ConsistentHash)),
    );
    let headers_bind = |args: FieldTable| MetaCommand::Bind {
        vhost: vh(),
        binding: binding("amq.match", to_q("q"), "", args),
    };
    let cases: Vec<(MetaCommand, ReplyCode, &str)> = vec![
        (bind("nope", to_q("q"), "k"), ReplyCode::NotFound, "NOT_FOUND - no exchange 'nope' in vhost '/'"),
        (bind("nope", to_q("nope"), "k"), ReplyCode::NotFound, "NOT_FOUND - no exchange 'nope' in vhost '/'"),
        (bind("amq.direct", to_q("nope"), "k"), ReplyCode::NotFound, "NOT_FOUND - no queue 'nope' in vhost '/'"),
        (bind("amq.direct", to_x("nope"), "k"), ReplyCode::NotFound, "NOT_FOUND - no exchange 'nope' in vhost '/'"),
        (bind("", to_q("q"), "q"), ReplyCode::AccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange"),
        (bind("amq.direct", to_x(""), "k"), ReplyCode::AccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange"),
        (unbind("", to_q("q"), "q"), ReplyCode::AccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange"),
        (headers_bind(table(&[("x-match", s("some"))])), ReplyCode::PreconditionFailed,
            "PRECONDITION_FAILED - Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x"),
        (headers_bind(table(&[("x-match", FieldValue::Bool(true))])), ReplyCode::PreconditionFailed,
            "PRECONDITION_FAILED - Invalid x-match field type bool (value true); expected longstr"),
        (bind("ring", to_q("q"), "heavy"), ReplyCode::PreconditionFailed,
            "PRECONDITION_FAILED - The binding key must be an integer: <<\"heavy\">>"),
        (bind("ring", to_q("q"), "0"), ReplyCode::PreconditionFailed, "PRECONDITION_FAILED - The binding key must be greater than 0"),
    ];
    for (cmd, code, text) in cases {
        assert_error(refused(&mut meta, cmd), code, text);
    }
}

#[test]
fn bindings_are_identified_by_source_destination_key_and_sorted_arguments() {
    let mut meta = Metadata::new();
    ok(&mut meta, declare_q(qdef("q"), 1));
    let args_ab = table(&[("a", s("1")), ("b", s("2"))]);
    let args_ba = table(&[("b", s("2")), ("a", s("1"))]);
    let bind_with = |args: &FieldTable| MetaCommand::Bind {
        vhost: vh(),
        binding: binding("amq.match", to_q("q"), "", args.clone()),
    };
    assert_eq!(
        ok(&mut meta, bind_with(&args_ba)),
        MetaOutcome::Bound { created: true }
    );
    let g = meta.generation();
    assert_eq!(
        ok(&mut meta, bind_with(&args_ab)),
        MetaOutcome::Bound { created: false }
    );
    assert_eq!(meta.generation(), g);
    let stored: Vec<&Binding> = meta.bindings(&vh()).collect();
    assert_eq!(stored[0].arguments, args_ab, "arguments are stored sorted");
    ok(&mut meta, bind("amq.direct", to_q("q"), "k1"));
    assert_eq!(
        ok(&mut meta, bind("amq.direct", to_q("q"), "k2")),
        MetaOutcome::Bound { created: true }
    );
    let unbound = MetaCommand::Unbind {
        vhost: vh(),
        binding: binding("amq.match", to_q("q"), "", args_ba),
    };
    assert_eq!(
        ok(&mut meta, unbound),
        MetaOutcome::Unbound {
            existed: true,
            auto_deleted: vec![]
        }
    );
}

#[test]
fn unbinding_what_is_not_bound_is_fine() {
    let mut meta = Metadata::new();
    ok(&mut meta, declare_q(qdef("q"), 1));
    let g = meta.generation();
    let nothing = MetaOutcome::Unbound {
        existed: false,
        auto_deleted: vec![],
    };
    assert_eq!(ok(&mut meta, unbind("amq.direct", to_q("q"), "k")), nothing);
    assert_eq!(ok(&mut meta, unbind("missing", to_q("q"), "k")), nothing);
    assert_eq!(
        ok(&mut meta, unbind("amq.direct", to_q("missing"), "k")),
        nothing
    );
    assert_eq!(
        ok(&mut meta, unbind("amq.direct", to_x("missing"), "k")),
        nothing
    );
    assert_eq!(meta.generation(), g);
}

fn auto_x(name: &str, kind: ExchangeKind) -> MetaCommand {
    declare_x(ExchangeDef {
        auto_delete: true,
        ..xdef(name, kind)
    })
}

#[test]
fn auto_delete_exchange_goes_with_its_last_binding() {
    let mut meta = Metadata::new();
    ok(&mut meta, auto_x("auto", ExchangeKind::Direct));
    ok(&mut meta, declare_q(qdef("q"), 1));
    ok(&mut meta, bind("auto", to_q("q"), "a"));
    ok(&mut meta, bind("auto", to_q("q"), "b"));
    assert_eq!(
        ok(&mut meta, unbind("auto", to_q("q"), "a")),
        MetaOutcome::Unbound {
            existed: true,
            auto_deleted: vec![]
        }
    );
    let last = ok(&mut meta, unbind("auto", to_q("q"), "b"));
    assert_eq!(
        last,
        MetaOutcome::Unbound {
            existed: true,
            auto_deleted: vec![ExchangeName::from("auto")]
        }
    );
    assert!(meta.exchange(&vh(), &"auto".into()).is_none());
    // Never bound: stays.
    ok(&mut meta, auto_x("idle", ExchangeKind::Direct));
    assert!(meta.exchange(&vh(), &"idle".into()).is_some());
    // Bound only as a destination: losing that binding does not delete it.
    ok(&mut meta, bind("amq.fanout", to_x("idle"), ""));
    ok(&mut meta, unbind("amq.fanout", to_x("idle"), ""));
    assert!(meta.exchange(&vh(), &"idle".into()).is_some());
}

#[test]
fn auto_delete_cascades_through_exchange_chains() {
    let mut meta = Metadata::new();
    ok(&mut meta, auto_x("a", ExchangeKind::Fanout));
    ok(&mut meta, auto_x("b", ExchangeKind::Fanout));
    ok(&mut meta, declare_x(xdef("keep", ExchangeKind::Fanout)));
    ok(&mut meta, declare_q(qdef("q"), 1));
    ok(&mut meta, bind("a", to_x("b"), ""));
    ok(&mut meta, bind("b", to_q("q"), ""));
    ok(&mut meta, bind("keep", to_x("b"), ""));
    let deleted = ok(&mut meta, delete_q("q"));
    let expected = vec![ExchangeName::from("b"), ExchangeName::from("a")];
    assert_eq!(
        deleted,
        MetaOutcome::QueueDeleted {
            existed: true,
            auto_deleted: expected
        }
    );
    assert!(
        meta.exchange(&vh(), &"keep".into()).is_some(),
        "not auto-delete"
    );
    assert_eq!(meta.bindings(&vh()).count(), 0);
}

#[test]
fn deleting_an_exchange_can_auto_delete_its_sources() {
    let mut meta = Metadata::new();
    ok(&mut meta, auto_x("src", ExchangeKind::Topic));
    ok(&mut meta, declare_x(xdef("dst", ExchangeKind::Fanout)));
    ok(&mut meta, bind("src", to_x("dst"), "#"));
    let deleted = ok(&mut meta, delete_x("dst", false));
    let expected = MetaOutcome::ExchangeDeleted {
        existed: true,
        auto_deleted: vec![ExchangeName::from("src")],
    };
    assert_eq!(deleted, expected);
    assert_eq!(meta.exchanges(&vh()).count(), 7);
}

#[test]
fn self_bound_auto_delete_exchange_survives_until_unbound() {
    let mut meta = Metadata::new();
    ok(&mut meta, auto_x("loop", ExchangeKind::Fanout));
    ok(&mut meta, bind("loop", to_x("loop"), ""));
    let unbound = ok(&mut meta, unbind("loop", to_x("loop"), ""));
    assert_eq!(
        unbound,
        MetaOutcome::Unbound {
            existed: true,
            auto_deleted: vec![ExchangeName::from("loop")]
        }
    );
}

#[test]
fn vhosts_come_and_go_with_their_definitions() {
    let mut meta = Metadata::new();
    let other = VhostName::from("other");
    assert_eq!(
        ok(
            &mut meta,
            MetaCommand::AddVhost {
                name: other.clone()
            }
        ),
        MetaOutcome::VhostAdded { created: true }
    );
    assert_eq!(
        ok(
            &mut meta,
            MetaCommand::AddVhost {
                name: other.clone()
            }
        ),
        MetaOutcome::VhostAdded { created: false }
    );
    assert_eq!(meta.exchanges(&other).count(), 7);
    let declare = MetaCommand::DeclareQueue {
        vhost: other.clone(),
        def: qdef("q"),
        passive: false,
        server_named: false,
        requester: ConnectionId(1),
    };
    ok(&mut meta, declare);
    let mut out = Vec::new();
    meta.snapshot()
        .route(&other, "amq.direct", "k", None, &mut out)
        .expect("vhost routes");
    let deleted = ok(
        &mut meta,
        MetaCommand::DeleteVhost {
            name: other.clone(),
        },
    );
    assert_eq!(
        deleted,
        MetaOutcome::VhostDeleted {
            existed: true,
            queues: vec![QueueName::from("q")]
        }
    );
    assert!(!meta.vhost_exists(&other));
    assert!(meta
        .snapshot()
        .route(&other, "amq.direct", "k", None, &mut out)
        .is_err());
    let again = ok(
        &mut meta,
        MetaCommand::DeleteVhost {
            name: other.clone(),
        },
    );
    assert_eq!(
        again,
        MetaOutcome::VhostDeleted {
            existed: false,
            queues: vec![]
        }
    );
    let in_missing = MetaCommand::DeclareExchange {
        vhost: other,
        def: xdef("x", ExchangeKind::Direct),
        passive: false,
    };
    assert_error(
        meta.apply(in_missing).unwrap_err(),
        ReplyCode::NotAllowed,
        "NOT_ALLOWED - vhost 'other' not found",
    );
}

#[test]
fn errors_carry_no_class_or_method_for_the_server_to_fill_in() {
    let mut meta = Metadata::new();
    let err = meta.apply(passive_x("missing")).unwrap_err();
    assert_eq!((err.class_id, err.method_id), (0, 0));
}
