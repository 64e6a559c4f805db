//! Topic matching: a trie over binding patterns, walked once per routing key.
//!
//! Words are separated by `.`; in a pattern `*` matches exactly one word and `#` zero or more.
//! As in RabbitMQ (`rabbit_exchange_type_topic:split_topic_key`), the empty key has zero words,
//! while any other key has one more word than it has dots (so `"a."` is `["a", ""]`).
//!
//! The trie is persistent: nodes are `Arc`ed, and adding or removing a pattern copies only the
//! nodes on its path (and of each, only the child-map shard it touches), so a routing snapshot
//! that shares the old trie keeps it unchanged and a change costs O(pattern length), not
//! O(patterns).

use std::sync::Arc;

use tern_amqp::ShortStr;

use super::cow_map::CowMap;
use super::{Destination, Targets};

#[derive(Clone, Debug, Default)]
struct Node {
    /// Literal words.
    words: CowMap<ShortStr, Arc<Node>>,
    star: Option<Arc<Node>>,
    hash: Option<Arc<Node>>,
    /// The destinations of the patterns that end here.
    targets: Targets,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.targets.is_empty()
            && self.words.len() == 0
            && self.star.is_none()
            && self.hash.is_none()
    }

    fn child(&self, word: &str) -> Option<&Arc<Node>> {
        match word {
            "*" => self.star.as_ref(),
            "#" => self.hash.as_ref(),
            _ => self.words.get(word.as_bytes()),
        }
    }

    fn child_mut(&mut self, word: &str) -> &mut Arc<Node> {
        match word {
            "*" => self.star.get_or_insert_with(Arc::default),
            "#" => self.hash.get_or_insert_with(Arc::default),
            _ => self
                .words
                .get_or_insert_with(ShortStr::from(word), Arc::default),
        }
    }

    fn remove_child(&mut self, word: &str) {
        match word {
            "*" => self.star = None,
            "#" => self.hash = None,
            _ => {
                self.words.remove(word.as_bytes());
            }
        }
    }
}

/// Every pattern of one topic exchange, sharing prefixes.
#[derive(Clone, Debug, Default)]
pub(crate) struct TopicTrie {
    root: Arc<Node>,
}

/// The words of a key or pattern, RabbitMQ style: `""` has none.
pub(crate) fn words(key: &str) -> impl Iterator<Item = &str> {
    let parts = if key.is_empty() {
        None
    } else {
        Some(key.split('.'))
    };
    parts.into_iter().flatten()
}

/// The words of a pattern as the trie stores it: consecutive `#` words collapse into one, since
/// they match the same keys and a run of them would make matching exponential.
fn pattern_words(pattern: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for word in words(pattern) {
        if !(word == "#" && out.last() == Some(&"#")) {
            out.push(word);
        }
    }
    out
}

/// Splits off the first word: `(word, rest)`, `rest` None when it was the last one.
fn first_word(key: &str) -> (&str, Option<&str>) {
    match key.split_once('.') {
        Some((word, rest)) => (word, Some(rest)),
        None => (key, None),
    }
}

impl TopicTrie {
    /// One binding of `pattern` to `destination`.
    pub(crate) fn add(&mut self, pattern: &str, destination: &Destination) {
        let mut node = Arc::make_mut(&mut self.root);
        for word in pattern_words(pattern) {
            node = Arc::make_mut(node.child_mut(word));
        }
        node.targets.add(destination);
    }

    /// Undo one `add`; false if there was no such binding. Nodes left empty go.
    pub(crate) fn remove(&mut self, pattern: &str, destination: &Destination) -> bool {
        let words = pattern_words(pattern);
        if !self.contains(&words, destination) {
            return false;
        }
        remove_at(Arc::make_mut(&mut self.root), &words, destination);
        true
    }

    fn contains(&self, words: &[&str], destination: &Destination) -> bool {
        let mut node = &self.root;
        for word in words {
            match node.child(word) {
                Some(child) => node = child,
                None => return false,
            }
        }
        match destination {
            Destination::Queue(q) => node.targets.queues.binary_search(q).is_ok(),
            Destination::Exchange(x) => node.targets.exchanges.binary_search(x).is_ok(),
        }
    }

    /// Calls `visit` for every pattern matching `key` (a pattern matching in several ways may be
    /// visited more than once).
    pub(crate) fn for_each_match<'a>(&'a self, key: &str, visit: &mut impl FnMut(&'a Targets)) {
        let rest = if key.is_empty() { None } else { Some(key) };
        walk(&self.root, rest, visit);
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        fn count(n: &Node) -> usize {
            1 + n.words.values().map(|c| count(c)).sum::<usize>()
                + n.star.as_deref().map_or(0, count)
                + n.hash.as_deref().map_or(0, count)
        }
        count(&self.root)
    }

    /// Every (pattern, targets) in the trie, sorted: what a trie built afresh must equal.
    #[cfg(test)]
    pub(crate) fn canonical(&self) -> Vec<(String, Targets)> {
        fn visit(n: &Node, path: &mut Vec<String>, out: &mut Vec<(String, Targets)>) {
            n.targets.check();
            if !n.targets.is_empty() {
                out.push((path.join("."), n.targets.clone()));
            }
            let children = n.words.iter().map(|(w, c)| (w.to_string(), c));
            let special = [("*", &n.star), ("#", &n.hash)];
            let special = special
                .into_iter()
                .filter_map(|(w, c)| Some((w.to_string(), c.as_ref()?)));
            for (word, child) in children.chain(special) {
                assert!(!child.is_empty(), "an empty node was left behind");
                path.push(word);
                visit(child, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        visit(&self.root, &mut Vec::new(), &mut out);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Remove one binding below `node`, which is known to hold it; prune children left empty.
fn remove_at(node: &mut Node, words: &[&str], destination: &Destination) {
    let Some((word, rest)) = words.split_first() else {
        node.targets.remove(destination);
        return;
    };
    let child = Arc::make_mut(node.child_mut(word));
    remove_at(child, rest, destination);
    if child.is_empty() {
        node.remove_child(word);
    }
}

/// `rest` is what is left of the key: None when no words remain.
fn walk<'a>(n: &'a Node, rest: Option<&str>, visit: &mut impl FnMut(&'a Targets)) {
    if let Some(hash) = &n.hash {
        // `#` swallows zero words, then one, then two...
        let mut remaining = rest;
        loop {
            walk(hash, remaining, visit);
            match remaining {
                Some(s) => remaining = first_word(s).1,
                None => break,
            }
        }
    }
    match rest {
        None => {
            if !n.targets.is_empty() {
                visit(&n.targets);
            }
        }
        Some(s) => {
            let (word, tail) = first_word(s);
            if let Some(child) = n.words.get(word.as_bytes()) {
                walk(child, tail, visit);
            }
            if let Some(star) = &n.star {
                walk(star, tail, visit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::QueueName;
    use proptest::prelude::*;

    /// The obvious recursive matcher over word lists, as the model for the trie.
    fn reference_match(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|i| reference_match(rest, &key[i..])),
            Some((&"*", rest)) => !key.is_empty() && reference_match(rest, &key[1..]),
            Some((word, rest)) => key.first() == Some(word) && reference_match(rest, &key[1..]),
        }
    }

    fn trie_with(patterns: &[&str]) -> TopicTrie {
        let mut trie = TopicTrie::default();
        for p in patterns {
            trie.add(p, &Destination::Queue(QueueName::from(*p)));
        }
        trie
    }

    fn matches(trie: &TopicTrie, key: &str) -> Vec<String> {
        let mut found = Vec::new();
        trie.for_each_match(key, &mut |t| {
            found.extend(t.queues.iter().map(|q| q.to_string()))
        });
        found.sort();
        found.dedup();
        found
    }

    /// (pattern, key, matches), following RabbitMQ's topic exchange test suite.
    const CASES: &[(&str, &str, bool)] = &[
        ("a.b.c", "a.b.c", true),
        ("a.b.c", "a.b", false),
        ("a.b.c", "a.b.c.d", false),
        ("a.*.c", "a.b.c", true),
        ("a.*.c", "a.c", false),
        ("a.*.c", "a.b.b.c", false),
        ("*", "a", true),
        ("*", "", false),
        ("*", "a.b", false),
        ("*.*", "a.b", true),
        ("*.*", "a", false),
        ("#", "", true),
        ("#", "a", true),
        ("#", "a.b.c", true),
        ("#.a", "a", true),
        ("#.a", "b.a", true),
        ("#.a", "a.b", false),
        ("a.#", "a", true),
        ("a.#", "a.b.c", true),
        ("a.#", "b.a", false),
        ("a.#.b", "a.b", true),
        ("a.#.b", "a.x.y.b", true),
        ("a.#.b", "a.x.y", false),
        ("a.*.#", "a", false),
        ("a.*.#", "a.b", true),
        ("a.*.#", "a.b.c.d", true),
        ("#.*", "", false),
        ("#.*", "a", true),
        ("#.*", "a.b", true),
        ("*.#", "a", true),
        ("#.#", "", true),
        ("#.#", "a.b", true),
        ("#.b.#", "b", true),
        ("#.b.#", "a.b.c", true),
        ("#.b.#", "a.c", false),
        ("", "", true),
        ("", "a", false),
        ("a", "", false),
        ("a.", "a.", true),
        ("a.", "a", false),
        ("a.*", "a.", true),
        (".a", ".a", true),
        ("*.a", ".a", true),
        ("a..b", "a..b", true),
        ("a.*.b", "a..b", true),
        ("a*", "ab", false),
        ("a*", "a*", true),
        ("a.b", "A.B", false),
        ("#.#.#.a", "a", true),
        ("*.#.*", "a", false),
        ("*.#.*", "a.b", true),
        ("*.#.*", "a.b.c", true),
    ];

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        for &(pattern, key, expected) in CASES {
            let trie = trie_with(&[pattern]);
            let got = !matches(&trie, key).is_empty();
            assert_eq!(got, expected, "pattern {pattern:?} key {key:?}");
            let p: Vec<&str> = words(pattern).collect();
            let k: Vec<&str> = words(key).collect();
            assert_eq!(
                reference_match(&p, &k),
                expected,
                "reference: {pattern:?} {key:?}"
            );
        }
    }

    #[test]
    fn one_trie_holds_every_pattern_at_once() {
        let patterns: Vec<&str> = CASES.iter().map(|c| c.0).collect();
        let trie = trie_with(&patterns);
        for &(_, key, _) in CASES {
            let mut expected: Vec<String> = CASES
                .iter()
                .filter(|(p, _, _)| {
                    let p: Vec<&str> = words(p).collect();
                    reference_match(&p, &words(key).collect::<Vec<_>>())
                })
                .map(|c| c.0.to_string())
                .collect();
            expected.sort();
            expected.dedup();
            assert_eq!(matches(&trie, key), expected, "key {key:?}");
        }
    }

    #[test]
    fn shared_prefixes_share_nodes() {
        let trie = trie_with(&["a.b.c", "a.b.d", "a.b"]);
        // root, a, b, c, d
        assert_eq!(trie.node_count(), 5);
    }

    #[test]
    fn runs_of_hash_words_collapse() {
        let trie = trie_with(&["#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.a"]);
        assert_eq!(trie.node_count(), 3);
        let key = "x.".repeat(100) + "a";
        assert_eq!(matches(&trie, &key).len(), 1);
    }

    #[test]
    fn removing_a_pattern_prunes_its_path_and_leaves_a_snapshot_alone() {
        let mut trie = trie_with(&["a.b.c", "a.#"]);
        let snapshot = trie.clone();
        let dest = Destination::Queue(QueueName::from("a.b.c"));
        assert!(trie.remove("a.b.c", &dest));
        assert!(!trie.remove("a.b.c", &dest), "only once");
        assert_eq!(trie.node_count(), 3, "root, a, #");
        assert_eq!(matches(&trie, "a.b.c"), ["a.#"]);
        assert_eq!(matches(&snapshot, "a.b.c"), ["a.#", "a.b.c"]);
        assert!(trie.remove("a.#", &Destination::Queue(QueueName::from("a.#"))));
        assert_eq!(trie.node_count(), 1);
        trie.canonical();
    }

    #[test]
    fn a_pattern_bound_twice_matches_until_both_bindings_go() {
        let mut trie = TopicTrie::default();
        let dest = Destination::Queue(QueueName::from("q"));
        trie.add("a.*", &dest);
        trie.add("a.*", &dest);
        assert!(trie.remove("a.*", &dest));
        assert_eq!(matches(&trie, "a.x"), ["q"]);
        assert!(trie.remove("a.*", &dest));
        assert!(matches(&trie, "a.x").is_empty());
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new())
        ]
    }

    fn pattern_word() -> impl Strategy<Value = String> {
        prop_oneof![word(), Just("*".to_string()), Just("#".to_string())]
    }

    proptest! {
        #[test]
        fn trie_agrees_with_reference_matcher(
            patterns in prop::collection::vec(prop::collection::vec(pattern_word(), 0..5), 1..6),
            key in prop::collection::vec(word(), 0..6),
        ) {
            let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
            let key = key.join(".");
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let trie = trie_with(&refs);
            let key_words: Vec<&str> = words(&key).collect();
            let mut expected: Vec<String> = patterns
                .iter()
                .filter(|p| reference_match(&words(p).collect::<Vec<_>>(), &key_words))
                .cloned()
                .collect();
            expected.sort();
            expected.dedup();
            prop_assert_eq!(matches(&trie, &key), expected);
        }
    }
}
