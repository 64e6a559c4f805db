//! Headers matching: binding arguments against message headers, as RabbitMQ's
//! `rabbit_exchange_type_headers` does it.
//!
//! `x-match` chooses `all` (the default), `any`, `all-with-x` or `any-with-x`. The `x-match`
//! entry itself is never matched; other keys starting with `x-` are ignored except in the
//! `-with-x` variants. A binding argument of type void matches on the header's presence alone.
//! Values compare like Erlang's `==`: numbers by value whatever their width, strings by bytes.

use tern_amqp::{FieldTable, FieldValue, ShortStr};

use super::Targets;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatchMode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl MatchMode {
    /// The binding's mode. Unknown values fall back to `all`, as in RabbitMQ (binding
    /// validation refuses them, so they only come from definitions made before it did).
    pub(crate) fn of(arguments: &FieldTable) -> MatchMode {
        match arguments.get("x-match") {
            Some(FieldValue::LongStr(v)) => match &v[..] {
                b"any" => MatchMode::Any,
                b"all-with-x" => MatchMode::AllWithX,
                b"any-with-x" => MatchMode::AnyWithX,
                _ => MatchMode::All,
            },
            _ => MatchMode::All,
        }
    }

    fn with_x(self) -> bool {
        matches!(self, MatchMode::AllWithX | MatchMode::AnyWithX)
    }

    fn is_all(self) -> bool {
        matches!(self, MatchMode::All | MatchMode::AllWithX)
    }
}

/// Why a headers binding is refused: `x-match` of the wrong type or value.
pub(crate) fn validate_binding(arguments: &FieldTable) -> Result<(), String> {
    match arguments.get("x-match") {
        None => Ok(()),
        Some(FieldValue::LongStr(v)) => match &v[..] {
            b"all" | b"any" | b"all-with-x" | b"any-with-x" => Ok(()),
            other => Err(format!(
                "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                erlang_binary(other)
            )),
        },
        Some(other) => Err(format!(
            "Invalid x-match field type {} (value {}); expected longstr",
            type_name(other),
            erlang_term(other)
        )),
    }
}

/// One binding of a headers exchange, with the keys it matches on already filtered.
#[derive(Debug)]
pub(crate) struct HeadersBinding {
    mode: MatchMode,
    /// (key, value); None for a void value, which matches presence only.
    keys: Vec<(ShortStr, Option<FieldValue>)>,
    pub(crate) targets: Targets,
    /// The binding's arguments as bound: with `targets`, which binding this is.
    arguments: FieldTable,
}

impl HeadersBinding {
    pub(crate) fn new(arguments: &FieldTable, targets: Targets) -> Self {
        let mode = MatchMode::of(arguments);
        let keys = arguments
            .iter()
            .filter(|(k, _)| k.as_str() != "x-match")
            .filter(|(k, _)| mode.with_x() || !k.starts_with("x-"))
            .map(|(k, v)| (k.clone(), (*v != FieldValue::Void).then(|| v.clone())))
            .collect();
        HeadersBinding {
            mode,
            keys,
            targets,
            arguments: arguments.clone(),
        }
    }

    /// Whether this is the binding with these arguments to these targets.
    pub(crate) fn is_binding(&self, arguments: &FieldTable, targets: &Targets) -> bool {
        self.arguments == *arguments && self.targets == *targets
    }

    pub(crate) fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let hit = |(key, want): &(ShortStr, Option<FieldValue>)| {
            let Some(have) = headers.and_then(|h| h.get(key)) else {
                return false;
            };
            want.as_ref().is_none_or(|w| values_equal(w, have))
        };
        if self.mode.is_all() {
            self.keys.iter().all(hit)
        } else {
            self.keys.iter().any(hit)
        }
    }
}

/// A number as Erlang sees it: integers (any width, and timestamps) or floats.
enum Number {
    Int(i128),
    Float(f64),
}

fn number(v: &FieldValue) -> Option<Number> {
    Some(match *v {
        FieldValue::I8(n) => Number::Int(n.into()),
        FieldValue::U8(n) => Number::Int(n.into()),
        FieldValue::I16(n) => Number::Int(n.into()),
        FieldValue::U16(n) => Number::Int(n.into()),
        FieldValue::I32(n) => Number::Int(n.into()),
        FieldValue::U32(n) => Number::Int(n.into()),
        FieldValue::I64(n) => Number::Int(n.into()),
        FieldValue::U64(n) => Number::Int(n.into()),
        FieldValue::Timestamp(n) => Number::Int(n.into()),
        FieldValue::F32(f) => Number::Float(f.into()),
        FieldValue::F64(f) => Number::Float(f),
        _ => return None,
    })
}

/// Erlang `==` on the values (types ignored): `1` (short) equals `1` (long) and `1.0`.
pub(crate) fn values_equal(a: &FieldValue, b: &FieldValue) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return match (x, y) {
            (Number::Int(x), Number::Int(y)) => x == y,
            (Number::Int(i), Number::Float(f)) | (Number::Float(f), Number::Int(i)) => {
                i as f64 == f
            }
            (Number::Float(x), Number::Float(y)) => x == y,
        };
    }
    match (a, b) {
        (
            FieldValue::LongStr(x) | FieldValue::Bytes(x),
            FieldValue::LongStr(y) | FieldValue::Bytes(y),
        ) => x == y,
        _ => a == b,
    }
}

/// RabbitMQ's name for a field value's type, as its error texts print it.
pub(crate) fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) | FieldValue::U64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal(_) => "decimal",
        FieldValue::LongStr(_) => "longstr",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
        FieldValue::Bytes(_) => "binary",
    }
}

/// A binary the way Erlang's `~p` prints it: `<<"text">>`.
pub(crate) fn erlang_binary(bytes: &[u8]) -> String {
    format!("<<{:?}>>", String::from_utf8_lossy(bytes))
}

/// A field value the way Erlang's `~p` prints it (close enough for error texts).
pub(crate) fn erlang_term(v: &FieldValue) -> String {
    match v {
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => erlang_binary(b),
        other => plain_value(other),
    }
}

/// A field value as text: strings raw (Erlang `~ts`), the rest as Erlang prints terms.
pub(crate) fn plain_value(v: &FieldValue) -> String {
    if let Some(n) = number(v) {
        return match n {
            Number::Int(i) => i.to_string(),
            Number::Float(f) => format!("{f:?}"),
        };
    }
    match v {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        FieldValue::Decimal(d) => format!("{{{},{}}}", d.scale, d.value),
        FieldValue::Void => "undefined".to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::new();
        for (k, v) in entries {
            t.0.push((ShortStr::from(*k), v.clone()));
        }
        t
    }

    fn binding_matches(
        args: &[(&str, FieldValue)],
        headers: Option<&[(&str, FieldValue)]>,
    ) -> bool {
        let headers = headers.map(table);
        HeadersBinding::new(&table(args), Targets::default()).matches(headers.as_ref())
    }

    #[test]
    fn headers_matching_follows_rabbitmq() {
        use FieldValue::{Void, I16, I32, I64};
        let any = ("x-match", s("any"));
        let all = ("x-match", s("all"));
        let all_x = ("x-match", s("all-with-x"));
        let any_x = ("x-match", s("any-with-x"));
        #[rustfmt::skip]
        type Entries = Vec<(&'static str, FieldValue)>;
        let cases: Vec<(Entries, Option<Entries>, bool)> = vec![
            // all (default): every key present and equal
            (
                vec![("a", s("1")), ("b", s("2"))],
                Some(vec![("a", s("1")), ("b", s("2"))]),
                true,
            ),
            (
                vec![all.clone(), ("a", s("1")), ("b", s("2"))],
                Some(vec![("b", s("2")), ("a", s("1"))]),
                true,
            ),
            (
                vec![("a", s("1")), ("b", s("2"))],
                Some(vec![("a", s("1"))]),
                false,
            ),
            (vec![("a", s("1"))], Some(vec![("a", s("2"))]), false),
            (vec![("a", s("1"))], None, false),
            (
                vec![("a", s("1"))],
                Some(vec![("a", s("1")), ("z", s("9"))]),
                true,
            ),
            // no keys: all matches everything, any nothing
            (vec![], None, true),
            (vec![all.clone()], Some(vec![("a", s("1"))]), true),
            (vec![any.clone()], Some(vec![("a", s("1"))]), false),
            // any: one key suffices
            (
                vec![any.clone(), ("a", s("1")), ("b", s("2"))],
                Some(vec![("b", s("2"))]),
                true,
            ),
            (
                vec![any.clone(), ("a", s("1")), ("b", s("2"))],
                Some(vec![("b", s("3"))]),
                false,
            ),
            (vec![any.clone(), ("a", s("1"))], None, false),
            // void: presence only
            (vec![("a", Void)], Some(vec![("a", s("anything"))]), true),
            (vec![("a", Void)], Some(vec![("b", s("1"))]), false),
            (
                vec![any.clone(), ("a", Void), ("b", s("2"))],
                Some(vec![("a", I32(5))]),
                true,
            ),
            // numbers compare by value across widths; strings never equal numbers
            (vec![("n", I16(7))], Some(vec![("n", I64(7))]), true),
            (
                vec![("n", I32(7))],
                Some(vec![("n", FieldValue::F64(7.0))]),
                true,
            ),
            (vec![("n", I32(7))], Some(vec![("n", s("7"))]), false),
            (
                vec![("b", FieldValue::Bool(true))],
                Some(vec![("b", FieldValue::Bool(true))]),
                true,
            ),
            // x- keys ignored unless -with-x
            (vec![("x-foo", s("1"))], Some(vec![]), true),
            (
                vec![any.clone(), ("x-foo", s("1"))],
                Some(vec![("x-foo", s("1"))]),
                false,
            ),
            (
                vec![all_x.clone(), ("x-foo", s("1"))],
                Some(vec![("x-foo", s("1"))]),
                true,
            ),
            (vec![all_x.clone(), ("x-foo", s("1"))], Some(vec![]), false),
            (
                vec![any_x.clone(), ("x-foo", s("1")), ("a", s("1"))],
                Some(vec![("x-foo", s("1"))]),
                true,
            ),
            (
                vec![("x-foo", s("1")), ("a", s("1"))],
                Some(vec![("a", s("1"))]),
                true,
            ),
            // x-match itself is never a key to match, even with -with-x
            (vec![all_x.clone()], Some(vec![]), true),
        ];
        for (i, (args, headers, expected)) in cases.into_iter().enumerate() {
            let got = binding_matches(&args, headers.as_deref());
            assert_eq!(got, expected, "case {i}: args {args:?} headers {headers:?}");
        }
    }

    #[test]
    fn unknown_x_match_falls_back_to_all() {
        let args = [("x-match", s("bogus")), ("a", s("1")), ("b", s("2"))];
        assert!(!binding_matches(&args, Some(&[("a", s("1"))])));
        assert!(binding_matches(
            &args,
            Some(&[("a", s("1")), ("b", s("2"))])
        ));
    }

    #[test]
    fn x_match_validation_texts_match_rabbitmq() {
        assert!(validate_binding(&table(&[])).is_ok());
        assert!(validate_binding(&table(&[("x-match", s("any-with-x"))])).is_ok());
        assert_eq!(
            validate_binding(&table(&[("x-match", s("some"))])).unwrap_err(),
            "Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x"
        );
        assert_eq!(
            validate_binding(&table(&[("x-match", FieldValue::I32(1))])).unwrap_err(),
            "Invalid x-match field type signedint (value 1); expected longstr"
        );
    }
}
