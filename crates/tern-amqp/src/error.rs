//! Decode errors. Each maps to the connection-level reply code a broker closes with.

use thiserror::Error;

use crate::reply::ReplyCode;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Frame type octet not 1, 2, 3 or 8.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A frame's last octet was not 0xCE.
    #[error("frame end octet missing (got {0:#04x})")]
    BadFrameEnd(u8),
    /// A frame larger than the negotiated frame_max.
    #[error("frame of {size} bytes exceeds frame_max {frame_max}")]
    FrameTooLarge { size: u64, frame_max: u32 },
    /// A method whose class/method id pair is not part of AMQP 0-9-1.
    #[error("unknown method {class_id}/{method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
    /// Payload shorter than its fields need.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// Payload longer than its fields (trailing bytes).
    #[error("{0} bytes left over after {1}")]
    TrailingBytes(usize, &'static str),
    /// Unknown field-value type letter.
    #[error("unknown field type {0:#04x}")]
    UnknownFieldType(u8),
    /// A content header for a class other than basic (60).
    #[error("content header for class {0}")]
    BadContentClass(u16),
    /// Field tables nested deeper than the decoder allows.
    #[error("field table nesting deeper than {0}")]
    TooDeep(usize),
    /// A heartbeat frame on a channel other than 0, or with a payload (spec 4.2.7).
    #[error(
        "heartbeat frame on channel {channel} with {size} payload bytes (must be channel 0, empty)"
    )]
    BadHeartbeat { channel: u16, size: usize },
    /// Content property flags with the continuation bit set: no 0-9-1 class has more than 15
    /// properties, so a second flags word is malformed.
    #[error("property flags {0:#06x} set the continuation bit")]
    PropertyFlagsContinuation(u16),
}

impl DecodeError {
    /// The reply code a server closes the connection with for this error: 501 FRAME_ERROR for
    /// framing faults, 502 SYNTAX_ERROR for bad method/field content, 540 for unknown methods
    /// (RabbitMQ answers an unknown class/method with 540 NOT_IMPLEMENTED... see `reply`).
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            DecodeError::UnknownFrameType(_)
            | DecodeError::BadFrameEnd(_)
            | DecodeError::FrameTooLarge { .. } => ReplyCode::FrameError,
            // RabbitMQ answers "505 UNEXPECTED_FRAME - type 8" (the spec says 501).
            DecodeError::BadHeartbeat { .. } => ReplyCode::UnexpectedFrame,
            DecodeError::UnknownMethod { .. } => ReplyCode::CommandInvalid,
            _ => ReplyCode::SyntaxError,
        }
    }
}
