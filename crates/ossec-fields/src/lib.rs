//! Structured fields of agent events: what goes to `events.data`.
//!
//! [`derive()`] looks at one event (`queue:location:message`, already split)
//! and appends the JSON text of its `data` column, or nothing:
//!
//! 1. Queue `f` (Windows eventchannel; Wazuh's analysisd dispatches on the
//!    queue alone, `WIN_EVT_MQ`): the agent's JSON envelope is read and its
//!    `Event` XML mapped to the `{"win":{"system":…,"eventdata":…}}` fields
//!    of Wazuh's eventchannel decoder ([`Outcome::EventChannel`]). An
//!    envelope that is valid JSON without a string `Event` is stored as
//!    JSON ([`Outcome::Json`]).
//! 2. Any other queue, a message that starts (after ASCII whitespace) with
//!    `{`, or with `[` then `{`, `[`, `"` or `]`: a valid JSON object or
//!    array is stored ([`Outcome::Json`]), anything else is
//!    [`Outcome::JsonInvalid`]. Any other `[…` message is stored if it is a
//!    valid JSON array (`[1,2]`), and is otherwise text that goes to step 3
//!    (`[INFO] …`, apache's `[Fri Feb 11 18:06:35 2004] …`).
//! 3. Text: the syslog predecoder's `{"predecoder":{"timestamp",
//!    "hostname","program_name","pid"}}` ([`Outcome::Syslog`]), or nothing
//!    ([`Outcome::None`]).
//!
//! Every byte appended is UTF-8 JSON that `serde_json::from_slice` reads
//! and PostgreSQL's `jsonb` input accepts: no NUL and no `\u0000`, no
//! unpaired surrogate escape, no number outside `numeric`/`f64` range,
//! nesting at most [`MAX_JSON_DEPTH`]. For JSON payloads the output is the
//! original bytes (without surrounding whitespace) in all but hostile
//! cases, where only the offending escapes or numbers are rewritten (the
//! rules are in `docs/fields.md`).
//!
//! Pure functions: no I/O, no clock, no global state; time and memory are
//! linear in the message size.

// No panics on input: the library code neither indexes nor unwraps.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

mod eventchannel;
mod json;
mod syslog;

pub use eventchannel::{MAX_XML_ATTRIBUTES, MAX_XML_DEPTH, MAX_XML_TEXT};
pub use json::MAX_DEPTH as MAX_JSON_DEPTH;

/// What [`derive()`] found in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No structured data: `data` stays NULL. Nothing was appended.
    None,
    /// A JSON object or array: appended as-is (rewritten only where
    /// PostgreSQL would refuse it).
    Json,
    /// A Windows eventchannel event: `{"win":{…}}` appended.
    EventChannel,
    /// A text line with a syslog header: `{"predecoder":{…}}` appended.
    Syslog,
    /// Looked like JSON but did not parse (or was unsafe to store): NULL.
    /// Nothing was appended.
    JsonInvalid,
    /// An eventchannel event whose XML did not parse, or was refused as
    /// hostile: NULL. Nothing was appended.
    XmlInvalid,
}

impl Outcome {
    /// Whether [`derive()`] appended data (`Json`, `EventChannel`, `Syslog`).
    pub fn has_data(self) -> bool {
        matches!(
            self,
            Outcome::Json | Outcome::EventChannel | Outcome::Syslog
        )
    }
}

/// The eventchannel queue (`WIN_EVT_MQ`).
const QUEUE_EVENTCHANNEL: u8 = b'f';

/// Appends the JSON text of `events.data` for one event to `out` and says
/// what it was; appends nothing for the NULL outcomes (`None`,
/// `JsonInvalid`, `XmlInvalid`).
///
/// `queue` is the event's queue byte (`b'1'` localfile, `b'8'` syscheck,
/// `b'f'` eventchannel, …); `location` is not used for the decision
/// (Wazuh's is by queue alone) and is accepted for callers' symmetry.
/// `message` is any bytes.
pub fn derive(queue: u8, location: &[u8], message: &[u8], out: &mut Vec<u8>) -> Outcome {
    let _ = location;
    let before = out.len();
    let outcome = derive_inner(queue, message, out);
    if !outcome.has_data() {
        // Belt and braces: the NULL outcomes never leave bytes behind.
        out.truncate(before);
    }
    outcome
}

fn derive_inner(queue: u8, message: &[u8], out: &mut Vec<u8>) -> Outcome {
    if queue == QUEUE_EVENTCHANNEL {
        return eventchannel::derive(message, out);
    }
    match json::shape(message) {
        json::Shape::Json => {
            return match json::derive(message, out) {
                Ok(()) => Outcome::Json,
                Err(json::Invalid) => Outcome::JsonInvalid,
            }
        }
        json::Shape::Bracket => {
            if json::derive(message, out).is_ok() {
                return Outcome::Json;
            }
        }
        json::Shape::Text => {}
    }
    if syslog::derive(message, out) {
        Outcome::Syslog
    } else {
        Outcome::None
    }
}
