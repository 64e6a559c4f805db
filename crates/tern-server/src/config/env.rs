//! `TERN_*` environment variables: one per config file key, named by the section's prefix
//! and the key in capitals (`[listeners] amqp_port` is `TERN_AMQP_PORT`, `[log] format` is
//! `TERN_LOG_FORMAT`; see [`Layer::SECTIONS`]). `RUST_LOG` sets the log level too, unless
//! `TERN_LOG_LEVEL` does.

use super::layer::{env_var, Layer, SetError, Value};
use super::ConfigError;

/// The settings the variables `env` gives hold.
pub fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
    let mut layer = Layer::default();
    for (section, prefix, keys) in Layer::SECTIONS {
        for key in *keys {
            let var = env_var(prefix, key);
            if let Some(value) = env(&var) {
                set(&mut layer, section, key, var, value)?;
            }
        }
    }
    if layer.log.level.is_none() {
        if let Some(value) = env("RUST_LOG") {
            set(&mut layer, "log", "level", "RUST_LOG".into(), value)?;
        }
    }
    Ok(layer)
}

fn set(
    layer: &mut Layer,
    section: &str,
    key: &str,
    var: String,
    value: String,
) -> Result<(), ConfigError> {
    match layer.set(section, key, Value::Env(&value)) {
        Ok(()) => Ok(()),
        Err(SetError::Bad(message)) => Err(ConfigError::Env {
            var,
            value,
            message,
        }),
        Err(e) => unreachable!("{var} names a declared key, but {e:?}"),
    }
}

/// Every variable, in the order of the file's sections.
#[cfg(test)]
pub fn variables() -> Vec<String> {
    Layer::SECTIONS
        .iter()
        .flat_map(|(_, prefix, keys)| keys.iter().map(|k| env_var(prefix, k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use crate::config::{Config, LogFormat, MemoryWatermark};

    fn load(vars: &[(&str, &str)], file: Option<&std::path::Path>) -> Result<Config, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(file, &|k| vars.get(k).cloned()).map_err(|e| e.to_string())
    }

    #[test]
    fn variables_are_named_after_their_keys_and_unique() {
        let vars = super::variables();
        for expected in [
            "TERN_AMQP_PORT",
            "TERN_DATA_DIR",
            "TERN_LOG_FORMAT",
            "TERN_MANAGEMENT_PORT",
            "TERN_QUEUE_MEMORY_BYTES",
            "TERN_MEMORY_HIGH_WATERMARK_FRACTION",
            "TERN_TLS_CERT_FILE",
            "TERN_HANDSHAKE_TIMEOUT_MS",
        ] {
            assert!(vars.iter().any(|v| v == expected), "{expected}");
        }
        let unique: std::collections::HashSet<_> = vars.iter().collect();
        assert_eq!(unique.len(), vars.len(), "{vars:?}");
    }

    #[test]
    fn variables_override_the_defaults() {
        let c = load(
            &[
                ("TERN_AMQP_PORT", "5673"),
                ("TERN_DATA_DIR", "/srv/tern"),
                ("TERN_LOG_FORMAT", "json"),
                ("TERN_LOOPBACK_USERS", "none"),
                ("TERN_HANDSHAKE_TIMEOUT_MS", "2500"),
                ("TERN_MEMORY_HIGH_WATERMARK_BYTES", "1000000"),
                ("TERN_TLS_REQUIRE_CLIENT_CERT", "true"),
                ("TERN_TLS_CERT_FILE", "c.pem"),
                ("TERN_TLS_KEY_FILE", "k.pem"),
            ],
            None,
        )
        .expect("loads");
        assert_eq!(c.amqp_port, 5673);
        assert_eq!(c.data_dir, std::path::PathBuf::from("/srv/tern"));
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(c.loopback_users.is_empty());
        assert_eq!(c.handshake_timeout, Duration::from_millis(2500));
        assert_eq!(c.memory_high_watermark, MemoryWatermark::Bytes(1_000_000));
        assert!(c.tls.is_some_and(|t| t.require_client_cert));
    }

    #[test]
    fn a_bad_variable_is_named_with_its_value() {
        let e = load(&[("TERN_AMQP_PORT", "http")], None).unwrap_err();
        assert_eq!(
            e,
            "environment variable TERN_AMQP_PORT=\"http\": invalid digit found in string"
        );
        let e = load(&[("TERN_LOG_FORMAT", "xml")], None).unwrap_err();
        assert!(
            e.starts_with("environment variable TERN_LOG_FORMAT=\"xml\""),
            "{e}"
        );
    }

    #[test]
    fn the_log_level_comes_from_tern_log_level_then_rust_log() {
        let c = load(&[("RUST_LOG", "warn")], None).expect("loads");
        assert_eq!(c.log.level, "warn");
        let both = [("RUST_LOG", "warn"), ("TERN_LOG_LEVEL", "debug")];
        assert_eq!(load(&both, None).expect("loads").log.level, "debug");
    }

    #[test]
    fn variables_override_the_file_which_overrides_the_defaults() {
        let dir = std::env::temp_dir().join(format!("tern-config-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tern.toml");
        let text = "[listeners]\namqp_port = 6000\namqps_port = 6001\n[memory]\nhigh_watermark_bytes = 5\n";
        std::fs::write(&path, text).expect("write");
        let vars = [
            ("TERN_AMQPS_PORT", "7001"),
            ("TERN_MEMORY_HIGH_WATERMARK_FRACTION", "0.5"),
        ];
        let c = load(&vars, Some(&path)).expect("loads");
        assert_eq!((c.amqp_port, c.amqps_port), (6000, 7001));
        assert_eq!(c.memory_high_watermark, MemoryWatermark::Fraction(0.5));
        assert_eq!(c.management_port, Config::default().management_port);
        let path_var = path.to_string_lossy().into_owned();
        let named = load(&[("TERN_CONFIG", &path_var)], None).expect("loads");
        assert_eq!(named.amqp_port, 6000, "TERN_CONFIG names the file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = load(&[], Some(std::path::Path::new("/nonexistent/tern.toml"))).unwrap_err();
        assert!(e.starts_with("config file /nonexistent/tern.toml: "), "{e}");
    }
}
