//! `tern publish` and `tern consume`: quick manual use from a shell.

use std::io::{Read, Write};

use anyhow::{bail, Result};
use bytes::{Bytes, BytesMut};
use clap::Args;
use tern_amqp::frame::{encode_body, encode_content_header};
use tern_amqp::{
    BasicAck, BasicConsume, BasicProperties, BasicPublish, BasicQos, FramePayload, Method,
    QueueDeclare, ShortStr,
};

use crate::client::{close_error, Client, Uri};

/// Publishes are written in chunks of about this many bytes.
const WRITE_BATCH_BYTES: usize = 128 * 1024;
/// Prefetch of `tern consume` when it has no `--count` (or a larger one).
const CONSUME_PREFETCH_MAX: u64 = 1000;

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    uri: String,
    /// Exchange ("" is the default exchange, which routes by queue name).
    #[arg(short, long, default_value = "")]
    exchange: String,
    #[arg(short = 'k', long, default_value = "")]
    routing_key: String,
    /// The body; read from stdin when absent.
    #[arg(short, long)]
    body: Option<String>,
    /// How many copies to publish.
    #[arg(short = 'n', long, default_value_t = 1)]
    count: u64,
    /// delivery-mode 2.
    #[arg(long)]
    persistent: bool,
    /// Wait for publisher confirms before exiting; fail if any is a nack.
    #[arg(long)]
    confirm: bool,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    uri: String,
    #[arg(short, long)]
    queue: String,
    /// Exit after this many messages (0: run until interrupted).
    #[arg(short = 'n', long, default_value_t = 0)]
    count: u64,
    /// Consume with no-ack: nothing is acknowledged, and the broker may send more than
    /// `--count` (the rest are lost when we exit).
    #[arg(long)]
    no_ack: bool,
    /// Declare the queue first (non-durable, if it does not exist yet).
    #[arg(long)]
    declare: bool,
}

pub async fn publish(args: PublishArgs) -> Result<()> {
    let body = match args.body.clone() {
        Some(b) => Bytes::from(b),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            Bytes::from(buf)
        }
    };
    let mut c = Client::connect(&args.uri.parse::<Uri>()?).await?;
    c.open_channel(1).await?;
    if args.confirm {
        c.call(1, Method::ConfirmSelect(Default::default())).await?;
    }
    let message = encode_message(&args, &body, c.frame_max);
    for _ in 0..args.count {
        c.out.extend_from_slice(&message);
        if c.out.len() >= WRITE_BATCH_BYTES {
            c.write_out().await?;
            // Keep reading so confirms cannot fill the socket and stall the broker's writer.
            while c.try_read_more()? {}
        }
    }
    c.write_out().await?;
    if args.confirm {
        wait_for_confirms(&mut c, args.count).await?;
    }
    c.close_channel(1).await?;
    c.close().await
}

/// basic.publish, content header and body frames of one message.
fn encode_message(args: &PublishArgs, body: &[u8], frame_max: u32) -> BytesMut {
    let mut out = BytesMut::new();
    let publish = Method::BasicPublish(BasicPublish {
        exchange: ShortStr::from(args.exchange.as_str()),
        routing_key: ShortStr::from(args.routing_key.as_str()),
        mandatory: false,
        immediate: false,
    });
    tern_amqp::frame::encode_method(1, &publish, &mut out);
    let props = BasicProperties {
        delivery_mode: Some(if args.persistent { 2 } else { 1 }),
        ..Default::default()
    };
    encode_content_header(1, 60, body.len() as u64, &props, &mut out);
    encode_body(1, body, frame_max, &mut out);
    out
}

/// Wait until the broker has confirmed publishes 1..=count.
async fn wait_for_confirms(c: &mut Client, count: u64) -> Result<()> {
    let mut confirmed = 0;
    while confirmed < count {
        match c.next_method(1).await? {
            Method::BasicAck(a) if a.multiple => confirmed = confirmed.max(a.delivery_tag),
            Method::BasicAck(_) => confirmed += 1,
            Method::BasicNack(n) => bail!("the broker nacked message {}", n.delivery_tag),
            _ => {}
        }
    }
    Ok(())
}

pub async fn consume(args: ConsumeArgs) -> Result<()> {
    let mut c = Client::connect(&args.uri.parse::<Uri>()?).await?;
    c.open_channel(1).await?;
    if args.declare {
        let declare = QueueDeclare {
            queue: ShortStr::from(args.queue.as_str()),
            ..Default::default()
        };
        c.call(1, Method::QueueDeclare(declare)).await?;
    }
    if !args.no_ack {
        // Don't take (and then hand back) much more than we will print.
        let prefetch = match args.count {
            0 => CONSUME_PREFETCH_MAX,
            n => n.min(CONSUME_PREFETCH_MAX),
        };
        let qos = BasicQos {
            prefetch_size: 0,
            prefetch_count: prefetch as u16,
            global: false,
        };
        c.call(1, Method::BasicQos(qos)).await?;
    }
    let consume = BasicConsume {
        queue: ShortStr::from(args.queue.as_str()),
        no_ack: args.no_ack,
        ..Default::default()
    };
    c.call(1, Method::BasicConsume(consume)).await?;
    print_messages(&mut c, &args).await?;
    c.close().await
}

async fn print_messages(c: &mut Client, args: &ConsumeArgs) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut message = Assembly::default();
    let mut seen = 0u64;
    while args.count == 0 || seen < args.count {
        let frame = c.next_frame_wait().await?;
        let Some((tag, body)) = message.on_frame(frame.payload)? else {
            continue;
        };
        writeln!(stdout, "{}", String::from_utf8_lossy(&body))?;
        stdout.flush()?;
        seen += 1;
        if !args.no_ack {
            let ack = BasicAck {
                delivery_tag: tag,
                multiple: false,
            };
            c.send(1, &Method::BasicAck(ack));
            c.write_out().await?;
        }
    }
    Ok(())
}

/// One delivery being put together from its deliver, header and body frames.
#[derive(Default)]
struct Assembly {
    tag: Option<u64>,
    size: u64,
    body: Vec<u8>,
}

impl Assembly {
    /// Take a frame; a finished message comes back as (delivery tag, body).
    fn on_frame(&mut self, payload: FramePayload) -> Result<Option<(u64, Vec<u8>)>> {
        match payload {
            FramePayload::Method(Method::BasicDeliver(d)) => {
                // Complete only once the header has said how long the body is.
                (self.tag, self.size) = (Some(d.delivery_tag), u64::MAX);
                self.body.clear();
            }
            FramePayload::Header(h) => self.size = h.body_size,
            FramePayload::Body(b) => self.body.extend_from_slice(&b),
            FramePayload::Method(Method::BasicCancel(_)) => {
                bail!("the broker cancelled the consumer (was the queue deleted?)")
            }
            FramePayload::Method(m) => match close_error(&m) {
                Some(e) => return Err(e),
                None => return Ok(None),
            },
            _ => return Ok(None),
        }
        match self.tag {
            Some(tag) if self.body.len() as u64 >= self.size => {
                self.tag = None;
                Ok(Some((tag, std::mem::take(&mut self.body))))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_amqp::{BasicDeliver, ContentHeader};

    fn header(size: u64) -> FramePayload {
        FramePayload::Header(ContentHeader::new(size, &Default::default()))
    }

    fn deliver(tag: u64) -> FramePayload {
        FramePayload::Method(Method::BasicDeliver(BasicDeliver {
            delivery_tag: tag,
            ..Default::default()
        }))
    }

    #[test]
    fn a_body_split_over_frames_is_put_back_together() {
        let mut a = Assembly::default();
        assert_eq!(a.on_frame(deliver(4)).unwrap(), None);
        assert_eq!(a.on_frame(header(5)).unwrap(), None);
        assert_eq!(
            a.on_frame(FramePayload::Body(Bytes::from_static(b"he")))
                .unwrap(),
            None
        );
        let done = a
            .on_frame(FramePayload::Body(Bytes::from_static(b"llo")))
            .unwrap();
        assert_eq!(done, Some((4, b"hello".to_vec())));
    }

    #[test]
    fn an_empty_body_is_complete_at_its_header() {
        let mut a = Assembly::default();
        a.on_frame(deliver(1)).unwrap();
        assert_eq!(a.on_frame(header(0)).unwrap(), Some((1, Vec::new())));
        assert_eq!(a.on_frame(FramePayload::Heartbeat).unwrap(), None);
    }

    #[test]
    fn publish_and_consume_flags_are_understood() {
        use clap::Parser;
        #[derive(Parser)]
        enum Cli {
            Publish(PublishArgs),
            Consume(ConsumeArgs),
        }
        let Cli::Publish(p) =
            Cli::try_parse_from(["t", "publish", "-k", "q", "-n", "3", "--confirm"]).unwrap()
        else {
            panic!("not publish")
        };
        assert_eq!((p.routing_key.as_str(), p.count, p.confirm), ("q", 3, true));
        assert_eq!(p.exchange, "");
        let Cli::Consume(c) =
            Cli::try_parse_from(["t", "consume", "--queue", "q", "--count", "2", "--no-ack"])
                .unwrap()
        else {
            panic!("not consume")
        };
        assert_eq!((c.queue.as_str(), c.count, c.no_ack), ("q", 2, true));
    }
}
