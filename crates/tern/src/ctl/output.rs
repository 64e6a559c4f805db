//! A reply as rabbitmqctl prints it: the informational line, a header of column names, then
//! one tab-separated line per row; or, with `--format json`, a JSON array of objects keyed
//! by column (`status`: its one object).
//!
//! Table cells: text as is, `true` / `false`, numbers, nothing for a missing value, and
//! tables (arguments, client properties) in rabbitmqctl's list-of-pairs form:
//! `[{"x-max-length",10},{"x-queue-type","quorum"}]`, `[]` when empty.

use std::io::Write;

use anyhow::Result;
use serde_json::{Map, Value};
use tern_server::admin::AdminReply;

use super::Format;

pub fn print(reply: &AdminReply, format: Format, quiet: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&json(reply))?)?,
        Format::Table => {
            if reply.ok && !quiet {
                writeln!(out, "{}", reply.message)?;
            }
            if !reply.columns.is_empty() {
                writeln!(out, "{}", reply.columns.join("\t"))?;
            }
            for row in &reply.rows {
                let cells: Vec<String> = row.iter().map(cell).collect();
                writeln!(out, "{}", cells.join("\t"))?;
            }
        }
    }
    Ok(())
}

/// `--format json`: the rows keyed by column, the reply's own object, or what was done.
fn json(reply: &AdminReply) -> Value {
    if let Some(body) = &reply.body {
        return body.clone();
    }
    if reply.columns.is_empty() {
        return serde_json::json!({"ok": reply.ok, "message": reply.message});
    }
    let rows = reply.rows.iter().map(|row| {
        let cells = reply.columns.iter().cloned().zip(row.iter().cloned());
        Value::Object(cells.collect::<Map<String, Value>>())
    });
    Value::Array(rows.collect())
}

/// One table cell (see the module comment).
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Object(o) => {
            let pairs: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{{{},{}}}", Value::String(k.clone()), term(v)))
                .collect();
            format!("[{}]", pairs.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(term).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// A value inside a table or list: strings quoted, as rabbitmqctl shows them.
fn term(v: &Value) -> String {
    match v {
        Value::Object(_) | Value::Array(_) => cell(v),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_read_as_rabbitmqctl_prints_them() {
        assert_eq!(cell(&json!("q1")), "q1");
        assert_eq!(cell(&json!(true)), "true");
        assert_eq!(cell(&json!(10)), "10");
        assert_eq!(cell(&Value::Null), "");
        assert_eq!(cell(&json!({})), "[]");
        let args = json!({"x-max-length": 10, "x-queue-type": "quorum"});
        assert_eq!(
            cell(&args),
            r#"[{"x-max-length",10},{"x-queue-type","quorum"}]"#
        );
        assert_eq!(cell(&json!({"a": [1, "b"]})), r#"[{"a",[1,"b"]}]"#);
    }
}
