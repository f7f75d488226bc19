//! The secure message codec (PROTOCOL.md §2, §3, §4.2, §8): both directions.
//!
//! Owns the wire layout `[!ID!](#AES:|:)ciphertext`, the ciphers (AES-256-CBC
//! with the fixed ASCII IV or the OSSEC 4.x random IV prefix, Blowfish-CBC),
//! the `!` padding, zlib, the MD5 and the `rand`/counter header.
//! [`Decoder`] opens messages with reusable buffers (no allocation per
//! message) and inflates with libdeflate, falling back to zlib-rs (the
//! behaviour of the agents' own zlib) whenever libdeflate refuses a stream;
//! [`encode`] seals them, for agents (with the `!ID!` rule) and for
//! manager replies.

use std::io::Write;
use std::net::IpAddr;

use aes::cipher::block_padding::{NoPadding, Pkcs7};
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit};
use flate2::{Decompress, FlushDecompress, Status};
use libdeflater::Decompressor;

use crate::derive::{md5_hex, AgentKey};
use crate::error::{Reject, RejectKind};
use crate::keys::ClientKeys;

/// Largest decompressed message (`OS_MAXSTR` of Wazuh), and largest TCP frame.
pub const MAX_MESSAGE: usize = 65536;
/// md5(32) + rand(5) + global(10) + ':' + local(4) + ':'.
pub const HEADER_LEN: usize = 53;
/// Largest payload `encode` accepts (`OS_MAXSTR - OS_HEADER_SIZE` of Wazuh).
pub const MAX_PAYLOAD: usize = 65408;
/// The fixed AES IV: 16 ASCII characters, not the bytes they spell.
pub const AES_FIXED_IV: [u8; 16] = *b"FEDCBA0987654321";
/// The Blowfish IV: 8 raw bytes.
pub const BLOWFISH_IV: [u8; 8] = [0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10];
/// The AES marker.
pub const AES_MARKER: &[u8] = b"#AES:";
/// Plaintext keepalive probe of Wazuh 4.x and its answer.
pub const PING: &[u8] = b"#ping";
pub const PONG: &[u8] = b"#pong";

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type BlowfishCbcDec = cbc::Decryptor<blowfish::Blowfish>;
type BlowfishCbcEnc = cbc::Encryptor<blowfish::Blowfish>;

/// Which cipher a message uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cipher {
    Aes,
    Blowfish,
}

impl Cipher {
    pub fn as_str(self) -> &'static str {
        match self {
            Cipher::Aes => "aes",
            Cipher::Blowfish => "blowfish",
        }
    }
}

/// Which AES variant: Wazuh's fixed ASCII IV, or OSSEC 4.x's random IV sent
/// in front of the ciphertext (§2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AesIv {
    Fixed,
    RandomPrefix,
}

impl AesIv {
    pub fn as_str(self) -> &'static str {
        match self {
            AesIv::Fixed => "fixed",
            AesIv::RandomPrefix => "random-prefix",
        }
    }
}

/// How to seal a message: the cipher, and for AES the IV to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    Blowfish,
    /// Wazuh AES with the fixed IV.
    AesFixed,
    /// OSSEC 4.x AES: this IV is used and sent in front of the ciphertext.
    AesRandom([u8; 16]),
}

impl Sealing {
    pub fn cipher(self) -> Cipher {
        match self {
            Sealing::Blowfish => Cipher::Blowfish,
            _ => Cipher::Aes,
        }
    }

    pub fn aes_iv(self) -> Option<AesIv> {
        match self {
            Sealing::Blowfish => None,
            Sealing::AesFixed => Some(AesIv::Fixed),
            Sealing::AesRandom(_) => Some(AesIv::RandomPrefix),
        }
    }
}

/// The `rand` field and the sender counters of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Header {
    pub rand: u16,
    pub global_counter: u32,
    pub local_counter: u32,
}

/// A decrypted, verified message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'a> {
    pub cipher: Cipher,
    pub aes_iv: Option<AesIv>,
    pub header: Header,
    /// The message after the 21-byte header, exactly as sent.
    pub payload: &'a [u8],
}

/// The outer shape of a datagram or TCP frame payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire<'a> {
    /// Plaintext `#ping` (Wazuh 4.x): answer `#pong`.
    Ping,
    /// An encrypted message, with the agent ID of its `!ID!` prefix if any.
    /// `sealed` starts at the marker (`#AES:` or `:`).
    Sealed {
        id: Option<&'a str>,
        sealed: &'a [u8],
    },
}

/// Splits the `!ID!` prefix off a message (§4.2, §3.2 step 1).
pub fn parse_wire(wire: &[u8]) -> Result<Wire<'_>, Reject> {
    if wire.is_empty() {
        return Err(Reject::new(RejectKind::Format, "empty message"));
    }
    if wire.starts_with(PING) {
        return Ok(Wire::Ping);
    }
    if wire[0] == b'!' {
        let rest = &wire[1..];
        let end = match rest.iter().position(|&b| b == b'!') {
            Some(e) => e,
            None => {
                return Err(Reject::new(
                    RejectKind::Format,
                    "agent ID prefix `!ID!` is not terminated",
                ))
            }
        };
        let digits = &rest[..end];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(Reject::new(
                RejectKind::Format,
                "agent ID prefix `!ID!` holds something other than digits",
            ));
        }
        // All ASCII digits, so this cannot fail.
        let id = std::str::from_utf8(digits).unwrap_or_default();
        return Ok(Wire::Sealed {
            id: Some(id),
            sealed: &rest[end + 1..],
        });
    }
    if wire[0] == b':' || wire.starts_with(AES_MARKER) {
        return Ok(Wire::Sealed {
            id: None,
            sealed: wire,
        });
    }
    Err(Reject::new(
        RejectKind::Format,
        "not a message: no `!ID!` prefix and no `#AES:` or `:` marker",
    ))
}

/// A message whose agent is known, not yet decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identified<'a> {
    Ping,
    Sealed {
        /// Index of the agent in the [`ClientKeys`] used.
        agent: usize,
        id_prefix: bool,
        /// The bytes from the marker on.
        sealed: &'a [u8],
    },
}

/// Finds the agent a message belongs to (§4.3): by its `!ID!` prefix, then
/// requiring `source` to be allowed by the entry; without prefix, by
/// `source`. With `source` `None` (offline decoding) the address check is
/// skipped and a message without prefix cannot be attributed.
pub fn identify<'a>(
    keys: &ClientKeys,
    wire: &'a [u8],
    source: Option<IpAddr>,
) -> Result<Identified<'a>, Reject> {
    let (id, sealed) = match parse_wire(wire)? {
        Wire::Ping => return Ok(Identified::Ping),
        Wire::Sealed { id, sealed } => (id, sealed),
    };
    let agent = match (id, source) {
        (Some(id), _) => {
            let idx = keys.index_of_id(id).ok_or_else(|| {
                Reject::new(RejectKind::UnknownAgent, format!("no agent with ID {id}"))
            })?;
            let entry = &keys.entries()[idx];
            if let Some(source) = source.filter(|s| !entry.allowed.allows(*s)) {
                return Err(Reject::new(
                    RejectKind::AddressNotAllowed,
                    format!(
                        "agent {id} ({}) may not send from {source} (client.keys allows {})",
                        entry.name, entry.ip
                    ),
                ));
            }
            idx
        }
        (None, Some(source)) => keys.index_of_source(source).ok_or_else(|| {
            Reject::new(
                RejectKind::UnknownAgent,
                format!("no `!ID!` prefix and no agent registered for {source}"),
            )
        })?,
        (None, None) => {
            return Err(Reject::new(
                RejectKind::UnknownAgent,
                "no `!ID!` prefix: the agent can only be found by its source address",
            ))
        }
    };
    Ok(Identified::Sealed {
        agent,
        id_prefix: id.is_some(),
        sealed,
    })
}

/// A message identified and opened by [`Decoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Ping,
    Message {
        /// Index of the agent in the [`ClientKeys`] used.
        agent: usize,
        /// Whether the agent sent the `!ID!` prefix.
        id_prefix: bool,
        opened: Opened<'a>,
    },
}

/// Opens messages. Holds the reusable buffers and inflate state, so one
/// decoder per thread serves any number of agents and connections.
pub struct Decoder {
    scratch: Vec<u8>,
    inflated: Vec<u8>,
    inflate: Inflater,
}

/// Bounded zlib inflation into a caller's buffer. libdeflate does the work:
/// for the small dynamic-Huffman streams of real agents (zlib level 9) it
/// took about two thirds of the time zlib-rs did (`cargo bench -p
/// ossec-agent-sim --bench mix`). Any stream libdeflate refuses is inflated
/// again by zlib-rs, a streaming inflater that behaves like the agents' C
/// zlib, which then decides: the result, or why the stream is bad
/// (truncated, corrupt, too large). Only broken messages pay twice.
///
/// Where zlib accepts a stream, libdeflate gives the same bytes. libdeflate
/// also accepts a few malformed Huffman headers that zlib refuses (more
/// than 286 literal/length or 30 distance codes declared, incomplete code
/// sets): no zlib ever writes them, so only a sender holding the agent's
/// key can, and its message must still pass the MD5 check. Such a message
/// is accepted here where a Wazuh manager would drop it as corrupt.
struct Inflater {
    fast: Decompressor,
    exact: Decompress,
}

impl Inflater {
    fn new() -> Self {
        Inflater {
            fast: Decompressor::new(),
            exact: Decompress::new(true),
        }
    }

    /// Inflates the zlib stream `z` into `out`; returns the length.
    fn inflate(&mut self, z: &[u8], out: &mut [u8]) -> Result<usize, Reject> {
        if let Ok(n) = self.fast.zlib_decompress(z, out) {
            return Ok(n);
        }
        let inflate = &mut self.exact;
        inflate.reset(true);
        match inflate.decompress(z, out, FlushDecompress::Finish) {
            Ok(Status::StreamEnd) => Ok(inflate.total_out() as usize),
            Ok(_) if inflate.total_out() as usize >= out.len() => Err(Reject::new(
                RejectKind::Size,
                "message inflates to more than 65536 bytes",
            )),
            Ok(_) => Err(Reject::new(
                RejectKind::Decompress,
                "zlib stream is truncated",
            )),
            // A flipped ciphertext bit lands here: CBC corruption and a wrong key
            // cannot be told apart from bad zlib data, so this is `decrypt`
            // (negative.jsonl agrees). A stream that simply stops is `decompress`.
            Err(_) => Err(Reject::new(
                RejectKind::Decrypt,
                "wrong key or corrupt message (zlib data error)",
            )),
        }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            scratch: Vec::with_capacity(MAX_MESSAGE + 64),
            inflated: vec![0; MAX_MESSAGE],
            inflate: Inflater::new(),
        }
    }

    /// Finds the agent of an agent→manager message (by `!ID!`, then checking
    /// that `source` is allowed; or by `source` alone) and opens it.
    pub fn decode<'s>(
        &'s mut self,
        keys: &ClientKeys,
        wire: &[u8],
        source: IpAddr,
    ) -> Result<Decoded<'s>, Reject> {
        match identify(keys, wire, Some(source))? {
            Identified::Ping => Ok(Decoded::Ping),
            Identified::Sealed {
                agent,
                id_prefix,
                sealed,
            } => {
                let opened = self.open(&keys.entries()[agent].agent_key, sealed)?;
                Ok(Decoded::Message {
                    agent,
                    id_prefix,
                    opened,
                })
            }
        }
    }

    /// Decrypts and verifies `sealed` (the bytes from the marker on) with `key`.
    /// Used directly for manager→agent messages, which have no prefix.
    pub fn open<'s>(&'s mut self, key: &AgentKey, sealed: &[u8]) -> Result<Opened<'s>, Reject> {
        if let Some(ct) = sealed.strip_prefix(AES_MARKER) {
            if ct.is_empty() || ct.len() % 16 != 0 {
                return Err(Reject::new(
                    RejectKind::Decrypt,
                    "AES ciphertext is empty or not a multiple of 16 bytes",
                ));
            }
            self.scratch.clear();
            self.scratch.extend_from_slice(ct);
            let dec = Aes256CbcDec::inner_iv_init(key.aes().clone(), &AES_FIXED_IV.into());
            let plain_len = dec
                .decrypt_padded_mut::<Pkcs7>(&mut self.scratch)
                .map_err(|_| {
                    Reject::new(
                        RejectKind::Decrypt,
                        "AES padding is wrong: wrong key or corrupt ciphertext",
                    )
                })?
                .len();
            // Wazuh's fixed IV first; if that fails, the OSSEC 4.x form, whose
            // first 16 decrypted bytes are the garbage made by the prefixed IV.
            let first = unseal(
                &self.scratch[..plain_len],
                &mut self.inflate,
                &mut self.inflated,
            );
            let (header, range, iv) = match first {
                Ok((h, r)) => (h, r, AesIv::Fixed),
                Err(e1) if plain_len > 16 => {
                    match unseal(
                        &self.scratch[16..plain_len],
                        &mut self.inflate,
                        &mut self.inflated,
                    ) {
                        Ok((h, r)) => (h, r, AesIv::RandomPrefix),
                        Err(e2) => {
                            return Err(if depth(e2.kind) > depth(e1.kind) {
                                e2
                            } else {
                                e1
                            })
                        }
                    }
                }
                Err(e1) => return Err(e1),
            };
            Ok(Opened {
                cipher: Cipher::Aes,
                aes_iv: Some(iv),
                header,
                payload: &self.inflated[range],
            })
        } else if let Some(ct) = sealed.strip_prefix(b":") {
            if ct.is_empty() || ct.len() % 8 != 0 {
                return Err(Reject::new(
                    RejectKind::Decrypt,
                    "Blowfish ciphertext is empty or not a multiple of 8 bytes",
                ));
            }
            self.scratch.clear();
            self.scratch.extend_from_slice(ct);
            let dec = BlowfishCbcDec::inner_iv_init(key.blowfish().clone(), &BLOWFISH_IV.into());
            let plain_len = dec
                .decrypt_padded_mut::<NoPadding>(&mut self.scratch)
                .map_err(|_| Reject::new(RejectKind::Decrypt, "Blowfish decryption failed"))?
                .len();
            let (header, range) = unseal(
                &self.scratch[..plain_len],
                &mut self.inflate,
                &mut self.inflated,
            )?;
            Ok(Opened {
                cipher: Cipher::Blowfish,
                aes_iv: None,
                header,
                payload: &self.inflated[range],
            })
        } else {
            // The C receiver skips the marker byte unchecked and decrypts the
            // rest, which fails as "wrong key": so do we (negative.jsonl agrees).
            Err(Reject::new(
                RejectKind::Decrypt,
                "no `#AES:` or `:` marker after the agent ID",
            ))
        }
    }
}

/// How far into the message a failure happened; used to report the more
/// telling of the two AES attempts.
fn depth(kind: RejectKind) -> u8 {
    match kind {
        RejectKind::Decrypt => 0,
        RejectKind::Decompress => 1,
        RejectKind::Size => 2,
        _ => 3,
    }
}

/// From decrypted bytes to header and payload: strip `!`, inflate (bounded),
/// check the MD5, parse the counters. The payload is `out[range]`.
fn unseal(
    plain: &[u8],
    inflate: &mut Inflater,
    out: &mut [u8],
) -> Result<(Header, std::ops::Range<usize>), Reject> {
    match plain.first() {
        Some(b'!') => {}
        Some(b':') => {
            return Err(Reject::new(
                RejectKind::Format,
                "legacy uncompressed message format is not supported",
            ))
        }
        _ => {
            return Err(Reject::new(
                RejectKind::Decrypt,
                "wrong key or corrupt message (no `!` padding after decryption)",
            ))
        }
    }
    let start = plain.iter().position(|&b| b != b'!').unwrap_or(plain.len());
    let z = &plain[start..];
    // zlib header: deflate method and a valid FCHECK. Anything else is not
    // a message of ours: the key is wrong or the bytes were changed.
    if z.len() < 2 || z[0] & 0x0f != 8 || (u16::from(z[0]) << 8 | u16::from(z[1])) % 31 != 0 {
        return Err(Reject::new(
            RejectKind::Decrypt,
            "wrong key or corrupt message (no zlib stream after the `!` padding)",
        ));
    }
    let n = inflate.inflate(z, out)?;
    let inner = &out[..n];
    if inner.len() < HEADER_LEN {
        return Err(Reject::new(
            RejectKind::Format,
            "decompressed message is shorter than its 53-byte header",
        ));
    }
    if md5_hex(&inner[32..]) != inner[..32] {
        return Err(Reject::new(
            RejectKind::Checksum,
            "MD5 of the message does not match",
        ));
    }
    let rand = digits(&inner[32..37]).filter(|&r| r <= u64::from(u16::MAX));
    let global = digits(&inner[37..47]).filter(|&g| g <= u64::from(u32::MAX));
    let local = digits(&inner[48..52]);
    match (rand, global, inner[47], local, inner[52]) {
        (Some(rand), Some(global), b':', Some(local), b':') => Ok((
            Header {
                rand: rand as u16,
                global_counter: global as u32,
                local_counter: local as u32,
            },
            HEADER_LEN..n,
        )),
        _ => Err(Reject::new(
            RejectKind::Format,
            "message header is not `RRRRRGGGGGGGGGG:LLLL:`",
        )),
    }
}

fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        b.iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
    )
}

/// Builds the inner plaintext `md5hex(BODY) || BODY` with
/// `BODY = "%05hu%010u:%04u:" || payload`.
fn inner_message(header: Header, payload: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(HEADER_LEN + payload.len());
    inner.extend_from_slice(&[0u8; 32]);
    // Writing into a Vec cannot fail.
    let _ = write!(
        inner,
        "{:05}{:010}:{:04}:",
        header.rand, header.global_counter, header.local_counter
    );
    inner.extend_from_slice(payload);
    let sum = md5_hex(&inner[32..]);
    inner[..32].copy_from_slice(&sum);
    inner
}

thread_local! {
    /// Deflate state reused across messages (with its level): building one
    /// allocates and initialises hundreds of kilobytes, far more work than
    /// a small message.
    static DEFLATE: std::cell::RefCell<Option<(u32, flate2::Compress)>> =
        const { std::cell::RefCell::new(None) };
}

/// zlib (RFC 1950) at `level`; level 9 is what `compress2(Z_BEST_COMPRESSION)`
/// of real agents makes.
fn deflate(input: &[u8], level: u32) -> Vec<u8> {
    let run = |c: &mut flate2::Compress| {
        c.reset();
        // compressBound plus room; grown if ever short.
        let mut out = Vec::with_capacity(input.len() + input.len() / 1000 + 64);
        loop {
            let consumed = c.total_in() as usize;
            match c.compress_vec(&input[consumed..], &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => return out,
                Ok(_) => out.reserve(out.capacity().max(64)),
                // Compressing into a Vec does not fail.
                Err(_) => return out,
            }
        }
    };
    let level = level.min(9);
    let fresh = || flate2::Compress::new(flate2::Compression::new(level), true);
    DEFLATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let c = match &mut *slot {
                Some((l, c)) if *l == level => c,
                other => &mut other.insert((level, fresh())).1,
            };
            run(c)
        }
        Err(_) => run(&mut fresh()),
    })
}

/// Seals a message the way `CreateSecMSG` does (§3.1): header, MD5, zlib
/// level 9, `!` padding, encryption, marker and optional `!ID!` prefix.
/// Fails only when the payload is empty or larger than [`MAX_PAYLOAD`].
pub fn encode(
    key: &AgentKey,
    sealing: Sealing,
    id_prefix: Option<&str>,
    header: Header,
    payload: &[u8],
) -> Result<Vec<u8>, Reject> {
    encode_with_level(key, sealing, id_prefix, header, payload, 9)
}

/// [`encode`] with another zlib level (0..=9). Receivers accept any level;
/// the load generator uses a low one to spend less CPU than the server.
pub fn encode_with_level(
    key: &AgentKey,
    sealing: Sealing,
    id_prefix: Option<&str>,
    header: Header,
    payload: &[u8],
    zlib_level: u32,
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
    // The header has four digits for the local counter (`%04u`).
    if header.local_counter > 9999 {
        return Err(Reject::new(
            RejectKind::Format,
            format!(
                "local counter {} does not fit the 4-digit field",
                header.local_counter
            ),
        ));
    }
    let inner = inner_message(header, payload);
    let z = deflate(&inner, zlib_level);
    let pad = 8 - z.len() % 8;
    let mut wire = Vec::with_capacity(z.len() + 48);
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
    wire.extend_from_slice(&z);
    let plain_len = wire.len() - start;
    match sealing {
        Sealing::Blowfish => {
            let enc = BlowfishCbcEnc::inner_iv_init(key.blowfish().clone(), &BLOWFISH_IV.into());
            // The `!` padding made the length a multiple of 8.
            let _ = enc.encrypt_padded_mut::<NoPadding>(&mut wire[start..], plain_len);
        }
        Sealing::AesFixed | Sealing::AesRandom(_) => {
            let iv = match sealing {
                Sealing::AesRandom(iv) => iv,
                _ => AES_FIXED_IV,
            };
            wire.resize(start + (plain_len / 16 + 1) * 16, 0);
            let enc = Aes256CbcEnc::inner_iv_init(key.aes().clone(), &iv.into());
            // The buffer has room for the full PKCS#7 block.
            let _ = enc.encrypt_padded_mut::<Pkcs7>(&mut wire[start..], plain_len);
        }
    }
    // A random IV and a long `!ID!` can push an incompressible maximal
    // payload past what receivers accept as one message or TCP frame.
    if wire.len() > MAX_MESSAGE {
        return Err(Reject::new(
            RejectKind::Size,
            format!(
                "sealed message of {} bytes is larger than {MAX_MESSAGE}",
                wire.len()
            ),
        ));
    }
    Ok(wire)
}

/// The sender counter of one side (§3.4): local runs 1..=9997, then wraps to
/// 1 with global + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SenderCounter {
    pub global: u32,
    pub local: u32,
}

impl SenderCounter {
    pub fn new(global: u32, local: u32) -> Self {
        SenderCounter { global, local }
    }

    /// Advances the counter and returns the values for the next message.
    pub fn advance(&mut self) -> (u32, u32) {
        if self.local >= 9997 {
            self.local = 0;
            self.global = self.global.wrapping_add(1);
        }
        self.local += 1;
        (self.global, self.local)
    }

    /// Advances the counter, but never below the clock: global = Unix
    /// seconds, local = the fraction of the second in 1..=9996 (about
    /// 100 µs steps). Several managers (collector replicas) that share a
    /// clock then hand an agent that moves between them ever-newer
    /// counters, as long as none sends it more than ~10,000 replies a
    /// second, and a restart never goes back.
    pub fn advance_at(&mut self, unix_us: i64) -> (u32, u32) {
        let next = self.advance();
        let clock = Self::clock(unix_us);
        if clock > next {
            (self.global, self.local) = clock;
            clock
        } else {
            next
        }
    }

    /// The counter value the clock stands for at `unix_us`.
    pub fn clock(unix_us: i64) -> (u32, u32) {
        let us = unix_us.max(0);
        let secs = (us / 1_000_000).min(i64::from(u32::MAX)) as u32;
        let frac = (us % 1_000_000) as u32;
        (secs, 1 + frac / 101)
    }
}

/// What the receiver's counter check (§3.5) says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayVerdict {
    /// Newer than anything accepted: accept and store its counters.
    Accept,
    /// Same global counter, local not newer: a duplicate (`KS_RIDS`).
    Duplicate,
    /// Global counter smaller than stored: an old message, or an agent
    /// reinstalled with fresh counters.
    Backwards,
}

/// The counter check, as a pure function of the last accepted counters
/// (`None` before the first message) and the received ones.
pub fn replay_verdict(stored: Option<(u32, u32)>, received: (u32, u32)) -> ReplayVerdict {
    let Some((g, l)) = stored else {
        return ReplayVerdict::Accept;
    };
    let (rg, rl) = received;
    if rg > g || (rg == g && rl > l) {
        ReplayVerdict::Accept
    } else if rg == g {
        ReplayVerdict::Duplicate
    } else {
        ReplayVerdict::Backwards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a5f3c0b4d9e6a7f8c1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4";
    const PAYLOAD: &[u8] = b"1:/var/log/syslog:hello world";

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn worked(sealing: Sealing, prefix: Option<&str>) -> Vec<u8> {
        let key = AgentKey::derive(b"001", b"agent1", KEY);
        let header = Header {
            rand: 12345,
            global_counter: 1,
            local_counter: 1,
        };
        encode(&key, sealing, prefix, header, PAYLOAD).unwrap()
    }

    #[test]
    fn byte_exact_with_protocol_md_section_10() {
        let aes = "0398fed1d64503f691dfb5e40e1e83335757ff3efd5ee89b2bb009d99ed9d9903b91fa97edca5a94a5b0bf180885b8a2e96e0487b9d1675cdd51831e82e70c160302b260c2e7a5aa3273b7951356046c1cb0512da4eedb0085ef04e9e274b92f";
        assert_eq!(
            worked(Sealing::AesFixed, None),
            h(&format!("234145533a{aes}"))
        );
        assert_eq!(
            worked(Sealing::AesFixed, Some("001")),
            h(&format!("2130303121234145533a{aes}"))
        );
        let bf = "a941b2476c717b2867f1d6bc07a7d20e2bbf8113698fb966f84c8ee631839f7ceb6d1d7bd06c388d5a00d9ecc3b9588db863f6f69baccabdd157197b1797c71b6f23d08fd0614d5535899e017c517732";
        assert_eq!(
            worked(Sealing::Blowfish, Some("001")),
            h(&format!("21303031213a{bf}"))
        );
        let rnd = "2130303121234145533a11111111111111111111111111111111 63c99b0417d538af9a9451d23f612c660fa95892453aa4d0344933c91745b305383946705c47cc36061ad8f3daee1254ce49fd249d4b07d374e542465d69196aa0716f7f36144318c5dd7ef699d0951384eb6ce5b51d3fbc3b803ee068ed4f4e";
        assert_eq!(worked(Sealing::AesRandom([0x11; 16]), Some("001")), h(rnd));
    }

    #[test]
    fn opens_all_variants() {
        let keys = ClientKeys::parse(
            format!("001 agent1 any {}\n", std::str::from_utf8(KEY).unwrap()).as_bytes(),
        )
        .unwrap();
        let mut d = Decoder::new();
        for (s, iv) in [
            (Sealing::AesFixed, Some(AesIv::Fixed)),
            (Sealing::AesRandom([7; 16]), Some(AesIv::RandomPrefix)),
            (Sealing::Blowfish, None),
        ] {
            let wire = worked(s, Some("001"));
            match d.decode(&keys, &wire, "10.0.0.1".parse().unwrap()).unwrap() {
                Decoded::Message { agent, opened, .. } => {
                    assert_eq!(agent, 0);
                    assert_eq!(opened.payload, PAYLOAD);
                    assert_eq!(opened.aes_iv, iv);
                    assert_eq!(opened.cipher, s.cipher());
                    assert_eq!(opened.header.rand, 12345);
                }
                Decoded::Ping => panic!("not a ping"),
            }
        }
    }

    #[test]
    fn encode_refuses_what_receivers_would_reject() {
        let key = AgentKey::derive(b"001", b"agent1", KEY);
        let h = Header {
            rand: 1,
            global_counter: 7,
            local_counter: 10_000,
        };
        assert_eq!(
            encode(&key, Sealing::AesFixed, None, h, b"1:x:y")
                .unwrap_err()
                .kind,
            RejectKind::Format
        );
        // 65408 incompressible bytes with a random IV and a 10-digit ID: 65537 on the wire.
        let mut x: u32 = 1;
        let big: Vec<u8> = (0..MAX_PAYLOAD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let r = encode(
            &key,
            Sealing::AesRandom([1; 16]),
            Some("1234567890"),
            Header::default(),
            &big,
        );
        assert_eq!(r.unwrap_err().kind, RejectKind::Size);
        assert!(
            encode(
                &key,
                Sealing::AesFixed,
                Some("001"),
                Header::default(),
                &big
            )
            .unwrap()
            .len()
                <= MAX_MESSAGE
        );
    }

    /// What zlib-rs alone says of a stream: the reference behaviour.
    fn zlib_only(z: &[u8], out: &mut [u8]) -> Result<Vec<u8>, RejectKind> {
        let mut i = Inflater::new();
        // Force the streaming path by giving libdeflate nothing to succeed on.
        i.exact.reset(true);
        match i.exact.decompress(z, out, FlushDecompress::Finish) {
            Ok(Status::StreamEnd) => Ok(out[..i.exact.total_out() as usize].to_vec()),
            Ok(_) if i.exact.total_out() as usize >= out.len() => Err(RejectKind::Size),
            Ok(_) => Err(RejectKind::Decompress),
            Err(_) => Err(RejectKind::Decrypt),
        }
    }

    fn zlib(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflater_agrees_with_zlib_on_good_and_broken_streams() {
        let mut inflater = Inflater::new();
        let mut out = vec![0u8; MAX_MESSAGE];
        let mut reference = vec![0u8; MAX_MESSAGE];
        let text: Vec<u8> = (0..3000u32)
            .flat_map(|i| {
                format!(
                    "Nov 29 sshd[{i}]: Failed password for root from 10.0.{}.{} ",
                    i % 7,
                    i % 251
                )
                .into_bytes()
            })
            .take(2500)
            .collect();
        let mut x: u32 = 0x1234_5678;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for level in [0, 1, 6, 9] {
            let z = zlib(&text, level);
            cases.push(z.clone());
            // Trailing bytes after the stream (zlib's uncompress ignores them).
            cases.push([&z[..], b"trailing"].concat());
            // Truncated anywhere, and the checksum alone broken.
            for cut in [1, 2, 4, 5, z.len() / 2] {
                cases.push(z[..z.len() - cut].to_vec());
            }
            let mut bad_sum = z.clone();
            let last = bad_sum.len() - 1;
            bad_sum[last] ^= 1;
            cases.push(bad_sum);
            for _ in 0..300 {
                let mut m = z.clone();
                let i = 2 + rnd() as usize % (m.len() - 2);
                m[i] ^= 1 << (rnd() % 8);
                cases.push(m);
            }
        }
        // Exactly the limit, and one byte over it.
        cases.push(zlib(&vec![b'a'; MAX_MESSAGE], 9));
        cases.push(zlib(&vec![b'a'; MAX_MESSAGE + 1], 9));
        let mut kinds = std::collections::HashSet::new();
        for (n, z) in cases.iter().enumerate() {
            let ours = inflater
                .inflate(z, &mut out)
                .map(|n| out[..n].to_vec())
                .map_err(|r| r.kind);
            let want = zlib_only(z, &mut reference);
            assert_eq!(ours, want, "case {n}");
            kinds.insert(format!("{:?}", ours.map(|_| ())));
        }
        // Every outcome was exercised.
        assert_eq!(kinds.len(), 4, "{kinds:?}");
    }

    #[test]
    fn sender_counter_wraps_at_9997() {
        let mut c = SenderCounter::new(0, 0);
        assert_eq!(c.advance(), (0, 1));
        let mut c = SenderCounter::new(5, 9996);
        assert_eq!(c.advance(), (5, 9997));
        assert_eq!(c.advance(), (6, 1));
    }

    #[test]
    fn clocked_sender_counters_of_two_managers_interleave_in_order() {
        // Two managers with one clock, replying to one agent in turns: the
        // agent's check (§3.5) accepts every reply, whichever sent it, even
        // when one of them is far behind in replies sent.
        let (mut a, mut b) = (SenderCounter::new(0, 0), SenderCounter::new(0, 0));
        let mut last = None;
        let mut t = 1_800_000_000_000_000i64;
        for i in 0..2_000 {
            let c = if i % 3 == 0 { &mut b } else { &mut a };
            let got = c.advance_at(t);
            assert_eq!(
                replay_verdict(last, got),
                ReplayVerdict::Accept,
                "reply {i}"
            );
            last = Some(got);
            t += 250; // 4,000 replies a second
        }
        // The clock's local part stays within the 4 digits; a burst
        // faster than the clock still counts up.
        assert_eq!(SenderCounter::clock(1_999_999).1, 1 + 999_999 / 101);
        let mut c = SenderCounter::new(0, 0);
        let first = c.advance_at(5_000_000);
        assert_eq!(first, (5, 1));
        assert_eq!(c.advance_at(5_000_000), (5, 2));
        // A clock that went back does not lower the counter.
        assert_eq!(c.advance_at(1_000_000), (5, 3));
    }

    #[test]
    fn replay_verdicts_match_the_c_code() {
        // PROTOCOL.md §3.5: message 1:1 against stored 1:1 / 2:0 / 0:5.
        assert_eq!(
            replay_verdict(Some((1, 1)), (1, 1)),
            ReplayVerdict::Duplicate
        );
        assert_eq!(
            replay_verdict(Some((2, 0)), (1, 1)),
            ReplayVerdict::Backwards
        );
        assert_eq!(replay_verdict(Some((0, 5)), (1, 1)), ReplayVerdict::Accept);
        assert_eq!(replay_verdict(None, (0, 1)), ReplayVerdict::Accept);
        assert_eq!(replay_verdict(Some((1, 1)), (1, 2)), ReplayVerdict::Accept);
    }
}
