//! What `tern bench` measures and how it says it: shared counters and latency histograms, the
//! once-a-second progress line, CPU time from /proc, and the final summary (text or JSON).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

/// Latencies above this (µs) are recorded as this.
const LATENCY_MAX_US: u64 = 600_000_000;

/// Counters and latencies every producer and consumer adds to.
pub struct Shared {
    /// The clock of the bodies' timestamps: nanoseconds since this instant.
    epoch: Instant,
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub received: AtomicU64,
    /// Latencies since the last progress line; folded into `total` by `take_interval`.
    interval: Mutex<Histogram<u64>>,
    total: Mutex<Histogram<u64>>,
}

impl Shared {
    pub fn new() -> Result<Self> {
        let hist = || Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).context("histogram");
        Ok(Shared {
            epoch: Instant::now(),
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            received: AtomicU64::new(0),
            interval: Mutex::new(hist()?),
            total: Mutex::new(hist()?),
        })
    }

    /// Now, as a body timestamp.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Count messages received at `now_ns` with the given body timestamps.
    pub fn record(&self, now_ns: u64, stamps_ns: &[u64]) {
        if stamps_ns.is_empty() {
            return;
        }
        self.received
            .fetch_add(stamps_ns.len() as u64, Ordering::Relaxed);
        let mut h = lock(&self.interval);
        for &stamp in stamps_ns {
            h.saturating_record((now_ns.saturating_sub(stamp) / 1000).max(1));
        }
    }

    /// p50 and p99 (µs) since the last call; those latencies join the run's total.
    fn take_interval(&self) -> (u64, u64) {
        let mut h = lock(&self.interval);
        let p = (h.value_at_quantile(0.5), h.value_at_quantile(0.99));
        // Same bounds on both sides, so adding cannot fail; saturate rather than lose a run.
        let _ = lock(&self.total).add(&*h);
        h.reset();
        p
    }

    fn counts(&self) -> [u64; 3] {
        [&self.sent, &self.confirmed, &self.received].map(|c| c.load(Ordering::Relaxed))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Print a progress line every second for `secs` seconds (to stderr, so stdout stays the summary).
pub async fn report_every_second(shared: &Shared, secs: u64, confirms: bool) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last = shared.counts();
    for t in 1..=secs {
        ticker.tick().await;
        let now = shared.counts();
        let [sent, confirmed, received] = [0, 1, 2].map(|i| now[i] - last[i]);
        let (p50, p99) = shared.take_interval();
        let confirmed = if confirms {
            format!(" confirmed {confirmed} msg/s")
        } else {
            String::new()
        };
        eprintln!(
            "time {t}s sent {sent} msg/s{confirmed} received {received} msg/s  p50 {p50}us p99 {p99}us"
        );
        last = now;
    }
}

/// CPU seconds (user + system) of this process and, optionally, the broker's.
pub struct CpuSample {
    own: f64,
    broker: Option<f64>,
}

impl CpuSample {
    pub fn take(broker_pid: Option<u32>) -> Self {
        CpuSample {
            own: cpu_secs("self").unwrap_or(0.0),
            broker: broker_pid.and_then(|p| cpu_secs(&p.to_string())),
        }
    }
}

/// utime + stime from /proc/PID/stat, in seconds (counted in USER_HZ, 100 on Linux).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / 100.0)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The run's result.
pub struct Summary {
    sent: u64,
    confirmed: u64,
    nacked: u64,
    received: u64,
    /// Length of the publishing phase, and what had been received by its end.
    publish_secs: f64,
    received_in_phase: u64,
    latency_us: [u64; 4],
    bench_cpu_us_per_msg: f64,
    broker_cpu_us_per_msg: Option<f64>,
}

/// How the publishing phase went: its length and what had arrived by its end.
pub struct PublishPhase {
    pub secs: f64,
    pub received: u64,
}

impl Summary {
    /// CPU per message divides by messages consumed (by messages sent when nothing consumes).
    pub fn new(shared: &Shared, phase: &PublishPhase, start: &CpuSample, end: &CpuSample) -> Self {
        shared.take_interval();
        let [sent, confirmed, received] = shared.counts();
        let h = lock(&shared.total);
        let latency_us = [
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.95),
            h.value_at_quantile(0.99),
            h.max(),
        ];
        let messages = if received > 0 { received } else { sent };
        let per_msg = |cpu: f64| cpu * 1e6 / messages.max(1) as f64;
        Summary {
            sent,
            confirmed,
            nacked: shared.nacked.load(Ordering::Relaxed),
            received,
            publish_secs: phase.secs,
            received_in_phase: phase.received,
            latency_us,
            bench_cpu_us_per_msg: per_msg(end.own - start.own),
            broker_cpu_us_per_msg: start.broker.zip(end.broker).map(|(a, b)| per_msg(b - a)),
        }
    }

    fn rates(&self) -> (f64, f64) {
        let secs = self.publish_secs.max(1e-9);
        (
            self.sent as f64 / secs,
            self.received_in_phase as f64 / secs,
        )
    }

    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json());
            return;
        }
        let (sent_rate, recv_rate) = self.rates();
        let [p50, p95, p99, max] = self.latency_us;
        println!(
            "sent {} ({sent_rate:.0} msg/s), confirmed {}, nacked {}, received {} ({recv_rate:.0} msg/s) in {:.2} s",
            self.sent, self.confirmed, self.nacked, self.received, self.publish_secs
        );
        println!("latency p50 {p50} us, p95 {p95} us, p99 {p99} us, max {max} us");
        let broker = self
            .broker_cpu_us_per_msg
            .map_or("-".to_owned(), |v| format!("{v:.2} us"));
        println!(
            "cpu per message: bench {:.2} us, broker {broker}",
            self.bench_cpu_us_per_msg
        );
    }

    fn json(&self) -> String {
        let (sent_rate, recv_rate) = self.rates();
        let [p50, p95, p99, max] = self.latency_us;
        let broker = self
            .broker_cpu_us_per_msg
            .map_or("null".to_owned(), |v| format!("{v:.2}"));
        format!(
            concat!(
                "{{\"sent\":{},\"confirmed\":{},\"nacked\":{},\"received\":{},\"seconds\":{:.2},",
                "\"sent_per_s\":{:.0},\"received_per_s\":{:.0},",
                "\"lat_us_p50\":{},\"lat_us_p95\":{},\"lat_us_p99\":{},\"lat_us_max\":{},",
                "\"bench_cpu_us_per_msg\":{:.2},\"broker_cpu_us_per_msg\":{}}}"
            ),
            self.sent,
            self.confirmed,
            self.nacked,
            self.received,
            self.publish_secs,
            sent_rate,
            recv_rate,
            p50,
            p95,
            p99,
            max,
            self.bench_cpu_us_per_msg,
            broker
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces() {
        let stat = "42 (tern (x) bench) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x)"), None);
    }

    #[test]
    fn own_cpu_time_can_be_read() {
        assert!(cpu_secs("self").is_some());
    }

    #[test]
    fn latencies_reach_the_total_and_the_summary() {
        let shared = Shared::new().unwrap();
        shared.record(5_000_000, &[4_000_000, 4_900_000, 6_000_000]);
        assert_eq!(shared.received.load(Ordering::Relaxed), 3);
        shared.sent.store(3, Ordering::Relaxed);
        let cpu = CpuSample {
            own: 1.0,
            broker: None,
        };
        let phase = PublishPhase {
            secs: 2.0,
            received: 2,
        };
        let s = Summary::new(&shared, &phase, &cpu, &cpu);
        // 1000 µs, 100 µs, and a stamp from the future counted as 1 µs.
        assert_eq!(s.latency_us[3], 1000);
        assert_eq!(s.latency_us[0], 100);
        assert_eq!(s.rates(), (1.5, 1.0));
        let json = s.json();
        assert!(json.starts_with("{\"sent\":3,"), "{json}");
        assert!(json.ends_with("\"broker_cpu_us_per_msg\":null}"), "{json}");
    }
}
