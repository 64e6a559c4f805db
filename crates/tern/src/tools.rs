//! `tern publish` and `tern consume`: quick manual use from a shell.

use std::io::{Read, Write};

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Args;
use tern_amqp::frame::{encode_body, encode_content_header};
use tern_amqp::{
    BasicAck, BasicConsume, BasicProperties, BasicPublish, FramePayload, Method, QueueDeclare,
    ShortStr,
};

use crate::client::{Client, Uri};

#[derive(Args)]
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
    /// Wait for publisher confirms before exiting.
    #[arg(long)]
    confirm: bool,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    uri: String,
    #[arg(short, long)]
    queue: String,
    /// Exit after this many messages (0: run until interrupted).
    #[arg(short = 'n', long, default_value_t = 0)]
    count: u64,
    /// Consume with no-ack (messages are not acknowledged).
    #[arg(long)]
    no_ack: bool,
    /// Declare the queue first (non-durable, if it does not exist yet).
    #[arg(long)]
    declare: bool,
}

pub async fn publish(args: PublishArgs) -> Result<()> {
    let body = match args.body {
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
    let publish = Method::BasicPublish(BasicPublish {
        exchange: ShortStr::from(args.exchange.as_str()),
        routing_key: ShortStr::from(args.routing_key.as_str()),
        mandatory: false,
        immediate: false,
    });
    let props = BasicProperties {
        delivery_mode: Some(if args.persistent { 2 } else { 1 }),
        ..Default::default()
    };
    for _ in 0..args.count {
        c.send(1, &publish);
        encode_content_header(1, 60, body.len() as u64, &props, &mut c.out);
        encode_body(1, &body, c.frame_max, &mut c.out);
    }
    c.write_out().await?;
    if args.confirm {
        wait_for_confirms(&mut c, args.count).await?;
    }
    c.close().await
}

async fn wait_for_confirms(c: &mut Client, count: u64) -> Result<()> {
    let mut confirmed = 0;
    while confirmed < count {
        match c.next_method(1).await? {
            Method::BasicAck(a) if a.multiple => confirmed = a.delivery_tag,
            Method::BasicAck(_) => confirmed += 1,
            Method::BasicNack(n) => bail!("broker nacked message {}", n.delivery_tag),
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
    let consume = BasicConsume {
        queue: ShortStr::from(args.queue.as_str()),
        no_ack: args.no_ack,
        ..Default::default()
    };
    c.call(1, Method::BasicConsume(consume)).await?;
    let (mut seen, mut tag, mut body, mut size) = (0u64, 0u64, Vec::new(), 0u64);
    let mut stdout = std::io::stdout().lock();
    while args.count == 0 || seen < args.count {
        let frame = c.next_frame_wait().await?;
        match frame.payload {
            FramePayload::Method(Method::BasicDeliver(d)) => {
                // The body is complete once its header has said how long it is.
                (tag, size) = (d.delivery_tag, u64::MAX);
            }
            FramePayload::Method(Method::BasicCancel(_)) => {
                bail!("the broker cancelled the consumer")
            }
            FramePayload::Method(Method::ChannelClose(x)) => {
                bail!("channel closed: {} {}", x.reply_code, x.reply_text)
            }
            FramePayload::Header(h) => size = h.body_size,
            FramePayload::Body(b) => body.extend_from_slice(&b),
            _ => continue,
        }
        if tag == 0 || (body.len() as u64) < size {
            continue;
        }
        writeln!(stdout, "{}", String::from_utf8_lossy(&body))?;
        body.clear();
        seen += 1;
        if !args.no_ack {
            c.send(
                1,
                &Method::BasicAck(BasicAck {
                    delivery_tag: tag,
                    multiple: false,
                }),
            );
            c.write_out().await?;
        }
        tag = 0;
    }
    c.close().await
}
