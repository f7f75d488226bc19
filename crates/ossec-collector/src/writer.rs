//! The writers: what reaches the store while serving.
//!
//! [`Writer`] is the consuming end of the bounded event queue: it forms
//! batches (flushed when `--batch-size` is reached or `--flush-interval-ms`
//! after the first event of the batch) and keeps up to `--store-writers`
//! of them in flight at once, so that one slow COPY does not serialise
//! ingestion. A failed write is retried with backoff and never dropped;
//! meanwhile the queue fills, TCP readers wait and UDP drops are counted.
//! It ends when every sender of the queue is gone (shutdown), after writing
//! what was queued.
//!
//! [`StateWriter`] runs beside it, once a second: agent records marked
//! dirty, the manager's sender counter, `agents reset-counters` requests,
//! and, on the one collector that holds the store's jobs lock, the
//! once-per-cluster jobs (the disconnect sweep, cleanup, daily partitions
//! and retention, the last in a task of their own). With thousands
//! of agents its agent update is large, so it must not hold up event
//! batches. [`CounterWriter`] writes the receive counters that moved, for
//! the other collectors on the store (`--counter-sync-ms`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ossec_store::{CounterRow, EventOptions, EventRow, JobLock, Store};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::agents::AgentTable;
use crate::ingest::Ingest;
use crate::metrics::Metrics;

/// How often changed agent records and the sender counter are written.
pub const AGENT_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Every this many flushes, also the agents whose receive counters and
/// `last_seen` merely moved (every event moves them): `last_seen` in the
/// store is at most this many seconds old, and after a crash (not a
/// graceful stop, which writes everything) the replay check forgets at most
/// that much of each agent's history.
pub const TOUCHED_FLUSH_EVERY: u32 = 10;

pub struct Writer {
    pub store: Store,
    pub rx: mpsc::Receiver<EventRow>,
    pub metrics: Arc<Metrics>,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Batches written concurrently.
    pub parallel: usize,
    /// `--event-data`.
    pub options: EventOptions,
}

impl Writer {
    /// Runs until the queue is closed and drained. Returns the number of
    /// events it could not store (only when `give_up` fires during retries).
    pub async fn run(mut self, give_up: watch::Receiver<bool>) -> u64 {
        let mut batch: Vec<EventRow> = Vec::with_capacity(self.batch_size);
        let mut in_flight: JoinSet<u64> = JoinSet::new();
        let mut lost = 0u64;
        while self.rx.recv_many(&mut batch, self.batch_size).await > 0 {
            let deadline = tokio::time::Instant::now() + self.flush_interval;
            while batch.len() < self.batch_size {
                let room = self.batch_size - batch.len();
                match tokio::time::timeout_at(deadline, self.rx.recv_many(&mut batch, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            while in_flight.len() >= self.parallel.max(1) {
                lost += in_flight
                    .join_next()
                    .await
                    .and_then(Result::ok)
                    .unwrap_or(0);
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(self.batch_size));
            in_flight.spawn(write_batch(
                self.store.clone(),
                self.metrics.clone(),
                full,
                self.options,
                give_up.clone(),
            ));
        }
        while let Some(r) = in_flight.join_next().await {
            lost += r.unwrap_or(0);
        }
        lost
    }
}

/// Writes one batch, retrying until it succeeds or `give_up` is set.
async fn write_batch(
    store: Store,
    metrics: Arc<Metrics>,
    batch: Vec<EventRow>,
    options: EventOptions,
    give_up: watch::Receiver<bool>,
) -> u64 {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match store.insert_events_at(&batch, None, options).await {
            Ok(data) => {
                metrics.batch_written(batch.len(), started.elapsed().as_secs_f64());
                metrics.data_written(&data);
                return 0;
            }
            Err(e) => {
                metrics.store_error(&e);
                if *give_up.borrow() {
                    tracing::error!(
                        events = batch.len(),
                        "giving up on a batch at shutdown: {e}"
                    );
                    return batch.len() as u64;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

impl StateWriter {
    /// Takes or keeps the jobs lock, and runs the jobs while holding it.
    /// The lock lives with a PostgreSQL session: when the collector that
    /// holds it dies, another one takes it on its next tick.
    async fn cluster_jobs(&mut self) {
        let previous = std::mem::replace(&mut self.job_lock, JobLock::NotHeld);
        let was = previous.is_held();
        self.job_lock = self.store.job_lock(previous).await;
        let held = self.job_lock.is_held();
        if held != was && !matches!(self.job_lock, JobLock::Alone) {
            if held {
                // The jobs that run every N ticks run on this first one.
                self.jobs_run = 0;
                tracing::info!(
                    "this collector now runs the once-per-cluster jobs (disconnect sweep, cleanup)"
                );
            } else {
                tracing::warn!("lost the cluster jobs lock (store connection closed); another collector takes them over");
            }
        }
        self.metrics
            .jobs_leader
            .store(held, std::sync::atomic::Ordering::Relaxed);
        if !held {
            return;
        }
        let cutoff = ossec_store::now_micros() - self.disconnect_after.as_micros() as i64;
        match self.store.sweep_disconnected(cutoff).await {
            Ok(marked) => self.table.mark_disconnected(&marked),
            Err(e) => self.metrics.store_error(&e),
        }
        if self.jobs_run.is_multiple_of(CLEANUP_EVERY) {
            if let Err(e) = self.store.prune_counter_resets().await {
                self.metrics.store_error(&e);
            }
        }
        let idle = self.partition_job.as_ref().is_none_or(|j| j.is_finished());
        if self.jobs_run.is_multiple_of(PARTITIONS_EVERY) && idle {
            // Its own task: deleting old SQLite rows takes a while and must
            // not hold up agent state.
            self.partition_job = Some(tokio::spawn(partition_jobs(
                self.store.clone(),
                self.metrics.clone(),
                self.partitions_ahead,
                self.retention_days,
            )));
        }
        self.jobs_run += 1;
    }
}

/// Creates the daily partitions ahead (PostgreSQL) and applies
/// `--retention-days`, logging and counting what changed.
pub async fn partition_jobs(store: Store, metrics: Arc<Metrics>, ahead: u32, keep_days: u32) {
    use std::sync::atomic::Ordering::Relaxed;
    let now = ossec_store::now_micros();
    match store.maintain_partitions(now, ahead, keep_days).await {
        Ok(r) => {
            if !r.created.is_empty() {
                tracing::info!(
                    partitions = ?r.created,
                    moved_rows = r.moved_rows,
                    "created daily partitions of events"
                );
            }
            metrics
                .partitions_created
                .fetch_add(r.created.len() as u64, Relaxed);
            metrics
                .partition_rows_moved
                .fetch_add(r.moved_rows, Relaxed);
        }
        Err(e) => {
            tracing::warn!("creating the partitions of events failed (retried in 10 minutes; rows go to events_default meanwhile): {e}");
            metrics.store_error(&e);
        }
    }
    match store.apply_retention(now, keep_days).await {
        Ok(r) => {
            if !r.dropped.is_empty() || r.deleted_rows > 0 {
                tracing::info!(
                    retention_days = keep_days,
                    dropped = ?r.dropped,
                    dropped_rows_estimate = r.dropped_rows_estimate,
                    deleted_rows = r.deleted_rows,
                    "removed events older than the retention"
                );
            }
            metrics
                .retention_partitions_dropped
                .fetch_add(r.dropped.len() as u64, Relaxed);
            metrics
                .retention_rows_dropped_estimate
                .fetch_add(r.dropped_rows_estimate, Relaxed);
            metrics
                .retention_rows_deleted
                .fetch_add(r.deleted_rows, Relaxed);
        }
        Err(e) => {
            tracing::warn!("applying --retention-days failed (retried in 10 minutes): {e}");
            metrics.store_error(&e);
        }
    }
}

/// Writes the receive counters that moved, every half `--counter-sync-ms`,
/// so that a collector that reads them before accepting an agent's message
/// sees what this one accepted. A failed write is kept and retried (merged
/// with newer counters) on the next tick.
pub struct CounterWriter {
    pub store: Store,
    pub table: Arc<AgentTable>,
    pub metrics: Arc<Metrics>,
    pub every: Duration,
}

impl CounterWriter {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: std::collections::HashMap<String, CounterRow> = Default::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = crate::shutdown::requested(&mut shutdown) => return,
            }
            for row in self.table.take_counters() {
                pending.insert(row.id.clone(), row);
            }
            if pending.is_empty() {
                continue;
            }
            let rows: Vec<CounterRow> = pending.values().cloned().collect();
            match self.store.save_counters(&rows).await {
                Ok(_) => pending.clear(),
                Err(e) => self.metrics.store_error(&e),
            }
        }
    }
}

pub struct StateWriter {
    pub store: Store,
    pub table: Arc<AgentTable>,
    pub ingest: Arc<Ingest>,
    pub metrics: Arc<Metrics>,
    /// `--disconnect-after`, for the status sweep.
    pub disconnect_after: Duration,
    /// The newest `reset-counters` request already applied (Unix µs).
    pub resets_seen: Option<i64>,
    /// The once-per-cluster jobs' lock, as last checked.
    pub job_lock: JobLock,
    /// Ticks on which this collector ran the jobs.
    pub jobs_run: u64,
    /// `--retention-days` (0: keep everything).
    pub retention_days: u32,
    /// `--partitions-ahead`.
    pub partitions_ahead: u32,
    /// The partition and retention job, while it runs.
    pub partition_job: Option<tokio::task::JoinHandle<()>>,
}

/// How many jobs ticks (seconds) between cleanups of old requests.
const CLEANUP_EVERY: u64 = 60;
/// How many jobs ticks (seconds) between partition and retention runs
/// (and one on the first tick this collector holds the lock).
const PARTITIONS_EVERY: u64 = 600;

impl StateWriter {
    /// Runs once a second until `done`, then writes the final state.
    pub async fn run(mut self, mut done: oneshot::Receiver<()>, give_up: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(AGENT_FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u32 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    n = n.wrapping_add(1);
                    self.housekeeping(&give_up, n.is_multiple_of(TOUCHED_FLUSH_EVERY)).await
                }
                _ = &mut done => break,
            }
        }
        self.housekeeping(&give_up, true).await;
    }

    /// Once-per-cluster jobs (if ours), counter-reset requests, changed
    /// agents (with `touched_too` also those whose counters merely moved),
    /// sender counter.
    async fn housekeeping(&mut self, give_up: &watch::Receiver<bool>, touched_too: bool) {
        self.cluster_jobs().await;
        match self.store.counter_resets_since(self.resets_seen).await {
            Ok((ids, newest)) => {
                self.resets_seen = newest;
                for id in ids {
                    if self.table.reset_counters(&id) {
                        tracing::info!(agent = %id, "receive counters reset: the agent's next message is accepted whatever its counters");
                    }
                }
            }
            Err(e) => self.metrics.store_error(&e),
        }
        let dirty = self.table.take_dirty(touched_too);
        if !dirty.is_empty() {
            let mut backoff = Duration::from_millis(100);
            while let Err(e) = self.store.save_agents(&dirty).await {
                self.metrics.store_error(&e);
                if *give_up.borrow() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if let Some(c) = self.ingest.take_sender_counter() {
            if let Err(e) = self.store.save_sender_counter(c).await {
                self.metrics.store_error(&e);
            }
        }
    }
}
