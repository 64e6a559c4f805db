//! The metadata commands' binary form: what the metadata log stores, so its format is ours and
//! versioned. A snapshot of the state is written as the commands that rebuild it
//! ([`Metadata::snapshot_commands`]), so snapshots and log entries share one format.
//!
//! Each command: a format version byte, a tag byte, then its fields. Names are short strings
//! (length octet, bytes), flags one byte each, ids u64 big-endian, argument tables in AMQP
//! field-table encoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tern_amqp::{FieldTable, ShortStr};

use super::access_codec::{get_access, put_access};
use super::{Binding, ExchangeDef, MetaCommand, Metadata, QueueDef};
use crate::names::{ConnectionId, ExchangeName, QueueName, VhostName};
use crate::routing::{Destination, ExchangeKind};

/// Written by this build. Version 2 added a queue's home node (flag 4 in its flags, the name
/// after the owner); version 1 records still decode.
const VERSION: u8 = 2;
/// The oldest version this build reads.
const OLDEST_VERSION: u8 = 1;
/// A queue's flags: durable, auto-delete, has a home node.
const HOME: u8 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("metadata command cut short")]
    Truncated,
    #[error("unknown metadata format version {0}")]
    Version(u8),
    #[error("unknown metadata command tag {0}")]
    Tag(u8),
    #[error("bad field in a metadata command: {0}")]
    Field(&'static str),
}

mod tag {
    pub const DECLARE_EXCHANGE: u8 = 1;
    pub const DELETE_EXCHANGE: u8 = 2;
    pub const DECLARE_QUEUE: u8 = 3;
    pub const DELETE_QUEUE: u8 = 4;
    pub const BIND: u8 = 5;
    pub const UNBIND: u8 = 6;
    pub const ADD_VHOST: u8 = 7;
    pub const DELETE_VHOST: u8 = 8;
    pub const DROP_TRANSIENT: u8 = 9;
    pub const ACCESS: u8 = 10;
    pub const BATCH: u8 = 11;
    pub const DROP_NODE_TRANSIENT: u8 = 12;
    pub const FORGET_NODE: u8 = 13;
}

pub fn encode_command(cmd: &MetaCommand, out: &mut BytesMut) {
    out.put_u8(VERSION);
    match cmd {
        MetaCommand::DeclareExchange {
            vhost,
            def,
            passive,
        } => {
            out.put_u8(tag::DECLARE_EXCHANGE);
            put_str(out, &vhost.0);
            put_exchange(out, def);
            out.put_u8(u8::from(*passive));
        }
        MetaCommand::DeleteExchange {
            vhost,
            name,
            if_unused,
        } => {
            out.put_u8(tag::DELETE_EXCHANGE);
            put_str(out, &vhost.0);
            put_str(out, &name.0);
            out.put_u8(u8::from(*if_unused));
        }
        MetaCommand::DeclareQueue {
            vhost,
            def,
            passive,
            server_named,
            requester,
        } => {
            out.put_u8(tag::DECLARE_QUEUE);
            put_str(out, &vhost.0);
            put_queue(out, def);
            out.put_u8(u8::from(*passive) | u8::from(*server_named) << 1);
            out.put_u64(requester.0);
        }
        MetaCommand::DeleteQueue { vhost, name } => {
            out.put_u8(tag::DELETE_QUEUE);
            put_str(out, &vhost.0);
            put_str(out, &name.0);
        }
        MetaCommand::Bind { vhost, binding } => {
            out.put_u8(tag::BIND);
            put_str(out, &vhost.0);
            put_binding(out, binding);
        }
        MetaCommand::Unbind { vhost, binding } => {
            out.put_u8(tag::UNBIND);
            put_str(out, &vhost.0);
            put_binding(out, binding);
        }
        MetaCommand::AddVhost { name } => {
            out.put_u8(tag::ADD_VHOST);
            put_str(out, &name.0);
        }
        MetaCommand::DeleteVhost { name } => {
            out.put_u8(tag::DELETE_VHOST);
            put_str(out, &name.0);
        }
        MetaCommand::DropTransient => out.put_u8(tag::DROP_TRANSIENT),
        MetaCommand::DropNodeTransient { node } => {
            out.put_u8(tag::DROP_NODE_TRANSIENT);
            put_str(out, node);
        }
        MetaCommand::ForgetNode { node } => {
            out.put_u8(tag::FORGET_NODE);
            put_str(out, node);
        }
        MetaCommand::Access(cmd) => {
            out.put_u8(tag::ACCESS);
            put_access(out, cmd);
        }
        MetaCommand::Batch(cmds) => {
            out.put_u8(tag::BATCH);
            let n = u32::try_from(cmds.len()).unwrap_or(u32::MAX);
            out.put_u32(n);
            for cmd in cmds.iter().take(n as usize) {
                encode_command(cmd, out);
            }
        }
    }
}

pub fn decode_command(buf: &mut Bytes) -> Result<MetaCommand, CodecError> {
    let version = get_u8(buf)?;
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(CodecError::Version(version));
    }
    let cmd = match get_u8(buf)? {
        tag::DECLARE_EXCHANGE => MetaCommand::DeclareExchange {
            vhost: VhostName(get_str(buf)?),
            def: get_exchange(buf)?,
            passive: get_u8(buf)? != 0,
        },
        tag::DELETE_EXCHANGE => MetaCommand::DeleteExchange {
            vhost: VhostName(get_str(buf)?),
            name: ExchangeName(get_str(buf)?),
            if_unused: get_u8(buf)? != 0,
        },
        tag::DECLARE_QUEUE => {
            let vhost = VhostName(get_str(buf)?);
            let def = get_queue(buf)?;
            let flags = get_u8(buf)?;
            MetaCommand::DeclareQueue {
                vhost,
                def,
                passive: flags & 1 != 0,
                server_named: flags & 2 != 0,
                requester: ConnectionId(get_u64(buf)?),
            }
        }
        tag::DELETE_QUEUE => MetaCommand::DeleteQueue {
            vhost: VhostName(get_str(buf)?),
            name: QueueName(get_str(buf)?),
        },
        tag::BIND => MetaCommand::Bind {
            vhost: VhostName(get_str(buf)?),
            binding: get_binding(buf)?,
        },
        tag::UNBIND => MetaCommand::Unbind {
            vhost: VhostName(get_str(buf)?),
            binding: get_binding(buf)?,
        },
        tag::ADD_VHOST => MetaCommand::AddVhost {
            name: VhostName(get_str(buf)?),
        },
        tag::DELETE_VHOST => MetaCommand::DeleteVhost {
            name: VhostName(get_str(buf)?),
        },
        tag::DROP_TRANSIENT => MetaCommand::DropTransient,
        tag::DROP_NODE_TRANSIENT => MetaCommand::DropNodeTransient {
            node: get_str(buf)?,
        },
        tag::FORGET_NODE => MetaCommand::ForgetNode {
            node: get_str(buf)?,
        },
        tag::ACCESS => MetaCommand::Access(get_access(buf)?),
        tag::BATCH => MetaCommand::Batch(get_batch(buf)?),
        other => return Err(CodecError::Tag(other)),
    };
    Ok(cmd)
}

/// A batch's members: a u32 count, then each command (none of them a batch). The count is
/// checked against what is left (every command takes at least two bytes) before anything is
/// allocated for it.
fn get_batch(buf: &mut Bytes) -> Result<Vec<MetaCommand>, CodecError> {
    if buf.remaining() < 4 {
        return Err(CodecError::Truncated);
    }
    let count = buf.get_u32() as usize;
    if count > buf.remaining() / 2 {
        return Err(CodecError::Truncated);
    }
    let mut cmds = Vec::with_capacity(count);
    for _ in 0..count {
        match decode_command(buf)? {
            MetaCommand::Batch(_) => return Err(CodecError::Field("a batch inside a batch")),
            cmd => cmds.push(cmd),
        }
    }
    Ok(cmds)
}

pub(super) fn put_str(out: &mut BytesMut, s: &ShortStr) {
    let bytes = s.as_slice();
    let len = bytes.len().min(ShortStr::MAX_LEN);
    out.put_u8(len as u8);
    out.put_slice(&bytes[..len]);
}

fn put_exchange(out: &mut BytesMut, def: &ExchangeDef) {
    put_str(out, &def.name.0);
    out.put_u8(kind_code(def.kind));
    out.put_u8(
        u8::from(def.durable) | u8::from(def.auto_delete) << 1 | u8::from(def.internal) << 2,
    );
    def.arguments.encode(out);
}

pub(super) fn put_queue(out: &mut BytesMut, def: &QueueDef) {
    put_str(out, &def.name.0);
    let home = if def.home.is_some() { HOME } else { 0 };
    out.put_u8(u8::from(def.durable) | u8::from(def.auto_delete) << 1 | home);
    match def.exclusive_owner {
        Some(owner) => {
            out.put_u8(1);
            out.put_u64(owner.0);
        }
        None => out.put_u8(0),
    }
    if let Some(home) = &def.home {
        put_str(out, home);
    }
    def.arguments.encode(out);
}

fn put_binding(out: &mut BytesMut, b: &Binding) {
    put_str(out, &b.source.0);
    match &b.destination {
        Destination::Queue(q) => {
            out.put_u8(0);
            put_str(out, &q.0);
        }
        Destination::Exchange(x) => {
            out.put_u8(1);
            put_str(out, &x.0);
        }
    }
    put_str(out, &b.routing_key);
    b.arguments.encode(out);
}

fn kind_code(kind: ExchangeKind) -> u8 {
    match kind {
        ExchangeKind::Direct => 0,
        ExchangeKind::Fanout => 1,
        ExchangeKind::Topic => 2,
        ExchangeKind::Headers => 3,
        ExchangeKind::ConsistentHash => 4,
    }
}

fn kind_of(code: u8) -> Result<ExchangeKind, CodecError> {
    Ok(match code {
        0 => ExchangeKind::Direct,
        1 => ExchangeKind::Fanout,
        2 => ExchangeKind::Topic,
        3 => ExchangeKind::Headers,
        4 => ExchangeKind::ConsistentHash,
        _ => return Err(CodecError::Field("exchange type")),
    })
}

pub(super) fn get_u8(buf: &mut Bytes) -> Result<u8, CodecError> {
    if buf.remaining() < 1 {
        return Err(CodecError::Truncated);
    }
    Ok(buf.get_u8())
}

fn get_u64(buf: &mut Bytes) -> Result<u64, CodecError> {
    if buf.remaining() < 8 {
        return Err(CodecError::Truncated);
    }
    Ok(buf.get_u64())
}

pub(super) fn get_str(buf: &mut Bytes) -> Result<ShortStr, CodecError> {
    let len = usize::from(get_u8(buf)?);
    if buf.remaining() < len {
        return Err(CodecError::Truncated);
    }
    ShortStr::try_from_bytes(buf.split_to(len)).map_err(|_| CodecError::Field("name"))
}

fn get_table(buf: &mut Bytes) -> Result<FieldTable, CodecError> {
    FieldTable::decode(buf).map_err(|_| CodecError::Field("arguments"))
}

fn get_exchange(buf: &mut Bytes) -> Result<ExchangeDef, CodecError> {
    let name = ExchangeName(get_str(buf)?);
    let kind = kind_of(get_u8(buf)?)?;
    let flags = get_u8(buf)?;
    Ok(ExchangeDef {
        name,
        kind,
        durable: flags & 1 != 0,
        auto_delete: flags & 2 != 0,
        internal: flags & 4 != 0,
        arguments: get_table(buf)?,
    })
}

pub(super) fn get_queue(buf: &mut Bytes) -> Result<QueueDef, CodecError> {
    let name = QueueName(get_str(buf)?);
    let flags = get_u8(buf)?;
    let exclusive_owner = match get_u8(buf)? {
        0 => None,
        1 => Some(ConnectionId(get_u64(buf)?)),
        _ => return Err(CodecError::Field("exclusive owner")),
    };
    if flags & !(1 | 2 | HOME) != 0 {
        return Err(CodecError::Field("queue flags"));
    }
    let home = if flags & HOME != 0 {
        Some(get_str(buf)?)
    } else {
        None
    };
    Ok(QueueDef {
        name,
        durable: flags & 1 != 0,
        exclusive_owner,
        home,
        auto_delete: flags & 2 != 0,
        arguments: get_table(buf)?,
    })
}

fn get_binding(buf: &mut Bytes) -> Result<Binding, CodecError> {
    let source = ExchangeName(get_str(buf)?);
    let destination = match get_u8(buf)? {
        0 => Destination::Queue(QueueName(get_str(buf)?)),
        1 => Destination::Exchange(ExchangeName(get_str(buf)?)),
        _ => return Err(CodecError::Field("binding destination")),
    };
    Ok(Binding {
        source,
        destination,
        routing_key: get_str(buf)?,
        arguments: get_table(buf)?,
    })
}

/// Exchanges every vhost is created with: a snapshot need not (and may not) declare them.
fn is_builtin(def: &ExchangeDef) -> bool {
    def.name.is_empty() || def.name.starts_with("amq.")
}

impl Metadata {
    /// Commands that, applied in order to [`Metadata::new`], rebuild this state: the form a
    /// snapshot takes. Vhosts, then each vhost's exchanges, queues and bindings, then users
    /// and permissions.
    pub fn snapshot_commands(&self) -> Vec<MetaCommand> {
        let mut out = Vec::new();
        let default = VhostName::from("/");
        if !self.vhosts.contains_key(&default) {
            out.push(MetaCommand::DeleteVhost { name: default });
        }
        for (vhost, vh) in &self.vhosts {
            out.push(MetaCommand::AddVhost {
                name: vhost.clone(),
            });
            for def in vh.exchanges().filter(|d| !is_builtin(d)) {
                out.push(MetaCommand::DeclareExchange {
                    vhost: vhost.clone(),
                    def: def.clone(),
                    passive: false,
                });
            }
            for def in vh.queues() {
                out.push(MetaCommand::DeclareQueue {
                    vhost: vhost.clone(),
                    def: def.clone(),
                    passive: false,
                    server_named: def.name.starts_with("amq."),
                    requester: def.exclusive_owner.unwrap_or(ConnectionId(0)),
                });
            }
            for binding in vh.bindings() {
                out.push(MetaCommand::Bind {
                    vhost: vhost.clone(),
                    binding: binding.clone(),
                });
            }
        }
        let access = self.access.snapshot_commands();
        out.extend(access.into_iter().map(MetaCommand::Access));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::access::{AccessCommand, HashAlgorithm, PasswordHash, UserDef};
    use crate::names::UserName;
    use proptest::prelude::*;
    use tern_amqp::FieldValue;

    fn name() -> impl Strategy<Value = ShortStr> {
        "[a-z.\\-]{0,12}".prop_map(ShortStr::from)
    }

    fn table() -> impl Strategy<Value = FieldTable> {
        prop::collection::vec(("[a-z\\-]{1,8}", any::<i32>()), 0..3).prop_map(|kv| {
            let mut t = FieldTable::new();
            for (k, v) in kv {
                t.insert(k.as_str(), FieldValue::I32(v));
            }
            t
        })
    }

    fn exchange() -> impl Strategy<Value = ExchangeDef> {
        (name(), 0..5u8, any::<[bool; 3]>(), table()).prop_map(|(n, k, f, arguments)| ExchangeDef {
            name: ExchangeName(n),
            kind: kind_of(k).unwrap_or(ExchangeKind::Direct),
            durable: f[0],
            auto_delete: f[1],
            internal: f[2],
            arguments,
        })
    }

    fn queue() -> impl Strategy<Value = QueueDef> {
        (name(), any::<[bool; 3]>(), any::<Option<u64>>(), table()).prop_map(
            |(n, f, o, arguments)| QueueDef {
                name: QueueName(n),
                durable: f[0],
                exclusive_owner: o.map(ConnectionId),
                home: f[2].then(|| ShortStr::from("tern@b")),
                auto_delete: f[1],
                arguments,
            },
        )
    }

    fn binding() -> impl Strategy<Value = Binding> {
        (name(), any::<bool>(), name(), name(), table()).prop_map(|(s, to_q, d, k, arguments)| {
            Binding {
                source: ExchangeName(s),
                destination: if to_q {
                    Destination::Queue(QueueName(d))
                } else {
                    Destination::Exchange(ExchangeName(d))
                },
                routing_key: k,
                arguments,
            }
        })
    }

    fn command() -> impl Strategy<Value = MetaCommand> {
        let vh = || name().prop_map(VhostName);
        prop_oneof![
            (vh(), exchange(), any::<bool>()).prop_map(|(vhost, def, passive)| {
                MetaCommand::DeclareExchange {
                    vhost,
                    def,
                    passive,
                }
            }),
            (vh(), name(), any::<bool>()).prop_map(|(vhost, n, if_unused)| {
                MetaCommand::DeleteExchange {
                    vhost,
                    name: ExchangeName(n),
                    if_unused,
                }
            }),
            (vh(), queue(), any::<[bool; 2]>(), any::<u64>()).prop_map(|(vhost, def, f, r)| {
                MetaCommand::DeclareQueue {
                    vhost,
                    def,
                    passive: f[0],
                    server_named: f[1],
                    requester: ConnectionId(r),
                }
            }),
            (vh(), name()).prop_map(|(vhost, n)| MetaCommand::DeleteQueue {
                vhost,
                name: QueueName(n)
            }),
            (vh(), binding()).prop_map(|(vhost, binding)| MetaCommand::Bind { vhost, binding }),
            (vh(), binding()).prop_map(|(vhost, binding)| MetaCommand::Unbind { vhost, binding }),
            vh().prop_map(|name| MetaCommand::AddVhost { name }),
            vh().prop_map(|name| MetaCommand::DeleteVhost { name }),
            Just(MetaCommand::DropTransient),
            name().prop_map(|node| MetaCommand::DropNodeTransient { node }),
            name().prop_map(|node| MetaCommand::ForgetNode { node }),
            access().prop_map(MetaCommand::Access),
        ]
    }

    /// A single command or a batch of them.
    fn entry() -> impl Strategy<Value = MetaCommand> {
        prop_oneof![
            command(),
            prop::collection::vec(command(), 0..6).prop_map(MetaCommand::Batch),
        ]
    }

    fn user() -> impl Strategy<Value = UserDef> {
        let hash = prop::option::of((any::<bool>(), prop::collection::vec(any::<u8>(), 0..68)));
        (name(), hash, prop::collection::vec(name(), 0..3)).prop_map(|(n, h, tags)| UserDef {
            name: UserName(n),
            password: h.map(|(sha512, bytes)| PasswordHash {
                algorithm: if sha512 {
                    HashAlgorithm::Sha512
                } else {
                    HashAlgorithm::Sha256
                },
                salted: Bytes::from(bytes),
            }),
            tags,
        })
    }

    fn access() -> impl Strategy<Value = AccessCommand> {
        let vh = || name().prop_map(VhostName);
        let un = || name().prop_map(UserName);
        let pat = || "[a-z.*^$]{0,300}";
        prop_oneof![
            user().prop_map(|user| AccessCommand::AddUser { user }),
            un().prop_map(|name| AccessCommand::DeleteUser { name }),
            (un(), user()).prop_map(|(name, u)| AccessCommand::SetPassword {
                name,
                password: u.password
            }),
            (un(), user()).prop_map(|(name, u)| AccessCommand::SetTags { name, tags: u.tags }),
            (vh(), un(), pat(), pat(), pat()).prop_map(|(vhost, user, c, w, r)| {
                AccessCommand::SetPermissions {
                    vhost,
                    user,
                    configure: c,
                    write: w,
                    read: r,
                }
            }),
            (vh(), un()).prop_map(|(vhost, user)| AccessCommand::ClearPermissions { vhost, user }),
            (vh(), un(), name(), pat(), pat()).prop_map(|(vhost, user, x, w, r)| {
                AccessCommand::SetTopicPermissions {
                    vhost,
                    user,
                    exchange: ExchangeName(x),
                    write: w,
                    read: r,
                }
            }),
            (vh(), un(), prop::option::of(name())).prop_map(|(vhost, user, x)| {
                AccessCommand::ClearTopicPermissions {
                    vhost,
                    user,
                    exchange: x.map(ExchangeName),
                }
            }),
            prop::option::of(user()).prop_map(|user| AccessCommand::Bootstrap { user }),
        ]
    }

    proptest! {
        #[test]
        fn every_command_decodes_to_itself(cmd in entry()) {
            let mut out = BytesMut::new();
            encode_command(&cmd, &mut out);
            let mut bytes = out.freeze();
            prop_assert_eq!(decode_command(&mut bytes), Ok(cmd));
            prop_assert!(bytes.is_empty());
        }

        #[test]
        fn a_command_cut_anywhere_is_an_error_not_a_panic(cmd in entry(), cut in any::<usize>()) {
            let mut out = BytesMut::new();
            encode_command(&cmd, &mut out);
            let cut = cut % out.len();
            let mut bytes = out.freeze().slice(..cut);
            prop_assert!(decode_command(&mut bytes).is_err());
        }
    }

    #[test]
    fn a_batch_inside_a_batch_or_a_count_beyond_the_bytes_is_refused() {
        let inner = MetaCommand::Batch(vec![MetaCommand::DropTransient]);
        let mut out = BytesMut::new();
        encode_command(&MetaCommand::Batch(vec![inner]), &mut out);
        let nested = decode_command(&mut out.freeze());
        assert_eq!(nested, Err(CodecError::Field("a batch inside a batch")));
        let mut huge = Bytes::from_static(&[VERSION, tag::BATCH, 0xff, 0xff, 0xff, 0xff, 1, 9]);
        assert_eq!(decode_command(&mut huge), Err(CodecError::Truncated));
    }

    #[test]
    fn an_unknown_version_or_tag_is_refused() {
        let mut b = Bytes::from_static(&[3, 1]);
        assert_eq!(decode_command(&mut b), Err(CodecError::Version(3)));
        let mut b = Bytes::from_static(&[0, 1]);
        assert_eq!(decode_command(&mut b), Err(CodecError::Version(0)));
        let mut b = Bytes::from_static(&[1, 99]);
        assert_eq!(decode_command(&mut b), Err(CodecError::Tag(99)));
    }

    /// A log written before queues had a home node (version 1) still reads: the same bytes
    /// under version 1 decode to the queue without one.
    #[test]
    fn version_1_records_still_decode() {
        let def = QueueDef {
            name: QueueName::from("q"),
            durable: true,
            exclusive_owner: Some(ConnectionId(3)),
            home: None,
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        let cmd = MetaCommand::DeclareQueue {
            vhost: VhostName::from("/"),
            def,
            passive: false,
            server_named: false,
            requester: ConnectionId(3),
        };
        let mut out = BytesMut::new();
        encode_command(&cmd, &mut out);
        out[0] = 1;
        assert_eq!(decode_command(&mut out.freeze()), Ok(cmd));
        let mut future = Bytes::from_static(&[VERSION + 1, tag::DROP_TRANSIENT]);
        assert_eq!(
            decode_command(&mut future),
            Err(CodecError::Version(VERSION + 1))
        );
    }
}
