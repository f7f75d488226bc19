//! ossec-collector: a server for the Wazuh/OSSEC agent protocol that keeps
//! real agents connected and writes their events into PostgreSQL or SQLite.
//!
//! Data flows one way: socket ([`udp`], [`tcp`]) → frame → decrypt → decode
//! ([`ingest`], on the sans-IO `ossec-proto`) → bounded queue → disk
//! spool ([`spool`] on [`segments`]; or, with `--spool-dir off`, the
//! memory-only [`writer`]) → batch → store (`ossec-store`). Replies (`#!-agent ack `, `#pong`)
//! go back through the listener that received the message.

pub mod agents;
pub mod config;
pub mod enroll;
pub mod history;
pub mod http;
pub mod ingest;
pub mod keysync;
pub mod metrics;
pub mod procstat;
pub mod proxy;
pub mod segments;
pub mod server;
pub mod shutdown;
pub mod spool;
pub mod tcp;
pub mod tools;
pub mod udp;
pub mod writer;
