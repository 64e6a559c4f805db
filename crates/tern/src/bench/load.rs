//! The producer and consumer loops of `tern bench`, each on its own connection.
//!
//! Producers write many publishes per syscall; consumers decode every frame a read brings and
//! ack once per `--multi-ack` deliveries. A message's first 8 body bytes carry the time it was
//! published (nanoseconds since the bench started), so a consumer knows its end-to-end latency.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::BytesMut;
use tern_amqp::frame::{encode_body, encode_content_header};
use tern_amqp::{
    BasicAck, BasicConsume, BasicProperties, BasicPublish, BasicQos, FramePayload, Method, ShortStr,
};
use tokio::sync::watch;

use super::{Shared, Target};
use crate::client::Client;

/// Bytes of publishes built before one write.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

pub struct ProducerPlan {
    pub target: Target,
    pub size: usize,
    pub persistent: bool,
    pub confirm_window: u64,
    /// Messages per second for this producer; 0 = flat out.
    pub rate: f64,
}

/// Publish until `stop` turns true.
pub async fn produce(
    mut c: Client,
    plan: ProducerPlan,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    c.open_channel(1).await?;
    if plan.confirm_window > 0 {
        c.call(1, Method::ConfirmSelect(Default::default())).await?;
    }
    let template = publish_template(&plan);
    let per_batch = (WRITE_BATCH_BYTES / (plan.size + 64)).clamp(1, 1000) as u64;
    let mut confirms = Confirms::default();
    let mut body = vec![0u8; plan.size.max(8)];
    let mut sent = 0u64;
    while !*stop.borrow() {
        let mut n = match allowed_now(&plan, &shared, sent) {
            0 => {
                tokio::time::sleep(Duration::from_micros(500)).await;
                continue;
            }
            n => n.min(per_batch),
        };
        if plan.confirm_window > 0 {
            n = n.min(wait_for_window(&mut c, &mut confirms, &plan, sent, &stop).await?);
            if n == 0 {
                continue;
            }
        } else {
            drain_incoming(&mut c, &mut confirms)?;
        }
        for _ in 0..n {
            c.out.extend_from_slice(&template);
            body[..8].copy_from_slice(&shared.now_ns().to_be_bytes());
            encode_body(1, &body, c.frame_max, &mut c.out);
        }
        c.write_out().await?;
        sent += n;
        shared.sent.fetch_add(n, Ordering::Relaxed);
    }
    if plan.confirm_window > 0 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while confirms.confirmed < sent && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, c.read_more()).await;
            handle_confirms(&mut c, &mut confirms)?;
        }
    }
    shared
        .confirmed
        .fetch_add(confirms.confirmed, Ordering::Relaxed);
    c.close().await
}

/// How many messages the rate limit allows now.
fn allowed_now(plan: &ProducerPlan, shared: &Shared, sent: u64) -> u64 {
    if plan.rate <= 0.0 {
        return u64::MAX;
    }
    let due = (shared.elapsed_secs() * plan.rate) as u64 + 1;
    due.saturating_sub(sent)
}

/// basic.publish + content header, encoded once; only the body changes per message.
fn publish_template(plan: &ProducerPlan) -> BytesMut {
    let mut out = BytesMut::new();
    let (exchange, key) = match &plan.target {
        Target::Queue(q) => ("", q.as_str()),
        Target::Exchange(x) => (x.as_str(), ""),
    };
    let publish = BasicPublish {
        exchange: ShortStr::from(exchange),
        routing_key: ShortStr::from(key),
        mandatory: false,
        immediate: false,
    };
    tern_amqp::frame::encode_method(1, &Method::BasicPublish(publish), &mut out);
    let props = BasicProperties {
        delivery_mode: Some(if plan.persistent { 2 } else { 1 }),
        ..Default::default()
    };
    encode_content_header(1, 60, plan.size.max(8) as u64, &props, &mut out);
    out
}

#[derive(Default)]
struct Confirms {
    confirmed: u64,
    nacked: u64,
    out_of_order: BTreeSet<u64>,
}

impl Confirms {
    fn settle(&mut self, tag: u64, multiple: bool) {
        if multiple {
            self.confirmed = self.confirmed.max(tag);
            self.out_of_order = self.out_of_order.split_off(&(self.confirmed + 1));
        } else {
            self.out_of_order.insert(tag);
        }
        while self.out_of_order.remove(&(self.confirmed + 1)) {
            self.confirmed += 1;
        }
    }
}

/// Wait until the confirm window has room; returns how much.
async fn wait_for_window(
    c: &mut Client,
    confirms: &mut Confirms,
    plan: &ProducerPlan,
    sent: u64,
    stop: &watch::Receiver<bool>,
) -> Result<u64> {
    loop {
        drain_incoming(c, confirms)?;
        let room = plan
            .confirm_window
            .saturating_sub(sent - confirms.confirmed);
        if room > 0 || *stop.borrow() {
            return Ok(room);
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), c.read_more()).await;
        handle_confirms(c, confirms)?;
    }
}

/// Take confirms (and anything else) the server has sent, without waiting.
fn drain_incoming(c: &mut Client, confirms: &mut Confirms) -> Result<()> {
    while c.try_read_more()? {}
    handle_confirms(c, confirms)
}

fn handle_confirms(c: &mut Client, confirms: &mut Confirms) -> Result<()> {
    while let Some(frame) = c.next_frame()? {
        match frame.payload {
            FramePayload::Method(Method::BasicAck(a)) => {
                confirms.settle(a.delivery_tag, a.multiple)
            }
            FramePayload::Method(Method::BasicNack(n)) => {
                confirms.nacked += 1;
                confirms.settle(n.delivery_tag, n.multiple);
            }
            FramePayload::Method(Method::ChannelClose(x)) => {
                bail!("channel closed: {} {}", x.reply_code, x.reply_text)
            }
            FramePayload::Method(Method::ConnectionClose(x)) => {
                bail!("connection closed: {} {}", x.reply_code, x.reply_text)
            }
            _ => {}
        }
    }
    Ok(())
}

pub struct ConsumerPlan {
    pub queue: String,
    pub prefetch: u16,
    pub multi_ack: u64,
    pub auto_ack: bool,
}

/// Consume until `stop` turns true, recording counts and latencies in `shared`.
pub async fn consume(
    mut c: Client,
    plan: ConsumerPlan,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    c.open_channel(1).await?;
    if plan.prefetch > 0 {
        let qos = BasicQos {
            prefetch_size: 0,
            prefetch_count: plan.prefetch,
            global: false,
        };
        c.call(1, Method::BasicQos(qos)).await?;
    }
    let consume = BasicConsume {
        queue: ShortStr::from(plan.queue.as_str()),
        no_ack: plan.auto_ack,
        ..Default::default()
    };
    c.call(1, Method::BasicConsume(consume)).await?;
    let mut state = ConsumeState::default();
    let mut latencies = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            r = c.read_more() => r?,
            _ = stop.changed() => break,
        }
        while let Some(frame) = c.next_frame()? {
            state.on_frame(frame.payload, &shared, &mut latencies)?;
            if let Some((tag, multiple)) = state.ack_due(&plan) {
                c.send(
                    1,
                    &Method::BasicAck(BasicAck {
                        delivery_tag: tag,
                        multiple,
                    }),
                );
            }
        }
        shared.record(&latencies);
        latencies.clear();
        c.write_out().await?;
    }
    c.close().await
}

#[derive(Default)]
struct ConsumeState {
    last_tag: u64,
    body_left: u64,
    stamp: Option<u64>,
    unacked: u64,
}

impl ConsumeState {
    fn on_frame(
        &mut self,
        payload: FramePayload,
        shared: &Shared,
        latencies: &mut Vec<u64>,
    ) -> Result<()> {
        match payload {
            FramePayload::Method(Method::BasicDeliver(d)) => {
                self.last_tag = d.delivery_tag;
                self.stamp = None;
            }
            FramePayload::Header(h) => self.body_left = h.body_size,
            FramePayload::Body(b) => {
                if self.stamp.is_none() && b.len() >= 8 {
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&b[..8]);
                    self.stamp = Some(u64::from_be_bytes(ts));
                }
                self.body_left = self.body_left.saturating_sub(b.len() as u64);
                if self.body_left == 0 {
                    if let Some(ts) = self.stamp.take() {
                        latencies.push(shared.now_ns().saturating_sub(ts) / 1000);
                    }
                    self.unacked += 1;
                }
            }
            FramePayload::Method(Method::BasicCancel(_)) => {
                bail!("consumer cancelled by the server")
            }
            FramePayload::Method(Method::ChannelClose(x)) => {
                bail!("channel closed: {} {}", x.reply_code, x.reply_text)
            }
            FramePayload::Method(Method::ConnectionClose(x)) => {
                bail!("connection closed: {} {}", x.reply_code, x.reply_text)
            }
            _ => {}
        }
        Ok(())
    }

    /// (tag, multiple) to ack now, once `--multi-ack` deliveries are waiting.
    fn ack_due(&mut self, plan: &ConsumerPlan) -> Option<(u64, bool)> {
        if plan.auto_ack || self.unacked == 0 || self.unacked < plan.multi_ack.max(1) {
            return None;
        }
        self.unacked = 0;
        Some((self.last_tag, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_settle_multiple_and_out_of_order_singles() {
        let mut c = Confirms::default();
        c.settle(2, false);
        assert_eq!(c.confirmed, 0);
        c.settle(1, false);
        assert_eq!(c.confirmed, 2);
        c.settle(5, true);
        assert_eq!(c.confirmed, 5);
        c.settle(7, false);
        c.settle(6, false);
        assert_eq!(c.confirmed, 7);
    }

    #[test]
    fn acks_go_out_every_multi_ack_deliveries() {
        let plan = ConsumerPlan {
            queue: "q".into(),
            prefetch: 10,
            multi_ack: 3,
            auto_ack: false,
        };
        let mut s = ConsumeState {
            last_tag: 2,
            unacked: 2,
            ..Default::default()
        };
        assert_eq!(s.ack_due(&plan), None);
        s.unacked = 3;
        s.last_tag = 3;
        assert_eq!(s.ack_due(&plan), Some((3, true)));
        assert_eq!(s.ack_due(&plan), None);
    }
}
