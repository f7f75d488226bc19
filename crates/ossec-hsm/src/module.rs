//! Process-wide registry of loaded PKCS#11 modules.
//!
//! A PKCS#11 library may be `C_Initialize`d only once per process, and
//! `C_Finalize` would pull the rug from under every other user. So each
//! module is loaded and initialized once, kept for the life of the process,
//! and shared (the cryptoki context is an `Arc` inside) by every
//! [`crate::HsmKey`] and [`crate::softhsm::TestToken`] that names it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::error::HsmError;

struct Loaded {
    canonical: PathBuf,
    ctx: Pkcs11,
    /// `SOFTHSM2_CONF` at the time of C_Initialize (SoftHSM reads it then).
    softhsm_conf: Option<OsString>,
}

static MODULES: Mutex<Vec<Loaded>> = Mutex::new(Vec::new());

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Resolves RFC 7512 `module-path` (+ `module-name` when it is a directory)
/// to a library file.
pub(crate) fn resolve(module_path: &Path, module_name: Option<&str>) -> PathBuf {
    if module_path.is_dir() {
        if let Some(name) = module_name {
            for candidate in [format!("lib{name}.so"), format!("{name}.so")] {
                let p = module_path.join(candidate);
                if p.is_file() {
                    return p;
                }
            }
        }
    }
    module_path.to_path_buf()
}

/// Loads and initializes `path` once per process; later calls return the
/// same context.
pub(crate) fn get(path: &Path) -> Result<Pkcs11, HsmError> {
    if !path.exists() {
        return Err(HsmError::ModuleNotFound {
            path: path.to_path_buf(),
        });
    }
    let canonical = canonical(path);
    let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.iter().find(|m| m.canonical == canonical) {
        return Ok(m.ctx.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| HsmError::LoadModule {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let softhsm_conf = std::env::var_os("SOFTHSM2_CONF");
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        // Someone else in this process initialized it (another loader of the
        // same library): the library state is shared, so this is fine.
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(HsmError::Initialize {
                path: path.to_path_buf(),
                source: e.into(),
            })
        }
    }
    tracing::debug!(module = %path.display(), "initialized PKCS#11 module");
    modules.push(Loaded {
        canonical,
        ctx: ctx.clone(),
        softhsm_conf,
    });
    Ok(ctx)
}

/// If `path` is already initialized in this process: `Some(SOFTHSM2_CONF at
/// that time)`.
pub(crate) fn initialized_with_conf(path: &Path) -> Option<Option<OsString>> {
    let canonical = canonical(path);
    let modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    modules
        .iter()
        .find(|m| m.canonical == canonical)
        .map(|m| m.softhsm_conf.clone())
}
