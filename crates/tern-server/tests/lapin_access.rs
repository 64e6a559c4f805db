//! Users, vhost access and permissions, driven by lapin: every AMQP operation needs the
//! permission RabbitMQ's access-control table names, and a refusal is 403 ACCESS_REFUSED on
//! the channel (530 on connection.open for a vhost), with RabbitMQ's text, leaving the
//! connection usable.
//!
//! Operator commands go through `TestBroker::ctl` (Tern's admin commands, or rabbitmqctl on the
//! reference broker when `TERN_TEST_RABBITMQ_NODE` is set).

mod common;

use common::lapin_support::{self as lp, closed_of, Closed};
use common::{unique, within, TestBroker};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

const PASSWORD: &str = "s3cret-p4ss";

/// A fresh user with these permissions on `/`; None when the test must be skipped.
async fn user_with(
    broker: &TestBroker,
    configure: &str,
    write: &str,
    read: &str,
) -> Option<String> {
    let user = unique("user");
    broker.ctl_ok(None, &["add_user", &user, PASSWORD]).await?;
    let set = ["set_permissions", &user, configure, write, read];
    broker.ctl_ok(Some("/"), &set).await?;
    Some(user)
}

async fn connect_as(broker: &TestBroker, user: &str) -> Connection {
    let uri = broker.uri_for(user, PASSWORD, "/");
    within(
        "connect",
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await
    .expect("connect")
}

/// The close a call ended in; panics if it succeeded.
fn refusal<T: std::fmt::Debug>(result: lapin::Result<T>) -> Closed {
    match result {
        Ok(v) => panic!("expected 403, got {v:?}"),
        Err(e) => closed_of(&e).unwrap_or_else(|| panic!("expected a protocol error, got {e:?}")),
    }
}

fn assert_refused(closed: Closed, text: &str) {
    assert_eq!((closed.code, closed.hard), (403, false), "{closed:?}");
    assert_eq!(closed.text, format!("ACCESS_REFUSED - {text}"));
}

/// Names made for one test (queues qw, qr, qn and exchanges xw, xr, xn, declared by guest).
struct Fixture {
    t: String,
    _conn: Connection,
}

impl Fixture {
    async fn new(broker: &TestBroker) -> Fixture {
        let conn = lp::connect(broker).await;
        let admin = lp::channel(&conn).await;
        let t = unique("acl");
        for q in ["qw", "qr", "qn"] {
            lp::declare_queue(&admin, &format!("{t}-{q}")).await;
        }
        for x in ["xw", "xr", "xn"] {
            lp::declare_exchange(&admin, &format!("{t}-{x}"), ExchangeKind::Direct).await;
        }
        Fixture { t, _conn: conn }
    }

    fn n(&self, short: &str) -> String {
        format!("{}-{short}", self.t)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_logs_in_with_plain_and_amqplain_and_works_within_its_permissions() {
    let broker = TestBroker::start().await;
    let Some(user) = user_with(&broker, ".*", ".*", ".*").await else {
        return;
    };
    for mechanism in ["plain", "amqplain"] {
        let uri = format!(
            "{}?auth_mechanism={mechanism}",
            broker.uri_for(&user, PASSWORD, "/")
        );
        let conn = within(
            "connect",
            Connection::connect(&uri, ConnectionProperties::default()),
        )
        .await
        .expect("connect");
        let ch = lp::confirmed_channel(&conn).await;
        let q = lp::temp_queue(&ch).await;
        lp::publish(&ch, "", &q, b"hello").await;
        assert_eq!(lp::drain(&ch, &q).await, ["hello"]);
    }
    let wrong = broker.uri_for(&user, "not-it", "/");
    let result = within(
        "connect",
        Connection::connect(&wrong, ConnectionProperties::default()),
    )
    .await;
    // lapin files 403 as a soft error even on connection.close: only the code is checked.
    let closed = refusal(result.map(|_| ()));
    assert_eq!(closed.code, 403);
    assert_eq!(
        closed.text,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_permissions_in_the_vhost_is_refused_with_530() {
    let broker = TestBroker::start().await;
    let user = unique("user");
    let Some(()) = broker.ctl_ok(None, &["add_user", &user, PASSWORD]).await else {
        return;
    };
    let uri = broker.uri_for(&user, PASSWORD, "/");
    let result = within(
        "connect",
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await;
    let closed = refusal(result.map(|_| ()));
    assert_eq!((closed.code, closed.hard), (530, true));
    assert_eq!(
        closed.text,
        format!("NOT_ALLOWED - access to vhost '/' refused for user '{user}'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declares_and_deletes_need_configure() {
    let broker = TestBroker::start().await;
    let f = Fixture::new(&broker).await;
    let Some(user) = user_with(&broker, &format!("^{}-(qw|xw)$", f.t), ".*", ".*").await else {
        return;
    };
    let conn = connect_as(&broker, &user).await;
    let ch = lp::channel(&conn).await;
    let qn = f.n("qn");
    let r = ch.queue_declare(&qn, QueueDeclareOptions::default(), FieldTable::default());
    let text = format!("access to queue '{qn}' in vhost '/' refused for user '{user}'");
    assert_refused(refusal(within("declare", r).await), &text);
    let ch = lp::channel(&conn).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let r = ch.queue_declare(&qn, passive, FieldTable::default());
    within("passive declare", r)
        .await
        .expect("passive declares need nothing");
    let r = ch.queue_delete(&qn, QueueDeleteOptions::default());
    assert_refused(refusal(within("delete", r).await), &text);
    let ch = lp::channel(&conn).await;
    let xn = f.n("xn");
    let r = ch.exchange_declare(
        &xn,
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    );
    let text = format!("access to exchange '{xn}' in vhost '/' refused for user '{user}'");
    assert_refused(refusal(within("exchange.declare", r).await), &text);
    let ch = lp::channel(&conn).await;
    let r = ch.exchange_delete(&xn, ExchangeDeleteOptions::default());
    assert_refused(refusal(within("exchange.delete", r).await), &text);
    let ch = lp::channel(&conn).await;
    let qw = f.n("qw");
    let r = ch.queue_declare(&qw, QueueDeclareOptions::default(), FieldTable::default());
    within("allowed declare", r).await.expect("configure on qw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_needs_write_on_the_queue_and_read_on_the_exchange() {
    let broker = TestBroker::start().await;
    let f = Fixture::new(&broker).await;
    let (w, r) = (format!("^{}-(qw|xw)$", f.t), format!("^{}-(qr|xr)$", f.t));
    let Some(user) = user_with(&broker, "", &w, &r).await else {
        return;
    };
    let conn = connect_as(&broker, &user).await;
    let bind = |ch: Channel, q: String, x: String| async move {
        let r = ch.queue_bind(
            &q,
            &x,
            "k",
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        within("queue.bind", r).await
    };
    let (qw, qn, xr, xn) = (f.n("qw"), f.n("qn"), f.n("xr"), f.n("xn"));
    bind(lp::channel(&conn).await, qw.clone(), xr.clone())
        .await
        .expect("write qw, read xr");
    let closed = refusal(bind(lp::channel(&conn).await, qn.clone(), xr.clone()).await);
    assert_refused(
        closed,
        &format!("access to queue '{qn}' in vhost '/' refused for user '{user}'"),
    );
    let closed = refusal(bind(lp::channel(&conn).await, qw.clone(), xn.clone()).await);
    assert_refused(
        closed,
        &format!("access to exchange '{xn}' in vhost '/' refused for user '{user}'"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_get_and_purge_need_read_and_publish_needs_write() {
    let broker = TestBroker::start().await;
    let f = Fixture::new(&broker).await;
    let (w, r) = (format!("^{}-(qw|xw)$", f.t), format!("^{}-(qr|xr)$", f.t));
    let Some(user) = user_with(&broker, "", &w, &r).await else {
        return;
    };
    let conn = connect_as(&broker, &user).await;
    let qw = f.n("qw");
    let text = format!("access to queue '{qw}' in vhost '/' refused for user '{user}'");
    let ch = lp::channel(&conn).await;
    let r = ch.basic_consume(
        &qw,
        "",
        BasicConsumeOptions::default(),
        FieldTable::default(),
    );
    assert_refused(refusal(within("consume", r).await), &text);
    let ch = lp::channel(&conn).await;
    let r = ch.basic_get(&qw, BasicGetOptions::default());
    assert_refused(refusal(within("get", r).await), &text);
    let ch = lp::channel(&conn).await;
    let r = ch.queue_purge(&qw, QueuePurgeOptions::default());
    assert_refused(refusal(within("purge", r).await), &text);
    let ch = lp::channel(&conn).await;
    lp::consume(&ch, &f.n("qr")).await;
    // Publishing: write on xw is allowed, on xr (or the default exchange) it is not.
    let ch = lp::confirmed_channel(&conn).await;
    lp::publish(&ch, &f.n("xw"), "k", b"allowed").await;
    let xr = f.n("xr");
    let text = format!("access to exchange '{xr}' in vhost '/' refused for user '{user}'");
    let closed = publish_refused(&ch, &xr, "k").await;
    assert_refused(closed, &text);
    let ch = lp::confirmed_channel(&conn).await;
    let closed = publish_refused(&ch, "", "k").await;
    assert_refused(
        closed,
        &format!("access to exchange 'amq.default' in vhost '/' refused for user '{user}'"),
    );
    assert!(
        conn.status().connected(),
        "the connection outlives its channels' refusals"
    );
}

/// Publish with confirms on; the channel is closed with 403 instead of the message confirmed.
async fn publish_refused(ch: &Channel, exchange: &str, key: &str) -> Closed {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    ch.on_error(move |e| {
        let _ = tx.send(e);
    });
    let sent = ch.basic_publish(
        exchange,
        key,
        BasicPublishOptions::default(),
        b"no",
        BasicProperties::default(),
    );
    if let Ok(confirm) = within("publish", sent).await {
        let outcome = within("confirm or close", confirm).await;
        if let Err(e) = outcome {
            if let Some(c) = closed_of(&e) {
                return c;
            }
        }
    }
    let e = within("channel close", rx.recv()).await.expect("an error");
    closed_of(&e).expect("a channel close")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_limit_the_keys_published_and_bound() {
    let broker = TestBroker::start().await;
    let Some(user) = user_with(&broker, ".*", ".*", ".*").await else {
        return;
    };
    let pattern = "^{username}\\.";
    let set = [
        "set_topic_permissions",
        &user,
        "amq.topic",
        pattern,
        pattern,
    ];
    let Some(()) = broker.ctl_ok(Some("/"), &set).await else {
        return;
    };
    let conn = connect_as(&broker, &user).await;
    let ch = lp::confirmed_channel(&conn).await;
    let q = lp::temp_queue(&ch).await;
    lp::bind(&ch, &q, "amq.topic", &format!("{user}.#")).await;
    lp::publish(&ch, "amq.topic", &format!("{user}.orders"), b"mine").await;
    assert_eq!(lp::drain(&ch, &q).await, ["mine"]);
    let r = ch.queue_bind(
        &q,
        "amq.topic",
        "other.#",
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    let text = format!(
        "access to topic 'other.#' in exchange 'amq.topic' in vhost '/' refused for user '{user}'"
    );
    assert_refused(refusal(within("bind", r).await), &text);
    let ch = lp::confirmed_channel(&conn).await;
    let closed = publish_refused(&ch, "amq.topic", "other.orders").await;
    let text = format!("access to topic 'other.orders' in exchange 'amq.topic' in vhost '/' refused for user '{user}'");
    assert_refused(closed, &text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleared_permissions_apply_to_an_open_connection() {
    let broker = TestBroker::start().await;
    let Some(user) = user_with(&broker, ".*", ".*", ".*").await else {
        return;
    };
    let conn = connect_as(&broker, &user).await;
    let ch = lp::channel(&conn).await;
    let first = unique("q");
    lp::declare_queue(&ch, &first).await;
    broker
        .ctl_ok(Some("/"), &["clear_permissions", &user])
        .await;
    let second = unique("q");
    let r = ch.queue_declare(
        &second,
        QueueDeclareOptions::default(),
        FieldTable::default(),
    );
    let text = format!("access to queue '{second}' in vhost '/' refused for user '{user}'");
    assert_refused(refusal(within("declare", r).await), &text);
    lp::channel(&conn).await; // the connection itself stays
    let admin = lp::connect(&broker).await;
    let ach = lp::channel(&admin).await;
    within(
        "cleanup",
        ach.queue_delete(&first, QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
}
