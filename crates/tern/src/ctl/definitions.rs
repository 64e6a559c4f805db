//! `export_definitions FILE` and `import_definitions FILE` (`-`: standard output / input), in
//! RabbitMQ's definitions format; the node runs the same code as `/api/definitions`.
//!
//! A large file is imported in chunks, so each request stays under the node's
//! `admin_max_request_bytes` and the node's answers report progress: the objects are taken in
//! the order the import needs (vhosts, users, permissions, topic permissions, then exchanges,
//! queues, bindings) and cut every `CHUNK_OBJECTS` objects or `CHUNK_BYTES` bytes. The node
//! imports each chunk's lists in that same order, so a binding never arrives before its
//! exchange or queue. On a terminal, stderr shows a progress bar; otherwise only the final
//! line. Keys other than these lists (parameters, policies) are not sent: Tern has none yet.

use std::io::{IsTerminal, Read, Write};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use tern_server::admin::AdminRequest;

use super::Node;

/// The lists an import takes, in the order they must be applied.
const ORDER: [&str; 7] = [
    "vhosts",
    "users",
    "permissions",
    "topic_permissions",
    "exchanges",
    "queues",
    "bindings",
];

/// Objects per chunk: enough that round trips do not dominate, few enough that the bar moves.
const CHUNK_OBJECTS: usize = 250;

/// Bytes of objects per chunk: a quarter of the node's default `admin_max_request_bytes`
/// (1 MiB). A single object larger than the node's limit is refused by the node, naming it.
const CHUNK_BYTES: usize = 256 * 1024;

fn request(command: &str, body: Option<Value>) -> AdminRequest {
    AdminRequest {
        args: vec![command.to_string()],
        vhost: None,
        body,
    }
}

fn file_argument<'a>(command: &'a [String], name: &str) -> Result<&'a str> {
    match command {
        [_, file] => Ok(file),
        _ => bail!(
            "usage: {name} <file> (- for standard {})",
            if name.starts_with("export") {
                "output"
            } else {
                "input"
            }
        ),
    }
}

pub fn export(node: &mut Node, command: &[String], quiet: bool) -> Result<()> {
    let file = file_argument(command, "export_definitions")?;
    let reply = node.ask(&request("export_definitions", None))?;
    let (true, Some(defs)) = (reply.ok, reply.body) else {
        bail!("{}", reply.message);
    };
    let mut text = serde_json::to_string_pretty(&defs)?;
    text.push('\n');
    if file == "-" {
        std::io::stdout().lock().write_all(text.as_bytes())?;
        return Ok(());
    }
    if !quiet {
        println!("Exporting definitions in JSON to a file at \"{file}\" ...");
    }
    std::fs::write(file, text).with_context(|| format!("writing {file}"))
}

pub fn import(node: &mut Node, command: &[String], quiet: bool) -> Result<()> {
    let file = file_argument(command, "import_definitions")?;
    let defs = read_definitions(file)?;
    if !quiet {
        println!("Importing definitions in JSON from a file at \"{file}\" ...");
    }
    let chunks = chunks(&defs)?;
    let total: usize = chunks.iter().map(|(n, _)| n).sum();
    let bar = progress_bar(total);
    let started = Instant::now();
    let mut done = 0;
    for (count, chunk) in chunks {
        let reply = node.ask(&request("import_definitions", Some(chunk)))?;
        if !reply.ok {
            bar.abandon();
            bail!(
                "import stopped after {done} of {total} definitions: {}",
                reply.message
            );
        }
        let imported = reply.body.as_ref().and_then(|b| b["imported"].as_u64());
        done += imported.map_or(count, |n| n as usize);
        bar.set_position(done as u64);
    }
    bar.finish_and_clear();
    if !quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!("Imported {done} definitions in {secs:.2} s");
    }
    Ok(())
}

fn read_definitions(file: &str) -> Result<Value> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin().lock().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    let defs: Value =
        serde_json::from_str(&text).with_context(|| format!("{file} is not valid JSON"))?;
    if !defs.is_object() {
        bail!("{file}: definitions are a JSON object (with users, vhosts, queues, ...)");
    }
    Ok(defs)
}

/// A bar on a terminal; hidden otherwise (the final line says what was done).
fn progress_bar(total: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {pos}/{len} definitions, {elapsed} ({eta} left)",
    );
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar
}

/// The definitions cut into chunks (see the module comment), each with how many objects it has.
fn chunks(defs: &Value) -> Result<Vec<(usize, Value)>> {
    let mut out = Vec::new();
    let mut chunk = Chunk::default();
    for key in ORDER {
        let Some(items) = defs.get(key) else { continue };
        let Some(items) = items.as_array() else {
            bail!("definitions: {key} is not a list");
        };
        for item in items {
            let bytes = serde_json::to_vec(item)?.len();
            if chunk.count == CHUNK_OBJECTS
                || (chunk.count > 0 && chunk.bytes + bytes > CHUNK_BYTES)
            {
                out.push(std::mem::take(&mut chunk).finish());
            }
            chunk.add(key, item.clone(), bytes);
        }
    }
    if chunk.count > 0 {
        out.push(chunk.finish());
    }
    Ok(out)
}

#[derive(Default)]
struct Chunk {
    lists: Map<String, Value>,
    count: usize,
    bytes: usize,
}

impl Chunk {
    fn add(&mut self, key: &str, item: Value, bytes: usize) {
        let list = self
            .lists
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.push(item);
        }
        self.count += 1;
        self.bytes += bytes;
    }

    fn finish(self) -> (usize, Value) {
        (self.count, Value::Object(self.lists))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(chunk: &Value, key: &str) -> Vec<String> {
        let items = chunk
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        items
            .iter()
            .map(|i| i["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn chunks_keep_the_import_order_and_the_object_bound() {
        let queues: Vec<Value> = (0..600).map(|i| json!({"name": format!("q{i}")})).collect();
        let defs = json!({"bindings": [{"name": "b"}], "queues": queues,
                          "vhosts": [{"name": "v"}], "policies": []});
        let chunks = chunks(&defs).expect("chunks");
        let counts: Vec<usize> = chunks.iter().map(|(n, _)| *n).collect();
        assert_eq!(counts, vec![250, 250, 102]);
        assert_eq!(names(&chunks[0].1, "vhosts"), vec!["v"]);
        assert_eq!(names(&chunks[0].1, "queues").len(), 249);
        assert_eq!(
            names(&chunks[2].1, "queues").last().map(String::as_str),
            Some("q599")
        );
        assert_eq!(names(&chunks[2].1, "bindings"), vec!["b"]);
        assert!(chunks.iter().all(|(_, c)| c.get("policies").is_none()));
    }

    #[test]
    fn chunks_are_cut_by_bytes_too() {
        let big = "x".repeat(100 * 1024);
        let queues: Vec<Value> = (0..5)
            .map(|i| json!({"name": format!("q{i}"), "pad": big}))
            .collect();
        let chunks = chunks(&json!({ "queues": queues })).expect("chunks");
        let counts: Vec<usize> = chunks.iter().map(|(n, _)| *n).collect();
        assert_eq!(counts, vec![2, 2, 1]);
    }
}
