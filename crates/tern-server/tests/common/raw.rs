//! A tiny AMQP 0-9-1 client over a raw socket, for what client libraries will not do: wrong
//! protocol headers, oversized or garbage frames, going silent, reading exact tune values.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::STEP;

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;

/// One decoded frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    /// (class-id, method-id) of a method frame.
    pub fn method(&self) -> Option<(u16, u16)> {
        if self.kind != FRAME_METHOD || self.payload.len() < 4 {
            return None;
        }
        let p = &self.payload;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    }

    /// The method's arguments (after class and method ids).
    pub fn args(&self) -> Reader<'_> {
        Reader {
            buf: &self.payload[4.min(self.payload.len())..],
        }
    }

    /// reply-code of a connection.close (10,50) or channel.close (20,40).
    pub fn close_code(&self) -> Option<u16> {
        match self.method()? {
            (10, 50) | (20, 40) => self.args().u16(),
            _ => None,
        }
    }

    pub fn close_text(&self) -> Option<String> {
        match self.method()? {
            (10, 50) | (20, 40) => {
                let mut r = self.args();
                r.u16()?;
                r.shortstr()
            }
            _ => None,
        }
    }
}

/// Reads AMQP fields from a method's arguments.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
    }
    pub fn shortstr(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        self.take(n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
    pub fn longstr(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        self.take(n).map(<[u8]>::to_vec)
    }
    pub fn table(&mut self) -> Option<BTreeMap<String, Value>> {
        let n = self.u32()? as usize;
        let mut inner = Reader { buf: self.take(n)? };
        let mut out = BTreeMap::new();
        while !inner.buf.is_empty() {
            let key = inner.shortstr()?;
            let value = inner.value()?;
            out.insert(key, value);
        }
        Some(out)
    }
    fn value(&mut self) -> Option<Value> {
        Some(match self.u8()? {
            b't' => Value::Bool(self.u8()? != 0),
            b'b' | b'B' => Value::Int(i64::from(self.u8()?)),
            b's' | b'u' => Value::Int(i64::from(self.u16()?)),
            b'I' | b'i' => Value::Int(i64::from(self.u32()?)),
            b'l' | b'L' | b'T' => Value::Int(self.u64()? as i64),
            b'f' => Value::Other(self.take(4)?.to_vec()),
            b'd' => Value::Other(self.take(8)?.to_vec()),
            b'D' => Value::Other(self.take(5)?.to_vec()),
            b'S' | b'x' => Value::Str(self.longstr()?),
            b'A' => Value::Other(self.longstr()?),
            b'F' => Value::Table(self.table()?),
            b'V' => Value::Other(Vec::new()),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Str(Vec<u8>),
    Table(BTreeMap<String, Value>),
    Other(Vec<u8>),
}

/// Builds a method's arguments.
#[derive(Default)]
pub struct Args(pub Vec<u8>);

impl Args {
    pub fn new() -> Self {
        Args(Vec::new())
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn shortstr(mut self, s: &str) -> Self {
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn longstr(mut self, s: &[u8]) -> Self {
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s);
        self
    }
    /// A field table given as already-encoded entries.
    pub fn table(mut self, entries: &[u8]) -> Self {
        self.0
            .extend_from_slice(&(entries.len() as u32).to_be_bytes());
        self.0.extend_from_slice(entries);
        self
    }
}

/// A whole frame: type, channel, size, payload, frame-end.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

pub fn method_frame(channel: u16, class_id: u16, method_id: u16, args: Args) -> Vec<u8> {
    let mut payload = Vec::with_capacity(args.0.len() + 4);
    payload.extend_from_slice(&class_id.to_be_bytes());
    payload.extend_from_slice(&method_id.to_be_bytes());
    payload.extend_from_slice(&args.0);
    frame(FRAME_METHOD, channel, &payload)
}

pub fn heartbeat_frame() -> Vec<u8> {
    frame(FRAME_HEARTBEAT, 0, &[])
}

/// A basic.publish, its content header (no properties) and one body frame.
pub fn publish_frames(channel: u16, exchange: &str, routing_key: &str, body: &[u8]) -> Vec<u8> {
    let mut out = method_frame(
        channel,
        60,
        40,
        Args::new()
            .u16(0)
            .shortstr(exchange)
            .shortstr(routing_key)
            .u8(0),
    );
    let header = Args::new().u16(60).u16(0).u64(body.len() as u64).u16(0);
    out.extend(frame(FRAME_HEADER, channel, &header.0));
    if !body.is_empty() {
        out.extend(frame(FRAME_BODY, channel, body));
    }
    out
}

/// connection.tune as the server offered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tune {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}

/// connection.start as the server sent it.
#[derive(Clone, Debug)]
pub struct Start {
    pub version: (u8, u8),
    pub server_properties: BTreeMap<String, Value>,
    pub mechanisms: String,
    pub locales: String,
}

/// How a connection ended when the client stopped driving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The server sent connection.close with this code (and then closed the socket).
    Closed { code: u16, text: String },
    /// The socket closed with no connection.close.
    Eof,
}

pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).ok();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connect, send the protocol header and read connection.start.
    pub async fn start(addr: SocketAddr) -> (RawClient, Start) {
        let mut c = Self::connect(addr).await;
        c.send(PROTOCOL_HEADER).await.expect("send protocol header");
        let f = c.expect_method(10, 10).await;
        let mut r = f.args();
        let start = Start {
            version: (r.u8().unwrap(), r.u8().unwrap()),
            server_properties: r.table().expect("server-properties table"),
            mechanisms: String::from_utf8(r.longstr().unwrap()).unwrap(),
            locales: String::from_utf8(r.longstr().unwrap()).unwrap(),
        };
        (c, start)
    }

    /// Connect and log in as guest up to connection.tune (not answered yet).
    pub async fn until_tune(addr: SocketAddr) -> (RawClient, Tune) {
        let (mut c, _) = Self::start(addr).await;
        c.send(&start_ok("PLAIN", b"\0guest\0guest"))
            .await
            .expect("send start-ok");
        let f = c.expect_method(10, 30).await;
        let mut r = f.args();
        let tune = Tune {
            channel_max: r.u16().unwrap(),
            frame_max: r.u32().unwrap(),
            heartbeat: r.u16().unwrap(),
        };
        (c, tune)
    }

    /// A fully open connection on vhost `/`, tuned with the server's channel_max and frame_max
    /// and the given heartbeat.
    pub async fn open(addr: SocketAddr, heartbeat: u16) -> (RawClient, Tune) {
        let (mut c, tune) = Self::until_tune(addr).await;
        let tune_ok = Args::new()
            .u16(tune.channel_max)
            .u32(tune.frame_max)
            .u16(heartbeat);
        c.send(&method_frame(0, 10, 31, tune_ok)).await.unwrap();
        c.send(&method_frame(
            0,
            10,
            40,
            Args::new().shortstr("/").shortstr("").u8(0),
        ))
        .await
        .unwrap();
        c.expect_method(10, 41).await;
        (c, tune)
    }

    /// Open channel `ch` and wait for open-ok.
    pub async fn open_channel(&mut self, ch: u16) {
        self.send(&method_frame(ch, 20, 10, Args::new().shortstr("")))
            .await
            .unwrap();
        self.expect_method(20, 11).await;
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next frame, or None at EOF. Errors if the bytes are not a frame.
    pub async fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= 7 {
                let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]])
                    as usize;
                if self.buf.len() >= size + 8 {
                    let kind = self.buf[0];
                    let channel = u16::from_be_bytes([self.buf[1], self.buf[2]]);
                    let payload = self.buf[7..7 + size].to_vec();
                    if self.buf[7 + size] != FRAME_END {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame end"));
                    }
                    self.buf.drain(..size + 8);
                    return Ok(Some(Frame {
                        kind,
                        channel,
                        payload,
                    }));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF inside a frame",
                    ))
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Read exactly `n` bytes (not frames), or fewer if the socket closes first.
    pub async fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        while out.len() < n {
            let mut chunk = [0u8; 1024];
            match tokio::time::timeout(STEP, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(k)) => out.extend_from_slice(&chunk[..k]),
                Err(_) => panic!("timed out reading {n} bytes (got {out:?})"),
            }
        }
        out
    }

    /// Wait for the method (class, method), skipping heartbeats; panics on anything else.
    pub async fn expect_method(&mut self, class_id: u16, method_id: u16) -> Frame {
        loop {
            let f = tokio::time::timeout(STEP, self.read_frame())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for method {class_id}.{method_id}"))
                .expect("read frame")
                .unwrap_or_else(|| panic!("EOF while waiting for method {class_id}.{method_id}"));
            if f.kind == FRAME_HEARTBEAT {
                continue;
            }
            match f.method() {
                Some(m) if m == (class_id, method_id) => return f,
                _ => panic!(
                    "expected method {class_id}.{method_id}, got {f:?} (close text: {:?})",
                    f.close_text()
                ),
            }
        }
    }

    /// Wait until the server gives up on this connection: a connection.close (answered with
    /// close-ok) or EOF, whichever comes first. Unlike [`await_end`](Self::await_end) this does
    /// not insist that the socket then closes.
    pub async fn await_close_or_eof(&mut self) -> Ending {
        loop {
            let read = tokio::time::timeout(STEP, self.read_frame()).await;
            match read {
                Err(_) => panic!("connection still open after {STEP:?}"),
                Ok(Ok(None)) | Ok(Err(_)) => return Ending::Eof,
                Ok(Ok(Some(f))) if f.method() == Some((10, 50)) => {
                    let _ = self.send(&method_frame(0, 10, 51, Args::new())).await;
                    let code = f.close_code().unwrap_or(0);
                    return Ending::Closed {
                        code,
                        text: f.close_text().unwrap_or_default(),
                    };
                }
                Ok(Ok(Some(_))) => {}
            }
        }
    }

    /// Expect the server to close the connection with `code`.
    pub async fn expect_close(&mut self, code: u16) {
        match self.await_end(STEP).await {
            Ending::Closed { code: got, text } => {
                assert_eq!(got, code, "connection.close {got} {text:?}")
            }
            Ending::Eof => panic!("expected connection.close {code}, but the socket just closed"),
        }
    }

    /// Read until the server ends the connection: answer a connection.close with close-ok and
    /// wait for EOF (the side that sent connection.close closes the socket once it has
    /// close-ok). Fails if that does not happen within `limit`.
    pub async fn await_end(&mut self, limit: Duration) -> Ending {
        let deadline = tokio::time::Instant::now() + limit;
        let mut closed: Option<Ending> = None;
        loop {
            let read = tokio::time::timeout_at(deadline, self.read_frame()).await;
            let frame = match read {
                Err(_) => match closed {
                    Some(e) => panic!("the server sent {e:?} and got close-ok, but the socket was still open {limit:?} later"),
                    None => panic!("connection still open after {limit:?}"),
                },
                Ok(Ok(Some(f))) => f,
                // EOF or reset: the socket is gone.
                Ok(Ok(None)) | Ok(Err(_)) => return closed.unwrap_or(Ending::Eof),
            };
            if frame.method() == Some((10, 50)) && closed.is_none() {
                let code = frame.close_code().unwrap_or(0);
                let text = frame.close_text().unwrap_or_default();
                closed = Some(Ending::Closed { code, text });
                let _ = self.send(&method_frame(0, 10, 51, Args::new())).await;
            }
        }
    }
}

/// connection.start-ok with client capabilities like real clients send.
pub fn start_ok(mechanism: &str, response: &[u8]) -> Vec<u8> {
    let mut caps = Vec::new();
    for cap in [
        "authentication_failure_close",
        "consumer_cancel_notify",
        "basic.nack",
        "publisher_confirms",
        "connection.blocked",
    ] {
        caps.push(cap.len() as u8);
        caps.extend_from_slice(cap.as_bytes());
        caps.extend_from_slice(b"t\x01");
    }
    let mut props = Vec::new();
    props.push(7);
    props.extend_from_slice(b"product");
    props.push(b'S');
    props.extend_from_slice(&(8u32).to_be_bytes());
    props.extend_from_slice(b"tern-raw");
    props.push(12);
    props.extend_from_slice(b"capabilities");
    props.push(b'F');
    props.extend_from_slice(&(caps.len() as u32).to_be_bytes());
    props.extend_from_slice(&caps);
    let args = Args::new()
        .table(&props)
        .shortstr(mechanism)
        .longstr(response)
        .shortstr("en_US");
    method_frame(0, 10, 11, args)
}
