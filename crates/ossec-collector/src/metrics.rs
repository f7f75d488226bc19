//! Every counter of the collector, the rate-limited logging of rejects and
//! drops, and the Prometheus text rendering.
//!
//! The hot path only increments atomics (`metrics.rejected(kind, …)` never
//! formats a string unless a log line is due). Log lines for rejects are
//! limited to one per kind per [`LOG_EVERY_SECS`], each saying how many were
//! suppressed, so a flood of garbage yields a few summary lines.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use ossec_proto::RejectKind;
use parking_lot::Mutex;

/// Seconds between two log lines about the same kind of reject or drop.
pub const LOG_EVERY_SECS: i64 = 10;

/// `udp` or `tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
    fn i(self) -> usize {
        self as usize
    }
}

/// Why a TCP connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The agent closed it.
    Eof,
    /// A read or write failed.
    IoError,
    /// Framing broken or a message that does not decrypt (as Wazuh does).
    Rejected,
    /// Silent for longer than the idle timeout.
    Idle,
    /// A newer connection of the same agent took over.
    Takeover,
    /// The collector is shutting down.
    Shutdown,
}

const CLOSE_REASONS: [(CloseReason, &str); 6] = [
    (CloseReason::Eof, "eof"),
    (CloseReason::IoError, "io_error"),
    (CloseReason::Rejected, "rejected"),
    (CloseReason::Idle, "idle"),
    (CloseReason::Takeover, "takeover"),
    (CloseReason::Shutdown, "shutdown"),
];

/// Control messages by type.
pub const CONTROL_TYPES: [&str; 6] = [
    "startup",
    "shutdown",
    "keepalive",
    "request",
    "ack",
    "other",
];

/// Batch write latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A rate limiter for one kind of log line.
#[derive(Default)]
struct LogGate {
    last: AtomicI64,
    suppressed: AtomicU64,
}

impl LogGate {
    /// `Some(suppressed since last line)` when a line may be written now.
    fn admit(&self, now_s: i64) -> Option<u64> {
        let last = self.last.load(Relaxed);
        if now_s - last >= LOG_EVERY_SECS
            && self
                .last
                .compare_exchange(last, now_s, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// All counters.
#[derive(Default)]
pub struct Metrics {
    received: [AtomicU64; 2],
    bytes_in: [AtomicU64; 2],
    bytes_out: [AtomicU64; 2],
    rejected: [AtomicU64; 8],
    rejected_by_agent: Mutex<HashMap<Arc<str>, [u64; 8]>>,
    reject_gates: [LogGate; 8],
    pub events_queued: AtomicU64,
    pub events_stored: AtomicU64,
    events_dropped_queue_full: AtomicU64,
    drop_gate: LogGate,
    pub store_errors: AtomicU64,
    store_gate: LogGate,
    pub acks_sent: AtomicU64,
    pub pongs_sent: AtomicU64,
    control: [AtomicU64; 6],
    pub tcp_accepted: AtomicU64,
    pub tcp_refused: AtomicU64,
    pub tcp_open: AtomicI64,
    tcp_closed: [AtomicU64; 6],
    batch_buckets: [AtomicU64; 12],
    batch_count: AtomicU64,
    batch_sum_us: AtomicU64,
    pub key_reloads: AtomicU64,
    pub key_reload_errors: AtomicU64,
    pub agents_known: AtomicU64,
    enrollments: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    enroll_gate: LogGate,
    refusal_gate: LogGate,
    pub key_sync_errors: AtomicU64,
    key_sync_gate: LogGate,
    proxy_rejects: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    proxy_gate: LogGate,
    /// Agents whose counters were read from the store before a message
    /// was accepted (`--counter-sync-ms`), and failed reads.
    pub counter_syncs: AtomicU64,
    pub counter_sync_errors: AtomicU64,
    counter_sync_gate: LogGate,
    /// Whether this collector holds the once-per-cluster jobs' lock.
    pub jobs_leader: std::sync::atomic::AtomicBool,
    /// Events dropped because the spool refused them (full, or a failing
    /// disk): UDP with `--spool-when-full block`, everything with
    /// `drop-newest`.
    events_dropped_spool_full: AtomicU64,
    spool_gate: LogGate,
    /// 0 after a failed store write until the next one succeeds.
    store_down: std::sync::atomic::AtomicBool,
    store_down_gate: LogGate,
    /// The spool's figures, when there is one.
    pub spool: parking_lot::RwLock<Option<Arc<crate::spool::SpoolStats>>>,
    /// Stored events by what `events.data` got: json, eventchannel,
    /// syslog, then the two NULL outcomes json_invalid and xml_invalid.
    data: [AtomicU64; 5],
    data_gate: LogGate,
    /// Partition and retention jobs.
    pub partitions_created: AtomicU64,
    pub partition_rows_moved: AtomicU64,
    pub retention_partitions_dropped: AtomicU64,
    pub retention_rows_deleted: AtomicU64,
    pub retention_rows_dropped_estimate: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn received(&self, t: Transport, bytes: usize) {
        self.received[t.i()].fetch_add(1, Relaxed);
        self.bytes_in[t.i()].fetch_add(bytes as u64, Relaxed);
    }

    pub fn sent(&self, t: Transport, bytes: usize) {
        self.bytes_out[t.i()].fetch_add(bytes as u64, Relaxed);
    }

    pub fn control(&self, name: &str) {
        if let Some(i) = CONTROL_TYPES.iter().position(|c| *c == name) {
            self.control[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a rejected message (by kind, and by agent where known) and
    /// logs it if this kind has not been logged in the last few seconds.
    pub fn rejected(
        &self,
        kind: RejectKind,
        agent: Option<&Arc<str>>,
        peer: SocketAddr,
        t: Transport,
        detail: &str,
    ) {
        let i = kind.index();
        self.rejected[i].fetch_add(1, Relaxed);
        if let Some(a) = agent {
            let mut m = self.rejected_by_agent.lock();
            match m.get_mut(a) {
                Some(c) => c[i] += 1,
                None => {
                    let mut c = [0; 8];
                    c[i] = 1;
                    m.insert(a.clone(), c);
                }
            }
        }
        if let Some(suppressed) = self.reject_gates[i].admit(now_s()) {
            tracing::warn!(
                kind = kind.as_str(),
                peer = %peer,
                transport = t.as_str(),
                agent = agent.map(|a| &**a).unwrap_or("-"),
                suppressed_since_last = suppressed,
                total = self.rejected[i].load(Relaxed),
                "rejected message: {detail}"
            );
        }
    }

    /// Counts an event dropped because the queue was full (UDP only).
    pub fn dropped_queue_full(&self, peer: SocketAddr) {
        let total = self.events_dropped_queue_full.fetch_add(1, Relaxed) + 1;
        if let Some(suppressed) = self.drop_gate.admit(now_s()) {
            tracing::warn!(
                peer = %peer,
                suppressed_since_last = suppressed,
                total,
                "queue full: UDP event dropped (the store is not keeping up; see --queue-capacity)"
            );
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.events_dropped_queue_full.load(Relaxed) + self.events_dropped_spool_full.load(Relaxed)
    }

    /// A UDP event dropped while the spool refuses events: reason
    /// `spool_full` rather than `queue_full`.
    pub fn dropped(&self, peer: SocketAddr) {
        let full = self
            .spool
            .read()
            .as_ref()
            .is_some_and(|s| s.full.load(Relaxed));
        if full {
            self.dropped_spool_full(peer.ip());
        } else {
            self.dropped_queue_full(peer);
        }
    }

    /// Counts an event the spool refused.
    pub fn dropped_spool_full(&self, peer: std::net::IpAddr) {
        let total = self.events_dropped_spool_full.fetch_add(1, Relaxed) + 1;
        if let Some(suppressed) = self.drop_gate.admit(now_s()) {
            tracing::warn!(
                peer = %peer,
                suppressed_since_last = suppressed,
                total,
                "spool full: event dropped (see --spool-max-bytes and --spool-when-full)"
            );
        }
    }

    /// The spool refused an append (full, or a disk error), logged at most
    /// every few seconds.
    pub fn spool_problem(&self, e: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.spool_gate.admit(now_s()) {
            tracing::error!(
                suppressed_since_last = suppressed,
                "the spool does not take events: {e}"
            );
        }
    }

    /// A store write failed (the spool keeps the events; retried).
    pub fn store_down(&self, e: &dyn std::fmt::Display) {
        self.store_errors.fetch_add(1, Relaxed);
        let was_down = self.store_down.swap(true, Relaxed);
        if !was_down || self.store_down_gate.admit(now_s()).is_some() {
            tracing::error!("store write failed; events wait in the spool, retrying: {e}");
        }
    }

    /// A store write succeeded.
    pub fn store_is_up(&self) {
        if self.store_down.swap(false, Relaxed) {
            tracing::info!("store writes succeed again; draining the spool");
        }
    }

    pub fn store_up(&self) -> bool {
        !self.store_down.load(Relaxed)
    }

    pub fn rejected_total(&self, kind: RejectKind) -> u64 {
        self.rejected[kind.index()].load(Relaxed)
    }

    pub fn received_total(&self, t: Transport) -> u64 {
        self.received[t.i()].load(Relaxed)
    }

    /// One enrollment connection ended with `outcome` (`enrolled`,
    /// `replaced`, or why not). Refusals are logged where they happen; the
    /// connection-level ones (limits, TLS, timeouts) are logged here,
    /// rate-limited.
    pub fn enrollment(&self, outcome: &'static str, peer: SocketAddr) {
        *self.enrollments.lock().entry(outcome).or_insert(0) += 1;
        if matches!(
            outcome,
            "rate_limited"
                | "too_many_connections"
                | "tls_error"
                | "timeout"
                | "read_error"
                | "write_error"
        ) {
            if let Some(suppressed) = self.enroll_gate.admit(now_s()) {
                tracing::warn!(peer = %peer, outcome, suppressed, "enrollment connection closed: {outcome}");
            }
        }
    }

    /// An enrollment refused with `err` (bad password, duplicate name, …),
    /// logged at most once per [`LOG_EVERY_SECS`] with the number since.
    pub fn enrollment_refused(
        &self,
        peer: SocketAddr,
        outcome: &'static str,
        err: &dyn std::fmt::Display,
    ) {
        if let Some(suppressed) = self.refusal_gate.admit(now_s()) {
            tracing::info!(peer = %peer, outcome, suppressed_since_last = suppressed, "enrollment refused: {err}");
        }
    }

    /// A TCP connection (1514 or 1515) closed because of its PROXY header:
    /// `untrusted_peer`, `missing`, `malformed`, `oversized`,
    /// `wrong_version`, `timeout`, `closed`.
    pub fn proxy_rejected(&self, reason: &'static str, peer: SocketAddr) {
        *self.proxy_rejects.lock().entry(reason).or_insert(0) += 1;
        if let Some(suppressed) = self.proxy_gate.admit(now_s()) {
            tracing::warn!(peer = %peer, reason, suppressed_since_last = suppressed, "connection closed: PROXY protocol header {reason}");
        }
    }

    /// PROXY header rejections so far, by reason.
    pub fn proxy_rejects(&self) -> Vec<(&'static str, u64)> {
        self.proxy_rejects
            .lock()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// Enrollment outcomes so far.
    pub fn enrollments(&self) -> Vec<(&'static str, u64)> {
        self.enrollments
            .lock()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// A failed read of the store's key feed (keys stay as they are; the
    /// next poll retries), counted and logged at most every few seconds.
    pub fn key_sync_error(&self, err: &dyn std::fmt::Display) {
        self.key_sync_errors.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.key_sync_gate.admit(now_s()) {
            tracing::warn!(
                suppressed_since_last = suppressed,
                "reading agent keys from the store failed, retrying: {err}"
            );
        }
    }

    /// A failed read of an agent's counters before accepting its message:
    /// the message is checked against this collector's own counters only.
    pub fn counter_sync_error(&self, agent: &str, err: &dyn std::fmt::Display) {
        self.counter_sync_errors.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.counter_sync_gate.admit(now_s()) {
            tracing::warn!(
                agent,
                suppressed_since_last = suppressed,
                "reading the agent's receive counters from the store failed; checking its message against this collector's counters only: {err}"
            );
        }
    }

    /// Counts a failed store write, logging at most every few seconds.
    pub fn store_error(&self, err: &dyn std::fmt::Display) {
        self.store_errors.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.store_gate.admit(now_s()) {
            tracing::error!(
                suppressed_since_last = suppressed,
                "store write failed, retrying: {err}"
            );
        }
    }

    /// Counts what `events.data` got in a committed batch; invalid JSON or
    /// XML is logged (rate-limited): the events are stored, `data` NULL.
    pub fn data_written(&self, c: &ossec_store::DataCounts) {
        let v = [
            c.json,
            c.eventchannel,
            c.syslog,
            c.json_invalid,
            c.xml_invalid,
        ];
        for (a, n) in self.data.iter().zip(v) {
            a.fetch_add(n, Relaxed);
        }
        if c.json_invalid + c.xml_invalid > 0 {
            if let Some(suppressed) = self.data_gate.admit(now_s()) {
                tracing::info!(
                    json_invalid = c.json_invalid,
                    xml_invalid = c.xml_invalid,
                    suppressed,
                    "events stored with data NULL: their JSON or eventchannel XML did not parse (the text is in message)"
                );
            }
        }
    }

    /// Counts the data outcomes: json, eventchannel, syslog, json_invalid,
    /// xml_invalid.
    pub fn data_totals(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.data[i].load(Relaxed))
    }

    pub fn tcp_closed(&self, reason: CloseReason) {
        if let Some(i) = CLOSE_REASONS.iter().position(|(r, _)| *r == reason) {
            self.tcp_closed[i].fetch_add(1, Relaxed);
        }
        self.tcp_open.fetch_sub(1, Relaxed);
    }

    pub fn batch_written(&self, rows: usize, secs: f64) {
        self.events_stored.fetch_add(rows as u64, Relaxed);
        self.batch_count.fetch_add(1, Relaxed);
        self.batch_sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.batch_buckets[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// Prometheus text exposition. `gauges` adds values computed at scrape
    /// time (queue depth, agents by status).
    pub fn render(
        &self,
        queue_depth: usize,
        queue_capacity: usize,
        agents_by_status: &[(&str, u64)],
    ) -> String {
        let mut s = String::with_capacity(8192);
        macro_rules! head {
            ($name:expr, $kind:expr, $help:expr) => {
                let _ = writeln!(s, "# HELP {} {}\n# TYPE {} {}", $name, $help, $name, $kind);
            };
        }
        head!(
            "ossec_messages_received_total",
            "counter",
            "Messages (datagrams or TCP frames) received, by transport."
        );
        for t in [Transport::Udp, Transport::Tcp] {
            let _ = writeln!(
                s,
                "ossec_messages_received_total{{transport=\"{}\"}} {}",
                t.as_str(),
                self.received[t.i()].load(Relaxed)
            );
        }
        head!(
            "ossec_bytes_received_total",
            "counter",
            "Bytes received from agents, by transport."
        );
        for t in [Transport::Udp, Transport::Tcp] {
            let _ = writeln!(
                s,
                "ossec_bytes_received_total{{transport=\"{}\"}} {}",
                t.as_str(),
                self.bytes_in[t.i()].load(Relaxed)
            );
        }
        head!(
            "ossec_bytes_sent_total",
            "counter",
            "Bytes sent to agents, by transport."
        );
        for t in [Transport::Udp, Transport::Tcp] {
            let _ = writeln!(
                s,
                "ossec_bytes_sent_total{{transport=\"{}\"}} {}",
                t.as_str(),
                self.bytes_out[t.i()].load(Relaxed)
            );
        }
        head!(
            "ossec_messages_rejected_total",
            "counter",
            "Messages rejected, by kind."
        );
        for k in RejectKind::ALL {
            let _ = writeln!(
                s,
                "ossec_messages_rejected_total{{kind=\"{}\"}} {}",
                k.as_str(),
                self.rejected[k.index()].load(Relaxed)
            );
        }
        head!(
            "ossec_agent_messages_rejected_total",
            "counter",
            "Messages rejected, by agent (where known) and kind."
        );
        {
            let m = self.rejected_by_agent.lock();
            let mut agents: Vec<_> = m.iter().collect();
            agents.sort_by(|a, b| a.0.cmp(b.0));
            for (agent, counts) in agents {
                for k in RejectKind::ALL {
                    let n = counts[k.index()];
                    if n > 0 {
                        let _ = writeln!(
                            s,
                            "ossec_agent_messages_rejected_total{{agent=\"{}\",kind=\"{}\"}} {n}",
                            escape(agent),
                            k.as_str()
                        );
                    }
                }
            }
        }
        head!(
            "ossec_control_messages_total",
            "counter",
            "Valid control messages received, by type."
        );
        for (i, c) in CONTROL_TYPES.iter().enumerate() {
            let _ = writeln!(
                s,
                "ossec_control_messages_total{{type=\"{c}\"}} {}",
                self.control[i].load(Relaxed)
            );
        }
        head!(
            "ossec_acks_sent_total",
            "counter",
            "`#!-agent ack ` replies sent."
        );
        let _ = writeln!(s, "ossec_acks_sent_total {}", self.acks_sent.load(Relaxed));
        head!("ossec_pongs_sent_total", "counter", "`#pong` replies sent.");
        let _ = writeln!(
            s,
            "ossec_pongs_sent_total {}",
            self.pongs_sent.load(Relaxed)
        );
        head!(
            "ossec_events_queued_total",
            "counter",
            "Events handed to the store queue."
        );
        let _ = writeln!(
            s,
            "ossec_events_queued_total {}",
            self.events_queued.load(Relaxed)
        );
        head!(
            "ossec_events_stored_total",
            "counter",
            "Events committed to the store."
        );
        let _ = writeln!(
            s,
            "ossec_events_stored_total {}",
            self.events_stored.load(Relaxed)
        );
        head!(
            "ossec_events_dropped_total",
            "counter",
            "Events dropped, by reason (UDP only: TCP applies backpressure instead)."
        );
        let _ = writeln!(
            s,
            "ossec_events_dropped_total{{reason=\"queue_full\"}} {}",
            self.events_dropped_queue_full.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "ossec_events_dropped_total{{reason=\"spool_full\"}} {}",
            self.events_dropped_spool_full.load(Relaxed)
        );
        head!(
            "ossec_store_up",
            "gauge",
            "1 while store writes succeed, 0 after a failed one until the next succeeds."
        );
        let _ = writeln!(s, "ossec_store_up {}", u8::from(self.store_up()));
        if let Some(sp) = self.spool.read().clone() {
            let g = |v: &AtomicU64| v.load(Relaxed);
            let oldest = sp.oldest_us.load(Relaxed);
            let age = if oldest > 0 {
                ((ossec_store::now_micros() - oldest).max(0) as f64) / 1e6
            } else {
                0.0
            };
            for (name, kind, help, value) in [
                ("ossec_spool_bytes", "gauge", "Bytes in the disk spool.", g(&sp.bytes).to_string()),
                ("ossec_spool_segments", "gauge", "Segment files in the disk spool.", g(&sp.segments).to_string()),
                ("ossec_spool_oldest_event_age_seconds", "gauge", "Age of the oldest spooled event not yet in the store (0: none).", format!("{age:.3}")),
                ("ossec_spool_replayed_events_total", "counter", "Events stored from what the spool held at start (after a crash, a stop or an outage).", g(&sp.replayed).to_string()),
                ("ossec_spool_corrupt_records_total", "counter", "Spool records skipped because their CRC did not match (never stored).", g(&sp.corrupt).to_string()),
                ("ossec_spool_write_errors_total", "counter", "Failed spool writes (ENOSPC, EIO): events wait, or are dropped with --spool-when-full drop-newest.", g(&sp.write_errors).to_string()),
                ("ossec_spool_full", "gauge", "1 while the spool refuses events (full or failing).", u8::from(sp.full.load(Relaxed)).to_string()),
            ] {
                head!(name, kind, help);
                let _ = writeln!(s, "{name} {value}");
            }
        }
        head!(
            "ossec_queue_depth",
            "gauge",
            "Events waiting between decoding and the store."
        );
        let _ = writeln!(s, "ossec_queue_depth {queue_depth}");
        head!(
            "ossec_queue_capacity",
            "gauge",
            "Capacity of the event queue."
        );
        let _ = writeln!(s, "ossec_queue_capacity {queue_capacity}");
        head!(
            "ossec_store_errors_total",
            "counter",
            "Failed store writes (retried)."
        );
        let _ = writeln!(
            s,
            "ossec_store_errors_total {}",
            self.store_errors.load(Relaxed)
        );
        head!(
            "ossec_batch_write_seconds",
            "histogram",
            "Time to write one batch of events to the store."
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "ossec_batch_write_seconds_bucket{{le=\"{b}\"}} {}",
                self.batch_buckets[i].load(Relaxed)
            );
        }
        let count = self.batch_count.load(Relaxed);
        let _ = writeln!(s, "ossec_batch_write_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            s,
            "ossec_batch_write_seconds_sum {}",
            self.batch_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "ossec_batch_write_seconds_count {count}");
        head!("ossec_agents", "gauge", "Agents of client.keys, by status.");
        for (status, n) in agents_by_status {
            let _ = writeln!(s, "ossec_agents{{status=\"{status}\"}} {n}");
        }
        head!(
            "ossec_tcp_connections_open",
            "gauge",
            "Open agent TCP connections."
        );
        let _ = writeln!(
            s,
            "ossec_tcp_connections_open {}",
            self.tcp_open.load(Relaxed)
        );
        head!(
            "ossec_tcp_connections_accepted_total",
            "counter",
            "Agent TCP connections accepted."
        );
        let _ = writeln!(
            s,
            "ossec_tcp_connections_accepted_total {}",
            self.tcp_accepted.load(Relaxed)
        );
        head!(
            "ossec_tcp_connections_refused_total",
            "counter",
            "Agent TCP connections refused at --max-connections."
        );
        let _ = writeln!(
            s,
            "ossec_tcp_connections_refused_total {}",
            self.tcp_refused.load(Relaxed)
        );
        head!(
            "ossec_tcp_connections_closed_total",
            "counter",
            "Agent TCP connections closed, by reason."
        );
        for (i, (_, r)) in CLOSE_REASONS.iter().enumerate() {
            let _ = writeln!(
                s,
                "ossec_tcp_connections_closed_total{{reason=\"{r}\"}} {}",
                self.tcp_closed[i].load(Relaxed)
            );
        }
        head!(
            "ossec_key_reloads_total",
            "counter",
            "Successful client.keys reloads."
        );
        let _ = writeln!(
            s,
            "ossec_key_reloads_total {}",
            self.key_reloads.load(Relaxed)
        );
        head!(
            "ossec_key_reload_errors_total",
            "counter",
            "client.keys reloads refused (the old keys stay in use)."
        );
        let _ = writeln!(
            s,
            "ossec_key_reload_errors_total {}",
            self.key_reload_errors.load(Relaxed)
        );
        head!(
            "ossec_key_sync_errors_total",
            "counter",
            "Failed reads of the store's agent keys (retried every half second)."
        );
        let _ = writeln!(
            s,
            "ossec_key_sync_errors_total {}",
            self.key_sync_errors.load(Relaxed)
        );
        head!(
            "ossec_counter_syncs_total",
            "counter",
            "Agents whose receive counters were read from the store before accepting their message (not heard here within --counter-sync-ms)."
        );
        let _ = writeln!(
            s,
            "ossec_counter_syncs_total {}",
            self.counter_syncs.load(Relaxed)
        );
        head!(
            "ossec_counter_sync_errors_total",
            "counter",
            "Failed reads of an agent's receive counters (the message was checked against local counters only)."
        );
        let _ = writeln!(
            s,
            "ossec_counter_sync_errors_total {}",
            self.counter_sync_errors.load(Relaxed)
        );
        head!(
            "ossec_cluster_jobs_leader",
            "gauge",
            "1 while this collector runs the once-per-cluster jobs (disconnect sweep, cleanup) under the store's advisory lock."
        );
        let _ = writeln!(
            s,
            "ossec_cluster_jobs_leader {}",
            u8::from(self.jobs_leader.load(Relaxed))
        );
        head!(
            "ossec_proxy_header_rejected_total",
            "counter",
            "TCP connections closed because of their PROXY protocol header (or a peer not allowed to send one), by reason."
        );
        for (reason, n) in self.proxy_rejects() {
            let _ = writeln!(
                s,
                "ossec_proxy_header_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let data = self.data_totals();
        head!(
            "ossec_events_data_total",
            "counter",
            "Stored events whose events.data was filled, by kind (json, eventchannel, syslog)."
        );
        for (kind, n) in ["json", "eventchannel", "syslog"].iter().zip(data) {
            let _ = writeln!(s, "ossec_events_data_total{{kind=\"{kind}\"}} {n}");
        }
        for (name, help, n) in [
            ("ossec_events_json_invalid_total", "Stored events that looked like JSON but did not parse: data NULL, the text kept in message.", data[3]),
            ("ossec_events_xml_invalid_total", "Stored Windows eventchannel events whose XML did not parse (or was refused: DTD, depth): data NULL.", data[4]),
            ("ossec_partitions_created_total", "Daily partitions of events created by this collector (PostgreSQL).", self.partitions_created.load(Relaxed)),
            ("ossec_partition_rows_moved_total", "Rows moved from events_default into a new daily partition.", self.partition_rows_moved.load(Relaxed)),
            ("ossec_retention_partitions_dropped_total", "Partitions of events dropped by --retention-days.", self.retention_partitions_dropped.load(Relaxed)),
            ("ossec_retention_rows_dropped_estimated_total", "Rows in the dropped partitions, from the planner's statistics.", self.retention_rows_dropped_estimate.load(Relaxed)),
            ("ossec_retention_rows_deleted_total", "Rows deleted by --retention-days (SQLite, and PostgreSQL's events_default).", self.retention_rows_deleted.load(Relaxed)),
        ] {
            head!(name, "counter", help);
            let _ = writeln!(s, "{name} {n}");
        }
        head!(
            "ossec_enrollments_total",
            "counter",
            "Enrollment connections on the enrollment port, by outcome (enrolled, replaced, or why not)."
        );
        for (outcome, n) in self.enrollments() {
            let _ = writeln!(s, "ossec_enrollments_total{{outcome=\"{outcome}\"}} {n}");
        }
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_limits_log_lines() {
        let g = LogGate::default();
        assert_eq!(g.admit(100), Some(0));
        assert_eq!(g.admit(101), None);
        assert_eq!(g.admit(105), None);
        assert_eq!(g.admit(110), Some(2));
    }

    #[test]
    fn counts_rejects_by_kind_and_agent() {
        let m = Metrics::new();
        let a: Arc<str> = "001".into();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..3 {
            m.rejected(RejectKind::Decrypt, Some(&a), peer, Transport::Udp, "x");
        }
        m.rejected(RejectKind::Format, None, peer, Transport::Tcp, "y");
        let text = m.render(0, 1, &[("active", 1)]);
        assert!(
            text.contains("ossec_messages_rejected_total{kind=\"decrypt\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ossec_agent_messages_rejected_total{agent=\"001\",kind=\"decrypt\"} 3")
        );
        assert!(text.contains("ossec_messages_rejected_total{kind=\"format\"} 1"));
        assert!(text.contains("ossec_agents{status=\"active\"} 1"));
    }
}
