//! Prometheus' text exposition format, version 0.0.4: what RabbitMQ's prometheus plugin serves
//! and every scraper reads. Families are written one at a time: `# HELP`, `# TYPE`, then their
//! samples. Label values are escaped (queue names come from clients: backslash, double quote
//! and newline must not break the line).

use std::fmt::Write;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's `# TYPE` (RabbitMQ uses `untyped` for its info and alarm series).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Untyped => "untyped",
        }
    }
}

#[derive(Default)]
pub struct Exposition {
    out: String,
    /// The family being written: samples must belong to it.
    family: String,
}

impl Exposition {
    /// Start a family: its help and type lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "metric name {name:?}");
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        push_escaped(&mut self.out, help, false);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
        self.family.clear();
        self.family.push_str(name);
    }

    /// One sample of the current family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        debug_assert!(!self.family.is_empty(), "a sample before its family");
        self.out.push_str(&self.family);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                debug_assert!(valid_name(key), "label name {key:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                push_escaped(&mut self.out, value, true);
                self.out.push('"');
            }
            self.out.push('}');
        }
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(&[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Backslash and newline are escaped in help text; a label value also escapes `"`.
fn push_escaped(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` (label names may not hold `:`, ours never do).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_has_help_type_and_its_samples() {
        let mut x = Exposition::default();
        x.family(
            "rabbitmq_queue_messages",
            Kind::Gauge,
            "Ready\nand unacked \\ all",
        );
        x.sample(&[("vhost", "/"), ("queue", "q")], 7);
        x.single("rabbitmq_queues", Kind::Gauge, "Queues available", 1);
        assert_eq!(
            x.finish(),
            "# HELP rabbitmq_queue_messages Ready\\nand unacked \\\\ all\n\
             # TYPE rabbitmq_queue_messages gauge\n\
             rabbitmq_queue_messages{vhost=\"/\",queue=\"q\"} 7\n\
             # HELP rabbitmq_queues Queues available\n\
             # TYPE rabbitmq_queues gauge\n\
             rabbitmq_queues 1\n"
        );
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let mut x = Exposition::default();
        x.family("m", Kind::Untyped, "h \"quoted\"");
        x.sample(&[("queue", "a\\b\"c\nd")], 0);
        let text = x.finish();
        assert!(text.contains("# HELP m h \"quoted\"\n"), "{text}");
        assert!(text.contains("m{queue=\"a\\\\b\\\"c\\nd\"} 0\n"), "{text}");
    }
}
