//! Topic matching: a trie over binding patterns, walked once per routing key.
//!
//! Words are separated by `.`; in a pattern `*` matches exactly one word and `#` zero or more.
//! As in RabbitMQ (`rabbit_exchange_type_topic:split_topic_key`), the empty key has zero words,
//! while any other key has one more word than it has dots (so `"a."` is `["a", ""]`).

use std::collections::HashMap;

use super::Targets;

#[derive(Debug, Default)]
struct Node {
    /// Literal words.
    words: HashMap<Box<str>, usize>,
    star: Option<usize>,
    hash: Option<usize>,
    /// Index into `TopicTrie::targets` for patterns that end here.
    targets: Option<usize>,
}

/// Every pattern of one topic exchange, sharing prefixes.
#[derive(Debug)]
pub(crate) struct TopicTrie {
    nodes: Vec<Node>,
    targets: Vec<Targets>,
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

/// Splits off the first word: `(word, rest)`, `rest` None when it was the last one.
fn first_word(key: &str) -> (&str, Option<&str>) {
    match key.split_once('.') {
        Some((word, rest)) => (word, Some(rest)),
        None => (key, None),
    }
}

impl Default for TopicTrie {
    fn default() -> Self {
        TopicTrie {
            nodes: vec![Node::default()],
            targets: Vec::new(),
        }
    }
}

impl TopicTrie {
    /// The targets for `pattern`, created empty if new. Consecutive `#` words collapse into one:
    /// they match the same keys, and a run of them would make matching exponential.
    pub(crate) fn targets_mut(&mut self, pattern: &str) -> &mut Targets {
        let mut node = 0;
        let mut previous_was_hash = false;
        for word in words(pattern) {
            if word == "#" && previous_was_hash {
                continue;
            }
            previous_was_hash = word == "#";
            node = self.child(node, word);
        }
        let index = match self.nodes[node].targets {
            Some(i) => i,
            None => {
                self.targets.push(Targets::default());
                let i = self.targets.len() - 1;
                self.nodes[node].targets = Some(i);
                i
            }
        };
        &mut self.targets[index]
    }

    fn child(&mut self, node: usize, word: &str) -> usize {
        let next = self.nodes.len();
        let slot = match word {
            "*" => &mut self.nodes[node].star,
            "#" => &mut self.nodes[node].hash,
            _ => {
                let words = &mut self.nodes[node].words;
                let index = *words.entry(Box::from(word)).or_insert(next);
                if index == next {
                    self.nodes.push(Node::default());
                }
                return index;
            }
        };
        match *slot {
            Some(index) => index,
            None => {
                *slot = Some(next);
                self.nodes.push(Node::default());
                next
            }
        }
    }

    pub(crate) fn all_targets(&self) -> impl Iterator<Item = &Targets> {
        self.targets.iter()
    }

    /// Sort and deduplicate every target list, once all bindings are in.
    pub(crate) fn finish(&mut self) {
        self.targets.iter_mut().for_each(Targets::finish);
    }

    /// Calls `visit` for every pattern matching `key` (a pattern matching in several ways may be
    /// visited more than once).
    pub(crate) fn for_each_match<'a>(&'a self, key: &str, visit: &mut impl FnMut(&'a Targets)) {
        let rest = if key.is_empty() { None } else { Some(key) };
        self.walk(0, rest, visit);
    }

    /// `rest` is what is left of the key: None when no words remain.
    fn walk<'a>(&'a self, node: usize, rest: Option<&str>, visit: &mut impl FnMut(&'a Targets)) {
        let n = &self.nodes[node];
        if let Some(hash) = n.hash {
            // `#` swallows zero words, then one, then two...
            let mut remaining = rest;
            loop {
                self.walk(hash, remaining, visit);
                match remaining {
                    Some(s) => remaining = first_word(s).1,
                    None => break,
                }
            }
        }
        match rest {
            None => {
                if let Some(t) = n.targets {
                    visit(&self.targets[t]);
                }
            }
            Some(s) => {
                let (word, tail) = first_word(s);
                if let Some(&child) = n.words.get(word) {
                    self.walk(child, tail, visit);
                }
                if let Some(star) = n.star {
                    self.walk(star, tail, visit);
                }
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
            trie.targets_mut(p).queues.push(QueueName::from(*p));
        }
        trie.finish();
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
        assert_eq!(trie.nodes.len(), 5);
    }

    #[test]
    fn runs_of_hash_words_collapse() {
        let trie = trie_with(&["#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.a"]);
        assert_eq!(trie.nodes.len(), 3);
        let key = "x.".repeat(100) + "a";
        assert_eq!(matches(&trie, &key).len(), 1);
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
