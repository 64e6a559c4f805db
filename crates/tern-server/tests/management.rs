//! The management HTTP API driven by a real HTTP client (reqwest): RabbitMQ's paths, status
//! codes and JSON fields for users, vhosts, permissions, whoami, overview and health checks;
//! every route refuses a caller without valid credentials.

mod common;

use common::api::Api;
use common::lapin_support as lp;
use common::{within, TestBroker};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/whoami"),
    ("GET", "/api/overview"),
    ("GET", "/api/users"),
    ("GET", "/api/users/guest"),
    ("PUT", "/api/users/x"),
    ("DELETE", "/api/users/x"),
    ("GET", "/api/vhosts"),
    ("GET", "/api/vhosts/%2F"),
    ("PUT", "/api/vhosts/x"),
    ("DELETE", "/api/vhosts/x"),
    ("GET", "/api/permissions"),
    ("GET", "/api/permissions/%2F/guest"),
    ("PUT", "/api/permissions/%2F/guest"),
    ("DELETE", "/api/permissions/%2F/guest"),
    ("GET", "/api/exchanges"),
    ("GET", "/api/exchanges/%2F"),
    ("GET", "/api/exchanges/%2F/amq.direct"),
    ("PUT", "/api/exchanges/%2F/x"),
    ("DELETE", "/api/exchanges/%2F/amq.direct"),
    ("GET", "/api/queues"),
    ("GET", "/api/queues/%2F"),
    ("GET", "/api/queues/%2F/q"),
    ("PUT", "/api/queues/%2F/q"),
    ("DELETE", "/api/queues/%2F/q"),
    ("DELETE", "/api/queues/%2F/q/contents"),
    ("GET", "/api/bindings"),
    ("GET", "/api/bindings/%2F"),
    ("POST", "/api/bindings/%2F/e/amq.direct/q/q"),
    ("GET", "/api/connections"),
    ("GET", "/api/connections/x"),
    ("DELETE", "/api/connections/x"),
    ("GET", "/api/vhosts/%2F/connections"),
    ("GET", "/api/channels"),
    ("GET", "/api/channels/x"),
    ("GET", "/api/connections/x/channels"),
    ("GET", "/api/vhosts/%2F/channels"),
    ("GET", "/api/consumers"),
    ("GET", "/api/consumers/%2F"),
    ("POST", "/api/exchanges/%2F/amq.default/publish"),
    ("POST", "/api/queues/%2F/q/get"),
    ("GET", "/api/exchanges/%2F/amq.direct/bindings/source"),
    ("GET", "/api/exchanges/%2F/amq.direct/bindings/destination"),
    ("GET", "/api/queues/%2F/q/bindings"),
    ("GET", "/api/bindings/%2F/e/amq.direct/q/q"),
    ("GET", "/api/bindings/%2F/e/amq.direct/e/amq.topic"),
    ("POST", "/api/bindings/%2F/e/amq.direct/e/amq.topic"),
    ("GET", "/api/bindings/%2F/e/amq.direct/q/q/~"),
    ("DELETE", "/api/bindings/%2F/e/amq.direct/q/q/~"),
    ("GET", "/api/nodes"),
    ("GET", "/api/nodes/tern@localhost"),
    ("GET", "/api/health/checks/node-is-quorum-critical"),
    ("GET", "/api/definitions"),
    ("POST", "/api/definitions"),
    ("GET", "/api/health/checks/alarms"),
    ("GET", "/api/health/checks/local-alarms"),
    ("GET", "/api/health/checks/virtual-hosts"),
    ("GET", "/api/health/checks/is-in-service"),
    ("GET", "/api/health/checks/port-listener/5672"),
    ("GET", "/api/topic-permissions"),
    ("GET", "/api/topic-permissions/%2F/guest"),
    ("PUT", "/api/topic-permissions/%2F/guest"),
    ("DELETE", "/api/topic-permissions/%2F/guest"),
    ("GET", "/api/vhosts/%2F/permissions"),
    ("GET", "/api/vhosts/%2F/topic-permissions"),
    ("GET", "/api/users/guest/permissions"),
    ("GET", "/api/users/guest/topic-permissions"),
    ("GET", "/api/no-such-route"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_a_caller_without_valid_credentials() {
    // Hundreds of failed logins from 127.0.0.1: past the budget the right password would be
    // refused too (lapin_login.rs tests that), so this test lifts it.
    let Some(broker) = TestBroker::start_with(|c| c.login_failure_limit = u32::MAX).await else {
        return;
    };
    let api = Api::of(&broker);
    for (method, path) in ROUTES {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        for auth in [None, Some(("guest", "wrong")), Some(("nobody", "guest"))] {
            let body = (method == Method::PUT || method == Method::POST).then(|| json!({}));
            let (status, body) = api.call(method.clone(), path, auth, body).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert_eq!(body["error"], "not_authorized", "{method} {path}");
        }
    }
    // Nothing was changed by the refused calls.
    let (_, users) = api.guest(Method::GET, "/api/users", None).await;
    assert_eq!(users.as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_permissions_made_over_http_log_in_over_amqp() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let (s, who) = api.guest(Method::GET, "/api/whoami", None).await;
    assert_eq!(
        (s, who),
        (
            StatusCode::OK,
            json!({"name": "guest", "tags": ["administrator"]})
        )
    );
    let alice = json!({"password": "wonder", "tags": "monitoring,management"});
    let (s, _) = api
        .guest(Method::PUT, "/api/users/alice", Some(alice.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = api
        .guest(Method::PUT, "/api/users/alice", Some(alice))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "an update");
    let (_, user) = api.guest(Method::GET, "/api/users/alice", None).await;
    assert_eq!(user["tags"], json!(["monitoring", "management"]));
    assert_eq!(user["hashing_algorithm"], "rabbit_password_hashing_sha256");
    let perms = json!({"configure": ".*", "write": ".*", "read": ".*"});
    let (s, _) = api
        .guest(Method::PUT, "/api/permissions/%2F/alice", Some(perms))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, p) = api
        .guest(Method::GET, "/api/permissions/%2F/alice", None)
        .await;
    assert_eq!(
        p,
        json!({"user": "alice", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"})
    );
    let uri = broker.uri_for("alice", "wonder", "/");
    let conn = within(
        "connect",
        lapin::Connection::connect(&uri, Default::default()),
    )
    .await
    .expect("alice logs in over AMQP");
    lp::temp_queue(&lp::channel(&conn).await).await;
    // A monitoring user reads, but may not change anything.
    let (s, _) = api
        .call(
            Method::GET,
            "/api/overview",
            Some(("alice", "wonder")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = api
        .call(
            Method::PUT,
            "/api/vhosts/nope",
            Some(("alice", "wonder")),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, &body["reason"]),
        (StatusCode::UNAUTHORIZED, &json!("Not administrator user"))
    );
    let (s, _) = api.guest(Method::DELETE, "/api/users/alice", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = api.guest(Method::GET, "/api/users/alice", None).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "Object Not Found", "reason": "Not Found"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_hash_exported_from_rabbitmq_imports_as_it_is() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    // RabbitMQ 3.10's hash of the password "guest".
    let bob = json!({"password_hash": "D5HUAalDjGnDQDzMUv7Lg9QoBd3jeUpud2Bjjh7Fo44GJQxK",
                     "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["management"]});
    let (s, _) = api.guest(Method::PUT, "/api/users/bob", Some(bob)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, user) = api.guest(Method::GET, "/api/users/bob", None).await;
    assert_eq!(
        user["password_hash"],
        "D5HUAalDjGnDQDzMUv7Lg9QoBd3jeUpud2Bjjh7Fo44GJQxK"
    );
    let (s, who) = api
        .call(Method::GET, "/api/whoami", Some(("bob", "guest")), None)
        .await;
    assert_eq!((s, who["name"].clone()), (StatusCode::OK, json!("bob")));
    // A user without a management tag may not use the API at all.
    api.guest(
        Method::PUT,
        "/api/users/carol",
        Some(json!({"password": "c", "tags": ""})),
    )
    .await;
    let (s, body) = api
        .call(Method::GET, "/api/whoami", Some(("carol", "c")), None)
        .await;
    assert_eq!(
        (s, &body["reason"]),
        (StatusCode::UNAUTHORIZED, &json!("Not management user"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_created_listed_and_deleted() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    assert_eq!(
        api.guest(Method::PUT, "/api/vhosts/orders", Some(json!({})))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        api.guest(Method::PUT, "/api/vhosts/orders", Some(json!({})))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, list) = api.guest(Method::GET, "/api/vhosts", None).await;
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["/", "orders"]);
    assert_eq!(
        api.guest(Method::DELETE, "/api/vhosts/orders", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.guest(Method::DELETE, "/api/vhosts/orders", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.guest(Method::GET, "/api/vhosts/orders", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_and_the_body_limit() {
    let Some(broker) = TestBroker::start_with(|c| c.management_max_body_bytes = 1024).await else {
        return;
    };
    let api = Api::of(&broker);
    for check in [
        "alarms",
        "local-alarms",
        "virtual-hosts",
        "is-in-service",
        "node-is-quorum-critical",
    ] {
        let (s, body) = api
            .guest(Method::GET, &format!("/api/health/checks/{check}"), None)
            .await;
        assert_eq!(
            (s, body),
            (StatusCode::OK, json!({"status": "ok"})),
            "{check}"
        );
    }
    let (s, body) = api
        .guest(Method::GET, "/api/health/checks/port-listener/1", None)
        .await;
    assert_eq!(
        (s, &body["reason"]),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            &json!("No active listener")
        )
    );
    // Listeners asked for port 0 show the port they got, and port-listener finds them.
    let http = broker.handle().management_addr().port();
    let (_, overview) = api.guest(Method::GET, "/api/overview", None).await;
    let listed: Vec<(String, u64)> = overview["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            (
                l["protocol"].as_str().unwrap_or("").into(),
                l["port"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        listed.contains(&("http".into(), u64::from(http))),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("amqp".into(), u64::from(broker.port()))),
        "{listed:?}"
    );
    assert!(listed.iter().all(|(_, port)| *port != 0), "{listed:?}");
    let path = format!("/api/health/checks/port-listener/{http}");
    assert_eq!(api.guest(Method::GET, &path, None).await.0, StatusCode::OK);
    let big = json!({"password": "x".repeat(4096)});
    let (s, _) = api.guest(Method::PUT, "/api/users/big", Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        api.guest(Method::GET, "/api/users/big", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_queues_and_bindings_are_declared_listed_and_deleted() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let x = json!({"type": "topic", "durable": true, "auto_delete": false, "arguments": {}});
    assert_eq!(
        api.guest(Method::PUT, "/api/exchanges/%2F/orders", Some(x))
            .await
            .0,
        StatusCode::CREATED
    );
    let (_, got) = api
        .guest(Method::GET, "/api/exchanges/%2F/orders", None)
        .await;
    assert_eq!(
        got,
        json!({"name": "orders", "vhost": "/", "type": "topic", "durable": true,
                           "auto_delete": false, "internal": false, "arguments": {}})
    );
    let (_, all) = api.guest(Method::GET, "/api/exchanges", None).await;
    let names: Vec<&str> = all
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert!(
        names.contains(&"") && names.contains(&"amq.topic") && names.contains(&"orders"),
        "{names:?}"
    );
    let q = json!({"durable": true, "arguments": {"x-max-length": 10}});
    assert_eq!(
        api.guest(Method::PUT, "/api/queues/%2F/billing", Some(q))
            .await
            .0,
        StatusCode::CREATED
    );
    let bind = json!({"routing_key": "order.#", "arguments": {}});
    assert_eq!(
        api.guest(
            Method::POST,
            "/api/bindings/%2F/e/orders/q/billing",
            Some(bind)
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let (_, bindings) = api.guest(Method::GET, "/api/bindings/%2F", None).await;
    // As in RabbitMQ, the default exchange's implicit binding is listed first.
    assert_eq!(
        bindings,
        json!([{"source": "", "vhost": "/", "destination": "billing",
        "destination_type": "queue", "routing_key": "billing", "arguments": {}, "properties_key": "billing"},
        {"source": "orders", "vhost": "/", "destination": "billing",
        "destination_type": "queue", "routing_key": "order.#", "arguments": {}, "properties_key": "order.#"}])
    );
    // A message published over AMQP shows in the queue's counts.
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    lp::publish(&ch, "orders", "order.new", b"o-1").await;
    let (_, queue) = api
        .guest(Method::GET, "/api/queues/%2F/billing", None)
        .await;
    assert_eq!(
        (
            &queue["messages"],
            &queue["messages_ready"],
            &queue["consumers"],
            &queue["arguments"]
        ),
        (
            &json!(1),
            &json!(1),
            &json!(0),
            &json!({"x-max-length": 10})
        )
    );
    assert_eq!(
        api.guest(Method::DELETE, "/api/queues/%2F/billing", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    common::eventually("the queue to be gone", || async {
        api.guest(Method::GET, "/api/queues/%2F/billing", None)
            .await
            .0
            == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(
        api.guest(Method::DELETE, "/api/exchanges/%2F/orders", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.guest(Method::GET, "/api/exchanges/%2F/orders", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let bad = json!({"type": "no-such-type"});
    assert_eq!(
        api.guest(Method::PUT, "/api/exchanges/%2F/bad", Some(bad))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

/// A definitions file in RabbitMQ's export format, written after RabbitMQ's documentation
/// (users with hashes and tags, vhosts, permissions, topic permissions, exchanges, queues,
/// bindings; parameters and policies present and empty).
fn rabbitmq_definitions() -> Value {
    json!({
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "product_name": "RabbitMQ",
        "product_version": "3.10.8",
        "users": [
            {"name": "ops", "password_hash": "D5HUAalDjGnDQDzMUv7Lg9QoBd3jeUpud2Bjjh7Fo44GJQxK",
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"], "limits": {}},
            {"name": "app", "password_hash": "ezoFrVJX9Z6PrdoEw+8JVbiqcatFjGU6/HCuKH0sbTDL0AUK",
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "", "limits": {}}
        ],
        "vhosts": [
            {"name": "/", "limits": [], "metadata": {"description": "Default virtual host", "tags": []}},
            {"name": "shop", "limits": [], "metadata": {"description": "", "tags": []}}
        ],
        "permissions": [
            {"user": "ops", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": "app", "vhost": "shop", "configure": "^app\\.", "write": ".*", "read": ".*"}
        ],
        "topic_permissions": [
            {"user": "app", "vhost": "shop", "exchange": "events", "write": "^app\\.", "read": ".*"}
        ],
        "parameters": [], "global_parameters": [], "policies": [],
        "queues": [
            {"name": "orders", "vhost": "shop", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "classic", "x-max-length": 1000}}
        ],
        "exchanges": [
            {"name": "events", "vhost": "shop", "type": "topic", "durable": true,
             "auto_delete": false, "internal": false, "arguments": {}}
        ],
        "bindings": [
            {"source": "events", "vhost": "shop", "destination": "orders", "destination_type": "queue",
             "routing_key": "order.*", "arguments": {}}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_definitions_file_imports_and_exports_back() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let defs = rabbitmq_definitions();
    let (s, _) = api
        .guest(Method::POST, "/api/definitions", Some(defs.clone()))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, out) = api.guest(Method::GET, "/api/definitions", None).await;
    assert_eq!(s, StatusCode::OK);
    for key in ["queues", "exchanges", "bindings", "topic_permissions"] {
        assert_eq!(out[key], defs[key], "{key} round-trips");
    }
    let permissions = out["permissions"].as_array().expect("permissions");
    assert!(
        permissions.contains(&defs["permissions"][1]),
        "{permissions:?}"
    );
    let users: Vec<&str> = out["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(users, ["app", "guest", "ops"]);
    let ops = out["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == "ops")
        .expect("ops");
    assert_eq!(
        ops["password_hash"], defs["users"][0]["password_hash"],
        "the hash is kept as it is"
    );
    // The imported hash works: ops logs in with RabbitMQ's password, over AMQP and HTTP.
    let uri = broker.uri_for("ops", "guest", "/");
    within(
        "connect",
        lapin::Connection::connect(&uri, Default::default()),
    )
    .await
    .expect("ops logs in with the password its RabbitMQ hash is of");
    assert_eq!(
        api.call(Method::GET, "/api/whoami", Some(("ops", "guest")), None)
            .await
            .0,
        StatusCode::OK
    );
    // Importing the same file again changes nothing and is not an error.
    assert_eq!(
        api.guest(Method::POST, "/api/definitions", Some(defs))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_listed_with_their_details_and_closed_with_320() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let (conn, mut errors) = lp::connect_watched(&broker).await;
    let _ch = lp::channel(&conn).await;
    let _ch2 = lp::channel(&conn).await;
    let (_, list) = api.guest(Method::GET, "/api/connections", None).await;
    let list = list.as_array().expect("list").clone();
    assert_eq!(list.len(), 1);
    let c = &list[0];
    assert_eq!(
        (&c["user"], &c["vhost"], &c["protocol"], &c["channels"]),
        (
            &json!("guest"),
            &json!("/"),
            &json!("AMQP 0-9-1"),
            &json!(2)
        )
    );
    assert_eq!(c["client_properties"]["product"], "lapin", "{c}");
    let name = c["name"].as_str().expect("name").to_string();
    assert!(name.contains(" -> 127.0.0.1:"), "{name}");
    let (_, per_vhost) = api
        .guest(Method::GET, "/api/vhosts/%2F/connections", None)
        .await;
    assert_eq!(per_vhost.as_array().map(Vec::len), Some(1));
    let path = format!(
        "/api/connections/{}",
        name.replace(' ', "%20").replace('>', "%3E")
    );
    let (s, got) = api.guest(Method::GET, &path, None).await;
    assert_eq!((s, &got["name"]), (StatusCode::OK, &json!(name)));
    let req = api
        .http
        .delete(format!("{}{path}", api.base))
        .basic_auth("guest", Some("guest"))
        .header("x-reason", "maintenance");
    let resp = within("delete", req.send()).await.expect("delete");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let closed = errors.next_hard().await;
    assert_eq!(
        (closed.code, closed.text.as_str()),
        (320, "CONNECTION_FORCED - maintenance")
    );
    broker.await_open_connections(0).await;
    assert_eq!(
        api.guest(Method::DELETE, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_reports_its_memory_disk_and_limits() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let (s, nodes) = api.guest(Method::GET, "/api/nodes", None).await;
    assert_eq!(s, StatusCode::OK);
    let node = &nodes[0];
    assert_eq!(
        (&node["name"], &node["running"]),
        (&json!("tern@localhost"), &json!(true))
    );
    assert!(
        node["mem_used"].as_u64().is_some_and(|m| m > 1 << 20),
        "{node}"
    );
    assert!(node["disk_free"].as_u64().is_some_and(|d| d > 0), "{node}");
    assert_eq!(node["disk_free_limit"], 50_000_000);
    assert_eq!(
        (&node["mem_alarm"], &node["disk_free_alarm"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(node["os_pid"], std::process::id().to_string());
    let (s, one) = api
        .guest(Method::GET, "/api/nodes/tern@localhost", None)
        .await;
    assert_eq!(
        (s, &one["name"]),
        (StatusCode::OK, &json!("tern@localhost"))
    );
    assert_eq!(
        api.guest(Method::GET, "/api/nodes/rabbit@x", None).await.0,
        StatusCode::NOT_FOUND
    );
}

/// An import is written in batches (one metadata log entry each) and stops at the first
/// refusal, naming it; what came before stays, as in RabbitMQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_stops_at_the_first_refusal_and_keeps_what_came_before() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let queues: Vec<Value> = (0..300)
        .map(|i| {
            json!({"name": format!("q{i}"), "vhost": "/", "durable": true,
                        "auto_delete": false, "arguments": {}})
        })
        .collect();
    let defs = json!({
        "queues": queues,
        "bindings": [
            {"source": "amq.direct", "vhost": "/", "destination": "q1",
             "destination_type": "queue", "routing_key": "k", "arguments": {}},
            {"source": "amq.direct", "vhost": "/", "destination": "missing",
             "destination_type": "queue", "routing_key": "k", "arguments": {}},
            {"source": "amq.direct", "vhost": "/", "destination": "q2",
             "destination_type": "queue", "routing_key": "k", "arguments": {}},
        ],
    });
    let (s, body) = api
        .guest(Method::POST, "/api/definitions", Some(defs))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let reason = body["reason"].as_str().unwrap_or("");
    assert!(reason.contains("'missing'"), "names the refusal: {reason}");
    let (s, _) = api.guest(Method::GET, "/api/queues/%2F/q299", None).await;
    assert_eq!(s, StatusCode::OK, "the queues, past the first batch, stay");
    let (_, q1) = api
        .guest(Method::GET, "/api/queues/%2F/q1/bindings", None)
        .await;
    let (_, q2) = api
        .guest(Method::GET, "/api/queues/%2F/q2/bindings", None)
        .await;
    let (n1, n2) = (q1.as_array().map(Vec::len), q2.as_array().map(Vec::len));
    assert_eq!(
        (n1, n2),
        (Some(2), Some(1)),
        "bound before the refusal, not after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_and_the_per_user_and_per_vhost_lists() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let path = "/api/topic-permissions/%2F/guest";
    assert_eq!(
        api.guest(Method::GET, path, None).await.0,
        StatusCode::NOT_FOUND
    );
    let topic = json!({"exchange": "amq.topic", "write": "^a\\.", "read": ".*"});
    let (s, _) = api.guest(Method::PUT, path, Some(topic.clone())).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = api.guest(Method::PUT, path, Some(topic)).await;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "the same exchange again: an update"
    );
    let expected = json!([{"user": "guest", "vhost": "/", "exchange": "amq.topic",
                           "write": "^a\\.", "read": ".*"}]);
    for list in [
        path,
        "/api/topic-permissions",
        "/api/users/guest/topic-permissions",
        "/api/vhosts/%2F/topic-permissions",
    ] {
        assert_eq!(
            api.guest(Method::GET, list, None).await,
            (StatusCode::OK, expected.clone()),
            "{list}"
        );
    }
    let (s, perms) = api
        .guest(Method::GET, "/api/users/guest/permissions", None)
        .await;
    assert_eq!((s, perms[0]["vhost"].clone()), (StatusCode::OK, json!("/")));
    let (s, perms) = api
        .guest(Method::GET, "/api/vhosts/%2F/permissions", None)
        .await;
    assert_eq!(
        (s, perms[0]["user"].clone()),
        (StatusCode::OK, json!("guest"))
    );
    let missing = api
        .guest(Method::GET, "/api/users/nobody/permissions", None)
        .await;
    assert_eq!(missing.0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.guest(Method::DELETE, path, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.guest(Method::GET, path, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.guest(Method::DELETE, path, None).await.0,
        StatusCode::NOT_FOUND
    );
}
