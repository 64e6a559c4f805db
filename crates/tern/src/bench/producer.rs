//! A `tern bench` producer: one connection, one channel, publishing in large batches.
//!
//! A message (basic.publish + content header + body) is encoded once per batch with the batch's
//! timestamp in its first 8 body bytes, then copied into the write buffer as many times as the
//! batch allows; one `write` sends the lot. The batch is cut to `--batch-kib`, the confirm
//! window and the rate budget. Every message of a batch leaves in the same syscall, so one clock
//! read per batch stamps them all.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::BytesMut;
use tern_amqp::frame::{encode_body, encode_content_header, encode_method};
use tern_amqp::{BasicProperties, BasicPublish, BasicQos, FramePayload, Method, ShortStr};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::layout::Target;
use super::pace::RateLimit;
use super::stats::Shared;
use super::Phase;
use crate::client::{close_error, Client, Uri};

/// How long a producer waits, after publishing stops, for the broker to take what it sent.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one wait for confirms lasts before the phase is looked at again.
const CONFIRM_POLL: Duration = Duration::from_millis(100);

pub struct ProducerPlan {
    pub target: Target,
    pub size_bytes: usize,
    pub persistent: bool,
    /// Most unconfirmed publishes; 0: no confirms.
    pub confirm_window: u64,
    pub rate: Option<RateLimit>,
    pub batch_bytes: usize,
}

pub struct Producer {
    c: Client,
    plan: ProducerPlan,
    /// basic.publish + content header, encoded once.
    head: BytesMut,
    body: Vec<u8>,
    /// One whole message, rebuilt per batch with the batch's timestamp.
    message: BytesMut,
    sent: u64,
    confirms: Confirms,
}

impl Producer {
    pub async fn connect(uri: &Uri, plan: ProducerPlan) -> Result<Producer> {
        let mut c = Client::connect(uri).await?;
        c.open_channel(1).await?;
        if plan.confirm_window > 0 {
            c.call(1, Method::ConfirmSelect(Default::default())).await?;
        }
        Ok(Producer {
            c,
            head: publish_head(&plan),
            body: vec![0; plan.size_bytes],
            message: BytesMut::new(),
            plan,
            sent: 0,
            confirms: Confirms::default(),
        })
    }

    /// Publish while the phase is `Publishing`, then wait until the broker has taken it all.
    pub async fn run(
        mut self,
        shared: Arc<Shared>,
        mut phase: watch::Receiver<Phase>,
        ticker: Option<Arc<Notify>>,
    ) -> Result<()> {
        phase.wait_for(|p| *p >= Phase::Publishing).await?;
        let started = Instant::now();
        while *phase.borrow() == Phase::Publishing {
            let n = self.budget(started, ticker.as_deref(), &shared).await?;
            if n > 0 {
                self.publish(n, &shared).await?;
            }
        }
        tokio::time::timeout(FINISH_TIMEOUT, self.finish(&shared))
            .await
            .context("the broker did not take the last publishes within 10 s")??;
        self.c.close().await
    }

    /// How many messages to publish now (0: none yet; ask again).
    async fn budget(
        &mut self,
        started: Instant,
        ticker: Option<&Notify>,
        shared: &Shared,
    ) -> Result<u64> {
        let message_bytes = self.head.len() + self.body.len() + 8;
        let mut n = (self.plan.batch_bytes / message_bytes).max(1) as u64;
        if let (Some(rate), Some(ticker)) = (self.plan.rate, ticker) {
            let tick = ticker.notified();
            n = n.min(rate.allowed(started.elapsed(), self.sent));
            if n == 0 {
                self.c.keep_alive().await?;
                tick.await;
                return Ok(0);
            }
        }
        if self.plan.confirm_window == 0 {
            // Nothing should come back, but a close or a flow-control notice might.
            while self.c.try_read_more()? {}
            self.handle_incoming(shared)?;
            return Ok(n);
        }
        Ok(n.min(self.window_room(shared).await?))
    }

    async fn publish(&mut self, n: u64, shared: &Shared) -> Result<()> {
        self.build_message(shared.now_ns());
        let out = &mut self.c.out;
        out.reserve(self.message.len() * n as usize);
        for _ in 0..n {
            out.extend_from_slice(&self.message);
        }
        self.c.write_out().await?;
        self.sent += n;
        shared.sent.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    fn build_message(&mut self, stamp_ns: u64) {
        if let Some(stamp) = self.body.first_chunk_mut::<8>() {
            *stamp = stamp_ns.to_le_bytes();
        }
        self.message.clear();
        self.message.extend_from_slice(&self.head);
        encode_body(1, &self.body, self.c.frame_max, &mut self.message);
    }

    /// Room in the confirm window, waiting (a while) for confirms when there is none.
    async fn window_room(&mut self, shared: &Shared) -> Result<u64> {
        loop {
            while self.c.try_read_more()? {}
            self.handle_incoming(shared)?;
            let room = self.plan.confirm_window.saturating_sub(self.unconfirmed());
            if room > 0 {
                return Ok(room);
            }
            let wait = tokio::time::timeout(CONFIRM_POLL, self.c.read_more()).await;
            if wait.is_err() {
                return Ok(0); // let the caller look at the phase
            }
            wait??;
        }
    }

    fn unconfirmed(&self) -> u64 {
        self.sent - self.confirms.settled()
    }

    /// With confirms: wait for them all. Without: a basic.qos round trip, which the broker
    /// answers only after the publishes before it (a channel's methods are handled in order).
    async fn finish(&mut self, shared: &Shared) -> Result<()> {
        if self.plan.confirm_window == 0 {
            let qos = BasicQos {
                prefetch_size: 0,
                prefetch_count: 0,
                global: false,
            };
            self.c.call(1, Method::BasicQos(qos)).await?;
            return Ok(());
        }
        while self.unconfirmed() > 0 {
            self.c.read_more().await?;
            self.handle_incoming(shared)?;
        }
        Ok(())
    }

    /// Take the confirms (and anything else) already read.
    fn handle_incoming(&mut self, shared: &Shared) -> Result<()> {
        while let Some(frame) = self.c.next_frame()? {
            let (tag, multiple, ack) = match frame.payload {
                FramePayload::Method(Method::BasicAck(a)) => (a.delivery_tag, a.multiple, true),
                FramePayload::Method(Method::BasicNack(n)) => (n.delivery_tag, n.multiple, false),
                FramePayload::Method(m) => match close_error(&m) {
                    Some(e) => return Err(e),
                    None => continue,
                },
                _ => continue,
            };
            // Tag 0 with multiple: everything so far (spec 1.8.3.13).
            let tag = if multiple && tag == 0 { self.sent } else { tag };
            let (acked, nacked) = self.confirms.settle(tag, multiple, ack);
            shared.confirmed.fetch_add(acked, Ordering::Relaxed);
            shared.nacked.fetch_add(nacked, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// basic.publish + content header: all of a message but its body frame.
fn publish_head(plan: &ProducerPlan) -> BytesMut {
    let mut out = BytesMut::new();
    let (exchange, routing_key) = plan.target.address();
    let publish = BasicPublish {
        exchange: ShortStr::from(exchange),
        routing_key: ShortStr::from(routing_key),
        mandatory: false,
        immediate: false,
    };
    encode_method(1, &Method::BasicPublish(publish), &mut out);
    let props = BasicProperties {
        delivery_mode: Some(if plan.persistent { 2 } else { 1 }),
        ..Default::default()
    };
    encode_content_header(1, 60, plan.size_bytes as u64, &props, &mut out);
    out
}

/// Publisher confirms received: tags 1..=`through` all settled, plus singles beyond it.
#[derive(Default)]
struct Confirms {
    through: u64,
    beyond: BTreeSet<u64>,
}

impl Confirms {
    fn settled(&self) -> u64 {
        self.through + self.beyond.len() as u64
    }

    /// Settle `tag` (and every tag below it with `multiple`); (newly acked, newly nacked).
    fn settle(&mut self, tag: u64, multiple: bool, ack: bool) -> (u64, u64) {
        let before = self.settled();
        if tag <= self.through {
            // A duplicate: nothing new.
        } else if multiple {
            self.beyond = self.beyond.split_off(&(tag + 1));
            self.through = tag;
        } else if tag == self.through + 1 {
            self.through = tag;
        } else {
            self.beyond.insert(tag);
        }
        while self.beyond.remove(&(self.through + 1)) {
            self.through += 1;
        }
        let newly = self.settled() - before;
        if ack {
            (newly, 0)
        } else {
            (0, newly)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_settle_multiple_and_out_of_order_singles() {
        let mut c = Confirms::default();
        assert_eq!(c.settle(2, false, true), (1, 0));
        assert_eq!(c.through, 0);
        assert_eq!(c.settle(1, false, true), (1, 0));
        assert_eq!(c.through, 2);
        assert_eq!(c.settle(4, false, false), (0, 1));
        // 3 and 5: 4 was already settled, so a multiple up to 5 adds two.
        assert_eq!(c.settle(5, true, true), (2, 0));
        assert_eq!((c.through, c.settled()), (5, 5));
        assert_eq!(c.settle(3, false, true), (0, 0));
        assert_eq!(c.settle(7, false, true), (1, 0));
        assert_eq!(c.settle(6, false, true), (1, 0));
        assert_eq!((c.through, c.beyond.len()), (7, 0));
    }

    #[test]
    fn a_message_is_head_plus_one_body_frame_with_the_stamp_first() {
        let plan = ProducerPlan {
            target: Target::Queue("q".into()),
            size_bytes: 16,
            persistent: true,
            confirm_window: 0,
            rate: None,
            batch_bytes: 1 << 17,
        };
        let head = publish_head(&plan);
        let mut buf = head.clone();
        let frame = tern_amqp::frame::decode_frame(&mut buf, 4096)
            .unwrap()
            .unwrap();
        assert!(matches!(
            frame.payload,
            FramePayload::Method(Method::BasicPublish(p)) if p.routing_key.as_str() == "q"
        ));
        let header = tern_amqp::frame::decode_frame(&mut buf, 4096)
            .unwrap()
            .unwrap();
        assert!(matches!(
            header.payload,
            FramePayload::Header(h) if h.body_size == 16 && h.properties().is_ok_and(|p| p.delivery_mode == Some(2))
        ));
        assert!(buf.is_empty());
    }
}
