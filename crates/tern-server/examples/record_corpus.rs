//! Records the fuzz targets' seed corpus from real client sessions: lapin and amqprs run
//! scripted sessions (declares with arguments, bindings with header tables, publishes with
//! every property, consume, ack / nack / reject, get, qos, confirms, transactions) against a
//! Tern broker through a proxy that keeps what each client sent. The sessions are cut into:
//!
//! - `fuzz/corpus/frame/`: each session's bytes after the protocol header;
//! - `fuzz/corpus/connection/`: each session's frames after its connection.open (the target
//!   logs in by itself);
//! - `fuzz/corpus/method/`: every method payload (prefixed 0), client-properties table (1)
//!   and content-property list (2) seen.
//!
//!     cargo run -p tern-server --example record_corpus -- fuzz/corpus

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tern_amqp::frame::{decode_frame, PROTOCOL_HEADER};
use tern_amqp::{FramePayload, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Sessions = Arc<Mutex<Vec<Vec<u8>>>>;

/// Forward every connection to `target`, keeping what the client sent.
async fn proxy(listener: TcpListener, target: std::net::SocketAddr, sessions: Sessions) {
    while let Ok((client, _)) = listener.accept().await {
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let server = TcpStream::connect(target).await.expect("broker");
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let back = tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = cr.read(&mut buf).await {
                if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let _ = sw.shutdown().await;
            let _ = back.await;
            sessions.lock().expect("lock").push(seen);
        });
    }
}

async fn lapin_session(uri: &str) -> lapin::Result<()> {
    use lapin::{Connection, ConnectionProperties};
    let conn = Connection::connect(uri, ConnectionProperties::default()).await?;
    let (ch, props) = lapin_topology(&conn).await?;
    lapin_traffic(&conn, &ch, props).await?;
    conn.close(200, "done").await
}

/// Declares with arguments and bindings with tables; the properties every publish carries.
async fn lapin_topology(
    conn: &lapin::Connection,
) -> lapin::Result<(lapin::Channel, lapin::BasicProperties)> {
    use lapin::options::*;
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, ExchangeKind};
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_qos(10, BasicQosOptions::default()).await?;
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1000));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("dlx".into()),
    );
    let q = ch
        .queue_declare("corpus-q", QueueDeclareOptions::default(), args)
        .await?;
    ch.exchange_declare(
        "corpus-t",
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        q.name().as_str(),
        "corpus-t",
        "a.*.c",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut hargs = FieldTable::default();
    hargs.insert("x-match".into(), AMQPValue::LongString("any".into()));
    hargs.insert("k".into(), AMQPValue::Boolean(true));
    ch.queue_bind(
        q.name().as_str(),
        "amq.headers",
        "",
        QueueBindOptions::default(),
        hargs.clone(),
    )
    .await?;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(hargs)
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("c-1".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("t".into())
        .with_user_id("guest".into())
        .with_app_id("corpus".into());
    Ok((ch, props))
}

/// Publishes with confirms, get, consume, ack / nack / reject, a transaction, deletes.
async fn lapin_traffic(
    conn: &lapin::Connection,
    ch: &lapin::Channel,
    props: lapin::BasicProperties,
) -> lapin::Result<()> {
    use lapin::options::*;
    use lapin::types::FieldTable;
    use lapin::BasicProperties;
    for key in ["a.b.c", "x"] {
        ch.basic_publish(
            "corpus-t",
            key,
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"{\"n\":1}",
            props.clone(),
        )
        .await?
        .await?;
    }
    ch.basic_publish(
        "",
        "corpus-q",
        BasicPublishOptions::default(),
        &[7u8; 5000],
        BasicProperties::default(),
    )
    .await?
    .await?;
    if let Some(m) = ch.basic_get("corpus-q", BasicGetOptions::default()).await? {
        m.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
    }
    let mut consumer = ch
        .basic_consume(
            "corpus-q",
            "corpus-ctag",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    use futures_util::StreamExt;
    if let Some(Ok(d)) = consumer.next().await {
        d.acker.ack(BasicAckOptions::default()).await?;
    }
    if let Some(Ok(d)) = consumer.next().await {
        d.acker
            .reject(BasicRejectOptions { requeue: false })
            .await?;
    }
    ch.basic_cancel("corpus-ctag", BasicCancelOptions::default())
        .await?;
    let tx = conn.create_channel().await?;
    tx.tx_select().await?;
    tx.basic_publish(
        "",
        "corpus-q",
        BasicPublishOptions::default(),
        b"in tx",
        BasicProperties::default(),
    )
    .await?;
    tx.tx_commit().await?;
    tx.tx_rollback().await?;
    ch.queue_purge("corpus-q", QueuePurgeOptions::default())
        .await?;
    ch.queue_unbind("corpus-q", "corpus-t", "a.*.c", FieldTable::default())
        .await?;
    ch.queue_delete("corpus-q", QueueDeleteOptions::default())
        .await?;
    ch.exchange_delete("corpus-t", ExchangeDeleteOptions::default())
        .await?;
    drop(consumer);
    Ok(())
}

async fn amqprs_session(port: u16) -> Result<(), amqprs::error::Error> {
    use amqprs::channel::*;
    use amqprs::connection::{Connection, OpenConnectionArguments};
    use amqprs::{BasicProperties, FieldTable, FieldValue};
    let conn = Connection::open(&OpenConnectionArguments::new(
        "127.0.0.1",
        port,
        "guest",
        "guest",
    ))
    .await?;
    let ch = conn.open_channel(None).await?;
    ch.confirm_select(ConfirmSelectArguments::new(false))
        .await?;
    let mut args = FieldTable::new();
    args.insert(
        "x-single-active-consumer".try_into().expect("name"),
        FieldValue::t(true),
    );
    ch.queue_declare(
        QueueDeclareArguments::new("corpus-rs")
            .arguments(args)
            .finish(),
    )
    .await?;
    ch.exchange_declare(ExchangeDeclareArguments::new("corpus-f", "fanout"))
        .await?;
    ch.exchange_bind(ExchangeBindArguments::new("amq.fanout", "corpus-f", ""))
        .await?;
    ch.queue_bind(QueueBindArguments::new("corpus-rs", "amq.fanout", ""))
        .await?;
    let mut props = BasicProperties::default();
    props
        .with_persistence(true)
        .with_message_id("rs-1")
        .with_priority(1);
    ch.basic_publish(
        props,
        b"from amqprs".to_vec(),
        BasicPublishArguments::new("corpus-f", "k"),
    )
    .await?;
    ch.basic_qos(BasicQosArguments::new(0, 5, false)).await?;
    let (tag, mut rx) = ch
        .basic_consume_rx(BasicConsumeArguments::new("corpus-rs", ""))
        .await?;
    if let Some(m) = rx.recv().await {
        if let Some(d) = m.deliver {
            ch.basic_ack(BasicAckArguments::new(d.delivery_tag(), false))
                .await?;
        }
    }
    ch.basic_cancel(BasicCancelArguments::new(&tag)).await?;
    ch.basic_recover(true).await?;
    ch.exchange_unbind(ExchangeUnbindArguments::new("amq.fanout", "corpus-f", ""))
        .await?;
    ch.queue_delete(QueueDeleteArguments::new("corpus-rs"))
        .await?;
    ch.close().await?;
    conn.close().await
}

/// Every whole frame of a session, after the protocol header.
fn frames(session: &[u8]) -> Vec<(Vec<u8>, tern_amqp::Frame)> {
    let rest = session
        .strip_prefix(&PROTOCOL_HEADER[..])
        .unwrap_or(session);
    let mut buf = BytesMut::from(rest);
    let mut out = Vec::new();
    loop {
        let before = buf.clone();
        match decode_frame(&mut buf, 0) {
            Ok(Some(f)) => {
                let used = before.len() - buf.len();
                out.push((before[..used].to_vec(), f));
            }
            _ => return out,
        }
    }
}

fn write_all(dir: &Path, entries: &BTreeSet<Vec<u8>>) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    for (i, e) in entries.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), e).expect("write seed");
    }
}

fn cut(sessions: &[Vec<u8>], out: &Path) {
    let (mut frame, mut conn, mut method) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for s in sessions {
        frame.insert(s.strip_prefix(&PROTOCOL_HEADER[..]).unwrap_or(s).to_vec());
        let fs = frames(s);
        let opened = fs.iter().position(|(_, f)| {
            matches!(f.payload, FramePayload::Method(Method::ConnectionOpen(_)))
        });
        let after: Vec<u8> = fs
            .iter()
            .skip(opened.map_or(0, |i| i + 1))
            .flat_map(|(b, _)| b.clone())
            .collect();
        conn.insert(after);
        for (bytes, f) in &fs {
            let payload = &bytes[7..bytes.len() - 1];
            match &f.payload {
                FramePayload::Method(Method::ConnectionStartOk(m)) => {
                    let mut t = BytesMut::new();
                    m.client_properties.encode(&mut t);
                    method.insert([&[1u8][..], &t].concat());
                    method.insert([&[0u8][..], payload].concat());
                }
                FramePayload::Method(_) => {
                    method.insert([&[0u8][..], payload].concat());
                }
                FramePayload::Header(h) => {
                    method.insert([&[2u8][..], &h.raw_properties].concat());
                }
                _ => {}
            }
        }
    }
    write_all(&out.join("frame"), &frame);
    write_all(&out.join("connection"), &conn);
    write_all(&out.join("method"), &method);
    println!(
        "{} frame, {} connection, {} method seeds in {}",
        frame.len(),
        conn.len(),
        method.len(),
        out.display()
    );
}

#[tokio::main]
async fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let broker = tern_server::start(tern_server::Config::for_tests())
        .await
        .expect("broker");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy");
    let port = listener.local_addr().expect("addr").port();
    let sessions: Sessions = Arc::default();
    let target = std::env::var("CORPUS_TARGET")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(broker.amqp_addr());
    tokio::spawn(proxy(listener, target, sessions.clone()));
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    if let Err(e) = lapin_session(&uri).await {
        // lapin 2.5 now and then closes a channel by itself late in the script (against
        // RabbitMQ too); what was sent until then is still a seed.
        eprintln!("lapin session ended early: {e}");
    }
    amqprs_session(port).await.expect("amqprs session");
    // Both clients have closed; the proxy records a session when its client hangs up.
    while sessions.lock().expect("lock").len() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let sessions = sessions.lock().expect("lock").clone();
    cut(&sessions, &out);
    broker.shutdown().await;
}
