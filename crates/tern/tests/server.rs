//! `tern server` as a process: graceful shutdown on SIGTERM, JSON logs with the connection's
//! context, and configuration from a file and the environment.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{data_dir, LoggedServer};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;

const QUEUE: &str = "kept-over-shutdown";

async fn connect(uri: &str) -> Connection {
    Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect")
}

async fn durable_queue(conn: &Connection) -> lapin::Channel {
    let ch = conn.create_channel().await.expect("channel");
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(QUEUE, opts, FieldTable::default())
        .await
        .expect("declare");
    ch
}

/// The code and text of the connection.close the server sends.
fn watch_close(conn: &Connection) -> tokio::sync::mpsc::UnboundedReceiver<(u16, String)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    conn.on_error(move |e| {
        if let lapin::Error::ProtocolError(e) = e {
            let _ = tx.send((e.get_id(), e.get_message().to_string()));
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_320_keeps_confirmed_messages_and_exits_0() {
    let dir = data_dir("sigterm");
    let mut server = LoggedServer::start(&dir);
    let conn = connect(&server.uri()).await;
    let mut closes = watch_close(&conn);
    let ch = durable_queue(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let props = BasicProperties::default().with_delivery_mode(2);
    let confirm = ch
        .basic_publish("", QUEUE, BasicPublishOptions::default(), b"kept", props)
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());

    server.terminate();
    let close = tokio::time::timeout(common::LOG_WAIT, closes.recv()).await;
    let (code, text) = close.expect("a close in time").expect("a close");
    assert_eq!(code, 320, "{text}");
    assert_eq!(
        text,
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    );
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");

    let server = LoggedServer::start(&dir);
    let recovered = server.logged(|l| l["message"] == "recovered");
    let recovered = recovered.expect("the queue logs its recovery");
    assert_eq!(recovered["messages"], 1);
    let queue = span(recovered, "queue").expect("in the queue's span");
    assert_eq!(
        (&queue["queue"], &queue["vhost"]),
        (&QUEUE.into(), &"/".into())
    );
    let conn = connect(&server.uri()).await;
    let ch = durable_queue(&conn).await;
    let got = ch
        .basic_get(QUEUE, BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get");
    let body = got.map(|m| m.delivery.data.clone());
    assert_eq!(body.as_deref(), Some(&b"kept"[..]));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The span called `name` (with its fields) that a JSON line was logged in.
fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_connection_and_channel_context() {
    let dir = data_dir("json-logs");
    let mut server = LoggedServer::start(&dir);
    let conn = connect(&server.uri()).await;
    let opened = server.wait_for("connection opened", |l| l["message"] == "connection opened");
    let context = span(&opened, "connection").expect("a connection span");
    assert_eq!(context["user"], "guest");
    assert_eq!(context["vhost"], "/");
    let name = context["conn"].as_str().expect("the connection's name");
    let local = format!(" -> 127.0.0.1:{}", server.amqp_port);
    assert!(
        name.starts_with("127.0.0.1:") && name.ends_with(&local),
        "{name}"
    );
    assert_eq!(opened["level"], "INFO");

    let ch = conn.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let missing = ch.queue_declare("no-such-queue", passive, FieldTable::default());
    assert!(missing.await.is_err());
    let error = server.wait_for("channel error", |l| l["message"] == "channel error");
    assert_eq!(error["channel"], 1);
    assert!(error["error"]
        .as_str()
        .is_some_and(|e| e.contains("NOT_FOUND")));
    let context = span(&error, "connection").expect("a connection span");
    assert_eq!(context["conn"], name);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A span below the filter is disabled: the connection's must not be, or a `warn` filter
/// would leave its warnings without the connection they are about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_keep_the_connection_context_when_info_is_filtered_out() {
    let dir = data_dir("warn-logs");
    let mut cmd = LoggedServer::command(&dir);
    cmd.args(["--log-level", "warn,tern::server=info"]);
    let mut server = LoggedServer::spawn(cmd);
    let bad = format!("amqp://guest:wrong@127.0.0.1:{}/%2f", server.amqp_port);
    let refused = Connection::connect(&bad, ConnectionProperties::default()).await;
    assert!(refused.is_err(), "a wrong password is refused");
    let failed = server.wait_for("authentication failed", |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("authentication failed"))
    });
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["user"], "guest");
    let context = span(&failed, "connection").expect("a connection span");
    let name = context["conn"].as_str().expect("the connection's name");
    assert!(name.starts_with("127.0.0.1:"), "{name}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_named_by_tern_config_and_variables_configure_the_server() {
    let dir = data_dir("config-file");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tern.toml");
    let text =
        "[auth]\ndefault_user = \"alice\"\ndefault_pass = \"wonder\"\n\n[log]\nformat = \"json\"\n";
    std::fs::write(&file, text).expect("write tern.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.arg("server")
        .env("TERN_CONFIG", &file)
        .env("TERN_BIND", "127.0.0.1")
        .env("TERN_AMQP_PORT", "0")
        .env("TERN_MANAGEMENT_PORT", "0")
        .env("TERN_PROMETHEUS_PORT", "0")
        .env("TERN_DATA_DIR", dir.join("data"));
    let server = LoggedServer::spawn(cmd);
    let alice = format!("amqp://alice:wonder@127.0.0.1:{}/%2f", server.amqp_port);
    connect(&alice).await;
    let guest = Connection::connect(&server.uri(), ConnectionProperties::default()).await;
    assert!(guest.is_err(), "no guest when default_user is alice");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_config_file_stops_the_start_naming_the_key() {
    let dir = data_dir("bad-config");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tern.toml");
    std::fs::write(&file, "[listeners]\namqp_prot = 5673\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["server", "--config"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("run tern server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2: [listeners] amqp_prot: unknown key"),
        "{err}"
    );
    assert!(err.contains(&file.display().to_string()), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("server")
        .env("TERN_HEARTBEAT_SECS", "soon")
        .output()
        .expect("run tern server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TERN_HEARTBEAT_SECS=\"soon\""), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Exchanges in the definitions import in flight at SIGTERM: enough 256-command batches that
/// the metadata log stops before the last one is written.
const IMPORTED_EXCHANGES: usize = 50_000;

/// Declare queues until the server refuses; tell `running` after the first.
async fn declare_until_refused(uri: String, running: tokio::sync::mpsc::UnboundedSender<()>) {
    let conn = connect(&uri).await;
    let ch = conn.create_channel().await.expect("channel");
    for i in 0u64.. {
        let name = format!("race-{i}");
        let declared =
            ch.queue_declare(&name, QueueDeclareOptions::default(), FieldTable::default());
        if declared.await.is_err() {
            return;
        }
        let _ = running.send(());
    }
}

async fn import_exchanges(api: String) -> reqwest::StatusCode {
    let exchanges: Vec<Value> = (0..IMPORTED_EXCHANGES)
        .map(|i| serde_json::json!({"name": format!("imported-{i}"), "vhost": "/", "type": "fanout", "durable": true}))
        .collect();
    reqwest::Client::new()
        .post(format!("{api}/api/definitions"))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({ "exchanges": exchanges }))
        .send()
        .await
        .expect("an answer to the import")
        .status()
}

/// SIGTERM while clients declare and a definitions import is half written: the writes that
/// reach the stopped metadata log are refused (the import gets 503) and the process still
/// shuts down cleanly and exits 0 (it used to exit 70 from inside the library).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_racing_definition_changes_still_exits_0() {
    let dir = data_dir("sigterm-race");
    let mut server = LoggedServer::start(&dir);
    let api = format!("http://127.0.0.1:{}", server.management_port);
    let (running, mut declaring) = tokio::sync::mpsc::unbounded_channel();
    let declarers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(declare_until_refused(server.uri(), running.clone())))
        .collect();
    for _ in 0..4 {
        declaring.recv().await.expect("a declarer running");
    }
    let import = tokio::spawn(import_exchanges(api.clone()));
    let http = reqwest::Client::new();
    let first = format!("{api}/api/exchanges/%2f/imported-0");
    let deadline = std::time::Instant::now() + common::LOG_WAIT;
    loop {
        let got = http
            .get(&first)
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
        if got.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the import never began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    server.terminate();
    assert_eq!(
        import.await.expect("import task"),
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "the import's writes after the metadata log stopped are refused"
    );
    server.wait_for("stopped", |l| l["message"] == "stopped");
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
    for d in declarers {
        d.await.expect("a declarer ends with the server's refusal");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
