//! Authentication: SASL responses, password hashes in RabbitMQ's format, and a budget of
//! failed logins per source address.
//!
//! A password hash is a 4-byte random salt followed by SHA-256 (or SHA-512, for hashes imported
//! from a RabbitMQ configured so) of salt ++ password: `rabbit_password_hashing_sha256`. Its
//! base64 form is what RabbitMQ's definitions carry as `password_hash`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use tern_amqp::{FieldTable, FieldValue, LongStr};
use tern_core::meta::access::{HashAlgorithm, PasswordHash};

const SALT_BYTES: usize = 4;

/// A fresh salted SHA-256 hash of `password`.
pub fn hash_password(password: &str) -> Result<PasswordHash, ring::error::Unspecified> {
    let mut salt = [0u8; SALT_BYTES];
    SystemRandom::new().fill(&mut salt)?;
    Ok(salted_hash(HashAlgorithm::Sha256, &salt, password))
}

fn salted_hash(algorithm: HashAlgorithm, salt: &[u8], password: &str) -> PasswordHash {
    let alg = match algorithm {
        HashAlgorithm::Sha256 => &digest::SHA256,
        HashAlgorithm::Sha512 => &digest::SHA512,
    };
    let mut ctx = digest::Context::new(alg);
    ctx.update(salt);
    ctx.update(password.as_bytes());
    let mut salted = BytesMut::with_capacity(salt.len() + alg.output_len());
    salted.extend_from_slice(salt);
    salted.extend_from_slice(ctx.finish().as_ref());
    PasswordHash {
        algorithm,
        salted: salted.freeze(),
    }
}

/// Whether `password` is the one `hash` was made from. Compares in constant time.
pub fn verify_password(hash: &PasswordHash, password: &str) -> bool {
    if hash.salted.len() < SALT_BYTES {
        return false;
    }
    let again = salted_hash(hash.algorithm, &hash.salted[..SALT_BYTES], password);
    let (a, b) = (&again.salted[..], &hash.salted[..]);
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// PLAIN: `authzid \0 authcid \0 password`.
pub fn parse_plain(response: &LongStr) -> Option<(String, String)> {
    let mut parts = response.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let password = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    parts.next().is_none().then_some((user, password))
}

/// AMQPLAIN: a field table without its length prefix, holding LOGIN and PASSWORD.
pub fn parse_amqplain(response: &LongStr) -> Option<(String, String)> {
    let mut framed = BytesMut::with_capacity(response.len() + 4);
    framed.extend_from_slice(&(u32::try_from(response.len()).ok()?).to_be_bytes());
    framed.extend_from_slice(response);
    let mut bytes: Bytes = framed.freeze();
    let table = FieldTable::decode(&mut bytes).ok()?;
    let text = |key: &str| -> Option<String> {
        match table.get(key)? {
            FieldValue::LongStr(b) | FieldValue::Bytes(b) => {
                std::str::from_utf8(&b[..]).ok().map(str::to_owned)
            }
            _ => None,
        }
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

/// Failed logins per source address: past `limit` within `window`, that address's attempts
/// are refused unchecked until the window ends. At most `max_addresses` are tracked; when
/// full, the ones whose window ended are forgotten, then the map is cleared (an attacker with
/// that many addresses gets no budget worth having anyway).
pub struct LoginLimiter {
    limit: u32,
    window: Duration,
    max_addresses: usize,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    pub fn new(limit: u32, window: Duration, max_addresses: usize) -> Self {
        LoginLimiter {
            limit,
            window,
            max_addresses,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a login from `ip` may be tried now.
    pub fn allows(&self, ip: IpAddr, now: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&ip) {
            Some((since, n)) => *n < self.limit || now.duration_since(*since) >= self.window,
            None => true,
        }
    }

    /// A login from `ip` failed.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= self.max_addresses && !failures.contains_key(&ip) {
            let window = self.window;
            failures.retain(|_, (since, _)| now.duration_since(*since) < window);
            if failures.len() >= self.max_addresses {
                failures.clear();
            }
        }
        let entry = failures.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    fn decode(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64")
    }

    #[test]
    fn a_hash_verifies_its_password_and_no_other() {
        let h = hash_password("s3cret").expect("random");
        assert_eq!(h.salted.len(), 4 + 32);
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "s3cret "));
        let other = hash_password("s3cret").expect("random");
        assert_ne!(h.salted, other.salted, "salted afresh");
    }

    /// A hash made by RabbitMQ 3.10 for the password guest (`rabbitmqctl add_user`), as its definitions
    /// export carries it.
    #[test]
    fn a_hash_exported_from_rabbitmq_verifies() {
        let hash = PasswordHash {
            algorithm: HashAlgorithm::Sha256,
            salted: Bytes::from(decode("D5HUAalDjGnDQDzMUv7Lg9QoBd3jeUpud2Bjjh7Fo44GJQxK")),
        };
        assert!(verify_password(&hash, "guest"));
        assert!(!verify_password(&hash, "Guest"));
    }

    #[test]
    fn plain_response_splits_into_user_and_password() {
        let r = Bytes::from_static(b"\0guest\0secret");
        assert_eq!(parse_plain(&r), Some(("guest".into(), "secret".into())));
        assert_eq!(parse_plain(&Bytes::from_static(b"guest")), None);
        assert_eq!(parse_plain(&Bytes::from_static(b"\0a\0b\0c")), None);
    }

    #[test]
    fn an_address_past_its_failure_budget_waits_for_the_window() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60), 2);
        let (ip, other) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.allows(ip, t0));
            limiter.failed(ip, t0);
        }
        assert!(!limiter.allows(ip, t0 + Duration::from_secs(59)));
        assert!(limiter.allows(other, t0), "others keep their budget");
        assert!(limiter.allows(ip, t0 + Duration::from_secs(60)));
        limiter.failed(ip, t0 + Duration::from_secs(61));
        assert!(
            limiter.allows(ip, t0 + Duration::from_secs(61)),
            "a new window"
        );
    }
}
