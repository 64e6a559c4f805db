//! The settings one source gives (a config file, the environment), every key optional and
//! grouped in the file's sections. The sections and their keys are declared once, here: the
//! file parser, the environment reader and the docs' key list all come from this declaration.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Config, LogFormat, MemoryWatermark};
use crate::tls::{CertLogin, TlsConfig};

/// A value for a key, as its source gives it.
pub enum Value<'a> {
    Toml(toml::Value),
    Env(&'a str),
}

/// Why a key could not be set.
#[derive(Debug)]
pub enum SetError {
    UnknownSection,
    UnknownKey(&'static [&'static str]),
    Bad(String),
}

/// A type a key can hold: read from TOML by serde, from an environment variable by its text.
pub trait Setting: serde::de::DeserializeOwned {
    fn from_env(text: &str) -> Result<Self, String>;
}

macro_rules! setting_from_str {
    ($($t:ty),*) => {
        $(impl Setting for $t {
            fn from_env(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e| format!("{e}"))
            }
        })*
    };
}

setting_from_str!(
    u16, u32, u64, usize, i64, f64, bool, String, PathBuf, IpAddr, CertLogin, LogFormat
);

/// A list in a variable is comma-separated; empty or `none` is the empty list.
impl Setting for Vec<String> {
    fn from_env(text: &str) -> Result<Self, String> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "none")
            .map(str::to_owned)
            .collect())
    }
}

impl Value<'_> {
    fn parse<T: Setting>(self) -> Result<T, SetError> {
        match self {
            Value::Toml(v) => v.try_into().map_err(|e| SetError::Bad(e.to_string())),
            Value::Env(text) => T::from_env(text).map_err(SetError::Bad),
        }
    }
}

/// A section: a struct of optional keys, its name in the file, the prefix of its variables.
macro_rules! section {
    ($(#[$doc:meta])* $ty:ident $name:literal env $prefix:literal { $($key:ident: $t:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $ty {
            $(pub $key: Option<$t>,)*
        }

        impl $ty {
            pub const NAME: &'static str = $name;
            pub const ENV_PREFIX: &'static str = $prefix;
            pub const KEYS: &'static [&'static str] = &[$(stringify!($key)),*];

            fn set(&mut self, key: &str, value: Value<'_>) -> Result<(), SetError> {
                match key {
                    $(stringify!($key) => self.$key = Some(value.parse()?),)*
                    _ => return Err(SetError::UnknownKey(Self::KEYS)),
                }
                Ok(())
            }
        }
    };
}

section!(
    /// `[listeners]`: where clients connect.
    Listeners "listeners" env "TERN_" {
        bind: IpAddr,
        amqp_port: u16,
        amqps_port: u16,
        prometheus_port: u16,
        prometheus_tls_port: u16,
    }
);

section!(
    /// `[management]`: the HTTP API.
    Management "management" env "TERN_MANAGEMENT_" {
        port: u16,
        tls_port: u16,
        max_body_bytes: usize,
    }
);

section!(
    /// `[limits]`: what one connection, channel or message may use.
    Limits "limits" env "TERN_" {
        frame_max_bytes: u32,
        pre_auth_frame_max_bytes: u32,
        channel_max: u16,
        heartbeat_secs: u16,
        handshake_timeout_ms: u64,
        max_connections: usize,
        max_connections_per_vhost: i64,
        max_message_size_bytes: u64,
        max_consumers_per_channel: usize,
        direct_reply_backlog_bytes: u64,
        no_ack_credit: u32,
        no_ack_credit_bytes: u64,
        admin_max_request_bytes: usize,
    }
);

section!(
    /// `[queues]`: queue actors' inboxes, flow control and paging.
    Queues "queues" env "TERN_QUEUE_" {
        inbox_messages: usize,
        flow_backlog_messages: usize,
        memory_messages: usize,
        memory_bytes: u64,
    }
);

section!(
    /// `[storage]`: the data directory and the free-disk alarm.
    Storage "storage" env "TERN_" {
        data_dir: PathBuf,
        disk_free_limit_bytes: u64,
        disk_check_interval_ms: u64,
    }
);

section!(
    /// `[memory]`: the memory alarm.
    Memory "memory" env "TERN_MEMORY_" {
        high_watermark_fraction: f64,
        high_watermark_bytes: u64,
        check_interval_ms: u64,
    }
);

section!(
    /// `[auth]`: the default user, loopback-only users, failed-login limits.
    Auth "auth" env "TERN_" {
        default_user: String,
        default_pass: String,
        loopback_users: Vec<String>,
        login_failure_limit: u32,
        login_failure_window_ms: u64,
        login_failure_addresses: usize,
    }
);

section!(
    /// `[tls]`: the amqps listener's certificate, key and client verification.
    Tls "tls" env "TERN_TLS_" {
        cert_file: PathBuf,
        key_file: PathBuf,
        ca_file: PathBuf,
        require_client_cert: bool,
        cert_login: CertLogin,
    }
);

section!(
    /// `[log]`: format and filter of the log.
    Log "log" env "TERN_LOG_" {
        format: LogFormat,
        level: String,
    }
);

section!(
    /// `[node]`: this node's name.
    Node "node" env "TERN_NODE_" {
        name: String,
    }
);

section!(
    /// `[cluster]`: the other nodes and how this one proves it belongs with them.
    Cluster "cluster" env "TERN_CLUSTER_" {
        name: String,
        port: u16,
        peers: Vec<String>,
        secret_file: PathBuf,
        tls_cert_file: PathBuf,
        tls_key_file: PathBuf,
        tls_ca_file: PathBuf,
        node_down_after_ms: u64,
    }
);

/// Every section of a source.
macro_rules! layer {
    ($($field:ident: $ty:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Layer {
            $(pub $field: $ty,)*
        }

        impl Layer {
            /// Every section: its name, its variables' prefix, its keys.
            pub const SECTIONS: &'static [(&'static str, &'static str, &'static [&'static str])] =
                &[$(($ty::NAME, $ty::ENV_PREFIX, $ty::KEYS)),*];

            pub fn set(&mut self, section: &str, key: &str, value: Value<'_>) -> Result<(), SetError> {
                match section {
                    $($ty::NAME => self.$field.set(key, value),)*
                    _ => Err(SetError::UnknownSection),
                }
            }
        }
    };
}

layer!(
    listeners: Listeners,
    management: Management,
    limits: Limits,
    queues: Queues,
    storage: Storage,
    memory: Memory,
    auth: Auth,
    tls: Tls,
    log: Log,
    node: Node,
    cluster: Cluster,
);

/// The environment variable of a key: the section's prefix and the key in capitals.
pub fn env_var(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", key.to_ascii_uppercase())
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

fn millis(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl Layer {
    /// Override `c` with every key this source set. Err: keys that do not go together.
    pub fn apply(self, c: &mut Config) -> Result<(), String> {
        self.listeners.apply(c);
        set(&mut c.management_port, self.management.port);
        if let Some(port) = self.management.tls_port {
            c.management_tls_port = Some(port);
        }
        set(
            &mut c.management_max_body_bytes,
            self.management.max_body_bytes,
        );
        self.limits.apply(c);
        self.queues.apply(c);
        set(&mut c.data_dir, self.storage.data_dir);
        set(
            &mut c.disk_free_limit_bytes,
            self.storage.disk_free_limit_bytes,
        );
        set(
            &mut c.disk_check_interval,
            millis(self.storage.disk_check_interval_ms),
        );
        self.memory.apply(c)?;
        self.auth.apply(c);
        self.tls.apply(c)?;
        set(&mut c.log.format, self.log.format);
        set(&mut c.log.level, self.log.level);
        set(&mut c.node_name, self.node.name);
        self.cluster.apply(c);
        Ok(())
    }
}

impl Cluster {
    fn apply(self, c: &mut Config) {
        if let Some(name) = self.name {
            c.cluster_name = Some(name);
        }
        set(&mut c.cluster_port, self.port);
        set(&mut c.cluster_peers, self.peers);
        if let Some(file) = self.secret_file {
            c.cluster_secret_file = Some(file);
        }
        set(
            &mut c.cluster_node_down_after,
            self.node_down_after_ms.map(Duration::from_millis),
        );
        let files = [self.tls_cert_file, self.tls_key_file, self.tls_ca_file];
        if files.iter().any(Option::is_some) {
            let tls = c.cluster_tls.get_or_insert_with(Default::default);
            let [cert, key, ca] = files;
            set(&mut tls.cert_file, cert);
            set(&mut tls.key_file, key);
            set(&mut tls.ca_file, ca);
        }
    }
}

impl Listeners {
    fn apply(self, c: &mut Config) {
        set(&mut c.bind, self.bind);
        set(&mut c.amqp_port, self.amqp_port);
        set(&mut c.amqps_port, self.amqps_port);
        set(&mut c.prometheus_port, self.prometheus_port);
        if let Some(port) = self.prometheus_tls_port {
            c.prometheus_tls_port = Some(port);
        }
    }
}

impl Limits {
    fn apply(self, c: &mut Config) {
        set(&mut c.frame_max_bytes, self.frame_max_bytes);
        set(
            &mut c.pre_auth_frame_max_bytes,
            self.pre_auth_frame_max_bytes,
        );
        set(&mut c.channel_max, self.channel_max);
        set(&mut c.heartbeat_secs, self.heartbeat_secs);
        set(&mut c.handshake_timeout, millis(self.handshake_timeout_ms));
        set(&mut c.max_connections, self.max_connections);
        // Negative is no limit, as in RabbitMQ's vhost limits.
        let per_vhost = self.max_connections_per_vhost;
        let per_vhost = per_vhost.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        set(&mut c.max_connections_per_vhost, per_vhost);
        set(&mut c.max_message_size_bytes, self.max_message_size_bytes);
        set(
            &mut c.max_consumers_per_channel,
            self.max_consumers_per_channel,
        );
        set(
            &mut c.direct_reply_backlog_bytes,
            self.direct_reply_backlog_bytes,
        );
        set(&mut c.no_ack_credit, self.no_ack_credit);
        set(&mut c.no_ack_credit_bytes, self.no_ack_credit_bytes);
        set(&mut c.admin_max_request_bytes, self.admin_max_request_bytes);
    }
}

impl Queues {
    fn apply(self, c: &mut Config) {
        set(&mut c.queue_inbox_messages, self.inbox_messages);
        set(
            &mut c.queue_flow_backlog_messages,
            self.flow_backlog_messages,
        );
        set(&mut c.queue_memory_messages, self.memory_messages);
        set(&mut c.queue_memory_bytes, self.memory_bytes);
    }
}

impl Memory {
    fn apply(self, c: &mut Config) -> Result<(), String> {
        set(&mut c.memory_check_interval, millis(self.check_interval_ms));
        match (self.high_watermark_fraction, self.high_watermark_bytes) {
            (Some(_), Some(_)) => Err(
                "[memory] high_watermark_fraction and high_watermark_bytes: set one, not both"
                    .into(),
            ),
            (Some(f), None) if !(0.0..=1.0).contains(&f) => Err(format!(
                "[memory] high_watermark_fraction: {f} is not between 0 and 1"
            )),
            (Some(f), None) => {
                c.memory_high_watermark = MemoryWatermark::Fraction(f);
                Ok(())
            }
            (None, Some(b)) => {
                c.memory_high_watermark = MemoryWatermark::Bytes(b);
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }
}

impl Auth {
    fn apply(self, c: &mut Config) {
        if let Some(user) = self.default_user {
            // An empty name: a fresh node gets no user at all.
            let pass = c
                .default_user
                .take()
                .map_or_else(|| "guest".into(), |(_, p)| p);
            c.default_user = (!user.is_empty()).then_some((user, pass));
        }
        if let (Some(pass), Some((_, p))) = (self.default_pass, c.default_user.as_mut()) {
            *p = pass;
        }
        set(&mut c.loopback_users, self.loopback_users);
        set(&mut c.login_failure_limit, self.login_failure_limit);
        set(
            &mut c.login_failure_window,
            millis(self.login_failure_window_ms),
        );
        set(&mut c.login_failure_addresses, self.login_failure_addresses);
    }
}

impl Tls {
    /// TLS is on once a certificate and its key are known; the other keys refine it, and
    /// fill in what an earlier source set.
    fn apply(self, c: &mut Config) -> Result<(), String> {
        let given = self.cert_file.is_some()
            || self.key_file.is_some()
            || self.ca_file.is_some()
            || self.require_client_cert.is_some()
            || self.cert_login.is_some();
        if !given {
            return Ok(());
        }
        let old = c.tls.take();
        let cert = self
            .cert_file
            .or_else(|| old.as_ref().map(|t| t.cert_file.clone()));
        let key = self
            .key_file
            .or_else(|| old.as_ref().map(|t| t.key_file.clone()));
        let (Some(cert_file), Some(key_file)) = (cert, key) else {
            return Err("[tls] needs both cert_file and key_file".into());
        };
        c.tls = Some(TlsConfig {
            cert_file,
            key_file,
            ca_file: self
                .ca_file
                .or_else(|| old.as_ref().and_then(|t| t.ca_file.clone())),
            require_client_cert: self
                .require_client_cert
                .or(old.as_ref().map(|t| t.require_client_cert))
                .unwrap_or(false),
            cert_login: self
                .cert_login
                .or(old.as_ref().map(|t| t.cert_login))
                .unwrap_or(CertLogin::CommonName),
        });
        Ok(())
    }
}
