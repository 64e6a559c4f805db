//! `rabbitmqadmin` v2 (RabbitMQ's own Rust CLI, from crates.io) against Tern's management API:
//! it declares a queue, publishes a message, lists queues and exports definitions, and what it
//! did is checked over AMQP. It needs that binary, by path and checked by version (Debian's
//! rabbitmq-server puts the old Python v1 at /usr/bin/rabbitmqadmin, which cannot do this):
//! `scripts/test.sh` installs 2.35.0 into the project's `.tools`, where this test looks;
//! `TERN_TEST_RABBITMQADMIN` names another v2.

mod common;

use std::process::Command;
use std::sync::OnceLock;

use common::lapin_support as lp;
use common::tools::Tool;
use common::TestBroker;

const VERSION: &str = "2.35.0";

/// The rabbitmqadmin to run, its version checked once.
fn rabbitmqadmin() -> &'static Tool {
    static TOOL: OnceLock<Tool> = OnceLock::new();
    TOOL.get_or_init(|| {
        let local = Tool::project_local(&format!("rabbitmqadmin-{VERSION}/bin/rabbitmqadmin"));
        let tool = Tool::from_env_or("TERN_TEST_RABBITMQADMIN", local);
        tool.checked_version(
            |v| v.starts_with("rabbitmqadmin 2."),
            "rabbitmqadmin 2.x",
            &format!("scripts/test.sh installs {VERSION} into .tools (cargo install --root)"),
        );
        tool
    })
}

/// Run it against the broker's management port; its stdout, or a panic with its stderr.
fn run(broker: &TestBroker, args: &[&str]) -> String {
    let port = broker.handle().management_addr().port().to_string();
    let mut all = vec!["--host", "127.0.0.1", "--port", &port];
    all.extend([
        "--username",
        "guest",
        "--password",
        "guest",
        "--non-interactive",
    ]);
    all.extend(args);
    let tool = rabbitmqadmin();
    let out = Command::new(&tool.path)
        .args(&all)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({}): {e}", tool.path.display(), tool.how));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rabbitmqadmin {args:?}: {stdout}{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmqadmin_declares_publishes_lists_and_exports() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let b = &broker;
    run(
        b,
        &["declare", "queue", "--name", "admin-q", "--durable", "true"],
    );
    let published = run(
        b,
        &[
            "publish",
            "message",
            "--routing-key",
            "admin-q",
            "--payload",
            "hi",
        ],
    );
    assert!(published.contains("routed"), "{published}");
    run(
        b,
        &[
            "declare", "exchange", "--name", "admin-x", "--type", "topic",
        ],
    );
    let bind = [
        "--source",
        "admin-x",
        "--destination-type",
        "queue",
        "--destination",
        "admin-q",
    ];
    run(
        b,
        &[
            &["declare", "binding"][..],
            &bind,
            &["--routing-key", "a.*"],
        ]
        .concat(),
    );
    let published = run(
        b,
        &[
            "publish",
            "message",
            "--exchange",
            "admin-x",
            "--routing-key",
            "a.b",
            "--payload",
            "via-x",
        ],
    );
    assert!(published.contains("routed"), "{published}");

    let queues = run(b, &["list", "queues"]);
    let row = queues
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&"admin-q"))
        .unwrap_or_else(|| panic!("admin-q not listed:\n{queues}"));
    // The last columns: message_count, then unacknowledged_message_count.
    assert_eq!(&row[row.len() - 2..], ["2", "0"], "{row:?}");
    let bindings = run(b, &["list", "bindings"]);
    assert!(
        bindings.contains("admin-x") && bindings.contains("a.*"),
        "{bindings}"
    );
    let overview = run(b, &["show", "overview"]);
    assert!(overview.contains("Tern"), "{overview}");

    let exported = run(b, &["definitions", "export", "--stdout"]);
    let defs: serde_json::Value = serde_json::from_str(&exported).expect("definitions JSON");
    let names: Vec<&str> = defs["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert_eq!(names, ["admin-q"]);

    let conn = lp::connect(b).await;
    let ch = lp::channel(&conn).await;
    assert_eq!(lp::drain(&ch, "admin-q").await, ["hi", "via-x"]);
}
