//! Sans-IO implementation of the Wazuh/OSSEC agent protocol (port 1514).
//!
//! No sockets, no clock, no files: every function takes bytes (and an
//! address where the protocol needs one) and returns values, so the
//! collector, the agent simulator, the tests and the fuzzers run exactly
//! the same code. Modules:
//!
//! * [`keys`]: `client.keys` parsing, lint and agent lookup;
//! * [`derive`]: per-agent key derivation and prepared ciphers;
//! * [`codec`]: `!ID!` prefix, AES/Blowfish, padding, zlib, MD5, counters —
//!   decoding ([`codec::Decoder`]) and encoding ([`codec::encode`]) in both
//!   directions, sender counters and replay verdicts;
//! * [`frame`]: TCP length-prefixed framing;
//! * [`payload`]: control messages, keepalives and events;
//! * [`enroll`]: the enrollment request and answer of port 1515;
//! * [`proxy`]: the PROXY protocol header (v1, v2) of load balancers;
//! * [`error`]: the rejection kinds.
//!
//! `PROTOCOL.md` (shipped in `docs/`) is the reference for every rule here.

pub mod codec;
pub mod derive;
pub mod enroll;
pub mod error;
pub mod frame;
pub mod keys;
pub mod payload;
pub mod proxy;

pub use codec::{
    encode, identify, parse_wire, replay_verdict, AesIv, Cipher, Decoded, Decoder, Header,
    Identified, Opened, ReplayVerdict, Sealing, SenderCounter, Wire,
};
pub use derive::AgentKey;
pub use error::{Reject, RejectKind};
pub use keys::{AllowedAddr, ClientKeys, KeyEntry, KeysError};
pub use payload::{classify, Control, Event, Keepalive, Payload};
