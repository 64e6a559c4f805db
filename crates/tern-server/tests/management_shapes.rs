//! The management API's JSON shapes against RabbitMQ's: `fixtures/rabbitmq-api/` holds what a
//! real RabbitMQ (see its `VERSION.txt`) answered for each endpoint, recorded by
//! `scripts/record-rabbitmq-api.py` after it set up a small scene. This test sets up the same
//! scene on Tern (a vhost, a user, an exchange, a queue with three persistent messages, an
//! exchange-to-exchange binding, a connection with a prefetch, a confirming channel and a
//! consumer), asks Tern the same questions, and requires every field RabbitMQ's answer has to
//! be in Tern's, with the same JSON type, at every depth — except the few in [`NOT_OURS`],
//! each with its reason. Tools read these fields; a missing one breaks them.

mod common;

use common::api::Api;
use common::lapin_support as lp;
use common::{eventually, TestBroker};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Fields of RabbitMQ's answers that Tern does not give, and why. An entry is a path as
/// [`differences`] prints it, `*` matching any run of characters.
const NOT_OURS: &[(&str, &str)] = &[
    // The Erlang VM's own figures: Tern has no VM, no processes, no Mnesia, no Ra, no plugins.
    ("*.garbage_collection", "Erlang garbage collection"),
    ("*.reductions", "Erlang reductions"),
    (
        "/api/nodes[0].*",
        "Erlang VM, Mnesia, Ra and message-store internals (listed below)",
    ),
    (
        "/api/overview.statistics_db_event_queue",
        "Erlang stats database",
    ),
    ("*.contexts[0].cowboy_opts", "Erlang web server options"),
    ("*.contexts[0].ssl_opts", "Erlang TLS options"),
    (
        "/api/overview.listeners[0].socket_opts",
        "Erlang socket options",
    ),
    (
        "*.backing_queue_status",
        "classic queue v1 internals (q1..q4, delta)",
    ),
    (
        "/api/overview.release_series_support_status",
        "RabbitMQ's release-series support",
    ),
    // Rates: kept for the node's message_stats only (over 5 s); counters per object instead.
    (
        "*._details",
        "per-object rates are not sampled; Prometheus has the counters",
    ),
    (
        "*.*_details",
        "per-object rates are not sampled; Prometheus has the counters",
    ),
    (
        "/api/overview.sample_retention_policies",
        "no sample history is kept",
    ),
    (
        "/api/overview.message_stats.disk_reads",
        "store reads are not counted yet",
    ),
    (
        "/api/overview.message_stats.disk_writes",
        "store writes are not counted yet",
    ),
    // Per-object statistics RabbitMQ's stats database collects and Tern does not (yet).
    (
        "*.message_stats",
        "per-channel, per-exchange, per-queue message counts",
    ),
    ("*.incoming", "per-exchange and per-queue publisher stats"),
    ("*.outgoing", "per-exchange stats"),
    ("*.deliveries", "per-queue consumer-channel stats"),
    ("*.idle_since", "not tracked"),
    (
        "*.user_who_performed_action",
        "exchanges do not record who declared them",
    ),
    (
        "/api/connections[0].send_pend",
        "bytes waiting in the socket's buffer: not read",
    ),
    ("*.consumer_capacity", "not computed"),
    ("*.consumer_utilisation", "not computed"),
    ("*.memory", "memory is not measured per queue"),
    (
        "*.messages_persistent",
        "persistent messages are not counted apart",
    ),
    (
        "*.message_bytes_persistent",
        "persistent bytes are not counted apart",
    ),
    ("*.head_message_timestamp", "not tracked"),
    ("*.exclusive_consumer_tag", "not reported yet"),
    ("*.single_active_consumer_tag", "not reported yet"),
];

/// The node's fields that Tern gives (the rest of `/api/nodes` is the Erlang VM's): checked
/// apart, so that [`NOT_OURS`]'s blanket entry for nodes hides none of them.
const NODE_FIELDS: &[&str] = &[
    "name",
    "type",
    "running",
    "uptime",
    "os_pid",
    "processors",
    "mem_used",
    "mem_limit",
    "mem_alarm",
    "disk_free",
    "disk_free_limit",
    "disk_free_alarm",
    "sockets_used",
    "sockets_total",
    "rates_mode",
    "partitions",
    "exchange_types",
    "auth_mechanisms",
    "contexts",
    "fd_used",
    "fd_total",
    "db_dir",
    "log_files",
    "mem_calculation_strategy",
    "cluster_links",
    "channel_created",
    "channel_closed",
    "connection_created",
    "connection_closed",
    "queue_created",
    "queue_declared",
    "queue_deleted",
];

/// Keys whose values are the client's or the user's own (client properties, arguments,
/// message properties): their presence and type are compared, not what is inside.
const OPAQUE: &[&str] = &[
    "client_properties",
    "arguments",
    "properties",
    "headers",
    // Keyed by node name.
    "cluster_state",
];

/// Which item of a list to compare: the one whose field (first) has the value (second).
type Item = Option<(&'static str, &'static str)>;

/// (fixture file, Tern path, which item of a list to compare).
const ENDPOINTS: &[(&str, &str, Item)] = &[
    ("api_overview.json", "/api/overview", None),
    ("api_nodes.json", "/api/nodes", None),
    ("api_whoami.json", "/api/whoami", None),
    ("api_connections.json", "/api/connections", None),
    ("api_channels.json", "/api/channels", None),
    ("api_consumers.json", "/api/consumers", None),
    (
        "api_exchanges.json",
        "/api/exchanges",
        Some(("name", "shapes.x")),
    ),
    (
        "api_exchanges_%2F_shapes.x.json",
        "/api/exchanges/%2F/shapes.x",
        None,
    ),
    ("api_queues.json", "/api/queues", Some(("name", "shapes.q"))),
    (
        "api_queues_%2F_shapes.q.json",
        "/api/queues/%2F/shapes.q",
        None,
    ),
    (
        "api_bindings.json",
        "/api/bindings",
        Some(("source", "shapes.x")),
    ),
    (
        "api_bindings_%2F_e_shapes.x_q_shapes.q.json",
        "/api/bindings/%2F/e/shapes.x/q/shapes.q",
        None,
    ),
    (
        "api_exchanges_%2F_shapes.x_bindings_source.json",
        "/api/exchanges/%2F/shapes.x/bindings/source",
        None,
    ),
    (
        "api_queues_%2F_shapes.q_bindings.json",
        "/api/queues/%2F/shapes.q/bindings",
        None,
    ),
    ("api_vhosts.json", "/api/vhosts", Some(("name", "shapes"))),
    ("api_vhosts_shapes.json", "/api/vhosts/shapes", None),
    ("api_users.json", "/api/users", Some(("name", "shaper"))),
    ("api_users_shaper.json", "/api/users/shaper", None),
    (
        "api_permissions.json",
        "/api/permissions",
        Some(("user", "shaper")),
    ),
    ("api_topic-permissions.json", "/api/topic-permissions", None),
    ("api_definitions.json", "/api/definitions", None),
    (
        "api_health_checks_alarms.json",
        "/api/health/checks/alarms",
        None,
    ),
    (
        "api_health_checks_local-alarms.json",
        "/api/health/checks/local-alarms",
        None,
    ),
    (
        "api_health_checks_virtual-hosts.json",
        "/api/health/checks/virtual-hosts",
        None,
    ),
    (
        "api_queues_page.json",
        "/api/queues?page=1&page_size=2",
        None,
    ),
];

fn fixture(name: &str) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rabbitmq-api/");
    let text = std::fs::read_to_string(format!("{dir}{name}"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where `tern` lacks what `rabbit` has at `at`: a missing field, another JSON type (null on
/// either side passes: RabbitMQ says null for "not yet"), an empty list where RabbitMQ's has
/// items. Lists are compared by their first items.
fn differences(rabbit: &Value, tern: &Value, at: &str, out: &mut Vec<String>) {
    match (rabbit, tern) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(r), Value::Object(t)) => {
            for (key, rv) in r {
                let here = format!("{at}.{key}");
                match t.get(key) {
                    None => out.push(format!("{here}: missing")),
                    Some(tv) if OPAQUE.contains(&key.as_str()) => {
                        if kind(rv) != kind(tv) && !tv.is_null() {
                            out.push(format!(
                                "{here}: {} where RabbitMQ has {}",
                                kind(tv),
                                kind(rv)
                            ));
                        }
                    }
                    Some(tv) => differences(rv, tv, &here, out),
                }
            }
        }
        (Value::Array(r), Value::Array(t)) => match (r.first(), t.first()) {
            (Some(rv), Some(tv)) => differences(rv, tv, &format!("{at}[0]"), out),
            (Some(_), None) => out.push(format!("{at}: empty where RabbitMQ has items")),
            _ => {}
        },
        (r, t) if kind(r) != kind(t) => {
            out.push(format!("{at}: {} where RabbitMQ has {}", kind(t), kind(r)));
        }
        _ => {}
    }
}

fn allowed(difference: &str) -> bool {
    let path = difference.split(": ").next().unwrap_or("");
    NOT_OURS
        .iter()
        .any(|(pattern, _)| glob(pattern.as_bytes(), path.as_bytes()))
}

/// `pattern` against a path: `*` stands for any run of characters.
fn glob(pattern: &[u8], path: &[u8]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((b'*', rest)) => (0..=path.len()).any(|n| glob(rest, &path[n..])),
        Some((c, rest)) => path.first() == Some(c) && glob(rest, &path[1..]),
    }
}

/// The item of a list to compare: the one whose `field` is `value`.
fn pick(answer: &Value, which: Option<(&str, &str)>) -> Value {
    let Some((field, value)) = which else {
        return answer.clone();
    };
    let items = answer.as_array().expect("a list");
    let item = items.iter().find(|i| i[field] == value);
    let item = item.unwrap_or_else(|| panic!("no item with {field} = {value} in {answer}"));
    Value::Array(vec![item.clone()])
}

async fn must(api: &Api, method: Method, path: &str, body: Value) {
    let (status, answer) = api.guest(method.clone(), path, Some(body)).await;
    assert!(status.is_success(), "{method} {path}: {status} {answer}");
}

/// The recorder's scene, over the HTTP API.
async fn set_up_definitions(api: &Api) {
    must(api, Method::PUT, "/api/vhosts/shapes", json!({})).await;
    let shaper = json!({"password": "shaper", "tags": "management"});
    must(api, Method::PUT, "/api/users/shaper", shaper).await;
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    for user in ["guest", "shaper"] {
        let path = format!("/api/permissions/shapes/{user}");
        must(api, Method::PUT, &path, all.clone()).await;
    }
    let topic = json!({"exchange": "amq.topic", "write": "^shapes\\.", "read": ".*"});
    must(
        api,
        Method::PUT,
        "/api/topic-permissions/shapes/shaper",
        topic,
    )
    .await;
    let x = json!({"type": "topic", "durable": true, "auto_delete": false, "internal": false,
                   "arguments": {}});
    must(api, Method::PUT, "/api/exchanges/%2F/shapes.x", x).await;
    let q = json!({"durable": true, "auto_delete": false, "arguments": {"x-max-length": 1000}});
    must(api, Method::PUT, "/api/queues/%2F/shapes.q", q).await;
    let key = |k: &str| json!({"routing_key": k, "arguments": {}});
    must(
        api,
        Method::POST,
        "/api/bindings/%2F/e/shapes.x/q/shapes.q",
        key("a.#"),
    )
    .await;
    must(
        api,
        Method::POST,
        "/api/bindings/%2F/e/amq.topic/e/shapes.x",
        key("b"),
    )
    .await;
}

/// The recorder's client: prefetch 10, confirms, a consumer, three persistent messages.
async fn set_up_client(broker: &TestBroker) -> (lapin::Connection, lapin::Consumer) {
    let conn = lp::connect(broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    common::within("basic.qos", ch.basic_qos(10, BasicQosOptions::default()))
        .await
        .expect("qos");
    lp::declare_queue(&ch, "shapes.consumed").await;
    let consumer = common::within(
        "basic.consume",
        ch.basic_consume(
            "shapes.consumed",
            "shapes-consumer",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume");
    for i in 0..3 {
        let headers = lp::table(vec![
            ("x-shape", lp::long_str("yes")),
            ("n", AMQPValue::LongInt(i)),
        ]);
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("text/plain".into())
            .with_headers(headers);
        let body = format!("message {i}");
        lp::publish_with(&ch, "shapes.x", "a.b", body.as_bytes(), props).await;
    }
    (conn, consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_rabbitmq_answers_with_is_in_terns_answer() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    set_up_definitions(&api).await;
    let (_conn, _consumer) = set_up_client(&broker).await;
    eventually("three messages in shapes.q", || async {
        let (_, q) = api
            .guest(Method::GET, "/api/queues/%2F/shapes.q", None)
            .await;
        q["messages_ready"] == 3
    })
    .await;
    let mut found = Vec::new();
    for (file, path, which) in ENDPOINTS {
        let (status, answer) = api.guest(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {answer}");
        let rabbit = pick(&fixture(file), *which);
        differences(&rabbit, &pick(&answer, *which), path, &mut found);
    }
    found.extend(node_differences(&api).await);
    found.extend(posted_differences(&api).await);
    found.extend(error_differences(&api).await);
    let unexplained: Vec<&String> = found.iter().filter(|d| !allowed(d)).collect();
    assert!(
        unexplained.is_empty(),
        "Tern's answers lack what RabbitMQ's have:\n{}",
        unexplained
            .iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The node fields Tern gives, each in RabbitMQ's answer and with its type.
async fn node_differences(api: &Api) -> Vec<String> {
    let rabbit = &fixture("api_nodes.json")[0];
    let (_, nodes) = api.guest(Method::GET, "/api/nodes", None).await;
    let mut found = Vec::new();
    for field in NODE_FIELDS {
        assert!(
            rabbit.get(field).is_some(),
            "RabbitMQ's node has no {field}"
        );
        let at = format!("node.{field}");
        match nodes[0].get(field) {
            None => found.push(format!("{at}: missing")),
            Some(tern) => differences(&rabbit[field], tern, &at, &mut found),
        }
    }
    found
}

/// The answers of the two POSTs the recorder made: get (requeueing) and publish.
async fn posted_differences(api: &Api) -> Vec<String> {
    let mut found = Vec::new();
    let get = json!({"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto",
                     "truncate": 50000});
    let path = "/api/queues/%2F/shapes.q/get";
    let (status, got) = api.guest(Method::POST, path, Some(get)).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    differences(&fixture("api_queues_get.json"), &got, path, &mut found);
    let publish = json!({"properties": {}, "routing_key": "a.c", "payload": "hi",
                         "payload_encoding": "string"});
    let path = "/api/exchanges/%2F/shapes.x/publish";
    let (status, routed) = api.guest(Method::POST, path, Some(publish)).await;
    assert_eq!(status, StatusCode::OK, "{routed}");
    differences(
        &fixture("api_exchanges_publish.json"),
        &routed,
        path,
        &mut found,
    );
    found
}

/// A 404's body, as RabbitMQ words it, and a failed login's (whose reason changed across
/// RabbitMQ versions: "Login failed" in 3.10, "Not_Authorized" since).
async fn error_differences(api: &Api) -> Vec<String> {
    let rabbit = fixture("api_error_404.json");
    let (status, body) = api.guest(Method::GET, "/api/queues/%2F/nope", None).await;
    assert_eq!(json!(status.as_u16()), rabbit["status"]);
    assert_eq!(body, rabbit["body"], "the same words");
    let rabbit = fixture("api_error_401_bad_credentials.json");
    let wrong = Some(("guest", "wrong"));
    let (status, body) = api.call(Method::GET, "/api/overview", wrong, None).await;
    assert_eq!(json!(status.as_u16()), rabbit["status"]);
    assert_eq!(body["error"], rabbit["body"]["error"]);
    let mut found = Vec::new();
    differences(&rabbit["body"], &body, "401", &mut found);
    found
}
