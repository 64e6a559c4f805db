//! Every method of AMQP 0-9-1 as RabbitMQ extends it, one struct each, and [`Method`] over them.
//!
//! Reserved fields of the spec (`ticket`, `out-of-band`, `channel-id`, `known-hosts`,
//! `capabilities`, `insist`, `cluster-id`) are not struct fields: they are written as zero/empty
//! and skipped on read. Field names follow the spec with dashes turned into underscores.

use crate::table::{FieldTable, LongStr, ShortStr};

// ---- connection (class 10) ----
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionStart {
    pub version_major: u8,
    pub version_minor: u8,
    pub server_properties: FieldTable,
    pub mechanisms: LongStr,
    pub locales: LongStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionStartOk {
    pub client_properties: FieldTable,
    pub mechanism: ShortStr,
    pub response: LongStr,
    pub locale: ShortStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionSecure {
    pub challenge: LongStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionSecureOk {
    pub response: LongStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionTune {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionTuneOk {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionOpen {
    pub virtual_host: ShortStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionOpenOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionClose {
    pub reply_code: u16,
    pub reply_text: ShortStr,
    pub class_id: u16,
    pub method_id: u16,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionCloseOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionBlocked {
    pub reason: ShortStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionUnblocked {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionUpdateSecret {
    pub new_secret: LongStr,
    pub reason: ShortStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionUpdateSecretOk {}

// ---- channel (class 20) ----
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelOpen {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelOpenOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelFlow {
    pub active: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelFlowOk {
    pub active: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelClose {
    pub reply_code: u16,
    pub reply_text: ShortStr,
    pub class_id: u16,
    pub method_id: u16,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelCloseOk {}

// ---- access (class 30), deprecated but still sent by old clients ----
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessRequest {
    pub realm: ShortStr,
    pub exclusive: bool,
    pub passive: bool,
    pub active: bool,
    pub write: bool,
    pub read: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessRequestOk {
    pub ticket: u16,
}

// ---- exchange (class 40) ----
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeDeclare {
    pub exchange: ShortStr,
    pub kind: ShortStr,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub nowait: bool,
    pub arguments: FieldTable,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeDeclareOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeDelete {
    pub exchange: ShortStr,
    pub if_unused: bool,
    pub nowait: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeDeleteOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeBind {
    pub destination: ShortStr,
    pub source: ShortStr,
    pub routing_key: ShortStr,
    pub nowait: bool,
    pub arguments: FieldTable,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeBindOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeUnbind {
    pub destination: ShortStr,
    pub source: ShortStr,
    pub routing_key: ShortStr,
    pub nowait: bool,
    pub arguments: FieldTable,
}
/// exchange.unbind-ok is method 51 (RabbitMQ), not 41.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExchangeUnbindOk {}

// ---- queue (class 50) ----
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueDeclare {
    pub queue: ShortStr,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub nowait: bool,
    pub arguments: FieldTable,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueDeclareOk {
    pub queue: ShortStr,
    pub message_count: u32,
    pub consumer_count: u32,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueBind {
    pub queue: ShortStr,
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    pub nowait: bool,
    pub arguments: FieldTable,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueBindOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueuePurge {
    pub queue: ShortStr,
    pub nowait: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueuePurgeOk {
    pub message_count: u32,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueDelete {
    pub queue: ShortStr,
    pub if_unused: bool,
    pub if_empty: bool,
    pub nowait: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueDeleteOk {
    pub message_count: u32,
}
/// queue.unbind has no nowait field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueUnbind {
    pub queue: ShortStr,
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    pub arguments: FieldTable,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueUnbindOk {}

// ---- basic (class 60) ----
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicQos {
    pub prefetch_size: u32,
    pub prefetch_count: u16,
    pub global: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicQosOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicConsume {
    pub queue: ShortStr,
    pub consumer_tag: ShortStr,
    pub no_local: bool,
    pub no_ack: bool,
    pub exclusive: bool,
    pub nowait: bool,
    pub arguments: FieldTable,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicConsumeOk {
    pub consumer_tag: ShortStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicCancel {
    pub consumer_tag: ShortStr,
    pub nowait: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicCancelOk {
    pub consumer_tag: ShortStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicPublish {
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    pub mandatory: bool,
    pub immediate: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicReturn {
    pub reply_code: u16,
    pub reply_text: ShortStr,
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicDeliver {
    pub consumer_tag: ShortStr,
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicGet {
    pub queue: ShortStr,
    pub no_ack: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicGetOk {
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: ShortStr,
    pub routing_key: ShortStr,
    pub message_count: u32,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicGetEmpty {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicAck {
    pub delivery_tag: u64,
    pub multiple: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicReject {
    pub delivery_tag: u64,
    pub requeue: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicRecoverAsync {
    pub requeue: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicRecover {
    pub requeue: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicRecoverOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BasicNack {
    pub delivery_tag: u64,
    pub multiple: bool,
    pub requeue: bool,
}

// ---- confirm (class 85) ----
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfirmSelect {
    pub nowait: bool,
}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfirmSelectOk {}

// ---- tx (class 90) ----
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TxSelect {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TxSelectOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TxCommit {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TxCommitOk {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TxRollback {}
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TxRollbackOk {}

/// Any method, one variant per method struct, named `ClassMethod` like the struct.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    ConnectionStart(ConnectionStart),
    ConnectionStartOk(ConnectionStartOk),
    ConnectionSecure(ConnectionSecure),
    ConnectionSecureOk(ConnectionSecureOk),
    ConnectionTune(ConnectionTune),
    ConnectionTuneOk(ConnectionTuneOk),
    ConnectionOpen(ConnectionOpen),
    ConnectionOpenOk(ConnectionOpenOk),
    ConnectionClose(ConnectionClose),
    ConnectionCloseOk(ConnectionCloseOk),
    ConnectionBlocked(ConnectionBlocked),
    ConnectionUnblocked(ConnectionUnblocked),
    ConnectionUpdateSecret(ConnectionUpdateSecret),
    ConnectionUpdateSecretOk(ConnectionUpdateSecretOk),
    ChannelOpen(ChannelOpen),
    ChannelOpenOk(ChannelOpenOk),
    ChannelFlow(ChannelFlow),
    ChannelFlowOk(ChannelFlowOk),
    ChannelClose(ChannelClose),
    ChannelCloseOk(ChannelCloseOk),
    AccessRequest(AccessRequest),
    AccessRequestOk(AccessRequestOk),
    ExchangeDeclare(ExchangeDeclare),
    ExchangeDeclareOk(ExchangeDeclareOk),
    ExchangeDelete(ExchangeDelete),
    ExchangeDeleteOk(ExchangeDeleteOk),
    ExchangeBind(ExchangeBind),
    ExchangeBindOk(ExchangeBindOk),
    ExchangeUnbind(ExchangeUnbind),
    ExchangeUnbindOk(ExchangeUnbindOk),
    QueueDeclare(QueueDeclare),
    QueueDeclareOk(QueueDeclareOk),
    QueueBind(QueueBind),
    QueueBindOk(QueueBindOk),
    QueuePurge(QueuePurge),
    QueuePurgeOk(QueuePurgeOk),
    QueueDelete(QueueDelete),
    QueueDeleteOk(QueueDeleteOk),
    QueueUnbind(QueueUnbind),
    QueueUnbindOk(QueueUnbindOk),
    BasicQos(BasicQos),
    BasicQosOk(BasicQosOk),
    BasicConsume(BasicConsume),
    BasicConsumeOk(BasicConsumeOk),
    BasicCancel(BasicCancel),
    BasicCancelOk(BasicCancelOk),
    BasicPublish(BasicPublish),
    BasicReturn(BasicReturn),
    BasicDeliver(BasicDeliver),
    BasicGet(BasicGet),
    BasicGetOk(BasicGetOk),
    BasicGetEmpty(BasicGetEmpty),
    BasicAck(BasicAck),
    BasicReject(BasicReject),
    BasicRecoverAsync(BasicRecoverAsync),
    BasicRecover(BasicRecover),
    BasicRecoverOk(BasicRecoverOk),
    BasicNack(BasicNack),
    ConfirmSelect(ConfirmSelect),
    ConfirmSelectOk(ConfirmSelectOk),
    TxSelect(TxSelect),
    TxSelectOk(TxSelectOk),
    TxCommit(TxCommit),
    TxCommitOk(TxCommitOk),
    TxRollback(TxRollback),
    TxRollbackOk(TxRollbackOk),
}
