//! Record framing: what every log file is a sequence of.
//!
//! ```text
//! len: u32 LE | payload_crc: u32 LE | header_crc: u32 LE | payload: len bytes
//! ```
//!
//! `payload_crc` is CRC32C of the payload, `header_crc` CRC32C of the first 8 bytes, so a
//! damaged length is caught before it is trusted. That also lets recovery look past a bad
//! record for a good one ([`find_next_valid`]): a good record after a bad one means the damage
//! is in the middle, not a torn tail.

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 12;

/// Why bytes at an offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// The file ends inside the header or the payload.
    Truncated,
    /// The header's checksum fails (its length cannot be trusted).
    Header,
    /// The length is over the log's limit.
    TooLong(u32),
    /// The payload's checksum fails.
    Payload,
}

/// Append one framed record to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    encode_parts(&[payload], out)
}

/// Append one framed record whose payload is `parts` one after the other.
pub fn encode_parts(parts: &[&[u8]], out: &mut Vec<u8>) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    assert!(u32::try_from(total).is_ok(), "record payload over 4 GiB");
    let payload_crc = parts.iter().fold(0, |crc, p| crc32c::crc32c_append(crc, p));
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&(total as u32).to_le_bytes());
    head[4..].copy_from_slice(&payload_crc.to_le_bytes());
    out.reserve(HEADER_BYTES + total);
    out.extend_from_slice(&head);
    out.extend_from_slice(&crc32c::crc32c(&head).to_le_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// The payload length a header announces, if the header is intact.
pub fn parse_header(header: &[u8], max_payload: u32) -> Result<(u32, u32), Bad> {
    if header.len() < HEADER_BYTES {
        return Err(Bad::Truncated);
    }
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (len, payload_crc, header_crc) = (word(0), word(4), word(8));
    if crc32c::crc32c(&header[..8]) != header_crc {
        return Err(Bad::Header);
    }
    if len > max_payload {
        return Err(Bad::TooLong(len));
    }
    Ok((len, payload_crc))
}

/// Decode the record at the start of `buf`: its payload and total framed size.
pub fn decode(buf: &[u8], max_payload: u32) -> Result<(&[u8], usize), Bad> {
    let (len, payload_crc) = parse_header(buf, max_payload)?;
    let end = HEADER_BYTES + len as usize;
    if buf.len() < end {
        return Err(Bad::Truncated);
    }
    let payload = &buf[HEADER_BYTES..end];
    if crc32c::crc32c(payload) != payload_crc {
        return Err(Bad::Payload);
    }
    Ok((payload, end))
}

/// The offset of the first intact record at or after `from`, searching byte by byte (records
/// after a damaged one are not aligned to anything we can trust).
pub fn find_next_valid(buf: &[u8], from: usize, max_payload: u32) -> Option<usize> {
    (from..buf.len().saturating_sub(HEADER_BYTES - 1))
        .find(|&at| decode(&buf[at..], max_payload).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 1 << 20;

    #[test]
    fn a_record_decodes_to_its_payload() {
        let mut buf = Vec::new();
        encode(b"hello", &mut buf);
        encode(b"", &mut buf);
        let (p, n) = decode(&buf, MAX).unwrap();
        assert_eq!((p, n), (&b"hello"[..], HEADER_BYTES + 5));
        assert_eq!(decode(&buf[n..], MAX).unwrap().0, b"");
    }

    #[test]
    fn damage_is_told_apart() {
        let mut buf = Vec::new();
        encode(b"payload", &mut buf);
        assert_eq!(decode(&buf[..5], MAX), Err(Bad::Truncated));
        assert_eq!(decode(&buf[..buf.len() - 1], MAX), Err(Bad::Truncated));
        let mut bad = buf.clone();
        bad[0] ^= 1;
        assert_eq!(decode(&bad, MAX), Err(Bad::Header));
        let mut bad = buf.clone();
        bad[HEADER_BYTES + 2] ^= 0x40;
        assert_eq!(decode(&bad, MAX), Err(Bad::Payload));
        assert_eq!(decode(&buf, 3), Err(Bad::TooLong(7)));
    }

    #[test]
    fn the_next_good_record_is_found_past_garbage() {
        let mut buf = vec![0xAB; 37];
        let at = buf.len();
        encode(b"after", &mut buf);
        assert_eq!(find_next_valid(&buf, 0, MAX), Some(at));
        assert_eq!(find_next_valid(&buf[..at + 3], 0, MAX), None);
    }

    proptest! {
        #[test]
        fn any_single_flipped_bit_is_detected(payload in prop::collection::vec(any::<u8>(), 0..64), bit in any::<usize>()) {
            let mut buf = Vec::new();
            encode(&payload, &mut buf);
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&buf, MAX).is_err());
        }
    }
}
