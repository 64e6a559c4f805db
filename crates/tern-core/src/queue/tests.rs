//! Unit tests of the queue state machine, one behaviour each.

use bytes::Bytes;
use tern_amqp::{BasicProperties, ShortStr};

use super::*;

fn msg(body: &str) -> Arc<Message> {
    Arc::new(Message {
        exchange: ShortStr::from(""),
        routing_key: ShortStr::from("q"),
        properties: BasicProperties::default(),
        raw_properties: Bytes::new(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    })
}

fn queue_with(options: QueueOptions) -> QueueState {
    QueueState::new(QueueName::from("q"), VhostName::from("/"), options)
}

fn queue() -> QueueState {
    queue_with(QueueOptions::default())
}

fn fill(q: &mut QueueState, n: usize) -> Vec<MsgId> {
    (0..n).map(|i| q.push(msg(&format!("m{i}")))).collect()
}

const CH1: ChannelKey = ChannelKey(1);
const CH2: ChannelKey = ChannelKey(2);

fn spec(id: u64, channel: ChannelKey) -> ConsumerSpec {
    ConsumerSpec {
        id: ConsumerId(id),
        channel,
        priority: 0,
        prefetch: 0,
        window_bytes: 0,
        no_ack: false,
        exclusive: false,
        channel_credit: None,
    }
}

fn with_prefetch(id: u64, channel: ChannelKey, prefetch: u32) -> ConsumerSpec {
    ConsumerSpec {
        prefetch,
        ..spec(id, channel)
    }
}

fn dispatch(q: &mut QueueState) -> Vec<Delivery> {
    let mut out = Vec::new();
    q.dispatch(&mut out);
    q.check_invariants();
    out
}

fn who(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.consumer.0).collect()
}

fn ids(deliveries: &[Delivery]) -> Vec<MsgId> {
    deliveries.iter().map(|d| d.msg_id).collect()
}

#[test]
fn a_single_consumer_receives_messages_in_publish_order() {
    let mut q = queue();
    let pushed = fill(&mut q, 3);
    q.add_consumer(spec(1, CH1)).unwrap();
    let out = dispatch(&mut q);
    assert_eq!(ids(&out), pushed);
    assert!(out
        .iter()
        .all(|d| !d.redelivered && !d.no_ack && d.channel == CH1));
    assert_eq!((q.message_count(), q.unacked_count()), (0, 3));
}

#[test]
fn equal_priority_consumers_take_turns_one_message_each() {
    let mut q = queue();
    for id in 1..=3 {
        q.add_consumer(spec(id, CH1)).unwrap();
    }
    fill(&mut q, 7);
    assert_eq!(who(&dispatch(&mut q)), [1, 2, 3, 1, 2, 3, 1]);
    fill(&mut q, 2);
    assert_eq!(
        who(&dispatch(&mut q)),
        [2, 3],
        "the turn carries over between dispatches"
    );
}

#[test]
fn prefetch_caps_unacked_per_consumer_and_acks_give_room() {
    let mut q = queue();
    q.add_consumer(with_prefetch(1, CH1, 2)).unwrap();
    let pushed = fill(&mut q, 5);
    assert_eq!(ids(&dispatch(&mut q)), pushed[..2]);
    assert!(dispatch(&mut q).is_empty(), "no credit, no delivery");
    q.ack(CH1, &pushed[..1]);
    assert_eq!(ids(&dispatch(&mut q)), pushed[2..3]);
    q.ack(CH1, &pushed[1..3]);
    assert_eq!(ids(&dispatch(&mut q)), pushed[3..5]);
    assert_eq!(q.in_flight(ConsumerId(1)), Some(2));
}

#[test]
fn a_full_consumer_is_skipped_while_others_keep_receiving() {
    let mut q = queue();
    q.add_consumer(with_prefetch(1, CH1, 1)).unwrap();
    q.add_consumer(spec(2, CH2)).unwrap();
    fill(&mut q, 5);
    assert_eq!(who(&dispatch(&mut q)), [1, 2, 2, 2, 2]);
}

#[test]
fn higher_priority_consumers_are_served_until_they_run_out_of_credit() {
    let mut q = queue();
    q.add_consumer(spec(1, CH1)).unwrap();
    q.add_consumer(ConsumerSpec {
        priority: 10,
        ..with_prefetch(2, CH1, 2)
    })
    .unwrap();
    q.add_consumer(ConsumerSpec {
        priority: 10,
        ..with_prefetch(3, CH1, 1)
    })
    .unwrap();
    let pushed = fill(&mut q, 6);
    assert_eq!(who(&dispatch(&mut q)), [2, 3, 2, 1, 1, 1]);
    q.ack(CH1, &pushed[..1]);
    q.push(msg("late"));
    assert_eq!(
        who(&dispatch(&mut q)),
        [2],
        "room at the higher priority goes there first"
    );
}

#[test]
fn negative_priorities_rank_below_the_default() {
    let mut q = queue();
    q.add_consumer(ConsumerSpec {
        priority: -5,
        ..spec(1, CH1)
    })
    .unwrap();
    q.add_consumer(with_prefetch(2, CH1, 1)).unwrap();
    fill(&mut q, 3);
    assert_eq!(who(&dispatch(&mut q)), [2, 1, 1]);
}

#[test]
fn global_channel_credit_is_shared_across_queues() {
    let credit = ChannelCredit::new(3);
    let (mut a, mut b) = (queue(), queue());
    let shared = |id| ConsumerSpec {
        channel_credit: Some(credit.clone()),
        ..spec(id, CH1)
    };
    a.add_consumer(shared(1)).unwrap();
    b.add_consumer(shared(2)).unwrap();
    let in_a = fill(&mut a, 2);
    fill(&mut b, 5);
    assert_eq!(dispatch(&mut a).len(), 2);
    assert_eq!(dispatch(&mut b).len(), 1, "the channel has one unit left");
    assert!(dispatch(&mut b).is_empty());
    assert_eq!(credit.used(), 3);
    a.ack(CH1, &in_a);
    assert_eq!(credit.used(), 1, "the queue releases what its acks free");
    assert_eq!(
        dispatch(&mut b).len(),
        2,
        "a parked consumer resumes when another queue frees"
    );
}

#[test]
fn a_consumer_on_a_full_channel_yields_to_lower_priority_consumers() {
    let credit = ChannelCredit::new(1);
    let mut q = queue();
    let high = ConsumerSpec {
        priority: 5,
        channel_credit: Some(credit.clone()),
        ..spec(1, CH1)
    };
    q.add_consumer(high).unwrap();
    q.add_consumer(spec(2, CH2)).unwrap();
    let pushed = fill(&mut q, 3);
    assert_eq!(who(&dispatch(&mut q)), [1, 2, 2]);
    q.ack(CH1, &pushed[..1]);
    q.push(msg("next"));
    assert_eq!(who(&dispatch(&mut q)), [1]);
}

#[test]
fn no_ack_consumers_hold_no_channel_credit() {
    let credit = ChannelCredit::new(1);
    let mut q = queue();
    let spec = ConsumerSpec {
        no_ack: true,
        channel_credit: Some(credit.clone()),
        ..spec(1, CH1)
    };
    q.add_consumer(spec).unwrap();
    fill(&mut q, 3);
    assert_eq!(dispatch(&mut q).len(), 3);
    assert_eq!(credit.used(), 0);
}

#[test]
fn no_ack_deliveries_leave_the_queue_and_use_the_flow_window() {
    let mut q = queue();
    q.add_consumer(ConsumerSpec {
        no_ack: true,
        ..with_prefetch(1, CH1, 2)
    })
    .unwrap();
    fill(&mut q, 5);
    let out = dispatch(&mut q);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|d| d.no_ack));
    assert_eq!(
        (q.message_count(), q.unacked_count(), q.unacked_bytes()),
        (3, 0, 0)
    );
    assert!(
        dispatch(&mut q).is_empty(),
        "the window is closed until the writer flushes"
    );
    q.return_credit(ConsumerId(1), 1, 0);
    assert_eq!(dispatch(&mut q).len(), 1);
    q.return_credit(ConsumerId(1), 2, 0);
    assert_eq!(dispatch(&mut q).len(), 2);
}

#[test]
fn a_no_ack_window_in_bytes_stops_delivery_once_it_is_full() {
    let mut q = queue();
    let big = Message::size_bytes(&msg("m0")) as u64;
    // Room for two messages by count many times over, but 2.5 messages by size.
    q.add_consumer(ConsumerSpec {
        no_ack: true,
        window_bytes: big * 5 / 2,
        ..with_prefetch(1, CH1, 100)
    })
    .unwrap();
    fill(&mut q, 6);
    assert_eq!(
        dispatch(&mut q).len(),
        3,
        "the third goes while below the window"
    );
    assert!(dispatch(&mut q).is_empty(), "the window is full");
    q.return_credit(ConsumerId(1), 1, big);
    assert_eq!(dispatch(&mut q).len(), 1, "one message's worth came back");
    q.return_credit(ConsumerId(1), 3, 3 * big);
    assert_eq!(dispatch(&mut q).len(), 2, "the rest of the queue");
}

#[test]
fn returned_credit_for_unknown_or_ack_mode_consumers_is_ignored() {
    let mut q = queue();
    q.add_consumer(with_prefetch(1, CH1, 1)).unwrap();
    fill(&mut q, 2);
    assert_eq!(dispatch(&mut q).len(), 1);
    q.return_credit(ConsumerId(1), 1, 0);
    q.return_credit(ConsumerId(99), 1, 0);
    assert!(
        dispatch(&mut q).is_empty(),
        "only an ack frees an ack-mode consumer"
    );
}

#[test]
fn single_active_consumer_delivers_only_to_the_first_registered() {
    let mut q = queue_with(QueueOptions {
        single_active_consumer: true,
    });
    q.add_consumer(with_prefetch(1, CH1, 2)).unwrap();
    q.add_consumer(ConsumerSpec {
        priority: 9,
        ..spec(2, CH2)
    })
    .unwrap();
    assert_eq!(q.active_consumer(), Some(ConsumerId(1)));
    let pushed = fill(&mut q, 4);
    assert_eq!(
        who(&dispatch(&mut q)),
        [1, 1],
        "the others wait even when it is full"
    );
    assert!(q.remove_consumer(ConsumerId(1)));
    assert_eq!(q.active_consumer(), Some(ConsumerId(2)));
    assert_eq!(q.unacked_count(), 2, "its unacked stay with its channel");
    assert_eq!(who(&dispatch(&mut q)), [2, 2]);
    q.channel_closed(CH1);
    assert_eq!(ids(&dispatch(&mut q)), pushed[..2]);
}

#[test]
fn without_single_active_consumer_there_is_no_active_consumer() {
    let mut q = queue();
    q.add_consumer(spec(1, CH1)).unwrap();
    assert_eq!(q.active_consumer(), None);
}

#[test]
fn requeued_messages_return_to_their_original_positions_as_redelivered() {
    let mut q = queue();
    q.add_consumer(with_prefetch(1, CH1, 4)).unwrap();
    let pushed = fill(&mut q, 6);
    dispatch(&mut q);
    q.reject(CH1, &[pushed[3], pushed[1]], true);
    assert_eq!(q.message_count(), 4);
    q.reject(CH1, &[pushed[2]], true);
    q.remove_consumer(ConsumerId(1));
    q.add_consumer(spec(2, CH2)).unwrap();
    let out = dispatch(&mut q);
    assert_eq!(
        ids(&out),
        [pushed[1], pushed[2], pushed[3], pushed[4], pushed[5]]
    );
    let redelivered: Vec<bool> = out.iter().map(|d| d.redelivered).collect();
    assert_eq!(redelivered, [true, true, true, false, false]);
}

#[test]
fn reject_without_requeue_drops_the_message() {
    let mut q = queue();
    q.add_consumer(spec(1, CH1)).unwrap();
    let pushed = fill(&mut q, 2);
    dispatch(&mut q);
    q.reject(CH1, &pushed, false);
    assert_eq!(
        (q.message_count(), q.unacked_count(), q.unacked_bytes()),
        (0, 0, 0)
    );
    q.check_invariants();
}

#[test]
fn acks_on_another_channel_or_twice_change_nothing() {
    let mut q = queue();
    q.add_consumer(spec(1, CH1)).unwrap();
    let pushed = fill(&mut q, 2);
    dispatch(&mut q);
    q.ack(CH2, &pushed);
    assert_eq!(q.unacked_count(), 2);
    q.ack(CH1, &pushed[..1]);
    q.ack(CH1, &pushed[..1]);
    q.reject(CH1, &pushed[..1], true);
    assert_eq!((q.unacked_count(), q.message_count()), (1, 0));
    q.check_invariants();
}

#[test]
fn closing_a_channel_requeues_its_unacked_in_order_and_drops_its_consumers() {
    let mut q = queue();
    q.add_consumer(spec(1, CH1)).unwrap();
    q.add_consumer(spec(2, CH2)).unwrap();
    let pushed = fill(&mut q, 6);
    dispatch(&mut q);
    q.channel_closed(CH1);
    assert!(!q.has_consumer(ConsumerId(1)) && q.has_consumer(ConsumerId(2)));
    assert_eq!((q.message_count(), q.unacked_count()), (3, 3));
    let out = dispatch(&mut q);
    assert_eq!(ids(&out), [pushed[0], pushed[2], pushed[4]]);
    assert!(out
        .iter()
        .all(|d| d.redelivered && d.consumer == ConsumerId(2)));
}

#[test]
fn a_cancelled_consumers_unacked_can_still_be_acked_and_free_channel_credit() {
    let credit = ChannelCredit::new(5);
    let mut q = queue();
    q.add_consumer(ConsumerSpec {
        channel_credit: Some(credit.clone()),
        ..spec(1, CH1)
    })
    .unwrap();
    let pushed = fill(&mut q, 2);
    dispatch(&mut q);
    q.remove_consumer(ConsumerId(1));
    q.add_consumer(spec(2, CH1)).unwrap();
    q.ack(CH1, &pushed);
    assert_eq!((q.unacked_count(), credit.used()), (0, 0));
    assert_eq!(
        q.in_flight(ConsumerId(2)),
        Some(0),
        "another consumer's count is untouched"
    );
    q.check_invariants();
}

#[test]
fn get_takes_the_head_and_reports_what_remains() {
    let mut q = queue();
    let pushed = fill(&mut q, 3);
    let got = q.get(CH1, true).unwrap();
    assert_eq!(
        (got.msg_id, got.remaining, got.redelivered),
        (pushed[0], 2, false)
    );
    assert_eq!(q.unacked_count(), 0);
    let got = q.get(CH1, false).unwrap();
    assert_eq!((got.msg_id, got.remaining), (pushed[1], 1));
    assert_eq!(q.unacked_count(), 1);
    q.channel_closed(CH1);
    let again = q.get(CH2, false).unwrap();
    assert_eq!(
        (again.msg_id, again.redelivered, again.remaining),
        (pushed[1], true, 1)
    );
    q.ack(CH2, &[again.msg_id]);
    assert_eq!((q.message_count(), q.unacked_count()), (1, 0));
    q.get(CH2, true);
    assert!(q.get(CH2, true).is_none());
    q.check_invariants();
}

#[test]
fn purge_drops_ready_messages_but_not_unacked_ones() {
    let mut q = queue();
    q.add_consumer(with_prefetch(1, CH1, 1)).unwrap();
    fill(&mut q, 4);
    dispatch(&mut q);
    assert_eq!(q.purge(), 3);
    assert_eq!(
        (q.message_count(), q.unacked_count(), q.ready_bytes()),
        (0, 1, 0)
    );
    assert_eq!(q.purge(), 0);
    q.check_invariants();
}

#[test]
fn byte_counts_follow_messages_between_ready_and_unacked() {
    let mut q = queue();
    let a = q.push(msg("12345"));
    q.push(msg("123"));
    assert_eq!((q.ready_bytes(), q.unacked_bytes()), (8, 0));
    q.add_consumer(with_prefetch(1, CH1, 1)).unwrap();
    dispatch(&mut q);
    assert_eq!((q.ready_bytes(), q.unacked_bytes()), (3, 5));
    q.reject(CH1, &[a], true);
    assert_eq!((q.ready_bytes(), q.unacked_bytes()), (8, 0));
}

fn exclusive(id: u64) -> ConsumerSpec {
    ConsumerSpec {
        exclusive: true,
        ..spec(id, CH1)
    }
}

#[test]
fn an_exclusive_consumer_is_refused_on_a_queue_with_consumers() {
    let mut q = queue();
    q.add_consumer(spec(1, CH1)).unwrap();
    let e = q.add_consumer(exclusive(2)).unwrap_err();
    assert_eq!(e.code, ReplyCode::AccessRefused);
    assert_eq!(
        e.to_string(),
        "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
    );
    assert_eq!(q.consumer_count(), 1);
}

#[test]
fn nobody_joins_an_exclusive_consumer_until_it_goes() {
    let mut q = queue();
    q.add_consumer(exclusive(1)).unwrap();
    assert_eq!(
        q.add_consumer(spec(2, CH2)).unwrap_err().code,
        ReplyCode::AccessRefused
    );
    assert!(q.add_consumer(exclusive(3)).is_err());
    q.remove_consumer(ConsumerId(1));
    q.add_consumer(spec(2, CH2)).unwrap();
}

#[test]
fn single_active_consumer_queues_refuse_exclusive_consumers() {
    let mut q = queue_with(QueueOptions {
        single_active_consumer: true,
    });
    assert_eq!(
        q.add_consumer(exclusive(1)).unwrap_err().code,
        ReplyCode::AccessRefused
    );
}

#[test]
fn auto_delete_bookkeeping_remembers_that_a_consumer_was_seen() {
    let mut q = queue();
    assert!(q.is_unused() && !q.ever_had_consumer());
    q.add_consumer(spec(1, CH1)).unwrap();
    assert!(!q.is_unused() && q.ever_had_consumer());
    assert!(q.remove_consumer(ConsumerId(1)));
    assert!(!q.remove_consumer(ConsumerId(1)));
    assert!(q.is_unused() && q.ever_had_consumer());
    assert_eq!(q.consumer_count(), 0);
}

#[test]
fn a_refused_consumer_does_not_count_as_having_had_one() {
    let mut q = queue_with(QueueOptions {
        single_active_consumer: true,
    });
    assert!(q.add_consumer(exclusive(1)).is_err());
    assert!(!q.ever_had_consumer());
}

#[test]
fn dispatch_skips_many_blocked_consumers_cheaply() {
    let mut q = queue();
    for id in 0..2000 {
        q.add_consumer(with_prefetch(id, ChannelKey(id), 1))
            .unwrap();
    }
    fill(&mut q, 2000);
    assert_eq!(dispatch(&mut q).len(), 2000);
    // Every consumer is full; each ack must find its consumer without scanning the rest.
    for round in 0..50u64 {
        let pushed = fill(&mut q, 1);
        let id = round * 37 % 2000;
        let unacked: Vec<MsgId> = q
            .unacked
            .keys()
            .filter(|k| k.0 == ChannelKey(id))
            .map(|k| k.1)
            .collect();
        q.ack(ChannelKey(id), &unacked);
        let out = dispatch(&mut q);
        assert_eq!((who(&out), ids(&out)), (vec![id], pushed));
    }
}

fn persistent(body: &str) -> Arc<Message> {
    let mut m = (*msg(body)).clone();
    m.properties.delivery_mode = Some(2);
    Arc::new(m)
}

#[test]
fn the_journal_records_what_happens_to_persistent_messages_only() {
    let mut q = queue();
    q.enable_journal();
    let a = q.push(persistent("a"));
    let b = q.push(persistent("b"));
    let _transient = q.push(msg("t"));
    let c = q.push(persistent("c"));
    let d = q.push(persistent("d"));
    q.add_consumer(with_prefetch(1, CH1, 2)).unwrap();
    assert_eq!(who(&dispatch(&mut q)), [1, 1]);
    assert_eq!(
        q.take_journal(),
        [QueueEvent::Delivered(a), QueueEvent::Delivered(b)]
    );
    q.ack(CH1, &[a]);
    q.reject(CH1, &[b], true);
    assert_eq!(
        q.take_journal(),
        [QueueEvent::Removed(a)],
        "a requeue removes nothing"
    );
    let got = q.get(CH2, true).expect("the requeued one");
    assert_eq!(got.msg_id, b);
    assert_eq!(q.take_journal(), [QueueEvent::Removed(b)]);
    q.remove_consumer(ConsumerId(1));
    assert_eq!(q.purge(), 3);
    assert_eq!(
        q.take_journal(),
        [QueueEvent::Removed(c), QueueEvent::Removed(d)]
    );
}

#[test]
fn restored_messages_keep_their_ids_and_redelivered_flag_and_new_ones_follow() {
    let mut q = queue();
    q.restore(MsgId(5), persistent("five"), true);
    q.restore(MsgId(9), persistent("nine"), false);
    let next = q.push(msg("new"));
    assert_eq!(next, MsgId(10));
    q.add_consumer(spec(1, CH1)).unwrap();
    let out = dispatch(&mut q);
    let seen: Vec<(u64, bool)> = out.iter().map(|d| (d.msg_id.0, d.redelivered)).collect();
    assert_eq!(seen, [(5, true), (9, false), (10, false)]);
}
