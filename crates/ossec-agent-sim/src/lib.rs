//! ossec-agent-sim: simulated Wazuh 4.x and OSSEC 3.x/4.x agents for load
//! and correctness tests of a port-1514 server.
//!
//! * [`agent`]: one agent, sans IO — startup, keepalive, shutdown and event
//!   messages sealed with the `ossec-proto` codec under a real per-agent
//!   sender counter, and checking of the manager's replies (`#!-agent ack `);
//! * [`enroll`]: the TLS enrollment client of port 1515 (`--enroll`);
//! * [`events`]: the realistic event mix (sshd/sudo syslog, FIM JSON,
//!   Windows eventchannel JSON, rootcheck), 100 B to 4 KB, with the optional
//!   `stamp=<µs>` marker used to measure latency from the store;
//! * [`preseal`]: events sealed before the run (`--preseal`), so that the
//!   load generator spends almost no CPU while it measures a server;
//! * [`seal`]: `CreateSecMSG` with reused zlib state, byte-identical to
//!   `ossec_proto::encode` (which builds a compressor per message);
//! * [`sim`]: the tokio runtime side — one task per agent, rate schedule,
//!   reconnects, source addresses, counters and the JSON [`sim::Summary`].

pub mod agent;
pub mod enroll;
pub mod events;
pub mod preseal;
pub mod seal;
pub mod sim;

pub use agent::{generate_keys, Agent, Flavor, Reply};
pub use events::{EventKind, Mix};
pub use sim::{run, Cidr, CipherChoice, SimConfig, Summary, TransportChoice};
