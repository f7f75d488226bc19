//! The last hour in memory, for the status page and `/api/stats`: every
//! [`STEP`] a sample of the collector's cumulative counters (events
//! accepted, messages rejected by kind), kept in a ring of [`KEEP`]
//! samples. Rates over the last 1, 5 and 15 minutes and the sparkline
//! series are differences between samples (and the live counters for the
//! newest point). No database read; the ingest path is not involved (it
//! only bumps the counters it always did).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Time between two samples.
pub const STEP: Duration = Duration::from_secs(10);
/// Samples kept: one hour, plus the one the oldest step starts from.
pub const KEEP: usize = 361;

/// The cumulative counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Unix µs.
    pub at_us: i64,
    /// Events accepted (handed to the queue).
    pub events: u64,
    /// Messages rejected, by `RejectKind::index`.
    pub rejects: [u64; 8],
}

impl Sample {
    /// The counters now.
    pub fn now(m: &Metrics) -> Sample {
        Sample {
            at_us: ossec_store::now_micros(),
            events: m.events_queued.load(std::sync::atomic::Ordering::Relaxed),
            rejects: m.rejected_totals(),
        }
    }
}

/// Rates between two samples, per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub events: f64,
    pub rejects: [f64; 8],
}

impl Rates {
    fn between(old: &Sample, new: &Sample) -> Rates {
        let secs = (new.at_us - old.at_us) as f64 / 1e6;
        if secs <= 0.0 {
            return Rates::default();
        }
        let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        Rates {
            events: per_s(old.events, new.events),
            rejects: std::array::from_fn(|i| per_s(old.rejects[i], new.rejects[i])),
        }
    }

    /// All rejects together.
    pub fn rejects_total(&self) -> f64 {
        self.rejects.iter().sum()
    }
}

/// One point of the sparkline: the rates of the step ending at `at_us`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub at_us: i64,
    pub rates: Rates,
}

/// The ring of samples.
pub struct History {
    ring: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Starts with `first` (the counters when the collector started).
    pub fn new(first: Sample) -> Arc<History> {
        let mut ring = VecDeque::with_capacity(KEEP);
        ring.push_back(first);
        Arc::new(History {
            ring: Mutex::new(ring),
        })
    }

    pub fn record(&self, s: Sample) {
        let mut ring = self.ring.lock();
        if ring.len() >= KEEP {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// Rates over about `window` up to `now` (a fresh sample): from the
    /// newest sample at least `window` old, or the oldest one while the
    /// collector is younger than that.
    pub fn rates(&self, now: &Sample, window: Duration) -> Rates {
        let cutoff = now.at_us - window.as_micros() as i64;
        let ring = self.ring.lock();
        let base = ring
            .iter()
            .rev()
            .find(|s| s.at_us <= cutoff)
            .or_else(|| ring.front());
        base.map(|b| Rates::between(b, now)).unwrap_or_default()
    }

    /// The rates of each step over the last hour, oldest first, and a last
    /// point for the step under way (up to `now`).
    pub fn series(&self, now: &Sample) -> Vec<Point> {
        let ring = self.ring.lock();
        let mut out = Vec::with_capacity(ring.len());
        let mut prev: Option<&Sample> = None;
        for s in ring.iter().chain(std::iter::once(now)) {
            if let Some(p) = prev {
                if s.at_us > p.at_us {
                    out.push(Point {
                        at_us: s.at_us,
                        rates: Rates::between(p, s),
                    });
                }
            }
            prev = Some(s);
        }
        out
    }

    /// Takes a sample every [`STEP`] until shutdown.
    pub async fn run(self: Arc<Self>, metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + STEP, STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.record(Sample::now(&metrics)),
                _ = crate::shutdown::requested(&mut shutdown) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_s: i64, events: u64, decrypt: u64) -> Sample {
        let mut rejects = [0; 8];
        rejects[3] = decrypt;
        Sample {
            at_us: at_s * 1_000_000,
            events,
            rejects,
        }
    }

    #[test]
    fn rates_over_windows_and_the_series() {
        let h = History::new(s(0, 0, 0));
        for i in 1..=100 {
            // 10 events/s, 1 reject every 10 s.
            h.record(s(i * 10, (i * 100) as u64, i as u64));
        }
        let now = s(1005, 10_050, 100);
        let r = h.rates(&now, Duration::from_secs(60));
        assert!((r.events - 10.0).abs() < 1e-9, "{r:?}");
        assert!((r.rejects[3] - 0.1 * 60.0 / 65.0).abs() < 1e-9, "{r:?}");
        // Younger than the window: from the first sample.
        let young = History::new(s(0, 0, 0));
        let r = young.rates(&s(30, 60, 0), Duration::from_secs(900));
        assert!((r.events - 2.0).abs() < 1e-9);
        let series = h.series(&now);
        assert_eq!(series.len(), 101);
        assert!(series.iter().all(|p| (p.rates.events - 10.0).abs() < 1e-9));
        // The ring keeps an hour.
        for i in 101..=1000 {
            h.record(s(i * 10, (i * 100) as u64, 0));
        }
        assert_eq!(h.series(&s(10_005, 100_050, 0)).len(), KEEP);
    }
}
