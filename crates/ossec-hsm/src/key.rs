//! [`HsmKey`]: a private key that stays on a PKCS#11 token. Owns finding the
//! token and key from a [`Pkcs11Uri`], logging in, working out the public
//! key and algorithm, and signing through the token (with one re-open and
//! re-login when the session is lost).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rustls::SignatureScheme;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::der;
use crate::error::{HsmError, Pkcs11Failure};
use crate::module;
use crate::uri::{hex, Pkcs11Uri};

/// What kind of key an [`HsmKey`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256, signing SHA-256 digests.
    EcdsaP256,
    /// ECDSA on NIST P-384, signing SHA-384 digests.
    EcdsaP384,
    /// RSA with a modulus of `bits` bits (PSS and PKCS#1 v1.5).
    Rsa {
        /// Modulus size.
        bits: usize,
    },
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::EcdsaP256 => write!(f, "ECDSA P-256"),
            KeyAlgorithm::EcdsaP384 => write!(f, "ECDSA P-384"),
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA-{bits}"),
        }
    }
}

impl KeyAlgorithm {
    /// The TLS signature schemes this key can make, most preferred first.
    pub fn signature_schemes(&self) -> &'static [SignatureScheme] {
        match self {
            KeyAlgorithm::EcdsaP256 => &[SignatureScheme::ECDSA_NISTP256_SHA256],
            KeyAlgorithm::EcdsaP384 => &[SignatureScheme::ECDSA_NISTP384_SHA384],
            KeyAlgorithm::Rsa { .. } => &[
                SignatureScheme::RSA_PSS_SHA512,
                SignatureScheme::RSA_PSS_SHA384,
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::RSA_PKCS1_SHA512,
                SignatureScheme::RSA_PKCS1_SHA384,
                SignatureScheme::RSA_PKCS1_SHA256,
            ],
        }
    }
}

/// An open session plus the private key's handle in it.
struct Live {
    session: Session,
    key: ObjectHandle,
}

struct Inner {
    ctx: Pkcs11,
    module: PathBuf,
    /// The URI with `pin_value` removed; used again to re-find slot and key.
    uri: Pkcs11Uri,
    pin: AuthPin,
    token_label: String,
    key_label: String,
    key_id: Vec<u8>,
    alg: KeyAlgorithm,
    /// EC: uncompressed point; RSA: PKCS#1 RSAPublicKey DER (rcgen's format).
    public_raw: Vec<u8>,
    spki: Vec<u8>,
    live: Mutex<Option<Live>>,
    signatures: AtomicU64,
}

/// A private key on a PKCS#11 token, used for signing through the token.
///
/// Cheap to clone (an `Arc` inside); `Send + Sync`. Signing holds a mutex
/// around the one PKCS#11 session, so signatures are serialized (fine for
/// enrollment rates). Calls block the calling thread for the token's
/// round-trip. `Debug` shows module, token, label, id and algorithm, never
/// the PIN.
#[derive(Clone)]
pub struct HsmKey {
    inner: Arc<Inner>,
}

impl fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmKey")
            .field("module", &self.inner.module)
            .field("token", &self.inner.token_label)
            .field("label", &self.inner.key_label)
            .field("id", &hex(&self.inner.key_id))
            .field("algorithm", &self.inner.alg)
            .finish_non_exhaustive()
    }
}

fn pk(e: CkError) -> Pkcs11Failure {
    Pkcs11Failure(e)
}

fn token_matches(uri: &Pkcs11Uri) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &uri.token {
        parts.push(format!("labelled \"{t}\""));
    }
    if let Some(s) = &uri.serial {
        parts.push(format!("with serial \"{s}\""));
    }
    if let Some(m) = &uri.manufacturer {
        parts.push(format!("from manufacturer \"{m}\""));
    }
    if let Some(m) = &uri.model {
        parts.push(format!("of model \"{m}\""));
    }
    if let Some(d) = &uri.slot_description {
        parts.push(format!("in slot \"{d}\""));
    }
    if parts.is_empty() {
        "(any)".to_string()
    } else {
        parts.join(" ")
    }
}

/// Finds the slot holding the token the URI asks for.
fn find_slot(ctx: &Pkcs11, module: &Path, uri: &Pkcs11Uri) -> Result<(Slot, String), HsmError> {
    let slots_err = |e| HsmError::Slots {
        module: module.to_path_buf(),
        source: pk(e),
    };
    let slots = ctx.get_slots_with_token().map_err(slots_err)?;
    if let Some(id) = uri.slot_id {
        if !slots.iter().any(|s| s.id() == id) {
            return Err(HsmError::SlotNotFound {
                module: module.to_path_buf(),
                slot_id: id,
                available: slots.iter().map(|s| s.id()).collect(),
            });
        }
    }
    let mut found = Vec::new();
    for slot in slots {
        if uri.slot_id.is_some_and(|id| id != slot.id()) {
            continue;
        }
        let info = match ctx.get_token_info(slot) {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(module = %module.display(), slot = slot.id(), error = %pk(e), "cannot read PKCS#11 token info; skipping slot");
                continue;
            }
        };
        if !info.token_initialized() {
            continue;
        }
        let label = info.label().to_string();
        let mut ok = uri.token.as_deref().is_none_or(|t| t == label)
            && uri
                .serial
                .as_deref()
                .is_none_or(|s| s == info.serial_number())
            && uri
                .manufacturer
                .as_deref()
                .is_none_or(|m| m == info.manufacturer_id())
            && uri.model.as_deref().is_none_or(|m| m == info.model());
        if ok {
            if let Some(desc) = &uri.slot_description {
                ok = ctx
                    .get_slot_info(slot)
                    .map(|si| si.slot_description() == desc)
                    .unwrap_or(false);
            }
        }
        if ok {
            return Ok((slot, label));
        }
        found.push(label);
    }
    let no_criteria = uri.token.is_none()
        && uri.serial.is_none()
        && uri.manufacturer.is_none()
        && uri.model.is_none()
        && uri.slot_description.is_none();
    if found.is_empty() && no_criteria {
        return Err(HsmError::NoToken {
            module: module.to_path_buf(),
        });
    }
    Err(HsmError::TokenNotFound {
        module: module.to_path_buf(),
        wanted: token_matches(uri),
        found,
    })
}

fn login(session: &Session, pin: &AuthPin, token: &str) -> Result<(), HsmError> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) => Ok(()),
        // Login state is per application and token: another session of this
        // process is already logged in.
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(HsmError::Login {
            token: token.to_string(),
            source: pk(e),
        }),
    }
}

fn label_of(session: &Session, h: ObjectHandle) -> String {
    match session.get_attributes(h, &[AttributeType::Label]) {
        Ok(attrs) => attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::Label(l) => Some(String::from_utf8_lossy(&l).into_owned()),
                _ => None,
            })
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn find_private_key(
    session: &Session,
    uri: &Pkcs11Uri,
    token: &str,
) -> Result<ObjectHandle, HsmError> {
    let objects_err = |what: &str, e| HsmError::Objects {
        what: what.to_string(),
        token: token.to_string(),
        source: pk(e),
    };
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(l) = &uri.object {
        template.push(Attribute::Label(l.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let handles = session
        .find_objects(&template)
        .map_err(|e| objects_err("searching for the private key", e))?;
    match handles.len() {
        1 => Ok(handles[0]),
        0 => {
            let all = session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .map_err(|e| objects_err("listing private keys", e))?;
            Err(HsmError::KeyNotFound {
                wanted: uri.key_description(),
                token: token.to_string(),
                found: all.into_iter().map(|h| label_of(session, h)).collect(),
            })
        }
        n => Err(HsmError::AmbiguousKey {
            wanted: uri.key_description(),
            token: token.to_string(),
            count: n,
        }),
    }
}

/// Opens a session on the URI's token, logs in and finds the key.
fn connect(
    ctx: &Pkcs11,
    module: &Path,
    uri: &Pkcs11Uri,
    pin: &AuthPin,
) -> Result<(Live, String), HsmError> {
    let (slot, token) = find_slot(ctx, module, uri)?;
    let session = ctx
        .open_ro_session(slot)
        .map_err(|e| HsmError::OpenSession {
            token: token.clone(),
            source: pk(e),
        })?;
    login(&session, pin, &token)?;
    let key = find_private_key(&session, uri, &token)?;
    Ok((Live { session, key }, token))
}

/// Reads the listed attributes; missing/sensitive ones are simply absent.
fn attributes(
    session: &Session,
    h: ObjectHandle,
    types: &[AttributeType],
    what: &str,
    token: &str,
) -> Result<Vec<Attribute>, HsmError> {
    session
        .get_attributes(h, types)
        .map_err(|e| HsmError::Objects {
            what: what.to_string(),
            token: token.to_string(),
            source: pk(e),
        })
}

#[derive(Default)]
struct KeyAttrs {
    key_type: Option<KeyType>,
    label: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
    ec_params: Option<Vec<u8>>,
    ec_point: Option<Vec<u8>>,
    modulus: Option<Vec<u8>>,
    exponent: Option<Vec<u8>>,
    public_key_info: Option<Vec<u8>>,
    sign: Option<bool>,
    always_authenticate: Option<bool>,
}

impl KeyAttrs {
    fn from(attrs: Vec<Attribute>) -> Self {
        let mut k = KeyAttrs::default();
        for a in attrs {
            match a {
                Attribute::KeyType(t) => k.key_type = Some(t),
                Attribute::Label(v) => k.label = Some(v),
                Attribute::Id(v) => k.id = Some(v),
                Attribute::EcParams(v) => k.ec_params = Some(v),
                Attribute::EcPoint(v) => k.ec_point = Some(v),
                Attribute::Modulus(v) => k.modulus = Some(v),
                Attribute::PublicExponent(v) => k.exponent = Some(v),
                Attribute::PublicKeyInfo(v) if !v.is_empty() => k.public_key_info = Some(v),
                Attribute::Sign(b) => k.sign = Some(b),
                Attribute::AlwaysAuthenticate(b) => k.always_authenticate = Some(b),
                _ => {}
            }
        }
        k
    }
}

const KEY_ATTRS: &[AttributeType] = &[
    AttributeType::KeyType,
    AttributeType::Label,
    AttributeType::Id,
    AttributeType::EcParams,
    AttributeType::EcPoint,
    AttributeType::Modulus,
    AttributeType::PublicExponent,
    AttributeType::PublicKeyInfo,
    AttributeType::Sign,
    AttributeType::AlwaysAuthenticate,
];

fn curve_of(params: &[u8], key: &str) -> Result<(KeyAlgorithm, &'static [u8], usize), HsmError> {
    if params == der::OID_P256 {
        Ok((KeyAlgorithm::EcdsaP256, der::OID_P256, 32))
    } else if params == der::OID_P384 {
        Ok((KeyAlgorithm::EcdsaP384, der::OID_P384, 48))
    } else if params == der::OID_P521 {
        Err(HsmError::Unsupported {
            what: format!(
                "key \"{key}\" is on curve P-521 (secp521r1); only P-256 and P-384 are supported"
            ),
        })
    } else {
        Err(HsmError::Unsupported {
            what: format!(
                "key \"{key}\" is on an unsupported EC curve (CKA_EC_PARAMS {}); only P-256 and P-384 are supported",
                hex(params)
            ),
        })
    }
}

/// Finds the public key object paired with the private key (same CKA_ID,
/// else same CKA_LABEL).
fn find_public_object(
    session: &Session,
    id: &[u8],
    label: &[u8],
    key_type: KeyType,
) -> Option<ObjectHandle> {
    let mut templates = Vec::new();
    if !id.is_empty() {
        templates.push(vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type),
            Attribute::Id(id.to_vec()),
        ]);
    }
    if !label.is_empty() {
        templates.push(vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type),
            Attribute::Label(label.to_vec()),
        ]);
    }
    templates
        .iter()
        .find_map(|t| session.find_objects(t).ok()?.into_iter().next())
}

/// Works out algorithm, raw public key (rcgen format) and SPKI.
fn public_key(
    session: &Session,
    private: &KeyAttrs,
    key_name: &str,
    token: &str,
) -> Result<(KeyAlgorithm, Vec<u8>, Vec<u8>), HsmError> {
    let key_type = private.key_type.ok_or_else(|| HsmError::PublicKey {
        key: key_name.to_string(),
        reason: "the private key has no readable CKA_KEY_TYPE".to_string(),
    })?;
    let id = private.id.clone().unwrap_or_default();
    let label = private.label.clone().unwrap_or_default();
    let public = match find_public_object(session, &id, &label, key_type) {
        Some(h) => KeyAttrs::from(attributes(
            session,
            h,
            KEY_ATTRS,
            "reading the public key's attributes",
            token,
        )?),
        None => KeyAttrs::default(),
    };

    if key_type == KeyType::EC {
        let params = private
            .ec_params
            .as_deref()
            .or(public.ec_params.as_deref())
            .ok_or_else(|| HsmError::PublicKey {
                key: key_name.to_string(),
                reason: "neither the private nor the public key object has CKA_EC_PARAMS"
                    .to_string(),
            })?;
        let (alg, oid, coord) = curve_of(params, key_name)?;
        let from_spki = |spki: &Vec<u8>| {
            der::parse_spki(spki).and_then(|(_, point)| der::ec_point(point, coord))
        };
        let point = public
            .ec_point
            .as_deref()
            .and_then(|p| der::ec_point(p, coord))
            .or_else(|| {
                private
                    .ec_point
                    .as_deref()
                    .and_then(|p| der::ec_point(p, coord))
            })
            .or_else(|| public.public_key_info.as_ref().and_then(from_spki))
            .or_else(|| private.public_key_info.as_ref().and_then(from_spki))
            .ok_or_else(|| HsmError::PublicKey {
                key: key_name.to_string(),
                reason: "no public key object with the same CKA_ID/CKA_LABEL, and the private \
                         key has no usable CKA_EC_POINT or CKA_PUBLIC_KEY_INFO (compressed points \
                         are not supported)"
                    .to_string(),
            })?;
        let spki = der::ec_spki(oid, &point);
        Ok((alg, point, spki))
    } else if key_type == KeyType::RSA {
        let (m, e) = match (&public.modulus, &public.exponent) {
            (Some(m), Some(e)) => (m, e),
            _ => match (&private.modulus, &private.exponent) {
                (Some(m), Some(e)) => (m, e),
                _ => {
                    return Err(HsmError::PublicKey {
                        key: key_name.to_string(),
                        reason: "no CKA_MODULUS/CKA_PUBLIC_EXPONENT on the public or private key"
                            .to_string(),
                    })
                }
            },
        };
        let first = m.iter().position(|&b| b != 0).unwrap_or(m.len());
        let bits = (m.len() - first) * 8 - m.get(first).map_or(0, |b| b.leading_zeros() as usize);
        if bits < 2048 {
            return Err(HsmError::Unsupported {
                what: format!("key \"{key_name}\" is RSA-{bits}; RSA keys need at least 2048 bits"),
            });
        }
        let rsa = der::rsa_public_key(m, e);
        let spki = der::rsa_spki(&rsa);
        Ok((KeyAlgorithm::Rsa { bits }, rsa, spki))
    } else {
        Err(HsmError::Unsupported {
            what: format!(
                "key \"{key_name}\" has key type {key_type} (CKK 0x{:x}); only EC (P-256, P-384) and RSA are supported",
                *key_type
            ),
        })
    }
}

fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::DeviceError,
            _
        )
    )
}

const DIGEST_INFO_SHA256: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const DIGEST_INFO_SHA384: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const DIGEST_INFO_SHA512: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(msg).to_vec(),
            Hash::Sha384 => Sha384::digest(msg).to_vec(),
            Hash::Sha512 => Sha512::digest(msg).to_vec(),
        }
    }
    fn digest_info(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => DIGEST_INFO_SHA256,
            Hash::Sha384 => DIGEST_INFO_SHA384,
            Hash::Sha512 => DIGEST_INFO_SHA512,
        }
    }
    fn pss_params(self) -> PkcsPssParams {
        let (hash_alg, mgf, len) = match self {
            Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32u64),
            Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48),
            Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64),
        };
        PkcsPssParams {
            hash_alg,
            mgf,
            s_len: len.into(),
        }
    }
}

impl HsmKey {
    /// Opens the private key named by `uri` on its token, logging in as user
    /// with `pin` (trim trailing newlines from PIN files first, see
    /// [`crate::read_pin_file`]).
    ///
    /// Token: the one whose label (and serial/manufacturer/model, if given)
    /// matches; with none of those, the first initialized token (or the one
    /// in `slot-id`). Key: the private key with CKA_LABEL = `object` and/or
    /// CKA_ID = `id`; if neither is given, the only private key on the token.
    pub fn open(uri: &Pkcs11Uri, pin: &str) -> Result<HsmKey, HsmError> {
        if let Some(t) = &uri.object_type {
            if t != "private" {
                return Err(HsmError::InvalidUri {
                    part: "type".to_string(),
                    reason: format!(
                        "type={t} cannot be used as a signing key; use type=private or leave it out"
                    ),
                });
            }
        }
        let mut uri = uri.clone();
        uri.pin_value = None;
        let module = module::resolve(&uri.module_path, uri.module_name.as_deref());
        let ctx = module::get(&module)?;
        let pin = AuthPin::new(pin.into());
        let (live, token) = connect(&ctx, &module, &uri, &pin)?;

        let attrs = KeyAttrs::from(attributes(
            &live.session,
            live.key,
            KEY_ATTRS,
            "reading the private key's attributes",
            &token,
        )?);
        let key_label = attrs
            .label
            .as_deref()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .unwrap_or_default();
        let key_id = attrs.id.clone().unwrap_or_default();
        let key_name = if key_label.is_empty() {
            format!("id {}", hex(&key_id))
        } else {
            key_label.clone()
        };
        if attrs.sign == Some(false) {
            return Err(HsmError::Unsupported {
                what: format!("key \"{key_name}\" on token \"{token}\" has CKA_SIGN=false"),
            });
        }
        if attrs.always_authenticate == Some(true) {
            return Err(HsmError::Unsupported {
                what: format!(
                    "key \"{key_name}\" on token \"{token}\" has CKA_ALWAYS_AUTHENTICATE=true \
                     (per-signature login is not supported)"
                ),
            });
        }
        let (alg, public_raw, spki) = public_key(&live.session, &attrs, &key_name, &token)?;
        tracing::info!(
            module = %module.display(),
            token = %token,
            key = %key_name,
            algorithm = %alg,
            "opened HSM private key"
        );
        Ok(HsmKey {
            inner: Arc::new(Inner {
                ctx,
                module,
                uri,
                pin,
                token_label: token,
                key_label,
                key_id,
                alg,
                public_raw,
                spki,
                live: Mutex::new(Some(live)),
                signatures: AtomicU64::new(0),
            }),
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.inner.alg
    }

    /// SubjectPublicKeyInfo (DER) of the key.
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        self.inner.spki.clone()
    }

    pub(crate) fn spki(&self) -> &[u8] {
        &self.inner.spki
    }

    /// The public key in rcgen's raw form: EC uncompressed point, or PKCS#1
    /// RSAPublicKey DER.
    pub fn public_key_raw(&self) -> &[u8] {
        &self.inner.public_raw
    }

    /// The key's CKA_LABEL.
    pub fn label(&self) -> &str {
        &self.inner.key_label
    }

    /// The key's CKA_ID.
    pub fn id(&self) -> &[u8] {
        &self.inner.key_id
    }

    /// Label of the token holding the key.
    pub fn token_label(&self) -> &str {
        &self.inner.token_label
    }

    /// The PKCS#11 module file.
    pub fn module_path(&self) -> &Path {
        &self.inner.module
    }

    /// How many signatures the token has made for this key (all clones).
    pub fn signatures_made(&self) -> u64 {
        self.inner.signatures.load(Ordering::Relaxed)
    }

    fn name(&self) -> String {
        if self.inner.key_label.is_empty() {
            format!("id {}", hex(&self.inner.key_id))
        } else {
            self.inner.key_label.clone()
        }
    }

    /// Signs `message` with `scheme` (one of
    /// [`KeyAlgorithm::signature_schemes`]). The digest is computed here; the
    /// token does the private-key operation. ECDSA signatures come back
    /// DER-encoded (ECDSA-Sig-Value), as TLS and X.509 want.
    pub fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        if !self.inner.alg.signature_schemes().contains(&scheme) {
            return Err(HsmError::Unsupported {
                what: format!(
                    "signature scheme {scheme:?} with {} key \"{}\"",
                    self.inner.alg,
                    self.name()
                ),
            });
        }
        use SignatureScheme as S;
        let (hash, pss) = match scheme {
            S::ECDSA_NISTP256_SHA256 => (Hash::Sha256, false),
            S::ECDSA_NISTP384_SHA384 => (Hash::Sha384, false),
            S::RSA_PSS_SHA256 => (Hash::Sha256, true),
            S::RSA_PSS_SHA384 => (Hash::Sha384, true),
            S::RSA_PSS_SHA512 => (Hash::Sha512, true),
            S::RSA_PKCS1_SHA256 => (Hash::Sha256, false),
            S::RSA_PKCS1_SHA384 => (Hash::Sha384, false),
            S::RSA_PKCS1_SHA512 => (Hash::Sha512, false),
            _ => unreachable!("filtered by signature_schemes"),
        };
        let digest = hash.digest(message);
        match self.inner.alg {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                let raw = self.sign_raw(&Mechanism::Ecdsa, &digest)?;
                der::ecdsa_sig_from_raw(&raw).ok_or_else(|| HsmError::Sign {
                    key: self.name(),
                    reason: format!(
                        "token returned a {}-byte ECDSA signature, not r||s",
                        raw.len()
                    ),
                })
            }
            KeyAlgorithm::Rsa { .. } if pss => {
                self.sign_raw(&Mechanism::RsaPkcsPss(hash.pss_params()), &digest)
            }
            KeyAlgorithm::Rsa { .. } => {
                let mut info = hash.digest_info().to_vec();
                info.extend_from_slice(&digest);
                self.sign_raw(&Mechanism::RsaPkcs, &info)
            }
        }
    }

    /// C_Sign under the session mutex; re-opens the session (and logs in)
    /// once if it was lost.
    fn sign_raw(&self, mechanism: &Mechanism<'_>, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        let inner = &self.inner;
        let mut live = inner.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut reopened = false;
        loop {
            if live.is_none() {
                let (fresh, _) = connect(&inner.ctx, &inner.module, &inner.uri, &inner.pin)
                    .map_err(|e| HsmError::Sign {
                        key: self.name(),
                        reason: format!("re-opening the PKCS#11 session: {e}"),
                    })?;
                *live = Some(fresh);
                reopened = true;
            }
            let l = live.as_ref().expect("set above");
            match l.session.sign(mechanism, l.key, data) {
                Ok(sig) => {
                    inner.signatures.fetch_add(1, Ordering::Relaxed);
                    return Ok(sig);
                }
                Err(e) if !reopened && session_lost(&e) => {
                    tracing::warn!(
                        token = %inner.token_label,
                        key = %self.name(),
                        error = %pk(e),
                        "PKCS#11 session lost; re-opening and logging in again"
                    );
                    // Dropping closes the old session (errors are ignored).
                    *live = None;
                }
                Err(e) => {
                    if session_lost(&e) {
                        // Don't keep a dead session around for the next call.
                        *live = None;
                    }
                    return Err(HsmError::Sign {
                        key: self.name(),
                        reason: pk(e).to_string(),
                    });
                }
            }
        }
    }
}

/// Reads a PIN file: the whole file minus trailing `\n`/`\r\n`.
pub fn read_pin_file(path: &Path) -> Result<String, HsmError> {
    let s = std::fs::read_to_string(path).map_err(|source| HsmError::Io {
        what: "reading PIN file".to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone + fmt::Debug>() {}

    #[test]
    fn hsm_key_is_send_sync_clone() {
        assert_send_sync::<HsmKey>();
    }

    #[test]
    fn pin_file_trimming() {
        let dir = std::env::temp_dir().join(format!("ossec-hsm-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pin");
        std::fs::write(&p, "12 34\r\n").unwrap();
        assert_eq!(read_pin_file(&p).unwrap(), "12 34");
        std::fs::remove_dir_all(&dir).unwrap();
        let e = read_pin_file(&p).unwrap_err();
        assert!(e.to_string().contains("PIN file"), "{e}");
    }
}
