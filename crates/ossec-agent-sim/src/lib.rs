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

/// Raises the soft open-files limit to the hard one (one socket per agent);
/// returns the soft limit now, or 0 when it cannot be read.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        if l.rlim_cur < l.rlim_max {
            let want = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                l.rlim_cur = l.rlim_max;
            }
        }
        l.rlim_cur
    }
}

pub use agent::{generate_keys, Agent, Flavor, Reply};
pub use events::{EventKind, Mix};
pub use sim::{run, Cidr, CipherChoice, SimConfig, Summary, TransportChoice};
