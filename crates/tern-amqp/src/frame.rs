//! Frames and the protocol header; decoding from and encoding into `bytes` buffers.
//!
//! Wire layout (spec 2.3.5): `type:u8 channel:u16 size:u32 payload[size] 0xCE`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::method::Method;
use crate::properties::BasicProperties;
use crate::wire::{begin_u32_len, get_u16, get_u64, patch_u32_len};

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// type + channel + size.
pub const FRAME_HEADER_SIZE: usize = 7;
/// Header plus the frame-end octet: what a frame costs beyond its payload.
pub const FRAME_OVERHEAD: usize = 8;
/// The smallest frame_max a peer may negotiate (spec 4.2.3).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// `AMQP\0\0\x09\x01`: what a 0-9-1 client sends first, and what a server answers a wrong
/// header with before closing.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// A content header frame's payload. `raw_properties` holds the property flags and list exactly
/// as they arrived (zero-copy), so a broker can forward them without re-encoding. They are
/// decoded only when asked ([`properties`](Self::properties)), as RabbitMQ decodes content
/// properties only once a publish is complete: the decoded form is ~370 bytes, and every frame
/// moved through the reader carried it, which cost a third of the publish path in memcpy.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    pub raw_properties: Bytes,
}

impl ContentHeader {
    /// A basic-class header carrying `properties`.
    pub fn new(body_size: u64, properties: &BasicProperties) -> Self {
        let mut raw = BytesMut::new();
        properties.encode(&mut raw);
        ContentHeader {
            class_id: BASIC_CLASS_ID,
            body_size,
            raw_properties: raw.freeze(),
        }
    }

    /// Decode the properties; an error if they are malformed or followed by other bytes.
    pub fn properties(&self) -> Result<BasicProperties, DecodeError> {
        let mut buf = self.raw_properties.clone();
        let properties = BasicProperties::decode(&mut buf)?;
        if !buf.is_empty() {
            return Err(DecodeError::TrailingBytes(
                buf.len(),
                "content header properties",
            ));
        }
        Ok(properties)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum FramePayload {
    Method(Method),
    Header(ContentHeader),
    Body(Bytes),
    Heartbeat,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub channel: u16,
    pub payload: FramePayload,
}

/// Decode one frame from the front of `buf`, consuming it. `Ok(None)`: not a whole frame yet.
/// A frame whose declared size exceeds `frame_max` (payload + 8 bytes of overhead) is refused as
/// soon as its 7-byte header is in, so a peer announcing a huge frame never makes us buffer it.
/// `frame_max == 0` means no limit.
///
/// The payload is split off `buf` and frozen, never copied: bodies, strings and tables of the
/// decoded frame are slices of it.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, DecodeError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_SIZE>() else {
        return Ok(None);
    };
    let kind = header[0];
    let channel = u16::from_be_bytes([header[1], header[2]]);
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    let total = check_header(kind, size, frame_max)?;
    if buf.len() < total {
        if frame_max != 0 {
            // Bounded by frame_max: make room for the rest of the frame in one allocation.
            buf.reserve(total - buf.len());
        }
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != FRAME_END {
        return Err(DecodeError::BadFrameEnd(end));
    }
    let mut payload = buf.split_to(total).freeze();
    payload.advance(FRAME_HEADER_SIZE);
    payload.truncate(total - FRAME_OVERHEAD);
    let payload = decode_payload(kind, channel, payload)?;
    Ok(Some(Frame { channel, payload }))
}

/// Check a frame header's type and size; the frame's whole length in bytes if acceptable.
fn check_header(kind: u8, size: u32, frame_max: u32) -> Result<usize, DecodeError> {
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(DecodeError::UnknownFrameType(kind));
    }
    let frame_size = u64::from(size) + FRAME_OVERHEAD as u64;
    let too_large = DecodeError::FrameTooLarge {
        size: frame_size,
        frame_max,
    };
    if frame_max != 0 && frame_size > u64::from(frame_max) {
        return Err(too_large);
    }
    usize::try_from(frame_size).map_err(|_| too_large)
}

fn decode_payload(kind: u8, channel: u16, payload: Bytes) -> Result<FramePayload, DecodeError> {
    match kind {
        FRAME_METHOD => Method::decode(payload).map(FramePayload::Method),
        FRAME_HEADER => decode_content_header(payload).map(FramePayload::Header),
        FRAME_BODY => Ok(FramePayload::Body(payload)),
        FRAME_HEARTBEAT if channel == 0 && payload.is_empty() => Ok(FramePayload::Heartbeat),
        FRAME_HEARTBEAT => Err(DecodeError::BadHeartbeat {
            channel,
            size: payload.len(),
        }),
        other => Err(DecodeError::UnknownFrameType(other)),
    }
}

/// `class-id weight body-size property-flags property-list` (spec 4.2.6.1). The weight is
/// unused and ignored, as RabbitMQ does.
fn decode_content_header(payload: Bytes) -> Result<ContentHeader, DecodeError> {
    let mut buf = payload;
    let class_id = get_u16(&mut buf)?;
    if class_id != BASIC_CLASS_ID {
        return Err(DecodeError::BadContentClass(class_id));
    }
    let _weight = get_u16(&mut buf)?;
    let body_size = get_u64(&mut buf)?;
    Ok(ContentHeader {
        class_id,
        body_size,
        raw_properties: buf,
    })
}

/// The only class with content in 0-9-1.
const BASIC_CLASS_ID: u16 = 60;

/// Write a frame header with a size to be patched by [`end_frame`]; returns its position.
#[inline]
fn begin_frame(out: &mut BytesMut, kind: u8, channel: u16) -> usize {
    out.put_u8(kind);
    out.put_u16(channel);
    begin_u32_len(out)
}

#[inline]
fn end_frame(out: &mut BytesMut, size_pos: usize) {
    patch_u32_len(out, size_pos);
    out.put_u8(FRAME_END);
}

/// Encode any frame. A header frame is written from its `raw_properties` (an empty one, which
/// no decoded header has, as no properties at all). A body frame is written as one frame,
/// whatever its size.
pub fn encode_frame(frame: &Frame, out: &mut BytesMut) {
    let channel = frame.channel;
    match &frame.payload {
        FramePayload::Method(method) => encode_method(channel, method, out),
        FramePayload::Header(h) if h.raw_properties.is_empty() => encode_content_header(
            channel,
            h.class_id,
            h.body_size,
            &BasicProperties::default(),
            out,
        ),
        FramePayload::Header(h) => {
            encode_content_header_raw(channel, h.class_id, h.body_size, &h.raw_properties, out)
        }
        FramePayload::Body(body) => put_body_frame(out, channel, body),
        FramePayload::Heartbeat => {
            let pos = begin_frame(out, FRAME_HEARTBEAT, channel);
            end_frame(out, pos);
        }
    }
}

/// Encode a method frame.
pub fn encode_method(channel: u16, method: &Method, out: &mut BytesMut) {
    let pos = begin_frame(out, FRAME_METHOD, channel);
    method.encode(out);
    end_frame(out, pos);
}

/// Encode a content header frame from already-encoded property bytes (flags + list), e.g. the
/// `raw_properties` of a received header.
pub fn encode_content_header_raw(
    channel: u16,
    class_id: u16,
    body_size: u64,
    raw_properties: &[u8],
    out: &mut BytesMut,
) {
    out.reserve(FRAME_OVERHEAD + 12 + raw_properties.len());
    let pos = begin_frame(out, FRAME_HEADER, channel);
    out.put_u16(class_id);
    out.put_u16(0);
    out.put_u64(body_size);
    out.put_slice(raw_properties);
    end_frame(out, pos);
}

/// Encode a content header frame from properties.
pub fn encode_content_header(
    channel: u16,
    class_id: u16,
    body_size: u64,
    properties: &BasicProperties,
    out: &mut BytesMut,
) {
    let pos = begin_frame(out, FRAME_HEADER, channel);
    out.put_u16(class_id);
    out.put_u16(0);
    out.put_u64(body_size);
    properties.encode(out);
    end_frame(out, pos);
}

/// Encode a body as as many body frames as `frame_max` requires (none for an empty body).
/// Each frame carries at most `frame_max - 8` bytes; `frame_max == 0` means one frame.
pub fn encode_body(channel: u16, body: &[u8], frame_max: u32, out: &mut BytesMut) {
    if body.is_empty() {
        return;
    }
    let chunk = body_chunk_max(frame_max);
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for part in body.chunks(chunk) {
        put_body_frame(out, channel, part);
    }
}

/// The most body bytes one frame may carry (at least 1, at most what a u32 size can say).
fn body_chunk_max(frame_max: u32) -> usize {
    let max = match frame_max {
        0 => u32::MAX as usize,
        n => (n as usize).saturating_sub(FRAME_OVERHEAD),
    };
    max.clamp(1, u32::MAX as usize)
}

#[inline]
fn put_body_frame(out: &mut BytesMut, channel: u16, part: &[u8]) {
    debug_assert!(u32::try_from(part.len()).is_ok(), "body frame over 4 GiB");
    out.put_u8(FRAME_BODY);
    out.put_u16(channel);
    out.put_u32(part.len() as u32);
    out.put_slice(part);
    out.put_u8(FRAME_END);
}

/// Encode a heartbeat frame (channel 0, empty payload).
pub fn encode_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
