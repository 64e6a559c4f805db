//! TLS for AMQP (`amqps://`, port 5671) and for the HTTPS listeners ([`http_acceptor`]):
//! rustls with the ring provider, TLS 1.2 and 1.3 only.
//!
//! The server certificate chain and key come from PEM files. With a CA file the server asks
//! for a client certificate and verifies it against that CA (RabbitMQ's `verify_peer`);
//! `require_client_cert` refuses clients without one (`fail_if_no_peer_cert`). A verified
//! client certificate names a user for SASL EXTERNAL: its subject's common name, or its first
//! subject alternative name of a configured type ([`CertLogin`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Clone, Debug, PartialEq)]
pub struct TlsConfig {
    /// PEM: the server's certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CAs client certificates are verified against. Without it no client
    /// certificate is asked for.
    pub ca_file: Option<PathBuf>,
    /// Refuse clients that present no certificate (needs `ca_file`).
    pub require_client_cert: bool,
    /// Where EXTERNAL finds the user name in a client certificate.
    pub cert_login: CertLogin,
}

/// RabbitMQ's `ssl_cert_login_from` (common_name, or subject_alternative_name with
/// `ssl_cert_login_san_type`; the first name of that type is used). Spelled `common_name`,
/// `san_dns`, `san_email`, `san_uri` in the config file and environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertLogin {
    CommonName,
    SanDns,
    SanEmail,
    SanUri,
}

impl std::str::FromStr for CertLogin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "common_name" => Ok(CertLogin::CommonName),
            "san_dns" => Ok(CertLogin::SanDns),
            "san_email" => Ok(CertLogin::SanEmail),
            "san_uri" => Ok(CertLogin::SanUri),
            _ => Err(format!(
                "unknown variant `{s}`, expected one of `common_name`, `san_dns`, `san_email`, `san_uri`"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {what}")]
    File { path: PathBuf, what: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("require_client_cert needs a CA file (tls_ca)")]
    NoCa,
}

fn file_error(path: &Path, what: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        what: what.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The acceptor for the amqps listener; errors name the file at fault.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let (provider, chain, key) = server_identity(cfg)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &cfg.ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca)? {
                roots.add(cert).map_err(|e| file_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if cfg.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None if cfg.require_client_cert => return Err(TlsError::NoCa),
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

type Identity = (
    Arc<rustls::crypto::CryptoProvider>,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
);

/// A node's mutual TLS on the cluster port: it accepts only peers whose certificate the CA
/// signed, and presents its own when it dials (checked there by the host it dialed).
pub fn cluster_tls(
    cfg: &crate::config::ClusterTls,
) -> Result<tern_cluster::nodes::NodeTls, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut roots = RootCertStore::empty();
    for cert in certs(&cfg.ca_file)? {
        roots.add(cert).map_err(|e| file_error(&cfg.ca_file, e))?;
    }
    let roots = Arc::new(roots);
    let chain = certs(&cfg.cert_file)?;
    let key =
        || PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| file_error(&cfg.key_file, e));
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key()?)?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key()?)?;
    Ok(tern_cluster::nodes::NodeTls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
    })
}

/// The crypto provider, and the server's certificate chain and key read from their files.
fn server_identity(cfg: &TlsConfig) -> Result<Identity, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&cfg.cert_file)?;
    let key =
        PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| file_error(&cfg.key_file, e))?;
    Ok((provider, chain, key))
}

/// The HTTPS listeners' TLS (management, Prometheus): `cfg`'s certificate and key, no client
/// certificate asked for (HTTP basic auth is the login), HTTP/1.1 offered by ALPN.
pub fn http_acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let (provider, chain, key) = server_identity(cfg)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The user name a (verified) client certificate carries, if any.
pub fn cert_user(cert: &CertificateDer<'_>, from: CertLogin) -> Option<String> {
    let (_, x509) = X509Certificate::from_der(cert.as_ref()).ok()?;
    if from == CertLogin::CommonName {
        let cn = x509.subject().iter_common_name().next()?;
        return cn.as_str().ok().map(str::to_owned);
    }
    let san = x509.subject_alternative_name().ok()??;
    san.value
        .general_names
        .iter()
        .find_map(|name| match (from, name) {
            (CertLogin::SanDns, GeneralName::DNSName(n))
            | (CertLogin::SanEmail, GeneralName::RFC822Name(n))
            | (CertLogin::SanUri, GeneralName::URI(n)) => Some(n.to_string()),
            _ => None,
        })
}

/// What an amqps connection negotiated, as RabbitMQ's management API names it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsSession {
    /// `tlsv1.3`, `tlsv1.2`.
    pub protocol: String,
    /// The bulk cipher (`aes_256_gcm`, `chacha20_poly1305`).
    pub cipher: String,
    /// The suite's hash (`sha384`).
    pub hash: String,
    /// `any` under TLS 1.3 (the suite does not fix it), else `ecdhe_rsa` or `ecdhe_ecdsa`.
    pub key_exchange: String,
    /// The client certificate's subject, issuer and validity, when it gave one.
    pub peer_cert: Option<(String, String, String)>,
}

/// The negotiated protocol, suite and client certificate of a finished handshake.
pub fn session(conn: &rustls::ServerConnection) -> TlsSession {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "tlsv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "tlsv1.2",
        _ => "unknown",
    };
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()).to_ascii_lowercase())
        .unwrap_or_default();
    let (key_exchange, cipher, hash) = split_suite(&suite);
    let peer_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| X509Certificate::from_der(c.as_ref()).ok())
        .map(|(_, x)| {
            let v = x.validity();
            let validity = format!("{} - {}", v.not_before, v.not_after);
            (x.subject().to_string(), x.issuer().to_string(), validity)
        });
    TlsSession {
        protocol: protocol.into(),
        cipher,
        hash,
        key_exchange,
        peer_cert,
    }
}

/// `tls13_aes_256_gcm_sha384` into (`any`, `aes_256_gcm`, `sha384`);
/// `tls_ecdhe_rsa_with_aes_128_gcm_sha256` into (`ecdhe_rsa`, `aes_128_gcm`, `sha256`).
fn split_suite(suite: &str) -> (String, String, String) {
    let (kx, rest) = match suite.strip_prefix("tls13_") {
        Some(rest) => ("any", rest),
        None => {
            let rest = suite.strip_prefix("tls_").unwrap_or(suite);
            rest.split_once("_with_").unwrap_or(("unknown", rest))
        }
    };
    let (cipher, hash) = rest.rsplit_once('_').unwrap_or((rest, ""));
    (kx.into(), cipher.into(), hash.into())
}

#[cfg(test)]
mod suite_tests {
    use super::split_suite;

    #[test]
    fn suites_split_into_rabbitmqs_names() {
        let parts = |k: &str, c: &str, h: &str| (k.to_string(), c.to_string(), h.to_string());
        assert_eq!(
            split_suite("tls13_aes_256_gcm_sha384"),
            parts("any", "aes_256_gcm", "sha384")
        );
        assert_eq!(
            split_suite("tls_ecdhe_rsa_with_chacha20_poly1305_sha256"),
            parts("ecdhe_rsa", "chacha20_poly1305", "sha256")
        );
    }
}
