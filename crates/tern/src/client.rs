//! A small AMQP 0-9-1 client on the `tern-amqp` codec, for `tern bench`, `publish` and `consume`.
//!
//! One `Client` owns one socket, a read buffer and a write buffer; there is no background task.
//! The setup calls (`connect`, `call`) send a method and wait for its reply. The hot loops skip
//! them: they build many frames into `out`, write it once (`write_out`), and decode every whole
//! frame a read brings (`read_more`, then `next_frame` until it returns `None`).
//!
//! Heartbeats (spec 4.2.7) ride on the waits: while `read_more` waits for the server it sends a
//! heartbeat whenever we have written nothing for half the interval, and gives up when the server
//! has been silent for two intervals. A loop that waits elsewhere calls `keep_alive`.

mod uri;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use tern_amqp::frame::{
    decode_frame, encode_heartbeat, encode_method, FRAME_BODY, FRAME_END, FRAME_HEADER,
    FRAME_HEADER_SIZE, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD, PROTOCOL_HEADER,
};
use tern_amqp::{
    ChannelClose, ConnectionClose, ConnectionOpen, ConnectionStart, ConnectionStartOk,
    ConnectionTune, ConnectionTuneOk, FieldTable, FieldValue, Frame, FramePayload, Method,
    ShortStr,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use uri::Uri;

/// The frame_max we ask for when the server sets no limit (RabbitMQ's default).
const FRAME_MAX_DEFAULT_BYTES: u32 = 131_072;
/// Read buffer: start size, and the free space below which it grows before a read.
const READ_BUFFER_BYTES: usize = 256 * 1024;
const READ_SPARE_MIN_BYTES: usize = 64 * 1024;
/// How long `close` waits for close-ok.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One AMQP connection: the socket, a read buffer and a write buffer.
pub struct Client {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Frames to write; `write_out` sends and clears it.
    pub out: BytesMut,
    /// Negotiated in connection.tune-ok; the largest frame either side may send.
    pub frame_max: u32,
    /// Negotiated heartbeat interval; `None`: off.
    heartbeat: Option<Duration>,
    last_read: Instant,
    last_write: Instant,
}

impl Client {
    /// Connect, log in with PLAIN, accept the server's tuning, open the vhost.
    pub async fn connect(uri: &Uri) -> Result<Client> {
        let stream = TcpStream::connect((uri.host.as_str(), uri.port))
            .await
            .with_context(|| format!("connecting to {}:{}", uri.host, uri.port))?;
        stream.set_nodelay(true)?;
        let now = Instant::now();
        let mut c = Client {
            stream,
            rbuf: BytesMut::with_capacity(READ_BUFFER_BYTES),
            out: BytesMut::with_capacity(4096),
            frame_max: tern_amqp::frame::FRAME_MIN_SIZE,
            heartbeat: None,
            last_read: now,
            last_write: now,
        };
        c.stream.write_all(&PROTOCOL_HEADER).await?;
        c.handshake(uri)
            .await
            .with_context(|| format!("logging in to {}:{} as {}", uri.host, uri.port, uri.user))?;
        Ok(c)
    }

    async fn handshake(&mut self, uri: &Uri) -> Result<()> {
        match self.next_method(0).await? {
            Method::ConnectionStart(start) => check_plain(&start)?,
            other => bail!("expected connection.start, got {}", other.name()),
        }
        self.send(0, &Method::ConnectionStartOk(start_ok(uri)));
        self.write_out().await?;
        let tune_ok = match self.next_method(0).await? {
            Method::ConnectionTune(t) => negotiate(&t, uri.heartbeat_secs),
            other => bail!("expected connection.tune, got {}", other.name()),
        };
        self.frame_max = tune_ok.frame_max;
        self.heartbeat = (tune_ok.heartbeat > 0).then(|| secs(tune_ok.heartbeat));
        self.send(0, &Method::ConnectionTuneOk(tune_ok));
        let open = ConnectionOpen {
            virtual_host: ShortStr::from(uri.vhost.as_str()),
        };
        match self.call(0, Method::ConnectionOpen(open)).await? {
            Method::ConnectionOpenOk(_) => Ok(()),
            other => bail!("expected connection.open-ok, got {}", other.name()),
        }
    }

    /// Queue a method frame in the write buffer.
    pub fn send(&mut self, channel: u16, method: &Method) {
        encode_method(channel, method, &mut self.out);
    }

    /// Write everything queued.
    pub async fn write_out(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        if self.heartbeat.is_some() {
            self.last_write = Instant::now();
        }
        Ok(())
    }

    /// Send a heartbeat if we have been quiet for half the interval. For loops that wait on
    /// something other than `read_more`.
    pub async fn keep_alive(&mut self) -> Result<()> {
        match self.heartbeat {
            Some(hb) if self.last_write.elapsed() >= hb / 2 => {
                encode_heartbeat(&mut self.out);
                self.write_out().await
            }
            _ => Ok(()),
        }
    }

    /// Send a method and wait for the next method on the same channel (its reply).
    pub async fn call(&mut self, channel: u16, method: Method) -> Result<Method> {
        self.send(channel, &method);
        self.write_out().await?;
        self.next_method(channel)
            .await
            .with_context(|| format!("waiting for the reply to {}", method.name()))
    }

    /// Open channel `channel`.
    pub async fn open_channel(&mut self, channel: u16) -> Result<()> {
        match self
            .call(channel, Method::ChannelOpen(Default::default()))
            .await?
        {
            Method::ChannelOpenOk(_) => Ok(()),
            other => bail!("expected channel.open-ok, got {}", other.name()),
        }
    }

    /// Close channel `channel`; an error if the server had closed it (e.g. a publish to a
    /// missing exchange), which is how a publisher without confirms learns of one.
    pub async fn close_channel(&mut self, channel: u16) -> Result<()> {
        let close = ChannelClose {
            reply_code: 200,
            reply_text: ShortStr::from("done"),
            class_id: 0,
            method_id: 0,
        };
        match self.call(channel, Method::ChannelClose(close)).await? {
            Method::ChannelCloseOk(_) => Ok(()),
            other => bail!("expected channel.close-ok, got {}", other.name()),
        }
    }

    /// The next method on `channel`, skipping everything else; a close from the server becomes
    /// an error carrying its reply code and text.
    pub async fn next_method(&mut self, channel: u16) -> Result<Method> {
        loop {
            let frame = self.next_frame_wait().await?;
            match frame.payload {
                FramePayload::Method(Method::ConnectionClose(c)) => {
                    self.send(0, &Method::ConnectionCloseOk(Default::default()));
                    let _ = self.write_out().await;
                    return Err(server_closed("connection", &c));
                }
                FramePayload::Method(m @ Method::ChannelClose(_)) => {
                    return Err(close_error(&m).unwrap_or_else(|| anyhow::anyhow!("closed")))
                }
                FramePayload::Method(m) if frame.channel == channel => return Ok(m),
                _ => {}
            }
        }
    }

    /// The next whole frame, reading as needed.
    pub async fn next_frame_wait(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(frame);
            }
            self.read_more().await?;
        }
    }

    /// The next whole frame already in the buffer, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        decode_frame(&mut self.rbuf, self.frame_max).context("bad frame from server")
    }

    /// The next whole frame in the buffer, undecoded and borrowed in place, for hot loops that
    /// need only a few bytes of content frames; `skip_frame` then drops it. Checks what
    /// `decode_frame` checks of the frame itself: its type, size (against frame_max) and end.
    pub fn peek_frame(&self) -> Result<Option<RawFrame<'_>>> {
        let Some(head) = self.rbuf.first_chunk::<FRAME_HEADER_SIZE>() else {
            return Ok(None);
        };
        let kind = head[0];
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let len = size + FRAME_OVERHEAD;
        if !matches!(
            kind,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            bail!("bad frame from server: unknown frame type {kind}");
        }
        if self.frame_max != 0 && len > self.frame_max as usize {
            bail!(
                "bad frame from server: {len} bytes, over frame_max {}",
                self.frame_max
            );
        }
        let Some(frame) = self.rbuf.get(..len) else {
            return Ok(None);
        };
        if frame[len - 1] != FRAME_END {
            bail!("bad frame from server: no frame-end octet");
        }
        Ok(Some(RawFrame {
            kind,
            payload: &frame[FRAME_HEADER_SIZE..len - 1],
            len,
        }))
    }

    /// Drop the frame `peek_frame` returned (its `len`).
    pub fn skip_frame(&mut self, len: usize) {
        self.rbuf.advance(len);
    }

    /// Read what the socket has (waiting for at least one byte); an error at end of stream.
    /// Keeps heartbeats going while it waits.
    pub async fn read_more(&mut self) -> Result<()> {
        while !self.try_read_more()? {
            self.wait_readable().await?;
        }
        Ok(())
    }

    /// Take whatever the socket already has, without waiting. False when nothing was there.
    pub fn try_read_more(&mut self) -> Result<bool> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_SPARE_MIN_BYTES {
            self.rbuf.reserve(READ_BUFFER_BYTES);
        }
        // tokio answers WouldBlock from its cached readiness, without a syscall.
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => bail!("server closed the connection"),
            Ok(_) => {
                if self.heartbeat.is_some() {
                    self.last_read = Instant::now();
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Wait until the socket may be readable, sending heartbeats as they fall due.
    async fn wait_readable(&mut self) -> Result<()> {
        let Some(hb) = self.heartbeat else {
            self.stream.readable().await?;
            return Ok(());
        };
        let deadline = (self.last_write + hb / 2).min(self.last_read + hb * 2);
        if let Ok(ready) = tokio::time::timeout_at(deadline, self.stream.readable()).await {
            return Ok(ready?);
        }
        if self.last_read.elapsed() >= hb * 2 {
            bail!("the server sent nothing for two heartbeat intervals ({hb:?} each)");
        }
        self.keep_alive().await
    }

    /// Close politely: connection.close, then wait (briefly) for close-ok.
    pub async fn close(mut self) -> Result<()> {
        let close = Method::ConnectionClose(ConnectionClose {
            reply_code: 200,
            reply_text: ShortStr::from("bye"),
            class_id: 0,
            method_id: 0,
        });
        self.send(0, &close);
        self.write_out().await?;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.next_method(0)).await;
        Ok(())
    }
}

/// A whole frame still in the read buffer.
pub struct RawFrame<'a> {
    /// `FRAME_METHOD`, `FRAME_HEADER`, `FRAME_BODY` or `FRAME_HEARTBEAT`.
    pub kind: u8,
    pub payload: &'a [u8],
    /// Bytes the whole frame takes in the buffer.
    pub len: usize,
}

/// The error for a connection.close or channel.close the server sent.
pub fn server_closed(what: &str, c: &ConnectionClose) -> anyhow::Error {
    anyhow::anyhow!("{what} closed by server: {} {}", c.reply_code, c.reply_text)
}

/// The error a channel.close or connection.close from the server means; None for any other
/// method.
pub fn close_error(method: &Method) -> Option<anyhow::Error> {
    match method {
        Method::ChannelClose(c) => Some(anyhow::anyhow!(
            "channel closed by server: {} {}",
            c.reply_code,
            c.reply_text
        )),
        Method::ConnectionClose(c) => Some(server_closed("connection", c)),
        _ => None,
    }
}

fn secs(n: u16) -> Duration {
    Duration::from_secs(u64::from(n))
}

fn check_plain(start: &ConnectionStart) -> Result<()> {
    let mechanisms = String::from_utf8_lossy(&start.mechanisms);
    if !mechanisms.split_whitespace().any(|m| m == "PLAIN") {
        bail!("the server does not offer PLAIN login (it offers {mechanisms:?})");
    }
    Ok(())
}

/// Our connection.tune-ok: the server's frame_max and channel_max (its limits bind us), and its
/// heartbeat unless the URI asks for one. A requested 0 turns heartbeats off; otherwise the
/// lower non-zero value wins, as RabbitMQ's clients negotiate.
fn negotiate(tune: &ConnectionTune, heartbeat_secs: Option<u16>) -> ConnectionTuneOk {
    let frame_max = match tune.frame_max {
        0 => FRAME_MAX_DEFAULT_BYTES,
        n => n,
    };
    let heartbeat = match (heartbeat_secs, tune.heartbeat) {
        (None, server) => server,
        (Some(0), _) => 0,
        (Some(ours), 0) => ours,
        (Some(ours), server) => ours.min(server),
    };
    ConnectionTuneOk {
        channel_max: tune.channel_max,
        frame_max,
        heartbeat,
    }
}

fn start_ok(uri: &Uri) -> ConnectionStartOk {
    let mut caps = FieldTable::new();
    for cap in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        caps.insert(cap, FieldValue::Bool(true));
    }
    let mut props = FieldTable::new();
    props.insert("product", FieldValue::LongStr(Bytes::from_static(b"tern")));
    props.insert(
        "version",
        FieldValue::LongStr(Bytes::from_static(env!("CARGO_PKG_VERSION").as_bytes())),
    );
    props.insert("capabilities", FieldValue::Table(caps));
    let response = format!("\0{}\0{}", uri.user, uri.password);
    ConnectionStartOk {
        client_properties: props,
        mechanism: ShortStr::from("PLAIN"),
        response: Bytes::from(response),
        locale: ShortStr::from("en_US"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tune(frame_max: u32, heartbeat: u16) -> ConnectionTune {
        ConnectionTune {
            channel_max: 2047,
            frame_max,
            heartbeat,
        }
    }

    #[test]
    fn tune_ok_takes_the_servers_limits() {
        let ok = negotiate(&tune(131_072, 60), None);
        assert_eq!(
            (ok.channel_max, ok.frame_max, ok.heartbeat),
            (2047, 131_072, 60)
        );
        assert_eq!(
            negotiate(&tune(0, 0), None).frame_max,
            FRAME_MAX_DEFAULT_BYTES
        );
    }

    #[test]
    fn a_requested_heartbeat_is_lowered_to_the_servers_or_turns_them_off() {
        assert_eq!(negotiate(&tune(4096, 60), Some(10)).heartbeat, 10);
        assert_eq!(negotiate(&tune(4096, 5), Some(10)).heartbeat, 5);
        assert_eq!(negotiate(&tune(4096, 0), Some(10)).heartbeat, 10);
        assert_eq!(negotiate(&tune(4096, 60), Some(0)).heartbeat, 0);
    }

    #[test]
    fn login_needs_plain_among_the_offered_mechanisms() {
        let start = |m: &'static [u8]| ConnectionStart {
            mechanisms: Bytes::from_static(m),
            ..Default::default()
        };
        assert!(check_plain(&start(b"AMQPLAIN PLAIN")).is_ok());
        assert!(check_plain(&start(b"EXTERNAL")).is_err());
    }

    #[test]
    fn start_ok_carries_plain_credentials() {
        let uri: Uri = "amqp://bob:secret@h".parse().unwrap();
        let ok = start_ok(&uri);
        assert_eq!(&ok.response[..], b"\0bob\0secret");
        assert_eq!(ok.mechanism.as_str(), "PLAIN");
    }
}
