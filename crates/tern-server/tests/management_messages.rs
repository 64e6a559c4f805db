//! The management API's live views and message actions through a real HTTP client: channels
//! and consumers of a lapin client, publish to an exchange and get from a queue (RabbitMQ's
//! bodies and answers), every binding form, and pagination of the lists.

mod common;

use common::api::Api;
use common::lapin_support as lp;
use common::TestBroker;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Percent-encode a path segment (connection and channel names hold spaces and `>`).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not a list: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_consumers_show_what_the_client_opened() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    lp::declare_queue(&ch, "work").await;
    ch.basic_qos(7, BasicQosOptions::default())
        .await
        .expect("qos");
    let opts = BasicConsumeOptions {
        exclusive: true,
        ..Default::default()
    };
    let args = lp::table(vec![("x-priority", lapin::types::AMQPValue::LongInt(3))]);
    let _consumer = lp::consume_with(&ch, "work", opts, args).await;
    let _idle = lp::channel(&conn).await;
    lp::publish(&ch, "", "work", b"m").await;

    let (s, channels) = api.guest(Method::GET, "/api/channels", None).await;
    assert_eq!(s, StatusCode::OK);
    let channels = list(&channels);
    assert_eq!(channels.len(), 2, "{channels:?}");
    let first = &channels[0];
    let conn_name = first["connection_details"]["name"].as_str().expect("name");
    assert_eq!(first["name"], format!("{conn_name} (1)"));
    assert_eq!(
        (
            &first["number"],
            &first["user"],
            &first["vhost"],
            &first["confirm"]
        ),
        (&json!(1), &json!("guest"), &json!("/"), &json!(true))
    );
    assert_eq!(
        (&first["prefetch_count"], &first["consumer_count"]),
        (&json!(7), &json!(1))
    );
    assert_eq!(channels[1]["confirm"], false);
    // The unacked delivery shows once the consumer has it.
    let (_, one) = api
        .guest(
            Method::GET,
            &format!("/api/channels/{}", enc(&format!("{conn_name} (1)"))),
            None,
        )
        .await;
    assert_eq!(one["number"], 1, "{one}");
    let per_conn = format!("/api/connections/{}/channels", enc(conn_name));
    let (_, of_conn) = api.guest(Method::GET, &per_conn, None).await;
    assert_eq!(list(&of_conn).len(), 2);

    let (_, consumers) = api.guest(Method::GET, "/api/consumers/%2F", None).await;
    let consumers = list(&consumers);
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    let c = &consumers[0];
    assert_eq!(c["queue"], json!({"name": "work", "vhost": "/"}));
    assert_eq!(
        (&c["ack_required"], &c["exclusive"], &c["prefetch_count"]),
        (&json!(true), &json!(true), &json!(7))
    );
    assert_eq!(c["arguments"]["x-priority"], 3);
    assert_eq!(c["channel_details"]["connection_name"], conn_name);
    assert!(c["consumer_tag"]
        .as_str()
        .is_some_and(|t| t.starts_with("amq.ctag-")));
    // A channel that closes disappears from the list.
    _idle.close(200, "bye").await.expect("close");
    let (_, channels) = api.guest(Method::GET, "/api/channels", None).await;
    assert_eq!(list(&channels).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_over_http_is_got_over_http_and_amqp() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    lp::declare_queue(&ch, "inbox").await;
    let body = json!({"properties": {"delivery_mode": 2, "headers": {"h": "<b>x</b>"},
                      "content_type": "text/plain"},
                      "routing_key": "inbox", "payload": "hello", "payload_encoding": "string"});
    let publish = "/api/exchanges/%2F/amq.default/publish";
    let (s, routed) = api.guest(Method::POST, publish, Some(body)).await;
    assert_eq!((s, routed), (StatusCode::OK, json!({"routed": true})));
    let binary = json!({"properties": {}, "routing_key": "inbox",
                        "payload": "AAEC/w==", "payload_encoding": "base64"});
    api.guest(Method::POST, publish, Some(binary)).await;
    let nowhere = json!({"properties": {}, "routing_key": "nobody", "payload": "x",
                         "payload_encoding": "string"});
    let (_, r) = api.guest(Method::POST, publish, Some(nowhere)).await;
    assert_eq!(r, json!({"routed": false}));

    // ack_requeue_true leaves them there, redelivered.
    let get = json!({"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto",
                     "truncate": 50000});
    let (s, got) = api
        .guest(Method::POST, "/api/queues/%2F/inbox/get", Some(get))
        .await;
    assert_eq!(s, StatusCode::OK);
    let got = list(&got);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0],
        json!({"payload_bytes": 5, "redelivered": false, "exchange": "", "routing_key": "inbox",
               "message_count": 1, "payload": "hello", "payload_encoding": "string",
               "properties": {"delivery_mode": 2, "content_type": "text/plain",
                              "headers": {"h": "<b>x</b>"}}})
    );
    assert_eq!(
        (&got[1]["payload"], &got[1]["payload_encoding"]),
        (&json!("AAEC/w=="), &json!("base64"))
    );
    assert_eq!(lp::message_count(&ch, "inbox").await, 2);
    // ack_requeue_false takes one away for good.
    let take = json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"});
    let (_, got) = api
        .guest(Method::POST, "/api/queues/%2F/inbox/get", Some(take))
        .await;
    assert_eq!(list(&got)[0]["redelivered"], true);
    let left = lp::drain(&ch, "inbox").await;
    assert_eq!(left.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_get_need_the_callers_permissions_and_valid_bodies() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    lp::declare_queue(&ch, "secret").await;
    let user = json!({"password": "pw", "tags": "management"});
    api.guest(Method::PUT, "/api/users/mona", Some(user)).await;
    let perms = json!({"configure": "", "write": "^amq\\.topic$", "read": ""});
    api.guest(Method::PUT, "/api/permissions/%2F/mona", Some(perms))
        .await;
    let mona = Some(("mona", "pw"));
    let msg = json!({"properties": {}, "routing_key": "secret", "payload": "x",
                     "payload_encoding": "string"});
    let (s, e) = api
        .call(
            Method::POST,
            "/api/exchanges/%2F/amq.default/publish",
            mona,
            Some(msg.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    assert!(
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused for user 'mona'")),
        "{e}"
    );
    let (s, _) = api
        .call(
            Method::POST,
            "/api/exchanges/%2F/amq.topic/publish",
            mona,
            Some(msg.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let get = json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"});
    let (s, _) = api
        .call(Method::POST, "/api/queues/%2F/secret/get", mona, Some(get))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let bad = [
        (
            "/api/queues/%2F/secret/get",
            json!({"count": 1, "ackmode": "whatever"}),
        ),
        (
            "/api/exchanges/%2F/amq.default/publish",
            json!({"routing_key": "secret", "payload": "%%%", "payload_encoding": "base64"}),
        ),
        (
            "/api/exchanges/%2F/amq.default/publish",
            json!({"routing_key": "secret", "payload": "x", "properties": {"user_id": "bob"}}),
        ),
    ];
    for (path, body) in bad {
        let (s, e) = api.guest(Method::POST, path, Some(body)).await;
        assert_eq!(
            (s, &e["error"]),
            (StatusCode::BAD_REQUEST, &json!("bad_request")),
            "{path}"
        );
    }
    let missing = [
        (
            "/api/queues/%2F/nope/get",
            json!({"count": 1, "ackmode": "ack_requeue_true"}),
        ),
        ("/api/exchanges/%2F/nope/publish", msg),
    ];
    for (path, body) in missing {
        assert_eq!(
            api.guest(Method::POST, path, Some(body)).await.0,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        lp::message_count(&ch, "secret").await,
        0,
        "nothing was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_in_every_form_are_listed_made_and_deleted() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let put = |path: &'static str, body: Value| {
        let api = &api;
        async move { api.guest(Method::PUT, path, Some(body)).await.0 }
    };
    assert_eq!(
        put("/api/exchanges/%2F/up", json!({"type": "topic"})).await,
        StatusCode::CREATED
    );
    assert_eq!(
        put("/api/exchanges/%2F/down", json!({"type": "fanout"})).await,
        StatusCode::CREATED
    );
    assert_eq!(
        put("/api/queues/%2F/sink", json!({})).await,
        StatusCode::CREATED
    );
    let e2e = "/api/bindings/%2F/e/up/e/down";
    let resp = api
        .http
        .post(format!("{}{e2e}", api.base))
        .basic_auth("guest", Some("guest"))
        .json(&json!({"routing_key": "a.#", "arguments": {}}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["location"], "a.%23");
    let e2q = "/api/bindings/%2F/e/down/q/sink";
    let with_args = json!({"routing_key": "", "arguments": {"x-match": "any"}});
    assert_eq!(
        api.guest(Method::POST, e2q, Some(with_args)).await.0,
        StatusCode::CREATED
    );

    let (_, between) = api.guest(Method::GET, e2e, None).await;
    let between = list(&between);
    assert_eq!(between.len(), 1);
    assert_eq!(
        (
            &between[0]["destination_type"],
            &between[0]["properties_key"]
        ),
        (&json!("exchange"), &json!("a.#"))
    );
    let (_, source) = api
        .guest(Method::GET, "/api/exchanges/%2F/up/bindings/source", None)
        .await;
    assert_eq!(list(&source).len(), 1);
    let (_, dest) = api
        .guest(
            Method::GET,
            "/api/exchanges/%2F/down/bindings/destination",
            None,
        )
        .await;
    assert_eq!(list(&dest).len(), 1);
    let (_, of_queue) = api
        .guest(Method::GET, "/api/queues/%2F/sink/bindings", None)
        .await;
    let of_queue = list(&of_queue);
    assert_eq!(
        of_queue.len(),
        2,
        "the default binding and down's: {of_queue:?}"
    );
    assert_eq!(of_queue[0]["source"], "");
    let key = of_queue[1]["properties_key"]
        .as_str()
        .expect("key")
        .to_string();
    assert!(key.starts_with("~~"), "{key}");

    // Messages go up -> down -> sink, over AMQP.
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    lp::publish(&ch, "up", "a.b", b"through").await;
    assert_eq!(lp::drain(&ch, "sink").await, vec!["through".to_string()]);

    let one = format!("{e2q}/{}", enc(&key));
    assert_eq!(api.guest(Method::GET, &one, None).await.0, StatusCode::OK);
    assert_eq!(
        api.guest(Method::DELETE, &one, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.guest(Method::DELETE, &one, None).await.0,
        StatusCode::NOT_FOUND
    );
    let e2e_one = format!("{e2e}/{}", enc("a.#"));
    assert_eq!(
        api.guest(Method::DELETE, &e2e_one, None).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, all) = api.guest(Method::GET, "/api/bindings/%2F", None).await;
    assert!(list(&all).iter().all(|b| b["source"] == ""), "{all}");
    assert_eq!(
        api.guest(Method::GET, "/api/bindings/%2F/e/up/e/nope", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.guest(Method::GET, "/api/bindings/%2F/e/up/x/down", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_lists_page_filter_and_sort_as_rabbitmq_does() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    for i in 0..12 {
        let path = format!("/api/queues/%2F/page-{i:02}");
        api.guest(Method::PUT, &path, Some(json!({"durable": false})))
            .await;
    }
    let (s, page) = api
        .guest(
            Method::GET,
            "/api/queues?page=2&page_size=5&name=page-&sort=name",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            &page["page"],
            &page["page_count"],
            &page["page_size"],
            &page["item_count"]
        ),
        (&json!(2), &json!(3), &json!(5), &json!(5))
    );
    assert_eq!(
        (&page["filtered_count"], &page["total_count"]),
        (&json!(12), &json!(12))
    );
    assert_eq!(page["items"][0]["name"], "page-05");
    let (_, re) = api
        .guest(
            Method::GET,
            "/api/queues/%2F?page=1&name=%5Epage-0%5B0-2%5D%24&use_regex=true",
            None,
        )
        .await;
    assert_eq!(re["filtered_count"], 3, "{re}");
    let (_, rev) = api
        .guest(Method::GET, "/api/queues?sort=name&sort_reverse=true", None)
        .await;
    assert_eq!(list(&rev)[0]["name"], "page-11");
    for bad in [
        "/api/queues?page=9",
        "/api/queues?page=1&page_size=501",
        "/api/exchanges?page=1&name=(&use_regex=true",
    ] {
        let (s, e) = api.guest(Method::GET, bad, None).await;
        assert_eq!(
            (s, &e["error"]),
            (StatusCode::BAD_REQUEST, &json!("bad_request")),
            "{bad}"
        );
    }
    for paged in [
        "/api/exchanges",
        "/api/connections",
        "/api/channels",
        "/api/consumers",
        "/api/vhosts",
        "/api/users",
    ] {
        let (s, p) = api
            .guest(Method::GET, &format!("{paged}?page=1"), None)
            .await;
        assert_eq!(
            (s, p["page"].clone()),
            (StatusCode::OK, json!(1)),
            "{paged}: {p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_messages_with_rates_and_queue_totals() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let api = Api::of(&broker);
    let (_, before) = api.guest(Method::GET, "/api/overview", None).await;
    assert_eq!(before["message_stats"]["publish"], 0, "{before}");
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    lp::declare_queue(&ch, "counted").await;
    for i in 0..6 {
        lp::publish(&ch, "", "counted", format!("m{i}").as_bytes()).await;
    }
    let mut consumer = lp::consume(&ch, "counted").await;
    lp::take_acked(&mut consumer, 4).await;
    common::eventually("acks counted", || async {
        let (_, o) = api.guest(Method::GET, "/api/overview", None).await;
        o["message_stats"]["ack"] == 4
    })
    .await;
    let (_, o) = api.guest(Method::GET, "/api/overview", None).await;
    let stats = &o["message_stats"];
    assert_eq!(
        (
            &stats["publish"],
            &stats["confirm"],
            &stats["deliver"],
            &stats["deliver_get"]
        ),
        (&json!(6), &json!(6), &json!(6), &json!(6))
    );
    assert!(
        stats["publish_details"]["rate"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{stats}"
    );
    assert_eq!(
        o["queue_totals"],
        json!({"messages": 2, "messages_ready": 0, "messages_unacknowledged": 2})
    );
    assert_eq!(
        (
            &o["object_totals"]["channels"],
            &o["object_totals"]["consumers"]
        ),
        (&json!(1), &json!(1))
    );
}
