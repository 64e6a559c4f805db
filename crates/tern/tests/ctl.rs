//! `tern ctl` against a real `tern server` process: users, permissions and vhosts are
//! managed with rabbitmqctl's command names over the admin socket, and survive a SIGKILL;
//! queues, exchanges, bindings, connections, channels and consumers are listed with
//! rabbitmqctl's columns; queues purged and deleted, connections closed; definitions exported
//! and imported (a large file in chunks).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{data_dir, Server};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};

fn ctl(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("ctl")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tern ctl");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("tern ctl")
}

/// Run a command that must succeed; its standard output.
fn ctl_ok(dir: &Path, args: &[&str]) -> String {
    let out = ctl(dir, args, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command that must fail; its standard error.
fn ctl_err(dir: &Path, args: &[&str]) -> String {
    let out = ctl(dir, args, None);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should have failed: {err}");
    err
}

/// Run a command with `--format json`; its parsed output.
fn ctl_json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let out = ctl_ok(dir, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The table's lines after the header, sorted (rabbitmqctl promises no order).
fn sorted_rows(table: &str) -> Vec<String> {
    let mut rows: Vec<String> = table.lines().skip(1).map(str::to_string).collect();
    rows.sort();
    rows
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than 20 s"))
}

async fn login(server: &Server, user: &str, password: &str) -> lapin::Result<Connection> {
    let uri = format!("amqp://{user}:{password}@127.0.0.1:{}/%2f", server.port);
    Connection::connect(&uri, ConnectionProperties::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_permissions_are_managed_with_ctl_and_survive_kill_9() {
    let dir = data_dir("ctl");
    let server = Server::start(&dir);
    let added = ctl(&dir, &["add_user", "alice"], Some("wonder-land\n"));
    assert!(added.status.success(), "password read from stdin");
    assert_eq!(
        String::from_utf8_lossy(&added.stdout).trim(),
        "Adding user \"alice\" ..."
    );
    ctl_ok(&dir, &["set_user_tags", "alice", "monitoring"]);
    ctl_ok(&dir, &["add_vhost", "orders"]);
    ctl_ok(
        &dir,
        &[
            "-p",
            "orders",
            "set_permissions",
            "alice",
            "^alice-",
            ".*",
            ".*",
        ],
    );
    let users = ctl_ok(&dir, &["-q", "list_users"]);
    assert_eq!(
        users,
        "user\ttags\nalice\t[monitoring]\nguest\t[administrator]\n"
    );
    let json = ctl_ok(
        &dir,
        &["-p", "orders", "--format", "json", "list_permissions"],
    );
    let rows: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        rows,
        serde_json::json!([{"user": "alice", "configure": "^alice-", "write": ".*", "read": ".*"}])
    );
    let again = ctl(&dir, &["add_user", "alice", "x"], None);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("User \"alice\" already exists"));
    let missing = ctl(&dir, &["delete_user", "nobody"], None);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("User \"nobody\" does not exist"));
    ctl_ok(&dir, &["delete_user", "guest"]);
    server.kill();

    let server = Server::start(&dir);
    let users = ctl_ok(&dir, &["-q", "list_users"]);
    assert_eq!(
        users, "user\ttags\nalice\t[monitoring]\n",
        "guest stays deleted"
    );
    let uri = format!("amqp://alice:wonder-land@127.0.0.1:{}/orders", server.port);
    Connection::connect(&uri, ConnectionProperties::default())
        .await
        .expect("alice logs in to orders after the restart");
    assert!(login(&server, "alice", "wrong").await.is_err());
    assert!(login(&server, "guest", "guest").await.is_err());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctl_without_a_running_node_says_so() {
    let dir = data_dir("ctl-none");
    let out = ctl(&dir, &["list_users"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the node"), "{err}");
}

async fn guest_channel(server: &Server) -> (Connection, Channel) {
    let conn = within("connect", login(server, "guest", "guest"))
        .await
        .expect("guest connects");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    (conn, ch)
}

async fn declare(ch: &Channel, name: &str, arguments: FieldTable) {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name, durable, arguments)
        .await
        .expect("queue.declare");
}

/// Publish `n` messages to `queue` by the default exchange; returns once all are confirmed.
async fn publish(ch: &Channel, queue: &str, n: usize) {
    for i in 0..n {
        let body = format!("m{i}");
        let confirm = ch
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        confirm.await.expect("confirm");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_listed_with_rabbitmqctls_columns_then_purged_and_deleted() {
    let dir = data_dir("ctl-queues");
    let server = Server::start(&dir);
    let (_conn, ch) = guest_channel(&server).await;
    declare(&ch, "jobs", FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    declare(&ch, "work", args).await;
    publish(&ch, "jobs", 3).await;
    ch.basic_qos(5, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = ch
        .basic_consume(
            "work",
            "w1",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    publish(&ch, "work", 2).await;
    for _ in 0..2 {
        within("delivery", consumer.next())
            .await
            .expect("a delivery")
            .expect("ok");
    }

    let table = ctl_ok(&dir, &["list_queues", "name", "messages", "consumers"]);
    assert!(
        table.starts_with("Listing queues for vhost / ...\n"),
        "{table}"
    );
    let table = ctl_ok(
        &dir,
        &["-q", "list_queues", "name", "messages", "consumers"],
    );
    assert_eq!(table.lines().next(), Some("name\tmessages\tconsumers"));
    assert_eq!(sorted_rows(&table), vec!["jobs\t3\t0", "work\t2\t1"]);
    let default = ctl_ok(&dir, &["-q", "list_queues"]);
    assert_eq!(default.lines().next(), Some("name\tmessages"));
    let args = ctl_ok(&dir, &["-q", "list_queues", "name,arguments,durable"]);
    assert!(
        args.contains("work\t[{\"x-max-length\",10}]\ttrue"),
        "{args}"
    );
    assert!(args.contains("jobs\t[]\ttrue"), "{args}");

    let rows = ctl_json(
        &dir,
        &[
            "list_queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "arguments",
        ],
    );
    let work = rows
        .as_array()
        .and_then(|r| r.iter().find(|q| q["name"] == "work"));
    assert_eq!(
        work,
        Some(
            &json!({"name": "work", "messages_ready": 0, "messages_unacknowledged": 2,
                     "arguments": {"x-max-length": 10}})
        )
    );

    let err = ctl_err(&dir, &["list_queues", "name", "colour"]);
    assert!(
        err.contains("colour") && err.contains("list_queues"),
        "{err}"
    );

    assert!(ctl_ok(&dir, &["purge_queue", "jobs"]).contains("3 messages purged"));
    let table = ctl_ok(&dir, &["-q", "list_queues", "name", "messages"]);
    assert_eq!(sorted_rows(&table), vec!["jobs\t0", "work\t2"]);
    let err = ctl_err(&dir, &["delete_queue", "work", "--if-unused"]);
    assert!(err.contains("in use"), "{err}");
    ctl_ok(&dir, &["delete_queue", "jobs", "--if-empty"]);
    let err = ctl_err(&dir, &["purge_queue", "jobs"]);
    assert!(err.contains("no queue 'jobs'"), "{err}");
    let table = ctl_ok(&dir, &["-q", "list_queues"]);
    assert_eq!(sorted_rows(&table), vec!["work\t2"]);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_bindings_connections_channels_and_consumers_are_listed() {
    let dir = data_dir("ctl-lists");
    let server = Server::start(&dir);
    let (_conn, ch) = guest_channel(&server).await;
    let opts = ExchangeDeclareOptions::default();
    ch.exchange_declare("orders", ExchangeKind::Topic, opts, FieldTable::default())
        .await
        .expect("exchange.declare");
    declare(&ch, "eu", FieldTable::default()).await;
    ch.queue_bind(
        "eu",
        "orders",
        "eu.#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    ch.basic_qos(7, BasicQosOptions::default())
        .await
        .expect("qos");
    let _consumer = ch
        .basic_consume(
            "eu",
            "c-eu",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");

    let exchanges = ctl_ok(&dir, &["-q", "list_exchanges"]);
    assert_eq!(exchanges.lines().next(), Some("name\ttype"));
    assert!(
        exchanges.lines().any(|l| l == "orders\ttopic"),
        "{exchanges}"
    );
    assert!(
        exchanges.lines().any(|l| l == "amq.fanout\tfanout"),
        "{exchanges}"
    );

    let bindings = ctl_ok(&dir, &["-q", "list_bindings"]);
    let header =
        "source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments";
    assert_eq!(bindings.lines().next(), Some(header));
    assert_eq!(
        sorted_rows(&bindings),
        vec![
            "\texchange\teu\tqueue\teu\t[]",
            "orders\texchange\teu\tqueue\teu.#\t[]"
        ]
    );

    let conns = ctl_ok(&dir, &["-q", "list_connections"]);
    assert_eq!(
        conns.lines().next(),
        Some("user\tpeer_host\tpeer_port\tstate")
    );
    let row = conns.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        row.starts_with("guest\t127.0.0.1\t") && row.ends_with("\trunning"),
        "{row}"
    );

    let channels = ctl_json(&dir, &["list_channels"]);
    let channel = &channels[0];
    let pid = channel["pid"].as_str().unwrap_or_default().to_string();
    assert!(pid.ends_with(" (1)"), "the channel's name: {channel}");
    assert_eq!(
        (
            &channel["user"],
            &channel["consumer_count"],
            &channel["messages_unacknowledged"]
        ),
        (&json!("guest"), &json!(1), &json!(0))
    );

    let consumers = ctl_json(&dir, &["list_consumers"]);
    assert_eq!(
        consumers,
        json!([{"queue_name": "eu", "channel_pid": pid, "consumer_tag": "c-eu",
                "ack_required": true, "prefetch_count": 7, "active": true, "arguments": {}}])
    );
    let err = ctl_err(&dir, &["-p", "nowhere", "list_queues"]);
    assert!(
        err.contains("Virtual host 'nowhere' does not exist"),
        "{err}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_node_its_listeners_and_object_totals() {
    let dir = data_dir("ctl-status");
    let server = Server::start(&dir);
    let table = ctl_ok(&dir, &["status"]);
    // The default node name, as RabbitMQ's rabbit@host: tern@ and the host name.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
    let node = format!("tern@{}", host.trim());
    assert!(
        table.starts_with(&format!("Status of node {node} ...\n")),
        "{table}"
    );
    assert!(table.contains(&format!("\nnode\t{node}\n")), "{table}");
    assert!(table.contains(&format!("amqp {}", server.port)), "{table}");
    assert!(table.contains("\nalarms\tnone\n"), "{table}");
    let status = ctl_json(&dir, &["status"]);
    assert_eq!(status["object_totals"]["vhosts"], 1, "{status}");
    assert_eq!(status["object_totals"]["queues"], 0, "{status}");
    assert!(status["uptime_seconds"].is_u64(), "{status}");
    assert!(
        status["memory"]["used_bytes"].as_u64() > Some(0),
        "{status}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_closes_a_client_with_320_and_the_given_text() {
    let dir = data_dir("ctl-close");
    let server = Server::start(&dir);
    let conn = within("connect", login(&server, "guest", "guest"))
        .await
        .expect("guest connects");
    let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    conn.on_error(move |e| {
        if let lapin::Error::ProtocolError(err) = e {
            let _ = tx.send((err.get_id(), err.get_message().to_string()));
        }
    });
    let listed = ctl_json(&dir, &["list_connections", "name", "user"]);
    let name = listed[0]["name"]
        .as_str()
        .expect("a connection name")
        .to_string();
    let out = ctl_ok(&dir, &["close_connection", &name, "go away, please"]);
    assert!(out.contains("Closing connection"), "{out}");
    let got = within("connection.close", closed.recv()).await;
    assert_eq!(
        got,
        Some((320, "CONNECTION_FORCED - go away, please".to_string()))
    );
    let err = ctl_err(&dir, &["close_connection", "no such", "x"]);
    assert!(err.contains("not found"), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn export(dir: &Path) -> Value {
    let out = ctl_ok(dir, &["export_definitions", "-"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("export: {e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_definitions_import_into_a_fresh_node_unchanged() {
    let (a, b) = (data_dir("ctl-export"), data_dir("ctl-import"));
    let first = Server::start(&a);
    ctl(&a, &["add_user", "alice", "secret"], None);
    ctl_ok(&a, &["add_vhost", "shop"]);
    ctl_ok(
        &a,
        &["-p", "shop", "set_permissions", "alice", ".*", ".*", "^$"],
    );
    let (_conn, ch) = guest_channel(&first).await;
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare("events", ExchangeKind::Fanout, opts, FieldTable::default())
        .await
        .expect("exchange.declare");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(100));
    declare(&ch, "audit", args).await;
    ch.queue_bind(
        "audit",
        "events",
        "",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let file = a.join("defs.json");
    let file_arg = file.to_string_lossy().to_string();
    let said = ctl_ok(&a, &["export_definitions", &file_arg]);
    assert!(
        said.contains("Exporting definitions in JSON to a file at"),
        "{said}"
    );
    let exported: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the file")).expect("json");
    assert_eq!(exported, export(&a), "the file and - say the same");
    assert_eq!(exported["queues"][0]["name"], "audit", "{exported}");

    let second = Server::start(&b);
    let out = ctl(&b, &["import_definitions", &file_arg], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.starts_with("Imported "),
        "stderr is not a terminal: a plain line: {progress}"
    );
    assert_eq!(export(&b), exported);
    let uri = format!("amqp://alice:secret@127.0.0.1:{}/shop", second.port);
    within(
        "alice",
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await
    .expect("alice's password hash came along");
    drop((first, second));
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

/// A definitions file of `vhosts` ... `bindings` objects, as RabbitMQ exports them.
fn big_definitions(exchanges: usize, queues: usize) -> Value {
    let v = "bulk";
    let exchange = |i: usize| {
        json!({"name": format!("x{i}"), "vhost": v, "type": "direct",
        "durable": true, "auto_delete": false, "internal": false, "arguments": {}})
    };
    let queue = |i: usize| {
        json!({"name": format!("q{i}"), "vhost": v, "durable": true,
        "auto_delete": false, "arguments": {"x-max-length": 1000}})
    };
    let binding = |i: usize| {
        json!({"source": format!("x{}", i % exchanges), "vhost": v,
        "destination": format!("q{i}"), "destination_type": "queue",
        "routing_key": format!("k{i}"), "arguments": {}})
    };
    json!({
        "vhosts": [{"name": v}],
        "users": [{"name": "bulk-user", "password_hash": "", "tags": []}],
        "permissions": [{"user": "bulk-user", "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": (0..exchanges).map(exchange).collect::<Vec<_>>(),
        "queues": (0..queues).map(queue).collect::<Vec<_>>(),
        "bindings": (0..queues).map(binding).collect::<Vec<_>>(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_thousand_object_definitions_file_imports_in_chunks() {
    let dir = data_dir("ctl-bulk");
    let server = Server::start(&dir);
    let defs = big_definitions(1000, 2000);
    let file = dir.join("bulk.json");
    std::fs::write(&file, serde_json::to_vec(&defs).expect("json")).expect("write");
    let started = Instant::now();
    let out = ctl(&dir, &["import_definitions", &file.to_string_lossy()], None);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("Imported 5003 definitions in "),
        "{stderr}"
    );
    eprintln!("imported 5003 definitions in {took:?} ({stderr})");
    let queues = ctl_json(&dir, &["-p", "bulk", "list_queues", "name"]);
    assert_eq!(queues.as_array().map(Vec::len), Some(2000));
    let bindings = ctl_json(&dir, &["-p", "bulk", "list_bindings", "source_name"]);
    let explicit = bindings
        .as_array()
        .map(|b| b.iter().filter(|b| b["source_name"] != "").count());
    assert_eq!(explicit, Some(2000));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_larger_than_the_admin_request_limit_is_refused_naming_it() {
    let dir = data_dir("ctl-limit");
    let server = Server::start(&dir);
    let huge = "x".repeat(2 * 1024 * 1024);
    let defs = json!({"queues": [{"name": "huge", "vhost": "/", "durable": true,
                                  "arguments": {"x-note": huge}}]});
    let file = dir.join("huge.json");
    std::fs::write(&file, serde_json::to_vec(&defs).expect("json")).expect("write");
    let err = ctl_err(&dir, &["import_definitions", &file.to_string_lossy()]);
    assert!(
        err.contains("admin_max_request_bytes (1048576 bytes)"),
        "{err}"
    );
    let queues = ctl_ok(&dir, &["-q", "list_queues"]);
    assert_eq!(
        queues, "name\tmessages\n",
        "nothing imported, and the node still answers"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
