//! TLS signing keys held in an HSM through PKCS#11 (SoftHSM2 in tests, AWS
//! CloudHSM or any PKCS#11 token in production), for the collector's
//! enrollment listener.
//!
//! The private key never leaves the token: [`HsmKey`] finds it from an RFC
//! 7512 URI ([`Pkcs11Uri`]), logs in with the user PIN, and every signature
//! (TLS handshake via [`rustls::sign::SigningKey`], certificate via
//! [`rcgen::RemoteKeyPair`]) is a `C_Sign` on the token. Supported keys:
//! ECDSA P-256 and P-384, and RSA (>= 2048 bits; PSS for TLS 1.3, PKCS#1
//! v1.5 or PSS for TLS 1.2).
//!
//! ```no_run
//! use ossec_hsm::{certified_key, self_signed_certificate, HsmKey, Pkcs11Uri};
//! # fn main() -> Result<(), ossec_hsm::HsmError> {
//! let uri = Pkcs11Uri::parse(
//!     "pkcs11:token=collector;object=enroll?module-path=/usr/lib/softhsm/libsofthsm2.so",
//! )?;
//! let pin = ossec_hsm::read_pin_file("/etc/ossec/enroll.pin".as_ref())?;
//! let key = HsmKey::open(&uri, &pin)?;
//! let cert = self_signed_certificate(&key, vec!["collector.example".into()])?;
//! let ck = certified_key(key, vec![cert]);
//! let config = rustls::ServerConfig::builder_with_provider(
//!         std::sync::Arc::new(rustls::crypto::ring::default_provider()))
//!     .with_safe_default_protocol_versions().unwrap()
//!     .with_no_client_auth()
//!     .with_cert_resolver(std::sync::Arc::new(rustls::sign::SingleCertAndKey::from(ck)));
//! # let _ = config; Ok(()) }
//! ```
//!
//! PKCS#11 modules are loaded and `C_Initialize`d once per process and kept
//! (see `module`). The PIN is never printed or logged.
//!
//! [`softhsm`] is test/demo support (creating SoftHSM2 tokens and keys) and is
//! deliberately part of the normal library so other crates' tests can use it.

mod der;
mod error;
mod key;
mod module;
pub mod softhsm;
mod tls;
mod uri;

pub use error::{HsmError, Pkcs11Failure};
pub use key::{read_pin_file, HsmKey, KeyAlgorithm};
pub use tls::{certified_key, self_signed_certificate};
pub use uri::{percent_encode, Pkcs11Uri};

/// The `cryptoki` crate this library uses, for low-level checks in tests
/// (e.g. [`softhsm::TestToken::open_user_session`]).
pub use cryptoki;
