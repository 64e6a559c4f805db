//! `amqp://user:pass@host:port/vhost?heartbeat=N`, read the way RabbitMQ's URI spec reads it
//! (<https://www.rabbitmq.com/docs/uri-spec>), with its defaults for missing parts.

use anyhow::{anyhow, bail, Context, Result};

/// Where and as whom to connect.
#[derive(Clone, Debug, PartialEq)]
pub struct Uri {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
    /// `?heartbeat=N`: seconds; `Some(0)` turns heartbeats off, `None` takes the server's.
    pub heartbeat_secs: Option<u16>,
}

impl std::str::FromStr for Uri {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Uri> {
        if s.starts_with("amqps://") {
            bail!("amqps:// (TLS) is not supported by this client; use amqp://");
        }
        let rest = s
            .strip_prefix("amqp://")
            .ok_or_else(|| anyhow!("URI must start with amqp://"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, vhost) = match rest.split_once('/') {
            Some((a, v)) => (a, percent_decode(v)?),
            None => (rest, String::new()),
        };
        let (creds, hostport) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        let (user, password) = match creds.map(|c| c.split_once(':').unwrap_or((c, ""))) {
            Some((u, p)) => (percent_decode(u)?, percent_decode(p)?),
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = split_host_port(hostport)?;
        Ok(Uri {
            host: or_default(host, "localhost"),
            port,
            user,
            password,
            // An empty vhost names nothing useful; RabbitMQ's clients also map it to "/".
            vhost: or_default(vhost, "/"),
            heartbeat_secs: heartbeat_param(query)?,
        })
    }
}

fn or_default(s: String, default: &str) -> String {
    if s.is_empty() {
        default.to_owned()
    } else {
        s
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 5672.
fn split_host_port(s: &str) -> Result<(String, u16)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("unclosed [ in URI host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("bad port {p:?} in URI"))?,
        None => 5672,
    };
    Ok((percent_decode(host)?, port))
}

fn heartbeat_param(query: &str) -> Result<Option<u16>> {
    let mut heartbeat = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if let Some(v) = pair.strip_prefix("heartbeat=") {
            heartbeat = Some(v.parse().context("bad heartbeat in URI")?);
        }
    }
    Ok(heartbeat)
}

fn percent_decode(s: &str) -> Result<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex: String = bytes.by_ref().take(2).map(char::from).collect();
        if hex.len() != 2 {
            bail!("truncated %-escape in URI");
        }
        out.push(u8::from_str_radix(&hex, 16).context("bad %-escape in URI")?);
    }
    String::from_utf8(out).context("URI is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn a_full_uri_with_an_escaped_vhost_is_understood() {
        let u = parse("amqp://guest:guest@127.0.0.1:5680/%2f");
        assert_eq!(
            (u.host.as_str(), u.port, u.vhost.as_str()),
            ("127.0.0.1", 5680, "/")
        );
        assert_eq!(u.heartbeat_secs, None);
    }

    #[test]
    fn escaped_credentials_and_the_default_port_are_understood() {
        let u = parse("amqp://bob:p%40ss@broker/prod");
        assert_eq!(
            (u.user.as_str(), u.password.as_str(), u.port),
            ("bob", "p@ss", 5672)
        );
        assert_eq!(u.vhost, "prod");
    }

    #[test]
    fn missing_parts_take_rabbitmq_defaults() {
        let u = parse("amqp://localhost");
        assert_eq!(
            (u.user.as_str(), u.password.as_str(), u.vhost.as_str()),
            ("guest", "guest", "/")
        );
        assert_eq!(parse("amqp://").host, "localhost");
        assert_eq!(parse("amqp://h/").vhost, "/");
        assert_eq!(parse("amqp://user@h").password, "");
    }

    #[test]
    fn ipv6_hosts_and_the_heartbeat_parameter_are_understood() {
        let u = parse("amqp://[::1]:5673/v?heartbeat=10");
        assert_eq!(
            (u.host.as_str(), u.port, u.vhost.as_str()),
            ("::1", 5673, "v")
        );
        assert_eq!(u.heartbeat_secs, Some(10));
        assert_eq!(parse("amqp://[::1]").port, 5672);
        assert_eq!(parse("amqp://h?heartbeat=0&x=1").heartbeat_secs, Some(0));
    }

    #[test]
    fn malformed_uris_are_refused() {
        for bad in [
            "http://x",
            "amqps://x",
            "amqp://h:notaport/",
            "amqp://[::1/",
            "amqp://h/%2",
            "amqp://h/%zz",
            "amqp://h?heartbeat=-1",
        ] {
            assert!(bad.parse::<Uri>().is_err(), "{bad} was accepted");
        }
    }
}
