//! Plugging an [`HsmKey`] into rustls (as a [`rustls::sign::SigningKey`]) and
//! rcgen (as a [`rcgen::RemoteKeyPair`]), plus helpers to make a self-signed
//! certificate for the key and a [`CertifiedKey`] for a server config.

use std::sync::Arc;

use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};

use crate::error::HsmError;
use crate::key::{HsmKey, KeyAlgorithm};

/// A [`Signer`] bound to one scheme; signs through the token.
#[derive(Debug)]
struct HsmSigner {
    key: HsmKey,
    scheme: SignatureScheme,
}

impl Signer for HsmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign(self.scheme, message).map_err(|e| {
            tracing::warn!(error = %e, scheme = ?self.scheme, "TLS handshake signature by HSM failed");
            rustls::Error::General(format!("HSM signature failed: {e}"))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

impl SigningKey for HsmKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self
            .algorithm()
            .signature_schemes()
            .iter()
            .find(|s| offered.contains(s))?;
        Some(Box::new(HsmSigner {
            key: self.clone(),
            scheme: *scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.algorithm() {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => SignatureAlgorithm::ECDSA,
            KeyAlgorithm::Rsa { .. } => SignatureAlgorithm::RSA,
        }
    }
}

/// Certificates are signed with ECDSA-SHA256 (P-256), ECDSA-SHA384 (P-384)
/// or RSA PKCS#1 v1.5 SHA-256.
impl rcgen::RemoteKeyPair for HsmKey {
    fn public_key(&self) -> &[u8] {
        self.public_key_raw()
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let scheme = match self.algorithm() {
            KeyAlgorithm::EcdsaP256 => SignatureScheme::ECDSA_NISTP256_SHA256,
            KeyAlgorithm::EcdsaP384 => SignatureScheme::ECDSA_NISTP384_SHA384,
            KeyAlgorithm::Rsa { .. } => SignatureScheme::RSA_PKCS1_SHA256,
        };
        HsmKey::sign(self, scheme, msg).map_err(|e| {
            tracing::warn!(error = %e, "certificate signature by HSM failed");
            rcgen::Error::RemoteKeyError
        })
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match HsmKey::algorithm(self) {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// Makes a self-signed end-entity certificate for `key` (signed by the
/// token) with `names` as subject alternative names (DNS names or IP
/// addresses) and the first name as CN. Validity is rcgen's default
/// (1975..4096).
pub fn self_signed_certificate(
    key: &HsmKey,
    names: Vec<String>,
) -> Result<CertificateDer<'static>, HsmError> {
    let first = names.first().cloned();
    let mut params = rcgen::CertificateParams::new(names)?;
    if let Some(cn) = first {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    }
    let key_pair = rcgen::KeyPair::from_remote(Box::new(key.clone()))?;
    // A signing failure was already logged (with its cause) by `sign` above.
    let cert = params.self_signed(&key_pair)?;
    Ok(cert.der().clone())
}

/// A [`CertifiedKey`] whose private key is `key` (in the HSM) and whose chain
/// is `chain` (end-entity first). Use it in a server config with
/// `ServerConfig::builder_with_provider(..)...with_no_client_auth()
/// .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)))`.
/// Call [`CertifiedKey::keys_match`] to check that the chain's leaf belongs to
/// the key.
pub fn certified_key(key: HsmKey, chain: Vec<CertificateDer<'static>>) -> Arc<CertifiedKey> {
    Arc::new(CertifiedKey::new(chain, Arc::new(key)))
}
