//! A real `tern server` process for the binary's tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args([
                "server",
                "--bind",
                "127.0.0.1",
                "--amqp-port",
                &port.to_string(),
                "--management-port",
                "0",
                // Parallel tests each run a node: no fixed port may be shared.
                "--prometheus-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tern server");
        // No event to await from another process: poll for the listener and the admin socket.
        let deadline = Instant::now() + Duration::from_secs(20);
        let socket = data_dir.join("ctl.sock");
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !socket.exists() {
            assert!(Instant::now() < deadline, "server did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh data directory path under the system temp dir; the test removes it.
pub fn data_dir(what: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("tern-{what}-{}-{nanos}", std::process::id()))
}

/// A `tern server` on ephemeral ports that logs JSON: the test learns its ports from the
/// "tern is ready" line and can wait for any other line.
pub struct LoggedServer {
    child: Child,
    pub amqp_port: u16,
    pub management_port: u16,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
    /// Every line read so far.
    seen: Vec<serde_json::Value>,
}

/// How long a test waits for the server to say something.
pub const LOG_WAIT: Duration = Duration::from_secs(20);

impl LoggedServer {
    /// Loopback, port 0 for every listener, JSON logs at info, data in `data_dir`.
    pub fn start(data_dir: &Path) -> LoggedServer {
        Self::spawn(Self::command(data_dir))
    }

    /// The command `start` runs, to add flags to.
    pub fn command(data_dir: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.args(["server", "--bind", "127.0.0.1", "--log-format", "json"])
            .args(["--amqp-port", "0", "--management-port", "0"])
            .args(["--prometheus-port", "0", "--data-dir"])
            .arg(data_dir);
        cmd
    }

    /// Run `cmd` (a `tern server` that logs JSON) and wait until it is ready.
    pub fn spawn(cmd: Command) -> LoggedServer {
        let mut server = Self::launch(cmd);
        server.ready();
        server
    }

    /// Run `cmd` without waiting for it ([`LoggedServer::ready`] does: clustered nodes are
    /// ready only once their peers run too).
    pub fn launch(mut cmd: Command) -> LoggedServer {
        let mut child = cmd
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tern server");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("server: {line}");
                let value = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        LoggedServer {
            child,
            amqp_port: 0,
            management_port: 0,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for "tern is ready", and learn the ports from it.
    pub fn ready(&mut self) {
        let server = self;
        let ready = server.wait_for("tern is ready", |l| l["message"] == "tern is ready");
        let addr = ready["amqp_addr"]
            .as_str()
            .expect("amqp_addr in the ready line");
        let addr: std::net::SocketAddr = addr.parse().expect("an address");
        server.amqp_port = addr.port();
        let management = ready["management_addr"].as_str();
        let management = management.expect("management_addr in the ready line");
        let management: std::net::SocketAddr = management.parse().expect("an address");
        server.management_port = management.port();
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The next log line `wanted` accepts (earlier ones are skipped); panics after LOG_WAIT.
    pub fn wait_for(
        &mut self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!("no log line {what:?}: {e}"),
            };
            self.seen.push(line.clone());
            if wanted(&line) {
                return line;
            }
        }
    }

    /// A line already read (before "tern is ready", say) that `wanted` accepts.
    pub fn logged(
        &self,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<&serde_json::Value> {
        self.seen.iter().find(|l| wanted(l))
    }

    /// SIGTERM, by the child's own PID.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Its exit status; panics if it is still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
