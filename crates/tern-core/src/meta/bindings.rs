//! One exchange's bindings as source: in the order they were made, and indexed so that adding,
//! finding and removing one, or all of those to one destination, never scans the others.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{Bytes, BytesMut};
use tern_amqp::ShortStr;

use super::Binding;
use crate::routing::Destination;

/// What makes two bindings from one source the same binding: destination, key and arguments
/// (stored sorted, so their encoding is canonical).
type Identity = (Destination, ShortStr, Bytes);

fn identity(b: &Binding) -> Identity {
    let mut args = BytesMut::new();
    b.arguments.encode(&mut args);
    (b.destination.clone(), b.routing_key.clone(), args.freeze())
}

#[derive(Debug, Default)]
pub(crate) struct BindingSet {
    by_seq: BTreeMap<u64, Binding>,
    by_identity: HashMap<Identity, u64>,
    by_destination: HashMap<Destination, BTreeSet<u64>>,
    next_seq: u64,
}

impl BindingSet {
    /// False if the binding was already there.
    pub(crate) fn insert(&mut self, binding: Binding) -> bool {
        let id = identity(&binding);
        if self.by_identity.contains_key(&id) {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_identity.insert(id, seq);
        self.by_destination
            .entry(binding.destination.clone())
            .or_default()
            .insert(seq);
        self.by_seq.insert(seq, binding);
        true
    }

    /// The binding removed, if it was there.
    pub(crate) fn remove(&mut self, binding: &Binding) -> Option<Binding> {
        let seq = self.by_identity.remove(&identity(binding))?;
        self.forget_destination(&binding.destination, seq);
        self.by_seq.remove(&seq)
    }

    /// Remove every binding to `destination`, returned in the order they were made.
    pub(crate) fn remove_to(&mut self, destination: &Destination) -> Vec<Binding> {
        let seqs = self.by_destination.remove(destination).unwrap_or_default();
        let removed: Vec<Binding> = seqs.iter().filter_map(|s| self.by_seq.remove(s)).collect();
        for b in &removed {
            self.by_identity.remove(&identity(b));
        }
        removed
    }

    pub(crate) fn contains(&self, binding: &Binding) -> bool {
        self.by_identity.contains_key(&identity(binding))
    }

    pub(crate) fn links_to(&self, destination: &Destination) -> bool {
        self.by_destination.contains_key(destination)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// In the order they were made.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.by_seq.values()
    }

    fn forget_destination(&mut self, destination: &Destination, seq: u64) {
        if let Some(seqs) = self.by_destination.get_mut(destination) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.by_destination.remove(destination);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn check(&self) {
        assert_eq!(self.by_identity.len(), self.by_seq.len());
        let indexed: usize = self.by_destination.values().map(BTreeSet::len).sum();
        assert_eq!(indexed, self.by_seq.len());
        for (seq, b) in &self.by_seq {
            assert_eq!(self.by_identity.get(&identity(b)), Some(seq));
            assert!(self.by_destination[&b.destination].contains(seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{ExchangeName, QueueName};
    use tern_amqp::{FieldTable, FieldValue};

    fn b(queue: &str, key: &str, arg: Option<i32>) -> Binding {
        let mut arguments = FieldTable::new();
        if let Some(v) = arg {
            arguments.insert("x", FieldValue::I32(v));
        }
        Binding {
            source: ExchangeName::from("x"),
            destination: Destination::Queue(QueueName::from(queue)),
            routing_key: ShortStr::from(key),
            arguments,
        }
    }

    #[test]
    fn bindings_differing_in_key_or_arguments_are_different_bindings() {
        let mut set = BindingSet::default();
        assert!(set.insert(b("q", "k", None)));
        assert!(!set.insert(b("q", "k", None)));
        assert!(set.insert(b("q", "k", Some(1))));
        assert!(set.insert(b("q", "j", None)));
        assert!(set.insert(b("p", "k", None)));
        assert_eq!(set.iter().count(), 4);
        set.check();
        assert_eq!(set.remove(&b("q", "k", Some(2))), None);
        assert_eq!(
            set.remove(&b("q", "k", Some(1))),
            Some(b("q", "k", Some(1)))
        );
        assert!(set.links_to(&b("q", "k", None).destination));
        set.check();
    }

    #[test]
    fn removing_a_destination_takes_all_its_bindings_in_order() {
        let mut set = BindingSet::default();
        for key in ["c", "a", "b"] {
            set.insert(b("q", key, None));
        }
        set.insert(b("p", "a", None));
        let gone = set.remove_to(&b("q", "", None).destination);
        let keys: Vec<&str> = gone.iter().map(|b| b.routing_key.as_str()).collect();
        assert_eq!(keys, ["c", "a", "b"]);
        assert!(!set.links_to(&b("q", "", None).destination));
        assert_eq!(set.iter().count(), 1);
        set.check();
        // Removed bindings can be made again.
        assert!(set.insert(b("q", "a", None)));
    }
}
