//! Every counter of the collector, the rate-limited logging of rejects and
//! drops, and the Prometheus exposition (`prometheus-client`'s text
//! encoder over a collector that reads these atomics at scrape time; the
//! names, types, labels and HELP texts are a contract, checked against
//! `tests/fixtures/metrics-contract.txt`).
//!
//! The hot path only increments atomics (`metrics.rejected(kind, …)` never
//! formats a string unless a log line is due). Log lines for rejects are
//! limited to one per kind per [`LOG_EVERY_SECS`], each saying how many were
//! suppressed, so a flood of garbage yields a few summary lines.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use ossec_proto::RejectKind;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

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
    /// The last [`RECENT_BATCHES`] batch commits (Unix µs, seconds), for
    /// the status page's p50/p99.
    recent_batches: Mutex<VecDeque<(i64, f32)>>,
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
    /// Rows stored with `data` NULL because the store refused their batch's
    /// `data` (see `DataCounts::refused`).
    pub data_refused: AtomicU64,
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
        self.data_refused.fetch_add(c.refused, Relaxed);
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
        {
            let mut recent = self.recent_batches.lock();
            if recent.len() >= RECENT_BATCHES {
                recent.pop_front();
            }
            recent.push_back((ossec_store::now_micros(), secs as f32));
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.batch_buckets[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// Prometheus text exposition (format 0.0.4), rendered by
    /// `prometheus-client` from a collector over these atomics. The
    /// arguments are values computed at scrape time (queue depth, agents by
    /// status).
    pub fn render(
        self: &Arc<Self>,
        queue_depth: usize,
        queue_capacity: usize,
        agents_by_status: &[(&str, u64)],
    ) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Exposition {
            metrics: self.clone(),
            queue_depth,
            queue_capacity,
            agents_by_status: agents_by_status
                .iter()
                .map(|(s, n)| ((*s).to_owned(), *n))
                .collect(),
            process: crate::procstat::read(),
        }));
        let mut s = String::with_capacity(16384);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut s, &registry);
        s
    }

    /// Every rejected message so far, by [`RejectKind::index`].
    pub fn rejected_totals(&self) -> [u64; 8] {
        std::array::from_fn(|i| self.rejected[i].load(Relaxed))
    }

    /// p50 and p99 of the batch commits of the last [`RECENT_BATCH_SECS`]
    /// (at most the last [`RECENT_BATCHES`]), and how many there were.
    pub fn recent_batch_latency(&self, now_us: i64) -> (Option<f64>, Option<f64>, usize) {
        let cutoff = now_us - RECENT_BATCH_SECS * 1_000_000;
        let mut v: Vec<f32> = self
            .recent_batches
            .lock()
            .iter()
            .filter(|(at, _)| *at >= cutoff)
            .map(|(_, s)| *s)
            .collect();
        v.sort_by(f32::total_cmp);
        let q = |p: f64| -> Option<f64> {
            let last = v.len().checked_sub(1)?;
            let i = ((last as f64) * p).round() as usize;
            v.get(i.min(last)).map(|s| f64::from(*s))
        };
        (q(0.5), q(0.99), v.len())
    }
}

/// Batch commits kept for the status page's latency figures.
pub const RECENT_BATCHES: usize = 2048;
/// …and how far back they count.
pub const RECENT_BATCH_SECS: i64 = 300;

/// The collector behind one scrape: the atomics of [`Metrics`] plus what
/// the scrape computed (queue depth, agents by status, process figures).
struct Exposition {
    metrics: Arc<Metrics>,
    queue_depth: usize,
    queue_capacity: usize,
    agents_by_status: Vec<(String, u64)>,
    process: Option<crate::procstat::ProcessStats>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition").finish_non_exhaustive()
    }
}

/// The OpenMetrics family of a counter: the encoder appends `_total`, so
/// the sample names stay what they always were (`…_total`).
fn family(name: &str) -> &str {
    debug_assert!(name.ends_with("_total"), "counter {name} without _total");
    name.strip_suffix("_total").unwrap_or(name)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(
        family(name),
        help,
        None,
        MetricType::Counter,
    )?)
}

fn counters<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> std::fmt::Result {
    let mut me = e.encode_descriptor(family(name), help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(me.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<N: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn gauges<L: EncodeLabelSet, N: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, N)>,
) -> std::fmt::Result {
    let mut me = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(me.encode_family(&labels)?)?;
    }
    Ok(())
}

const TRANSPORTS: [Transport; 2] = [Transport::Udp, Transport::Tcp];

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = &*self.metrics;
        let load = |a: &AtomicU64| a.load(Relaxed);
        let e = &mut e;
        counters(
            e,
            "ossec_messages_received_total",
            "Messages (datagrams or TCP frames) received, by transport.",
            TRANSPORTS.map(|t| ([("transport", t.as_str())], load(&m.received[t.i()]))),
        )?;
        counters(
            e,
            "ossec_bytes_received_total",
            "Bytes received from agents, by transport.",
            TRANSPORTS.map(|t| ([("transport", t.as_str())], load(&m.bytes_in[t.i()]))),
        )?;
        counters(
            e,
            "ossec_bytes_sent_total",
            "Bytes sent to agents, by transport.",
            TRANSPORTS.map(|t| ([("transport", t.as_str())], load(&m.bytes_out[t.i()]))),
        )?;
        counters(
            e,
            "ossec_messages_rejected_total",
            "Messages rejected, by kind.",
            RejectKind::ALL.map(|k| ([("kind", k.as_str())], load(&m.rejected[k.index()]))),
        )?;
        {
            let by_agent = m.rejected_by_agent.lock();
            let mut agents: Vec<_> = by_agent.iter().collect();
            agents.sort_by(|a, b| a.0.cmp(b.0));
            counters(
                e,
                "ossec_agent_messages_rejected_total",
                "Messages rejected, by agent (where known) and kind.",
                agents.into_iter().flat_map(|(agent, counts)| {
                    RejectKind::ALL
                        .into_iter()
                        .filter(|k| counts[k.index()] > 0)
                        .map(|k| {
                            (
                                [("agent", &**agent), ("kind", k.as_str())],
                                counts[k.index()],
                            )
                        })
                }),
            )?;
        }
        counters(
            e,
            "ossec_control_messages_total",
            "Valid control messages received, by type.",
            CONTROL_TYPES
                .iter()
                .enumerate()
                .map(|(i, c)| ([("type", *c)], load(&m.control[i]))),
        )?;
        counter(
            e,
            "ossec_acks_sent_total",
            "`#!-agent ack ` replies sent.",
            load(&m.acks_sent),
        )?;
        counter(
            e,
            "ossec_pongs_sent_total",
            "`#pong` replies sent.",
            load(&m.pongs_sent),
        )?;
        counter(
            e,
            "ossec_events_queued_total",
            "Events handed to the store queue.",
            load(&m.events_queued),
        )?;
        counter(
            e,
            "ossec_events_stored_total",
            "Events committed to the store.",
            load(&m.events_stored),
        )?;
        counters(
            e,
            "ossec_events_dropped_total",
            "Events dropped, by reason (UDP only: TCP applies backpressure instead).",
            [
                (
                    [("reason", "queue_full")],
                    load(&m.events_dropped_queue_full),
                ),
                (
                    [("reason", "spool_full")],
                    load(&m.events_dropped_spool_full),
                ),
            ],
        )?;
        gauge(
            e,
            "ossec_store_up",
            "1 while store writes succeed, 0 after a failed one until the next succeeds.",
            u64::from(m.store_up()),
        )?;
        if let Some(sp) = m.spool.read().clone() {
            let oldest = sp.oldest_us.load(Relaxed);
            let age = if oldest > 0 {
                ((ossec_store::now_micros() - oldest).max(0) as f64) / 1e6
            } else {
                0.0
            };
            gauge(
                e,
                "ossec_spool_bytes",
                "Bytes in the disk spool.",
                load(&sp.bytes),
            )?;
            gauge(
                e,
                "ossec_spool_segments",
                "Segment files in the disk spool.",
                load(&sp.segments),
            )?;
            gauge(
                e,
                "ossec_spool_oldest_event_age_seconds",
                "Age of the oldest spooled event not yet in the store (0: none).",
                (age * 1000.0).round() / 1000.0,
            )?;
            counter(
                e,
                "ossec_spool_replayed_events_total",
                "Events stored from what the spool held at start (after a crash, a stop or an outage).",
                load(&sp.replayed),
            )?;
            counter(
                e,
                "ossec_spool_corrupt_records_total",
                "Spool records skipped because their CRC did not match (never stored).",
                load(&sp.corrupt),
            )?;
            counter(
                e,
                "ossec_spool_write_errors_total",
                "Failed spool writes (ENOSPC, EIO): events wait, or are dropped with --spool-when-full drop-newest.",
                load(&sp.write_errors),
            )?;
            gauge(
                e,
                "ossec_spool_full",
                "1 while the spool refuses events (full or failing).",
                u64::from(sp.full.load(Relaxed)),
            )?;
        }
        gauge(
            e,
            "ossec_queue_depth",
            "Events waiting between decoding and the store.",
            self.queue_depth as u64,
        )?;
        gauge(
            e,
            "ossec_queue_capacity",
            "Capacity of the event queue.",
            self.queue_capacity as u64,
        )?;
        counter(
            e,
            "ossec_store_errors_total",
            "Failed store writes (retried).",
            load(&m.store_errors),
        )?;
        {
            // The buckets are cumulative here; the encoder wants each
            // bucket's own count.
            let mut prev = 0;
            let buckets: Vec<(f64, u64)> = BUCKETS
                .iter()
                .zip(&m.batch_buckets)
                .map(|(b, c)| {
                    let c = load(c);
                    let own = c.saturating_sub(prev);
                    prev = c;
                    (*b, own)
                })
                .collect();
            let count = load(&m.batch_count);
            let sum = load(&m.batch_sum_us) as f64 / 1e6;
            e.encode_descriptor(
                "ossec_batch_write_seconds",
                "Time to write one batch of events to the store.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        gauges(
            e,
            "ossec_agents",
            "Agents of client.keys, by status.",
            self.agents_by_status
                .iter()
                .map(|(s, n)| ([("status", s.as_str())], *n)),
        )?;
        gauge(
            e,
            "ossec_tcp_connections_open",
            "Open agent TCP connections.",
            m.tcp_open.load(Relaxed),
        )?;
        counter(
            e,
            "ossec_tcp_connections_accepted_total",
            "Agent TCP connections accepted.",
            load(&m.tcp_accepted),
        )?;
        counter(
            e,
            "ossec_tcp_connections_refused_total",
            "Agent TCP connections refused at --max-connections.",
            load(&m.tcp_refused),
        )?;
        counters(
            e,
            "ossec_tcp_connections_closed_total",
            "Agent TCP connections closed, by reason.",
            CLOSE_REASONS
                .iter()
                .enumerate()
                .map(|(i, (_, r))| ([("reason", *r)], load(&m.tcp_closed[i]))),
        )?;
        counter(
            e,
            "ossec_key_reloads_total",
            "Successful client.keys reloads.",
            load(&m.key_reloads),
        )?;
        counter(
            e,
            "ossec_key_reload_errors_total",
            "client.keys reloads refused (the old keys stay in use).",
            load(&m.key_reload_errors),
        )?;
        counter(
            e,
            "ossec_key_sync_errors_total",
            "Failed reads of the store's agent keys (retried every half second).",
            load(&m.key_sync_errors),
        )?;
        counter(
            e,
            "ossec_counter_syncs_total",
            "Agents whose receive counters were read from the store before accepting their message (not heard here within --counter-sync-ms).",
            load(&m.counter_syncs),
        )?;
        counter(
            e,
            "ossec_counter_sync_errors_total",
            "Failed reads of an agent's receive counters (the message was checked against local counters only).",
            load(&m.counter_sync_errors),
        )?;
        gauge(
            e,
            "ossec_cluster_jobs_leader",
            "1 while this collector runs the once-per-cluster jobs (disconnect sweep, cleanup) under the store's advisory lock.",
            u64::from(m.jobs_leader.load(Relaxed)),
        )?;
        counters(
            e,
            "ossec_proxy_header_rejected_total",
            "TCP connections closed because of their PROXY protocol header (or a peer not allowed to send one), by reason.",
            m.proxy_rejects()
                .into_iter()
                .map(|(reason, n)| ([("reason", reason)], n)),
        )?;
        let data = m.data_totals();
        counters(
            e,
            "ossec_events_data_total",
            "Stored events whose events.data was filled, by kind (json, eventchannel, syslog).",
            ["json", "eventchannel", "syslog"]
                .into_iter()
                .zip(data)
                .map(|(kind, n)| ([("kind", kind)], n)),
        )?;
        for (name, help, n) in [
            ("ossec_events_json_invalid_total", "Stored events that looked like JSON but did not parse: data NULL, the text kept in message.", data[3]),
            ("ossec_events_xml_invalid_total", "Stored Windows eventchannel events whose XML did not parse (or was refused: DTD, depth): data NULL.", data[4]),
            ("ossec_events_data_refused_total", "Rows stored with data NULL because the store refused their batch's data (the batch was written again without it).", load(&m.data_refused)),
            ("ossec_partitions_created_total", "Daily partitions of events created by this collector (PostgreSQL).", load(&m.partitions_created)),
            ("ossec_partition_rows_moved_total", "Rows moved from events_default into a new daily partition.", load(&m.partition_rows_moved)),
            ("ossec_retention_partitions_dropped_total", "Partitions of events dropped by --retention-days.", load(&m.retention_partitions_dropped)),
            ("ossec_retention_rows_dropped_estimated_total", "Rows in the dropped partitions, from the planner's statistics.", load(&m.retention_rows_dropped_estimate)),
            ("ossec_retention_rows_deleted_total", "Rows deleted by --retention-days (SQLite, and PostgreSQL's events_default).", load(&m.retention_rows_deleted)),
        ] {
            counter(e, name, help, n)?;
        }
        counters(
            e,
            "ossec_enrollments_total",
            "Enrollment connections on the enrollment port, by outcome (enrolled, replaced, or why not).",
            m.enrollments()
                .into_iter()
                .map(|(outcome, n)| ([("outcome", outcome)], n)),
        )?;
        gauges(
            e,
            "ossec_build_info",
            "The collector's version (always 1).",
            [([("version", env!("CARGO_PKG_VERSION"))], 1u64)],
        )?;
        if let Some(p) = &self.process {
            ConstCounter::new(p.cpu_seconds).encode(e.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?)?;
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                p.resident_bytes,
            )?;
            gauge(
                e,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                p.virtual_bytes,
            )?;
            gauge(
                e,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                p.start_time_seconds,
            )?;
            gauge(
                e,
                "process_open_fds",
                "Number of open file descriptors.",
                p.open_fds,
            )?;
            gauge(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                p.max_fds,
            )?;
        }
        Ok(())
    }
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
