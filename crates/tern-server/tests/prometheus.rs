//! `/metrics` scraped over real HTTP while lapin drives real AMQP traffic: every line is valid
//! Prometheus text format (0.0.4), every series has HELP and TYPE, RabbitMQ's series names
//! carry the right values, per-queue series go with their queue, label values are escaped.
//!
//! The format is checked by a small strict parser here rather than a crate: it must reject what
//! a lenient parser would accept (a sample before its TYPE, an unknown escape, a family split in
//! two), and it unescapes label values so a weird queue name can be compared with the original.

mod common;

use std::collections::{HashMap, HashSet};

use common::lapin_support as lp;
use common::{eventually, within, TestBroker};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

// ---------------------------------------------------------------------------------------------
// A strict parser of the text exposition format.

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

#[derive(Debug, Default)]
struct Scrape {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// Every sample of `name` whose labels include `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        let has =
            |s: &Sample, (k, v): &(&str, &str)| s.labels.iter().any(|(a, b)| a == k && b == v);
        let matching = |s: &&Sample| s.name == name && labels.iter().all(|l| has(s, l));
        self.samples.iter().filter(matching).collect()
    }

    /// The one value of `name` with `labels`; panics if there is not exactly one.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(name, labels).as_slice() {
            [one] => one.value,
            other => panic!("{name}{labels:?}: expected one sample, found {other:?}"),
        }
    }

    /// A node-wide counter or gauge (labels, if any, ignored).
    fn total(&self, name: &str) -> f64 {
        self.value(name, &[])
    }

    fn names(&self) -> HashSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Undo the escapes of a HELP text (`\\`, `\n`) or label value (also `\"`); panics on others.
fn unescape(text: &str, quote: bool) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quote => out.push('"'),
            other => panic!("bad escape \\{other:?} in {text:?}"),
        }
    }
    out
}

/// `{a="x",b="y"}` at the start of `rest`: the labels and what follows the `}`.
fn parse_labels(rest: &str) -> (Vec<(String, String)>, &str) {
    let mut labels = Vec::new();
    let mut rest = rest.strip_prefix('{').expect("labels open with {");
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        assert!(valid_name(key) && !key.contains(':'), "label name {key:?}");
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.expect("closing quote of a label value");
        labels.push((key.to_string(), unescape(&after[..end], true)));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).expect("a value after the name");
    let name = &line[..name_end];
    assert!(valid_name(name), "metric name {name:?}");
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end..])
    } else {
        (Vec::new(), &line[name_end..])
    };
    let mut fields = rest
        .strip_prefix(' ')
        .expect("space before the value")
        .split(' ');
    let value = fields.next().expect("a value");
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("value {v:?}")),
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().expect("timestamp");
    }
    assert!(fields.next().is_none(), "trailing fields");
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// Parse a whole scrape, panicking (with the line) on anything malformed. Every sample's family
/// has HELP and TYPE before it, a family's samples are together, no two share their labels.
fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    let mut help = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current = String::new();
    let mut seen = HashSet::new();
    assert!(text.ends_with('\n'), "the last line ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("# HELP name text");
            assert!(
                valid_name(name) && help.insert(name.to_string()),
                "HELP {name}"
            );
            unescape(text, false);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            let kinds = ["counter", "gauge", "untyped", "summary", "histogram"];
            assert!(kinds.contains(&kind), "TYPE {kind}");
            assert!(!scrape.types.contains_key(name), "second TYPE for {name}");
            scrape.types.insert(name.to_string(), kind.to_string());
            finished.insert(std::mem::replace(&mut current, name.to_string()));
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "line {line:?}");
            let sample = parse_sample(line);
            let name = &sample.name;
            assert!(help.contains(name), "{name} has no HELP: {line}");
            assert!(
                scrape.types.contains_key(name),
                "{name} has no TYPE: {line}"
            );
            assert!(
                *name == current && !finished.contains(name),
                "{name} out of its family"
            );
            let key = format!("{name}{:?}", sample.labels);
            assert!(seen.insert(key), "duplicate sample {line}");
            scrape.samples.push(sample);
        }
    }
    scrape
}

// ---------------------------------------------------------------------------------------------
// Scraping.

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn scrape_path(broker: &TestBroker, path: &str) -> (String, Scrape) {
    let port = broker.handle().prometheus_addr().port();
    let url = format!("http://127.0.0.1:{port}{path}");
    let resp = within("GET /metrics", reqwest::get(&url))
        .await
        .expect("http");
    assert_eq!(resp.status(), 200, "{path}");
    let content_type = resp.headers().get("content-type").cloned();
    assert_eq!(content_type.expect("content type"), CONTENT_TYPE);
    let text = within("body", resp.text()).await.expect("body");
    let parsed = parse(&text);
    (text, parsed)
}

async fn scrape(broker: &TestBroker) -> Scrape {
    scrape_path(broker, "/metrics").await.1
}

fn global(name: &str) -> String {
    format!("rabbitmq_global_messages_{name}_total")
}

/// Poll until `check` holds of a scrape (for what the broker counts after the client has sent
/// it, such as acks: no event tells the client it was counted).
async fn await_scrape(broker: &TestBroker, what: &str, check: impl Fn(&Scrape) -> bool) {
    eventually(what, || async { check(&scrape(broker).await) }).await;
}

async fn declare_durable(ch: &Channel, name: &str) {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(
        "queue.declare",
        ch.queue_declare(name, opts, FieldTable::default()),
    )
    .await
    .expect("queue.declare");
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn get(ch: &Channel, queue: &str, no_ack: bool) -> lapin::message::BasicGetMessage {
    within("basic.get", ch.basic_get(queue, BasicGetOptions { no_ack }))
        .await
        .expect("basic.get")
        .expect("a message")
}

// ---------------------------------------------------------------------------------------------
// Tests.

const REQUIRED: &[&str] = &[
    "rabbitmq_global_messages_received_total",
    "rabbitmq_global_messages_routed_total",
    "rabbitmq_global_messages_unroutable_dropped_total",
    "rabbitmq_global_messages_unroutable_returned_total",
    "rabbitmq_global_messages_confirmed_total",
    "rabbitmq_global_messages_delivered_total",
    "rabbitmq_global_messages_delivered_consume_auto_ack_total",
    "rabbitmq_global_messages_delivered_consume_manual_ack_total",
    "rabbitmq_global_messages_delivered_get_manual_ack_total",
    "rabbitmq_global_messages_delivered_get_auto_ack_total",
    "rabbitmq_global_messages_redelivered_total",
    "rabbitmq_global_messages_acknowledged_total",
    "rabbitmq_connections",
    "rabbitmq_channels",
    "rabbitmq_consumers",
    "rabbitmq_queues",
    "rabbitmq_connections_opened_total",
    "rabbitmq_connections_closed_total",
    "rabbitmq_channels_opened_total",
    "rabbitmq_channels_closed_total",
    "rabbitmq_queues_declared_total",
    "rabbitmq_queues_created_total",
    "rabbitmq_queues_deleted_total",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queue_messages",
    "rabbitmq_queue_consumers",
    "rabbitmq_process_resident_memory_bytes",
    "rabbitmq_resident_memory_limit_bytes",
    "rabbitmq_disk_space_available_bytes",
    "rabbitmq_alarms_memory_used_watermark",
    "rabbitmq_alarms_free_disk_space_watermark",
    "rabbitmq_build_info",
    "rabbitmq_identity_info",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_endpoints_serve_every_rabbitmq_series_in_valid_text_format() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    lp::declare_queue(&ch, "q").await;
    for path in ["/metrics", "/metrics/per-object"] {
        let (_, s) = scrape_path(&broker, path).await;
        let names = s.names();
        let missing: Vec<_> = REQUIRED.iter().filter(|n| !names.contains(*n)).collect();
        assert!(missing.is_empty(), "{path} lacks {missing:?}");
        assert_eq!(
            s.types["rabbitmq_global_messages_received_total"],
            "counter"
        );
        assert_eq!(s.types["rabbitmq_queue_messages_ready"], "gauge");
        assert_eq!(s.types["rabbitmq_identity_info"], "untyped");
        let identity = [
            ("rabbitmq_node", "tern@localhost"),
            ("rabbitmq_cluster", "tern@localhost"),
        ];
        assert_eq!(s.value("rabbitmq_identity_info", &identity), 1.0);
        assert_eq!(
            s.value(
                "rabbitmq_queue_messages_ready",
                &[("queue", "q"), ("vhost", "/")]
            ),
            0.0
        );
        assert_eq!(s.total("rabbitmq_connections"), 1.0);
        assert_eq!(s.total("rabbitmq_channels"), 1.0);
        assert_eq!(s.total("rabbitmq_queues"), 1.0);
        assert_eq!(s.total("rabbitmq_alarms_memory_used_watermark"), 0.0);
        assert!(s.total("rabbitmq_process_resident_memory_bytes") > 0.0);
    }
    let port = broker.handle().prometheus_addr().port();
    let other = reqwest::get(format!("http://127.0.0.1:{port}/api/overview"));
    assert_eq!(within("GET", other).await.expect("http").status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_confirmed_publishes_gets_acks_and_consumes() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    declare_durable(&ch, "q").await;
    const N: usize = 20;
    for i in 0..N {
        lp::publish_with(&ch, "", "q", format!("m{i}").as_bytes(), persistent()).await;
    }
    // A confirm the client has seen is counted, and the queue holds the message.
    let q = [("queue", "q"), ("vhost", "/")];
    let s = scrape(&broker).await;
    assert!(s.total(&global("received")) >= N as f64);
    assert_eq!(s.total(&global("received_confirm")), N as f64);
    assert_eq!(s.total(&global("routed")), N as f64);
    assert_eq!(s.total(&global("confirmed")), N as f64);
    assert_eq!(s.value("rabbitmq_queue_messages_ready", &q), N as f64);
    assert_eq!(s.value("rabbitmq_queue_messages", &q), N as f64);

    let got: Vec<_> = [
        get(&ch, "q", false).await,
        get(&ch, "q", false).await,
        get(&ch, "q", false).await,
    ]
    .into();
    let s = scrape(&broker).await;
    assert_eq!(s.total(&global("delivered_get_manual_ack")), 3.0);
    assert_eq!(s.total(&global("delivered")), 3.0);
    assert_eq!(s.value("rabbitmq_queue_messages_ready", &q), 17.0);
    assert_eq!(s.value("rabbitmq_queue_messages_unacked", &q), 3.0);
    assert_eq!(s.value("rabbitmq_queue_messages", &q), 20.0);

    let [a, b, c]: [_; 3] = got.try_into().expect("three");
    for m in [a, b] {
        within("ack", m.delivery.acker.ack(Default::default()))
            .await
            .expect("ack");
    }
    let requeue = BasicRejectOptions { requeue: true };
    within("reject", c.delivery.acker.reject(requeue))
        .await
        .expect("reject");
    await_scrape(&broker, "2 acks and a requeue", |s| {
        s.total(&global("acknowledged")) == 2.0
            && s.value("rabbitmq_queue_messages_ready", &q) == 18.0
            && s.value("rabbitmq_queue_messages_unacked", &q) == 0.0
    })
    .await;

    get(&ch, "q", true).await;
    get(&ch, "q", true).await;
    let consumer_ch = lp::channel(&conn).await;
    within("qos", consumer_ch.basic_qos(5, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut consumer = lp::consume(&consumer_ch, "q").await;
    lp::take_acked(&mut consumer, 16).await;
    await_scrape(&broker, "every delivery acked", |s| {
        s.total(&global("acknowledged")) == 18.0 && s.value("rabbitmq_queue_messages", &q) == 0.0
    })
    .await;
    let s = scrape(&broker).await;
    assert_eq!(s.total(&global("delivered_get_auto_ack")), 2.0);
    assert_eq!(s.total(&global("delivered_consume_manual_ack")), 16.0);
    assert_eq!(s.total(&global("delivered")), 21.0);
    assert_eq!(s.total(&global("redelivered")), 1.0, "the requeued one");
    assert_eq!(s.total(&global("received")), N as f64);
    assert_eq!(s.value("rabbitmq_queue_consumers", &q), 1.0);
    assert_eq!(s.total("rabbitmq_consumers"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_auto_ack_and_empty_get_are_counted() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    for mandatory in [true, false] {
        let opts = BasicPublishOptions {
            mandatory,
            ..Default::default()
        };
        let props = BasicProperties::default();
        let confirm = within(
            "publish",
            ch.basic_publish("", "nowhere", opts, b"x", props),
        )
        .await
        .expect("publish");
        let confirmation = within("confirm", confirm).await.expect("confirm");
        assert_eq!(
            matches!(confirmation, Confirmation::Ack(Some(_))),
            mandatory
        );
    }
    let s = scrape(&broker).await;
    assert_eq!(s.total(&global("unroutable_returned")), 1.0);
    assert_eq!(s.total(&global("unroutable_dropped")), 1.0);
    assert_eq!(s.total(&global("routed")), 0.0);
    assert_eq!(
        s.total(&global("confirmed")),
        2.0,
        "unroutable messages are confirmed too"
    );

    lp::declare_queue(&ch, "auto").await;
    assert!(
        within("get", ch.basic_get("auto", BasicGetOptions::default()))
            .await
            .expect("get")
            .is_none()
    );
    for _ in 0..4 {
        lp::publish(&ch, "", "auto", b"y").await;
    }
    let opts = lapin::options::BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = lp::consume_with(&ch, "auto", opts, FieldTable::default()).await;
    for _ in 0..4 {
        lp::next_delivery(&mut consumer).await;
    }
    let s = scrape(&broker).await;
    assert_eq!(s.total(&global("delivered_consume_auto_ack")), 4.0);
    assert_eq!(s.total(&global("delivered")), 4.0);
    assert_eq!(s.total(&global("get_empty")), 1.0);
    assert_eq!(s.total(&global("acknowledged")), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_queues_series_are_gone_from_the_next_scrape() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    lp::declare_queue(&ch, "doomed").await;
    lp::declare_queue(&ch, "kept").await;
    lp::publish(&ch, "", "doomed", b"z").await;
    let doomed = [("queue", "doomed")];
    let s = scrape(&broker).await;
    assert_eq!(s.value("rabbitmq_queue_messages_ready", &doomed), 1.0);
    assert_eq!(s.total("rabbitmq_queues"), 2.0);
    within(
        "queue.delete",
        ch.queue_delete("doomed", QueueDeleteOptions::default()),
    )
    .await
    .expect("queue.delete");
    let s = scrape(&broker).await;
    let left: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.labels.iter().any(|(_, v)| v == "doomed"))
        .collect();
    assert!(left.is_empty(), "still there: {left:?}");
    assert_eq!(
        s.value("rabbitmq_queue_messages_ready", &[("queue", "kept")]),
        0.0
    );
    assert_eq!(s.total("rabbitmq_queues"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_with_quotes_and_backslashes_are_escaped() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    let name = r#"we"ird\ q{a="b"},#ü} 1"#;
    lp::declare_queue(&ch, name).await;
    lp::publish(&ch, "", name, b"w").await;
    let (text, s) = scrape_path(&broker, "/metrics").await;
    assert_eq!(
        s.value("rabbitmq_queue_messages_ready", &[("queue", name)]),
        1.0
    );
    let escaped = r#"queue="we\"ird\\ q{a=\"b\"},#ü} 1""#;
    assert!(text.contains(escaped), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_channels_and_queues_coming_and_going_are_counted() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let conn = lp::connect(&broker).await;
    let ch = lp::channel(&conn).await;
    let name = common::unique("churn");
    lp::declare_queue(&ch, &name).await;
    lp::declare_queue(&ch, &name).await;
    let s = scrape(&broker).await;
    assert_eq!(s.total("rabbitmq_connections_opened_total"), 1.0);
    assert_eq!(s.total("rabbitmq_connections_closed_total"), 0.0);
    assert_eq!(s.total("rabbitmq_channels_opened_total"), 1.0);
    assert_eq!(
        s.total("rabbitmq_queues_declared_total"),
        2.0,
        "a redeclare counts"
    );
    assert_eq!(s.total("rabbitmq_queues_created_total"), 1.0);
    within("queue.delete", ch.queue_delete(&name, Default::default()))
        .await
        .expect("delete");
    within("close", conn.close(200, "bye"))
        .await
        .expect("close");
    await_scrape(&broker, "the closes and the delete counted", |s| {
        s.total("rabbitmq_connections_closed_total") == 1.0
            && s.total("rabbitmq_channels_closed_total") == 1.0
            && s.total("rabbitmq_queues_deleted_total") == 1.0
            && s.total("rabbitmq_connections") == 0.0
    })
    .await;
}
