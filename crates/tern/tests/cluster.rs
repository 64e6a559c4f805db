//! `tern server` processes as a cluster on loopback: three nodes given one peer list form a
//! cluster by themselves and share their definitions (an exchange declared on one is there on
//! the others, a user added through one logs in on another); without a majority a change
//! fails within seconds instead of hanging; a node given peers but no secret does not start.
//! Any node serves any queue: publish through one node to a queue homed on another, consume
//! through a third; a queue whose node is down answers 404 until the node is back, with
//! nothing lost.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{data_dir, LoggedServer};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

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

/// How the nodes of one test's cluster are started (and started again).
struct Spec {
    base: PathBuf,
    secret: PathBuf,
    ports: Vec<u16>,
    /// Environment every node gets.
    env: Vec<(&'static str, &'static str)>,
}

impl Spec {
    fn new(n: usize, what: &str) -> Spec {
        let base = data_dir(what);
        std::fs::create_dir_all(&base).expect("dir");
        let secret = base.join("secret");
        std::fs::write(&secret, "a shared secret\n").expect("secret");
        let ports = (0..n).map(|_| free_port()).collect();
        Spec {
            base,
            secret,
            ports,
            env: Vec::new(),
        }
    }

    /// Node `i` (0-based: n1@localhost is 0), not waited for.
    fn launch(&self, i: usize) -> Node {
        self.launch_with(i, &[])
    }

    /// Node `i` with these environment variables set.
    fn launch_with(&self, i: usize, env: &[(&str, &str)]) -> Node {
        let peers: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let dir = self.base.join(format!("n{}", i + 1));
        let mut cmd = LoggedServer::command(&dir);
        cmd.args(["--node-name", &format!("n{}@localhost", i + 1)])
            .args(["--cluster-port", &self.ports[i].to_string()])
            .args(["--cluster-peers", &peers.join(",")])
            .arg("--cluster-secret-file")
            .arg(&self.secret)
            .envs(self.env.iter().copied())
            .envs(env.iter().copied());
        Node {
            server: LoggedServer::launch(cmd),
            dir,
        }
    }
}

/// Start `n` nodes n1@localhost.. with one peer list and one secret; wait until all are ready.
fn cluster(n: usize, what: &str) -> (Spec, Vec<Node>) {
    cluster_with(n, what, Vec::new())
}

/// [`cluster`], every node with the environment `env`.
fn cluster_with(n: usize, what: &str, env: Vec<(&'static str, &'static str)>) -> (Spec, Vec<Node>) {
    let mut spec = Spec::new(n, what);
    spec.env = env;
    let mut nodes: Vec<Node> = (0..n).map(|i| spec.launch(i)).collect();
    for node in &mut nodes {
        node.server.ready();
    }
    (spec, nodes)
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
    let (spec, mut nodes) = cluster(3, "cluster-form");
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

    // A fourth, fresh node given the cluster's addresses joins it by itself.
    let mut spec = spec;
    spec.ports.push(free_port());
    // It starts with a disk alarm (a free-space limit no disk meets).
    let mut n4 = spec.launch_with(3, &[("TERN_DISK_FREE_LIMIT_BYTES", "1000000000000000000")]);
    n4.server.ready();
    let four = [
        "n1@localhost",
        "n2@localhost",
        "n3@localhost",
        "n4@localhost",
    ];
    let status = cluster_status(&nodes[0].dir);
    assert_eq!(status["running_nodes"], serde_json::json!(four), "{status}");

    // n1's API shows the others as they describe themselves, and n4's alarm in the
    // cluster-wide check (not in n1's local one).
    let listed = api_get(&nodes[0].server, "/api/nodes").await;
    let n4_facts = listed
        .as_array()
        .and_then(|all| all.iter().find(|n| n["name"] == "n4@localhost"))
        .cloned()
        .expect("n4 listed");
    assert_eq!(n4_facts["disk_free_alarm"], true, "{n4_facts}");
    assert!(n4_facts["mem_used"].as_u64().unwrap_or(0) > 0, "{n4_facts}");
    let (code, alarms) = api_status(&nodes[0].server, "/api/health/checks/alarms").await;
    assert_eq!(code, 503, "{alarms}");
    assert_eq!(alarms["alarms"][0]["node"], "n4@localhost", "{alarms}");
    let (code, _) = api_status(&nodes[0].server, "/api/health/checks/local-alarms").await;
    assert_eq!(code, 200);
    let (code, _) = api_status(&nodes[0].server, "/api/health/checks/is-in-service").await;
    assert_eq!(code, 200);
    let (_c4, on_4) = channel(&n4).await;
    declare(&on_4, "on-4", false).await;
    let joined = ctl(&n4.dir, &["join_cluster", "n1@localhost"]);
    let said = String::from_utf8_lossy(&joined.stdout);
    assert!(said.contains("already a member"), "{said}");

    // Running, it cannot be forgotten; stopped, it can, and its queue goes with it.
    let refused = ctl(&nodes[0].dir, &["forget_cluster_node", "n4@localhost"]);
    assert!(!refused.status.success());
    n4.server.terminate();
    assert!(n4.server.wait_exit(Duration::from_secs(20)).success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let forgot = ctl(&nodes[0].dir, &["forget_cluster_node", "n4@localhost"]);
        if forgot.status.success() {
            break;
        }
        // The others may still hold their links to n4 for a heartbeat or two.
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&forgot.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = cluster_status(&nodes[1].dir);
    assert_eq!(status["disk_nodes"], serde_json::json!(names), "{status}");
    let (_c2, on_2) = channel(&nodes[1]).await;
    let gone = passive_declare_error(&on_2, "on-4").await;
    assert_eq!(protocol_code(&gone), Some(404), "{gone}");

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
    drop(nodes);
    let _ = std::fs::remove_dir_all(&spec.base);
}

/// Declare a durable queue through `ch` (`balanced`: homed on the node with the fewest).
async fn declare(ch: &Channel, name: &str, balanced: bool) -> lapin::Queue {
    let mut args = FieldTable::default();
    if balanced {
        let value = AMQPValue::LongString("balanced".into());
        args.insert("x-queue-leader-locator".into(), value);
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name, durable, args)
        .await
        .expect("declare")
}

/// Publish persistent messages `prefix-0..n` to `queue` through `ch` (in confirm mode);
/// every one must be acked.
async fn publish_confirmed(ch: &Channel, queue: &str, prefix: &str, n: usize) {
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let mut confirms = Vec::new();
    for i in 0..n {
        let body = format!("{prefix}-{i}");
        let options = BasicPublishOptions::default();
        let sent = ch
            .basic_publish("", queue, options, body.as_bytes(), persistent.clone())
            .await
            .expect("publish");
        confirms.push(sent);
    }
    for confirm in confirms {
        assert!(confirm.await.expect("confirm").is_ack(), "nacked");
    }
}

/// GET `path` from a node's management API: the status code and the JSON.
async fn api_status(node: &LoggedServer, path: &str) -> (u16, serde_json::Value) {
    let url = format!("http://127.0.0.1:{}{path}", node.management_port);
    let answer = reqwest::Client::new()
        .get(url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("GET");
    let code = answer.status().as_u16();
    (code, answer.json().await.expect("json"))
}

async fn api_get(node: &LoggedServer, path: &str) -> serde_json::Value {
    api_status(node, path).await.1
}

/// The value of the Prometheus series that starts with `prefix` on a node.
async fn prometheus_value(node: &LoggedServer, prefix: &str) -> f64 {
    let listening = node.logged(|l| l["message"] == "Prometheus metrics listening");
    let addr = listening
        .and_then(|l| l["prometheus_addr"].as_str())
        .expect("its address");
    let url = format!("http://{addr}/metrics");
    let body = reqwest::get(url).await.expect("GET /metrics").text().await;
    let body = body.expect("a body");
    let line = body.lines().find(|l| l.starts_with(prefix));
    let line = line.unwrap_or_else(|| panic!("no {prefix} in {body}"));
    let value = line.rsplit(' ').next().and_then(|v| v.parse().ok());
    value.expect("a number")
}

/// `/api/queues/%2f/NAME` of a node.
async fn api_queue(node: &LoggedServer, name: &str) -> serde_json::Value {
    let url = format!(
        "http://127.0.0.1:{}/api/queues/%2f/{name}",
        node.management_port
    );
    reqwest::Client::new()
        .get(url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("GET a queue")
        .json()
        .await
        .expect("json")
}

/// What a passive queue.declare of `name` through `ch` is refused with (it must be refused).
async fn passive_declare_error(ch: &Channel, name: &str) -> lapin::Error {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(name, passive, FieldTable::default())
        .await
        .expect_err("a passive declare that fails")
}

async fn channel(node: &Node) -> (Connection, Channel) {
    let conn = connect(&node.server.uri()).await;
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_queue() {
    // A node unreachable for a second counts as down (its transient queues go).
    let down_after = vec![("TERN_CLUSTER_NODE_DOWN_AFTER_MS", "1000")];
    let (spec, mut nodes) = cluster_with(3, "cluster-queues", down_after);
    let (_c2, on_2) = channel(&nodes[1]).await;
    let (_c1, on_1) = channel(&nodes[0]).await;
    let (_c3, on_3) = channel(&nodes[2]).await;

    // Declared through n2: its home is n2. Published through n1 with confirms.
    declare(&on_2, "work", false).await;
    assert_eq!(
        api_queue(&nodes[0].server, "work").await["node"],
        "n2@localhost"
    );
    on_1.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    publish_confirmed(&on_1, "work", "m", 100).await;
    let counted = declare(&on_1, "work", false).await;
    assert_eq!(counted.message_count(), 100, "declare-ok counts through n1");

    // Consumed through n3 with acks and a prefetch, in order.
    on_3.basic_qos(10, BasicQosOptions::default())
        .await
        .expect("qos");
    let options = BasicConsumeOptions::default();
    let mut consumer = on_3
        .basic_consume("work", "c3", options, FieldTable::default())
        .await
        .expect("consume through n3");
    for i in 0..100 {
        let next = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
        let delivery = next
            .expect("a delivery in time")
            .expect("open")
            .expect("ok");
        assert_eq!(delivery.data, format!("m-{i}").as_bytes());
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    on_3.basic_cancel("c3", Default::default())
        .await
        .expect("cancel");

    // basic.get, purge and delete through other nodes.
    publish_confirmed(&on_1, "work", "g", 5).await;
    let got = on_1
        .basic_get("work", BasicGetOptions::default())
        .await
        .expect("get");
    let got = got.expect("a message");
    assert_eq!(got.delivery.data, b"g-0");
    assert_eq!(got.message_count, 4);
    got.delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    let purged = on_3.queue_purge("work", QueuePurgeOptions::default()).await;
    assert_eq!(purged.expect("purge"), 4);
    let deleted = on_1
        .queue_delete("work", QueueDeleteOptions::default())
        .await;
    assert_eq!(deleted.expect("delete through n1"), 0);
    let gone = on_2
        .queue_declare(
            "work",
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("deleted everywhere");
    assert_eq!(protocol_code(&gone), Some(404), "{gone}");

    // Balanced: each new queue goes to the node with the fewest.
    let (_c2b, on_2) = channel(&nodes[1]).await;
    let mut homes = Vec::new();
    for name in ["b1", "b2", "b3"] {
        declare(&on_1, name, true).await;
        let queue = api_queue(&nodes[0].server, name).await;
        homes.push(queue["node"].as_str().unwrap_or("").to_string());
    }
    homes.sort();
    assert_eq!(homes, ["n1@localhost", "n2@localhost", "n3@localhost"]);
    let b3_home = api_queue(&nodes[0].server, "b3").await["node"].clone();
    assert_eq!(b3_home, "n3@localhost", "ties go to the smallest name");

    // Each node's Prometheus reports the queues it runs: one each here.
    for node in &nodes {
        let queues = prometheus_value(&node.server, "rabbitmq_queues ").await;
        assert_eq!(queues, 1.0, "rabbitmq_queues on {:?}", node.dir);
    }

    // n3 stops: its consumer through n1 is cancelled, its queue answers 404 until it is back.
    // Its transient queues, the exclusive one of a client connected to it included, go.
    let (_c3b, on_3) = channel(&nodes[2]).await;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    on_3.queue_declare("ex3", exclusive, FieldTable::default())
        .await
        .expect("exclusive on n3");
    let transient = QueueDeclareOptions::default();
    on_3.queue_declare("t3", transient, FieldTable::default())
        .await
        .expect("transient on n3");
    publish_confirmed(&on_1, "b3", "kept", 3).await;
    let (_c1b, on_1b) = channel(&nodes[0]).await;
    let mut watcher = on_1b
        .basic_consume(
            "b3",
            "w",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume b3 through n1");
    for _ in 0..3 {
        let next = tokio::time::timeout(Duration::from_secs(10), watcher.next()).await;
        next.expect("in time").expect("open").expect("ok");
    }
    nodes[2].server.terminate();
    assert!(nodes[2].server.wait_exit(Duration::from_secs(20)).success());
    let ended = tokio::time::timeout(Duration::from_secs(10), watcher.next()).await;
    assert!(
        ended.expect("cancelled in time").is_none(),
        "the consumer is cancelled"
    );
    drop(_c1b);
    let down = passive_declare_error(&on_2, "b3").await;
    assert_eq!(protocol_code(&down), Some(404), "{down}");
    assert!(down.to_string().contains("n3@localhost"), "{down}");
    assert_eq!(api_queue(&nodes[0].server, "b3").await["state"], "down");
    let (c1d, _) = channel(&nodes[0]).await;
    for name in ["ex3", "t3"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ch = c1d.create_channel().await.expect("channel");
            let e = passive_declare_error(&ch, name).await;
            assert_eq!(protocol_code(&e), Some(404), "{e}");
            if e.to_string().contains(&format!("no queue '{name}'")) {
                break;
            }
            assert!(Instant::now() < deadline, "{name} still there: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // n3 is back: nothing lost (the three were delivered, never acked: redelivered).
    nodes[2] = spec.launch(2);
    nodes[2].server.ready();
    let (c1, mut on_1) = channel(&nodes[0]).await;
    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bodies.len() < 3 && Instant::now() < deadline {
        match on_1.basic_get("b3", BasicGetOptions { no_ack: true }).await {
            Ok(Some(got)) => {
                assert!(got.delivery.redelivered);
                bodies.push(String::from_utf8_lossy(&got.delivery.data).to_string());
            }
            Ok(None) => panic!("b3 is back empty"),
            // n1 has no link to n3 yet (404, channel closed): a fresh channel, and again.
            Err(e) => {
                assert_eq!(protocol_code(&e), Some(404), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                on_1 = c1.create_channel().await.expect("channel");
            }
        }
    }
    assert_eq!(bodies, ["kept-0", "kept-1", "kept-2"]);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&spec.base);
}

/// Run `tern server` on `dir` with `args` added, expecting it to refuse to start: its stderr.
fn refused_start(dir: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["server", "--bind", "127.0.0.1", "--amqp-port", "0"])
        .args(["--management-port", "0", "--prometheus-port", "0"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run tern server");
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_node_given_peers_but_no_secret_does_not_start() {
    let dir = data_dir("cluster-no-secret");
    let err = refused_start(
        &dir,
        &[
            "--cluster-peers".as_ref(),
            "127.0.0.1:1,127.0.0.1:2".as_ref(),
        ],
    );
    assert!(err.contains("cluster_secret_file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_tls_needs_certificate_key_and_ca_together() {
    let dir = data_dir("cluster-tls-partial");
    std::fs::create_dir_all(&dir).expect("dir");
    let secret = dir.join("secret");
    std::fs::write(&secret, "s").expect("secret");
    let cert = dir.join("node.pem");
    let args = [
        "--cluster-peers".as_ref(),
        "127.0.0.1:1".as_ref(),
        "--cluster-secret-file".as_ref(),
        secret.as_os_str(),
        "--cluster-tls-cert-file".as_ref(),
        cert.as_os_str(),
    ];
    let err = refused_start(&dir, &args);
    assert!(err.contains("all three"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
