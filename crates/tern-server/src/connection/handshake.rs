//! Protocol header, connection.start / start-ok (SASL), tune / tune-ok, open / open-ok.
//!
//! Runs before the connection's main loop, under `handshake_timeout`, with frames limited to
//! `pre_auth_frame_max_bytes` until tune-ok (RabbitMQ allows 8 KiB before login).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tern_amqp::frame::{decode_frame, encode_method, PROTOCOL_HEADER};
use tern_amqp::{
    AmqpError, ConnectionOpenOk, ConnectionStart, ConnectionTune, FieldTable, FieldValue, Frame,
    FramePayload, LongStr, Method, ReplyCode, ShortStr,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ClientCaps, ConnError};
use crate::config::Config;

/// What the handshake settled.
pub struct Negotiated {
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat: u16,
    pub vhost: ShortStr,
    pub user: String,
    pub caps: ClientCaps,
}

pub struct Handshake<'a> {
    pub stream: &'a mut TcpStream,
    pub buf: &'a mut BytesMut,
    pub config: &'a Config,
    pub peer: SocketAddr,
}

impl Handshake<'_> {
    pub async fn run(
        mut self,
        vhost_exists: impl Fn(&str) -> bool,
    ) -> Result<Negotiated, ConnError> {
        self.protocol_header().await?;
        self.send(&Method::ConnectionStart(server_start())).await?;
        let start_ok = match self.expect_method().await? {
            Method::ConnectionStartOk(m) => m,
            other => return Err(unexpected(&other)),
        };
        let caps = ClientCaps::from_properties(&start_ok.client_properties);
        let user = self
            .authenticate(&start_ok.mechanism, &start_ok.response, caps)
            .await?;
        self.send(&Method::ConnectionTune(ConnectionTune {
            channel_max: self.config.channel_max,
            frame_max: self.config.frame_max_bytes,
            heartbeat: self.config.heartbeat_secs,
        }))
        .await?;
        let tune_ok = match self.expect_method().await? {
            Method::ConnectionTuneOk(m) => m,
            other => return Err(unexpected(&other)),
        };
        let (frame_max, channel_max) = self.check_tune(tune_ok.frame_max, tune_ok.channel_max)?;
        let open = match self.expect_method_limited(frame_max).await? {
            Method::ConnectionOpen(m) => m,
            other => return Err(unexpected(&other)),
        };
        if !vhost_exists(open.virtual_host.as_str()) {
            let text = format!("vhost '{}' not found", open.virtual_host);
            return Err(ConnError::Amqp(
                AmqpError::new(ReplyCode::NotAllowed, text).on(10, 40),
            ));
        }
        self.send(&Method::ConnectionOpenOk(ConnectionOpenOk {}))
            .await?;
        Ok(Negotiated {
            frame_max,
            channel_max,
            heartbeat: tune_ok.heartbeat,
            vhost: open.virtual_host,
            user,
            caps,
        })
    }

    /// Read the 8-byte protocol header; answer a wrong one with ours and close (spec 4.2.2).
    async fn protocol_header(&mut self) -> Result<(), ConnError> {
        let mut header = [0u8; 8];
        self.stream.read_exact(&mut header).await?;
        if header != PROTOCOL_HEADER {
            let _ = self.stream.write_all(&PROTOCOL_HEADER).await;
            return Err(ConnError::BadProtocolHeader);
        }
        Ok(())
    }

    async fn authenticate(
        &mut self,
        mechanism: &str,
        response: &Bytes,
        caps: ClientCaps,
    ) -> Result<String, ConnError> {
        let creds = match mechanism {
            "PLAIN" => parse_plain(response),
            "AMQPLAIN" => parse_amqplain(response),
            other => {
                let text = format!("unsupported authentication mechanism '{other}'");
                return Err(ConnError::Amqp(
                    AmqpError::new(ReplyCode::AccessRefused, text).on(10, 11),
                ));
            }
        };
        let Some((user, password)) = creds else {
            let text = "malformed SASL response";
            return Err(ConnError::Amqp(
                AmqpError::new(ReplyCode::AccessRefused, text).on(10, 11),
            ));
        };
        if user != "guest" || password != "guest" {
            tracing::warn!(peer = %self.peer, %user, "authentication failed");
            let text = format!("Login was refused using authentication mechanism {mechanism}. For details see the broker logfile.");
            return Err(auth_failure(text, caps));
        }
        if !self.peer.ip().is_loopback() {
            tracing::warn!(peer = %self.peer, "user 'guest' refused: only loopback connections allowed");
            let text = "User 'guest' can only connect via localhost".to_string();
            return Err(auth_failure(text, caps));
        }
        Ok(user)
    }

    /// RabbitMQ (rabbit_reader's validate_negotiated_integer_value) refuses a tune-ok value
    /// below the minimum (frame_max 4096, channel_max 1), above what it offered, or 0
    /// ("unlimited") when it offered a limit.
    fn check_tune(&self, frame_max: u32, channel_max: u16) -> Result<(u32, u16), ConnError> {
        let frame_min = tern_amqp::frame::FRAME_MIN_SIZE;
        negotiated(
            "frame_max",
            frame_max,
            frame_min,
            self.config.frame_max_bytes,
        )?;
        let channel_offer = self.config.channel_max;
        negotiated("channel_max", channel_max.into(), 1, channel_offer.into())?;
        // 0 passes only when the server offered no limit.
        let frame_max = if frame_max == 0 { u32::MAX } else { frame_max };
        let channel_max = if channel_max == 0 {
            u16::MAX
        } else {
            channel_max
        };
        Ok((frame_max, channel_max))
    }

    async fn send(&mut self, method: &Method) -> Result<(), ConnError> {
        let mut out = BytesMut::new();
        encode_method(0, method, &mut out);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn expect_method(&mut self) -> Result<Method, ConnError> {
        let limit = self.config.pre_auth_frame_max_bytes;
        self.expect_method_limited(limit).await
    }

    /// The next method frame on channel 0; heartbeats are skipped, anything else is an error.
    async fn expect_method_limited(&mut self, frame_max: u32) -> Result<Method, ConnError> {
        loop {
            match decode_frame(self.buf, frame_max)? {
                Some(Frame {
                    payload: FramePayload::Heartbeat,
                    ..
                }) => continue,
                Some(Frame {
                    channel: 0,
                    payload: FramePayload::Method(m),
                }) => return Ok(m),
                Some(_) => {
                    let text = "expected a connection method on channel 0";
                    return Err(ConnError::Amqp(AmqpError::new(
                        ReplyCode::CommandInvalid,
                        text,
                    )));
                }
                None => {
                    if self.stream.read_buf(self.buf).await? == 0 {
                        return Err(ConnError::Eof);
                    }
                }
            }
        }
    }
}

/// One tune-ok value against the server's offer; `offer` 0 means the server set no limit.
fn negotiated(field: &str, value: u32, min: u32, offer: u32) -> Result<(), ConnError> {
    let text = if value != 0 && value < min {
        format!("negotiated {field} = {value} is lower than the minimum allowed value ({min})")
    } else if offer != 0 && (value == 0 || value > offer) {
        format!("negotiated {field} = {value} is higher than the maximum allowed value ({offer})")
    } else {
        return Ok(());
    };
    let text = format!("failed to negotiate connection parameters: {text}");
    Err(ConnError::Amqp(
        AmqpError::new(ReplyCode::NotAllowed, text).on(10, 31),
    ))
}

fn unexpected(method: &Method) -> ConnError {
    let text = format!("unexpected method {} during the handshake", method.name());
    ConnError::Amqp(
        AmqpError::new(ReplyCode::CommandInvalid, text).on(method.class_id(), method.method_id()),
    )
}

/// 403 as connection.close when the client understands it, otherwise a plain close (RabbitMQ's
/// authentication_failure_close capability).
fn auth_failure(text: String, caps: ClientCaps) -> ConnError {
    let err = AmqpError::new(ReplyCode::AccessRefused, text).on(10, 11);
    if caps.authentication_failure_close {
        ConnError::Amqp(err)
    } else {
        ConnError::AuthFailedSilently
    }
}

/// PLAIN: `authzid \0 authcid \0 password`.
fn parse_plain(response: &LongStr) -> Option<(String, String)> {
    let mut parts = response.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let password = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    parts.next().is_none().then_some((user, password))
}

/// AMQPLAIN: a field table without its length prefix, holding LOGIN and PASSWORD.
fn parse_amqplain(response: &LongStr) -> Option<(String, String)> {
    let mut framed = BytesMut::with_capacity(response.len() + 4);
    framed.extend_from_slice(&(u32::try_from(response.len()).ok()?).to_be_bytes());
    framed.extend_from_slice(response);
    let mut bytes = framed.freeze();
    let table = FieldTable::decode(&mut bytes).ok()?;
    let text = |key: &str| -> Option<String> {
        match table.get(key)? {
            FieldValue::LongStr(b) | FieldValue::Bytes(b) => {
                std::str::from_utf8(&b[..]).ok().map(str::to_owned)
            }
            _ => None,
        }
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

/// connection.start with RabbitMQ's server properties and capabilities.
fn server_start() -> ConnectionStart {
    let mut caps = FieldTable::new();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(cap, FieldValue::Bool(true));
    }
    let text = |s: &str| FieldValue::LongStr(Bytes::copy_from_slice(s.as_bytes()));
    let mut props = FieldTable::new();
    props.insert("capabilities", FieldValue::Table(caps));
    props.insert("cluster_name", text("tern@localhost"));
    props.insert("copyright", text("Copyright (c) the Tern authors"));
    props.insert("information", text("Licensed under the Apache License 2.0"));
    props.insert("platform", text("Rust"));
    props.insert("product", text("Tern"));
    props.insert("version", text(env!("CARGO_PKG_VERSION")));
    ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: Bytes::from_static(b"PLAIN AMQPLAIN"),
        locales: Bytes::from_static(b"en_US"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_response_splits_into_user_and_password() {
        let r = Bytes::from_static(b"\0guest\0secret");
        assert_eq!(parse_plain(&r), Some(("guest".into(), "secret".into())));
        assert_eq!(parse_plain(&Bytes::from_static(b"guest")), None);
        assert_eq!(parse_plain(&Bytes::from_static(b"\0a\0b\0c")), None);
    }
}
