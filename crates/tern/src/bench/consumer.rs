//! A `tern bench` consumer: one connection, one channel, one basic.consume.
//!
//! Each read is handled to the last whole frame; the clock is read once per read, and each
//! message's latency is that time minus the stamp in its first 8 body bytes. Acks for the read
//! are coalesced into one write: one basic.ack per `--multi-ack` deliveries. Content frames are
//! not decoded into structs (a header's properties are large to build and move around, and we
//! need only its body size), which halves the consumer's CPU per message.

use std::sync::Arc;

use anyhow::{bail, Result};
use tern_amqp::frame::{FRAME_BODY, FRAME_HEADER, FRAME_METHOD};
use tern_amqp::{BasicAck, BasicConsume, BasicQos, FramePayload, Method, ShortStr};
use tokio::sync::watch;

use super::stats::Shared;
use super::Phase;
use crate::client::{close_error, Client, Uri};

pub struct ConsumerPlan {
    pub queue: String,
    /// basic.qos prefetch-count; 0: none sent.
    pub prefetch: u16,
    /// Ack every this many deliveries (multiple=true when above 1).
    pub multi_ack: u64,
    pub auto_ack: bool,
}

pub struct Consumer {
    c: Client,
    plan: ConsumerPlan,
    state: Deliveries,
}

impl Consumer {
    pub async fn connect(uri: &Uri, plan: ConsumerPlan) -> Result<Consumer> {
        let mut c = Client::connect(uri).await?;
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
        match c.call(1, Method::BasicConsume(consume)).await? {
            Method::BasicConsumeOk(_) => {}
            other => bail!("expected basic.consume-ok, got {}", other.name()),
        }
        Ok(Consumer {
            c,
            plan,
            state: Deliveries::default(),
        })
    }

    /// Consume until the phase is `Done`, counting and timing every message in `shared`.
    pub async fn run(
        mut self,
        shared: Arc<Shared>,
        mut phase: watch::Receiver<Phase>,
    ) -> Result<()> {
        let mut stamps = Vec::with_capacity(4096);
        loop {
            tokio::select! {
                r = self.c.read_more() => r?,
                _ = phase.wait_for(|p| *p == Phase::Done) => break,
            }
            let now_ns = shared.now_ns();
            self.take_frames(&mut stamps)?;
            shared.record(now_ns, &stamps);
            stamps.clear();
            self.c.write_out().await?;
        }
        self.c.close().await
    }

    /// Handle every whole frame read so far, queueing the acks that fall due. Content frames
    /// are read in place (only a body size and a stamp are needed); methods are decoded.
    fn take_frames(&mut self, stamps: &mut Vec<u64>) -> Result<()> {
        while let Some(raw) = self.c.peek_frame()? {
            let len = raw.len;
            match raw.kind {
                FRAME_HEADER => self.state.on_header(header_body_size(raw.payload)?, stamps),
                FRAME_BODY => self.state.on_body(raw.payload, stamps),
                FRAME_METHOD => match deliver_tag(raw.payload) {
                    Some(tag) => self.state.on_deliver(tag),
                    None => {
                        self.take_method()?;
                        continue;
                    }
                },
                _ => {}
            }
            self.c.skip_frame(len);
            if let Some(ack) = self.state.ack_due(&self.plan) {
                self.c.send(1, &Method::BasicAck(ack));
            }
        }
        Ok(())
    }

    /// Decode and handle the method frame at the front of the buffer.
    fn take_method(&mut self) -> Result<()> {
        if let Some(frame) = self.c.next_frame()? {
            if let FramePayload::Method(m) = frame.payload {
                self.state.on_method(m)?;
            }
        }
        Ok(())
    }
}

/// The delivery tag of a basic.deliver payload, read in place: the one field we need of the
/// most frequent method (`class method consumer-tag:shortstr delivery-tag:u64 ...`). `None` for
/// any other method, or a malformed one (the full decoder then reports it).
fn deliver_tag(payload: &[u8]) -> Option<u64> {
    const BASIC_DELIVER: [u8; 4] = [0, 60, 0, 60];
    let rest = payload.strip_prefix(&BASIC_DELIVER)?;
    let (&tag_len, rest) = rest.split_first()?;
    let tag = rest.get(usize::from(tag_len)..)?.first_chunk::<8>()?;
    Some(u64::from_be_bytes(*tag))
}

/// The body-size field of a content header payload (class, weight, size, ...; spec 4.2.6.1).
fn header_body_size(payload: &[u8]) -> Result<u64> {
    match payload.get(4..12).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
        Some(size) => Ok(u64::from_be_bytes(size)),
        None => bail!(
            "bad frame from server: content header of {} bytes",
            payload.len()
        ),
    }
}

/// Where the consumer is in the deliver → header → body sequence, and what it owes in acks.
#[derive(Default)]
struct Deliveries {
    last_tag: u64,
    body_left: u64,
    stamp: Option<u64>,
    unacked: u64,
}

impl Deliveries {
    fn on_deliver(&mut self, delivery_tag: u64) {
        self.last_tag = delivery_tag;
        self.stamp = None;
    }

    fn on_method(&mut self, method: Method) -> Result<()> {
        match method {
            Method::BasicDeliver(d) => self.on_deliver(d.delivery_tag),
            Method::BasicCancel(_) => {
                bail!("the broker cancelled the consumer (was its queue deleted?)")
            }
            m => {
                if let Some(e) = close_error(&m) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn on_header(&mut self, body_size: u64, stamps: &mut Vec<u64>) {
        self.body_left = body_size;
        if body_size == 0 {
            self.complete(stamps);
        }
    }

    fn on_body(&mut self, body: &[u8], stamps: &mut Vec<u64>) {
        if self.stamp.is_none() {
            self.stamp = body.first_chunk::<8>().map(|s| u64::from_le_bytes(*s));
        }
        self.body_left = self.body_left.saturating_sub(body.len() as u64);
        if self.body_left == 0 {
            self.complete(stamps);
        }
    }

    /// A message without a stamp (not ours) is acked but neither counted nor timed.
    fn complete(&mut self, stamps: &mut Vec<u64>) {
        if let Some(stamp) = self.stamp.take() {
            stamps.push(stamp);
        }
        self.unacked += 1;
    }

    /// The basic.ack to send now, once `--multi-ack` deliveries are waiting for one.
    fn ack_due(&mut self, plan: &ConsumerPlan) -> Option<BasicAck> {
        if plan.auto_ack || self.unacked == 0 || self.unacked < plan.multi_ack {
            return None;
        }
        self.unacked = 0;
        Some(BasicAck {
            delivery_tag: self.last_tag,
            multiple: plan.multi_ack > 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_amqp::BasicDeliver;

    fn plan(multi_ack: u64) -> ConsumerPlan {
        ConsumerPlan {
            queue: "q".into(),
            prefetch: 10,
            multi_ack,
            auto_ack: false,
        }
    }

    fn deliver(d: &mut Deliveries, tag: u64, body: &[u8], stamps: &mut Vec<u64>) {
        let deliver = BasicDeliver {
            delivery_tag: tag,
            ..Default::default()
        };
        d.on_method(Method::BasicDeliver(deliver)).unwrap();
        d.on_header(body.len() as u64, stamps);
        d.on_body(body, stamps);
    }

    #[test]
    fn the_delivery_tag_is_read_in_place_from_basic_deliver_only() {
        let deliver = BasicDeliver {
            consumer_tag: "amq.ctag-xyz".into(),
            delivery_tag: 0x0102_0304_0506_0708,
            redelivered: true,
            exchange: "x".into(),
            routing_key: "k".into(),
        };
        let mut buf = bytes::BytesMut::new();
        tern_amqp::frame::encode_method(1, &Method::BasicDeliver(deliver), &mut buf);
        let payload = &buf[7..buf.len() - 1];
        assert_eq!(deliver_tag(payload), Some(0x0102_0304_0506_0708));
        // class, method, tag length, 12-byte consumer tag, then the delivery tag.
        assert_eq!(deliver_tag(&payload[..25]), Some(0x0102_0304_0506_0708));
        assert_eq!(deliver_tag(&payload[..24]), None);
        let mut ack = bytes::BytesMut::new();
        tern_amqp::frame::encode_method(1, &Method::BasicAck(Default::default()), &mut ack);
        assert_eq!(deliver_tag(&ack[7..ack.len() - 1]), None);
    }

    #[test]
    fn the_body_size_is_read_from_a_content_header() {
        let mut buf = bytes::BytesMut::new();
        tern_amqp::frame::encode_content_header(1, 60, 1234, &Default::default(), &mut buf);
        let payload = &buf[7..buf.len() - 1];
        assert_eq!(header_body_size(payload).unwrap(), 1234);
        assert!(header_body_size(&payload[..11]).is_err());
    }

    #[test]
    fn acks_go_out_every_multi_ack_deliveries() {
        let (mut d, mut stamps) = (Deliveries::default(), Vec::new());
        let plan = plan(3);
        for tag in 1..=2 {
            deliver(&mut d, tag, &[7, 0, 0, 0, 0, 0, 0, 0, 1], &mut stamps);
            assert_eq!(d.ack_due(&plan), None);
        }
        deliver(&mut d, 3, &[7, 0, 0, 0, 0, 0, 0, 0, 1], &mut stamps);
        let ack = d.ack_due(&plan).unwrap();
        assert_eq!((ack.delivery_tag, ack.multiple), (3, true));
        assert_eq!(d.ack_due(&plan), None);
        assert_eq!(stamps, [7, 7, 7]);
    }

    #[test]
    fn multi_ack_of_one_sends_single_acks() {
        let (mut d, mut stamps) = (Deliveries::default(), Vec::new());
        deliver(&mut d, 9, &[1; 8], &mut stamps);
        let ack = d.ack_due(&plan(1)).unwrap();
        assert_eq!((ack.delivery_tag, ack.multiple), (9, false));
    }

    #[test]
    fn a_body_too_short_for_a_stamp_is_acked_but_not_timed() {
        let (mut d, mut stamps) = (Deliveries::default(), Vec::new());
        deliver(&mut d, 1, b"hi", &mut stamps);
        assert!(stamps.is_empty());
        assert!(d.ack_due(&plan(1)).is_some());
    }
}
