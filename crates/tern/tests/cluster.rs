//! `tern server` processes as a cluster on loopback: three nodes given one peer list form a
//! cluster by themselves and share their definitions (an exchange declared on one is there on
//! the others, a user added through one logs in on another); queues are refused in a cluster
//! for now, with 540; without a majority a change fails within seconds instead of hanging;
//! a node given peers but no secret does not start.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{data_dir, LoggedServer};
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

/// A free loopback port (bound and released: the server binds it again at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Node {
    server: LoggedServer,
    dir: PathBuf,
}

/// Start `n` nodes n1@localhost.. with one peer list and one secret; wait until all are ready.
fn cluster(n: usize, what: &str) -> Vec<Node> {
    let base = data_dir(what);
    std::fs::create_dir_all(&base).expect("dir");
    let secret = base.join("secret");
    std::fs::write(&secret, "a shared secret\n").expect("secret");
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| {
            let dir = base.join(format!("n{}", i + 1));
            let mut cmd = LoggedServer::command(&dir);
            cmd.args(["--node-name", &format!("n{}@localhost", i + 1)])
                .args(["--cluster-port", &ports[i].to_string()])
                .args(["--cluster-peers", &peers.join(",")])
                .arg("--cluster-secret-file")
                .arg(&secret);
            Node {
                server: LoggedServer::launch(cmd),
                dir,
            }
        })
        .collect();
    for node in &mut nodes {
        node.server.ready();
    }
    nodes
}

async fn connect(uri: &str) -> Connection {
    Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect")
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("ctl")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("tern ctl")
}

/// `tern ctl cluster_status` through `dir`'s node: its JSON.
fn cluster_status(dir: &Path) -> serde_json::Value {
    let out = ctl(dir, &["--format", "json", "cluster_status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `/api/nodes` of a node: each node's name and whether it runs.
async fn api_nodes(node: &LoggedServer) -> Vec<(String, bool)> {
    let url = format!("http://127.0.0.1:{}/api/nodes", node.management_port);
    let nodes: serde_json::Value = reqwest::Client::new()
        .get(url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("GET /api/nodes")
        .json()
        .await
        .expect("json");
    let all = nodes.as_array().expect("a list");
    all.iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("").to_string(),
                n["running"] == true,
            )
        })
        .collect()
}

fn protocol_code(e: &lapin::Error) -> Option<u16> {
    match e {
        lapin::Error::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_one_peer_list_form_a_cluster_and_share_definitions() {
    let mut nodes = cluster(3, "cluster-form");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let on_1 = connect(&nodes[0].server.uri()).await;
    let ch = on_1.create_channel().await.expect("channel");
    ch.exchange_declare(
        "shared",
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await
    .expect("declared on n1");

    // Declared on n1, it is on n2 and n3: a passive declare finds it at once.
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for node in &nodes[1..] {
        let conn = connect(&node.server.uri()).await;
        let ch = conn.create_channel().await.expect("channel");
        ch.exchange_declare(
            "shared",
            ExchangeKind::Fanout,
            passive,
            FieldTable::default(),
        )
        .await
        .expect("the exchange is on every node");
    }

    // A user added through n2 logs in on n3.
    let added = ctl(&nodes[1].dir, &["add_user", "alice", "wonder"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let allowed = ctl(
        &nodes[1].dir,
        &["set_permissions", "-p", "/", "alice", ".*", ".*", ".*"],
    );
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let alice = format!(
        "amqp://alice:wonder@127.0.0.1:{}/%2f",
        nodes[2].server.amqp_port
    );
    connect(&alice).await;

    // Queues are refused in a cluster, with 540 and the reason.
    let ch = on_1.create_channel().await.expect("channel");
    let refused = ch
        .queue_declare("q", QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect_err("no queues in a cluster yet");
    assert_eq!(protocol_code(&refused), Some(540), "{refused}");

    // Every node knows every node: tern ctl cluster_status and /api/nodes.
    let names = ["n1@localhost", "n2@localhost", "n3@localhost"];
    let status = cluster_status(&nodes[2].dir);
    assert_eq!(status["disk_nodes"], serde_json::json!(names), "{status}");
    assert_eq!(
        status["running_nodes"],
        serde_json::json!(names),
        "{status}"
    );
    assert_eq!(status["cluster_name"], "tern");
    let listed = api_nodes(&nodes[0].server).await;
    let all_running: Vec<(String, bool)> = names.iter().map(|n| (n.to_string(), true)).collect();
    assert_eq!(listed, all_running);

    // n2 and n3 stop: n1 alone has no majority, and a change fails in seconds.
    for node in &nodes[1..] {
        node.server.terminate();
    }
    for node in &mut nodes[1..] {
        assert!(node.server.wait_exit(Duration::from_secs(20)).success());
    }
    let conn = connect(&nodes[0].server.uri()).await;
    let ch = conn.create_channel().await.expect("channel");
    let started = Instant::now();
    let lonely = ch
        .exchange_declare(
            "lonely",
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
        .expect_err("no majority");
    assert_eq!(protocol_code(&lonely), Some(541), "{lonely}");
    let status = cluster_status(&nodes[0].dir);
    assert_eq!(
        status["running_nodes"],
        serde_json::json!(["n1@localhost"]),
        "{status}"
    );
    assert!(lonely.to_string().contains("majority"), "{lonely}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let base = nodes[0].dir.parent().map(Path::to_path_buf);
    drop(nodes);
    if let Some(base) = base {
        let _ = std::fs::remove_dir_all(base);
    }
}

#[test]
fn a_node_given_peers_but_no_secret_does_not_start() {
    let dir = data_dir("cluster-no-secret");
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["server", "--bind", "127.0.0.1", "--amqp-port", "0"])
        .args(["--management-port", "0", "--prometheus-port", "0"])
        .args(["--cluster-peers", "127.0.0.1:1,127.0.0.1:2"])
        .arg("--data-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run tern server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster_secret_file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
