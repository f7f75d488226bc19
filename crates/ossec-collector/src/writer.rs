//! The batch writer: the consuming end of the bounded event queue.
//!
//! Owns everything that reaches the store while serving: batches of events
//! (flushed when `--batch-size` is reached or `--flush-interval-ms` after
//! the first event of the batch), agent records marked dirty, the manager's
//! sender counter, and `agents reset-counters` requests. A failed write is
//! retried with backoff and never dropped; meanwhile the queue fills, TCP
//! readers wait and UDP drops are counted. The writer ends when every
//! sender of the queue is gone (shutdown) after writing what was queued.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ossec_store::{EventRow, Store};
use tokio::sync::mpsc;

use crate::agents::AgentTable;
use crate::ingest::Ingest;
use crate::metrics::Metrics;

/// How often agent records and the sender counter are written.
pub const AGENT_FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct Writer {
    pub store: Store,
    pub rx: mpsc::Receiver<EventRow>,
    pub table: Arc<AgentTable>,
    pub ingest: Arc<Ingest>,
    pub metrics: Arc<Metrics>,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// `--disconnect-after`, for the status sweep.
    pub disconnect_after: Duration,
}

impl Writer {
    /// Runs until the queue is closed and drained. Returns the number of
    /// events it could not store (only when `give_up` fires during retries).
    pub async fn run(mut self, give_up: tokio::sync::watch::Receiver<bool>) -> u64 {
        let mut batch: Vec<EventRow> = Vec::with_capacity(self.batch_size);
        let mut tick = tokio::time::interval(AGENT_FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_agents = Instant::now();
        let mut lost = 0u64;
        loop {
            let open = tokio::select! {
                n = self.rx.recv_many(&mut batch, self.batch_size) => n > 0,
                _ = tick.tick() => {
                    self.housekeeping(&give_up).await;
                    last_agents = Instant::now();
                    continue;
                }
            };
            if open {
                let deadline = tokio::time::Instant::now() + self.flush_interval;
                while batch.len() < self.batch_size {
                    let room = self.batch_size - batch.len();
                    match tokio::time::timeout_at(deadline, self.rx.recv_many(&mut batch, room))
                        .await
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                lost += self.write(&batch, &give_up).await;
                batch.clear();
                if last_agents.elapsed() >= AGENT_FLUSH_EVERY {
                    self.housekeeping(&give_up).await;
                    last_agents = Instant::now();
                }
            } else {
                break;
            }
        }
        self.housekeeping(&give_up).await;
        lost
    }

    /// Writes one batch, retrying until it succeeds or `give_up` is set.
    async fn write(&self, batch: &[EventRow], give_up: &tokio::sync::watch::Receiver<bool>) -> u64 {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            match self.store.insert_events(batch).await {
                Ok(()) => {
                    self.metrics
                        .batch_written(batch.len(), started.elapsed().as_secs_f64());
                    return 0;
                }
                Err(e) => {
                    self.metrics.store_error(&e);
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

    /// Status sweep, dirty agents, sender counter, counter-reset requests.
    async fn housekeeping(&self, give_up: &tokio::sync::watch::Receiver<bool>) {
        let cutoff = ossec_store::now_micros() - self.disconnect_after.as_micros() as i64;
        self.table.disconnect_stale(cutoff);
        match self.store.take_counter_resets().await {
            Ok(ids) => {
                for id in ids {
                    if self.table.reset_counters(&id) {
                        tracing::info!(agent = %id, "receive counters reset: the agent's next message is accepted whatever its counters");
                    }
                }
            }
            Err(e) => self.metrics.store_error(&e),
        }
        let dirty = self.table.take_dirty();
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
