//! Sorting, filtering and pagination of the big lists, as RabbitMQ's API does it:
//! `sort` (a field, dotted for nested ones) and `sort_reverse` apply always; with `page` the
//! answer becomes `{"items": [...], "page", "page_size", "page_count", "item_count",
//! "filtered_count", "total_count"}`, `name` filters by a substring of the name (a regular
//! expression with `use_regex=true`) and `page_size` is 100 by default and at most 500.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiResult};

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 500;
/// Compiled size a `name` regex may take: a filter, not a way to spend the node's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: Option<String>,
    sort: Option<String>,
    sort_reverse: Option<String>,
}

impl ListQuery {
    /// A page is asked for (`page`).
    pub fn is_paged(&self) -> bool {
        self.page.is_some()
    }

    /// Sorted by none of the fields, or by one of `fields`.
    pub fn sorts_only_by(&self, fields: &[&str]) -> bool {
        match self.sort.as_deref() {
            None | Some("") => true,
            Some(field) => fields.contains(&field),
        }
    }
}

fn number(field: &str, raw: &Option<String>, default: usize) -> ApiResult<usize> {
    match raw.as_deref() {
        None | Some("") => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{field} must be a number, not '{s}'"))),
    }
}

fn truthy(raw: &Option<String>) -> bool {
    matches!(raw.as_deref(), Some("true") | Some("1"))
}

/// The list as the query asks for it: sorted, and paged when `page` is given.
pub fn page(query: &ListQuery, mut items: Vec<Value>) -> ApiResult<Value> {
    if let Some(field) = query.sort.as_deref().filter(|f| !f.is_empty()) {
        items.sort_by(|a, b| compare(field_of(a, field), field_of(b, field)));
    }
    if truthy(&query.sort_reverse) {
        items.reverse();
    }
    if query.page.is_none() {
        return Ok(Value::Array(items));
    }
    let page = number("page", &query.page, 1)?;
    let size = number("page_size", &query.page_size, DEFAULT_PAGE_SIZE)?;
    if size == 0 || size > MAX_PAGE_SIZE {
        return Err(ApiError::bad_request(format!(
            "page_size must be between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    let total = items.len();
    let items = filter(query, items)?;
    let filtered = items.len();
    let page_count = filtered.div_ceil(size).max(1);
    if page == 0 || page > page_count {
        return Err(ApiError::bad_request("page out of range"));
    }
    let shown: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    Ok(json!({
        "filtered_count": filtered, "item_count": shown.len(), "page": page,
        "page_count": page_count, "page_size": size, "total_count": total, "items": shown,
    }))
}

fn filter(query: &ListQuery, items: Vec<Value>) -> ApiResult<Vec<Value>> {
    let Some(name) = query.name.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(items);
    };
    let name_of = |v: &Value| v["name"].as_str().unwrap_or("").to_string();
    if !truthy(&query.use_regex) {
        return Ok(items
            .into_iter()
            .filter(|v| name_of(v).contains(name))
            .collect());
    }
    let re = regex::RegexBuilder::new(name)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ApiError::bad_request(format!("invalid regular expression: {e}")))?;
    Ok(items
        .into_iter()
        .filter(|v| re.is_match(&name_of(v)))
        .collect())
}

fn field_of<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| &v[key])
}

/// Numbers by value, strings in order, missing fields first.
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"name": format!("q{i:03}"), "messages": i % 7}))
            .collect()
    }

    fn query(pairs: &[(&str, &str)]) -> ListQuery {
        let map: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        serde_json::from_value(Value::Object(map)).unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
    }

    #[test]
    fn a_page_carries_rabbitmqs_counts() {
        let got = page(&query(&[("page", "2"), ("page_size", "10")]), named(25));
        let got = got.unwrap_or_else(|_| panic!("paged"));
        assert_eq!(
            (&got["page"], &got["page_count"], &got["item_count"]),
            (&json!(2), &json!(3), &json!(10))
        );
        assert_eq!(got["total_count"], 25);
        assert_eq!(got["items"][0]["name"], "q010");
    }

    #[test]
    fn names_filter_by_substring_or_regex_and_the_filtered_count_says_so() {
        let got = page(&query(&[("page", "1"), ("name", "q01")]), named(25));
        let got = got.unwrap_or_else(|_| panic!("paged"));
        assert_eq!(
            (&got["filtered_count"], &got["total_count"]),
            (&json!(10), &json!(25))
        );
        let re = query(&[("page", "1"), ("name", "^q00[0-2]$"), ("use_regex", "true")]);
        let got = page(&re, named(25)).unwrap_or_else(|_| panic!("paged"));
        assert_eq!(got["filtered_count"], 3);
    }

    #[test]
    fn out_of_range_pages_sizes_and_bad_regexes_are_refused() {
        for q in [
            query(&[("page", "4"), ("page_size", "10")]),
            query(&[("page", "0")]),
            query(&[("page", "1"), ("page_size", "501")]),
            query(&[("page", "x")]),
            query(&[("page", "1"), ("name", "("), ("use_regex", "true")]),
        ] {
            assert!(page(&q, named(25)).is_err(), "{q:?}");
        }
    }

    #[test]
    fn sort_by_a_number_then_reverse() {
        let q = query(&[("sort", "messages"), ("sort_reverse", "true")]);
        let got = page(&q, named(10)).unwrap_or_else(|_| panic!("sorted"));
        assert_eq!(got[0]["messages"], 6);
        assert_eq!(got[9]["messages"], 0);
    }
}
