//! The 14 properties of a basic-class content header.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::table::{FieldTable, ShortStr};
use crate::wire::{get_short_str, get_u16, get_u64, get_u8, put_short_str};

/// Basic content properties, in wire order (flag bit 15 first).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicProperties {
    pub content_type: Option<ShortStr>,
    pub content_encoding: Option<ShortStr>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<ShortStr>,
    pub reply_to: Option<ShortStr>,
    pub expiration: Option<ShortStr>,
    pub message_id: Option<ShortStr>,
    pub timestamp: Option<u64>,
    pub kind: Option<ShortStr>,
    pub user_id: Option<ShortStr>,
    pub app_id: Option<ShortStr>,
    pub cluster_id: Option<ShortStr>,
}

// Property flags (spec 4.2.6.1): bit 15 is the first property; bit 0 would announce a second
// flags word, which no 0-9-1 class needs.
const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;
const CONTINUATION: u16 = 1;

impl BasicProperties {
    /// Write the property flags and the list of the properties that are set.
    pub fn encode(&self, out: &mut BytesMut) {
        let pos = out.len();
        out.put_u16(0);
        let mut flags = put_str(out, CONTENT_TYPE, &self.content_type)
            | put_str(out, CONTENT_ENCODING, &self.content_encoding);
        if let Some(headers) = &self.headers {
            headers.encode(out);
            flags |= HEADERS;
        }
        flags |= put_octet(out, DELIVERY_MODE, self.delivery_mode)
            | put_octet(out, PRIORITY, self.priority)
            | put_str(out, CORRELATION_ID, &self.correlation_id)
            | put_str(out, REPLY_TO, &self.reply_to)
            | put_str(out, EXPIRATION, &self.expiration)
            | put_str(out, MESSAGE_ID, &self.message_id);
        if let Some(timestamp) = self.timestamp {
            out.put_u64(timestamp);
            flags |= TIMESTAMP;
        }
        flags |= put_str(out, TYPE, &self.kind)
            | put_str(out, USER_ID, &self.user_id)
            | put_str(out, APP_ID, &self.app_id)
            | put_str(out, CLUSTER_ID, &self.cluster_id);
        out[pos..pos + 2].copy_from_slice(&flags.to_be_bytes());
    }

    /// Read property flags and list from the front of `buf`. Strings and header tables are
    /// slices of `buf`. Bit 1 of the flags (unused by the basic class) is ignored.
    pub fn decode(buf: &mut Bytes) -> Result<BasicProperties, DecodeError> {
        let flags = get_u16(buf)?;
        if flags & CONTINUATION != 0 {
            return Err(DecodeError::PropertyFlagsContinuation(flags));
        }
        // Fields are evaluated in the order written, which is wire order.
        Ok(BasicProperties {
            content_type: read_if(flags, CONTENT_TYPE, buf, get_short_str)?,
            content_encoding: read_if(flags, CONTENT_ENCODING, buf, get_short_str)?,
            headers: read_if(flags, HEADERS, buf, FieldTable::decode)?,
            delivery_mode: read_if(flags, DELIVERY_MODE, buf, get_u8)?,
            priority: read_if(flags, PRIORITY, buf, get_u8)?,
            correlation_id: read_if(flags, CORRELATION_ID, buf, get_short_str)?,
            reply_to: read_if(flags, REPLY_TO, buf, get_short_str)?,
            expiration: read_if(flags, EXPIRATION, buf, get_short_str)?,
            message_id: read_if(flags, MESSAGE_ID, buf, get_short_str)?,
            timestamp: read_if(flags, TIMESTAMP, buf, get_u64)?,
            kind: read_if(flags, TYPE, buf, get_short_str)?,
            user_id: read_if(flags, USER_ID, buf, get_short_str)?,
            app_id: read_if(flags, APP_ID, buf, get_short_str)?,
            cluster_id: read_if(flags, CLUSTER_ID, buf, get_short_str)?,
        })
    }
}

type Reader<T> = fn(&mut Bytes) -> Result<T, DecodeError>;

#[inline]
fn read_if<T>(
    flags: u16,
    flag: u16,
    buf: &mut Bytes,
    read: Reader<T>,
) -> Result<Option<T>, DecodeError> {
    if flags & flag == 0 {
        return Ok(None);
    }
    read(buf).map(Some)
}

#[inline]
fn put_str(out: &mut BytesMut, flag: u16, value: &Option<ShortStr>) -> u16 {
    match value {
        Some(s) => {
            put_short_str(out, s);
            flag
        }
        None => 0,
    }
}

#[inline]
fn put_octet(out: &mut BytesMut, flag: u16, value: Option<u8>) -> u16 {
    match value {
        Some(v) => {
            out.put_u8(v);
            flag
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::FieldValue;

    fn encoded(props: &BasicProperties) -> Vec<u8> {
        let mut out = BytesMut::new();
        props.encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn no_properties_is_two_zero_flag_bytes() {
        assert_eq!(encoded(&BasicProperties::default()), b"\x00\x00");
        let mut input = Bytes::from_static(b"\x00\x00");
        assert_eq!(
            BasicProperties::decode(&mut input),
            Ok(BasicProperties::default())
        );
    }

    #[test]
    fn content_type_and_delivery_mode_as_pika_sends_them() {
        let props = BasicProperties {
            content_type: Some("text/plain".into()),
            delivery_mode: Some(2),
            ..Default::default()
        };
        let bytes = b"\x90\x00\x0atext/plain\x02";
        assert_eq!(encoded(&props), bytes);
        let mut input = Bytes::from_static(bytes);
        assert_eq!(BasicProperties::decode(&mut input), Ok(props));
        assert!(input.is_empty());
    }

    #[test]
    fn every_property_set_uses_flag_bits_15_to_2_in_order() {
        let mut headers = FieldTable::new();
        headers.insert("h", FieldValue::I32(1));
        let props = BasicProperties {
            content_type: Some("a".into()),
            content_encoding: Some("b".into()),
            headers: Some(headers),
            delivery_mode: Some(1),
            priority: Some(9),
            correlation_id: Some("c".into()),
            reply_to: Some("d".into()),
            expiration: Some("60000".into()),
            message_id: Some("e".into()),
            timestamp: Some(1_700_000_000),
            kind: Some("f".into()),
            user_id: Some("guest".into()),
            app_id: Some("g".into()),
            cluster_id: Some("h".into()),
        };
        let bytes = encoded(&props);
        assert_eq!(&bytes[..2], b"\xff\xfc");
        assert_eq!(&bytes[2..4], b"\x01a");
        let mut input = Bytes::from(bytes);
        assert_eq!(BasicProperties::decode(&mut input), Ok(props));
        assert!(input.is_empty());
    }

    #[test]
    fn continuation_flag_is_refused() {
        let mut input = Bytes::from_static(b"\x00\x01");
        let err = BasicProperties::decode(&mut input);
        assert_eq!(err, Err(DecodeError::PropertyFlagsContinuation(1)));
    }

    #[test]
    fn flag_without_its_property_is_truncated() {
        let mut input = Bytes::from_static(b"\x80\x00");
        assert_eq!(
            BasicProperties::decode(&mut input),
            Err(DecodeError::Truncated("octet"))
        );
    }
}
