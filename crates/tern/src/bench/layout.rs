//! The queues (and fanout exchange) a bench run publishes to and consumes from: their names,
//! who uses which, and declaring them before the run and deleting them after.

use anyhow::{Context, Result};
use tern_amqp::{
    ExchangeDeclare, ExchangeDelete, FieldTable, Method, QueueBind, QueueDeclare, QueueDelete,
    ShortStr,
};

use crate::client::Client;

/// Where a producer publishes.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Through the default exchange, routing key = queue name.
    Queue(String),
    /// To a fanout exchange, empty routing key.
    Exchange(String),
}

impl Target {
    /// (exchange, routing key) of the basic.publish.
    pub fn address(&self) -> (&str, &str) {
        match self {
            Target::Queue(q) => ("", q),
            Target::Exchange(x) => (x, ""),
        }
    }
}

/// The queues (and exchange) a run uses.
#[derive(Debug)]
pub struct Layout {
    pub queues: Vec<String>,
    exchange: Option<String>,
}

impl Layout {
    /// One queue named `prefix`, or `prefix-0..prefix-(n-1)` for several; with `fanout > 0`,
    /// that many queues bound to the exchange `prefix-fanout`.
    pub fn new(prefix: &str, queues: usize, fanout: usize) -> Self {
        let n = if fanout > 0 { fanout } else { queues.max(1) };
        let queues = if n == 1 && fanout == 0 {
            vec![prefix.to_owned()]
        } else {
            (0..n).map(|i| format!("{prefix}-{i}")).collect()
        };
        let exchange = (fanout > 0).then(|| format!("{prefix}-fanout"));
        Layout { queues, exchange }
    }

    /// Producer `i` publishes to queue `i % n`, or to the exchange.
    pub fn target(&self, producer: usize) -> Target {
        match &self.exchange {
            Some(x) => Target::Exchange(x.clone()),
            None => Target::Queue(self.queues[producer % self.queues.len()].clone()),
        }
    }

    /// Consumer `i` reads queue `i % n`.
    pub fn queue_of_consumer(&self, consumer: usize) -> &str {
        &self.queues[consumer % self.queues.len()]
    }

    /// How many queues each published message reaches.
    pub fn copies(&self) -> u64 {
        if self.exchange.is_some() {
            self.queues.len() as u64
        } else {
            1
        }
    }

    /// Declare everything afresh: queues left by an earlier run are deleted first, so no old
    /// messages skew this one (queue.delete of a missing queue succeeds, as in RabbitMQ 3.x).
    pub async fn declare(&self, c: &mut Client, durable: bool) -> Result<()> {
        c.open_channel(1).await?;
        if let Some(x) = &self.exchange {
            let declare = ExchangeDeclare {
                exchange: x.as_str().into(),
                kind: "fanout".into(),
                durable,
                ..Default::default()
            };
            c.call(1, Method::ExchangeDeclare(declare)).await?;
        }
        for q in &self.queues {
            c.call(1, delete_queue(q)).await?;
            let declare = QueueDeclare {
                queue: q.as_str().into(),
                durable,
                ..Default::default()
            };
            c.call(1, Method::QueueDeclare(declare))
                .await
                .with_context(|| format!("declaring queue {q}"))?;
            if let Some(x) = &self.exchange {
                c.call(1, bind(q, x)).await?;
            }
        }
        Ok(())
    }

    pub async fn delete(&self, c: &mut Client) -> Result<()> {
        c.open_channel(1).await?;
        for q in &self.queues {
            c.call(1, delete_queue(q)).await?;
        }
        if let Some(x) = &self.exchange {
            let delete = ExchangeDelete {
                exchange: x.as_str().into(),
                ..Default::default()
            };
            c.call(1, Method::ExchangeDelete(delete)).await?;
        }
        Ok(())
    }
}

fn delete_queue(q: &str) -> Method {
    Method::QueueDelete(QueueDelete {
        queue: q.into(),
        ..Default::default()
    })
}

fn bind(queue: &str, exchange: &str) -> Method {
    Method::QueueBind(QueueBind {
        queue: queue.into(),
        exchange: exchange.into(),
        routing_key: ShortStr::default(),
        nowait: false,
        arguments: FieldTable::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_queue_keeps_the_plain_name() {
        let l = Layout::new("b", 1, 0);
        assert_eq!(l.queues, ["b"]);
        assert_eq!(l.target(3), Target::Queue("b".into()));
        assert_eq!(l.copies(), 1);
    }

    #[test]
    fn several_queues_are_shared_round_robin() {
        let l = Layout::new("b", 2, 0);
        assert_eq!(l.queues, ["b-0", "b-1"]);
        assert_eq!(l.target(3), Target::Queue("b-1".into()));
        assert_eq!(l.queue_of_consumer(4), "b-0");
    }

    #[test]
    fn fanout_names_one_queue_per_binding() {
        let l = Layout::new("b", 1, 3);
        assert_eq!(l.queues, ["b-0", "b-1", "b-2"]);
        assert_eq!(l.copies(), 3);
        assert_eq!(l.target(5), Target::Exchange("b-fanout".into()));
        assert_eq!(l.target(5).address(), ("b-fanout", ""));
    }
}
