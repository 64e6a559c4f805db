//! Primitive wire types (spec 4.2.5): big-endian integers, short and long strings.
//!
//! Readers take a `&mut Bytes` and consume from its front; a short input is an error, never a
//! panic. Strings are sliced out of the input (a reference-count bump), never copied. Writers
//! append to a `BytesMut`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::table::ShortStr;

/// Fail with `Truncated(what)` unless `buf` holds at least `n` more bytes.
#[inline]
pub(crate) fn need(buf: &Bytes, n: usize, what: &'static str) -> Result<(), DecodeError> {
    if buf.len() < n {
        return Err(DecodeError::Truncated(what));
    }
    Ok(())
}

#[inline]
pub(crate) fn get_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    need(buf, 1, "octet")?;
    Ok(buf.get_u8())
}

#[inline]
pub(crate) fn get_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    need(buf, 2, "short")?;
    Ok(buf.get_u16())
}

#[inline]
pub(crate) fn get_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    need(buf, 4, "long")?;
    Ok(buf.get_u32())
}

#[inline]
pub(crate) fn get_u64(buf: &mut Bytes) -> Result<u64, DecodeError> {
    need(buf, 8, "long long")?;
    Ok(buf.get_u64())
}

/// A short string: length octet, then that many bytes (invalid UTF-8 replaced, see `ShortStr`).
#[inline]
pub(crate) fn get_short_str(buf: &mut Bytes) -> Result<ShortStr, DecodeError> {
    let len = usize::from(get_u8(buf)?);
    need(buf, len, "short string")?;
    ShortStr::try_from_bytes(buf.split_to(len))
}

/// Skip a short string without checking its contents (for reserved fields).
#[inline]
pub(crate) fn skip_short_str(buf: &mut Bytes) -> Result<(), DecodeError> {
    let len = usize::from(get_u8(buf)?);
    need(buf, len, "short string")?;
    buf.advance(len);
    Ok(())
}

/// A long string (also the payload of `x` byte arrays): u32 length, then that many bytes.
#[inline]
pub(crate) fn get_long_str(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = get_u32(buf)? as usize;
    need(buf, len, "long string")?;
    Ok(buf.split_to(len))
}

/// Write a short string. A `ShortStr` never holds more than 255 bytes; should one ever do,
/// only its first 255 bytes are written, so the frame stays well-formed instead of panicking.
#[inline]
pub(crate) fn put_short_str(out: &mut BytesMut, s: &ShortStr) {
    let bytes = s.as_bytes();
    let len = bytes.len().min(ShortStr::MAX_LEN);
    out.put_u8(len as u8);
    out.put_slice(&bytes[..len]);
}

/// Write a long string. Longer than `u32::MAX` bytes cannot be expressed on the wire: only the
/// first `u32::MAX` bytes are written, keeping the frame well-formed.
#[inline]
pub(crate) fn put_long_str(out: &mut BytesMut, s: &[u8]) {
    let len = s.len().min(u32::MAX as usize);
    out.put_u32(len as u32);
    out.put_slice(&s[..len]);
}

/// Reserve a u32 length prefix; returns its position for [`patch_u32_len`].
#[inline]
pub(crate) fn begin_u32_len(out: &mut BytesMut) -> usize {
    let pos = out.len();
    out.put_u32(0);
    pos
}

/// Fill in the length prefix reserved at `pos` with the number of bytes written after it.
#[inline]
pub(crate) fn patch_u32_len(out: &mut BytesMut, pos: usize) {
    let len = out.len() - pos - 4;
    debug_assert!(
        u32::try_from(len).is_ok(),
        "length {len} does not fit a u32 prefix"
    );
    out[pos..pos + 4].copy_from_slice(&(len as u32).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_refuse_short_input_without_panicking() {
        let mut b = Bytes::from_static(&[1]);
        assert_eq!(get_u16(&mut b), Err(DecodeError::Truncated("short")));
        let mut b = Bytes::from_static(&[5, b'a']);
        assert_eq!(
            get_short_str(&mut b),
            Err(DecodeError::Truncated("short string"))
        );
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            get_long_str(&mut b),
            Err(DecodeError::Truncated("long string"))
        );
    }

    #[test]
    fn short_strings_are_sliced_not_copied() {
        let buf = Bytes::from_static(b"\x03abcrest");
        let mut b = buf.clone();
        let s = get_short_str(&mut b).unwrap();
        assert_eq!(s, "abc");
        assert_eq!(s.as_bytes().as_ptr(), buf[1..].as_ptr());
        assert_eq!(&b[..], b"rest");
    }

    #[test]
    fn short_string_that_is_not_utf8_is_taken_with_replacements() {
        let mut b = Bytes::from_static(b"\x04a\xff\xfeb!");
        assert_eq!(get_short_str(&mut b).unwrap(), "a\u{fffd}\u{fffd}b");
        assert_eq!(&b[..], b"!");
        // 255 invalid bytes become 765 bytes of replacement characters: cut back to 255.
        let mut long = vec![255u8];
        long.extend([0xff; 255]);
        let s = get_short_str(&mut Bytes::from(long)).unwrap();
        assert_eq!((s.len(), s.chars().count()), (255, 85));
    }
}
