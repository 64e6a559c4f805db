//! The binary form of [`AccessCommand`]s inside a metadata command (tag `ACCESS`, then a
//! sub-tag and the fields). Names are short strings; patterns long strings (u32 length, bytes);
//! a password is an algorithm byte (0: none, 1: SHA-256, 2: SHA-512) then the salted hash as a
//! short string; tags a count byte then short strings.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tern_amqp::ShortStr;

use super::access::{AccessCommand, HashAlgorithm, PasswordHash, UserDef};
use super::codec::{get_str, get_u8, put_str, CodecError};
use crate::names::{ExchangeName, UserName, VhostName};

mod tag {
    pub const ADD_USER: u8 = 1;
    pub const DELETE_USER: u8 = 2;
    pub const SET_PASSWORD: u8 = 3;
    pub const SET_TAGS: u8 = 4;
    pub const SET_PERMISSIONS: u8 = 5;
    pub const CLEAR_PERMISSIONS: u8 = 6;
    pub const SET_TOPIC_PERMISSIONS: u8 = 7;
    pub const CLEAR_TOPIC_PERMISSIONS: u8 = 8;
    pub const BOOTSTRAP: u8 = 9;
}

pub(super) fn put_access(out: &mut BytesMut, cmd: &AccessCommand) {
    match cmd {
        AccessCommand::AddUser { user } => {
            out.put_u8(tag::ADD_USER);
            put_user(out, user);
        }
        AccessCommand::DeleteUser { name } => {
            out.put_u8(tag::DELETE_USER);
            put_str(out, &name.0);
        }
        AccessCommand::SetPassword { name, password } => {
            out.put_u8(tag::SET_PASSWORD);
            put_str(out, &name.0);
            put_password(out, password.as_ref());
        }
        AccessCommand::SetTags { name, tags } => {
            out.put_u8(tag::SET_TAGS);
            put_str(out, &name.0);
            put_tags(out, tags);
        }
        AccessCommand::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        } => {
            out.put_u8(tag::SET_PERMISSIONS);
            put_str(out, &vhost.0);
            put_str(out, &user.0);
            for p in [configure, write, read] {
                put_long(out, p);
            }
        }
        AccessCommand::ClearPermissions { vhost, user } => {
            out.put_u8(tag::CLEAR_PERMISSIONS);
            put_str(out, &vhost.0);
            put_str(out, &user.0);
        }
        AccessCommand::SetTopicPermissions {
            vhost,
            user,
            exchange,
            write,
            read,
        } => {
            out.put_u8(tag::SET_TOPIC_PERMISSIONS);
            put_str(out, &vhost.0);
            put_str(out, &user.0);
            put_str(out, &exchange.0);
            put_long(out, write);
            put_long(out, read);
        }
        AccessCommand::ClearTopicPermissions {
            vhost,
            user,
            exchange,
        } => {
            out.put_u8(tag::CLEAR_TOPIC_PERMISSIONS);
            put_str(out, &vhost.0);
            put_str(out, &user.0);
            match exchange {
                Some(x) => {
                    out.put_u8(1);
                    put_str(out, &x.0);
                }
                None => out.put_u8(0),
            }
        }
        AccessCommand::Bootstrap { user } => {
            out.put_u8(tag::BOOTSTRAP);
            match user {
                Some(u) => {
                    out.put_u8(1);
                    put_user(out, u);
                }
                None => out.put_u8(0),
            }
        }
    }
}

pub(super) fn get_access(buf: &mut Bytes) -> Result<AccessCommand, CodecError> {
    let user = |buf: &mut Bytes| get_str(buf).map(UserName);
    let vhost = |buf: &mut Bytes| get_str(buf).map(VhostName);
    let cmd = match get_u8(buf)? {
        tag::ADD_USER => AccessCommand::AddUser {
            user: get_user(buf)?,
        },
        tag::DELETE_USER => AccessCommand::DeleteUser { name: user(buf)? },
        tag::SET_PASSWORD => AccessCommand::SetPassword {
            name: user(buf)?,
            password: get_password(buf)?,
        },
        tag::SET_TAGS => AccessCommand::SetTags {
            name: user(buf)?,
            tags: get_tags(buf)?,
        },
        tag::SET_PERMISSIONS => AccessCommand::SetPermissions {
            vhost: vhost(buf)?,
            user: user(buf)?,
            configure: get_long(buf)?,
            write: get_long(buf)?,
            read: get_long(buf)?,
        },
        tag::CLEAR_PERMISSIONS => AccessCommand::ClearPermissions {
            vhost: vhost(buf)?,
            user: user(buf)?,
        },
        tag::SET_TOPIC_PERMISSIONS => AccessCommand::SetTopicPermissions {
            vhost: vhost(buf)?,
            user: user(buf)?,
            exchange: ExchangeName(get_str(buf)?),
            write: get_long(buf)?,
            read: get_long(buf)?,
        },
        tag::CLEAR_TOPIC_PERMISSIONS => AccessCommand::ClearTopicPermissions {
            vhost: vhost(buf)?,
            user: user(buf)?,
            exchange: match get_u8(buf)? {
                0 => None,
                1 => Some(ExchangeName(get_str(buf)?)),
                _ => return Err(CodecError::Field("topic exchange")),
            },
        },
        tag::BOOTSTRAP => AccessCommand::Bootstrap {
            user: match get_u8(buf)? {
                0 => None,
                1 => Some(get_user(buf)?),
                _ => return Err(CodecError::Field("default user")),
            },
        },
        other => return Err(CodecError::Tag(other)),
    };
    Ok(cmd)
}

fn put_user(out: &mut BytesMut, user: &UserDef) {
    put_str(out, &user.name.0);
    put_password(out, user.password.as_ref());
    put_tags(out, &user.tags);
}

fn get_user(buf: &mut Bytes) -> Result<UserDef, CodecError> {
    Ok(UserDef {
        name: UserName(get_str(buf)?),
        password: get_password(buf)?,
        tags: get_tags(buf)?,
    })
}

fn put_password(out: &mut BytesMut, password: Option<&PasswordHash>) {
    let Some(p) = password else {
        out.put_u8(0);
        return;
    };
    out.put_u8(match p.algorithm {
        HashAlgorithm::Sha256 => 1,
        HashAlgorithm::Sha512 => 2,
    });
    let len = p.salted.len().min(ShortStr::MAX_LEN);
    out.put_u8(len as u8);
    out.put_slice(&p.salted[..len]);
}

fn get_password(buf: &mut Bytes) -> Result<Option<PasswordHash>, CodecError> {
    let algorithm = match get_u8(buf)? {
        0 => return Ok(None),
        1 => HashAlgorithm::Sha256,
        2 => HashAlgorithm::Sha512,
        _ => return Err(CodecError::Field("password hashing algorithm")),
    };
    let len = usize::from(get_u8(buf)?);
    if buf.remaining() < len {
        return Err(CodecError::Truncated);
    }
    Ok(Some(PasswordHash {
        algorithm,
        salted: buf.split_to(len),
    }))
}

fn put_tags(out: &mut BytesMut, tags: &[ShortStr]) {
    let n = tags.len().min(255);
    out.put_u8(n as u8);
    for t in &tags[..n] {
        put_str(out, t);
    }
}

fn get_tags(buf: &mut Bytes) -> Result<Vec<ShortStr>, CodecError> {
    let n = get_u8(buf)?;
    (0..n).map(|_| get_str(buf)).collect()
}

fn put_long(out: &mut BytesMut, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.put_u32(len);
    out.put_slice(&s.as_bytes()[..len as usize]);
}

fn get_long(buf: &mut Bytes) -> Result<String, CodecError> {
    if buf.remaining() < 4 {
        return Err(CodecError::Truncated);
    }
    let len = buf.get_u32() as usize;
    if buf.remaining() < len {
        return Err(CodecError::Truncated);
    }
    String::from_utf8(buf.split_to(len).to_vec()).map_err(|_| CodecError::Field("pattern"))
}
