//! Structured fields of agent events: what goes to `events.data`.
//! (Being written; see `derive`.)

/// What [`derive`] found in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No structured data: `data` stays NULL.
    None,
    Json,
    EventChannel,
    Syslog,
    /// Looked like JSON but did not parse (or was unsafe to store): NULL.
    JsonInvalid,
    /// An eventchannel event whose XML did not parse: NULL.
    XmlInvalid,
}

/// Appends the JSON text of `events.data` for one event to `out` and says
/// what it was; appends nothing for the NULL outcomes.
pub fn derive(_queue: u8, _location: &[u8], _message: &[u8], _out: &mut Vec<u8>) -> Outcome {
    Outcome::None
}
