//! A verbatim copy of the implementation as committed before the
//! eventchannel performance work (`src/json.rs`, `src/eventchannel.rs`,
//! `src/syslog.rs` and `derive` of `src/lib.rs`), with only the paths
//! adjusted (`crate::` → `super::`) and the unit tests left out: the
//! reference the golden test compares the current code with.
#![allow(dead_code, clippy::all, clippy::pedantic)]

mod eventchannel;
mod json;
mod syslog;

use ossec_fields::Outcome;

const QUEUE_EVENTCHANNEL: u8 = b'f';

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
