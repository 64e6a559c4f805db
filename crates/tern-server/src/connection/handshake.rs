//! Protocol header, connection.start / start-ok (SASL), tune / tune-ok, open / open-ok.
//!
//! Runs before the connection's main loop, under `handshake_timeout`, with frames limited to
//! `pre_auth_frame_max_bytes` until tune-ok (RabbitMQ allows 8 KiB before login).

use std::net::SocketAddr;

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tern_amqp::frame::{decode_frame, encode_method, PROTOCOL_HEADER};
use tern_amqp::{
    AmqpError, ConnectionOpenOk, ConnectionStart, ConnectionTune, FieldTable, FieldValue, Frame,
    FramePayload, Method, ReplyCode, ShortStr,
};
use tern_core::meta::access::VhostAccess;
use tern_core::names::{UserName, VhostName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ClientCaps, ClientStream, ConnError};
use crate::auth;
use crate::broker::{Broker, VhostSlot};
use crate::config::Config;

/// What the handshake settled.
pub struct Negotiated {
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat: u16,
    pub vhost: ShortStr,
    pub user: UserName,
    /// The user's permissions in the vhost, as of the open.
    pub access: VhostAccess,
    /// The connection's place in the vhost's connection count.
    pub vhost_slot: VhostSlot,
    pub client_properties: FieldTable,
    pub caps: ClientCaps,
    /// The SASL mechanism the client logged in with (PLAIN, AMQPLAIN, EXTERNAL).
    pub mechanism: String,
}

pub struct Handshake<'a, S> {
    pub stream: &'a mut S,
    pub buf: &'a mut BytesMut,
    pub broker: &'a std::sync::Arc<Broker>,
    pub peer: SocketAddr,
    /// From the client's TLS certificate: offered as SASL EXTERNAL.
    pub cert_user: Option<String>,
}

impl<S: ClientStream> Handshake<'_, S> {
    fn config(&self) -> &Config {
        &self.broker.config
    }

    pub async fn run(mut self) -> Result<Negotiated, ConnError> {
        self.protocol_header().await?;
        let external = self.cert_user.is_some();
        let start = server_start(external, self.broker.cluster_name());
        self.send(&Method::ConnectionStart(start)).await?;
        let start_ok = match self.expect_method().await? {
            Method::ConnectionStartOk(m) => m,
            other => return Err(unexpected(&other)),
        };
        let caps = ClientCaps::from_properties(&start_ok.client_properties);
        let user = self
            .authenticate(&start_ok.mechanism, &start_ok.response, caps)
            .await?;
        self.send(&Method::ConnectionTune(ConnectionTune {
            channel_max: self.config().channel_max,
            frame_max: self.config().frame_max_bytes,
            heartbeat: self.config().heartbeat_secs,
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
        let (access, vhost_slot) = self.open_vhost(&open.virtual_host, &user)?;
        self.send(&Method::ConnectionOpenOk(ConnectionOpenOk {}))
            .await?;
        Ok(Negotiated {
            frame_max,
            channel_max,
            heartbeat: tune_ok.heartbeat,
            vhost: open.virtual_host,
            user,
            access,
            vhost_slot,
            client_properties: start_ok.client_properties,
            caps,
            mechanism: start_ok.mechanism.to_string(),
        })
    }

    /// 530 for a vhost that does not exist, that the user has no permissions in, or that is
    /// at its connection limit.
    fn open_vhost(
        &self,
        vhost: &ShortStr,
        user: &UserName,
    ) -> Result<(VhostAccess, VhostSlot), ConnError> {
        let name = VhostName::from(vhost.clone());
        let text = if !self.broker.vhost_exists(&name) {
            format!("vhost '{vhost}' not found")
        } else if let Some(access) = self.broker.vhost_access(&name, user) {
            if let Some(slot) = self.broker.admit_to_vhost(&name) {
                return Ok((access, slot));
            }
            let limit = self.config().max_connections_per_vhost;
            tracing::warn!(%user, %vhost, limit, "connection refused: max_connections_per_vhost reached");
            format!("access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached")
        } else {
            tracing::warn!(%user, %vhost, "vhost access refused");
            format!("access to vhost '{vhost}' refused for user '{user}'")
        };
        Err(ConnError::Amqp(
            AmqpError::new(ReplyCode::NotAllowed, text).on(10, 40),
        ))
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
    ) -> Result<UserName, ConnError> {
        let creds = match mechanism {
            "PLAIN" => auth::parse_plain(response).map(Some),
            "AMQPLAIN" => auth::parse_amqplain(response).map(Some),
            // The user is the certificate's; the response is ignored, as in RabbitMQ.
            "EXTERNAL" if self.cert_user.is_some() => Some(None),
            other => {
                let text = format!("unsupported authentication mechanism '{other}'");
                return Err(ConnError::Amqp(
                    AmqpError::new(ReplyCode::AccessRefused, text).on(10, 11),
                ));
            }
        };
        let Some(creds) = creds else {
            let text = "malformed SASL response";
            return Err(ConnError::Amqp(
                AmqpError::new(ReplyCode::AccessRefused, text).on(10, 11),
            ));
        };
        let refused = || {
            let text = format!("Login was refused using authentication mechanism {mechanism}. For details see the broker logfile.");
            auth_failure(text, caps)
        };
        let user = self
            .check_credentials(mechanism, creds)
            .map_err(|()| refused())?;
        if !self.loopback_allows(&user) {
            tracing::warn!(%user, "login refused: user '{user}' can only connect via localhost (loopback_users)");
            return Err(refused());
        }
        Ok(UserName::from(user.as_str()))
    }

    /// The user, if the password (or, with None, the TLS certificate) proves who it is.
    /// Failures are logged here and counted against the peer's address.
    fn check_credentials(
        &self,
        mechanism: &str,
        creds: Option<(String, String)>,
    ) -> Result<String, ()> {
        let (ip, now) = (self.peer.ip(), Instant::now());
        let user = match &creds {
            Some((user, _)) => user.clone(),
            None => self.cert_user.clone().unwrap_or_default(),
        };
        if !self.broker.logins.allows(ip, now) {
            tracing::warn!(%user, "login refused: too many failed logins from this address");
            return Err(());
        }
        let checked = match &creds {
            Some((user, password)) => self.broker.check_password(user, password),
            None => self.broker.check_user_exists(&user),
        };
        if let Err(why) = checked {
            self.broker.logins.failed(ip, now);
            tracing::warn!(%user, mechanism, "authentication failed: {why}");
            return Err(());
        }
        Ok(user)
    }

    /// Users in `loopback_users` (guest, by default) may connect from loopback only. The
    /// client hears only that the login was refused, as from RabbitMQ; the log says why.
    fn loopback_allows(&self, user: &str) -> bool {
        self.broker.loopback_allows(user, self.peer.ip())
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
            self.config().frame_max_bytes,
        )?;
        let channel_offer = self.config().channel_max;
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
        let limit = self.config().pre_auth_frame_max_bytes;
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

/// connection.start with RabbitMQ's server properties and capabilities.
/// `external`: the client presented a TLS certificate, so EXTERNAL is offered too (RabbitMQ's
/// rabbit_auth_mechanism_ssl offers itself only then).
fn server_start(external: bool, cluster_name: &str) -> ConnectionStart {
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
    props.insert("cluster_name", text(cluster_name));
    props.insert("copyright", text("Copyright (c) the Tern authors"));
    props.insert("information", text("Licensed under the Apache License 2.0"));
    props.insert("platform", text("Rust"));
    props.insert("product", text("Tern"));
    props.insert("version", text(env!("CARGO_PKG_VERSION")));
    ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: if external {
            Bytes::from_static(b"PLAIN AMQPLAIN EXTERNAL")
        } else {
            Bytes::from_static(b"PLAIN AMQPLAIN")
        },
        locales: Bytes::from_static(b"en_US"),
    }
}
