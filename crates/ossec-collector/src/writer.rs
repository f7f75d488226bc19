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
//! once-per-cluster jobs (the disconnect sweep, cleanup). With thousands
//! of agents its agent update is large, so it must not hold up event
//! batches. [`CounterWriter`] writes the receive counters that moved, for
//! the other collectors on the store (`--counter-sync-ms`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ossec_store::{CounterRow, EventRow, JobLock, Store};
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
    give_up: watch::Receiver<bool>,
) -> u64 {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match store.insert_events(&batch).await {
            Ok(()) => {
                metrics.batch_written(batch.len(), started.elapsed().as_secs_f64());
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
        self.jobs_run += 1;
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
}

/// How many jobs ticks (seconds) between cleanups of old requests.
const CLEANUP_EVERY: u64 = 60;

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
