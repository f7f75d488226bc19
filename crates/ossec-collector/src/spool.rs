//! The disk spool between ingest and the store (`--spool-dir`).
//!
//! Owns the two tasks around the `ossec-spool` segment log: the
//! [`SpoolWriter`], which takes decoded events from the memory queue,
//! appends them (group commit: fsync every `--spool-fsync-ms`) together with
//! the receive counters that control messages moved, and publishes the
//! durable end; and the [`Drain`], which reads the spool from the position
//! the store has committed, writes batches with their end position in the
//! same transaction (exactly once across crashes), retries a store that is
//! away with capped backoff, and deletes what is committed. Also the
//! event record format and the recovery of counters at start.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::segments::{AppendError, Position, Reader, Spool, Tag};
use ossec_store::{EventRow, SpoolProgress, Store};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use crate::agents::AgentTable;
use crate::config::{SpoolSettings, WhenFull};
use crate::metrics::Metrics;

/// Record kinds.
const KIND_EVENT: u8 = 1;
/// Only the tag's counters (a control message moved them).
const KIND_COUNTERS: u8 = 2;

/// What the HTTP side and the metrics read of the spool.
#[derive(Debug, Default)]
pub struct SpoolStats {
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
    /// Unix µs of the oldest event not yet committed (0: none).
    pub oldest_us: AtomicI64,
    /// Set while appends are refused (full disk or `--spool-max-bytes`).
    pub full: AtomicBool,
    pub replayed: AtomicU64,
    pub corrupt: AtomicU64,
    pub write_errors: AtomicU64,
}

/// Appends an event's record payload to `out`.
pub fn encode_event(r: &EventRow, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.received_at.to_le_bytes());
    match r.source_ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
    out.push(u8::from(r.transport == "tcp"));
    out.push(r.queue);
    let name = r.agent_name.as_bytes();
    let name = &name[..name.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&(r.location.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.location);
    out.extend_from_slice(&r.message);
}

/// Reads back what [`encode_event`] wrote (`None`: not an event record of
/// ours; the CRC already matched, so this means a format bug, counted as
/// corrupt by the caller). The payload's buffer becomes the message (no
/// copy); agent IDs and names come from `names`, one allocation per agent.
pub fn decode_event(
    agent_id: &str,
    counters: (u32, u32),
    mut payload: Vec<u8>,
    names: &mut Names,
) -> Option<EventRow> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    let mut b = payload.as_slice();
    let received_at = i64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
    let source_ip = match take(&mut b, 1)?[0] {
        4 => IpAddr::from(<[u8; 4]>::try_from(take(&mut b, 4)?).ok()?),
        6 => IpAddr::from(<[u8; 16]>::try_from(take(&mut b, 16)?).ok()?),
        _ => return None,
    };
    let transport = if take(&mut b, 1)?[0] == 1 {
        "tcp"
    } else {
        "udp"
    };
    let queue = take(&mut b, 1)?[0];
    let name_len = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(take(&mut b, name_len)?).ok()?;
    let (agent_id, agent_name) = names.get(agent_id, name);
    let loc_len = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
    let location = take(&mut b, loc_len)?.to_vec();
    let message_at = payload.len() - b.len();
    payload.drain(..message_at);
    Some(EventRow {
        received_at,
        agent_id,
        agent_name,
        source_ip,
        transport,
        queue,
        queue_name: ossec_proto::payload::queue_name(queue),
        location,
        message: payload,
        global_counter: counters.0,
        local_counter: counters.1,
    })
}

/// Shared agent IDs and names for decoded rows (bounded: cleared when it
/// holds more agents than a fleet plausibly has).
#[derive(Default)]
pub struct Names(std::collections::HashMap<String, (Arc<str>, Arc<str>)>);

impl Names {
    fn get(&mut self, id: &str, name: &str) -> (Arc<str>, Arc<str>) {
        if let Some((a, b)) = self.0.get(id) {
            if &**b == name {
                return (a.clone(), b.clone());
            }
        }
        if self.0.len() > 200_000 {
            self.0.clear();
        }
        let v: (Arc<str>, Arc<str>) = (id.into(), name.into());
        self.0.insert(id.to_owned(), v.clone());
        v
    }
}

/// The spool, opened at start.
pub struct Opened {
    pub spool: Arc<Mutex<Spool>>,
    pub dir: PathBuf,
    pub id: String,
    /// The end of what was in the spool at start (events before it are
    /// "replayed" when stored).
    pub start_end: Position,
    pub durable: watch::Sender<Position>,
    pub stats: Arc<SpoolStats>,
}

/// Opens (recovering) the spool, and raises the agents' receive counters
/// to what the spool holds, so that a crash during a store outage does not
/// reopen replay windows.
pub fn open(settings: &SpoolSettings, table: &AgentTable) -> anyhow::Result<Opened> {
    use anyhow::Context;
    std::fs::create_dir_all(&settings.dir).with_context(|| {
        format!(
            "cannot create the spool directory {}",
            settings.dir.display()
        )
    })?;
    let (spool, rec) = Spool::open(crate::segments::Config {
        max_bytes: settings.max_bytes,
        ..crate::segments::Config::new(settings.dir.clone())
    })
    .with_context(|| format!("cannot open the spool {}", settings.dir.display()))?;
    let raised = table.raise_counters(&rec.counters);
    if rec.truncated_bytes > 0 {
        tracing::warn!(
            spool = %settings.dir.display(),
            bytes = rec.truncated_bytes,
            "the spool ended in a torn record (the process died mid-write) or in the unused rest of a reused segment: cut after the last whole record"
        );
    }
    if rec.bytes > 0 {
        tracing::info!(
            spool = %settings.dir.display(),
            bytes = rec.bytes,
            segments = rec.segments,
            agents_counters_raised = raised,
            "spool recovered: events not yet in the store are stored from it"
        );
    }
    let stats = Arc::new(SpoolStats::default());
    stats.bytes.store(spool.bytes(), Ordering::Relaxed);
    stats
        .segments
        .store(spool.segments() as u64, Ordering::Relaxed);
    stats
        .oldest_us
        .store(rec.oldest_ts_us.unwrap_or(0), Ordering::Relaxed);
    let id = spool.id().to_owned();
    let (durable, _) = watch::channel(rec.end);
    Ok(Opened {
        spool: Arc::new(Mutex::new(spool)),
        dir: settings.dir.clone(),
        id,
        start_end: rec.end,
        durable,
        stats,
    })
}

/// Takes events from the memory queue into the spool.
pub struct SpoolWriter {
    pub spool: Arc<Mutex<Spool>>,
    pub durable: watch::Sender<Position>,
    pub stats: Arc<SpoolStats>,
    pub table: Arc<AgentTable>,
    pub metrics: Arc<Metrics>,
    pub fsync: Duration,
    pub when_full: WhenFull,
}

/// How many queued events one append round takes.
const ROUND: usize = 4096;

impl SpoolWriter {
    /// Runs until the queue is closed (shutdown) and everything in it is
    /// in the spool and synced.
    pub async fn run(self, mut rx: mpsc::Receiver<EventRow>) {
        let mut items: Vec<EventRow> = Vec::with_capacity(ROUND);
        let mut pending: Vec<EventRow> = Vec::new();
        let mut next_sync = tokio::time::Instant::now() + self.fsync;
        let mut unsynced = false;
        let mut closed = false;
        loop {
            if pending.is_empty() && !closed {
                // Woken by events, or at the sync deadline (which also
                // spools the counters that control messages moved).
                let got = tokio::select! {
                    n = rx.recv_many(&mut items, ROUND) => Some(n),
                    _ = tokio::time::sleep_until(next_sync) => None,
                };
                if got == Some(0) {
                    closed = true;
                }
            }
            pending.append(&mut items);
            let sync_due = closed || tokio::time::Instant::now() >= next_sync;
            let spool = self.spool.clone();
            let table = self.table.clone();
            let batch = std::mem::take(&mut pending);
            let res =
                tokio::task::spawn_blocking(move || append_round(&spool, &table, batch, sync_due))
                    .await;
            let Ok(round) = res else {
                // The blocking task panicked: nothing sane to do but stop.
                tracing::error!("the spool writer failed; no more events are spooled");
                return;
            };
            self.stats.bytes.store(round.bytes, Ordering::Relaxed);
            self.stats
                .segments
                .store(round.segments as u64, Ordering::Relaxed);
            if let Some(ts) = round.oldest_us {
                let _ = self.stats.oldest_us.compare_exchange(
                    0,
                    ts,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            unsynced |= round.appended > 0;
            if sync_due && round.error.is_none() {
                next_sync = tokio::time::Instant::now() + self.fsync;
            }
            if let Some(end) = round.synced {
                unsynced = false;
                self.durable.send_replace(end);
            }
            match round.error {
                None => self.stats.full.store(false, Ordering::Relaxed),
                Some(e) => {
                    self.stats.full.store(true, Ordering::Relaxed);
                    if matches!(e, AppendError::Io(_)) {
                        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    self.metrics.spool_problem(&e);
                    let mut left = round.left;
                    if matches!(e, AppendError::TooLarge(_)) && !left.is_empty() {
                        // Cannot happen with frames of at most 64 KiB; never
                        // retry it forever.
                        let ev = left.remove(0);
                        self.metrics.dropped_spool_full(ev.source_ip);
                    }
                    match self.when_full {
                        // Keep what did not fit and stop taking from the
                        // queue: TCP readers wait, UDP drops are counted.
                        WhenFull::Block => {
                            pending = left;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        WhenFull::DropNewest => {
                            for ev in &left {
                                self.metrics.dropped_spool_full(ev.source_ip);
                            }
                        }
                    }
                }
            }
            if closed && pending.is_empty() && !unsynced {
                return;
            }
        }
    }
}

struct Round {
    appended: usize,
    /// Events not appended (the spool refused them), in order.
    left: Vec<EventRow>,
    error: Option<AppendError>,
    synced: Option<Position>,
    bytes: u64,
    segments: usize,
    oldest_us: Option<i64>,
}

fn append_round(
    spool: &Mutex<Spool>,
    table: &AgentTable,
    batch: Vec<EventRow>,
    sync: bool,
) -> Round {
    let mut sp = spool.lock();
    let mut buf = Vec::with_capacity(4096);
    let mut appended = 0;
    let mut error = None;
    let mut left = Vec::new();
    let mut it = batch.into_iter();
    let mut oldest_us = None;
    for ev in it.by_ref() {
        buf.clear();
        encode_event(&ev, &mut buf);
        let tag = Tag {
            agent: &ev.agent_id,
            counters: (ev.global_counter, ev.local_counter),
        };
        match sp.append(ev.received_at, tag, KIND_EVENT, &buf) {
            Ok(_) => {
                appended += 1;
                oldest_us.get_or_insert(ev.received_at);
            }
            Err(e) => {
                error = Some(e);
                left.push(ev);
                break;
            }
        }
    }
    left.extend(it);
    let mut synced = None;
    // A full spool still syncs what it took: the drain reads only what is
    // synced, and only its progress makes room again.
    if sync && !matches!(error, Some(AppendError::Io(_))) {
        // Counters that control messages moved since the last sync.
        let now = ossec_store::now_micros();
        let counters = match error {
            None => table.take_spool_counters(),
            Some(_) => Vec::new(),
        };
        for (id, counters) in counters {
            let tag = Tag {
                agent: &id,
                counters,
            };
            if let Err(e) = sp.append(now, tag, KIND_COUNTERS, &[]) {
                error = Some(e);
                break;
            }
        }
        match sp.sync() {
            Ok(end) => synced = Some(end),
            Err(e) => error = Some(e),
        }
    }
    Round {
        appended,
        left,
        error,
        synced,
        bytes: sp.bytes(),
        segments: sp.segments(),
        oldest_us,
    }
}

/// Stores what the spool holds, from the committed position on.
pub struct Drain {
    pub store: Store,
    pub spool: Arc<Mutex<Spool>>,
    pub dir: PathBuf,
    pub id: String,
    pub start_end: Position,
    pub durable: watch::Receiver<Position>,
    pub stats: Arc<SpoolStats>,
    pub metrics: Arc<Metrics>,
    pub batch_size: usize,
    /// Batches written at once (`--store-writers`); they commit in order.
    pub parallel: usize,
    /// `--event-data`.
    pub options: ossec_store::EventOptions,
}

/// A batch read from the spool.
struct Batch {
    events: Arc<Vec<EventRow>>,
    /// Their `id`s, reserved in spool order when batches are written at
    /// once (PostgreSQL): `ORDER BY id` keeps each agent's order.
    ids: Option<Arc<Vec<i64>>>,
    /// The spool position after its last record.
    end: Position,
    /// Events in it that were in the spool at start (replayed).
    replayed: u64,
    /// Time of the oldest record after it, if any.
    next_ts: Option<i64>,
}

/// A batch being written.
struct InFlight {
    batch: Batch,
    task: tokio::task::JoinHandle<Result<ossec_store::DataCounts, ossec_store::StoreError>>,
    started: Instant,
}

impl Drain {
    /// Runs until `give_up`, or until the writer is gone and everything
    /// durable is stored. Returns whether everything was stored (false:
    /// the rest stays in the spool for the next start).
    pub async fn run(mut self, mut give_up: watch::Receiver<bool>) -> bool {
        let committed = loop {
            match self.store.spool_progress(&self.id).await {
                Ok(p) => {
                    break p
                        .map(|(s, o)| Position {
                            segment: s.max(0) as u64,
                            offset: o.max(0) as u64,
                        })
                        .unwrap_or_default()
                }
                Err(e) => {
                    self.metrics.store_down(&e);
                    if self
                        .wait_or_give_up(&mut give_up, Duration::from_secs(1))
                        .await
                    {
                        return false;
                    }
                }
            }
        };
        let mut reader = match Reader::open(&self.dir, committed) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(spool = %self.dir.display(), "cannot read the spool: {e}");
                return false;
            }
        };
        let mut writer_gone = false;
        let mut names_slot = Names::default();
        // Batches read and not yet (or to be again) written, in spool order;
        // the batches being written, oldest first. Each in-flight batch
        // commits only after the one before it did (`insert_events_ordered`),
        // so the committed position is always the end of a committed prefix.
        let parallel = self.parallel.max(1);
        let mut pending: VecDeque<Batch> = VecDeque::new();
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut last_turn: Option<oneshot::Receiver<bool>> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            while in_flight.len() < parallel {
                let Some(mut b) = pending.pop_front() else {
                    break;
                };
                if parallel > 1 && b.ids.is_none() {
                    match self.store.reserve_event_ids(b.events.len()).await {
                        Ok(ids) => b.ids = ids.map(Arc::new),
                        Err(e) => {
                            // The store is away: the batch waits (in order).
                            self.metrics.store_down(&e);
                            pending.push_front(b);
                            if in_flight.is_empty() {
                                if self.wait_or_give_up(&mut give_up, backoff).await {
                                    return false;
                                }
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                            }
                            break;
                        }
                    }
                }
                in_flight.push_back(self.spawn_write(b, &mut last_turn));
            }
            // Read ahead only what can be written now: while batches wait
            // (the store is away), nothing more is held in memory.
            if in_flight.len() < parallel && pending.is_empty() {
                let durable = *self.durable.borrow_and_update();
                if reader.position() < durable {
                    // Read the next batch while the others are written.
                    let Some((r, read)) = self.read_batch(reader, &mut names_slot, durable).await
                    else {
                        tracing::error!("the spool reader failed; stored events stop here");
                        return false;
                    };
                    reader = r;
                    match read {
                        Ok(b) => pending.push_back(b),
                        Err(e) => {
                            tracing::error!(spool = %self.dir.display(), "reading the spool failed, retrying: {e}");
                            if self
                                .wait_or_give_up(&mut give_up, Duration::from_secs(1))
                                .await
                            {
                                return false;
                            }
                        }
                    }
                    continue;
                }
                if in_flight.is_empty() {
                    // Everything durable is stored: wait for more.
                    if writer_gone {
                        return true;
                    }
                    tokio::select! {
                        r = self.durable.changed() => if r.is_err() { writer_gone = true },
                        _ = give_up.changed() => if *give_up.borrow() { return false },
                    }
                    continue;
                }
            }
            // The oldest batch in flight: committed, or written again (with
            // every later one, which then rolled back).
            let Some(front) = in_flight.pop_front() else {
                continue;
            };
            let result = match front.task.await {
                Ok(r) => r,
                Err(e) => Err(ossec_store::StoreError::Limit(format!(
                    "the task writing a batch failed: {e}"
                ))),
            };
            match result {
                Ok(data) => {
                    backoff = Duration::from_millis(100);
                    let b = front.batch;
                    self.metrics.store_is_up();
                    self.metrics.data_written(&data);
                    self.metrics
                        .batch_written(b.events.len(), front.started.elapsed().as_secs_f64());
                    self.stats.replayed.fetch_add(b.replayed, Ordering::Relaxed);
                    self.stats
                        .oldest_us
                        .store(b.next_ts.unwrap_or(0), Ordering::Relaxed);
                    self.release(b.end).await;
                }
                Err(e) => {
                    if !matches!(e, ossec_store::StoreError::PreviousNotCommitted) {
                        self.metrics.store_down(&e);
                    }
                    let mut again = VecDeque::with_capacity(in_flight.len() + 1 + pending.len());
                    again.push_back(front.batch);
                    for later in in_flight.drain(..) {
                        // Its turn said no: it rolls back, or already did.
                        let _ = later.task.await;
                        again.push_back(later.batch);
                    }
                    again.append(&mut pending);
                    pending = again;
                    last_turn = None;
                    // Not committed: read again from the committed position
                    // at the next start.
                    if self.wait_or_give_up(&mut give_up, backoff).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reads up to `batch_size` durable events from `reader` (on a blocking
    /// thread) into a batch; `None` if that thread died. Records that do
    /// not decode are counted as corrupt. A read error is returned only
    /// when no event was read before it.
    async fn read_batch(
        &self,
        mut reader: Reader,
        names_slot: &mut Names,
        durable: Position,
    ) -> Option<(Reader, std::io::Result<Batch>)> {
        let n = self.batch_size;
        let mut names = std::mem::take(names_slot);
        let (reader, rows, bad, next_ts, result, names) = tokio::task::spawn_blocking(move || {
            let mut rows = Vec::with_capacity(n.min(16_384));
            let mut bad = 0u64;
            let result = (|| -> std::io::Result<()> {
                while rows.len() < n {
                    let Some(rec) = reader.next(durable)? else {
                        break;
                    };
                    if rec.kind != KIND_EVENT {
                        continue;
                    }
                    match decode_event(&rec.agent, rec.counters, rec.payload, &mut names) {
                        Some(ev) => rows.push((ev, rec.end)),
                        None => bad += 1,
                    }
                }
                Ok(())
            })();
            let next_ts = reader.next_ts_us();
            (reader, rows, bad, next_ts, result, names)
        })
        .await
        .ok()?;
        *names_slot = names;
        // The reader stops at the last record it read whole, so the error
        // comes again at the next read; the records read before it are a
        // batch of their own (dropping them would let the next batch's
        // commit move past them: lost).
        if let Err(e) = result {
            if rows.is_empty() {
                return Some((reader, Err(e)));
            }
        }
        self.stats
            .corrupt
            .store(reader.corrupt_skipped() + bad, Ordering::Relaxed);
        let replayed = rows.iter().filter(|(_, p)| *p <= self.start_end).count() as u64;
        let batch = Batch {
            events: Arc::new(rows.into_iter().map(|(e, _)| e).collect()),
            ids: None,
            end: reader.position(),
            replayed,
            next_ts,
        };
        Some((reader, Ok(batch)))
    }

    /// Starts writing `b`; it commits after the batch before it (whose
    /// turn is `last_turn`) did.
    fn spawn_write(&self, b: Batch, last_turn: &mut Option<oneshot::Receiver<bool>>) -> InFlight {
        let (done, next_turn) = oneshot::channel();
        let previous = last_turn.replace(next_turn);
        let store = self.store.clone();
        let events = b.events.clone();
        let ids = b.ids.clone();
        let progress = SpoolProgress {
            spool_id: self.id.clone(),
            segment: b.end.segment as i64,
            offset: b.end.offset as i64,
        };
        let options = self.options;
        let task = tokio::spawn(async move {
            let turn = async move {
                match previous {
                    None => true,
                    Some(rx) => rx.await.unwrap_or(false),
                }
            };
            let r = store
                .insert_events_ordered(
                    &events,
                    ids.as_deref().map(Vec::as_slice),
                    &progress,
                    options,
                    turn,
                )
                .await;
            let _ = done.send(r.is_ok());
            r
        });
        InFlight {
            batch: b,
            task,
            started: Instant::now(),
        }
    }

    /// Deletes the spool segments that are wholly committed.
    async fn release(&self, end: Position) {
        let spool = self.spool.clone();
        let released = tokio::task::spawn_blocking(move || {
            let mut sp = spool.lock();
            let r = sp.release(end);
            (r, sp.bytes(), sp.segments())
        })
        .await;
        if let Ok((r, bytes, segments)) = released {
            if let Err(e) = r {
                tracing::warn!(spool = %self.dir.display(), "deleting stored spool segments failed: {e}");
            }
            self.stats.bytes.store(bytes, Ordering::Relaxed);
            self.stats
                .segments
                .store(segments as u64, Ordering::Relaxed);
        }
    }

    /// Waits `d`; true if `give_up` was set meanwhile.
    async fn wait_or_give_up(&self, give_up: &mut watch::Receiver<bool>, d: Duration) -> bool {
        if *give_up.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = give_up.changed() => *give_up.borrow(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_records_round_trip() {
        let ev = EventRow {
            received_at: 1_800_000_000_123_456,
            agent_id: "007".into(),
            agent_name: "web-1".into(),
            source_ip: "2001:db8::7".parse().unwrap(),
            transport: "tcp",
            queue: b'1',
            queue_name: ossec_proto::payload::queue_name(b'1'),
            location: b"/var/log/auth.log".to_vec(),
            message: b"sshd[1]: Accepted \xff bytes".to_vec(),
            global_counter: 9,
            local_counter: 77,
        };
        let mut names = Names::default();
        for ip in ["2001:db8::7", "10.1.2.3"] {
            let ev = EventRow {
                source_ip: ip.parse().unwrap(),
                ..ev.clone()
            };
            let mut b = Vec::new();
            encode_event(&ev, &mut b);
            let back = decode_event("007", (9, 77), b.clone(), &mut names).unwrap();
            assert_eq!(back, ev);
            // Truncated payloads never panic.
            for n in 0..30 {
                let _ = decode_event("007", (9, 77), b[..n].to_vec(), &mut names);
            }
        }
    }
}
