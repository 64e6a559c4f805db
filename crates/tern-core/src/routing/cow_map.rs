//! A hash map whose clones share storage: the routing snapshot's tables.
//!
//! A routing snapshot is immutable and publishers hold it while the metadata moves on, so every
//! change to a table the snapshot shares must leave the shared copy alone. Copying a whole
//! table per change made N bindings cost O(N²) (10,000 bindings on one exchange took 97 s). A
//! `CowMap` splits its entries over `Arc`ed shards: a clone copies the shard pointers, and a
//! write copies only the shard it touches, and only if a snapshot still shares it. The shard
//! count grows with the map (about √(2·len) shards of about √(2·len) entries), so one write
//! costs O(√len) and a read one extra hash.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// Shards stop doubling here: past that, a write copies len / 4096 entries.
const MAX_SHARDS: usize = 4096;

#[derive(Clone, Debug)]
pub(crate) struct CowMap<K, V> {
    /// A power-of-two count of shards; an entry lives in shard `hash(key) & (len - 1)`.
    shards: Vec<Arc<HashMap<K, V>>>,
    len: usize,
    /// Picks the shard (the shards' own maps hash independently).
    pick: RandomState,
}

impl<K, V> Default for CowMap<K, V> {
    fn default() -> Self {
        CowMap {
            shards: vec![Arc::new(HashMap::new())],
            len: 0,
            pick: RandomState::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get(key)
    }

    pub(crate) fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get_key_value(key)
    }

    /// The value, for writing: its shard is copied first if a clone still shares it.
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard_of(key);
        if !self.shards[shard].contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.shards[shard]).get_mut(key)
    }

    /// The value under `key`, inserting `make()` first if there is none.
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        if !self.shards[self.shard_of(&key)].contains_key(&key) {
            self.len += 1;
            self.grow_if_crowded();
        }
        let shard = self.shard_of(&key);
        Arc::make_mut(&mut self.shards[shard])
            .entry(key)
            .or_insert_with(make)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = self.shard_of(&key);
        let previous = Arc::make_mut(&mut self.shards[shard]).insert(key, value);
        if previous.is_none() {
            self.len += 1;
            self.grow_if_crowded();
        }
        previous
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard_of(key);
        if !self.shards[shard].contains_key(key) {
            return None;
        }
        let removed = Arc::make_mut(&mut self.shards[shard]).remove(key);
        self.len -= usize::from(removed.is_some());
        removed
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }

    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        (self.pick.hash_one(key) as usize) & (self.shards.len() - 1)
    }

    /// Double the shards once they hold twice as many entries each as there are shards.
    fn grow_if_crowded(&mut self) {
        let shards = self.shards.len();
        if self.len <= 2 * shards * shards || shards >= MAX_SHARDS {
            return;
        }
        let mut grown: Vec<HashMap<K, V>> = (0..shards * 2).map(|_| HashMap::new()).collect();
        let mask = grown.len() - 1;
        for (k, v) in self.iter() {
            grown[(self.pick.hash_one(k) as usize) & mask].insert(k.clone(), v.clone());
        }
        self.shards = grown.into_iter().map(Arc::new).collect();
    }

    #[cfg(test)]
    fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_write_copies_only_the_shard_it_touches() {
        let mut map: CowMap<u32, u32> = CowMap::default();
        for i in 0..10_000 {
            map.insert(i, i);
        }
        assert_eq!(
            map.shard_count(),
            128,
            "√(10,000 / 2) rounded to a power of two"
        );
        let snapshot = map.clone();
        *map.get_mut(&7).unwrap() = 70;
        let copied = (0..map.shards.len())
            .filter(|&i| !Arc::ptr_eq(&map.shards[i], &snapshot.shards[i]))
            .count();
        assert_eq!(copied, 1);
        assert_eq!((map.get(&7), snapshot.get(&7)), (Some(&70), Some(&7)));
    }

    #[test]
    fn a_missing_key_copies_nothing() {
        let mut map: CowMap<u32, u32> = CowMap::default();
        map.insert(1, 1);
        let snapshot = map.clone();
        assert_eq!(map.get_mut(&2), None);
        assert_eq!(map.remove(&2), None);
        assert!(Arc::ptr_eq(&map.shards[0], &snapshot.shards[0]));
    }

    #[test]
    fn string_keys_are_found_by_borrowed_form() {
        let mut map: CowMap<String, u8> = CowMap::default();
        map.insert("a.b".to_string(), 1);
        assert_eq!(map.get("a.b"), Some(&1));
        assert_eq!(
            map.get_key_value("a.b").map(|(k, _)| k.as_str()),
            Some("a.b")
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u8),
        Upsert(u16, u8),
        Remove(u16),
        Snapshot,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..300u16, any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0..300u16, any::<u8>()).prop_map(|(k, v)| Op::Upsert(k, v)),
            (0..300u16).prop_map(Op::Remove),
            Just(Op::Snapshot),
        ]
    }

    proptest! {
        /// Against std's HashMap; every snapshot taken on the way must stay as it was.
        #[test]
        fn behaves_like_a_hash_map_and_snapshots_never_change(ops in prop::collection::vec(op(), 1..600)) {
            let mut map: CowMap<u16, u8> = CowMap::default();
            let mut model: HashMap<u16, u8> = HashMap::new();
            let mut snapshots = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(map.insert(k, v), model.insert(k, v)),
                    Op::Upsert(k, v) => {
                        *map.get_or_insert_with(k, || 0) ^= v;
                        *model.entry(k).or_insert(0) ^= v;
                    }
                    Op::Remove(k) => prop_assert_eq!(map.remove(&k), model.remove(&k)),
                    Op::Snapshot => snapshots.push((map.clone(), model.clone())),
                }
                prop_assert_eq!(map.len(), model.len());
            }
            snapshots.push((map, model));
            for (map, model) in snapshots {
                let got: HashMap<u16, u8> = map.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(&got, &model);
                prop_assert_eq!(map.len(), model.len());
                for k in 0..300u16 {
                    prop_assert_eq!(map.get(&k), model.get(&k));
                }
            }
        }
    }
}
