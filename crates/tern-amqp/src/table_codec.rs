//! Field tables, field arrays and field values on the wire, with RabbitMQ's type letters.
//!
//! The letters follow RabbitMQ's `rabbit_binary_parser` / `rabbit_binary_generator` and its
//! AMQP 0-9-1 errata, not the spec's own table (which clashes with what every broker and client
//! does): `s` is a signed 16-bit int (not a short string), `l` a signed 64-bit int, `I`/`i`
//! signed/unsigned 32-bit, `x` a byte array. `L` is accepted and kept as an unsigned 64-bit
//! value (RabbitMQ reads it, but never writes it). Nesting of tables and arrays is bounded by
//! [`FieldTable::MAX_DEPTH`] so hostile input cannot exhaust the stack.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::table::{Decimal, FieldArray, FieldTable, FieldValue};
use crate::wire::{
    begin_u32_len, get_long_str, get_short_str, get_u16, get_u32, get_u64, get_u8, need,
    patch_u32_len, put_long_str, put_short_str,
};

impl FieldTable {
    /// How deep tables and arrays may nest inside a decoded table before decoding fails with
    /// [`DecodeError::TooDeep`].
    pub const MAX_DEPTH: usize = 32;

    /// Write the table: u32 byte length, then `name value` pairs.
    pub fn encode(&self, out: &mut BytesMut) {
        let pos = begin_u32_len(out);
        for (name, value) in &self.0 {
            put_short_str(out, name);
            value.encode(out);
        }
        patch_u32_len(out, pos);
    }

    /// Read a table (length prefix included) from the front of `buf`. Names and string values
    /// are slices of `buf`, not copies.
    pub fn decode(buf: &mut Bytes) -> Result<FieldTable, DecodeError> {
        decode_table(buf, 0)
    }
}

/// Write a field array: u32 byte length, then tagged values.
pub fn encode_array(array: &FieldArray, out: &mut BytesMut) {
    let pos = begin_u32_len(out);
    for value in array {
        value.encode(out);
    }
    patch_u32_len(out, pos);
}

/// Read a field array (length prefix included) from the front of `buf`.
pub fn decode_array(buf: &mut Bytes) -> Result<FieldArray, DecodeError> {
    decode_array_at(buf, 0)
}

impl FieldValue {
    /// The type letter this value is written with.
    pub fn type_letter(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::U64(_) => b'L',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal(_) => b'D',
            FieldValue::LongStr(_) => b'S',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
            FieldValue::Bytes(_) => b'x',
        }
    }

    /// Write the type letter, then the value.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.type_letter());
        match self {
            FieldValue::Bool(v) => out.put_u8(u8::from(*v)),
            FieldValue::I8(v) => out.put_i8(*v),
            FieldValue::U8(v) => out.put_u8(*v),
            FieldValue::I16(v) => out.put_i16(*v),
            FieldValue::U16(v) => out.put_u16(*v),
            FieldValue::I32(v) => out.put_i32(*v),
            FieldValue::U32(v) => out.put_u32(*v),
            FieldValue::I64(v) => out.put_i64(*v),
            FieldValue::U64(v) | FieldValue::Timestamp(v) => out.put_u64(*v),
            FieldValue::F32(v) => out.put_u32(v.to_bits()),
            FieldValue::F64(v) => out.put_u64(v.to_bits()),
            FieldValue::Decimal(d) => {
                out.put_u8(d.scale);
                out.put_u32(d.value);
            }
            FieldValue::LongStr(b) | FieldValue::Bytes(b) => put_long_str(out, b),
            FieldValue::Array(a) => encode_array(a, out),
            FieldValue::Table(t) => t.encode(out),
            FieldValue::Void => {}
        }
    }

    /// Read a type letter and its value from the front of `buf`.
    pub fn decode(buf: &mut Bytes) -> Result<FieldValue, DecodeError> {
        decode_value(buf, 0)
    }
}

/// The body of a length-prefixed table or array, split off `buf` without copying.
fn split_sized(buf: &mut Bytes, what: &'static str) -> Result<Bytes, DecodeError> {
    let len = get_u32(buf).map_err(|_| DecodeError::Truncated(what))? as usize;
    need(buf, len, what)?;
    Ok(buf.split_to(len))
}

/// `depth` is how many tables/arrays enclose this one.
fn decode_table(buf: &mut Bytes, depth: usize) -> Result<FieldTable, DecodeError> {
    let mut body = split_sized(buf, "field table")?;
    let mut entries = Vec::new();
    while !body.is_empty() {
        let name = get_short_str(&mut body)?;
        let value = decode_value(&mut body, depth)?;
        entries.push((name, value));
    }
    Ok(FieldTable(entries))
}

fn decode_array_at(buf: &mut Bytes, depth: usize) -> Result<FieldArray, DecodeError> {
    let mut body = split_sized(buf, "field array")?;
    let mut values = Vec::new();
    while !body.is_empty() {
        values.push(decode_value(&mut body, depth)?);
    }
    Ok(values)
}

/// The depth of a table or array nested one level below `depth`, if still allowed.
fn nested(depth: usize) -> Result<usize, DecodeError> {
    if depth >= FieldTable::MAX_DEPTH {
        return Err(DecodeError::TooDeep(FieldTable::MAX_DEPTH));
    }
    Ok(depth + 1)
}

fn decode_value(buf: &mut Bytes, depth: usize) -> Result<FieldValue, DecodeError> {
    Ok(match get_u8(buf)? {
        b't' => FieldValue::Bool(get_u8(buf)? != 0),
        b'b' => FieldValue::I8(get_u8(buf)? as i8),
        b'B' => FieldValue::U8(get_u8(buf)?),
        b's' => FieldValue::I16(get_u16(buf)? as i16),
        b'u' => FieldValue::U16(get_u16(buf)?),
        b'I' => FieldValue::I32(get_u32(buf)? as i32),
        b'i' => FieldValue::U32(get_u32(buf)?),
        b'l' => FieldValue::I64(get_u64(buf)? as i64),
        b'L' => FieldValue::U64(get_u64(buf)?),
        b'f' => FieldValue::F32(f32::from_bits(get_u32(buf)?)),
        b'd' => FieldValue::F64(f64::from_bits(get_u64(buf)?)),
        b'D' => FieldValue::Decimal(Decimal {
            scale: get_u8(buf)?,
            value: get_u32(buf)?,
        }),
        b'S' => FieldValue::LongStr(get_long_str(buf)?),
        b'A' => FieldValue::Array(decode_array_at(buf, nested(depth)?)?),
        b'T' => FieldValue::Timestamp(get_u64(buf)?),
        b'F' => FieldValue::Table(decode_table(buf, nested(depth)?)?),
        b'V' => FieldValue::Void,
        b'x' => FieldValue::Bytes(get_long_str(buf)?),
        other => return Err(DecodeError::UnknownFieldType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::ShortStr;

    fn encoded(value: &FieldValue) -> Vec<u8> {
        let mut out = BytesMut::new();
        value.encode(&mut out);
        out.to_vec()
    }

    /// One row per type letter: the value and its exact bytes (RabbitMQ's generator).
    #[test]
    fn every_value_type_has_rabbitmqs_letter_and_layout() {
        let rows: Vec<(FieldValue, &[u8])> = vec![
            (FieldValue::Bool(true), b"t\x01"),
            (FieldValue::I8(-2), b"b\xfe"),
            (FieldValue::U8(200), b"B\xc8"),
            (FieldValue::I16(-2), b"s\xff\xfe"),
            (FieldValue::U16(0xabcd), b"u\xab\xcd"),
            (FieldValue::I32(-2), b"I\xff\xff\xff\xfe"),
            (FieldValue::U32(0xdeadbeef), b"i\xde\xad\xbe\xef"),
            (FieldValue::I64(-2), b"l\xff\xff\xff\xff\xff\xff\xff\xfe"),
            (
                FieldValue::U64(u64::MAX),
                b"L\xff\xff\xff\xff\xff\xff\xff\xff",
            ),
            (FieldValue::F32(1.0), b"f\x3f\x80\x00\x00"),
            (FieldValue::F64(-2.0), b"d\xc0\x00\x00\x00\x00\x00\x00\x00"),
            (
                FieldValue::Decimal(Decimal {
                    scale: 2,
                    value: 314,
                }),
                b"D\x02\x00\x00\x01\x3a",
            ),
            (
                FieldValue::LongStr(Bytes::from_static(b"hi")),
                b"S\x00\x00\x00\x02hi",
            ),
            (
                FieldValue::Array(vec![FieldValue::Void]),
                b"A\x00\x00\x00\x01V",
            ),
            (
                FieldValue::Timestamp(1),
                b"T\x00\x00\x00\x00\x00\x00\x00\x01",
            ),
            (FieldValue::Table(FieldTable::new()), b"F\x00\x00\x00\x00"),
            (FieldValue::Void, b"V"),
            (
                FieldValue::Bytes(Bytes::from_static(b"\x00")),
                b"x\x00\x00\x00\x01\x00",
            ),
        ];
        for (value, bytes) in rows {
            assert_eq!(encoded(&value), bytes, "{value:?}");
            let mut input = Bytes::copy_from_slice(bytes);
            assert_eq!(FieldValue::decode(&mut input), Ok(value));
            assert!(input.is_empty());
        }
    }

    #[test]
    fn a_table_is_length_prefixed_name_value_pairs() {
        let mut table = FieldTable::new();
        table.insert("x-max-priority", FieldValue::U8(10));
        table.insert("ok", FieldValue::Bool(false));
        let mut out = BytesMut::new();
        table.encode(&mut out);
        assert_eq!(
            &out[..],
            b"\x00\x00\x00\x16\x0ex-max-priorityB\x0a\x02okt\x00"
        );
        let mut input = out.freeze();
        assert_eq!(FieldTable::decode(&mut input), Ok(table));
    }

    #[test]
    fn l_upper_is_read_as_unsigned_and_written_back_as_is() {
        let mut input = Bytes::from_static(b"L\x80\x00\x00\x00\x00\x00\x00\x00");
        let value = FieldValue::decode(&mut input).unwrap();
        assert_eq!(value, FieldValue::U64(1 << 63));
        assert_eq!(encoded(&value), b"L\x80\x00\x00\x00\x00\x00\x00\x00");
    }

    #[test]
    fn nan_floats_keep_their_bits() {
        let nan = f64::from_bits(0x7ff8_0000_dead_beef);
        let bytes = encoded(&FieldValue::F64(nan));
        match FieldValue::decode(&mut Bytes::from(bytes)) {
            Ok(FieldValue::F64(v)) => assert_eq!(v.to_bits(), nan.to_bits()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_type_letter_is_refused() {
        let mut input = Bytes::from_static(b"\x00\x00\x00\x03\x01kZ");
        assert_eq!(
            FieldTable::decode(&mut input),
            Err(DecodeError::UnknownFieldType(b'Z'))
        );
    }

    #[test]
    fn table_longer_than_its_input_is_truncated() {
        let mut input = Bytes::from_static(b"\x00\x00\x01\x00\x01k");
        assert_eq!(
            FieldTable::decode(&mut input),
            Err(DecodeError::Truncated("field table"))
        );
        let mut input = Bytes::from_static(b"\x00\x00");
        assert_eq!(
            FieldTable::decode(&mut input),
            Err(DecodeError::Truncated("field table"))
        );
    }

    #[test]
    fn value_cut_short_inside_a_table_is_truncated() {
        let mut input = Bytes::from_static(b"\x00\x00\x00\x04\x01kI\x00");
        assert_eq!(
            FieldTable::decode(&mut input),
            Err(DecodeError::Truncated("long"))
        );
    }

    fn nested_tables(levels: usize) -> FieldTable {
        let mut table = FieldTable::new();
        for _ in 0..levels {
            let mut outer = FieldTable::new();
            outer.insert("t", FieldValue::Table(table));
            table = outer;
        }
        table
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted_and_beyond_it_refused() {
        let mut out = BytesMut::new();
        nested_tables(FieldTable::MAX_DEPTH).encode(&mut out);
        assert!(FieldTable::decode(&mut out.freeze()).is_ok());

        let mut out = BytesMut::new();
        nested_tables(FieldTable::MAX_DEPTH + 1).encode(&mut out);
        let err = FieldTable::decode(&mut out.freeze());
        assert_eq!(err, Err(DecodeError::TooDeep(FieldTable::MAX_DEPTH)));
    }

    #[test]
    fn deeply_nested_arrays_are_refused_without_overflowing_the_stack() {
        // 100_000 arrays, each holding the next: `A <len> A <len> ...`.
        let levels = 100_000usize;
        let mut bytes = Vec::with_capacity(levels * 5);
        for i in 0..levels {
            bytes.push(b'A');
            bytes.extend_from_slice(&(((levels - i - 1) * 5) as u32).to_be_bytes());
        }
        let err = FieldValue::decode(&mut Bytes::from(bytes));
        assert_eq!(err, Err(DecodeError::TooDeep(FieldTable::MAX_DEPTH)));
    }

    #[test]
    fn table_names_are_sliced_from_the_input() {
        let input = Bytes::from_static(b"\x00\x00\x00\x05\x03keyV");
        let table = FieldTable::decode(&mut input.clone()).unwrap();
        let name: &ShortStr = &table.0[0].0;
        assert_eq!(name.as_bytes().as_ptr(), input[5..].as_ptr());
    }
}
