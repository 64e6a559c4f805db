//! The destinations one match yields, kept sorted and counted so bindings come and go one at a
//! time.

use super::Destination;
use crate::names::{ExchangeName, QueueName};

/// Queues and exchanges, each sorted and listed once, with how many bindings lead to each: a
/// destination goes only when its last binding does (two bindings may differ only in their
/// arguments).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Targets {
    pub(crate) queues: Vec<QueueName>,
    pub(crate) exchanges: Vec<ExchangeName>,
    queue_refs: Vec<u32>,
    exchange_refs: Vec<u32>,
}

impl Targets {
    pub(crate) fn of(destination: &Destination) -> Self {
        let mut t = Targets::default();
        t.add(destination);
        t
    }

    /// All at once: O(n log n) where adding one by one would be O(n²).
    pub(crate) fn collect<'a>(destinations: impl IntoIterator<Item = &'a Destination>) -> Self {
        let mut queues = Vec::new();
        let mut exchanges = Vec::new();
        for d in destinations {
            match d {
                Destination::Queue(q) => queues.push(q.clone()),
                Destination::Exchange(x) => exchanges.push(x.clone()),
            }
        }
        let (queues, queue_refs) = counted(queues);
        let (exchanges, exchange_refs) = counted(exchanges);
        Targets {
            queues,
            exchanges,
            queue_refs,
            exchange_refs,
        }
    }

    pub(crate) fn add(&mut self, destination: &Destination) {
        match destination {
            Destination::Queue(q) => add_counted(&mut self.queues, &mut self.queue_refs, q),
            Destination::Exchange(x) => {
                add_counted(&mut self.exchanges, &mut self.exchange_refs, x)
            }
        }
    }

    /// Drop one binding's worth; false if the destination was not there.
    pub(crate) fn remove(&mut self, destination: &Destination) -> bool {
        match destination {
            Destination::Queue(q) => remove_counted(&mut self.queues, &mut self.queue_refs, q),
            Destination::Exchange(x) => {
                remove_counted(&mut self.exchanges, &mut self.exchange_refs, x)
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.exchanges.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn check(&self) {
        assert!(self.queues.windows(2).all(|w| w[0] < w[1]), "{self:?}");
        assert!(self.exchanges.windows(2).all(|w| w[0] < w[1]), "{self:?}");
        assert_eq!(self.queues.len(), self.queue_refs.len());
        assert_eq!(self.exchanges.len(), self.exchange_refs.len());
        assert!(self
            .queue_refs
            .iter()
            .chain(&self.exchange_refs)
            .all(|&n| n > 0));
    }
}

fn counted<T: Ord>(mut items: Vec<T>) -> (Vec<T>, Vec<u32>) {
    items.sort_unstable();
    let mut refs: Vec<u32> = Vec::new();
    let mut unique: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        match unique.last() {
            Some(last) if *last == item => {
                if let Some(n) = refs.last_mut() {
                    *n += 1;
                }
            }
            _ => {
                unique.push(item);
                refs.push(1);
            }
        }
    }
    unique.shrink_to_fit();
    (unique, refs)
}

fn add_counted<T: Ord + Clone>(items: &mut Vec<T>, refs: &mut Vec<u32>, item: &T) {
    match items.binary_search(item) {
        Ok(i) => refs[i] += 1,
        Err(i) => {
            items.insert(i, item.clone());
            refs.insert(i, 1);
        }
    }
}

fn remove_counted<T: Ord>(items: &mut Vec<T>, refs: &mut Vec<u32>, item: &T) -> bool {
    let Ok(i) = items.binary_search(item) else {
        return false;
    };
    refs[i] -= 1;
    if refs[i] == 0 {
        items.remove(i);
        refs.remove(i);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Destination {
        Destination::Queue(QueueName::from(name))
    }

    #[test]
    fn a_destination_stays_until_its_last_binding_goes() {
        let mut t = Targets::default();
        t.add(&q("b"));
        t.add(&q("a"));
        t.add(&q("b"));
        assert_eq!(t.queues, [QueueName::from("a"), QueueName::from("b")]);
        assert!(t.remove(&q("b")));
        assert_eq!(t.queues.len(), 2);
        assert!(t.remove(&q("b")));
        assert_eq!(t.queues, [QueueName::from("a")]);
        assert!(!t.remove(&q("b")));
        t.check();
    }

    #[test]
    fn collecting_equals_adding_one_by_one() {
        let all = [
            q("c"),
            q("a"),
            q("c"),
            Destination::Exchange("x".into()),
            q("b"),
        ];
        let mut one_by_one = Targets::default();
        all.iter().for_each(|d| one_by_one.add(d));
        assert_eq!(Targets::collect(&all), one_by_one);
        one_by_one.check();
    }
}
