//! proptest strategies for arbitrary values of every wire type.

#![allow(dead_code)]

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;
use tern_amqp::frame::{ContentHeader, Frame, FramePayload};
use tern_amqp::*;

/// Short strings: mostly ASCII names, sometimes any text, cut at 255 bytes (at a char boundary).
pub fn short() -> impl Strategy<Value = ShortStr> + Clone {
    prop_oneof!["[a-z0-9._-]{0,20}", ".{0,300}"].prop_map(ShortStr::from)
}

pub fn long() -> impl Strategy<Value = Bytes> + Clone {
    vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

/// Every scalar field value. Floats are never NaN, so values compare equal after a round trip.
fn leaf_value() -> impl Strategy<Value = FieldValue> + Clone {
    let decimal = (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| Decimal { scale, value });
    prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool).boxed(),
        any::<i8>().prop_map(FieldValue::I8).boxed(),
        any::<u8>().prop_map(FieldValue::U8).boxed(),
        any::<i16>().prop_map(FieldValue::I16).boxed(),
        any::<u16>().prop_map(FieldValue::U16).boxed(),
        any::<i32>().prop_map(FieldValue::I32).boxed(),
        any::<u32>().prop_map(FieldValue::U32).boxed(),
        any::<i64>().prop_map(FieldValue::I64).boxed(),
        any::<u64>().prop_map(FieldValue::U64).boxed(),
        any::<f32>()
            .prop_filter("NaN", |f| !f.is_nan())
            .prop_map(FieldValue::F32)
            .boxed(),
        any::<f64>()
            .prop_filter("NaN", |f| !f.is_nan())
            .prop_map(FieldValue::F64)
            .boxed(),
        decimal.prop_map(FieldValue::Decimal).boxed(),
        long().prop_map(FieldValue::LongStr).boxed(),
        any::<u64>().prop_map(FieldValue::Timestamp).boxed(),
        Just(FieldValue::Void).boxed(),
        long().prop_map(FieldValue::Bytes).boxed(),
    ]
}

/// Any field value, with arrays and tables nested up to 4 deep.
pub fn value() -> BoxedStrategy<FieldValue> {
    leaf_value()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
                vec((short(), inner), 0..6).prop_map(|e| FieldValue::Table(FieldTable(e))),
            ]
        })
        .boxed()
}

pub fn table() -> impl Strategy<Value = FieldTable> + Clone {
    vec((short(), value()), 0..6).prop_map(FieldTable)
}

pub fn properties() -> impl Strategy<Value = BasicProperties> {
    let s = || proptest::option::of(short());
    let strings = (s(), s(), s(), s(), s(), s(), s(), s(), s(), s(), s());
    let others = (
        proptest::option::of(table()),
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<u64>()),
    );
    (strings, others).prop_map(|(s, o)| BasicProperties {
        content_type: s.0,
        content_encoding: s.1,
        headers: o.0,
        delivery_mode: o.1,
        priority: o.2,
        correlation_id: s.2,
        reply_to: s.3,
        expiration: s.4,
        message_id: s.5,
        timestamp: o.3,
        kind: s.6,
        user_id: s.7,
        app_id: s.8,
        cluster_id: s.9,
    })
}

/// A strategy for one method: `m!(Variant { field: strategy, ... })`.
macro_rules! m {
    ($variant:ident {}) => {
        Just(Method::$variant($variant {})).boxed()
    };
    ($variant:ident { $($field:ident: $strat:expr),+ $(,)? }) => {
        ($($strat,)+)
            .prop_map(|($($field,)+)| Method::$variant($variant { $($field),+ }))
            .boxed()
    };
}

fn b() -> impl Strategy<Value = bool> + Clone {
    any::<bool>()
}

fn connection_methods() -> Vec<BoxedStrategy<Method>> {
    let (u8_, u16_, u32_) = (any::<u8>, any::<u16>, any::<u32>);
    vec![
        m!(ConnectionStart {
            version_major: u8_(),
            version_minor: u8_(),
            server_properties: table(),
            mechanisms: long(),
            locales: long(),
        }),
        m!(ConnectionStartOk {
            client_properties: table(),
            mechanism: short(),
            response: long(),
            locale: short(),
        }),
        m!(ConnectionSecure { challenge: long() }),
        m!(ConnectionSecureOk { response: long() }),
        m!(ConnectionTune {
            channel_max: u16_(),
            frame_max: u32_(),
            heartbeat: u16_()
        }),
        m!(ConnectionTuneOk {
            channel_max: u16_(),
            frame_max: u32_(),
            heartbeat: u16_()
        }),
        m!(ConnectionOpen {
            virtual_host: short()
        }),
        m!(ConnectionOpenOk {}),
        m!(ConnectionClose {
            reply_code: u16_(),
            reply_text: short(),
            class_id: u16_(),
            method_id: u16_(),
        }),
        m!(ConnectionCloseOk {}),
        m!(ConnectionBlocked { reason: short() }),
        m!(ConnectionUnblocked {}),
        m!(ConnectionUpdateSecret {
            new_secret: long(),
            reason: short()
        }),
        m!(ConnectionUpdateSecretOk {}),
    ]
}

fn channel_access_exchange_methods() -> Vec<BoxedStrategy<Method>> {
    let u16_ = any::<u16>;
    vec![
        m!(ChannelOpen {}),
        m!(ChannelOpenOk {}),
        m!(ChannelFlow { active: b() }),
        m!(ChannelFlowOk { active: b() }),
        m!(ChannelClose {
            reply_code: u16_(),
            reply_text: short(),
            class_id: u16_(),
            method_id: u16_(),
        }),
        m!(ChannelCloseOk {}),
        m!(AccessRequest {
            realm: short(),
            exclusive: b(),
            passive: b(),
            active: b(),
            write: b(),
            read: b(),
        }),
        m!(AccessRequestOk { ticket: u16_() }),
        m!(ExchangeDeclare {
            exchange: short(),
            kind: short(),
            passive: b(),
            durable: b(),
            auto_delete: b(),
            internal: b(),
            nowait: b(),
            arguments: table(),
        }),
        m!(ExchangeDeclareOk {}),
        m!(ExchangeDelete {
            exchange: short(),
            if_unused: b(),
            nowait: b()
        }),
        m!(ExchangeDeleteOk {}),
        m!(ExchangeBind {
            destination: short(),
            source: short(),
            routing_key: short(),
            nowait: b(),
            arguments: table(),
        }),
        m!(ExchangeBindOk {}),
        m!(ExchangeUnbind {
            destination: short(),
            source: short(),
            routing_key: short(),
            nowait: b(),
            arguments: table(),
        }),
        m!(ExchangeUnbindOk {}),
    ]
}

fn queue_methods() -> Vec<BoxedStrategy<Method>> {
    let u32_ = any::<u32>;
    vec![
        m!(QueueDeclare {
            queue: short(),
            passive: b(),
            durable: b(),
            exclusive: b(),
            auto_delete: b(),
            nowait: b(),
            arguments: table(),
        }),
        m!(QueueDeclareOk {
            queue: short(),
            message_count: u32_(),
            consumer_count: u32_()
        }),
        m!(QueueBind {
            queue: short(),
            exchange: short(),
            routing_key: short(),
            nowait: b(),
            arguments: table(),
        }),
        m!(QueueBindOk {}),
        m!(QueuePurge {
            queue: short(),
            nowait: b()
        }),
        m!(QueuePurgeOk {
            message_count: u32_()
        }),
        m!(QueueDelete {
            queue: short(),
            if_unused: b(),
            if_empty: b(),
            nowait: b()
        }),
        m!(QueueDeleteOk {
            message_count: u32_()
        }),
        m!(QueueUnbind {
            queue: short(),
            exchange: short(),
            routing_key: short(),
            arguments: table(),
        }),
        m!(QueueUnbindOk {}),
    ]
}

fn basic_methods() -> Vec<BoxedStrategy<Method>> {
    let (u16_, u32_, u64_) = (any::<u16>, any::<u32>, any::<u64>);
    vec![
        m!(BasicQos {
            prefetch_size: u32_(),
            prefetch_count: u16_(),
            global: b()
        }),
        m!(BasicQosOk {}),
        m!(BasicConsume {
            queue: short(),
            consumer_tag: short(),
            no_local: b(),
            no_ack: b(),
            exclusive: b(),
            nowait: b(),
            arguments: table(),
        }),
        m!(BasicConsumeOk {
            consumer_tag: short()
        }),
        m!(BasicCancel {
            consumer_tag: short(),
            nowait: b()
        }),
        m!(BasicCancelOk {
            consumer_tag: short()
        }),
        m!(BasicPublish {
            exchange: short(),
            routing_key: short(),
            mandatory: b(),
            immediate: b(),
        }),
        m!(BasicReturn {
            reply_code: u16_(),
            reply_text: short(),
            exchange: short(),
            routing_key: short(),
        }),
        m!(BasicDeliver {
            consumer_tag: short(),
            delivery_tag: u64_(),
            redelivered: b(),
            exchange: short(),
            routing_key: short(),
        }),
        m!(BasicGet {
            queue: short(),
            no_ack: b()
        }),
        m!(BasicGetOk {
            delivery_tag: u64_(),
            redelivered: b(),
            exchange: short(),
            routing_key: short(),
            message_count: u32_(),
        }),
        m!(BasicGetEmpty {}),
        m!(BasicAck {
            delivery_tag: u64_(),
            multiple: b()
        }),
        m!(BasicReject {
            delivery_tag: u64_(),
            requeue: b()
        }),
        m!(BasicRecoverAsync { requeue: b() }),
        m!(BasicRecover { requeue: b() }),
        m!(BasicRecoverOk {}),
        m!(BasicNack {
            delivery_tag: u64_(),
            multiple: b(),
            requeue: b()
        }),
    ]
}

fn confirm_tx_methods() -> Vec<BoxedStrategy<Method>> {
    vec![
        m!(ConfirmSelect { nowait: b() }),
        m!(ConfirmSelectOk {}),
        m!(TxSelect {}),
        m!(TxSelectOk {}),
        m!(TxCommit {}),
        m!(TxCommitOk {}),
        m!(TxRollback {}),
        m!(TxRollbackOk {}),
    ]
}

/// One strategy per method of every class, in the order of the `Method` enum.
pub fn each_method() -> Vec<BoxedStrategy<Method>> {
    let mut all = connection_methods();
    all.extend(channel_access_exchange_methods());
    all.extend(queue_methods());
    all.extend(basic_methods());
    all.extend(confirm_tx_methods());
    all
}

/// Any method, every method equally likely.
pub fn method() -> impl Strategy<Value = Method> {
    Union::new(each_method())
}

/// Any frame that decodes back to itself: header frames carry the encoding of their properties
/// as `raw_properties`, heartbeats are on channel 0.
pub fn frame() -> impl Strategy<Value = Frame> {
    let header = (properties(), any::<u64>()).prop_map(|(properties, body_size)| {
        FramePayload::Header(ContentHeader::new(body_size, &properties))
    });
    let payload = prop_oneof![
        method().prop_map(FramePayload::Method),
        header,
        long().prop_map(FramePayload::Body),
    ];
    prop_oneof![
        9 => (any::<u16>(), payload).prop_map(|(channel, payload)| Frame { channel, payload }),
        1 => Just(Frame { channel: 0, payload: FramePayload::Heartbeat }),
    ]
}
