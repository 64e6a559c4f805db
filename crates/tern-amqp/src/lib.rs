//! AMQP 0-9-1 wire codec, in RabbitMQ's dialect. Pure: no IO, no async, no clock.
//!
//! - [`table`]: short strings, long strings, field values and field tables with RabbitMQ's type
//!   letters (`t b B s u I i l L f d D S A T F V x`); their codec is in `table_codec`.
//! - [`properties`]: the 14 basic content-header properties and their flags + list codec.
//! - [`method`]: one struct per method of every class, and the [`Method`] enum over them;
//!   `method_codec` holds the method table (ids, names, argument layout) and their codec.
//! - `wire` (private): the primitive readers and writers everything above is built from.
//! - [`frame`]: frames (method, content header, body, heartbeat), the protocol header, and
//!   `decode_frame` / `encode_*` over `bytes` buffers with `frame_max` enforced.
//! - [`reply`]: reply codes and the [`AmqpError`] a broker answers with.
//!
//! Decoding never panics on any input: malformed bytes return an error that maps to the AMQP
//! reply code a broker must close the connection with.

pub mod error;
pub mod frame;
pub mod method;
mod method_codec;
pub mod properties;
pub mod reply;
pub mod table;
mod table_codec;
mod wire;

pub use error::DecodeError;
pub use frame::{ContentHeader, Frame, FramePayload};
pub use method::*;
pub use properties::BasicProperties;
pub use reply::{AmqpError, ReplyCode};
pub use table::{
    decode_array, encode_array, Decimal, FieldArray, FieldTable, FieldValue, LongStr, ShortStr,
};
