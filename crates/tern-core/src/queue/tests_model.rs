//! Random operation sequences against a simple model of the queue.
//!
//! The model tracks every pushed message as ready, unacked (on a channel, maybe held by a
//! consumer and a channel credit unit) or gone, and every consumer's in-flight count. After
//! each step the queue's ready and unacked sets, counts and credit must equal the model's; each
//! delivery must take the head message, go to an eligible consumer of the highest eligible
//! priority, and dispatch must stop only when nobody eligible is left.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;
use tern_amqp::{BasicProperties, ShortStr};

use super::*;

const CHANNELS: u64 = 3;

#[derive(Clone, Debug)]
enum Op {
    Push(u8),
    Consume {
        ch: u64,
        priority: i32,
        prefetch: u32,
        no_ack: bool,
        exclusive: bool,
    },
    Cancel(usize),
    Dispatch,
    Ack {
        ch: u64,
        mask: u16,
        stray: bool,
    },
    Reject {
        ch: u64,
        mask: u16,
        requeue: bool,
    },
    Get {
        ch: u64,
        no_ack: bool,
    },
    Purge,
    CloseChannel(u64),
    ReturnCredit {
        index: usize,
        n: u32,
    },
    SetLimit {
        ch: u64,
        limit: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let ch = 0..CHANNELS;
    prop_oneof![
        4 => any::<u8>().prop_map(Op::Push),
        2 => (ch.clone(), -1..=1i32, 0..4u32, any::<bool>(), prop::bool::weighted(0.1)).prop_map(
            |(ch, priority, prefetch, no_ack, exclusive)| Op::Consume {
                ch, priority, prefetch, no_ack, exclusive
            }
        ),
        1 => any::<usize>().prop_map(Op::Cancel),
        4 => Just(Op::Dispatch),
        3 => (ch.clone(), any::<u16>(), prop::bool::weighted(0.2))
            .prop_map(|(ch, mask, stray)| Op::Ack { ch, mask, stray }),
        2 => (ch.clone(), any::<u16>(), any::<bool>())
            .prop_map(|(ch, mask, requeue)| Op::Reject { ch, mask, requeue }),
        1 => (ch.clone(), any::<bool>()).prop_map(|(ch, no_ack)| Op::Get { ch, no_ack }),
        1 => Just(Op::Purge),
        1 => ch.clone().prop_map(Op::CloseChannel),
        2 => (any::<usize>(), 1..4u32).prop_map(|(index, n)| Op::ReturnCredit { index, n }),
        1 => (ch, 0..4u32).prop_map(|(ch, limit)| Op::SetLimit { ch, limit }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    Unacked {
        ch: ChannelKey,
        holder: Option<ConsumerId>,
        credit: bool,
    },
    Gone,
}

struct MConsumer {
    id: ConsumerId,
    ch: ChannelKey,
    priority: i32,
    prefetch: u32,
    no_ack: bool,
    exclusive: bool,
    in_flight: u32,
}

struct Harness {
    q: QueueState,
    sac: bool,
    credits: Vec<Option<Arc<ChannelCredit>>>,
    msgs: BTreeMap<MsgId, State>,
    redelivered: BTreeSet<MsgId>,
    /// Live consumers in registration order.
    consumers: Vec<MConsumer>,
    next_consumer: u64,
}

fn message(len: u8) -> Arc<Message> {
    Arc::new(Message {
        exchange: ShortStr::from("x"),
        routing_key: ShortStr::from("k"),
        properties: BasicProperties::default(),
        raw_properties: Bytes::from_static(b"\x00\x00"),
        body: Bytes::from(vec![0u8; usize::from(len)]),
    })
}

impl Harness {
    fn new(sac: bool, limits: [Option<u32>; 3]) -> Self {
        let options = QueueOptions {
            single_active_consumer: sac,
        };
        Harness {
            q: QueueState::new(QueueName::from("q"), VhostName::from("/"), options),
            sac,
            credits: limits.iter().map(|l| l.map(ChannelCredit::new)).collect(),
            msgs: BTreeMap::new(),
            redelivered: BTreeSet::new(),
            consumers: Vec::new(),
            next_consumer: 0,
        }
    }

    fn ids_in(&self, want: impl Fn(&State) -> bool) -> Vec<MsgId> {
        self.msgs
            .iter()
            .filter(|(_, s)| want(s))
            .map(|(id, _)| *id)
            .collect()
    }

    fn unacked_on(&self, ch: ChannelKey) -> Vec<MsgId> {
        self.ids_in(|s| matches!(s, State::Unacked { ch: c, .. } if *c == ch))
    }

    fn credit_used(&self, ch: ChannelKey) -> u32 {
        let held = |s: &State| matches!(s, State::Unacked { ch: c, credit: true, .. } if *c == ch);
        self.msgs.values().filter(|s| held(s)).count() as u32
    }

    fn credit_of(&self, ch: ChannelKey) -> Option<&Arc<ChannelCredit>> {
        self.credits.get(ch.0 as usize).and_then(Option::as_ref)
    }

    fn channel_has_room(&self, c: &MConsumer) -> bool {
        match self.credit_of(c.ch) {
            Some(credit) if !c.no_ack => {
                credit.limit() == 0 || self.credit_used(c.ch) < credit.limit()
            }
            _ => true,
        }
    }

    fn eligible(&self, c: &MConsumer) -> bool {
        let own = c.prefetch == 0 || c.in_flight < c.prefetch;
        let active = !self.sac || self.consumers.first().is_some_and(|a| a.id == c.id);
        own && active && self.channel_has_room(c)
    }

    fn best_priority(&self) -> Option<i32> {
        self.consumers
            .iter()
            .filter(|c| self.eligible(c))
            .map(|c| c.priority)
            .max()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Push(len) => {
                let id = self.q.push(message(len));
                assert!(
                    self.msgs.insert(id, State::Ready).is_none(),
                    "ids are fresh"
                );
            }
            Op::Consume {
                ch,
                priority,
                prefetch,
                no_ack,
                exclusive,
            } => self.consume(ChannelKey(ch), priority, prefetch, no_ack, exclusive),
            Op::Cancel(i) if !self.consumers.is_empty() => {
                let c = self.consumers.remove(i % self.consumers.len());
                assert!(self.q.remove_consumer(c.id));
            }
            Op::Cancel(_) => assert!(!self.q.remove_consumer(ConsumerId(u64::MAX))),
            Op::Dispatch => self.dispatch(),
            Op::Ack { ch, mask, stray } => {
                let mut ids = pick(&self.unacked_on(ChannelKey(ch)), mask);
                if stray {
                    ids.extend(self.msgs.keys().next().copied());
                }
                self.q.ack(ChannelKey(ch), &ids);
                self.settle(ChannelKey(ch), &ids, false);
            }
            Op::Reject { ch, mask, requeue } => {
                let ids = pick(&self.unacked_on(ChannelKey(ch)), mask);
                self.q.reject(ChannelKey(ch), &ids, requeue);
                self.settle(ChannelKey(ch), &ids, requeue);
            }
            Op::Get { ch, no_ack } => self.get(ChannelKey(ch), no_ack),
            Op::Purge => {
                let ready = self.ids_in(|s| *s == State::Ready);
                assert_eq!(self.q.purge() as usize, ready.len());
                ready.iter().for_each(|id| self.forget(*id));
            }
            Op::CloseChannel(ch) => {
                let ch = ChannelKey(ch);
                self.consumers.retain(|c| c.ch != ch);
                self.q.channel_closed(ch);
                self.settle(ch, &self.unacked_on(ch), true);
            }
            Op::ReturnCredit { index, n } => self.return_credit(index, n),
            Op::SetLimit { ch, limit } => {
                if let Some(credit) = self.credit_of(ChannelKey(ch)) {
                    credit.set_limit(limit);
                }
            }
        }
        self.check();
    }

    fn consume(
        &mut self,
        ch: ChannelKey,
        priority: i32,
        prefetch: u32,
        no_ack: bool,
        exclusive: bool,
    ) {
        self.next_consumer += 1;
        let id = ConsumerId(self.next_consumer);
        let channel_credit = if no_ack {
            None
        } else {
            self.credit_of(ch).cloned()
        };
        let spec = ConsumerSpec {
            id,
            channel: ch,
            priority,
            prefetch,
            // The byte window has its own unit tests; here only the count window applies.
            window_bytes: 0,
            no_ack,
            exclusive,
            channel_credit,
        };
        let held = self.consumers.iter().any(|c| c.exclusive);
        let refused = held || (exclusive && (self.sac || !self.consumers.is_empty()));
        let result = self.q.add_consumer(spec);
        assert_eq!(result.is_err(), refused, "{result:?}");
        if !refused {
            let c = MConsumer {
                id,
                ch,
                priority,
                prefetch,
                no_ack,
                exclusive,
                in_flight: 0,
            };
            self.consumers.push(c);
        }
    }

    fn dispatch(&mut self) {
        let mut out = Vec::new();
        self.q.dispatch(&mut out);
        for d in &out {
            self.check_delivery(d);
        }
        let stuck = self.msgs.values().any(|s| *s == State::Ready);
        assert!(
            !stuck || self.best_priority().is_none(),
            "dispatch stopped with an eligible consumer"
        );
    }

    fn check_delivery(&mut self, d: &Delivery) {
        let head = self.ids_in(|s| *s == State::Ready).first().copied();
        assert_eq!(Some(d.msg_id), head, "deliveries take the head");
        assert_eq!(d.redelivered, self.redelivered.contains(&d.msg_id));
        let best = self.best_priority();
        let i = self
            .consumers
            .iter()
            .position(|c| c.id == d.consumer)
            .expect("a live consumer");
        let c = &self.consumers[i];
        assert!(self.eligible(c), "{:?} had no credit", c.id);
        assert_eq!(Some(c.priority), best, "highest eligible priority first");
        assert_eq!((d.channel, d.no_ack), (c.ch, c.no_ack));
        let credit = !c.no_ack && self.credit_of(c.ch).is_some();
        let state = if c.no_ack {
            State::Gone
        } else {
            State::Unacked {
                ch: c.ch,
                holder: Some(c.id),
                credit,
            }
        };
        self.consumers[i].in_flight += 1;
        self.set(d.msg_id, state);
    }

    fn get(&mut self, ch: ChannelKey, no_ack: bool) {
        let head = self.ids_in(|s| *s == State::Ready).first().copied();
        let got = self.q.get(ch, no_ack);
        assert_eq!(got.as_ref().map(|g| g.msg_id), head);
        let Some(got) = got else { return };
        assert_eq!(got.redelivered, self.redelivered.contains(&got.msg_id));
        let state = if no_ack {
            State::Gone
        } else {
            State::Unacked {
                ch,
                holder: None,
                credit: false,
            }
        };
        self.set(got.msg_id, state);
        assert_eq!(
            got.remaining as usize,
            self.ids_in(|s| *s == State::Ready).len()
        );
    }

    fn settle(&mut self, ch: ChannelKey, ids: &[MsgId], requeue: bool) {
        for id in ids {
            let Some(State::Unacked { ch: c, holder, .. }) = self.msgs.get(id).copied() else {
                continue;
            };
            if c != ch {
                continue;
            }
            if let Some(h) = self.consumers.iter_mut().find(|m| Some(m.id) == holder) {
                h.in_flight -= 1;
            }
            if requeue {
                self.redelivered.insert(*id);
                self.set(*id, State::Ready);
            } else {
                self.forget(*id);
            }
        }
    }

    fn return_credit(&mut self, index: usize, n: u32) {
        if self.consumers.is_empty() {
            return;
        }
        let i = index % self.consumers.len();
        let c = &mut self.consumers[i];
        if !c.no_ack {
            return;
        }
        // The server returns only what it was given.
        let n = n.min(c.in_flight);
        c.in_flight -= n;
        self.q.return_credit(c.id, n, 0);
    }

    fn set(&mut self, id: MsgId, state: State) {
        self.msgs.insert(id, state);
    }

    fn forget(&mut self, id: MsgId) {
        self.set(id, State::Gone);
        self.redelivered.remove(&id);
    }

    fn check(&self) {
        self.q.check_invariants();
        let ready: Vec<MsgId> = self.q.ready.iter().map(|m| m.id).collect();
        assert_eq!(ready, self.ids_in(|s| *s == State::Ready));
        let unacked: BTreeMap<MsgId, ChannelKey> =
            self.q.unacked.keys().map(|(ch, id)| (*id, *ch)).collect();
        let expected: BTreeMap<MsgId, ChannelKey> = self
            .msgs
            .iter()
            .filter_map(|(id, s)| match s {
                State::Unacked { ch, .. } => Some((*id, *ch)),
                _ => None,
            })
            .collect();
        assert_eq!(unacked, expected);
        assert_eq!(self.q.consumer_count() as usize, self.consumers.len());
        for c in &self.consumers {
            assert_eq!(self.q.in_flight(c.id), Some(c.in_flight), "{:?}", c.id);
        }
        for ch in 0..CHANNELS {
            if let Some(credit) = self.credit_of(ChannelKey(ch)) {
                assert_eq!(
                    credit.used(),
                    self.credit_used(ChannelKey(ch)),
                    "channel {ch}"
                );
            }
        }
        let active = if self.sac {
            self.consumers.first().map(|c| c.id)
        } else {
            None
        };
        assert_eq!(self.q.active_consumer(), active);
    }
}

/// The ids whose position bit is set in `mask`.
fn pick(ids: &[MsgId], mask: u16) -> Vec<MsgId> {
    ids.iter()
        .take(16)
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, id)| *id)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_the_model(
        sac in any::<bool>(),
        limits in prop::array::uniform3(prop::option::of(0..4u32)),
        ops in prop::collection::vec(op(), 1..250),
    ) {
        let mut h = Harness::new(sac, limits);
        for op in &ops {
            h.apply(op);
        }
        h.apply(&Op::Dispatch);
    }
}
