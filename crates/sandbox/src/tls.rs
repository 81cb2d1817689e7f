//! The sandbox's own certificate authority and serving certificate.
//!
//! The CA key and certificate persist in the sandbox directory so a restarted sandbox keeps
//! the kubeconfig valid; the serving certificate is issued fresh at every start.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Failure to create or load TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("cannot generate the sandbox certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// The CA files could not be read or written.
    #[error("cannot access {path}: {source}; check the sandbox directory permissions")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// rustls refused the generated material.
    #[error("cannot configure TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// CA plus serving certificate.
pub struct TlsMaterial {
    /// PEM of the CA certificate (goes into the kubeconfig and `/cacerts`).
    pub ca_pem: String,
    /// Server configuration for tokio-rustls.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "k3s-server-ca@kubestrap-sandbox");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn write_private(path: &Path, data: &str) -> Result<(), TlsError> {
    crate::private_file::write(path, data.as_bytes()).map_err(|source| TlsError::Io {
        path: path.into(),
        source,
    })
}

/// Loads the CA from `dir` (creating it on first start) and issues a serving certificate.
///
/// # Errors
/// File access or certificate generation failures.
pub fn load_or_create(dir: &Path) -> Result<TlsMaterial, TlsError> {
    let key_path = dir.join("ca.key");
    let crt_path = dir.join("ca.crt");
    let params = ca_params()?;
    let (ca_key, ca_pem) = match (
        std::fs::read_to_string(&key_path),
        std::fs::read_to_string(&crt_path),
    ) {
        (Ok(k), Ok(c)) => (KeyPair::from_pem(&k)?, c),
        _ => {
            let key = KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&crt_path, cert.pem()).map_err(|source| TlsError::Io {
                path: crt_path.clone(),
                source,
            })?;
            (key, cert.pem())
        }
    };
    let issuer = Issuer::new(params, ca_key);
    let mut sp = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "k3s");
    sp.distinguished_name = dn;
    let server_key = KeyPair::generate()?;
    let server_cert = sp.signed_by(&server_key, &issuer)?;
    let ca_der = rustls_pemfile_der(&ca_pem);
    let mut chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
    if let Some(ca) = ca_der {
        chain.push(ca);
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem,
        server_config: Arc::new(cfg),
    })
}

/// Decodes the single certificate of a PEM string.
fn rustls_pemfile_der(pem: &str) -> Option<CertificateDer<'static>> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()
        .map(CertificateDer::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_persists_across_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path()).expect("first");
        let b = load_or_create(dir.path()).expect("second");
        assert_eq!(a.ca_pem, b.ca_pem);
        assert!(a.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
