//! Per-agent key derivation (PROTOCOL.md §1.2).
//!
//! Owns the 47-byte ASCII "encryption key" material and the prepared cipher
//! key schedules built from it. Building a Blowfish schedule is expensive, so
//! it is done once per `client.keys` entry, never per message.

use aes::cipher::KeyInit;
use aes::Aes256;
use blowfish::Blowfish;
use md5::{Digest, Md5};

/// Length of the derived key material: 32 + 15 ASCII hex characters.
pub const MATERIAL_LEN: usize = 47;

/// Lower-case ASCII hex MD5 of `data` (`md5hex` in PROTOCOL.md).
pub fn md5_hex(data: &[u8]) -> [u8; 32] {
    let digest = Md5::digest(data);
    let mut out = [0u8; 32];
    hex_lower(&digest, &mut out);
    out
}

/// Writes `bytes` as lower-case hex into `out` (which must be twice as long).
pub(crate) fn hex_lower(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0x0f) as usize];
    }
}

/// Every intermediate value of the derivation, for `keys derive` and for
/// people debugging an integration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DerivationSteps {
    pub md5_name: String,
    pub md5_id: String,
    pub md5_name_id: String,
    pub md5_name_id_first15: String,
    pub md5_key: String,
    pub material: String,
    pub aes_key: String,
    pub blowfish_key: String,
}

/// Computes the 47 bytes of key material `md5hex(KEY) || md5hex(md5hex(NAME) || md5hex(ID))[..15]`.
pub fn key_material(id: &[u8], name: &[u8], key: &[u8]) -> [u8; MATERIAL_LEN] {
    let s1 = md5_hex(name);
    let s2 = md5_hex(id);
    let mut cat = [0u8; 64];
    cat[..32].copy_from_slice(&s1);
    cat[32..].copy_from_slice(&s2);
    let s3 = md5_hex(&cat);
    let s4 = md5_hex(key);
    let mut ek = [0u8; MATERIAL_LEN];
    ek[..32].copy_from_slice(&s4);
    ek[32..].copy_from_slice(&s3[..15]);
    ek
}

/// The derivation, step by step.
pub fn derivation_steps(id: &[u8], name: &[u8], key: &[u8]) -> DerivationSteps {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let s1 = md5_hex(name);
    let s2 = md5_hex(id);
    let mut cat = Vec::with_capacity(64);
    cat.extend_from_slice(&s1);
    cat.extend_from_slice(&s2);
    let s3 = md5_hex(&cat);
    let ek = key_material(id, name, key);
    DerivationSteps {
        md5_name: s(&s1),
        md5_id: s(&s2),
        md5_name_id: s(&s3),
        md5_name_id_first15: s(&s3[..15]),
        md5_key: s(&md5_hex(key)),
        material: s(&ek),
        aes_key: s(&ek[..32]),
        blowfish_key: s(&ek),
    }
}

/// Prepared ciphers for one agent: AES-256 keyed with the first 32 ASCII bytes
/// of the material, Blowfish keyed with all 47. The Blowfish key schedule
/// (over 4 KB) is built the first time it is needed, on the heap: most
/// agents use AES. The key schedules are shared behind an `Arc`: a collector
/// holds every agent's key in more than one place (the key set the decoder
/// reads, the mirror of the store's keys it is rebuilt from, the next key
/// set during a reload), and a clone is a reference, not a kilobyte of
/// round keys.
#[derive(Clone)]
pub struct AgentKey {
    inner: std::sync::Arc<Ciphers>,
}

struct Ciphers {
    material: [u8; MATERIAL_LEN],
    aes: Aes256,
    blowfish: std::sync::OnceLock<Box<Blowfish>>,
}

impl AgentKey {
    /// Derives the key of the `client.keys` entry (`id`, `name`, `key`).
    pub fn derive(id: &[u8], name: &[u8], key: &[u8]) -> Self {
        Self::from_material(key_material(id, name, key))
    }

    /// Builds the ciphers from already derived material.
    pub fn from_material(material: [u8; MATERIAL_LEN]) -> Self {
        // 32 bytes is the AES-256 key length: this cannot fail.
        let aes = Aes256::new(aes::cipher::generic_array::GenericArray::from_slice(
            &material[..32],
        ));
        AgentKey {
            inner: std::sync::Arc::new(Ciphers {
                material,
                aes,
                blowfish: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The AES-256 cipher, keyed with the first 32 bytes of the material.
    pub(crate) fn aes(&self) -> &Aes256 {
        &self.inner.aes
    }

    /// The Blowfish cipher, keyed with the whole material.
    pub(crate) fn blowfish(&self) -> &Blowfish {
        self.inner
            .blowfish
            .get_or_init(|| match Blowfish::new_from_slice(&self.inner.material) {
                Ok(b) => Box::new(b),
                Err(_) => unreachable!("47 bytes is a valid Blowfish key length (4..=56)"),
            })
    }

    /// The 47 ASCII bytes of key material.
    pub fn material(&self) -> &[u8; MATERIAL_LEN] {
        &self.inner.material
    }
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector keeps every agent's key in several places (key set,
    /// store mirror, the next set during a reload): copies must share the
    /// kilobyte of round keys, and a derived Blowfish schedule with them.
    #[test]
    fn clones_share_the_key_schedules() {
        assert_eq!(
            std::mem::size_of::<AgentKey>(),
            std::mem::size_of::<usize>()
        );
        let a = AgentKey::derive(b"001", b"agent", b"secret");
        let b = a.clone();
        assert!(std::ptr::eq(a.aes(), b.aes()));
        assert!(std::ptr::eq(a.blowfish(), b.blowfish()));
        assert_eq!(a.material(), b.material());
    }

    #[test]
    fn protocol_md_worked_example() {
        let steps = derivation_steps(
            b"001",
            b"agent1",
            b"a5f3c0b4d9e6a7f8c1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4",
        );
        assert_eq!(steps.md5_key, "0726a4287f023ec64a67f4e9107a496d");
        assert_eq!(steps.md5_name, "83a87fd756ab57199c0bb6d5e11168cb");
        assert_eq!(steps.md5_id, "dc5c7986daef50c1e02ab09b442ee34f");
        assert_eq!(steps.md5_name_id, "fda4af11475abae6f458d9b573de4b8d");
        assert_eq!(
            steps.material,
            "0726a4287f023ec64a67f4e9107a496dfda4af11475abae"
        );
        assert_eq!(steps.aes_key, "0726a4287f023ec64a67f4e9107a496d");
        assert_eq!(steps.material.len(), 47);
    }
}
