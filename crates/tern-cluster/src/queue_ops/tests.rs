//! Queue operations survive a round trip; no input makes the decoder panic or reserve more
//! than the input could hold.

use proptest::prelude::*;
use tern_amqp::FieldTable;

use super::*;

fn short() -> impl Strategy<Value = ShortStr> {
    "[a-z./-]{0,20}".prop_map(|s| ShortStr::from(s.as_str()))
}

fn message() -> impl Strategy<Value = Arc<Message>> {
    let body = proptest::collection::vec(any::<u8>(), 0..100).prop_map(Bytes::from);
    (short(), short(), body, any::<Option<u8>>(), any::<bool>()).prop_map(
        |(exchange, routing_key, body, priority, headers)| {
            let mut properties = BasicProperties {
                priority,
                ..BasicProperties::default()
            };
            if headers {
                properties.headers = Some(FieldTable::default());
            }
            let mut raw = BytesMut::new();
            properties.encode(&mut raw);
            Arc::new(Message {
                exchange,
                routing_key,
                properties,
                raw_properties: raw.freeze(),
                body,
            })
        },
    )
}

fn queue() -> impl Strategy<Value = QueueRef> {
    (short(), short()).prop_map(|(v, n)| QueueRef {
        vhost: VhostName(v),
        name: QueueName(n),
    })
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (any::<[u64; 3]>(), message(), any::<[bool; 2]>()).prop_map(|(ids, message, flags)| Delivery {
        consumer: ConsumerId(ids[0]),
        channel: ChannelKey(ids[1]),
        msg_id: MsgId(ids[2]),
        message,
        redelivered: flags[0],
        no_ack: flags[1],
    })
}

fn spec() -> impl Strategy<Value = ConsumeSpec> {
    let numbers = (
        any::<[u64; 3]>(),
        any::<i32>(),
        any::<u32>(),
        any::<Option<u32>>(),
    );
    (numbers, any::<[bool; 2]>()).prop_map(|((n, priority, prefetch, global), flags)| ConsumeSpec {
        id: ConsumerId(n[0]),
        channel: ChannelKey(n[1]),
        priority,
        prefetch,
        window_bytes: n[2],
        no_ack: flags[0],
        exclusive: flags[1],
        global_prefetch: global,
    })
}

fn ids() -> impl Strategy<Value = Vec<MsgId>> {
    proptest::collection::vec(any::<u64>().prop_map(MsgId), 0..20)
}

fn calls() -> impl Strategy<Value = QueueOp> {
    let messages = proptest::collection::vec(message(), 0..5);
    prop_oneof![
        (queue(), any::<Option<u64>>(), messages).prop_map(|(queue, confirm, messages)| {
            QueueOp::Publish {
                queue,
                confirm,
                messages,
            }
        }),
        (queue(), spec()).prop_map(|(queue, spec)| QueueOp::Consume { queue, spec }),
        (queue(), any::<u64>(), any::<bool>()).prop_map(|(queue, c, no_ack)| QueueOp::Get {
            queue,
            channel: ChannelKey(c),
            no_ack
        }),
        queue().prop_map(|queue| QueueOp::Purge { queue }),
        queue().prop_map(|queue| QueueOp::Stats { queue }),
        (queue(), any::<[bool; 2]>()).prop_map(|(queue, f)| QueueOp::Delete {
            queue,
            if_unused: f[0],
            if_empty: f[1]
        }),
    ]
}

fn casts() -> impl Strategy<Value = QueueOp> {
    let deliveries = proptest::collection::vec(delivery(), 0..5);
    prop_oneof![
        (queue(), any::<u64>()).prop_map(|(queue, c)| QueueOp::Cancel {
            queue,
            consumer: ConsumerId(c)
        }),
        (queue(), any::<u64>(), ids()).prop_map(|(queue, c, ids)| QueueOp::Ack {
            queue,
            channel: ChannelKey(c),
            ids
        }),
        (queue(), any::<u64>(), ids(), any::<bool>()).prop_map(|(queue, c, ids, requeue)| {
            QueueOp::Reject {
                queue,
                channel: ChannelKey(c),
                ids,
                requeue,
            }
        }),
        (queue(), any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(queue, c, n, bytes)| {
            QueueOp::ReturnCredit {
                queue,
                consumer: ConsumerId(c),
                n,
                bytes,
            }
        }),
        (queue(), any::<u64>()).prop_map(|(queue, c)| QueueOp::ChannelClosed {
            queue,
            channel: ChannelKey(c)
        }),
        queue().prop_map(|queue| QueueOp::Kick { queue }),
        (queue(), deliveries)
            .prop_map(|(queue, deliveries)| QueueOp::Deliver { queue, deliveries }),
        any::<u64>().prop_map(|c| QueueOp::Cancelled {
            consumer: ConsumerId(c)
        }),
        (any::<u64>(), any::<bool>()).prop_map(|(id, ok)| QueueOp::Confirmed { id, ok }),
    ]
}

fn error() -> impl Strategy<Value = AmqpError> {
    let code = prop_oneof![
        Just(ReplyCode::NotFound),
        Just(ReplyCode::PreconditionFailed),
        Just(ReplyCode::AccessRefused)
    ];
    (code, ".{0,40}", any::<u16>()).prop_map(|(code, text, method)| AmqpError {
        method_id: method,
        class_id: 60,
        ..AmqpError::new(code, text)
    })
}

proptest! {
    #[test]
    fn every_operation_survives_a_round_trip(op in prop_oneof![calls(), casts()]) {
        prop_assert_eq!(QueueOp::decode(op.encode()), Ok(op));
    }

    #[test]
    fn no_input_makes_the_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = QueueOp::decode(Bytes::from(bytes.clone()));
        let b = Bytes::from(bytes);
        let _ = Answer::decode_done(b.clone());
        let _ = Answer::decode_deleted(b.clone());
        let _ = Answer::decode_got(b.clone());
        let _ = Answer::decode_stats(b.clone());
        let _ = Answer::decode_count(b);
    }

    #[test]
    fn a_cut_operation_is_an_error(op in prop_oneof![calls(), casts()], cut in any::<prop::sample::Index>()) {
        let whole = op.encode();
        let at = cut.index(whole.len());
        prop_assert!(QueueOp::decode(whole.slice(..at)).is_err());
    }

    #[test]
    fn answers_survive_a_round_trip(
        result in prop::result::maybe_ok(any::<u32>(), error()),
        got in proptest::option::of((any::<u64>(), any::<bool>(), any::<u32>(), message())),
        stats in proptest::collection::vec(any::<u64>(), 0..10),
    ) {
        let deleted = Answer::Deleted(result.clone()).encode();
        prop_assert_eq!(Answer::decode_deleted(deleted), Ok(result.clone()));
        let done = Answer::Done(result.clone().map(|_| ())).encode();
        prop_assert_eq!(Answer::decode_done(done), Ok(result.map(|_| ())));
        let got = got.map(|(id, redelivered, remaining, message)| GetResult {
            msg_id: MsgId(id), redelivered, remaining, message,
        });
        prop_assert_eq!(Answer::decode_got(Answer::Got(got.clone()).encode()), Ok(got));
        prop_assert_eq!(Answer::decode_stats(Answer::Stats(stats.clone()).encode()), Ok(stats));
        prop_assert_eq!(Answer::decode_count(Answer::Count(7).encode()), Ok(7));
    }
}

#[test]
fn a_count_larger_than_the_body_is_refused_before_reserving() {
    let q = QueueRef {
        vhost: VhostName::from("/"),
        name: QueueName::from("q"),
    };
    let mut b = BytesMut::new();
    put_head(&mut b, tag::DELIVER, &q);
    b.put_u32(u32::MAX);
    assert_eq!(QueueOp::decode(b.freeze()), Err(OpError::Truncated));
    let mut b = BytesMut::new();
    put_head(&mut b, tag::PUBLISH, &q);
    b.put_u8(0);
    b.put_u32(u32::MAX);
    assert_eq!(QueueOp::decode(b.freeze()), Err(OpError::Truncated));
}
