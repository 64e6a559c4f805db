//! Publisher confirms and tx.commit-ok that wait for queues.
//!
//! A batch of publishes handed to queues is answered (basic.ack / basic.nack up to a sequence
//! number, tx.commit-ok) once every queue that must write it has it on disk: a durable queue
//! that got persistent messages answers after its fsync; others have it at once. Answers leave
//! in the order of their batches, so `multiple` acks never cover a message still waiting.

use std::collections::VecDeque;

use tern_amqp::{BasicAck, BasicNack, Method};

/// What to tell the client once a batch is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// basic.ack (or, if a queue could not take the batch, basic.nack) through `seq`.
    Ack {
        channel: u16,
        seq: u64,
    },
    CommitOk {
        channel: u16,
    },
}

impl Answer {
    pub fn method(self, ok: bool) -> (u16, Method) {
        match self {
            Answer::Ack { channel, seq } if ok => (
                channel,
                Method::BasicAck(BasicAck {
                    delivery_tag: seq,
                    multiple: true,
                }),
            ),
            Answer::Ack { channel, seq } => (
                channel,
                Method::BasicNack(BasicNack {
                    delivery_tag: seq,
                    multiple: true,
                    requeue: false,
                }),
            ),
            Answer::CommitOk { channel } => (channel, Method::TxCommitOk(Default::default())),
        }
    }
}

struct Waiting {
    token: u64,
    /// Queues that have not answered yet.
    queues: u32,
    ok: bool,
    answers: Vec<Answer>,
}

#[derive(Default)]
pub struct ConfirmBacklog {
    next_token: u64,
    waiting: VecDeque<Waiting>,
}

impl ConfirmBacklog {
    /// A batch whose `answers` wait for `queues` queues; the token those queues answer with,
    /// and whatever can be sent now (with whether it is an ack).
    pub fn register(&mut self, queues: u32, answers: Vec<Answer>) -> (u64, Vec<(Answer, bool)>) {
        self.next_token += 1;
        let token = self.next_token;
        self.waiting.push_back(Waiting {
            token,
            queues,
            ok: true,
            answers,
        });
        (token, self.release())
    }

    /// A queue answered for `token`; what can be sent now.
    pub fn confirmed(&mut self, token: u64, ok: bool) -> Vec<(Answer, bool)> {
        if let Some(w) = self.waiting.iter_mut().find(|w| w.token == token) {
            w.queues = w.queues.saturating_sub(1);
            w.ok &= ok;
        }
        self.release()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn release(&mut self) -> Vec<(Answer, bool)> {
        let mut out = Vec::new();
        while self.waiting.front().is_some_and(|w| w.queues == 0) {
            if let Some(w) = self.waiting.pop_front() {
                out.extend(w.answers.into_iter().map(|a| (a, w.ok)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64) -> Answer {
        Answer::Ack { channel: 1, seq }
    }

    #[test]
    fn answers_leave_in_batch_order_once_their_queues_answered() {
        let mut b = ConfirmBacklog::default();
        let (first, now) = b.register(2, vec![ack(3)]);
        assert!(now.is_empty());
        let (second, now) = b.register(1, vec![ack(5)]);
        assert!(now.is_empty());
        assert!(
            b.confirmed(second, true).is_empty(),
            "waits behind the first batch"
        );
        assert!(b.confirmed(first, true).is_empty(), "one of two queues");
        assert_eq!(b.confirmed(first, true), [(ack(3), true), (ack(5), true)]);
        let (_, now) = b.register(0, vec![ack(6)]);
        assert_eq!(now, [(ack(6), true)], "nothing to wait for");
        assert!(b.is_empty());
    }

    #[test]
    fn a_queue_that_could_not_take_a_batch_turns_its_ack_into_a_nack() {
        let mut b = ConfirmBacklog::default();
        let (t, _) = b.register(2, vec![ack(1)]);
        b.confirmed(t, false);
        let out = b.confirmed(t, true);
        assert_eq!(out, [(ack(1), false)]);
        assert!(matches!(out[0].0.method(false).1, Method::BasicNack(_)));
    }
}
