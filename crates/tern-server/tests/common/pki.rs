//! A test PKI: a CA of its own and certificates it signs, as files in a directory that goes
//! when the PKI does.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// A CA and the files a test needs, in a directory of its own.
pub struct Pki {
    pub dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(super::unique("tern-tls"));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let ca_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Tern test CA");
        let ca = params.self_signed(&ca_key).expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        let pki = Pki { dir, ca, ca_key };
        let mut server = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        server
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        pki.issue("server", server);
        pki
    }

    /// A certificate signed by the CA, written as NAME.pem and NAME.key.
    pub fn issue(&self, name: &str, params: CertificateParams) {
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write");
    }

    /// A client certificate with this common name (and, if given, an email SAN).
    pub fn client(&self, name: &str, cn: &str, email: Option<&str>) {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(e) = email {
            params
                .subject_alt_names
                .push(SanType::Rfc822Name(e.try_into().expect("ia5")));
        }
        self.issue(name, params);
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}
