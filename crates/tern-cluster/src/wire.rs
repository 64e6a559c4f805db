//! The node-to-node protocol's wire format (ours; no IO here).
//!
//! A connection opens with a [`PREAMBLE`] from each side: the protocol's name and its
//! [`VERSION`]. Frames follow: `size:u32 kind:u8 body[size - 1]`, numbers big-endian. The size
//! is checked against the frame limit the moment the four bytes are in, before anything is
//! allocated ([`decode`]), so a peer cannot make a node reserve more than the limit.
//!
//! The first frames are the handshake (`handshake`): [`Hello`] each way, then a [`Message::Proof`]
//! each way; any side may answer [`Message::Refused`] with a reason instead. The frame layout
//! and the kinds of `Hello` and `Refused` never change between versions, so a node can always
//! tell a peer of another version why it refuses it. After the handshake: [`Message::Ping`] /
//! [`Message::Pong`] (heartbeats), [`Message::Call`] (a request to a service on the peer,
//! answered by a [`Message::Reply`] with the same id), [`Message::Cast`] (a one-way message
//! to a service: queue operations that need no answer, deliveries) and nothing else.
//!
//! Version 2 added `Cast` and the queue service; version 3 the node service and a first lane
//! for Raft and control traffic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What each side sends first: the protocol's name, then its version (u16).
pub const PREAMBLE: [u8; 8] = *b"TERNNODE";
/// The version this build speaks; a peer with another one is refused, naming both.
pub const VERSION: u16 = 3;
/// Preamble plus version.
pub const PREAMBLE_LEN: usize = PREAMBLE.len() + 2;
/// The largest frame a node accepts by default (`cluster_frame_max_bytes`).
pub const DEFAULT_FRAME_MAX_BYTES: u32 = 16 * 1024 * 1024;
/// Node names, cluster names, addresses and reasons are at most this long.
pub const TEXT_MAX_BYTES: usize = 1024;
/// A handshake nonce and a proof (HMAC-SHA256) are this long.
pub const NONCE_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a Tern node (its first bytes are not the node protocol's preamble)")]
    NotTern,
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: u32, limit: u32 },
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("frame cut short in {0}")]
    Truncated(&'static str),
    #[error("{0} bytes left over after a {1} frame")]
    Trailing(usize, &'static str),
    #[error("bad {0} in a frame")]
    Field(&'static str),
}

/// The first frame each side sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Both sides must name the same cluster.
    pub cluster_name: String,
    /// The sender's node name (`name@host`).
    pub node_name: String,
    /// Where the sender listens for other nodes (`host:port`), for peers to dial back.
    pub listen: String,
    /// Fresh random bytes: the challenge the other side's proof answers.
    pub nonce: [u8; NONCE_LEN],
}

/// A service on the peer that a [`Message::Call`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// A Raft RPC (append-entries, vote, snapshot) for the group `group` (0: the metadata
    /// group).
    Raft { group: u64 },
    /// Cluster membership: forming a cluster, joining one.
    Control,
    /// Operations on queues whose home is the receiving node, and what those queues send
    /// back (deliveries, confirms): `queue_ops`.
    Queue,
    /// What a node says of itself to the others (its alarms, memory, disk: health checks and
    /// `/api/nodes`), as JSON.
    Node,
}

/// A frame of the node-to-node protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    /// HMAC-SHA256 over the handshake's transcript, keyed with the cluster secret.
    Proof([u8; NONCE_LEN]),
    /// The sender will not talk to us, and why; it closes the connection next.
    Refused(String),
    Ping(u64),
    Pong(u64),
    /// A request; the answer is the [`Message::Reply`] with the same `id`.
    Call {
        id: u64,
        service: Service,
        body: Bytes,
    },
    /// The answer to call `id`: its body, or why the service could not answer.
    Reply {
        id: u64,
        result: Result<Bytes, String>,
    },
    /// A one-way message to a service; nothing answers it.
    Cast {
        service: Service,
        body: Bytes,
    },
}

mod kind {
    // HELLO and REFUSED are fixed across versions (see the module docs).
    pub const HELLO: u8 = 1;
    pub const REFUSED: u8 = 2;
    pub const PROOF: u8 = 3;
    pub const PING: u8 = 4;
    pub const PONG: u8 = 5;
    pub const CALL: u8 = 6;
    pub const REPLY: u8 = 7;
    pub const CAST: u8 = 8;
}

mod service {
    pub const RAFT: u8 = 1;
    pub const CONTROL: u8 = 2;
    pub const QUEUE: u8 = 3;
    pub const NODE: u8 = 4;
}

/// Append our preamble and version.
pub fn encode_preamble(out: &mut BytesMut) {
    out.put_slice(&PREAMBLE);
    out.put_u16(VERSION);
}

/// The peer's protocol version, once its [`PREAMBLE_LEN`] bytes are in `buf` (consumed); `None`
/// while fewer are. Any other first bytes are [`WireError::NotTern`].
pub fn decode_preamble(buf: &mut BytesMut) -> Result<Option<u16>, WireError> {
    let have = buf.len().min(PREAMBLE.len());
    if buf[..have] != PREAMBLE[..have] {
        return Err(WireError::NotTern);
    }
    if buf.len() < PREAMBLE_LEN {
        return Ok(None);
    }
    buf.advance(PREAMBLE.len());
    Ok(Some(buf.get_u16()))
}

/// Append `message` as one frame.
pub fn encode(message: &Message, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    match message {
        Message::Hello(h) => {
            out.put_u8(kind::HELLO);
            put_str(out, &h.cluster_name);
            put_str(out, &h.node_name);
            put_str(out, &h.listen);
            out.put_slice(&h.nonce);
        }
        Message::Proof(mac) => {
            out.put_u8(kind::PROOF);
            out.put_slice(mac);
        }
        Message::Refused(reason) => {
            out.put_u8(kind::REFUSED);
            put_str(out, reason);
        }
        Message::Ping(n) => {
            out.put_u8(kind::PING);
            out.put_u64(*n);
        }
        Message::Pong(n) => {
            out.put_u8(kind::PONG);
            out.put_u64(*n);
        }
        Message::Call { id, service, body } => {
            out.put_u8(kind::CALL);
            out.put_u64(*id);
            put_service(out, service);
            out.put_slice(body);
        }
        Message::Reply { id, result } => encode_reply(out, *id, result),
        Message::Cast { service, body } => {
            out.put_u8(kind::CAST);
            put_service(out, service);
            out.put_slice(body);
        }
    }
    let size = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn encode_reply(out: &mut BytesMut, id: u64, result: &Result<Bytes, String>) {
    out.put_u8(kind::REPLY);
    out.put_u64(id);
    match result {
        Ok(body) => {
            out.put_u8(0);
            out.put_slice(body);
        }
        Err(why) => {
            out.put_u8(1);
            put_str(out, why);
        }
    }
}

fn put_service(out: &mut BytesMut, service: &Service) {
    match service {
        Service::Raft { group } => {
            out.put_u8(service::RAFT);
            out.put_u64(*group);
        }
        Service::Control => out.put_u8(service::CONTROL),
        Service::Queue => out.put_u8(service::QUEUE),
        Service::Node => out.put_u8(service::NODE),
    }
}

/// Strings are sent whole: a longer one is cut at a char boundary to [`TEXT_MAX_BYTES`].
fn put_str(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(TEXT_MAX_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

/// Take one whole frame off the front of `buf`: `None` until all of it is in. A size over
/// `limit` is refused as soon as the size is in.
pub fn decode(buf: &mut BytesMut, limit: u32) -> Result<Option<Message>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size > limit {
        return Err(WireError::TooLarge { size, limit });
    }
    if size == 0 {
        return Err(WireError::Empty);
    }
    let whole = 4 + size as usize;
    if buf.len() < whole {
        buf.reserve(whole - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(size as usize).freeze();
    decode_body(body).map(Some)
}

fn decode_body(mut body: Bytes) -> Result<Message, WireError> {
    let b = &mut body;
    let kind = get_u8(b, "frame kind")?;
    let (message, name) = match kind {
        kind::HELLO => (Message::Hello(get_hello(b)?), "hello"),
        kind::PROOF => (Message::Proof(get_nonce(b, "proof")?), "proof"),
        kind::REFUSED => (Message::Refused(get_str(b, "reason")?), "refused"),
        kind::PING => (Message::Ping(get_u64(b, "ping")?), "ping"),
        kind::PONG => (Message::Pong(get_u64(b, "pong")?), "pong"),
        kind::CALL => {
            let id = get_u64(b, "call id")?;
            let service = get_service(b)?;
            let body = b.split_off(0);
            return Ok(Message::Call { id, service, body });
        }
        kind::REPLY => (get_reply(b)?, "reply"),
        kind::CAST => {
            let service = get_service(b)?;
            let body = b.split_off(0);
            return Ok(Message::Cast { service, body });
        }
        other => return Err(WireError::Kind(other)),
    };
    if !b.is_empty() {
        return Err(WireError::Trailing(b.len(), name));
    }
    Ok(message)
}

fn get_hello(b: &mut Bytes) -> Result<Hello, WireError> {
    Ok(Hello {
        cluster_name: get_str(b, "cluster name")?,
        node_name: get_str(b, "node name")?,
        listen: get_str(b, "listen address")?,
        nonce: get_nonce(b, "nonce")?,
    })
}

fn get_reply(b: &mut Bytes) -> Result<Message, WireError> {
    let id = get_u64(b, "reply id")?;
    let result = match get_u8(b, "reply status")? {
        0 => Ok(b.split_off(0)),
        1 => Err(get_str(b, "reply error")?),
        _ => return Err(WireError::Field("reply status")),
    };
    Ok(Message::Reply { id, result })
}

fn get_service(b: &mut Bytes) -> Result<Service, WireError> {
    match get_u8(b, "service")? {
        service::RAFT => Ok(Service::Raft {
            group: get_u64(b, "raft group")?,
        }),
        service::CONTROL => Ok(Service::Control),
        service::QUEUE => Ok(Service::Queue),
        service::NODE => Ok(Service::Node),
        _ => Err(WireError::Field("service")),
    }
}

fn get_u8(b: &mut Bytes, what: &'static str) -> Result<u8, WireError> {
    if b.remaining() < 1 {
        return Err(WireError::Truncated(what));
    }
    Ok(b.get_u8())
}

fn get_u64(b: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    if b.remaining() < 8 {
        return Err(WireError::Truncated(what));
    }
    Ok(b.get_u64())
}

fn get_nonce(b: &mut Bytes, what: &'static str) -> Result<[u8; NONCE_LEN], WireError> {
    if b.remaining() < NONCE_LEN {
        return Err(WireError::Truncated(what));
    }
    let mut out = [0u8; NONCE_LEN];
    b.copy_to_slice(&mut out);
    Ok(out)
}

fn get_str(b: &mut Bytes, what: &'static str) -> Result<String, WireError> {
    if b.remaining() < 2 {
        return Err(WireError::Truncated(what));
    }
    let len = b.get_u16() as usize;
    if len > TEXT_MAX_BYTES {
        return Err(WireError::Field(what));
    }
    if b.remaining() < len {
        return Err(WireError::Truncated(what));
    }
    let raw = b.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| WireError::Field(what))
}

#[cfg(test)]
mod tests;
