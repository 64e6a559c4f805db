//! `tern bench`: a PerfTest-style load generator on our own client, flag-compatible with
//! amqp-blast where that makes sense.
//!
//! - `layout`: the queues and the fanout exchange, declared fresh and deleted at the end.
//! - `producer` / `consumer`: one task and one connection each; batched writes, whole-buffer
//!   decoding, coalesced acks.
//! - `pace`: `--rate` (a clock-based budget and a sub-millisecond ticker).
//! - `stats`: counters, latency histograms, CPU time, the progress lines and the summary.
//!
//! A run: declare, connect everyone, publish for `--time` seconds (the phase ends when the
//! broker has taken every publish: all confirms in, or a basic.qos answered), let consumers
//! drain for up to `--drain` seconds, delete the queues, print the summary.

mod consumer;
mod layout;
mod pace;
mod producer;
mod stats;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{Client, Uri};
use consumer::{Consumer, ConsumerPlan};
use layout::Layout;
use pace::{RateLimit, Ticker};
use producer::{Producer, ProducerPlan};
use stats::{CpuSample, Shared, Summary};

/// The smallest body: its first 8 bytes carry the publish time (ns, little-endian).
const BODY_MIN_BYTES: usize = 8;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Producers, one connection each.
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers, one connection each; at least one per queue unless 0 (publish only).
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Body size in bytes, at least 8: the first 8 carry the publish time.
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
    /// Ack every N deliveries with multiple=true (1: single acks); at most the prefetch.
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
    /// Seconds consumers may take, after publishing stops, to receive what was sent.
    #[arg(long, default_value_t = 2)]
    pub drain: u64,
    /// Producer write size in KiB (messages per write = this / message size).
    #[arg(long, default_value_t = 128)]
    pub batch_kib: usize,
    /// Also report the CPU per message of this process (the broker's pid).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the final summary as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Accepted for amqp-blast compatibility: queues are always deleted at the end.
    #[arg(long, hide = true)]
    pub cleanup: bool,
}

/// Where the run is; producers and consumers watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Setup,
    Publishing,
    Stopping,
    Done,
}

type Tasks = Vec<JoinHandle<Result<()>>>;

impl BenchArgs {
    /// Refuse what cannot work; settle what the flags imply.
    fn check(mut self) -> Result<BenchArgs> {
        if self.size < BODY_MIN_BYTES {
            bail!("--size must be at least {BODY_MIN_BYTES}: the first 8 bytes carry the publish time");
        }
        if self.prefetch > 0 && self.multi_ack > u64::from(self.prefetch) {
            // More would deadlock: the broker stops delivering before an ack is due.
            self.multi_ack = u64::from(self.prefetch);
        }
        self.multi_ack = self.multi_ack.max(1);
        self.batch_kib = self.batch_kib.max(1);
        Ok(self)
    }

    /// Consumers to start: every queue gets at least one unless the run is publish-only.
    fn consumer_count(&self, layout: &Layout) -> usize {
        match self.consumers {
            0 => 0,
            n => n.max(layout.queues.len()),
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let args = args.check()?;
    let uri: Uri = args.uri.parse()?;
    let layout = Layout::new(&args.queue, args.queues, args.fanout);
    let mut admin = Client::connect(&uri).await.context("setup connection")?;
    layout.declare(&mut admin, args.persistent).await?;
    admin.close().await?;

    let shared = Arc::new(Shared::new()?);
    let (phase, phase_rx) = watch::channel(Phase::Setup);
    let consumers = start_consumers(&args, &uri, &layout, &shared, &phase_rx).await?;
    let rate = RateLimit::per_producer(args.rate, args.producers);
    let ticker = rate.map(|r| Ticker::start(r.tick())).transpose()?;
    let producers = start_producers(&args, &uri, &layout, &shared, &phase_rx, &ticker).await?;

    let cpu_start = CpuSample::take(args.broker_pid);
    let started = Instant::now();
    phase.send_replace(Phase::Publishing);
    stats::report_every_second(&shared, args.time, args.confirm > 0).await;
    phase.send_replace(Phase::Stopping);
    let mut failures = join_all(producers, "producer").await;
    drop(ticker);
    let publish_phase = stats::PublishPhase {
        secs: started.elapsed().as_secs_f64(),
        received: shared.received.load(Ordering::Relaxed),
    };
    let expected = shared.sent.load(Ordering::Relaxed) * layout.copies();
    drain(&shared, expected, consumers.len(), args.drain).await;
    let cpu_end = CpuSample::take(args.broker_pid);
    phase.send_replace(Phase::Done);
    failures += join_all(consumers, "consumer").await;

    Summary::new(&shared, &publish_phase, &cpu_start, &cpu_end).print(args.json);
    let mut admin = Client::connect(&uri).await.context("cleanup connection")?;
    layout
        .delete(&mut admin)
        .await
        .context("deleting the queues")?;
    admin.close().await?;
    if failures > 0 {
        bail!("{failures} producer(s)/consumer(s) failed (see above)");
    }
    Ok(())
}

async fn start_consumers(
    args: &BenchArgs,
    uri: &Uri,
    layout: &Layout,
    shared: &Arc<Shared>,
    phase: &watch::Receiver<Phase>,
) -> Result<Tasks> {
    let mut tasks = Vec::new();
    for i in 0..args.consumer_count(layout) {
        let plan = ConsumerPlan {
            queue: layout.queue_of_consumer(i).to_owned(),
            prefetch: args.prefetch,
            multi_ack: args.multi_ack,
            auto_ack: args.autoack,
        };
        let c = Consumer::connect(uri, plan)
            .await
            .with_context(|| format!("starting consumer {i}"))?;
        tasks.push(tokio::spawn(c.run(shared.clone(), phase.clone())));
    }
    Ok(tasks)
}

async fn start_producers(
    args: &BenchArgs,
    uri: &Uri,
    layout: &Layout,
    shared: &Arc<Shared>,
    phase: &watch::Receiver<Phase>,
    ticker: &Option<Ticker>,
) -> Result<Tasks> {
    let mut tasks = Vec::new();
    for i in 0..args.producers {
        let plan = ProducerPlan {
            target: layout.target(i),
            size_bytes: args.size,
            persistent: args.persistent,
            confirm_window: args.confirm,
            rate: RateLimit::per_producer(args.rate, args.producers),
            batch_bytes: args.batch_kib * 1024,
        };
        let p = Producer::connect(uri, plan)
            .await
            .with_context(|| format!("starting producer {i}"))?;
        let tick = ticker.as_ref().map(Ticker::handle);
        tasks.push(tokio::spawn(p.run(shared.clone(), phase.clone(), tick)));
    }
    Ok(tasks)
}

/// Wait for the tasks; how many failed (each failure is printed).
async fn join_all(tasks: Tasks, what: &str) -> usize {
    let mut failed = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let err = match t.await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => e.to_string(),
        };
        eprintln!("{what} {i} failed: {err}");
        failed += 1;
    }
    failed
}

/// Wait, at most `secs`, until consumers have received everything that was published.
async fn drain(shared: &Shared, expected: u64, consumers: usize, secs: u64) {
    if consumers == 0 {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    while shared.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .unwrap()
            .bench
    }

    #[test]
    fn amqp_blast_style_flags_are_understood() {
        let a = parse(&[
            "-x2",
            "-y3",
            "-s",
            "1024",
            "-z5",
            "-c",
            "100",
            "-q500",
            "--multi-ack",
            "50",
            "-r",
            "50000",
            "-u",
            "b",
            "--queues",
            "3",
            "--persistent",
            "-a",
            "--cleanup",
        ]);
        assert_eq!((a.producers, a.consumers, a.size, a.time), (2, 3, 1024, 5));
        assert_eq!(
            (a.confirm, a.prefetch, a.multi_ack, a.rate),
            (100, 500, 50, 50_000)
        );
        assert_eq!((a.queue.as_str(), a.queues), ("b", 3));
        assert!(a.persistent && a.autoack && !a.json);
    }

    #[test]
    fn defaults_are_one_to_one_16_bytes_for_10_seconds() {
        let a = parse(&[]);
        assert_eq!((a.producers, a.consumers, a.size, a.time), (1, 1, 16, 10));
        assert_eq!((a.confirm, a.rate, a.fanout, a.drain), (0, 0, 0, 2));
        assert_eq!(a.uri, "amqp://guest:guest@127.0.0.1:5672/%2f");
    }

    #[test]
    fn bodies_too_small_for_a_timestamp_are_refused() {
        assert!(parse(&["-s", "7"]).check().is_err());
        assert!(parse(&["-s", "8"]).check().is_ok());
    }

    #[test]
    fn multi_ack_is_clamped_to_the_prefetch() {
        let a = parse(&["-q", "50", "--multi-ack", "100"]).check().unwrap();
        assert_eq!(a.multi_ack, 50);
        let a = parse(&["-q", "0", "--multi-ack", "100"]).check().unwrap();
        assert_eq!(a.multi_ack, 100);
    }

    #[test]
    fn fanout_gets_a_consumer_per_queue_unless_publish_only() {
        let a = parse(&["--fanout", "10"]);
        let layout = Layout::new(&a.queue, a.queues, a.fanout);
        assert_eq!(a.consumer_count(&layout), 10);
        let a = parse(&["--fanout", "10", "-y", "20"]);
        assert_eq!(a.consumer_count(&layout), 20);
        let a = parse(&["--fanout", "10", "-y", "0"]);
        assert_eq!(a.consumer_count(&layout), 0);
    }
}
