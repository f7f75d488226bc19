//! Test and demo support (not for production use): SoftHSM2 tokens with keys
//! generated on the token, for this crate's tests and other crates' tests.
//!
//! SoftHSM reads its configuration file from the `SOFTHSM2_CONF` environment
//! variable once, at `C_Initialize`, and a PKCS#11 module is initialized only
//! once per process (see the crate's module registry). So **one process uses
//! one token directory**: [`TestToken::create`] sets `SOFTHSM2_CONF` for the
//! process on its first call; later calls in the same process must pass the
//! same `dir` (they add another token there) or they fail. Tests in this
//! workspace run under cargo-nextest (one process per test), so "one temp dir
//! per test" works; under plain `cargo test`, keep one SoftHSM test per test
//! binary or share the dir.
//!
//! A test that spawns a child process (e.g. the collector binary) must pass
//! it the same environment: `cmd.env(SOFTHSM2_CONF, token.conf_path())`.
//!
//! ```no_run
//! use ossec_hsm::softhsm::{Curve, TestToken, SOFTHSM2_CONF};
//! let dir = tempfile::tempdir().unwrap();
//! let token = TestToken::create(dir.path(), "collector", "1234").unwrap();
//! token.generate_ec_key("enroll", Curve::P256).unwrap();
//! let uri = token.uri("enroll"); // pkcs11:token=collector;object=enroll;type=private?module-path=...
//! let pin_file = dir.path().join("pin");
//! token.write_pin_file(&pin_file).unwrap();
//! let mut cmd = std::process::Command::new("ossec-collector");
//! cmd.env(SOFTHSM2_CONF, token.conf_path())
//!     .arg("--enroll-key-pkcs11").arg(&uri)
//!     .arg("--enroll-pin-file").arg(&pin_file);
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};

use crate::der;
use crate::error::HsmError;
use crate::module;
use crate::uri::percent_encode;

/// The environment variable SoftHSM2 reads its config path from.
pub const SOFTHSM2_CONF: &str = "SOFTHSM2_CONF";

/// What to tell someone whose machine lacks SoftHSM2.
pub const INSTALL_HINT: &str = "install SoftHSM2 with `apt-get install -y softhsm2`";

/// Where distributions put libsofthsm2.so.
pub const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

/// The SoftHSM2 PKCS#11 module, if installed (first of
/// [`MODULE_CANDIDATES`] that exists).
pub fn module_path() -> Option<PathBuf> {
    MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// [`module_path`], or a panic telling how to install SoftHSM2. For tests.
pub fn require_module_path() -> PathBuf {
    module_path().unwrap_or_else(|| {
        panic!("SoftHSM2 (libsofthsm2.so) not found in {MODULE_CANDIDATES:?}; {INSTALL_HINT}")
    })
}

/// EC curves [`TestToken::generate_ec_key`] can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

/// The config file this process's SoftHSM uses (set by the first create).
static PROCESS_CONF: Mutex<Option<PathBuf>> = Mutex::new(None);

/// A SoftHSM2 token in its own directory, initialized with a label, an SO PIN
/// and a user PIN. See the module docs for the one-directory-per-process rule.
pub struct TestToken {
    dir: PathBuf,
    conf_path: PathBuf,
    module_path: PathBuf,
    label: String,
    pin: String,
    so_pin: String,
    slot: Slot,
    ctx: Pkcs11,
}

impl fmt::Debug for TestToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestToken")
            .field("dir", &self.dir)
            .field("conf_path", &self.conf_path)
            .field("module_path", &self.module_path)
            .field("label", &self.label)
            .field("slot", &self.slot.id())
            .finish_non_exhaustive()
    }
}

fn err(msg: impl Into<String>) -> HsmError {
    HsmError::TestToken(msg.into())
}

fn ck(what: &str) -> impl Fn(CkError) -> HsmError + '_ {
    move |e| err(format!("{what}: {}", crate::error::Pkcs11Failure(e)))
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> HsmError {
    let what = what.to_string();
    let path = path.to_path_buf();
    move |source| HsmError::Io { what, path, source }
}

fn find_token(ctx: &Pkcs11, label: &str) -> Result<Option<Slot>, HsmError> {
    for slot in ctx
        .get_slots_with_token()
        .map_err(ck("listing SoftHSM slots"))?
    {
        let info = ctx
            .get_token_info(slot)
            .map_err(ck("reading SoftHSM token info"))?;
        if info.token_initialized() && info.label() == label {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

impl TestToken {
    /// Writes `dir/softhsm2.conf` (token directory `dir/tokens`), points
    /// `SOFTHSM2_CONF` at it for this process (first call only), initializes
    /// a new token labelled `label` on a free slot (C_InitToken with an SO
    /// PIN, then C_InitPIN with `pin`).
    ///
    /// Fails (with the `apt-get install -y softhsm2` hint) when SoftHSM2 is
    /// not installed, when this process already uses another directory, or
    /// when a token with this label already exists.
    pub fn create(dir: &Path, label: &str, pin: &str) -> Result<TestToken, HsmError> {
        let module_path = module_path().ok_or_else(|| {
            err(format!(
                "libsofthsm2.so not found (looked in {MODULE_CANDIDATES:?}); {INSTALL_HINT}"
            ))
        })?;
        if label.is_empty() || label.len() > 32 {
            return Err(err(format!(
                "token label \"{label}\" must be 1 to 32 bytes"
            )));
        }
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)
            .map_err(io("creating SoftHSM token directory", &tokens))?;
        let dir = std::fs::canonicalize(dir).map_err(io("resolving", dir))?;
        let tokens = dir.join("tokens");
        let conf_path = dir.join("softhsm2.conf");

        let mut process = PROCESS_CONF.lock().unwrap_or_else(|p| p.into_inner());
        match process.as_ref() {
            Some(existing) if *existing != conf_path => {
                return Err(err(format!(
                    "this process already uses SoftHSM config {}; SoftHSM reads {SOFTHSM2_CONF} \
                     only at C_Initialize, so all test tokens of one process must share one \
                     directory (run one test per process, e.g. under cargo-nextest, or pass the \
                     same dir)",
                    existing.display()
                )))
            }
            Some(_) => {}
            None => {
                if let Some(at_init) = module::initialized_with_conf(&module_path) {
                    if at_init.as_deref() != Some(conf_path.as_os_str()) {
                        return Err(err(format!(
                            "SoftHSM was already initialized in this process (with \
                             {SOFTHSM2_CONF}={at_init:?}) before TestToken::create; it cannot \
                             switch to {}",
                            conf_path.display()
                        )));
                    }
                }
                let conf = format!(
                    "# Written by ossec_hsm::softhsm::TestToken (test support).\n\
                     directories.tokendir = {}\n\
                     objectstore.backend = file\n\
                     log.level = ERROR\n\
                     slots.removable = false\n",
                    tokens.display()
                );
                std::fs::write(&conf_path, conf)
                    .map_err(io("writing SoftHSM config", &conf_path))?;
                // SoftHSM reads this at C_Initialize (in module::get below).
                std::env::set_var(SOFTHSM2_CONF, &conf_path);
                *process = Some(conf_path.clone());
            }
        }

        let ctx = module::get(&module_path)?;
        if find_token(&ctx, label)?.is_some() {
            return Err(err(format!(
                "a token labelled \"{label}\" already exists in {}",
                tokens.display()
            )));
        }
        let free = ctx
            .get_all_slots()
            .map_err(ck("listing SoftHSM slots"))?
            .into_iter()
            .find(|&s| {
                ctx.get_token_info(s)
                    .map(|i| !i.token_initialized())
                    .unwrap_or(false)
            })
            .ok_or_else(|| err("SoftHSM offers no free (uninitialized) slot"))?;

        let so_pin = format!("so-{pin}");
        ctx.init_token(free, &AuthPin::new(so_pin.as_str().into()), label)
            .map_err(ck("C_InitToken"))?;
        // SoftHSM renumbers a slot once its token is initialized: look it up again.
        let slot = find_token(&ctx, label)?
            .ok_or_else(|| err(format!("token \"{label}\" not found after C_InitToken")))?;
        {
            let session = ctx
                .open_rw_session(slot)
                .map_err(ck("opening a SoftHSM session"))?;
            session
                .login(UserType::So, Some(&AuthPin::new(so_pin.as_str().into())))
                .map_err(ck("logging in as SO"))?;
            session
                .init_pin(&AuthPin::new(pin.into()))
                .map_err(ck("C_InitPIN"))?;
            session.logout().map_err(ck("logging out SO"))?;
        }
        drop(process);
        Ok(TestToken {
            dir,
            conf_path,
            module_path,
            label: label.to_string(),
            pin: pin.to_string(),
            so_pin,
            slot,
            ctx,
        })
    }

    /// A read-write session on the token, logged in as user. For checks that
    /// need raw PKCS#11 access (e.g. that a key is not extractable).
    pub fn open_user_session(&self) -> Result<Session, HsmError> {
        let session = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(ck("opening a SoftHSM session"))?;
        match session.login(
            UserType::User,
            Some(&AuthPin::new(self.pin.as_str().into())),
        ) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(ck("logging in as user")(e)),
        }
    }

    fn key_id(&self, key_label: &str) -> Vec<u8> {
        Sha256::digest(key_label.as_bytes())[..8].to_vec()
    }

    /// Generates an EC key pair on the token (CKM_EC_KEY_PAIR_GEN): private
    /// key CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_SIGN true and
    /// CKA_EXTRACTABLE false; public key object with the same CKA_LABEL and
    /// CKA_ID. Returns the CKA_ID.
    pub fn generate_ec_key(&self, label: &str, curve: Curve) -> Result<Vec<u8>, HsmError> {
        let params = match curve {
            Curve::P256 => der::OID_P256,
            Curve::P384 => der::OID_P384,
        };
        let id = self.key_id(label);
        let public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(params.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        self.generate(&Mechanism::EccKeyPairGen, &public, label, &id)?;
        Ok(id)
    }

    /// Generates an RSA key pair (CKM_RSA_PKCS_KEY_PAIR_GEN, e = 65537) on
    /// the token, with the same properties as [`Self::generate_ec_key`].
    pub fn generate_rsa_key(&self, label: &str, bits: u64) -> Result<Vec<u8>, HsmError> {
        let id = self.key_id(label);
        let public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::ModulusBits(bits.into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        self.generate(&Mechanism::RsaPkcsKeyPairGen, &public, label, &id)?;
        Ok(id)
    }

    fn generate(
        &self,
        mechanism: &Mechanism<'_>,
        public: &[Attribute],
        label: &str,
        id: &[u8],
    ) -> Result<(), HsmError> {
        let private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let session = self.open_user_session()?;
        session
            .generate_key_pair(mechanism, public, &private)
            .map_err(ck(&format!("generating key pair \"{label}\"")))?;
        Ok(())
    }

    /// Deletes the public key object(s) labelled `label` (keeping the private
    /// key), to test keys whose public half is not stored as an object.
    pub fn delete_public_key(&self, label: &str) -> Result<usize, HsmError> {
        let session = self.open_user_session()?;
        let handles = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(ck("searching public keys"))?;
        for h in &handles {
            session
                .destroy_object(*h)
                .map_err(ck("destroying public key"))?;
        }
        Ok(handles.len())
    }

    /// Logs this process out of the token (C_Logout affects every session of
    /// the process on it), to simulate a lost login in tests.
    pub fn force_logout(&self) -> Result<(), HsmError> {
        let session = self.open_user_session()?;
        session.logout().map_err(ck("C_Logout"))
    }

    /// A `pkcs11:` URI for private key `object` on this token, with
    /// `module-path` set and no PIN.
    pub fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={};object={};type=private?module-path={}",
            percent_encode(self.label.as_bytes(), false),
            percent_encode(object.as_bytes(), false),
            percent_encode(self.module_path.to_string_lossy().as_bytes(), true)
        )
    }

    /// Writes the user PIN plus a newline to `path` (mode 0600 on Unix), for
    /// `--enroll-pin-file`.
    pub fn write_pin_file(&self, path: &Path) -> Result<(), HsmError> {
        std::fs::write(path, format!("{}\n", self.pin)).map_err(io("writing PIN file", path))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(io("setting permissions of PIN file", path))?;
        }
        Ok(())
    }

    /// `softhsm2.conf` path: pass it as `SOFTHSM2_CONF` to child processes.
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    /// `(SOFTHSM2_CONF, conf_path())`, for `Command::env`.
    pub fn env(&self) -> (&'static str, &Path) {
        (SOFTHSM2_CONF, &self.conf_path)
    }

    /// The directory given to [`Self::create`] (canonicalized).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The SoftHSM2 module file.
    pub fn module_path(&self) -> &Path {
        &self.module_path
    }

    /// Token label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The user PIN (a test PIN; never log real ones).
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// The SO PIN chosen at creation.
    pub fn so_pin(&self) -> &str {
        &self.so_pin
    }

    /// The token's slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }
}
