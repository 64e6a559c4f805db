//! Reply codes (spec 1.9 constants) and the error a broker answers a client with.

use thiserror::Error;

use crate::table::ShortStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ReplyCode {
    Success = 200,
    ContentTooLarge = 311,
    NoRoute = 312,
    NoConsumers = 313,
    ConnectionForced = 320,
    InvalidPath = 402,
    AccessRefused = 403,
    NotFound = 404,
    ResourceLocked = 405,
    PreconditionFailed = 406,
    FrameError = 501,
    SyntaxError = 502,
    CommandInvalid = 503,
    ChannelError = 504,
    UnexpectedFrame = 505,
    ResourceError = 506,
    NotAllowed = 530,
    NotImplemented = 540,
    InternalError = 541,
}

impl ReplyCode {
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The constant's name as RabbitMQ prints it at the start of reply texts, e.g. `NOT_FOUND`.
    pub fn name(self) -> &'static str {
        match self {
            ReplyCode::Success => "SUCCESS",
            ReplyCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            ReplyCode::NoRoute => "NO_ROUTE",
            ReplyCode::NoConsumers => "NO_CONSUMERS",
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::InvalidPath => "INVALID_PATH",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The code with this number, if it is one of the spec's.
    pub fn from_code(code: u16) -> Option<ReplyCode> {
        const ALL: [ReplyCode; 19] = [
            ReplyCode::Success,
            ReplyCode::ContentTooLarge,
            ReplyCode::NoRoute,
            ReplyCode::NoConsumers,
            ReplyCode::ConnectionForced,
            ReplyCode::InvalidPath,
            ReplyCode::AccessRefused,
            ReplyCode::NotFound,
            ReplyCode::ResourceLocked,
            ReplyCode::PreconditionFailed,
            ReplyCode::FrameError,
            ReplyCode::SyntaxError,
            ReplyCode::CommandInvalid,
            ReplyCode::ChannelError,
            ReplyCode::UnexpectedFrame,
            ReplyCode::ResourceError,
            ReplyCode::NotAllowed,
            ReplyCode::NotImplemented,
            ReplyCode::InternalError,
        ];
        ALL.into_iter().find(|c| c.code() == code)
    }

    /// Channel-level codes close only the channel; the rest close the connection (spec 1.9).
    pub fn is_channel_error(self) -> bool {
        matches!(
            self,
            ReplyCode::ContentTooLarge
                | ReplyCode::NoRoute
                | ReplyCode::NoConsumers
                | ReplyCode::AccessRefused
                | ReplyCode::NotFound
                | ReplyCode::ResourceLocked
                | ReplyCode::PreconditionFailed
        )
    }
}

/// An error the broker answers with: code, the class/method that caused it, and a text a user can
/// act on. The text is sent as `"{CODE_NAME} - {message}"`, the way RabbitMQ words it.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{} - {message}", code.name())]
pub struct AmqpError {
    pub code: ReplyCode,
    pub message: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    pub fn new(code: ReplyCode, message: impl Into<String>) -> Self {
        AmqpError {
            code,
            message: message.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Attach the class/method that caused the error.
    pub fn on(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// The reply text, at most 255 bytes (cut at a char boundary).
    pub fn reply_text(&self) -> ShortStr {
        let mut text = self.to_string();
        if text.len() > 255 {
            let mut end = 255;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        ShortStr::from_string_lossy(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_found_by_its_number_and_no_other_number_is() {
        for n in 0..=1000u16 {
            if let Some(code) = ReplyCode::from_code(n) {
                assert_eq!(code.code(), n);
            }
        }
        let known = (0..=1000u16).filter_map(ReplyCode::from_code).count();
        assert_eq!(known, 19);
        assert_eq!(ReplyCode::from_code(404), Some(ReplyCode::NotFound));
    }
}
