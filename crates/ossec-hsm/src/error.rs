//! The crate's error type, [`HsmError`]: every variant says what was being
//! done when the failure happened (which module, token, key), and none of
//! them ever carries the PIN.

use std::fmt;
use std::path::PathBuf;

/// A PKCS#11 (cryptoki) failure, displayed compactly as
/// `C_Login: CKR_PIN_INCORRECT` rather than the library's long sentences.
#[derive(Debug)]
pub struct Pkcs11Failure(pub cryptoki::error::Error);

impl Pkcs11Failure {
    /// The PKCS#11 return value, if this failure came from the module.
    pub fn rv(&self) -> Option<cryptoki::error::RvError> {
        match &self.0 {
            cryptoki::error::Error::Pkcs11(rv, _) => Some(*rv),
            _ => None,
        }
    }
}

impl From<cryptoki::error::Error> for Pkcs11Failure {
    fn from(e: cryptoki::error::Error) -> Self {
        Pkcs11Failure(e)
    }
}

/// `PinIncorrect` -> `CKR_PIN_INCORRECT`.
fn ckr_name(rv: &cryptoki::error::RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

impl fmt::Display for Pkcs11Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            cryptoki::error::Error::Pkcs11(rv, func) => {
                write!(f, "C_{func:?} returned {}", ckr_name(rv))
            }
            other => write!(f, "{other}"),
        }
    }
}

impl std::error::Error for Pkcs11Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Everything that can go wrong finding, opening or using an HSM key.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The PKCS#11 URI could not be parsed; `part` names the offending piece.
    #[error("invalid PKCS#11 URI: {part}: {reason}")]
    InvalidUri { part: String, reason: String },

    /// The URI has no `module-path` query attribute.
    #[error(
        "PKCS#11 URI has no module-path query attribute (which PKCS#11 library to load), e.g. \
         pkcs11:token=collector;object=enroll?module-path=/usr/lib/softhsm/libsofthsm2.so"
    )]
    MissingModulePath,

    /// The module file does not exist.
    #[error("loading PKCS#11 module {}: no such file", path.display())]
    ModuleNotFound { path: PathBuf },

    /// dlopen / C_GetFunctionList failed.
    #[error("loading PKCS#11 module {}: {source}", path.display())]
    LoadModule {
        path: PathBuf,
        #[source]
        source: Pkcs11Failure,
    },

    /// C_Initialize failed.
    #[error("initializing PKCS#11 module {}: {source}", path.display())]
    Initialize {
        path: PathBuf,
        #[source]
        source: Pkcs11Failure,
    },

    /// Listing slots or reading slot/token information failed.
    #[error("listing slots and tokens of PKCS#11 module {}: {source}", module.display())]
    Slots {
        module: PathBuf,
        #[source]
        source: Pkcs11Failure,
    },

    /// No initialized token in any slot of the module.
    #[error("PKCS#11 module {} has no slot with an initialized token", module.display())]
    NoToken { module: PathBuf },

    /// No token matched the URI's token attributes; `found` lists the labels seen.
    #[error(
        "no token {wanted} in PKCS#11 module {}; tokens found: {}",
        module.display(),
        list(found)
    )]
    TokenNotFound {
        module: PathBuf,
        wanted: String,
        found: Vec<String>,
    },

    /// `slot-id` given but no such slot with a token.
    #[error(
        "PKCS#11 module {} has no slot {slot_id} with a token; slots with tokens: {available:?}",
        module.display()
    )]
    SlotNotFound {
        module: PathBuf,
        slot_id: u64,
        available: Vec<u64>,
    },

    /// C_OpenSession failed.
    #[error("opening a session on token \"{token}\": {source}")]
    OpenSession {
        token: String,
        #[source]
        source: Pkcs11Failure,
    },

    /// C_Login failed.
    #[error("login as user to token \"{token}\" failed (wrong PIN?): {source}")]
    Login {
        token: String,
        #[source]
        source: Pkcs11Failure,
    },

    /// Searching for or reading objects failed.
    #[error("{what} on token \"{token}\": {source}")]
    Objects {
        what: String,
        token: String,
        #[source]
        source: Pkcs11Failure,
    },

    /// No private key matched; `found` lists the labels of the private keys seen.
    #[error(
        "no private key with {wanted} on token \"{token}\"; private keys found: {}",
        list(found)
    )]
    KeyNotFound {
        wanted: String,
        token: String,
        found: Vec<String>,
    },

    /// More than one private key matched.
    #[error(
        "{count} private keys match {wanted} on token \"{token}\"; give a unique object= or id="
    )]
    AmbiguousKey {
        wanted: String,
        token: String,
        count: usize,
    },

    /// The key's public half could not be determined.
    #[error("finding the public key of \"{key}\": {reason}")]
    PublicKey { key: String, reason: String },

    /// Key type, curve, or key property that this crate cannot use.
    #[error("unsupported key: {what}")]
    Unsupported { what: String },

    /// The token refused or failed to sign.
    #[error("signing with HSM key \"{key}\" failed: {reason}")]
    Sign { key: String, reason: String },

    /// rcgen could not make the certificate.
    #[error("making a self-signed certificate with the HSM key: {0}")]
    Certificate(#[from] rcgen::Error),

    /// File I/O (PIN file, SoftHSM config).
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Test support ([`crate::softhsm`]) failure.
    #[error("SoftHSM test token: {0}")]
    TestToken(String),
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names() {
        assert_eq!(
            ckr_name(&cryptoki::error::RvError::PinIncorrect),
            "CKR_PIN_INCORRECT"
        );
        assert_eq!(
            ckr_name(&cryptoki::error::RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }
}
