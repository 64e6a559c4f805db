//! Frames and the protocol header; decoding from and encoding into `bytes` buffers.
//!
//! Wire layout (spec 2.3.5): `type:u8 channel:u16 size:u32 payload[size] 0xCE`.

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::method::Method;
use crate::properties::BasicProperties;

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
/// as they arrived (zero-copy), so a broker can forward them without re-encoding.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    pub properties: BasicProperties,
    pub raw_properties: Bytes,
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
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, DecodeError> {
    let _ = (buf, frame_max);
    todo!("codec")
}

/// Encode any frame.
pub fn encode_frame(frame: &Frame, out: &mut BytesMut) {
    let _ = (frame, out);
    todo!("codec")
}

/// Encode a method frame.
pub fn encode_method(channel: u16, method: &Method, out: &mut BytesMut) {
    let _ = (channel, method, out);
    todo!("codec")
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
    let _ = (channel, class_id, body_size, raw_properties, out);
    todo!("codec")
}

/// Encode a content header frame from properties.
pub fn encode_content_header(
    channel: u16,
    class_id: u16,
    body_size: u64,
    properties: &BasicProperties,
    out: &mut BytesMut,
) {
    let _ = (channel, class_id, body_size, properties, out);
    todo!("codec")
}

/// Encode a body as as many body frames as `frame_max` requires (none for an empty body).
pub fn encode_body(channel: u16, body: &[u8], frame_max: u32, out: &mut BytesMut) {
    let _ = (channel, body, frame_max, out);
    todo!("codec")
}

/// Encode a heartbeat frame (channel 0, empty payload).
pub fn encode_heartbeat(out: &mut BytesMut) {
    let _ = out;
    todo!("codec")
}
