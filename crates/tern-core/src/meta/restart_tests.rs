//! What survives a restart: snapshots as commands, and dropping what is not durable.

use tern_amqp::FieldValue;

use super::tests::{bind, binding, declare_q, declare_x, ok, qdef, s, table, to_q, to_x, vh, xdef};
use super::*;

fn route(meta: &Metadata, exchange: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    meta.snapshot()
        .route(&vh(), exchange, key, None, &mut out)
        .expect("routable");
    out.iter().map(|q| q.to_string()).collect()
}

/// A state with something of everything: an alternate exchange, an exchange-to-exchange
/// binding, a server-named queue, an exclusive one, a second vhost.
fn busy() -> Metadata {
    let mut meta = Metadata::new();
    let mut ae = xdef("with-ae", ExchangeKind::Topic);
    ae.arguments = table(&[("alternate-exchange", s("fallback"))]);
    ok(&mut meta, declare_x(xdef("fallback", ExchangeKind::Fanout)));
    ok(&mut meta, declare_x(ae));
    let mut transient = xdef("transient-x", ExchangeKind::Direct);
    transient.durable = false;
    ok(&mut meta, declare_x(transient));
    let mut durable_q = qdef("orders");
    durable_q.durable = true;
    ok(&mut meta, declare_q(durable_q, 1));
    ok(&mut meta, declare_q(qdef("scratch"), 1));
    let mut exclusive = qdef("mine");
    exclusive.exclusive_owner = Some(ConnectionId(7));
    ok(&mut meta, declare_q(exclusive, 7));
    let server_named = MetaCommand::DeclareQueue {
        vhost: vh(),
        def: QueueDef {
            durable: true,
            ..qdef("amq.gen-AbCdEfGhIjKlMnOpQrStU_")
        },
        passive: false,
        server_named: true,
        requester: ConnectionId(1),
    };
    ok(&mut meta, server_named);
    ok(&mut meta, bind("with-ae", to_q("orders"), "order.*"));
    ok(&mut meta, bind("with-ae", to_q("scratch"), "#"));
    ok(
        &mut meta,
        bind("fallback", to_q("amq.gen-AbCdEfGhIjKlMnOpQrStU_"), ""),
    );
    ok(&mut meta, bind("with-ae", to_x("transient-x"), "x.#"));
    let args = table(&[("x-match", s("any")), ("k", FieldValue::I32(1))]);
    let headers = binding("amq.headers", to_q("orders"), "", args);
    ok(
        &mut meta,
        MetaCommand::Bind {
            vhost: vh(),
            binding: headers,
        },
    );
    ok(
        &mut meta,
        MetaCommand::AddVhost {
            name: VhostName::from("other"),
        },
    );
    meta
}

#[test]
fn a_state_rebuilt_from_its_snapshot_commands_is_the_same_state() {
    let meta = busy();
    let commands = meta.snapshot_commands();
    let mut rebuilt = Metadata::new();
    for cmd in commands.clone() {
        rebuilt.apply(cmd).expect("a snapshot command applies");
    }
    assert_eq!(rebuilt.snapshot_commands(), commands);
    for key in ["order.new", "x.y", "nothing"] {
        assert_eq!(
            route(&rebuilt, "with-ae", key),
            route(&meta, "with-ae", key),
            "{key}"
        );
    }
    rebuilt
        .vhosts
        .values()
        .for_each(VhostState::check_invariants);
}

#[test]
fn snapshot_commands_survive_the_codec() {
    for cmd in busy().snapshot_commands() {
        let mut out = bytes::BytesMut::new();
        encode_command(&cmd, &mut out);
        assert_eq!(decode_command(&mut out.freeze()), Ok(cmd));
    }
}

#[test]
fn a_deleted_default_vhost_stays_deleted() {
    let mut meta = Metadata::new();
    ok(&mut meta, MetaCommand::DeleteVhost { name: vh() });
    let mut rebuilt = Metadata::new();
    for cmd in meta.snapshot_commands() {
        rebuilt.apply(cmd).unwrap();
    }
    assert!(!rebuilt.vhost_exists(&vh()));
}

#[test]
fn dropping_transient_definitions_keeps_only_the_durable_ones() {
    let mut meta = busy();
    let mut auto = xdef("auto", ExchangeKind::Fanout);
    auto.auto_delete = true;
    ok(&mut meta, declare_x(auto));
    ok(&mut meta, bind("auto", to_q("scratch"), ""));
    let MetaOutcome::QueuesDropped { mut queues } = ok(&mut meta, MetaCommand::DropTransient)
    else {
        panic!("not a drop");
    };
    queues.sort();
    let names: Vec<&str> = queues.iter().map(|(_, q)| q.as_str()).collect();
    assert_eq!(names, ["mine", "scratch"]);
    let left: Vec<&str> = meta.queues(&vh()).map(|q| q.name.as_str()).collect();
    assert_eq!(left, ["amq.gen-AbCdEfGhIjKlMnOpQrStU_", "orders"]);
    assert!(meta
        .exchange(&vh(), &ExchangeName::from("transient-x"))
        .is_none());
    assert!(
        meta.exchange(&vh(), &ExchangeName::from("auto")).is_none(),
        "a durable auto-delete exchange that lost its last binding goes too"
    );
    assert_eq!(route(&meta, "with-ae", "order.new"), ["orders"]);
    assert_eq!(
        route(&meta, "with-ae", "x.y"),
        ["amq.gen-AbCdEfGhIjKlMnOpQrStU_"]
    );
    meta.vhosts.values().for_each(VhostState::check_invariants);
}

/// A clustered node that restarts drops its own transient queues (exclusive ones too) and
/// nothing of other nodes': their queues and the cluster's exchanges stay.
#[test]
fn a_node_drops_only_its_own_transient_queues() {
    let mut meta = Metadata::new();
    let declare = |meta: &mut Metadata, name: &str, home: &str, durable: bool| {
        let def = QueueDef {
            durable,
            home: Some(ShortStr::from(home)),
            ..qdef(name)
        };
        ok(meta, declare_q(def, 1));
    };
    declare(&mut meta, "a-transient", "tern@a", false);
    declare(&mut meta, "a-durable", "tern@a", true);
    declare(&mut meta, "b-transient", "tern@b", false);
    let node = ShortStr::from("tern@a");
    let MetaOutcome::QueuesDropped { queues } =
        ok(&mut meta, MetaCommand::DropNodeTransient { node })
    else {
        panic!("not a drop");
    };
    let vhost = vh();
    assert_eq!(
        queues,
        vec![(vhost.clone(), QueueName::from("a-transient"))]
    );
    let left: Vec<String> = meta.queues(&vhost).map(|q| q.name.to_string()).collect();
    assert_eq!(left, ["a-durable", "b-transient"]);
    let homes = meta.queues_per_home();
    assert_eq!(homes.get(&ShortStr::from("tern@a")), Some(&1));
    assert_eq!(homes.get(&ShortStr::from("tern@b")), Some(&1));

    // Forgotten, a node's queues all go, durable ones too.
    let node = ShortStr::from("tern@a");
    let MetaOutcome::QueuesDropped { queues } = ok(&mut meta, MetaCommand::ForgetNode { node })
    else {
        panic!("not a drop");
    };
    assert_eq!(queues, vec![(vhost.clone(), QueueName::from("a-durable"))]);
    let left: Vec<String> = meta.queues(&vhost).map(|q| q.name.to_string()).collect();
    assert_eq!(left, ["b-transient"]);
}
