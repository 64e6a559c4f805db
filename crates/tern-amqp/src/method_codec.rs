//! Methods on the wire: class id, method id, then the arguments (spec 2.3.5.1, 4.2.5).
//!
//! [`methods!`] at the bottom is the method table of RabbitMQ's `amqp-rabbitmq-0.9.1.json`
//! with RabbitMQ's extensions (exchange.bind/unbind, basic.nack, confirm.*,
//! connection.blocked/unblocked, connection.update-secret). Each row lists the arguments in wire
//! order:
//! - `(name: Type)`: a field of the method's struct;
//! - `(_: Type)`: a reserved field (`ticket`, `out-of-band`, ...): written as zero/empty,
//!   skipped on read without looking at its content;
//! - `(bits a b _)`: consecutive bit fields, packed into one octet from the least significant
//!   bit up (spec 4.2.5.2); `_` is a reserved bit, written as 0 and ignored on read. Bits of the
//!   octet beyond the listed ones are ignored on read, as RabbitMQ does.
//!
//! Decoding is as strict as RabbitMQ's generated parser: a missing argument is an error, and so
//! are bytes left over after the last argument.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::method::*;
use crate::table::{FieldTable, LongStr, ShortStr};
use crate::wire::{
    get_long_str, get_short_str, get_u16, get_u32, get_u64, get_u8, put_long_str, put_short_str,
    skip_short_str,
};

impl Method {
    /// Read a method frame's payload: class id, method id, arguments. Strings and tables are
    /// slices of `payload`, not copies.
    pub fn decode(payload: Bytes) -> Result<Method, DecodeError> {
        let mut buf = payload;
        let class_id = get_u16(&mut buf)?;
        let method_id = get_u16(&mut buf)?;
        let method = Method::decode_args(class_id, method_id, &mut buf)?;
        if !buf.is_empty() {
            return Err(DecodeError::TrailingBytes(buf.len(), method.name()));
        }
        Ok(method)
    }

    /// Write class id, method id and arguments (the payload of a method frame, without the
    /// frame header).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.class_id());
        out.put_u16(self.method_id());
        self.encode_args(out);
    }

    /// Whether content (a header frame and body frames) follows this method.
    pub fn has_content(&self) -> bool {
        matches!(
            self,
            Method::BasicPublish(_)
                | Method::BasicReturn(_)
                | Method::BasicDeliver(_)
                | Method::BasicGetOk(_)
        )
    }
}

/// A type that appears as a method argument.
trait Arg: Sized + Default {
    fn read(buf: &mut Bytes) -> Result<Self, DecodeError>;
    fn write(&self, out: &mut BytesMut);
    /// Consume a reserved argument of this type.
    fn skip(buf: &mut Bytes) -> Result<(), DecodeError> {
        Self::read(buf).map(drop)
    }
}

impl Arg for u8 {
    fn read(buf: &mut Bytes) -> Result<Self, DecodeError> {
        get_u8(buf)
    }
    fn write(&self, out: &mut BytesMut) {
        out.put_u8(*self);
    }
}

impl Arg for u16 {
    fn read(buf: &mut Bytes) -> Result<Self, DecodeError> {
        get_u16(buf)
    }
    fn write(&self, out: &mut BytesMut) {
        out.put_u16(*self);
    }
}

impl Arg for u32 {
    fn read(buf: &mut Bytes) -> Result<Self, DecodeError> {
        get_u32(buf)
    }
    fn write(&self, out: &mut BytesMut) {
        out.put_u32(*self);
    }
}

impl Arg for u64 {
    fn read(buf: &mut Bytes) -> Result<Self, DecodeError> {
        get_u64(buf)
    }
    fn write(&self, out: &mut BytesMut) {
        out.put_u64(*self);
    }
}

impl Arg for ShortStr {
    fn read(buf: &mut Bytes) -> Result<Self, DecodeError> {
        get_short_str(buf)
    }
    fn write(&self, out: &mut BytesMut) {
        put_short_str(out, self);
    }
    fn skip(buf: &mut Bytes) -> Result<(), DecodeError> {
        skip_short_str(buf)
    }
}

impl Arg for LongStr {
    fn read(buf: &mut Bytes) -> Result<Self, DecodeError> {
        get_long_str(buf)
    }
    fn write(&self, out: &mut BytesMut) {
        put_long_str(out, self);
    }
}

impl Arg for FieldTable {
    fn read(buf: &mut Bytes) -> Result<Self, DecodeError> {
        FieldTable::decode(buf)
    }
    fn write(&self, out: &mut BytesMut) {
        self.encode(out);
    }
}

/// Unpacks consecutive bit arguments from one octet, least significant bit first.
struct BitReader {
    octet: u8,
    mask: u8,
}

impl BitReader {
    fn new(octet: u8) -> Self {
        BitReader { octet, mask: 1 }
    }
    fn take(&mut self) -> bool {
        let bit = self.octet & self.mask != 0;
        self.mask <<= 1;
        bit
    }
}

/// Packs consecutive bit arguments into one octet, least significant bit first.
struct BitWriter {
    octet: u8,
    mask: u8,
}

impl BitWriter {
    fn new() -> Self {
        BitWriter { octet: 0, mask: 1 }
    }
    fn put(&mut self, bit: bool) {
        if bit {
            self.octet |= self.mask;
        }
        self.mask <<= 1;
    }
}

macro_rules! read_arg {
    ($buf:ident, $m:ident, bits $($bit:tt)+) => {{
        let mut bits = BitReader::new(get_u8($buf)?);
        $( read_bit!(bits, $m, $bit); )+
    }};
    ($buf:ident, $m:ident, _: $t:ty) => {
        <$t as Arg>::skip($buf)?
    };
    ($buf:ident, $m:ident, $field:ident: $t:ty) => {
        $m.$field = <$t as Arg>::read($buf)?
    };
}

macro_rules! read_bit {
    ($bits:ident, $m:ident, _) => {
        $bits.take()
    };
    ($bits:ident, $m:ident, $field:ident) => {
        $m.$field = $bits.take()
    };
}

macro_rules! write_arg {
    ($out:ident, $m:ident, bits $($bit:tt)+) => {{
        let mut bits = BitWriter::new();
        $( write_bit!(bits, $m, $bit); )+
        $out.put_u8(bits.octet);
    }};
    ($out:ident, $m:ident, _: $t:ty) => {
        <$t as Arg>::write(&<$t>::default(), $out)
    };
    ($out:ident, $m:ident, $field:ident: $t:ty) => {
        <$t as Arg>::write(&$m.$field, $out)
    };
}

macro_rules! write_bit {
    ($bits:ident, $m:ident, _) => {
        $bits.put(false)
    };
    ($bits:ident, $m:ident, $field:ident) => {
        $bits.put($m.$field)
    };
}

/// Generates, for each method: its ids and name as constants, its argument codec, and
/// `From<Struct> for Method`; then `Method::{class_id, method_id, name}` and the dispatch of
/// decoding and encoding over all methods.
macro_rules! methods {
    ($( $variant:ident = $class:literal / $method:literal $name:literal
        { $( ( $($arg:tt)+ ) )* } )+) => {
        $(
            impl $variant {
                pub const CLASS_ID: u16 = $class;
                pub const METHOD_ID: u16 = $method;
                pub const NAME: &'static str = $name;

                #[allow(unused_mut, unused_variables, clippy::field_reassign_with_default)]
                fn decode_args(buf: &mut Bytes) -> Result<Self, DecodeError> {
                    let mut m = Self::default();
                    $( read_arg!(buf, m, $($arg)+); )*
                    Ok(m)
                }

                #[allow(unused_variables)]
                fn encode_args(&self, out: &mut BytesMut) {
                    let m = self;
                    $( write_arg!(out, m, $($arg)+); )*
                }
            }

            impl From<$variant> for Method {
                fn from(m: $variant) -> Method {
                    Method::$variant(m)
                }
            }
        )+

        impl Method {
            pub fn class_id(&self) -> u16 {
                match self { $( Method::$variant(_) => $class, )+ }
            }

            pub fn method_id(&self) -> u16 {
                match self { $( Method::$variant(_) => $method, )+ }
            }

            /// The method's name as the spec and RabbitMQ spell it, e.g. `basic.publish`.
            pub fn name(&self) -> &'static str {
                match self { $( Method::$variant(_) => $name, )+ }
            }

            fn decode_args(class_id: u16, method_id: u16, buf: &mut Bytes)
                -> Result<Method, DecodeError> {
                match (class_id, method_id) {
                    $( ($class, $method) => $variant::decode_args(buf).map(Method::$variant), )+
                    _ => Err(DecodeError::UnknownMethod { class_id, method_id }),
                }
            }

            fn encode_args(&self, out: &mut BytesMut) {
                match self { $( Method::$variant(m) => m.encode_args(out), )+ }
            }
        }
    };
}

methods! {
    ConnectionStart = 10/10 "connection.start" {
        (version_major: u8) (version_minor: u8) (server_properties: FieldTable)
        (mechanisms: LongStr) (locales: LongStr)
    }
    ConnectionStartOk = 10/11 "connection.start-ok" {
        (client_properties: FieldTable) (mechanism: ShortStr) (response: LongStr)
        (locale: ShortStr)
    }
    ConnectionSecure = 10/20 "connection.secure" { (challenge: LongStr) }
    ConnectionSecureOk = 10/21 "connection.secure-ok" { (response: LongStr) }
    ConnectionTune = 10/30 "connection.tune" {
        (channel_max: u16) (frame_max: u32) (heartbeat: u16)
    }
    ConnectionTuneOk = 10/31 "connection.tune-ok" {
        (channel_max: u16) (frame_max: u32) (heartbeat: u16)
    }
    // reserved: capabilities, insist
    ConnectionOpen = 10/40 "connection.open" { (virtual_host: ShortStr) (_: ShortStr) (bits _) }
    // reserved: known-hosts
    ConnectionOpenOk = 10/41 "connection.open-ok" { (_: ShortStr) }
    ConnectionClose = 10/50 "connection.close" {
        (reply_code: u16) (reply_text: ShortStr) (class_id: u16) (method_id: u16)
    }
    ConnectionCloseOk = 10/51 "connection.close-ok" {}
    ConnectionBlocked = 10/60 "connection.blocked" { (reason: ShortStr) }
    ConnectionUnblocked = 10/61 "connection.unblocked" {}
    ConnectionUpdateSecret = 10/70 "connection.update-secret" {
        (new_secret: LongStr) (reason: ShortStr)
    }
    ConnectionUpdateSecretOk = 10/71 "connection.update-secret-ok" {}

    // reserved: out-of-band
    ChannelOpen = 20/10 "channel.open" { (_: ShortStr) }
    // reserved: channel-id
    ChannelOpenOk = 20/11 "channel.open-ok" { (_: LongStr) }
    ChannelFlow = 20/20 "channel.flow" { (bits active) }
    ChannelFlowOk = 20/21 "channel.flow-ok" { (bits active) }
    ChannelClose = 20/40 "channel.close" {
        (reply_code: u16) (reply_text: ShortStr) (class_id: u16) (method_id: u16)
    }
    ChannelCloseOk = 20/41 "channel.close-ok" {}

    AccessRequest = 30/10 "access.request" {
        (realm: ShortStr) (bits exclusive passive active write read)
    }
    AccessRequestOk = 30/11 "access.request-ok" { (ticket: u16) }

    // The spec reserves the auto-delete and internal bits; RabbitMQ uses them.
    ExchangeDeclare = 40/10 "exchange.declare" {
        (_: u16) (exchange: ShortStr) (kind: ShortStr)
        (bits passive durable auto_delete internal nowait) (arguments: FieldTable)
    }
    ExchangeDeclareOk = 40/11 "exchange.declare-ok" {}
    ExchangeDelete = 40/20 "exchange.delete" {
        (_: u16) (exchange: ShortStr) (bits if_unused nowait)
    }
    ExchangeDeleteOk = 40/21 "exchange.delete-ok" {}
    ExchangeBind = 40/30 "exchange.bind" {
        (_: u16) (destination: ShortStr) (source: ShortStr) (routing_key: ShortStr)
        (bits nowait) (arguments: FieldTable)
    }
    ExchangeBindOk = 40/31 "exchange.bind-ok" {}
    ExchangeUnbind = 40/40 "exchange.unbind" {
        (_: u16) (destination: ShortStr) (source: ShortStr) (routing_key: ShortStr)
        (bits nowait) (arguments: FieldTable)
    }
    ExchangeUnbindOk = 40/51 "exchange.unbind-ok" {}

    QueueDeclare = 50/10 "queue.declare" {
        (_: u16) (queue: ShortStr) (bits passive durable exclusive auto_delete nowait)
        (arguments: FieldTable)
    }
    QueueDeclareOk = 50/11 "queue.declare-ok" {
        (queue: ShortStr) (message_count: u32) (consumer_count: u32)
    }
    QueueBind = 50/20 "queue.bind" {
        (_: u16) (queue: ShortStr) (exchange: ShortStr) (routing_key: ShortStr)
        (bits nowait) (arguments: FieldTable)
    }
    QueueBindOk = 50/21 "queue.bind-ok" {}
    QueuePurge = 50/30 "queue.purge" { (_: u16) (queue: ShortStr) (bits nowait) }
    QueuePurgeOk = 50/31 "queue.purge-ok" { (message_count: u32) }
    QueueDelete = 50/40 "queue.delete" {
        (_: u16) (queue: ShortStr) (bits if_unused if_empty nowait)
    }
    QueueDeleteOk = 50/41 "queue.delete-ok" { (message_count: u32) }
    QueueUnbind = 50/50 "queue.unbind" {
        (_: u16) (queue: ShortStr) (exchange: ShortStr) (routing_key: ShortStr)
        (arguments: FieldTable)
    }
    QueueUnbindOk = 50/51 "queue.unbind-ok" {}

    BasicQos = 60/10 "basic.qos" { (prefetch_size: u32) (prefetch_count: u16) (bits global) }
    BasicQosOk = 60/11 "basic.qos-ok" {}
    BasicConsume = 60/20 "basic.consume" {
        (_: u16) (queue: ShortStr) (consumer_tag: ShortStr)
        (bits no_local no_ack exclusive nowait) (arguments: FieldTable)
    }
    BasicConsumeOk = 60/21 "basic.consume-ok" { (consumer_tag: ShortStr) }
    BasicCancel = 60/30 "basic.cancel" { (consumer_tag: ShortStr) (bits nowait) }
    BasicCancelOk = 60/31 "basic.cancel-ok" { (consumer_tag: ShortStr) }
    BasicPublish = 60/40 "basic.publish" {
        (_: u16) (exchange: ShortStr) (routing_key: ShortStr) (bits mandatory immediate)
    }
    BasicReturn = 60/50 "basic.return" {
        (reply_code: u16) (reply_text: ShortStr) (exchange: ShortStr) (routing_key: ShortStr)
    }
    BasicDeliver = 60/60 "basic.deliver" {
        (consumer_tag: ShortStr) (delivery_tag: u64) (bits redelivered)
        (exchange: ShortStr) (routing_key: ShortStr)
    }
    BasicGet = 60/70 "basic.get" { (_: u16) (queue: ShortStr) (bits no_ack) }
    BasicGetOk = 60/71 "basic.get-ok" {
        (delivery_tag: u64) (bits redelivered) (exchange: ShortStr) (routing_key: ShortStr)
        (message_count: u32)
    }
    // reserved: cluster-id
    BasicGetEmpty = 60/72 "basic.get-empty" { (_: ShortStr) }
    BasicAck = 60/80 "basic.ack" { (delivery_tag: u64) (bits multiple) }
    BasicReject = 60/90 "basic.reject" { (delivery_tag: u64) (bits requeue) }
    BasicRecoverAsync = 60/100 "basic.recover-async" { (bits requeue) }
    BasicRecover = 60/110 "basic.recover" { (bits requeue) }
    BasicRecoverOk = 60/111 "basic.recover-ok" {}
    BasicNack = 60/120 "basic.nack" { (delivery_tag: u64) (bits multiple requeue) }

    ConfirmSelect = 85/10 "confirm.select" { (bits nowait) }
    ConfirmSelectOk = 85/11 "confirm.select-ok" {}

    TxSelect = 90/10 "tx.select" {}
    TxSelectOk = 90/11 "tx.select-ok" {}
    TxCommit = 90/20 "tx.commit" {}
    TxCommitOk = 90/21 "tx.commit-ok" {}
    TxRollback = 90/30 "tx.rollback" {}
    TxRollbackOk = 90/31 "tx.rollback-ok" {}
}

#[cfg(test)]
#[path = "method_codec_tests.rs"]
mod tests;
