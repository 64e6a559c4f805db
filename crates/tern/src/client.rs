//! A small AMQP 0-9-1 client on the `tern-amqp` codec, for `tern bench`, `publish` and `consume`.
//!
//! The setup calls (`connect`, `call`) send a method and wait for its reply. The hot loops
//! skip them: they build many frames in one buffer, write it once (`write_out`), and decode
//! every whole frame a read brings (`read_more`, then `next_frame` until it returns `None`).

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use tern_amqp::frame::{decode_frame, encode_method, PROTOCOL_HEADER};
use tern_amqp::{
    ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, FieldTable, FieldValue, Frame,
    FramePayload, Method, ShortStr,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `amqp://user:pass@host:port/vhost`, with RabbitMQ's defaults for missing parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Uri {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

impl std::str::FromStr for Uri {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Uri> {
        let rest = s
            .strip_prefix("amqp://")
            .ok_or_else(|| anyhow!("URI must start with amqp://"))?;
        let (authority, vhost) = match rest.split_once('/') {
            Some((a, v)) => (a, percent_decode(v)?),
            None => (rest, "/".to_owned()),
        };
        let (creds, hostport) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        let (user, password) = match creds.map(|c| c.split_once(':').unwrap_or((c, ""))) {
            Some((u, p)) => (percent_decode(u)?, percent_decode(p)?),
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().context("bad port in URI")?),
            None => (hostport.to_owned(), 5672),
        };
        let host = if host.is_empty() {
            "localhost".to_owned()
        } else {
            host
        };
        let vhost = if vhost.is_empty() {
            "/".to_owned()
        } else {
            vhost
        };
        Ok(Uri {
            host,
            port,
            user,
            password,
            vhost,
        })
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex: String = bytes.by_ref().take(2).map(char::from).collect();
        out.push(u8::from_str_radix(&hex, 16).context("bad %-escape in URI")?);
    }
    String::from_utf8(out).context("URI is not UTF-8")
}

/// One AMQP connection: the socket, a read buffer and a write buffer.
pub struct Client {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Frames to write; `write_out` sends and clears it.
    pub out: BytesMut,
    pub frame_max: u32,
}

impl Client {
    /// Connect, log in with PLAIN, accept the server's tuning (no heartbeats), open the vhost.
    pub async fn connect(uri: &Uri) -> Result<Client> {
        let stream = TcpStream::connect((uri.host.as_str(), uri.port))
            .await
            .with_context(|| format!("connecting to {}:{}", uri.host, uri.port))?;
        stream.set_nodelay(true)?;
        let mut c = Client {
            stream,
            rbuf: BytesMut::with_capacity(256 * 1024),
            out: BytesMut::new(),
            frame_max: 4096,
        };
        c.stream.write_all(&PROTOCOL_HEADER).await?;
        match c.next_method(0).await? {
            Method::ConnectionStart(_) => {}
            other => bail!("expected connection.start, got {}", other.name()),
        }
        c.send(0, &Method::ConnectionStartOk(start_ok(uri)));
        c.write_out().await?;
        let tune = match c.next_method(0).await? {
            Method::ConnectionTune(t) => t,
            other => bail!("expected connection.tune, got {}", other.name()),
        };
        c.frame_max = if tune.frame_max == 0 {
            131_072
        } else {
            tune.frame_max
        };
        let tune_ok = ConnectionTuneOk {
            channel_max: tune.channel_max,
            frame_max: c.frame_max,
            heartbeat: 0,
        };
        c.send(0, &Method::ConnectionTuneOk(tune_ok));
        let open = ConnectionOpen {
            virtual_host: ShortStr::from(uri.vhost.as_str()),
        };
        c.call(0, Method::ConnectionOpen(open)).await?;
        Ok(c)
    }

    /// Queue a method frame in the write buffer.
    pub fn send(&mut self, channel: u16, method: &Method) {
        encode_method(channel, method, &mut self.out);
    }

    /// Write everything queued.
    pub async fn write_out(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Send a method and wait for the next method on the same channel (its reply).
    pub async fn call(&mut self, channel: u16, method: Method) -> Result<Method> {
        self.send(channel, &method);
        self.write_out().await?;
        self.next_method(channel).await
    }

    /// Open channel `channel`.
    pub async fn open_channel(&mut self, channel: u16) -> Result<()> {
        self.call(channel, Method::ChannelOpen(Default::default()))
            .await
            .map(drop)
    }

    /// The next method on `channel`; a close from the server becomes an error with its text.
    pub async fn next_method(&mut self, channel: u16) -> Result<Method> {
        loop {
            let frame = self.next_frame_wait().await?;
            match frame.payload {
                FramePayload::Method(Method::ConnectionClose(c)) => {
                    bail!(
                        "connection closed by server: {} {}",
                        c.reply_code,
                        c.reply_text
                    )
                }
                FramePayload::Method(Method::ChannelClose(c)) => {
                    bail!(
                        "channel closed by server: {} {}",
                        c.reply_code,
                        c.reply_text
                    )
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
        decode_frame(&mut self.rbuf, self.frame_max)
            .map_err(|e| anyhow!("bad frame from server: {e}"))
    }

    /// Read what the socket has (at least one byte); an error at end of stream.
    pub async fn read_more(&mut self) -> Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < 64 * 1024 {
            self.rbuf.reserve(256 * 1024);
        }
        if self.stream.read_buf(&mut self.rbuf).await? == 0 {
            bail!("server closed the connection");
        }
        Ok(())
    }

    /// Take whatever the socket already has, without waiting. False when nothing was there.
    pub fn try_read_more(&mut self) -> Result<bool> {
        if self.rbuf.capacity() - self.rbuf.len() < 64 * 1024 {
            self.rbuf.reserve(256 * 1024);
        }
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => bail!("server closed the connection"),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Close politely: connection.close, then wait (briefly) for close-ok.
    pub async fn close(mut self) -> Result<()> {
        let close = Method::ConnectionClose(tern_amqp::ConnectionClose {
            reply_code: 200,
            reply_text: ShortStr::from("bye"),
            class_id: 0,
            method_id: 0,
        });
        self.send(0, &close);
        self.write_out().await?;
        let wait = self.next_method(0);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), wait).await;
        Ok(())
    }
}

fn start_ok(uri: &Uri) -> ConnectionStartOk {
    let mut caps = FieldTable::new();
    for cap in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "authentication_failure_close",
    ] {
        caps.insert(cap, FieldValue::Bool(true));
    }
    let mut props = FieldTable::new();
    props.insert("product", FieldValue::LongStr(Bytes::from_static(b"tern")));
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

    #[test]
    fn uri_defaults_and_escapes_are_understood() {
        let u: Uri = "amqp://guest:guest@127.0.0.1:5680/%2f".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.vhost.as_str()),
            ("127.0.0.1", 5680, "/")
        );
        let u: Uri = "amqp://bob:p%40ss@broker/prod".parse().unwrap();
        assert_eq!(
            (u.user.as_str(), u.password.as_str(), u.port),
            ("bob", "p@ss", 5672)
        );
        assert_eq!(u.vhost, "prod");
        let u: Uri = "amqp://localhost".parse().unwrap();
        assert_eq!((u.user.as_str(), u.vhost.as_str()), ("guest", "/"));
        assert!("http://x".parse::<Uri>().is_err());
        assert!("amqp://h:notaport/".parse::<Uri>().is_err());
    }
}
