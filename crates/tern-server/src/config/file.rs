//! The config file (`tern.toml`): sections of keys, each known to [`Layer`]. An unknown
//! section or key, or a value of the wrong type, is an error that names the file, the line
//! and the key: a typo must not silently leave a default in place.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::layer::{Layer, SetError, Value};
use super::ConfigError;

type Sections = BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, toml::Value>>;

/// The settings a file's text holds (`path` names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<Layer, ConfigError> {
    let sections: Sections = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut layer = Layer::default();
    for (section, keys) in sections {
        for (key, value) in keys {
            let result = layer.set(section.get_ref(), key.get_ref(), Value::Toml(value));
            let Err(e) = result else { continue };
            let (span, message) = match e {
                SetError::UnknownSection => (section.span(), unknown("section", &sections_list())),
                SetError::UnknownKey(known) => (key.span(), unknown("key", known)),
                SetError::Bad(message) => (key.span(), message),
            };
            return Err(ConfigError::Key {
                path: path.to_path_buf(),
                line: line_of(text, span.start),
                section: section.into_inner(),
                key: key.into_inner(),
                message,
            });
        }
    }
    Ok(layer)
}

fn sections_list() -> Vec<&'static str> {
    Layer::SECTIONS.iter().map(|(name, _, _)| *name).collect()
}

fn unknown(what: &str, known: &[&str]) -> String {
    format!("unknown {what}; the known ones are {}", known.join(", "))
}

fn line_of(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.bytes().filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::{Config, ConfigError, LogConfig, LogFormat, MemoryWatermark};
    use crate::tls::{CertLogin, TlsConfig};

    const EXAMPLE: &str = include_str!("../../../../tern.example.toml");

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply_toml(text, std::path::Path::new("tern.toml"))?;
        Ok(config)
    }

    fn error(text: &str) -> String {
        match from_toml(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_example_file_holds_exactly_the_defaults() {
        let config = from_toml(EXAMPLE).expect("the example parses");
        assert_eq!(config, Config::default());
    }

    /// Each key is there, on a line of its own section that names its variable too.
    #[test]
    fn the_example_file_shows_every_key_with_its_variable() {
        for (section, prefix, keys) in super::Layer::SECTIONS {
            let header = format!("\n[{section}]\n");
            let at = EXAMPLE.find(&header);
            let at = at.unwrap_or_else(|| panic!("the example has no {header}"));
            let body = &EXAMPLE[at + header.len()..];
            let body = body.find("\n[").map_or(body, |end| &body[..end]);
            for key in *keys {
                let var = super::super::layer::env_var(prefix, key);
                let shown = body.lines().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{key} =")) && l.contains(&format!("# {var}"))
                });
                assert!(
                    shown,
                    "[{section}] {key} ({var}) is not in tern.example.toml"
                );
            }
        }
    }

    const EVERY_KEY: &str = r#"
[listeners]
bind = "127.0.0.2"
amqp_port = 1
amqps_port = 2
prometheus_port = 3
prometheus_tls_port = 29

[management]
port = 4
tls_port = 30
max_body_bytes = 5

[limits]
frame_max_bytes = 6
pre_auth_frame_max_bytes = 7
channel_max = 8
heartbeat_secs = 9
handshake_timeout_ms = 10
max_connections = 11
max_connections_per_vhost = 12
max_message_size_bytes = 13
max_consumers_per_channel = 14
direct_reply_backlog_bytes = 15
no_ack_credit = 16
no_ack_credit_bytes = 17
admin_max_request_bytes = 931

[queues]
inbox_messages = 18
flow_backlog_messages = 19
memory_messages = 20
memory_bytes = 21

[storage]
data_dir = "/var/lib/tern"
disk_free_limit_bytes = 22
disk_check_interval_ms = 23

[memory]
high_watermark_bytes = 24
check_interval_ms = 25

[auth]
default_user = "admin"
default_pass = "secret"
loopback_users = ["admin", "ops"]
login_failure_limit = 26
login_failure_window_ms = 27
login_failure_addresses = 28

[tls]
cert_file = "/etc/tern/cert.pem"
key_file = "/etc/tern/key.pem"
ca_file = "/etc/tern/ca.pem"
require_client_cert = true
cert_login = "san_email"

[log]
format = "json"
level = "debug"

[node]
name = "rabbit@box"

[cluster]
name = "blue"
port = 32
peers = ["a:25672", "b:25672"]
secret_file = "/etc/tern/secret"
tls_cert_file = "/etc/tern/node.pem"
tls_key_file = "/etc/tern/node.key"
tls_ca_file = "/etc/tern/ca.pem"
node_down_after_ms = 30000
"#;

    /// Every field is spelled out (no `..Default`): a new field fails to compile here until
    /// the file can set it.
    #[test]
    fn every_setting_can_be_set_from_the_file() {
        let expected = Config {
            bind: IpAddr::from([127, 0, 0, 2]),
            amqp_port: 1,
            amqps_port: 2,
            prometheus_port: 3,
            prometheus_tls_port: Some(29),
            management_port: 4,
            management_tls_port: Some(30),
            management_max_body_bytes: 5,
            admin_max_request_bytes: 931,
            frame_max_bytes: 6,
            pre_auth_frame_max_bytes: 7,
            channel_max: 8,
            heartbeat_secs: 9,
            handshake_timeout: Duration::from_millis(10),
            max_connections: 11,
            max_connections_per_vhost: 12,
            max_message_size_bytes: 13,
            max_consumers_per_channel: 14,
            direct_reply_backlog_bytes: 15,
            no_ack_credit: 16,
            no_ack_credit_bytes: 17,
            queue_inbox_messages: 18,
            queue_flow_backlog_messages: 19,
            queue_memory_messages: 20,
            queue_memory_bytes: 21,
            data_dir: PathBuf::from("/var/lib/tern"),
            disk_free_limit_bytes: 22,
            disk_check_interval: Duration::from_millis(23),
            memory_high_watermark: MemoryWatermark::Bytes(24),
            memory_check_interval: Duration::from_millis(25),
            default_user: Some(("admin".into(), "secret".into())),
            loopback_users: vec!["admin".into(), "ops".into()],
            login_failure_limit: 26,
            login_failure_window: Duration::from_millis(27),
            login_failure_addresses: 28,
            tls: Some(TlsConfig {
                cert_file: "/etc/tern/cert.pem".into(),
                key_file: "/etc/tern/key.pem".into(),
                ca_file: Some("/etc/tern/ca.pem".into()),
                require_client_cert: true,
                cert_login: CertLogin::SanEmail,
            }),
            log: LogConfig {
                format: LogFormat::Json,
                level: "debug".into(),
            },
            node_name: "rabbit@box".into(),
            cluster_name: Some("blue".into()),
            cluster_port: 32,
            cluster_peers: vec!["a:25672".into(), "b:25672".into()],
            cluster_secret_file: Some("/etc/tern/secret".into()),
            cluster_tls: Some(crate::config::ClusterTls {
                cert_file: "/etc/tern/node.pem".into(),
                key_file: "/etc/tern/node.key".into(),
                ca_file: "/etc/tern/ca.pem".into(),
            }),
            cluster_node_down_after: Duration::from_secs(30),
        };
        assert_eq!(from_toml(EVERY_KEY).expect("parses"), expected);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = error("[listeners]\namqp_port = 5672\namqp_prot = 5673\n");
        assert!(
            e.starts_with("config file tern.toml, line 3: [listeners] amqp_prot: unknown key"),
            "{e}"
        );
        assert!(e.contains("amqp_port"), "lists the known keys: {e}");
    }

    #[test]
    fn an_unknown_section_is_named() {
        let e = error("[listener]\namqp_port = 5672\n");
        assert!(
            e.contains("line 1: [listener] amqp_port: unknown section"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_value_names_the_file_and_the_key() {
        let e = error("\n[listeners]\namqp_port = 70000\n");
        assert!(
            e.starts_with("config file tern.toml, line 3: [listeners] amqp_port: invalid value"),
            "{e}"
        );
        let e = error("[log]\nformat = \"xml\"\n");
        assert!(e.contains("[log] format: unknown variant `xml`"), "{e}");
        let e = error("[listeners]\nbind = \"localhost:1\"\n");
        assert!(e.contains("[listeners] bind: invalid IP address"), "{e}");
    }

    #[test]
    fn a_key_outside_any_section_is_refused() {
        let e = error("amqp_port = 5672\n");
        assert!(e.starts_with("config file tern.toml: "), "{e}");
    }

    #[test]
    fn keys_that_do_not_go_together_are_refused() {
        let e = error("[memory]\nhigh_watermark_fraction = 0.5\nhigh_watermark_bytes = 9\n");
        assert!(e.contains("set one, not both"), "{e}");
        let e = error("[memory]\nhigh_watermark_fraction = 4.0\n");
        assert!(e.contains("not between 0 and 1"), "{e}");
        let e = error("[tls]\ncert_file = \"c.pem\"\n");
        assert!(e.contains("[tls] needs both cert_file and key_file"), "{e}");
    }

    #[test]
    fn special_values_mean_what_rabbitmq_means() {
        let c = from_toml("[limits]\nmax_connections_per_vhost = -1\n").expect("parses");
        assert_eq!(c.max_connections_per_vhost, usize::MAX);
        let c = from_toml("[memory]\nhigh_watermark_fraction = 1\n").expect("an integer");
        assert_eq!(c.memory_high_watermark, MemoryWatermark::Fraction(1.0));
        let c = from_toml("[auth]\ndefault_user = \"\"\n").expect("parses");
        assert_eq!(c.default_user, None);
        let c = from_toml("[auth]\ndefault_pass = \"s3cret\"\n").expect("parses");
        assert_eq!(c.default_user, Some(("guest".into(), "s3cret".into())));
    }
}
