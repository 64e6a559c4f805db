//! The `x-consistent-hash` exchange: each binding's routing key is a weight, the number of
//! buckets it owns on a ring; a message goes to the one binding whose bucket its hash picks.
//!
//! As in RabbitMQ's plugin, buckets are laid out in binding order (removing a binding shifts the
//! later ones down) and the bucket is chosen with jump consistent hashing (Lamping & Veach), so
//! adding a binding moves only the keys that land on its new buckets. The hash is our own
//! (FNV-1a with a 64-bit finalizer): stable across platforms, builds and nodes.

use tern_amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};

use super::headers::{erlang_binary, plain_value, type_name};
use super::{RouteInput, Targets};

/// What a message is hashed on, from the exchange's `hash-header` / `hash-property` arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HashOn {
    RoutingKey,
    Header(ShortStr),
    Property(HashProperty),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashProperty {
    CorrelationId,
    MessageId,
    Timestamp,
}

impl HashProperty {
    fn parse(name: &[u8]) -> Option<Self> {
        match name {
            b"correlation_id" => Some(HashProperty::CorrelationId),
            b"message_id" => Some(HashProperty::MessageId),
            b"timestamp" => Some(HashProperty::Timestamp),
            _ => None,
        }
    }
}

fn long_str<'a>(arguments: &'a FieldTable, key: &str) -> Option<&'a [u8]> {
    match arguments.get(key) {
        Some(FieldValue::LongStr(b)) => Some(b),
        _ => None,
    }
}

impl HashOn {
    pub(crate) fn of(arguments: &FieldTable) -> HashOn {
        if let Some(header) = long_str(arguments, "hash-header") {
            let name = String::from_utf8_lossy(header).into_owned();
            return HashOn::Header(ShortStr::from(name));
        }
        match long_str(arguments, "hash-property").and_then(HashProperty::parse) {
            Some(p) => HashOn::Property(p),
            None => HashOn::RoutingKey,
        }
    }

    /// Whether the choice depends on more than the routing key.
    pub(crate) fn reads_message(&self) -> bool {
        *self != HashOn::RoutingKey
    }
}

/// Exchange arguments RabbitMQ refuses for this type (406), with its texts.
pub(crate) fn validate_exchange(arguments: &FieldTable) -> Result<(), String> {
    let header = long_str(arguments, "hash-header");
    match (header, long_str(arguments, "hash-property")) {
        (Some(_), Some(_)) => Err("hash-header and hash-property are mutually exclusive".into()),
        (None, Some(p)) if HashProperty::parse(p).is_none() => Err(format!(
            "Unsupported property: {}",
            String::from_utf8_lossy(p)
        )),
        _ => Ok(()),
    }
}

/// A binding key must be a positive integer: its weight.
pub(crate) fn parse_weight(routing_key: &str) -> Result<u64, String> {
    match routing_key.parse::<i64>() {
        Ok(w) if w >= 1 => Ok(w.unsigned_abs()),
        Ok(_) => Err("The binding key must be greater than 0".into()),
        Err(_) => Err(format!(
            "The binding key must be an integer: {}",
            erlang_binary(routing_key.as_bytes())
        )),
    }
}

/// The ring of one consistent-hash exchange.
#[derive(Clone, Debug)]
pub(crate) struct HashRing {
    on: HashOn,
    /// (end of the binding's bucket range, exclusive; its destination), in binding order.
    ranges: Vec<(u64, Targets)>,
}

impl HashRing {
    pub(crate) fn new(on: HashOn) -> Self {
        HashRing {
            on,
            ranges: Vec::new(),
        }
    }

    pub(crate) fn on(&self) -> &HashOn {
        &self.on
    }

    fn buckets(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.0)
    }

    /// Append a binding owning `weight` buckets (weights are validated when bound; a bad one
    /// here owns nothing).
    pub(crate) fn push(&mut self, weight: u64, targets: Targets) {
        let end = self.buckets().saturating_add(weight).min(i64::MAX as u64);
        self.ranges.push((end, targets));
    }

    /// The one destination for this message, if any binding exists.
    pub(crate) fn pick(&self, input: &RouteInput<'_>) -> Option<&Targets> {
        let buckets = self.buckets();
        if buckets == 0 {
            return None;
        }
        let bucket = jump_consistent_hash(self.hash(input), buckets);
        let index = self.ranges.partition_point(|(end, _)| *end <= bucket);
        self.ranges.get(index).map(|r| &r.1)
    }

    fn hash(&self, input: &RouteInput<'_>) -> u64 {
        match &self.on {
            HashOn::RoutingKey => hash_bytes(input.routing_key.as_bytes()),
            HashOn::Header(name) => match input.headers.and_then(|h| h.get(name)) {
                Some(v) => hash_value(v),
                None => hash_missing(),
            },
            HashOn::Property(p) => match input.properties.and_then(|props| property(props, *p)) {
                Some(text) => hash_bytes(text.as_bytes()),
                None => hash_missing(),
            },
        }
    }
}

fn property(props: &BasicProperties, p: HashProperty) -> Option<String> {
    match p {
        HashProperty::CorrelationId => props.correlation_id.as_ref().map(|s| s.to_string()),
        HashProperty::MessageId => props.message_id.as_ref().map(|s| s.to_string()),
        HashProperty::Timestamp => props.timestamp.map(|t| t.to_string()),
    }
}

/// Messages without the header or property all hash alike (RabbitMQ hashes `undefined`).
fn hash_missing() -> u64 {
    hash_bytes(b"\0undefined")
}

fn hash_value(v: &FieldValue) -> u64 {
    match v {
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => hash_bytes(b),
        other => hash_bytes(format!("{}:{}", type_name(other), plain_value(other)).as_bytes()),
    }
}

/// FNV-1a, then SplitMix64's finalizer so that short, similar keys spread over the whole range.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Jump consistent hash: a bucket in `0..buckets`, moving as few keys as possible when
/// `buckets` grows. Runs in O(ln buckets).
pub(crate) fn jump_consistent_hash(mut key: u64, buckets: u64) -> u64 {
    debug_assert!(buckets > 0);
    let (mut chosen, mut next) = (0u64, 0u64);
    while next < buckets {
        chosen = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let scale = (1u64 << 31) as f64 / ((key >> 33) + 1) as f64;
        next = ((chosen + 1) as f64 * scale) as u64;
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::QueueName;
    use crate::routing::Destination;
    use bytes::Bytes;

    fn ring(weights: &[(u64, &str)]) -> HashRing {
        let mut ring = HashRing::new(HashOn::RoutingKey);
        for (w, q) in weights {
            ring.push(*w, Targets::of(&Destination::Queue(QueueName::from(*q))));
        }
        ring
    }

    fn pick(ring: &HashRing, key: &str) -> String {
        let input = RouteInput {
            routing_key: key,
            headers: None,
            properties: None,
        };
        ring.pick(&input)
            .map(|t| t.queues[0].to_string())
            .unwrap_or_default()
    }

    fn counts(ring: &HashRing, n: usize) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..n {
            *counts.entry(pick(ring, &format!("key-{i}"))).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn equal_weights_spread_keys_evenly() {
        let ring = ring(&[(1, "q1"), (1, "q2"), (1, "q3"), (1, "q4")]);
        let counts = counts(&ring, 40_000);
        assert_eq!(counts.len(), 4);
        for (q, n) in counts {
            assert!((9_000..11_000).contains(&n), "{q} got {n} of 40000");
        }
    }

    #[test]
    fn weights_scale_the_share() {
        let ring = ring(&[(1, "light"), (3, "heavy")]);
        let counts = counts(&ring, 40_000);
        let heavy = counts["heavy"] as f64 / 40_000.0;
        assert!((0.72..0.78).contains(&heavy), "heavy share {heavy}");
    }

    #[test]
    fn same_key_always_goes_to_the_same_queue() {
        let a = ring(&[(10, "q1"), (10, "q2"), (10, "q3")]);
        let b = ring(&[(10, "q1"), (10, "q2"), (10, "q3")]);
        for i in 0..1000 {
            let key = format!("order-{i}");
            assert_eq!(pick(&a, &key), pick(&a, &key));
            assert_eq!(pick(&a, &key), pick(&b, &key));
        }
    }

    #[test]
    fn adding_a_binding_moves_only_its_share_of_keys() {
        let before = ring(&[(1, "q1"), (1, "q2"), (1, "q3")]);
        let after = ring(&[(1, "q1"), (1, "q2"), (1, "q3"), (1, "q4")]);
        let n = 20_000;
        let moved: Vec<String> = (0..n)
            .map(|i| format!("k{i}"))
            .filter(|k| pick(&before, k) != pick(&after, k))
            .collect();
        assert!(
            moved.iter().all(|k| pick(&after, k) == "q4"),
            "keys moved between old queues"
        );
        let share = moved.len() as f64 / n as f64;
        assert!((0.22..0.28).contains(&share), "moved share {share}");
    }

    #[test]
    fn jump_hash_matches_the_published_vectors() {
        // From the reference implementations of Lamping & Veach's algorithm.
        for (key, buckets, bucket) in [
            (1, 1, 0),
            (42, 57, 43),
            (0xDEAD_10CC, 1, 0),
            (0xDEAD_10CC, 666, 361),
            (256, 1024, 520),
        ] {
            assert_eq!(
                jump_consistent_hash(key, buckets),
                bucket,
                "key {key} buckets {buckets}"
            );
        }
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned: a change here moves every user's keys to other queues.
        assert_eq!(hash_bytes(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(hash_bytes(b"order-42"), 0x586d_07f2_8908_894f);
        assert_eq!(jump_consistent_hash(hash_bytes(b"order-42"), 1000), 293);
        let buckets: Vec<u64> = (0..8).map(|i| jump_consistent_hash(i, 10)).collect();
        assert_eq!(buckets, [0, 6, 6, 8, 1, 4, 9, 0]);
    }

    #[test]
    fn an_empty_ring_routes_nowhere() {
        assert_eq!(pick(&ring(&[]), "k"), "");
    }

    #[test]
    fn hashes_on_a_header_when_asked() {
        let mut args = FieldTable::new();
        args.insert(
            "hash-header",
            FieldValue::LongStr(Bytes::from_static(b"user")),
        );
        let on = HashOn::of(&args);
        assert_eq!(on, HashOn::Header(ShortStr::from("user")));
        let mut ring = HashRing::new(on);
        for q in ["q1", "q2", "q3"] {
            ring.push(1, Targets::of(&Destination::Queue(QueueName::from(q))));
        }
        let mut seen = std::collections::BTreeSet::new();
        for user in 0..200 {
            let mut headers = FieldTable::new();
            headers.insert("user", FieldValue::LongStr(Bytes::from(format!("u{user}"))));
            let pick_with = |key: &str| {
                let input = RouteInput {
                    routing_key: key,
                    headers: Some(&headers),
                    properties: None,
                };
                ring.pick(&input).map(|t| t.queues[0].clone())
            };
            // The routing key plays no part.
            assert_eq!(pick_with("x"), pick_with("y"));
            seen.insert(pick_with("x"));
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn weights_must_be_positive_integers() {
        assert_eq!(parse_weight("5"), Ok(5));
        assert_eq!(
            parse_weight("0").unwrap_err(),
            "The binding key must be greater than 0"
        );
        assert_eq!(
            parse_weight("-3").unwrap_err(),
            "The binding key must be greater than 0"
        );
        assert_eq!(
            parse_weight("ten").unwrap_err(),
            "The binding key must be an integer: <<\"ten\">>"
        );
        assert_eq!(
            parse_weight("").unwrap_err(),
            "The binding key must be an integer: <<\"\">>"
        );
    }

    #[test]
    fn exchange_arguments_are_validated_like_rabbitmq() {
        let s = |v: &'static str| FieldValue::LongStr(Bytes::from_static(v.as_bytes()));
        let mut args = FieldTable::new();
        assert!(validate_exchange(&args).is_ok());
        args.insert("hash-property", s("priority"));
        assert_eq!(
            validate_exchange(&args).unwrap_err(),
            "Unsupported property: priority"
        );
        args.insert("hash-property", s("message_id"));
        assert!(validate_exchange(&args).is_ok());
        args.insert("hash-header", s("h"));
        assert_eq!(
            validate_exchange(&args).unwrap_err(),
            "hash-header and hash-property are mutually exclusive"
        );
    }
}
