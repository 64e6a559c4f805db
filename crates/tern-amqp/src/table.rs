//! Strings, field values and field tables.

use bytes::Bytes;

pub use crate::table_codec::{decode_array, encode_array};

/// An AMQP short string: at most 255 bytes, held as UTF-8. Backed by `Bytes`, so decoding
/// from a frame buffer does not copy.
///
/// On the wire a short string is any bytes, and RabbitMQ takes any bytes (a Go client's raw
/// UUID as correlation-id, say). Tern holds names and keys as text: a short string that is not
/// UTF-8 is decoded with each invalid sequence replaced by U+FFFD rather than refused. Message
/// properties still reach consumers byte for byte, because the broker forwards a content
/// header's raw property bytes (`ContentHeader::raw_properties`), not the decoded ones.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortStr(Bytes);

/// An AMQP long string: arbitrary bytes, at most `u32::MAX` long.
pub type LongStr = Bytes;

/// Decimal value ('D'): `value / 10^scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    pub scale: u8,
    pub value: u32,
}

/// A field value, tagged with RabbitMQ's type letters (see RabbitMQ's AMQP 0-9-1 errata:
/// `s` is a signed 16-bit int, `u` unsigned 16, `I` signed 32, `i` unsigned 32, `l` signed 64,
/// `L` unsigned 64 accepted on input, `x` byte array).
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// 't'
    Bool(bool),
    /// 'b'
    I8(i8),
    /// 'B'
    U8(u8),
    /// 's'
    I16(i16),
    /// 'u'
    U16(u16),
    /// 'I'
    I32(i32),
    /// 'i'
    U32(u32),
    /// 'l'
    I64(i64),
    /// 'L'
    U64(u64),
    /// 'f'
    F32(f32),
    /// 'd'
    F64(f64),
    /// 'D'
    Decimal(Decimal),
    /// 'S'
    LongStr(LongStr),
    /// 'A'
    Array(FieldArray),
    /// 'T' (seconds since the epoch)
    Timestamp(u64),
    /// 'F'
    Table(FieldTable),
    /// 'V'
    Void,
    /// 'x'
    Bytes(Bytes),
}

pub type FieldArray = Vec<FieldValue>;

/// A field table. Keeps the order entries arrived in (clients and RabbitMQ echo tables back in
/// order); lookups are linear, which is fastest for the handful of entries tables carry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldTable(pub Vec<(ShortStr, FieldValue)>);

impl ShortStr {
    /// The longest a short string may be.
    pub const MAX_LEN: usize = 255;

    /// A short string from a static; truncated (at a char boundary) if over 255 bytes.
    pub fn from_static(s: &'static str) -> Self {
        if s.len() <= Self::MAX_LEN {
            ShortStr(Bytes::from_static(s.as_bytes()))
        } else {
            Self::from_string_lossy(s.to_owned())
        }
    }

    /// A short string from any string, truncated at a char boundary to 255 bytes.
    pub fn from_string_lossy(mut s: String) -> Self {
        if s.len() > Self::MAX_LEN {
            let mut end = Self::MAX_LEN;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        ShortStr(Bytes::from(s))
    }

    /// Checked construction from bytes: at most 255 bytes; invalid UTF-8 is replaced (see the
    /// type's docs), and the replacement truncated to 255 bytes should it grow past them.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, crate::DecodeError> {
        if bytes.len() > Self::MAX_LEN {
            return Err(crate::DecodeError::Truncated("short string over 255 bytes"));
        }
        if std::str::from_utf8(&bytes).is_ok() {
            return Ok(ShortStr(bytes));
        }
        Ok(Self::from_string_lossy(
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    }

    pub fn as_str(&self) -> &str {
        // Every constructor makes UTF-8, so this cannot fail; fall back to "" rather than panic.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes as a slice: the form maps keyed by `ShortStr` are searched by.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for ShortStr {
    /// Copies; truncates to 255 bytes at a char boundary.
    fn from(s: &str) -> Self {
        Self::from_string_lossy(s.to_owned())
    }
}

impl From<String> for ShortStr {
    fn from(s: String) -> Self {
        Self::from_string_lossy(s)
    }
}

/// Hash and equality are those of the bytes, so maps keyed by `ShortStr` are searched by
/// `&[u8]`.
impl std::borrow::Borrow<[u8]> for ShortStr {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for ShortStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl FieldTable {
    pub fn new() -> Self {
        FieldTable(Vec::new())
    }

    /// The value under `key`, if any (the first, should a peer send a key twice).
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    /// Set `key`, replacing an existing entry in place.
    pub fn insert(&mut self, key: impl Into<ShortStr>, value: FieldValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ShortStr, &FieldValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl FieldValue {
    /// Any integer type widened to i64 (a u64 over i64::MAX gives None).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            FieldValue::I8(v) => Some(v.into()),
            FieldValue::U8(v) => Some(v.into()),
            FieldValue::I16(v) => Some(v.into()),
            FieldValue::U16(v) => Some(v.into()),
            FieldValue::I32(v) => Some(v.into()),
            FieldValue::U32(v) => Some(v.into()),
            FieldValue::I64(v) => Some(v),
            FieldValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The text of a long string (or byte array) value, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongStr(b) | FieldValue::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            FieldValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}
