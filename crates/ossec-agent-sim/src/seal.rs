//! A cheap `CreateSecMSG` for the simulator: the same bytes as
//! `ossec_proto::encode`, without its per-message setup.
//!
//! `ossec_proto::encode` builds a new zlib compressor for every message,
//! which allocates and zeroes ~300 KB of deflate state: a quarter of the
//! time of sealing a 1 KB event (PROTOCOL.md §3.1 step 5). Here one
//! compressor per thread is reset and reused, the inner message and the
//! zlib output go to reusable buffers, and the cipher key schedules are
//! built once per agent. The tests check byte equality with
//! `ossec_proto::encode` for both ciphers, both AES variants and with and
//! without `!ID!`, and that the collector's `Decoder` opens the result.

use std::cell::RefCell;
use std::io::Write as _;

use aes::cipher::block_padding::{NoPadding, Pkcs7};
use aes::cipher::{BlockEncryptMut, InnerIvInit, KeyInit, KeyIvInit};
use flate2::{Compress, Compression, FlushCompress, Status};
use md5::{Digest, Md5};
use ossec_proto::codec::{AES_FIXED_IV, AES_MARKER, BLOWFISH_IV, MAX_PAYLOAD};
use ossec_proto::{AgentKey, Header, Reject, RejectKind, Sealing};

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256Enc>;
type BlowfishCbcEnc = cbc::Encryptor<blowfish::Blowfish>;

/// One agent's prepared cipher (only the one it uses).
pub enum SealKey {
    /// The 32 ASCII bytes of the AES key; the schedule is expanded per
    /// message (a few dozen ns), which keeps 10,000 agents small.
    Aes([u8; 32]),
    /// Blowfish's schedule is expensive to build: kept (4 KB).
    Blowfish(Box<blowfish::Blowfish>),
}

impl SealKey {
    pub fn new(key: &AgentKey, blowfish: bool) -> Self {
        let m = key.material();
        if blowfish {
            match blowfish::Blowfish::new_from_slice(m) {
                Ok(b) => SealKey::Blowfish(Box::new(b)),
                Err(_) => unreachable!("47 bytes is a valid Blowfish key length"),
            }
        } else {
            let mut k = [0u8; 32];
            k.copy_from_slice(&m[..32]);
            SealKey::Aes(k)
        }
    }
}

struct Scratch {
    compress: Compress,
    level: u32,
    inner: Vec<u8>,
    z: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

fn hex_lower(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0x0f) as usize];
    }
}

/// Seals `payload` exactly like `ossec_proto::encode(key, sealing, id_prefix,
/// header, payload)` when `level` is 9 (the level of real agents and of
/// `encode`); other levels give other, equally valid, zlib bytes.
pub fn seal(
    key: &SealKey,
    sealing: Sealing,
    id_prefix: Option<&str>,
    header: Header,
    payload: &[u8],
    level: u32,
) -> Result<Vec<u8>, Reject> {
    if payload.is_empty() || payload.len() > MAX_PAYLOAD {
        return Err(Reject::new(
            RejectKind::Size,
            format!(
                "payload of {} bytes is outside 1..={MAX_PAYLOAD}",
                payload.len()
            ),
        ));
    }
    match (key, sealing) {
        (SealKey::Aes(_), Sealing::AesFixed | Sealing::AesRandom(_))
        | (SealKey::Blowfish(_), Sealing::Blowfish) => {}
        _ => {
            return Err(Reject::new(
                RejectKind::Format,
                "the agent's prepared key is for the other cipher",
            ))
        }
    }
    SCRATCH.with(|cell| {
        let mut cell = cell.borrow_mut();
        let s = match &mut *cell {
            Some(s) if s.level == level => s,
            slot => slot.insert(Scratch {
                compress: Compress::new(Compression::new(level), true),
                level,
                inner: Vec::with_capacity(8192),
                z: Vec::with_capacity(8192),
            }),
        };
        // md5hex(BODY) || BODY, BODY = "%05hu%010u:%04u:" || payload.
        s.inner.clear();
        s.inner.extend_from_slice(&[0u8; 32]);
        let _ = write!(
            s.inner,
            "{:05}{:010}:{:04}:",
            header.rand, header.global_counter, header.local_counter
        );
        s.inner.extend_from_slice(payload);
        let digest = Md5::digest(&s.inner[32..]);
        hex_lower(&digest, &mut s.inner[..32]);
        // zlib, reusing the compressor.
        s.compress.reset();
        s.z.clear();
        s.z.reserve(s.inner.len() + s.inner.len() / 8 + 64);
        loop {
            let before = s.compress.total_in() as usize;
            let st = s
                .compress
                .compress_vec(&s.inner[before..], &mut s.z, FlushCompress::Finish)
                .map_err(|_| Reject::new(RejectKind::Format, "zlib compression failed"))?;
            match st {
                Status::StreamEnd => break,
                _ => s.z.reserve(4096),
            }
        }
        let z = &s.z;
        let pad = 8 - z.len() % 8;
        let mut wire = Vec::with_capacity(z.len() + 64);
        if let Some(id) = id_prefix {
            wire.push(b'!');
            wire.extend_from_slice(id.as_bytes());
            wire.push(b'!');
        }
        match sealing {
            Sealing::Blowfish => wire.push(b':'),
            _ => wire.extend_from_slice(AES_MARKER),
        }
        if let Sealing::AesRandom(iv) = sealing {
            wire.extend_from_slice(&iv);
        }
        let start = wire.len();
        wire.resize(start + pad, b'!');
        wire.extend_from_slice(z);
        let plain_len = wire.len() - start;
        match key {
            SealKey::Blowfish(bf) => {
                let enc = BlowfishCbcEnc::inner_iv_init((**bf).clone(), &BLOWFISH_IV.into());
                // The `!` padding made the length a multiple of 8.
                let _ = enc.encrypt_padded_mut::<NoPadding>(&mut wire[start..], plain_len);
            }
            SealKey::Aes(k) => {
                let iv = match sealing {
                    Sealing::AesRandom(iv) => iv,
                    _ => AES_FIXED_IV,
                };
                wire.resize(start + (plain_len / 16 + 1) * 16, 0);
                let enc = Aes256CbcEnc::new(k.into(), &iv.into());
                // Room for the full PKCS#7 block was made above.
                let _ = enc.encrypt_padded_mut::<Pkcs7>(&mut wire[start..], plain_len);
            }
        }
        Ok(wire)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossec_proto::{encode, ClientKeys, Decoded, Decoder};

    #[test]
    fn byte_identical_to_ossec_proto_encode() {
        let keys = ClientKeys::parse(
            b"001 agent1 any a5f3c0b4d9e6a7f8c1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4\n",
        )
        .unwrap();
        let key = &keys.entries()[0].agent_key;
        let aes = SealKey::new(key, false);
        let bf = SealKey::new(key, true);
        let payloads: Vec<Vec<u8>> = vec![
            b"1:/var/log/syslog:hello world".to_vec(),
            b"x".to_vec(),
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            vec![b'a'; 65408],
        ];
        let mut d = Decoder::new();
        for (n, p) in payloads.iter().enumerate() {
            for (k, sealing) in [
                (&aes, Sealing::AesFixed),
                (&aes, Sealing::AesRandom([n as u8; 16])),
                (&bf, Sealing::Blowfish),
            ] {
                for prefix in [None, Some("001")] {
                    let header = Header {
                        rand: 12345 + n as u16,
                        global_counter: n as u32,
                        local_counter: 9997,
                    };
                    let ours = seal(k, sealing, prefix, header, p, 9).unwrap();
                    let theirs = encode(key, sealing, prefix, header, p).unwrap();
                    assert_eq!(ours, theirs, "payload {n} {sealing:?} {prefix:?}");
                    // Other levels differ in the zlib bytes but still open.
                    let fast = seal(k, sealing, Some("001"), header, p, 1).unwrap();
                    let Decoded::Message { opened, .. } =
                        d.decode(&keys, &fast, "10.0.0.1".parse().unwrap()).unwrap()
                    else {
                        panic!()
                    };
                    assert_eq!(opened.payload, &p[..]);
                    assert_eq!(opened.header, header);
                }
            }
        }
        assert!(seal(&aes, Sealing::Blowfish, None, Header::default(), b"x", 9).is_err());
        assert!(seal(&aes, Sealing::AesFixed, None, Header::default(), b"", 9).is_err());
    }
}
