//! Crash tests: a real `tern server` process killed with SIGKILL while publishers with confirms
//! write to a durable queue, restarted on the same data directory, again and again. The check is
//! Jepsen's total-queue one: every message the broker confirmed is delivered at least once
//! (lost = confirmed - delivered is empty) and nothing is delivered that was never published.

mod common;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{data_dir, Server};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const QUEUE: &str = "crash-test";
const PUBLISHERS: usize = 3;
const WINDOW: usize = 64;
const ROUNDS: u64 = 6;

/// A small PRNG seeded from the clock: kill points differ run to run, and the seed is printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

async fn connect(uri: &str) -> Connection {
    Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect")
}

async fn declare(conn: &Connection) -> lapin::Channel {
    let ch = conn.create_channel().await.expect("channel");
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(QUEUE, opts, FieldTable::default())
        .await
        .expect("declare");
    ch
}

/// Publish persistent messages with confirms until the broker goes; record what it confirmed.
async fn publish(
    uri: String,
    tag: String,
    published: Arc<Mutex<HashSet<String>>>,
    confirmed: Arc<Mutex<HashSet<String>>>,
) {
    let conn = connect(&uri).await;
    let ch = declare(&conn).await;
    if ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .is_err()
    {
        return;
    }
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut window = VecDeque::new();
    for seq in 0u64.. {
        let id = format!("{tag}-{seq}");
        published.lock().unwrap().insert(id.clone());
        let sent = ch
            .basic_publish(
                "",
                QUEUE,
                BasicPublishOptions::default(),
                id.as_bytes(),
                props.clone(),
            )
            .await;
        let Ok(confirm) = sent else { return };
        window.push_back((id, confirm));
        if window.len() >= WINDOW {
            let (id, confirm) = window.pop_front().expect("non-empty");
            match confirm.await {
                Ok(c) if c.is_ack() => {
                    confirmed.lock().unwrap().insert(id);
                }
                _ => return,
            }
        }
    }
}

/// Consume and ack, recording what was delivered, until the broker goes (or `stop_after`).
async fn consume(
    uri: String,
    delivered: Arc<Mutex<HashSet<String>>>,
    stop_after: Option<Duration>,
) -> usize {
    let conn = connect(&uri).await;
    let ch = declare(&conn).await;
    let _ = ch.basic_qos(200, BasicQosOptions::default()).await;
    let Ok(mut consumer) = ch
        .basic_consume(
            QUEUE,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    else {
        return 0;
    };
    let mut n = 0;
    loop {
        let next = match stop_after {
            Some(quiet) => match tokio::time::timeout(quiet, consumer.next()).await {
                Ok(next) => next,
                Err(_) => return n,
            },
            None => consumer.next().await,
        };
        let Some(Ok(d)) = next else { return n };
        delivered
            .lock()
            .unwrap()
            .insert(String::from_utf8_lossy(&d.data).into_owned());
        n += 1;
        if d.acker.ack(BasicAckOptions::default()).await.is_err() {
            return n;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_confirmed_message_survives_repeated_kill_9() {
    let dir = data_dir("crash");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash test seed {seed}, data dir {}", dir.display());
    let mut rng = Rng(seed);
    let published = Arc::new(Mutex::new(HashSet::new()));
    let confirmed = Arc::new(Mutex::new(HashSet::new()));
    let delivered = Arc::new(Mutex::new(HashSet::new()));
    for round in 0..ROUNDS {
        let server = Server::start(&dir);
        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let tag = format!("r{round}-p{p}");
            tasks.push(tokio::spawn(publish(
                server.uri(),
                tag,
                published.clone(),
                confirmed.clone(),
            )));
        }
        // Every other round a consumer acks while the publishers run.
        if round % 2 == 1 {
            let (uri, d) = (server.uri(), delivered.clone());
            tasks.push(tokio::spawn(async move {
                consume(uri, d, None).await;
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.between(150, 900))).await;
        server.kill();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
    // Restart once more and drain everything left.
    let server = Server::start(&dir);
    let drained = consume(
        server.uri(),
        delivered.clone(),
        Some(Duration::from_secs(2)),
    )
    .await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let published = published.lock().unwrap();
    let confirmed = confirmed.lock().unwrap();
    let delivered = delivered.lock().unwrap();
    let lost: Vec<&String> = confirmed.difference(&delivered).collect();
    let unexpected: Vec<&String> = delivered.difference(&published).collect();
    eprintln!(
        "published {}, confirmed {}, delivered {} ({} in the final drain)",
        published.len(),
        confirmed.len(),
        delivered.len(),
        drained
    );
    assert!(
        confirmed.len() > 100,
        "the test must confirm something to mean anything"
    );
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        unexpected.is_empty(),
        "unexpected deliveries: {unexpected:?}"
    );
}
