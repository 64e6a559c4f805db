use std::collections::HashSet;

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::method::*;
use crate::table::{FieldTable, FieldValue};

fn encoded(method: &Method) -> Vec<u8> {
    let mut out = BytesMut::new();
    method.encode(&mut out);
    out.to_vec()
}

/// `method` encodes to exactly `bytes`, and `bytes` decode back to `method`.
fn assert_wire(method: Method, bytes: &[u8]) {
    assert_eq!(encoded(&method), bytes, "{}", method.name());
    assert_eq!(Method::decode(Bytes::copy_from_slice(bytes)), Ok(method));
}

macro_rules! every_method {
    ($($variant:ident)+) => {
        vec![$(Method::$variant($variant::default()),)+]
    };
}

/// One default instance of every method of AMQP 0-9-1 and RabbitMQ's extensions.
pub(crate) fn every_method() -> Vec<Method> {
    every_method! {
        ConnectionStart ConnectionStartOk ConnectionSecure ConnectionSecureOk ConnectionTune
        ConnectionTuneOk ConnectionOpen ConnectionOpenOk ConnectionClose ConnectionCloseOk
        ConnectionBlocked ConnectionUnblocked ConnectionUpdateSecret ConnectionUpdateSecretOk
        ChannelOpen ChannelOpenOk ChannelFlow ChannelFlowOk ChannelClose ChannelCloseOk
        AccessRequest AccessRequestOk
        ExchangeDeclare ExchangeDeclareOk ExchangeDelete ExchangeDeleteOk ExchangeBind
        ExchangeBindOk ExchangeUnbind ExchangeUnbindOk
        QueueDeclare QueueDeclareOk QueueBind QueueBindOk QueuePurge QueuePurgeOk QueueDelete
        QueueDeleteOk QueueUnbind QueueUnbindOk
        BasicQos BasicQosOk BasicConsume BasicConsumeOk BasicCancel BasicCancelOk BasicPublish
        BasicReturn BasicDeliver BasicGet BasicGetOk BasicGetEmpty BasicAck BasicReject
        BasicRecoverAsync BasicRecover BasicRecoverOk BasicNack
        ConfirmSelect ConfirmSelectOk
        TxSelect TxSelectOk TxCommit TxCommitOk TxRollback TxRollbackOk
    }
}

#[test]
fn every_method_has_unique_ids_and_a_name_in_its_class() {
    let methods = every_method();
    assert_eq!(methods.len(), 66);
    let ids: HashSet<_> = methods
        .iter()
        .map(|m| (m.class_id(), m.method_id()))
        .collect();
    let names: HashSet<_> = methods.iter().map(|m| m.name()).collect();
    assert_eq!((ids.len(), names.len()), (66, 66));
    for m in &methods {
        let class = match m.class_id() {
            10 => "connection.",
            20 => "channel.",
            30 => "access.",
            40 => "exchange.",
            50 => "queue.",
            60 => "basic.",
            85 => "confirm.",
            90 => "tx.",
            other => panic!("class {other}"),
        };
        assert!(m.name().starts_with(class), "{}", m.name());
        assert_eq!(Method::decode(Bytes::from(encoded(m))).as_ref(), Ok(m));
    }
}

#[test]
fn ids_follow_rabbitmqs_method_table() {
    let rows: [(Method, u16, u16, &str); 8] = [
        (BasicPublish::default().into(), 60, 40, "basic.publish"),
        (
            ExchangeUnbindOk::default().into(),
            40,
            51,
            "exchange.unbind-ok",
        ),
        (BasicNack::default().into(), 60, 120, "basic.nack"),
        (ConfirmSelect::default().into(), 85, 10, "confirm.select"),
        (
            ConnectionBlocked::default().into(),
            10,
            60,
            "connection.blocked",
        ),
        (
            ConnectionUpdateSecretOk::default().into(),
            10,
            71,
            "connection.update-secret-ok",
        ),
        (
            BasicRecoverAsync::default().into(),
            60,
            100,
            "basic.recover-async",
        ),
        (BasicGetEmpty::default().into(), 60, 72, "basic.get-empty"),
    ];
    for (m, class_id, method_id, name) in rows {
        assert_eq!(
            (m.class_id(), m.method_id(), m.name()),
            (class_id, method_id, name)
        );
    }
    assert_eq!((QueueDeclare::CLASS_ID, QueueDeclare::METHOD_ID), (50, 10));
    assert_eq!(QueueDeclare::NAME, "queue.declare");
}

#[test]
fn only_publish_return_deliver_and_get_ok_carry_content() {
    let with_content: Vec<_> = every_method()
        .into_iter()
        .filter(Method::has_content)
        .map(|m| m.name())
        .collect();
    assert_eq!(
        with_content,
        [
            "basic.publish",
            "basic.return",
            "basic.deliver",
            "basic.get-ok"
        ]
    );
}

#[test]
fn queue_declare_packs_its_five_bits_into_one_octet() {
    let m = QueueDeclare {
        queue: "q".into(),
        durable: true,
        auto_delete: true,
        ..Default::default()
    };
    assert_wire(
        m.into(),
        b"\x00\x32\x00\x0a\x00\x00\x01q\x0a\x00\x00\x00\x00",
    );
}

#[test]
fn exchange_declare_carries_auto_delete_and_internal_bits() {
    let mut arguments = FieldTable::new();
    arguments.insert(
        "alternate-exchange",
        FieldValue::LongStr(Bytes::from_static(b"ae")),
    );
    let m = ExchangeDeclare {
        exchange: "ex".into(),
        kind: "topic".into(),
        durable: true,
        internal: true,
        nowait: true,
        arguments,
        ..Default::default()
    };
    let bytes = b"\x00\x28\x00\x0a\x00\x00\x02ex\x05topic\x1a\
                  \x00\x00\x00\x1a\x12alternate-exchangeS\x00\x00\x00\x02ae";
    assert_wire(m.into(), bytes);
    let auto_delete = ExchangeDeclare {
        auto_delete: true,
        ..Default::default()
    };
    assert_eq!(encoded(&auto_delete.into())[8], 0x04);
}

#[test]
fn basic_publish_as_a_client_sends_it() {
    let m = BasicPublish {
        routing_key: "hello".into(),
        mandatory: true,
        ..Default::default()
    };
    assert_wire(m.into(), b"\x00\x3c\x00\x28\x00\x00\x00\x05hello\x01");
}

#[test]
fn basic_deliver_has_its_redelivered_bit_between_strings() {
    let m = BasicDeliver {
        consumer_tag: "ctg".into(),
        delivery_tag: 1,
        redelivered: true,
        exchange: "".into(),
        routing_key: "k".into(),
    };
    assert_wire(
        m.into(),
        b"\x00\x3c\x00\x3c\x03ctg\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x01k",
    );
}

#[test]
fn basic_nack_packs_multiple_and_requeue() {
    let m = BasicNack {
        delivery_tag: 7,
        multiple: true,
        requeue: true,
    };
    assert_wire(
        m.into(),
        b"\x00\x3c\x00\x78\x00\x00\x00\x00\x00\x00\x00\x07\x03",
    );
}

#[test]
fn reserved_fields_are_written_empty() {
    let open = ConnectionOpen {
        virtual_host: "/".into(),
    };
    assert_wire(open.into(), b"\x00\x0a\x00\x28\x01/\x00\x00");
    assert_wire(ChannelOpen {}.into(), b"\x00\x14\x00\x0a\x00");
    assert_wire(ChannelOpenOk {}.into(), b"\x00\x14\x00\x0b\x00\x00\x00\x00");
    assert_wire(ConnectionOpenOk {}.into(), b"\x00\x0a\x00\x29\x00");
    assert_wire(BasicGetEmpty {}.into(), b"\x00\x3c\x00\x48\x00");
}

#[test]
fn reserved_fields_are_skipped_whatever_they_hold() {
    // connection.open with capabilities "\xff" (not UTF-8) and insist set, as old clients send.
    let bytes = Bytes::from_static(b"\x00\x0a\x00\x28\x01/\x01\xff\x01");
    let want = ConnectionOpen {
        virtual_host: "/".into(),
    };
    assert_eq!(Method::decode(bytes), Ok(want.into()));
    let publish = Bytes::from_static(b"\x00\x3c\x00\x28\x12\x34\x00\x01k\x00");
    assert!(Method::decode(publish).is_ok());
}

#[test]
fn unused_bits_of_a_bit_octet_are_ignored() {
    let bytes = Bytes::from_static(b"\x00\x3c\x00\x50\x00\x00\x00\x00\x00\x00\x00\x05\xfe");
    assert_eq!(
        Method::decode(bytes),
        Ok(BasicAck {
            delivery_tag: 5,
            multiple: false
        }
        .into())
    );
}

#[test]
fn update_secret_and_blocked_carry_their_arguments() {
    let m = ConnectionUpdateSecret {
        new_secret: Bytes::from_static(b"tok"),
        reason: "r".into(),
    };
    assert_wire(m.into(), b"\x00\x0a\x00\x46\x00\x00\x00\x03tok\x01r");
    let m = ConnectionBlocked {
        reason: "low on memory".into(),
    };
    assert_wire(m.into(), b"\x00\x0a\x00\x3c\x0dlow on memory");
    assert_wire(
        ConfirmSelect { nowait: true }.into(),
        b"\x00\x55\x00\x0a\x01",
    );
}

#[test]
fn unknown_class_or_method_is_refused() {
    let err = Method::decode(Bytes::from_static(b"\x00\x63\x00\x0a"));
    assert_eq!(
        err,
        Err(DecodeError::UnknownMethod {
            class_id: 99,
            method_id: 10
        })
    );
    let err = Method::decode(Bytes::from_static(b"\x00\x3c\x00\x29"));
    assert_eq!(
        err,
        Err(DecodeError::UnknownMethod {
            class_id: 60,
            method_id: 41
        })
    );
}

#[test]
fn bytes_after_the_last_argument_are_refused() {
    let err = Method::decode(Bytes::from_static(b"\x00\x14\x00\x29\x00"));
    assert_eq!(err, Err(DecodeError::TrailingBytes(1, "channel.close-ok")));
}

#[test]
fn every_method_cut_short_is_an_error() {
    for m in every_method() {
        let bytes = encoded(&m);
        for len in 0..bytes.len() {
            let cut = Bytes::copy_from_slice(&bytes[..len]);
            assert!(
                Method::decode(cut).is_err(),
                "{} cut to {len} bytes",
                m.name()
            );
        }
    }
}
