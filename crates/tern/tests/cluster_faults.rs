//! Faults in a three-node cluster (`common/netns.rs`: each node in a network namespace of its
//! own): no message a publisher confirm acknowledged is lost when a node is killed -9 and
//! restarted, cut off the network for a few seconds and healed, or frozen and thawed.
//!
//! Three durable queues, one homed on each node; a publisher on every node sends persistent
//! messages with unique ids round-robin to the three, in confirm mode, and keeps the ids that
//! were acked. Meanwhile the nemesis kills n2, restarts it, then cuts n3 off the network and
//! heals it, then cuts n1 off its peers only (its clients still reach it) and heals that, then
//! freezes n2 (SIGSTOP) for a few seconds and lets it go on (SIGCONT).
//! Afterwards every queue is drained through n1: every confirmed id must be delivered
//! (duplicates are allowed, and counted), each in the queue it was sent to, and no node may
//! have panicked. Nacked messages may be delivered too (a nack promises nothing); the test
//! prints how many were, by publisher and queue.
//!
//! A second test partitions a minority: it refuses definition changes, the majority goes on,
//! and after healing every node has the same definitions (`/api/definitions`).
//!
//! Runs in about 30 s (debug build, 2 cores). Without network namespaces (not root) the cut
//! and the isolation are skipped; `TERN_TEST_NETNS=off` forces that. The nodes' logs are kept
//! when the test fails (the path is printed).

#[path = "common/netns.rs"]
mod netns;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use netns::NetCluster;

const QUEUES: [&str; 3] = ["faults-q1", "faults-q2", "faults-q3"];
/// Confirms a publisher waits for at once.
const WINDOW: usize = 32;
/// Longer than a node takes to give up on a silent peer (3 s) and nack what it forwarded.
const CONFIRM_WAIT: Duration = Duration::from_secs(6);
const CONNECT_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Published {
    /// basic.publish calls made (whether or not they reached the broker).
    sent: u64,
    confirmed: HashSet<String>,
    nacked: u64,
    /// Each nacked id, and when the nack came (seconds since the publishers started).
    nacks: Vec<(String, f64)>,
    /// When the publishers started.
    epoch: Option<Instant>,
    /// Publishes whose confirm never came (timeout, channel or connection lost).
    unknown: u64,
    /// Connections opened after the first.
    reconnects: u64,
    connect_failures: u64,
    /// Why sessions ended, first few.
    errors: Vec<String>,
}

impl Published {
    fn error(&mut self, what: String) {
        if self.errors.len() < 8 {
            self.errors.push(what);
        }
    }

    /// Count a confirm's outcome for `id`.
    fn settle(&mut self, id: String, outcome: Option<lapin::Result<Confirmation>>) -> bool {
        match outcome {
            // Acked and not returned: the message is in its queue.
            Some(Ok(Confirmation::Ack(None))) => {
                self.confirmed.insert(id);
                true
            }
            Some(Ok(Confirmation::Ack(Some(_)))) => {
                self.error(format!("{id} returned unroutable"));
                self.unknown += 1;
                true
            }
            Some(Ok(Confirmation::Nack(_))) => {
                self.nacked += 1;
                let at = self.epoch.map_or(0.0, |e| e.elapsed().as_secs_f64());
                self.nacks.push((id, at));
                true
            }
            Some(Ok(Confirmation::NotRequested)) => panic!("confirms were selected"),
            Some(Err(e)) => {
                self.error(format!("{id}: {e}"));
                self.unknown += 1;
                false
            }
            None => {
                self.error(format!("{id}: no confirm in {CONFIRM_WAIT:?}"));
                self.unknown += 1;
                false
            }
        }
    }
}

async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {limit:?}")),
    }
}

/// Publish through node `node` (0-based) until `stop`: persistent messages `p{node+1}-{seq}`
/// to the queues in turn, at most WINDOW unconfirmed; a session that fails (a lost connection,
/// a closed channel, a confirm that does not come) is dropped and a new one opened.
async fn publisher(node: usize, uri: String, stop: Arc<AtomicBool>, epoch: Instant) -> Published {
    let mut out = Published {
        epoch: Some(epoch),
        ..Default::default()
    };
    let mut seq: u64 = 0;
    let mut sessions = 0;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    while !stop.load(Ordering::Relaxed) {
        let conn = match within(
            CONNECT_WAIT,
            Connection::connect(&uri, ConnectionProperties::default()),
        )
        .await
        {
            Ok(conn) => conn,
            Err(e) => {
                out.connect_failures += 1;
                if out.connect_failures % 10 == 1 {
                    out.error(format!("connect: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        sessions += 1;
        if sessions > 1 {
            out.reconnects += 1;
        }
        let ch = match within(CONNECT_WAIT, conn.create_channel()).await {
            Ok(ch) => ch,
            Err(e) => {
                out.error(format!("channel: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if let Err(e) = within(
            CONNECT_WAIT,
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        {
            out.error(format!("confirm.select: {e}"));
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut pending: VecDeque<(String, PublisherConfirm)> = VecDeque::new();
        let mut healthy = true;
        while healthy && !stop.load(Ordering::Relaxed) {
            while pending.len() >= WINDOW {
                let (id, confirm) = pending.pop_front().expect("pending");
                let outcome = tokio::time::timeout(CONFIRM_WAIT, confirm).await.ok();
                if !out.settle(id, outcome) {
                    healthy = false;
                    break;
                }
            }
            if !healthy {
                break;
            }
            let id = format!("p{}-{seq}", node + 1);
            let queue = QUEUES[(seq % 3) as usize];
            seq += 1;
            out.sent += 1;
            let options = BasicPublishOptions::default();
            let publish = ch.basic_publish("", queue, options, id.as_bytes(), persistent.clone());
            match within(CONFIRM_WAIT, publish).await {
                Ok(confirm) => pending.push_back((id, confirm)),
                Err(e) => {
                    out.error(format!("publish {id}: {e}"));
                    out.unknown += 1;
                    healthy = false;
                }
            }
        }
        // What is still pending: the answers that come in time count, the rest are unknown.
        let deadline = tokio::time::Instant::now() + CONFIRM_WAIT;
        for (id, confirm) in pending {
            let outcome = tokio::time::timeout_at(deadline, confirm).await.ok();
            out.settle(id, outcome);
        }
        // A connection that still works is closed politely; one that does not is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "done")).await;
        if !healthy {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    out
}

/// GET a management API path with guest's credentials: the JSON, if it answered 200.
async fn api_get(http: &reqwest::Client, url: String) -> Option<serde_json::Value> {
    let answer = http
        .get(url)
        .basic_auth("guest", Some("guest"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

/// Wait until every node's /api/nodes shows all `n` nodes running and n1 shows every queue
/// up (its home has come back and n1 is linked to it).
async fn wait_healthy(cluster: &NetCluster, http: &reqwest::Client, limit: Duration) {
    let started = Instant::now();
    let n = cluster.nodes.len();
    loop {
        let mut healthy = true;
        for i in 0..n {
            let url = format!("{}/api/nodes", cluster.management_url(i));
            let running = match api_get(http, url).await {
                Some(nodes) => nodes
                    .as_array()
                    .map_or(0, |all| all.iter().filter(|n| n["running"] == true).count()),
                None => 0,
            };
            healthy &= running == n;
        }
        for queue in QUEUES {
            let url = format!("{}/api/queues/%2f/{queue}", cluster.management_url(0));
            let state = api_get(http, url).await.map(|q| q["state"].clone());
            healthy &= state.is_some_and(|s| s == "running");
        }
        if healthy {
            eprintln!("cluster healthy after {:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < limit,
            "the cluster is not whole again after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Everything in `queue`, consumed through `uri` with acks until the queue is empty: the
/// bodies, in delivery order (a redelivery appears twice).
async fn drain(uri: &str, queue: &str, limit: Duration) -> Vec<String> {
    let started = Instant::now();
    let mut bodies = Vec::new();
    'session: loop {
        assert!(
            started.elapsed() < limit,
            "{queue} not drained in {limit:?} ({} delivered)",
            bodies.len()
        );
        let conn = Connection::connect(uri, ConnectionProperties::default())
            .await
            .expect("connect to drain");
        let ch = conn.create_channel().await.expect("channel");
        let counter = conn.create_channel().await.expect("channel");
        ch.basic_qos(1000, BasicQosOptions::default())
            .await
            .expect("qos");
        let consume = ch
            .basic_consume(
                queue,
                "drain",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await;
        let mut consumer = match consume {
            Ok(c) => c,
            Err(e) => {
                eprintln!("drain {queue}: consume failed ({e}), again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue 'session;
            }
        };
        let mut last_tag = None;
        let mut unacked = 0;
        loop {
            assert!(
                started.elapsed() < limit,
                "{queue} not drained in {limit:?} ({} delivered)",
                bodies.len()
            );
            match tokio::time::timeout(Duration::from_millis(1500), consumer.next()).await {
                Ok(Some(Ok(delivery))) => {
                    bodies.push(String::from_utf8_lossy(&delivery.data).into_owned());
                    last_tag = Some(delivery.delivery_tag);
                    unacked += 1;
                    if unacked >= 200 {
                        let multiple = BasicAckOptions { multiple: true };
                        ch.basic_ack(delivery.delivery_tag, multiple)
                            .await
                            .expect("ack");
                        unacked = 0;
                    }
                }
                Ok(Some(Err(e))) => {
                    eprintln!("drain {queue}: consumer failed ({e}), again");
                    continue 'session;
                }
                Ok(None) => {
                    eprintln!("drain {queue}: consumer cancelled, again");
                    continue 'session;
                }
                Err(_) => {
                    // Quiet for a while: ack what we have, and ask whether anything is left.
                    if let Some(tag) = last_tag.take() {
                        ch.basic_ack(tag, BasicAckOptions { multiple: true })
                            .await
                            .expect("ack");
                        unacked = 0;
                    }
                    let passive = QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    };
                    let left = counter
                        .queue_declare(queue, passive, FieldTable::default())
                        .await
                        .expect("passive declare");
                    if left.message_count() == 0 {
                        let _ = conn.close(200, "drained").await;
                        return bodies;
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_confirmed_message_is_lost_when_nodes_are_killed_cut_off_or_frozen() {
    let started = Instant::now();
    let mut cluster = NetCluster::start(3, "cluster-faults").await;
    eprintln!("3 nodes ready after {:?}", started.elapsed());
    let http = reqwest::Client::new();

    // One durable queue homed on each node: declared through it.
    for (i, queue) in QUEUES.iter().enumerate() {
        let conn = Connection::connect(&cluster.amqp_uri(i), ConnectionProperties::default())
            .await
            .expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(queue, durable, FieldTable::default())
            .await
            .expect("declare");
        let url = format!("{}/api/queues/%2f/{queue}", cluster.management_url(0));
        let home = api_get(&http, url).await.expect("the queue")["node"].clone();
        assert_eq!(home, cluster.nodes[i].name.as_str(), "{queue}'s home");
        let _ = conn.close(200, "declared").await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let run = Instant::now();
    let publishers: Vec<_> = (0..3)
        .map(|i| tokio::spawn(publisher(i, cluster.amqp_uri(i), stop.clone(), run)))
        .collect();

    // The nemesis.
    let at = |what: &str| eprintln!("nemesis {:>6.2?}: {what}", run.elapsed());
    let pause = |secs: f64| tokio::time::sleep(Duration::from_secs_f64(secs));
    pause(1.5).await;
    at("kill -9 n2");
    cluster.kill(1);
    pause(2.5).await;
    at("restart n2");
    cluster.restart(1).await;
    at("n2 ready");
    pause(1.5).await;
    // Longer than the 3 s after which nodes take a silent peer for down.
    if cluster.cut(2) {
        at("n3 cut off");
        pause(4.0).await;
        cluster.heal(2);
        at("n3 healed");
        pause(1.5).await;
    }
    // n1 loses its peers, but its clients still reach it.
    if cluster.isolate(0) {
        at("n1 isolated from n2 and n3");
        pause(4.0).await;
        cluster.rejoin(0);
        at("n1 rejoined");
        pause(1.5).await;
    }
    // n2 freezes (SIGSTOP) long enough to be taken for down, then goes on (SIGCONT) as if
    // nothing happened.
    at("SIGSTOP n2");
    cluster.pause(1);
    pause(4.0).await;
    cluster.resume(1);
    at("SIGCONT n2");
    pause(1.5).await;
    at("stop publishers");
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for (i, p) in publishers.into_iter().enumerate() {
        let out = tokio::time::timeout(Duration::from_secs(20), p)
            .await
            .unwrap_or_else(|_| panic!("publisher {} did not stop", i + 1))
            .expect("publisher task");
        results.push(out);
    }
    at("publishers stopped");

    wait_healthy(&cluster, &http, Duration::from_secs(30)).await;

    // Drain every queue through n1.
    let mut delivered: HashMap<String, usize> = HashMap::new();
    let mut misrouted = Vec::new();
    let mut total_delivered = 0;
    for (q, queue) in QUEUES.iter().enumerate() {
        let bodies = drain(&cluster.amqp_uri(0), queue, Duration::from_secs(30)).await;
        eprintln!("drained {queue}: {} deliveries", bodies.len());
        total_delivered += bodies.len();
        for body in bodies {
            // p{node}-{seq} went to QUEUES[seq % 3].
            let seq = body
                .rsplit('-')
                .next()
                .and_then(|s| s.parse::<usize>().ok());
            if seq.map(|s| s % 3) != Some(q) && misrouted.len() < 10 {
                misrouted.push(format!("{body} in {queue}"));
            }
            *delivered.entry(body).or_default() += 1;
        }
    }

    let sent: u64 = results.iter().map(|r| r.sent).sum();
    let nacked: u64 = results.iter().map(|r| r.nacked).sum();
    let unknown: u64 = results.iter().map(|r| r.unknown).sum();
    let confirmed: HashSet<&String> = results.iter().flat_map(|r| &r.confirmed).collect();
    let lost: Vec<&String> = confirmed
        .iter()
        .copied()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    let duplicates = total_delivered - delivered.len();
    let unconfirmed_delivered = delivered
        .keys()
        .filter(|id| !confirmed.contains(id))
        .count();
    for (i, r) in results.iter().enumerate() {
        eprintln!(
            "publisher n{}: sent {}, confirmed {}, nacked {}, unknown {}, reconnects {}, \
             failed connects {}; errors: {:?}",
            i + 1,
            r.sent,
            r.confirmed.len(),
            r.nacked,
            r.unknown,
            r.reconnects,
            r.connect_failures,
            r.errors
        );
    }
    eprintln!(
        "published {sent}, confirmed {}, nacked {nacked}, unknown {unknown}; delivered {} \
         ({} distinct), duplicates {duplicates}, delivered unconfirmed \
         {unconfirmed_delivered}, lost {}; {:?} in all",
        confirmed.len(),
        total_delivered,
        delivered.len(),
        lost.len(),
        started.elapsed()
    );

    // Nacked, yet delivered: by publisher and queue, with when the nacks came.
    for (i, r) in results.iter().enumerate() {
        for (q, queue) in QUEUES.iter().enumerate() {
            let of_queue = |id: &String| {
                let seq = id.rsplit('-').next().and_then(|s| s.parse::<usize>().ok());
                seq.map(|s| s % 3) == Some(q)
            };
            let nacks: Vec<&(String, f64)> =
                r.nacks.iter().filter(|(id, _)| of_queue(id)).collect();
            let nacked_delivered: Vec<&&(String, f64)> = nacks
                .iter()
                .filter(|(id, _)| delivered.contains_key(id))
                .collect();
            if nacks.is_empty() {
                continue;
            }
            let span = |all: &[f64]| {
                let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = all.iter().copied().fold(0.0, f64::max);
                format!("{lo:.2}s..{hi:.2}s")
            };
            let all_at: Vec<f64> = nacks.iter().map(|(_, at)| *at).collect();
            let delivered_at: Vec<f64> = nacked_delivered.iter().map(|(_, at)| *at).collect();
            eprintln!(
                "  p{} -> {queue}: nacked {} ({}), of which delivered {}{}",
                i + 1,
                nacks.len(),
                span(&all_at),
                nacked_delivered.len(),
                if delivered_at.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({}; e.g. {:?})",
                        span(&delivered_at),
                        nacked_delivered
                            .iter()
                            .take(3)
                            .map(|(id, _)| id)
                            .collect::<Vec<_>>()
                    )
                }
            );
        }
    }

    let mut sample: Vec<&&String> = lost.iter().take(20).collect();
    sample.sort();
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost, e.g. {sample:?}",
        lost.len()
    );
    assert!(misrouted.is_empty(), "in the wrong queue: {misrouted:?}");
    let strays: Vec<&String> = delivered
        .keys()
        .filter(|id| {
            let Some((p, seq)) = id.split_once('-') else {
                return true;
            };
            let node = p.strip_prefix('p').and_then(|n| n.parse::<usize>().ok());
            let seq = seq.parse::<u64>().ok();
            match (node, seq) {
                (Some(n @ 1..=3), Some(seq)) => seq >= results[n - 1].sent,
                _ => true,
            }
        })
        .take(10)
        .collect();
    assert!(strays.is_empty(), "never published: {strays:?}");
    // The faults happened: n2's publisher lost its connection, and everyone got some through.
    assert!(results[1].reconnects >= 1, "n2's publisher reconnected");
    for (i, r) in results.iter().enumerate() {
        assert!(
            r.confirmed.len() > 100,
            "publisher n{} confirmed only {}",
            i + 1,
            r.confirmed.len()
        );
    }
    let panics = cluster.panics();
    assert!(panics.is_empty(), "a node panicked: {panics:#?}");
    drop(cluster);
    eprintln!("done in {:?}", started.elapsed());
}

/// Declare a durable exchange through node `i`: the AMQP reply code if refused.
async fn declare_exchange(cluster: &NetCluster, i: usize, name: &str) -> Result<(), u16> {
    let conn = Connection::connect(&cluster.amqp_uri(i), ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let durable = lapin::options::ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let kind = lapin::ExchangeKind::Fanout;
    let declared = ch
        .exchange_declare(name, kind, durable, FieldTable::default())
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, "done")).await;
    declared.map_err(|e| match e {
        lapin::Error::ProtocolError(p) => p.get_id(),
        _ => 0,
    })
}

/// A partitioned minority refuses definition changes (541, within the write timeout) while
/// the majority goes on; after healing every node has the same definitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_refuses_changes_and_all_agree_after_healing() {
    let mut cluster = NetCluster::start(3, "cluster-partition").await;
    let http = reqwest::Client::new();
    assert!(
        cluster.isolate(0),
        "this test needs network namespaces (root): it cuts n1 off its peers"
    );

    let started = Instant::now();
    let refused = declare_exchange(&cluster, 0, "minority-x").await;
    assert_eq!(refused, Err(541), "the minority refuses");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // The majority elects a leader if n1 led, and goes on.
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(code) = declare_exchange(&cluster, 1, "majority-x").await {
        assert!(
            Instant::now() < deadline,
            "the majority still refuses: {code}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Healed: every node's definitions are the same, with the majority's change only.
    assert!(cluster.rejoin(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = Vec::new();
        for i in 0..3 {
            let url = format!("{}/api/definitions", cluster.management_url(i));
            all.push(api_get(&http, url).await);
        }
        let same = all.iter().all(|d| d.is_some() && *d == all[0]);
        if same {
            let defs = all[0].clone().unwrap_or_default();
            let names: Vec<&str> = defs["exchanges"]
                .as_array()
                .map(|x| x.iter().filter_map(|e| e["name"].as_str()).collect())
                .unwrap_or_default();
            assert!(names.contains(&"majority-x"), "{names:?}");
            assert!(!names.contains(&"minority-x"), "{names:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes still disagree: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(cluster.panics(), Vec::<String>::new());
}
