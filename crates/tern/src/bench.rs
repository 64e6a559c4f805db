//! `tern bench`: a PerfTest-style load generator on our own client.
//!
//! Sets up queues (and a fanout exchange with `--fanout`), starts producers and consumers on
//! their own connections, prints rates and latency percentiles every second, and at the end a
//! summary: totals, msg/s, p50/p95/p99/max latency, its own CPU per message and, with
//! `--broker-pid`, the broker's (both from /proc/PID/stat).

mod load;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use tern_amqp::{
    ExchangeDeclare, FieldTable, Method, QueueBind, QueueDeclare, QueueDelete, QueuePurge, ShortStr,
};
use tokio::sync::watch;

use crate::client::{Client, Uri};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Producers, one connection each.
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers, one connection each.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Body size in bytes (at least 8: the first 8 carry the publish time).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Seconds to publish.
    #[arg(short = 'z', long, default_value_t = 10)]
    pub time: u64,
    /// Publisher confirms with at most N unconfirmed per producer (0: off).
    #[arg(short = 'c', long, default_value_t = 0)]
    pub confirm: u64,
    /// Consumer prefetch (basic.qos); 0: unlimited.
    #[arg(short = 'q', long, default_value_t = 1000)]
    pub prefetch: u16,
    /// Ack every N deliveries with multiple=true.
    #[arg(long, default_value_t = 1)]
    pub multi_ack: u64,
    /// Consume with no-ack.
    #[arg(short = 'a', long)]
    pub autoack: bool,
    /// delivery-mode 2 and durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Total publish rate over all producers, msg/s (0: as fast as possible).
    #[arg(short = 'r', long, default_value_t = 0)]
    pub rate: u64,
    /// Queue name (prefix when there are several queues).
    #[arg(short = 'u', long, default_value = "tern-bench")]
    pub queue: String,
    /// Queues; producer and consumer i use queue i % N.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Publish to a fanout exchange bound to N queues (consumer i reads queue i % N).
    #[arg(long, default_value_t = 0)]
    pub fanout: usize,
    /// Also report this process's CPU per message (the broker's pid).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the final summary as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Where producers publish.
#[derive(Clone, Debug)]
pub enum Target {
    Queue(String),
    Exchange(String),
}

/// Counters and histograms shared by every producer and consumer.
pub struct Shared {
    start: Instant,
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub received: AtomicU64,
    total: Mutex<Histogram<u64>>,
    interval: Mutex<Histogram<u64>>,
}

impl Shared {
    fn new() -> Result<Self> {
        let hist = || Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram");
        Ok(Shared {
            start: Instant::now(),
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            total: Mutex::new(hist()?),
            interval: Mutex::new(hist()?),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn elapsed_secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Count a batch of received messages with their latencies (µs).
    pub fn record(&self, latencies_us: &[u64]) {
        if latencies_us.is_empty() {
            return;
        }
        self.received
            .fetch_add(latencies_us.len() as u64, Ordering::Relaxed);
        for hist in [&self.total, &self.interval] {
            let mut h = hist.lock().unwrap_or_else(|p| p.into_inner());
            for &us in latencies_us {
                h.saturating_record(us.max(1));
            }
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let uri: Uri = args.uri.parse()?;
    let layout = Layout::from_args(&args);
    let mut admin = Client::connect(&uri).await.context("setup connection")?;
    layout.declare(&mut admin, args.persistent).await?;
    let shared = Arc::new(Shared::new()?);
    let (stop_producers, producers_stopped) = watch::channel(false);
    let (stop_consumers, consumers_stopped) = watch::channel(false);
    let mut consumers = Vec::new();
    for i in 0..args.consumers {
        let plan = load::ConsumerPlan {
            queue: layout.queues[i % layout.queues.len()].clone(),
            prefetch: args.prefetch,
            multi_ack: args.multi_ack,
            auto_ack: args.autoack,
        };
        let c = Client::connect(&uri).await?;
        consumers.push(tokio::spawn(load::consume(
            c,
            plan,
            shared.clone(),
            consumers_stopped.clone(),
        )));
    }
    let mut producers = Vec::new();
    for i in 0..args.producers {
        let plan = load::ProducerPlan {
            target: layout.target(i),
            size: args.size,
            persistent: args.persistent,
            confirm_window: args.confirm,
            rate: args.rate as f64 / args.producers.max(1) as f64,
        };
        let c = Client::connect(&uri).await?;
        producers.push(tokio::spawn(load::produce(
            c,
            plan,
            shared.clone(),
            producers_stopped.clone(),
        )));
    }
    let cpu_start = CpuSample::take(args.broker_pid);
    report_every_second(&shared, args.time).await;
    let _ = stop_producers.send(true);
    join_all(producers, "producer").await;
    let publish_secs = shared.elapsed_secs();
    drain(&shared, layout.copies(), args.consumers > 0).await;
    let cpu_end = CpuSample::take(args.broker_pid);
    let _ = stop_consumers.send(true);
    join_all(consumers, "consumer").await;
    layout.delete(&mut admin).await?;
    admin.close().await?;
    let summary = Summary::new(&shared, publish_secs, &cpu_start, &cpu_end);
    summary.print(args.json);
    Ok(())
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<Result<()>>>, what: &str) {
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("{what} failed: {e:#}"),
            Err(e) => eprintln!("{what} task failed: {e}"),
        }
    }
}

/// Wait (at most 2 s) for consumers to receive everything that was published.
async fn drain(shared: &Shared, copies: u64, consuming: bool) {
    if !consuming {
        return;
    }
    let expected = shared.sent.load(Ordering::Relaxed) * copies;
    let deadline = Instant::now() + Duration::from_secs(2);
    while shared.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn report_every_second(shared: &Shared, secs: u64) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let (mut last_sent, mut last_received) = (0, 0);
    for t in 1..=secs {
        ticker.tick().await;
        let sent = shared.sent.load(Ordering::Relaxed);
        let received = shared.received.load(Ordering::Relaxed);
        let (p50, p99) = {
            let mut h = shared.interval.lock().unwrap_or_else(|p| p.into_inner());
            let p = (h.value_at_quantile(0.5), h.value_at_quantile(0.99));
            h.reset();
            p
        };
        eprintln!(
            "time {t}s sent {} msg/s received {} msg/s p50 {p50}us p99 {p99}us",
            sent - last_sent,
            received - last_received
        );
        (last_sent, last_received) = (sent, received);
    }
}

/// The queues (and exchange) a run uses.
struct Layout {
    queues: Vec<String>,
    exchange: Option<String>,
}

impl Layout {
    fn from_args(args: &BenchArgs) -> Self {
        let n = if args.fanout > 0 {
            args.fanout
        } else {
            args.queues.max(1)
        };
        let queues = if n == 1 && args.fanout == 0 {
            vec![args.queue.clone()]
        } else {
            (0..n).map(|i| format!("{}-{i}", args.queue)).collect()
        };
        let exchange = (args.fanout > 0).then(|| format!("{}-fanout", args.queue));
        Layout { queues, exchange }
    }

    fn target(&self, producer: usize) -> Target {
        match &self.exchange {
            Some(x) => Target::Exchange(x.clone()),
            None => Target::Queue(self.queues[producer % self.queues.len()].clone()),
        }
    }

    /// How many queues each published message reaches.
    fn copies(&self) -> u64 {
        if self.exchange.is_some() {
            self.queues.len() as u64
        } else {
            1
        }
    }

    async fn declare(&self, c: &mut Client, durable: bool) -> Result<()> {
        c.open_channel(1).await?;
        if let Some(x) = &self.exchange {
            let declare = ExchangeDeclare {
                exchange: x.as_str().into(),
                kind: "fanout".into(),
                durable,
                ..Default::default()
            };
            c.call(1, Method::ExchangeDeclare(declare)).await?;
        }
        for q in &self.queues {
            let declare = QueueDeclare {
                queue: q.as_str().into(),
                durable,
                ..Default::default()
            };
            c.call(1, Method::QueueDeclare(declare)).await?;
            c.call(
                1,
                Method::QueuePurge(QueuePurge {
                    queue: q.as_str().into(),
                    nowait: false,
                }),
            )
            .await?;
            if let Some(x) = &self.exchange {
                let bind = QueueBind {
                    queue: q.as_str().into(),
                    exchange: x.as_str().into(),
                    routing_key: ShortStr::default(),
                    nowait: false,
                    arguments: FieldTable::new(),
                };
                c.call(1, Method::QueueBind(bind)).await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, c: &mut Client) -> Result<()> {
        for q in &self.queues {
            let delete = QueueDelete {
                queue: q.as_str().into(),
                ..Default::default()
            };
            c.call(1, Method::QueueDelete(delete)).await?;
        }
        if let Some(x) = &self.exchange {
            let delete = tern_amqp::ExchangeDelete {
                exchange: x.as_str().into(),
                ..Default::default()
            };
            c.call(1, Method::ExchangeDelete(delete)).await?;
        }
        Ok(())
    }
}

/// CPU seconds (user + system) of this process and, optionally, the broker's.
struct CpuSample {
    own: f64,
    broker: Option<f64>,
}

impl CpuSample {
    fn take(broker_pid: Option<u32>) -> Self {
        CpuSample {
            own: cpu_secs("self").unwrap_or(0.0),
            broker: broker_pid.and_then(|p| cpu_secs(&p.to_string())),
        }
    }
}

/// utime + stime from /proc/PID/stat, in seconds (the kernel counts in 1/100 s here).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / 100.0)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

struct Summary {
    sent: u64,
    confirmed: u64,
    received: u64,
    secs: f64,
    latency_us: [u64; 4],
    bench_cpu_us_per_msg: f64,
    broker_cpu_us_per_msg: Option<f64>,
}

impl Summary {
    fn new(shared: &Shared, secs: f64, start: &CpuSample, end: &CpuSample) -> Self {
        let received = shared.received.load(Ordering::Relaxed);
        let sent = shared.sent.load(Ordering::Relaxed);
        let h = shared.total.lock().unwrap_or_else(|p| p.into_inner());
        let latency_us = [
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.95),
            h.value_at_quantile(0.99),
            h.max(),
        ];
        let per_msg = |cpu: f64| cpu * 1e6 / (received.max(sent).max(1) as f64);
        Summary {
            sent,
            confirmed: shared.confirmed.load(Ordering::Relaxed),
            received,
            secs,
            latency_us,
            bench_cpu_us_per_msg: per_msg(end.own - start.own),
            broker_cpu_us_per_msg: start.broker.zip(end.broker).map(|(a, b)| per_msg(b - a)),
        }
    }

    fn print(&self, json: bool) {
        let [p50, p95, p99, max] = self.latency_us;
        let (sent_rate, recv_rate) = (
            self.sent as f64 / self.secs,
            self.received as f64 / self.secs,
        );
        let broker = self
            .broker_cpu_us_per_msg
            .map_or("null".to_owned(), |v| format!("{v:.2}"));
        if json {
            println!(
                "{{\"sent\":{},\"confirmed\":{},\"received\":{},\"seconds\":{:.2},\"sent_per_s\":{sent_rate:.0},\"received_per_s\":{recv_rate:.0},\"lat_us_p50\":{p50},\"lat_us_p95\":{p95},\"lat_us_p99\":{p99},\"lat_us_max\":{max},\"bench_cpu_us_per_msg\":{:.2},\"broker_cpu_us_per_msg\":{broker}}}",
                self.sent, self.confirmed, self.received, self.secs, self.bench_cpu_us_per_msg
            );
            return;
        }
        println!("sent {} ({sent_rate:.0} msg/s), confirmed {}, received {} ({recv_rate:.0} msg/s) in {:.1} s", self.sent, self.confirmed, self.received, self.secs);
        println!("latency p50 {p50} us, p95 {p95} us, p99 {p99} us, max {max} us");
        println!(
            "cpu per message: bench {:.2} us, broker {broker} us",
            self.bench_cpu_us_per_msg
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces() {
        let stat = "42 (tern bench) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn fanout_layout_names_one_queue_per_binding() {
        let args = BenchArgs {
            fanout: 3,
            ..test_args()
        };
        let layout = Layout::from_args(&args);
        assert_eq!(layout.queues, ["b-0", "b-1", "b-2"]);
        assert_eq!(layout.copies(), 3);
        assert!(matches!(layout.target(5), Target::Exchange(x) if x == "b-fanout"));
        let layout = Layout::from_args(&BenchArgs {
            queues: 2,
            ..test_args()
        });
        assert!(matches!(layout.target(3), Target::Queue(q) if q == "b-1"));
    }

    fn test_args() -> BenchArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        Cli::parse_from(["bench", "-u", "b"]).bench
    }
}
