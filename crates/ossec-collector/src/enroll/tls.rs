//! The enrollment listener's TLS: rustls (TLS 1.2 and 1.3, ring) with the
//! certificate and key from PEM files, from an HSM (PKCS#11), or
//! self-signed at first start and kept next to the store (Wazuh's
//! `sslmanager.cert`/`sslmanager.key`), plus optional client certificates.
//!
//! Owns loading and making certificates and logging the SHA-256
//! fingerprint operators pin.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::EnrollSettings;

/// File names of the self-signed certificate, as Wazuh names them.
pub const SELF_SIGNED_CERT: &str = "sslmanager.cert";
pub const SELF_SIGNED_KEY: &str = "sslmanager.key";

/// `AB:CD:…` SHA-256 of a certificate, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read the certificate file {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(chain)
}

fn file_key(
    provider: &rustls::crypto::CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key_path: &Path,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("cannot read a PEM private key from {}", key_path.display()))?;
    let ck = CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!(
            "the key in {} does not fit the certificate or is of an unsupported type",
            key_path.display()
        )
    })?;
    Ok(Arc::new(ck))
}

/// Names the self-signed certificate is made for.
fn names() -> Vec<String> {
    let mut v = vec!["ossec-collector".to_owned(), "localhost".to_owned()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !v.iter().any(|n| n == h) {
            v.push(h.to_owned());
        }
    }
    v
}

/// Loads `sslmanager.cert`/`.key` from `dir`, or makes them (ECDSA P-256,
/// key file mode 0600).
fn self_signed(
    provider: &rustls::crypto::CryptoProvider,
    dir: &Path,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let (cert_path, key_path) = (dir.join(SELF_SIGNED_CERT), dir.join(SELF_SIGNED_KEY));
    if cert_path.exists() && key_path.exists() {
        return file_key(provider, read_chain(&cert_path)?, &key_path);
    }
    let made = rcgen::generate_simple_self_signed(names())
        .map_err(|e| anyhow!("cannot make a self-signed certificate: {e}"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::tools::write_secret_file(&key_path, made.key_pair.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    std::fs::write(&cert_path, made.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    tracing::info!(
        cert = %cert_path.display(),
        "made a self-signed enrollment certificate (give --enroll-cert/--enroll-key to use your own)"
    );
    file_key(provider, vec![made.cert.der().clone()], &key_path)
}

/// The key in an HSM, with `--enroll-cert` or a self-signed certificate
/// signed by the HSM key (made at every start: give `--enroll-cert` to keep
/// one fingerprint).
fn hsm_key(uri: &str, pin_file: &Path, cert: Option<&Path>) -> anyhow::Result<Arc<CertifiedKey>> {
    let parsed = ossec_hsm::Pkcs11Uri::parse(uri)
        .with_context(|| "--enroll-key-pkcs11 is not a usable PKCS#11 URI".to_owned())?;
    let pin = ossec_hsm::read_pin_file(pin_file)
        .with_context(|| format!("cannot read the PIN file {}", pin_file.display()))?;
    let key = ossec_hsm::HsmKey::open(&parsed, &pin)
        .with_context(|| format!("cannot use the HSM key {}", parsed.key_description()))?;
    let chain = match cert {
        Some(p) => read_chain(p)?,
        None => vec![ossec_hsm::self_signed_certificate(&key, names())
            .context("cannot make a self-signed certificate with the HSM key")?],
    };
    tracing::info!(key = %parsed.key_description(), algorithm = %key.algorithm(), "enrollment TLS key is in the HSM");
    Ok(ossec_hsm::certified_key(key, chain))
}

/// Builds the acceptor for the settings and logs the certificate's
/// fingerprint.
pub fn acceptor(s: &EnrollSettings) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let provider = provider();
    let ck = match (&s.key_pkcs11, &s.cert, &s.key) {
        (Some(uri), cert, _) => {
            let pin = s
                .pin_file
                .as_deref()
                .ok_or_else(|| anyhow!("--enroll-key-pkcs11 needs --enroll-pin-file"))?;
            hsm_key(uri, pin, cert.as_deref())?
        }
        (None, Some(cert), Some(key)) => file_key(&provider, read_chain(cert)?, key)?,
        _ => self_signed(&provider, &s.cert_dir)?,
    };
    if let Some(leaf) = ck.cert.first() {
        tracing::info!(
            sha256 = %fingerprint(leaf),
            "enrollment certificate SHA-256 fingerprint (pin it on agents with a CA-less setup): {}",
            fingerprint(leaf)
        );
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?;
    let builder = match &s.ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_chain(ca)? {
                roots.add(c).with_context(|| {
                    format!(
                        "{} holds a certificate that is not a usable CA",
                        ca.display()
                    )
                })?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| {
                    format!("cannot use {} to verify agent certificates", ca.display())
                })?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)));
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
