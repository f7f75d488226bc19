//! Why a message was rejected.
//!
//! Owns the closed list of rejection kinds. Every failure of framing,
//! decoding or classification maps to exactly one [`RejectKind`], whose
//! `as_str` name is used in metrics, logs, the store and the `decode` tool.

use std::borrow::Cow;
use std::fmt;

/// The kind of a rejected message. The names are a contract (metrics labels,
/// `decode` output, `negative.jsonl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectKind {
    /// The bytes do not have the shape of a message (bad prefix, bad header,
    /// bad counters, too short, zero-length frame).
    Format,
    /// No `client.keys` entry for the `!ID!` or for the source address.
    UnknownAgent,
    /// The entry exists but does not allow the source address.
    AddressNotAllowed,
    /// The ciphertext does not decrypt with the agent's key: wrong key or corrupt.
    Decrypt,
    /// The plaintext is zlib but does not inflate.
    Decompress,
    /// The MD5 in the message does not match its body.
    Checksum,
    /// Larger than the protocol allows (frame length, inflated size).
    Size,
    /// Counters not newer than the last accepted message of that agent.
    Replay,
}

impl RejectKind {
    pub const ALL: [RejectKind; 8] = [
        RejectKind::Format,
        RejectKind::UnknownAgent,
        RejectKind::AddressNotAllowed,
        RejectKind::Decrypt,
        RejectKind::Decompress,
        RejectKind::Checksum,
        RejectKind::Size,
        RejectKind::Replay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Format => "format",
            RejectKind::UnknownAgent => "unknown-agent",
            RejectKind::AddressNotAllowed => "address-not-allowed",
            RejectKind::Decrypt => "decrypt",
            RejectKind::Decompress => "decompress",
            RejectKind::Checksum => "checksum",
            RejectKind::Size => "size",
            RejectKind::Replay => "replay",
        }
    }

    /// Position in [`RejectKind::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message: its kind and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct Reject {
    pub kind: RejectKind,
    /// Static in the common cases, so that a flood of garbage does not allocate.
    pub detail: Cow<'static, str>,
}

impl Reject {
    pub fn new(kind: RejectKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Reject {
            kind,
            detail: detail.into(),
        }
    }
}
