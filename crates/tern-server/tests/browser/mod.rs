//! A real browser for the web UI tests: headless chromium, started by the test and driven over
//! the Chrome DevTools Protocol (JSON over a WebSocket).
//!
//! - [`Chromium`]: the process (its own process group, all of it killed when dropped, also when
//!   the test fails), with the DevTools address it prints on stderr;
//! - [`Page`]: one tab, attached with a flat session: calls, JavaScript evaluation, DOM polling
//!   with a deadline, dialogs, screenshots, and what went wrong inside the page (exceptions,
//!   alerts, CSP violations) for the test to assert on.
//!
//! chromium must be installed, version 112 or later (`--headless=new`): `scripts/test.sh`
//! installs Debian's package and names it in `TERN_TEST_CHROMIUM`, which may also name another
//! Chromium or Chrome binary; without it, `chromium` is looked for on PATH.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::common::tools::Tool;

/// How long one browser step may take: chromium on a loaded two-core machine is slow to start
/// and to lay out its first page.
pub const BROWSER_STEP: Duration = Duration::from_secs(30);

pub struct Chromium {
    child: Child,
    profile: PathBuf,
    /// `ws://127.0.0.1:port/devtools/browser/...`
    pub ws_url: String,
}

impl Drop for Chromium {
    /// SIGTERM first: chromium then closes its renderer and zygote processes and reaps them.
    /// Whatever is left after [`QUIT_GRACE`] is killed with the whole process group, which we
    /// gave the browser at spawn and is its alone (the leader is not reaped yet, so the id
    /// cannot have been reused).
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        signal(pid, libc::SIGTERM);
        let deadline = std::time::Instant::now() + QUIT_GRACE;
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(-pid, libc::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// How long chromium gets to quit by itself when the test is done with it.
const QUIT_GRACE: Duration = Duration::from_secs(5);

/// kill(2): `pid` a process, `-pid` its process group.
fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) touches no memory of ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The chromium to run, its version checked once.
fn chromium() -> &'static Tool {
    static TOOL: std::sync::OnceLock<Tool> = std::sync::OnceLock::new();
    TOOL.get_or_init(|| {
        let tool = Tool::from_env_or("TERN_TEST_CHROMIUM", Tool::on_path("chromium"));
        tool.checked_version(
            |v| chromium_major(v).is_some_and(|major| major >= 112),
            "Chromium 112 or later",
            "scripts/test.sh installs it (Debian's chromium package)",
        );
        tool
    })
}

/// The major version in "Chromium 120.0.6099.224 built on Debian" or "Google Chrome 120.0...".
fn chromium_major(version: &str) -> Option<u32> {
    let number = version.split_whitespace().find(|w| w.contains('.'))?;
    number.split('.').next()?.parse().ok()
}

impl Chromium {
    /// Start headless chromium with a fresh profile and wait for its DevTools address.
    pub async fn launch() -> Chromium {
        let tool = chromium();
        let binary = tool.path.display().to_string();
        let profile = std::env::temp_dir().join(format!(
            "tern-chromium-{}-{}",
            std::process::id(),
            crate::common::unique("p")
        ));
        let child = Command::new(&tool.path)
            .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
            .args([
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args([
                "--window-size=1280,900",
                "--hide-scrollbars",
                "--mute-audio",
            ])
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
            ])
            .args(["--disable-background-networking", "--disable-sync"])
            .args(["--disable-component-update", "--disable-crash-reporter"])
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!("cannot start {binary} ({}): {e}", tool.how),
        };
        let lines = stderr_lines(&mut child);
        let mut chromium = Chromium {
            child,
            profile,
            ws_url: String::new(),
        };
        chromium.ws_url = devtools_url(lines, &binary).await;
        chromium
    }
}

/// chromium's stderr, line by line, read to its end on a thread of its own (so the pipe never
/// fills up and blocks the browser).
fn stderr_lines(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    rx
}

/// The address in chromium's `DevTools listening on ws://...` line.
async fn devtools_url(mut lines: mpsc::UnboundedReceiver<String>, binary: &str) -> String {
    let deadline = Instant::now() + BROWSER_STEP;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) => {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return url.trim().to_string();
                }
                seen.push(line);
            }
            Ok(None) => panic!("{binary} exited before it listened:\n{}", seen.join("\n")),
            Err(_) => panic!(
                "{binary} printed no DevTools address in {BROWSER_STEP:?}:\n{}",
                seen.join("\n")
            ),
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One tab of the browser, reached through a flat session on the browser's WebSocket.
pub struct Page {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    events: mpsc::UnboundedReceiver<Value>,
    next_id: u64,
    session: Option<String>,
    /// Every event not waited for, kept for [`Page::troubles`].
    seen: Vec<Value>,
}

impl Page {
    /// A new blank tab with the Page, Runtime and Log domains on.
    pub async fn open(browser_ws_url: &str) -> Page {
        let connect = tokio_tungstenite::connect_async(browser_ws_url);
        let (ws, _) = timeout(BROWSER_STEP, connect)
            .await
            .expect("DevTools WebSocket connect timed out")
            .expect("DevTools WebSocket connect");
        let (sink, stream) = ws.split();
        let pending: Pending = Arc::default();
        let out = spawn_writer(sink);
        let events = spawn_reader(stream, pending.clone());
        let mut page = Page {
            out,
            pending,
            events,
            next_id: 1,
            session: None,
            seen: Vec::new(),
        };
        page.attach().await;
        page
    }

    async fn attach(&mut self) {
        let target = self
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let params = json!({"targetId": target["targetId"], "flatten": true});
        let attached = self.call("Target.attachToTarget", params).await;
        let session = attached["sessionId"].as_str().expect("a session id");
        self.session = Some(session.to_string());
        for domain in ["Page", "Runtime", "Log"] {
            self.call(&format!("{domain}.enable"), json!({})).await;
        }
    }

    /// One DevTools call; its `result`. Panics on a protocol error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        self.out
            .send(Message::text(msg.to_string()))
            .expect("DevTools connection writer");
        let reply = timeout(BROWSER_STEP, rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer in {BROWSER_STEP:?}"))
            .expect("DevTools connection closed");
        if let Some(err) = reply.get("error") {
            panic!("{method} failed: {err}");
        }
        reply["result"].clone()
    }

    /// Open `url` and wait for its load event (its deferred scripts have run by then).
    pub async fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r.get("errorText").is_none(), "navigate to {url}: {r}");
        self.event("Page.loadEventFired").await;
    }

    /// Evaluate `expr` in the page (awaiting a promise); its value as JSON.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let params = json!({"expression": expr, "returnByValue": true, "awaitPromise": true});
        let r = self.call("Runtime.evaluate", params).await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Poll `expr` until it is truthy (the page changes by itself: fetches, timers); its value.
    /// On timeout the panic shows what the page said.
    pub async fn wait_for(&mut self, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + BROWSER_STEP;
        loop {
            let v = self.eval(expr).await;
            if !matches!(v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0) {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.eval("document.body.innerText").await;
                panic!(
                    "timed out after {BROWSER_STEP:?} waiting for {what}; the page shows:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The next event `method`; the others are kept for [`Page::troubles`].
    pub async fn event(&mut self, method: &str) -> Value {
        let deadline = Instant::now() + BROWSER_STEP;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.recv()).await;
            let ev = next
                .unwrap_or_else(|_| panic!("no {method} event in {BROWSER_STEP:?}"))
                .expect("DevTools connection closed");
            if ev["method"] == method {
                return ev["params"].clone();
            }
            self.seen.push(ev);
        }
    }

    /// What should never happen in the page: uncaught exceptions, `alert()`s (an injected
    /// script's favourite), Content-Security-Policy violations.
    pub fn troubles(&mut self) -> Vec<String> {
        while let Ok(ev) = self.events.try_recv() {
            self.seen.push(ev);
        }
        self.seen.iter().filter_map(trouble).collect()
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("screenshot base64")
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A task that sends what the page's calls queue up.
fn spawn_writer(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
) -> mpsc::UnboundedSender<Message> {
    let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(msg) = outgoing.recv().await {
            if sink.send(msg).await.is_err() {
                return;
            }
        }
    });
    out
}

/// A task that hands each reply to the call waiting for its id, and every event to the page.
fn spawn_reader(
    mut stream: futures_util::stream::SplitStream<Ws>,
    pending: Pending,
) -> mpsc::UnboundedReceiver<Value> {
    let (events_tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(text) = msg else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            let Some(id) = v["id"].as_u64() else {
                let _ = events_tx.send(v);
                continue;
            };
            let waiter = pending.lock().expect("pending lock").remove(&id);
            if let Some(w) = waiter {
                let _ = w.send(v);
            }
        }
    });
    events
}

fn trouble(ev: &Value) -> Option<String> {
    let p = &ev["params"];
    match ev["method"].as_str()? {
        "Runtime.exceptionThrown" => Some(format!("exception: {}", p["exceptionDetails"])),
        "Page.javascriptDialogOpening" if p["type"] != "confirm" => {
            Some(format!("{} dialog: {}", p["type"], p["message"]))
        }
        "Log.entryAdded" => {
            let text = p["entry"]["text"].as_str().unwrap_or_default();
            let csp =
                p["entry"]["source"] == "security" || text.contains("Content Security Policy");
            csp.then(|| format!("CSP violation: {text}"))
        }
        _ => None,
    }
}
