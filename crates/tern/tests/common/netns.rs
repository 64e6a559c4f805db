//! A cluster of `tern server` processes for fault tests, each node in a network namespace of
//! its own, so that a test can kill, pause, restart and cut off one node while the others run.
//!
//! The network, per cluster (names carry the test process's PID and a counter, so that
//! parallel tests and parallel test runs never share one):
//!
//! ```text
//!   root namespace (the test)          hub namespace                node namespaces
//!   tf{pid}k{k}  10.x.y.14/28  <--veth-->  r ─┐
//!                                            br0 ─ n1 <--veth--> eth0 10.x.y.1/28  (tern n1)
//!                                             ├─── n2 <--veth--> eth0 10.x.y.2/28  (tern n2)
//!                                             └─── n3 <--veth--> eth0 10.x.y.3/28  (tern n3)
//! ```
//!
//! The bridge lives in a namespace of its own, so no firewall rule of the machine sees the
//! traffic between nodes. Each cluster gets a /28 of 10.128.0.0/9 picked from the PID and the
//! counter. Every node listens on the same fixed ports on its own address (AMQP 5672,
//! management 15672, cluster 25672), so a node restarted keeps its address and ports and a
//! client can simply connect again. [`NetCluster::cut`] takes the node's bridge port down:
//! the node's interface loses its carrier and packets both ways are dropped silently, as when
//! a cable is pulled (open TCP connections are not reset; they time out).
//! [`NetCluster::isolate`] cuts a node off the other nodes only (blackhole routes both ways),
//! while the test, like any client, still reaches it.
//!
//! Nodes run as `ip netns exec NS tern server ...`: `ip` enters the namespace and execs tern,
//! so the child's PID is the tern process itself (checked through /proc), and kill/SIGSTOP go
//! to it by that PID. The tern they run is a hard link (or copy) of the test's
//! `CARGO_BIN_EXE_tern` in the cluster's directory, made at start: a node restarted runs the
//! same binary even if a build in the same target directory replaced it meanwhile.
//!
//! Without namespaces (not root, no `ip`, or `ip netns add` fails; or `TERN_TEST_NETNS=off`)
//! the nodes run on loopback addresses 127.0.0.2.. with ports of their own, kept across
//! restarts; that is said on stderr, and [`NetCluster::cut`], [`NetCluster::heal`],
//! [`NetCluster::isolate`] and [`NetCluster::rejoin`] do nothing and return false.
//!
//! Every node's log (JSON lines) goes to `n{i}.log` in the cluster's directory; "tern is
//! ready", warnings and errors (but openraft's, which are expected when a peer is away) and
//! anything that is not JSON (a panic) are echoed to stderr as `n{i}: ...`. Drop
//! kills every node by PID and deletes the namespaces; the directory is removed unless the
//! test is panicking (then its path is printed, logs kept).

#![allow(dead_code)]

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a node may take to say "tern is ready" (a debug build, on a busy machine).
pub const READY_WAIT: Duration = Duration::from_secs(40);

const TERN: &str = env!("CARGO_BIN_EXE_tern");
const AMQP_PORT: u16 = 5672;
const MANAGEMENT_PORT: u16 = 15672;
const CLUSTER_PORT: u16 = 25672;
/// Prefix of every namespace this harness makes: `{PREFIX}{pid}k{k}...`.
const PREFIX: &str = "ternft";

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

enum Net {
    /// Namespaces: the hub (bridge), one per node; the root side's veth.
    Namespaces {
        hub: String,
        nodes: Vec<String>,
        root_if: String,
    },
    Loopback,
}

pub struct NetNode {
    /// n1@localhost, ...
    pub name: String,
    pub ip: Ipv4Addr,
    pub amqp_port: u16,
    pub management_port: u16,
    pub cluster_port: u16,
    pub dir: PathBuf,
    proc: Option<Proc>,
}

struct Proc {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

pub struct NetCluster {
    net: Net,
    /// Data directories, the secret and the node logs.
    pub base: PathBuf,
    secret: PathBuf,
    /// The tern binary the nodes run (a link to the test's).
    tern: PathBuf,
    pub nodes: Vec<NetNode>,
    /// Every line a node wrote that is not JSON (panics) or is at ERROR (openraft's aside), as
    /// `n{i}: line`.
    notable: Arc<Mutex<Vec<String>>>,
}

/// Run a command (`ip ...`); Err with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// Namespaces left by earlier runs of this harness whose test process is gone.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if pid.is_empty() || !rest[pid.len()..].starts_with('k') {
            continue;
        }
        if !Path::new("/proc").join(&pid).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The cluster's /28 in 10.128.0.0/9: the first address (network + 1 .. + 13 are nodes, +14
/// the test's side).
fn subnet(pid: u32, k: u32) -> u32 {
    let index = (u64::from(pid) * 16 + u64::from(k % 16)) % (1 << 19);
    0x0A80_0000 + (index as u32) * 16
}

/// Build the namespaces and links for `n` nodes; on any failure undo what was made.
fn namespaces(n: usize, pid: u32, k: u32) -> Result<(Net, Vec<Ipv4Addr>), String> {
    if n > 13 {
        return Err("at most 13 nodes in a /28".into());
    }
    remove_stale_namespaces();
    let tag = format!("{PREFIX}{pid}k{k}");
    let hub = format!("{tag}hub");
    ip(&["netns", "add", &hub])?;
    let mut made = Net::Namespaces {
        hub: hub.clone(),
        nodes: Vec::new(),
        root_if: format!("tf{pid}k{k}"),
    };
    let result = (|| {
        let Net::Namespaces { nodes, root_if, .. } = &mut made else {
            unreachable!()
        };
        let net = subnet(pid, k);
        let addr = |host: u32| Ipv4Addr::from(net + host);
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        // The test's side: a veth from the root namespace to the bridge.
        ip(&[
            "link", "add", root_if, "type", "veth", "peer", "name", "r", "netns", &hub,
        ])?;
        ip(&["-n", &hub, "link", "set", "r", "master", "br0"])?;
        ip(&["-n", &hub, "link", "set", "r", "up"])?;
        let test_side = format!("{}/28", addr(14));
        ip(&["addr", "add", &test_side, "dev", root_if])?;
        ip(&["link", "set", root_if, "up"])?;
        let mut addrs = Vec::new();
        for i in 0..n {
            let ns = format!("{tag}n{}", i + 1);
            ip(&["netns", "add", &ns])?;
            nodes.push(ns.clone());
            let port = format!("n{}", i + 1);
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let a = addr(i as u32 + 1);
            ip(&["-n", &ns, "addr", "add", &format!("{a}/28"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            addrs.push(a);
        }
        Ok(addrs)
    })();
    match result {
        Ok(addrs) => Ok((made, addrs)),
        Err(e) => {
            teardown(&made);
            Err(e)
        }
    }
}

fn teardown(net: &Net) {
    if let Net::Namespaces { hub, nodes, .. } = net {
        for ns in nodes {
            let _ = ip(&["netns", "del", ns]);
        }
        // The root side's veth goes with its peer in the hub.
        let _ = ip(&["netns", "del", hub]);
    }
}

/// Three distinct ports free on `addr` now (bound together, then released).
fn free_ports(addr: Ipv4Addr) -> [u16; 3] {
    let bind = || TcpListener::bind((addr, 0)).expect("a free port");
    let held = [bind(), bind(), bind()];
    held.map(|l| l.local_addr().expect("bound").port())
}

impl NetCluster {
    /// `n` nodes n1@localhost.. with one peer list and one secret, each ready.
    pub async fn start(n: usize, what: &str) -> NetCluster {
        let pid = std::process::id();
        let k = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let base = std::env::temp_dir().join(format!("tern-{what}-{pid}-{k}-{nanos}"));
        std::fs::create_dir_all(&base).expect("cluster dir");
        let secret = base.join("secret");
        std::fs::write(&secret, "a shared secret\n").expect("secret");
        let tern = base.join("tern");
        if std::fs::hard_link(TERN, &tern).is_err() {
            std::fs::copy(TERN, &tern).expect("copy the tern binary");
        }

        let forced_off = std::env::var("TERN_TEST_NETNS").is_ok_and(|v| v == "off" || v == "0");
        let made = if forced_off {
            Err("TERN_TEST_NETNS=off".to_string())
        } else {
            namespaces(n, pid, k)
        };
        let (net, nodes) = match made {
            Ok((net, addrs)) => {
                eprintln!(
                    "netns: {n} nodes in namespaces {PREFIX}{pid}k{k}n*, addresses {:?}",
                    addrs
                );
                let nodes = addrs
                    .into_iter()
                    .map(|ip| (ip, AMQP_PORT, MANAGEMENT_PORT, CLUSTER_PORT))
                    .collect::<Vec<_>>();
                (net, nodes)
            }
            Err(e) => {
                eprintln!(
                    "netns: network namespaces unavailable ({e}); falling back to loopback \
                     127.0.0.x addresses: link cuts will be skipped"
                );
                let nodes = (0..n)
                    .map(|i| {
                        let ip = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
                        let [a, m, c] = free_ports(ip);
                        (ip, a, m, c)
                    })
                    .collect();
                (Net::Loopback, nodes)
            }
        };
        let nodes = nodes
            .into_iter()
            .enumerate()
            .map(
                |(i, (ip, amqp_port, management_port, cluster_port))| NetNode {
                    name: format!("n{}@localhost", i + 1),
                    ip,
                    amqp_port,
                    management_port,
                    cluster_port,
                    dir: base.join(format!("n{}", i + 1)),
                    proc: None,
                },
            )
            .collect();
        let mut cluster = NetCluster {
            net,
            base,
            secret,
            tern,
            nodes,
            notable: Arc::default(),
        };
        for i in 0..n {
            cluster.launch(i);
        }
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// Whether the nodes run in namespaces (links can be cut).
    pub fn namespaced(&self) -> bool {
        matches!(self.net, Net::Namespaces { .. })
    }

    pub fn amqp_uri(&self, i: usize) -> String {
        let node = &self.nodes[i];
        format!("amqp://guest:guest@{}:{}/%2f", node.ip, node.amqp_port)
    }

    /// `http://ADDR:PORT` of node `i`'s management API.
    pub fn management_url(&self, i: usize) -> String {
        let node = &self.nodes[i];
        format!("http://{}:{}", node.ip, node.management_port)
    }

    /// The tern process's PID of node `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].proc.as_ref().map(|p| p.child.id())
    }

    fn command(&self, i: usize) -> Command {
        let node = &self.nodes[i];
        let mut cmd = match &self.net {
            Net::Namespaces { nodes, .. } => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &nodes[i]]).arg(&self.tern);
                cmd
            }
            Net::Loopback => Command::new(&self.tern),
        };
        let peers: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}:{}", n.ip, n.cluster_port))
            .collect();
        cmd.args([
            "server",
            "--bind",
            &node.ip.to_string(),
            "--log-format",
            "json",
        ])
        .args(["--amqp-port", &node.amqp_port.to_string()])
        .args(["--management-port", &node.management_port.to_string()])
        .args(["--prometheus-port", "0", "--loopback-users", "none"])
        .args(["--node-name", &node.name])
        .args(["--cluster-port", &node.cluster_port.to_string()])
        .args(["--cluster-peers", &peers.join(",")])
        .arg("--cluster-secret-file")
        .arg(&self.secret)
        .arg("--data-dir")
        .arg(&node.dir)
        .env("RUST_LOG", "info,openraft=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        cmd
    }

    /// Start node `i` (its data directory as it is), not waiting for it.
    pub fn launch(&mut self, i: usize) {
        assert!(self.nodes[i].proc.is_none(), "node {} runs already", i + 1);
        let mut child = self.command(i).spawn().expect("spawn tern server");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        let label = format!("n{}", i + 1);
        let log_path = self.base.join(format!("{label}.log"));
        let notable = self.notable.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .ok();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(log) = &mut log {
                    let _ = writeln!(log, "{line}");
                }
                let value = serde_json::from_str::<serde_json::Value>(&line);
                let (level, target) = match &value {
                    Ok(v) => (
                        v["level"].as_str().unwrap_or("").to_string(),
                        v["target"].as_str().unwrap_or("").to_string(),
                    ),
                    Err(_) => (String::new(), String::new()),
                };
                // The Raft library's complaints about an unreachable peer are expected here:
                // in the log file only.
                let raft = target.starts_with("openraft");
                match level.as_str() {
                    "INFO" | "DEBUG" | "TRACE" => {
                        let ready = value
                            .as_ref()
                            .is_ok_and(|v| v["message"] == "tern is ready");
                        if ready {
                            eprintln!("{label}: {line}");
                        }
                    }
                    "WARN" if !raft => eprintln!("{label}: {line}"),
                    "WARN" => {}
                    "ERROR" if raft => {}
                    // ERROR, or not JSON at all (a panic's message, a backtrace).
                    _ => {
                        eprintln!("{label}: {line}");
                        let mut all = notable.lock().unwrap_or_else(|p| p.into_inner());
                        all.push(format!("{label}: {line}"));
                    }
                }
                let value = value.unwrap_or(serde_json::Value::String(line));
                if tx.send(value).is_err() {
                    // The test no longer listens (the node was killed): keep logging.
                    continue;
                }
            }
        });
        let node = &mut self.nodes[i];
        node.proc = Some(Proc { child, lines });
    }

    /// Wait until node `i` logs "tern is ready" (it must be launched); panics after
    /// READY_WAIT or if it exits.
    pub async fn wait_ready(&mut self, i: usize) {
        let started = Instant::now();
        loop {
            let node = &mut self.nodes[i];
            let proc = node.proc.as_mut().expect("launched");
            match proc.lines.try_recv() {
                Ok(line) => {
                    if line["message"] == "tern is ready" {
                        let amqp = line["amqp_addr"].as_str().unwrap_or("");
                        let want = format!("{}:{}", node.ip, node.amqp_port);
                        assert_eq!(amqp, want, "node {} listens where asked", i + 1);
                        break;
                    }
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    let status = proc.child.wait();
                    panic!("node {} exited before it was ready: {status:?}", i + 1);
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("node {} exited before it was ready: {status}", i + 1);
            }
            assert!(
                started.elapsed() < READY_WAIT,
                "node {} not ready after {READY_WAIT:?}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The PID is tern's own (`ip netns exec` execs): signals reach the broker.
        let pid = self.pid(i).expect("runs");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        assert!(
            exe.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("tern")),
            "node {} PID {pid} is {exe:?}, not tern",
            i + 1
        );
    }

    /// SIGKILL node `i` (by its PID) and reap it.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut proc) = node.proc.take() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }

    /// SIGTERM node `i` and wait up to `limit` for it to exit; its exit status.
    pub fn terminate(&mut self, i: usize, limit: Duration) -> std::process::ExitStatus {
        let pid = self.pid(i).expect("runs");
        run("kill", &["-TERM", &pid.to_string()]).expect("kill -TERM");
        let mut proc = self.nodes[i].proc.take().expect("runs");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = proc.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = proc.child.kill();
                let _ = proc.child.wait();
                panic!("node {} still running {limit:?} after SIGTERM", i + 1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP node `i`: it holds its sockets and answers nothing.
    pub fn pause(&mut self, i: usize) {
        let pid = self.pid(i).expect("runs");
        run("kill", &["-STOP", &pid.to_string()]).expect("kill -STOP");
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        let pid = self.pid(i).expect("runs");
        run("kill", &["-CONT", &pid.to_string()]).expect("kill -CONT");
    }

    /// Start node `i` again (same name, data directory and flags) and wait until it is ready.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.launch(i);
        self.wait_ready(i).await;
    }

    /// Cut node `i` off the network both ways; false (and nothing done) without namespaces.
    pub fn cut(&mut self, i: usize) -> bool {
        self.set_link(i, "down")
    }

    /// Undo [`NetCluster::cut`].
    pub fn heal(&mut self, i: usize) -> bool {
        self.set_link(i, "up")
    }

    fn set_link(&mut self, i: usize, state: &str) -> bool {
        let Net::Namespaces { hub, .. } = &self.net else {
            eprintln!(
                "netns: loopback fallback, link of node {} not set {state}",
                i + 1
            );
            return false;
        };
        let port = format!("n{}", i + 1);
        ip(&["-n", hub, "link", "set", &port, state]).expect("set the node's link");
        true
    }

    /// Cut node `i` off the other nodes only, both ways (blackhole routes in its namespace to
    /// each of them, and in theirs to it): the test still reaches it, as clients would. New
    /// connections between them fail at once (EINVAL), open ones go silent. False (and
    /// nothing done) without namespaces.
    pub fn isolate(&mut self, i: usize) -> bool {
        self.blackhole(i, "add")
    }

    /// Undo [`NetCluster::isolate`].
    pub fn rejoin(&mut self, i: usize) -> bool {
        self.blackhole(i, "del")
    }

    fn blackhole(&mut self, i: usize, how: &str) -> bool {
        let Net::Namespaces { nodes, .. } = &self.net else {
            eprintln!(
                "netns: loopback fallback, node {} not isolated ({how})",
                i + 1
            );
            return false;
        };
        for j in (0..self.nodes.len()).filter(|&j| j != i) {
            let to_peer = format!("{}/32", self.nodes[j].ip);
            let to_node = format!("{}/32", self.nodes[i].ip);
            ip(&["-n", &nodes[i], "route", how, "blackhole", &to_peer]).expect("route");
            ip(&["-n", &nodes[j], "route", how, "blackhole", &to_node]).expect("route");
        }
        true
    }

    /// Lines the nodes logged at ERROR (openraft's aside), or not as JSON (a panic's message),
    /// so far.
    pub fn notable_lines(&self) -> Vec<String> {
        self.notable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Of those, the ones that tell of a panic.
    pub fn panics(&self) -> Vec<String> {
        self.notable_lines()
            .into_iter()
            .filter(|l| l.contains("panicked"))
            .collect()
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut proc) = node.proc.take() {
                // SIGKILL by PID works on a stopped process too.
                let _ = proc.child.kill();
                let _ = proc.child.wait();
            }
        }
        teardown(&self.net);
        if std::thread::panicking() {
            eprintln!(
                "netns: test failed; node logs and data kept in {}",
                self.base.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}
