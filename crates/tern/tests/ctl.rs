//! `tern ctl` against a real `tern server` process: users, permissions and vhosts are
//! managed with rabbitmqctl's command names over the admin socket, and survive a SIGKILL.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{data_dir, Server};
use lapin::{Connection, ConnectionProperties};

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
