//! Partitions and retention of `events`.
//!
//! PostgreSQL: `events` is partitioned by range on `received_at`, one
//! partition per UTC day named `events_YYYYMMDD`, plus `events_default`
//! (rows for a day that has no partition yet) and, on a database upgraded
//! from the unpartitioned schema, `events_upto_YYYYMMDD` (everything before
//! that day). This module creates the day partitions ahead, moves rows that
//! landed in the default partition into their day's new partition, and
//! drops partitions entirely older than the retention (a `DROP TABLE`, no
//! `DELETE`). Every change runs in a transaction that first takes one
//! transaction-scoped advisory lock and uses idempotent DDL, so several
//! collectors on one database may run it at once; a lock wait is bounded
//! by `lock_timeout` so ingest never queues behind it for long.
//!
//! SQLite has no partitions: retention deletes old rows in bounded batches,
//! each its own short transaction, so the writer is never blocked long.

use chrono::{DateTime, Duration as Days, NaiveDate};
use sqlx::Row;

use crate::{sql, Result, Store};

/// Transaction advisory lock key of partition changes ("ossc" "part").
const PARTITIONS_LOCK: i64 = 0x6f73_7363_7061_7274;
/// How long a partition change may wait for a table lock.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '5s'";
/// Rows deleted per SQLite (or default-partition) retention batch.
const DELETE_BATCH: i64 = 5_000;
/// Pause between delete batches, so that event writes interleave.
const DELETE_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
/// Days of the default partition moved into partitions per run, at most.
const MOVES_PER_RUN: usize = 64;

/// The columns of `events` in the order of the migrations, for moves.
const COLUMNS: &str = "id, received_at, agent_id, agent_name, source_ip, transport, queue, queue_name, location, message, message_raw, location_raw, global_counter, local_counter, data";

/// One partition of `events`, as this module names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partition {
    /// `events_YYYYMMDD`: that UTC day.
    Day(NaiveDate),
    /// `events_upto_YYYYMMDD`: everything before that day (the upgraded
    /// unpartitioned table).
    UpTo(NaiveDate),
    /// `events_default`.
    Default,
    /// Any other partition (made by hand): left alone.
    Other(String),
}

impl Partition {
    /// The partition that a table name stands for.
    pub fn from_name(name: &str) -> Partition {
        let day = |s: &str| {
            (s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| NaiveDate::parse_from_str(s, "%Y%m%d").ok())
                .flatten()
        };
        if name == "events_default" {
            return Partition::Default;
        }
        if let Some(d) = name.strip_prefix("events_upto_").and_then(day) {
            return Partition::UpTo(d);
        }
        if let Some(d) = name.strip_prefix("events_").and_then(day) {
            return Partition::Day(d);
        }
        Partition::Other(name.to_owned())
    }

    /// The table name.
    pub fn name(&self) -> String {
        match self {
            Partition::Day(d) => format!("events_{}", d.format("%Y%m%d")),
            Partition::UpTo(d) => format!("events_upto_{}", d.format("%Y%m%d")),
            Partition::Default => "events_default".to_owned(),
            Partition::Other(n) => n.clone(),
        }
    }

    /// The first day after this partition's range.
    fn end(&self) -> Option<NaiveDate> {
        match self {
            Partition::Day(d) => d.succ_opt(),
            Partition::UpTo(d) => Some(*d),
            _ => None,
        }
    }
}

/// What [`Store::maintain_partitions`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// Partitions created.
    pub created: Vec<String>,
    /// Rows moved from `events_default` into new day partitions.
    pub moved_rows: u64,
}

/// What [`Store::apply_retention`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Partitions dropped (PostgreSQL).
    pub dropped: Vec<String>,
    /// Rows in the dropped partitions, from the planner's statistics
    /// (counting them exactly would read them all).
    pub dropped_rows_estimate: u64,
    /// Rows deleted one by one (SQLite, and PostgreSQL's default partition).
    pub deleted_rows: u64,
}

/// `YYYY-MM-DD 00:00:00+00`, a day's start as a timestamptz literal.
fn day_start(d: NaiveDate) -> String {
    format!("{} 00:00:00+00", d.format("%Y-%m-%d"))
}

/// The UTC day of Unix microseconds.
fn day_of(us: i64) -> NaiveDate {
    DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .date_naive()
}

/// Whether `bound` (`pg_get_expr` of `relpartbound`, printed in UTC) is
/// the range that the partition's name stands for.
fn bound_matches(p: &Partition, bound: &str) -> bool {
    let ts = |d: NaiveDate| format!("'{}'", day_start(d));
    match p {
        Partition::Day(d) => {
            bound
                == format!(
                    "FOR VALUES FROM ({}) TO ({})",
                    ts(*d),
                    ts(*d + Days::days(1))
                )
        }
        Partition::UpTo(d) => bound == format!("FOR VALUES FROM (MINVALUE) TO ({})", ts(*d)),
        Partition::Default => bound == "DEFAULT",
        Partition::Other(_) => true,
    }
}

/// Whether `e` is a database error with this SQLSTATE.
fn is_code(e: &sqlx::Error, code: &str) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some(code))
}

/// `true` for "relation already exists": another collector was first.
fn already_exists(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("42P07") | Some("23505")))
}

impl Store {
    /// The partitions of `events` (PostgreSQL; empty for SQLite). A table
    /// is taken for a day (or "up to") partition only when its bounds are
    /// exactly the ones its name says; any other partition (made by hand,
    /// by pg_partman) is `Other` and never dropped or assumed to cover a
    /// day.
    pub async fn event_partitions(&self) -> Result<Vec<Partition>> {
        let Store::Postgres(pool) = self else {
            return Ok(Vec::new());
        };
        let mut tx = pool
            .begin()
            .await
            .map_err(sql("listing the partitions of events"))?;
        // Bounds are printed in the session's time zone: read them in UTC.
        sqlx::query("SET LOCAL TimeZone = 'UTC'")
            .execute(&mut *tx)
            .await
            .map_err(sql("listing the partitions of events"))?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass ORDER BY 1",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(sql("listing the partitions of events"))?;
        tx.commit()
            .await
            .map_err(sql("listing the partitions of events"))?;
        Ok(rows
            .iter()
            .map(|(name, bound)| {
                let p = Partition::from_name(name);
                if bound_matches(&p, bound) {
                    p
                } else {
                    Partition::Other(name.clone())
                }
            })
            .collect())
    }

    /// Creates the day partitions of `now_us`'s UTC day and the `ahead`
    /// days after it, and gives every other day that has rows in
    /// `events_default` (not older than `keep_days`, when set) its own
    /// partition, moving those rows into it. A no-op on SQLite.
    pub async fn maintain_partitions(
        &self,
        now_us: i64,
        ahead: u32,
        keep_days: u32,
    ) -> Result<PartitionReport> {
        let Store::Postgres(pool) = self else {
            return Ok(PartitionReport::default());
        };
        let mut report = PartitionReport::default();
        let existing = self.event_partitions().await?;
        let has = |d: NaiveDate| {
            existing.iter().any(|p| match p {
                Partition::Day(x) => *x == d,
                Partition::UpTo(x) => d < *x,
                _ => false,
            })
        };
        let today = day_of(now_us);
        // One day that cannot be made (a partition made by hand overlaps
        // it) does not stop the others; the first error is returned.
        let mut first_error = None;
        let mut create = |r: Result<bool>, d: NaiveDate, report: &mut PartitionReport| match r {
            Ok(true) => report.created.push(Partition::Day(d).name()),
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        };
        for i in 0..=i64::from(ahead) {
            let d = today + Days::days(i);
            if has(d) {
                continue;
            }
            let r = self.create_day(pool, d, &mut report).await;
            create(r, d, &mut report);
        }
        // Days that only the default partition holds (the store was away
        // at midnight, spooled events of an earlier day, a clock jump).
        let oldest_kept =
            (keep_days > 0).then(|| day_of(now_us) - Days::days(i64::from(keep_days)));
        let in_default: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT to_char(received_at AT TIME ZONE 'UTC', 'YYYYMMDD') FROM events_default",
        )
        .fetch_all(pool)
        .await
        .map_err(sql("reading the days in events_default"))?;
        let mut days: Vec<NaiveDate> = in_default
            .iter()
            .filter_map(|s| NaiveDate::parse_from_str(s, "%Y%m%d").ok())
            .filter(|d| oldest_kept.is_none_or(|k| *d >= k) && !has(*d))
            .collect();
        days.sort();
        for d in days.into_iter().take(MOVES_PER_RUN) {
            let r = self.create_day(pool, d, &mut report).await;
            create(r, d, &mut report);
        }
        match first_error {
            Some(e) if report.created.is_empty() => Err(e),
            Some(e) => {
                tracing::warn!(created = ?report.created, "some partitions of events could not be created: {e}");
                Ok(report)
            }
            None => Ok(report),
        }
    }

    /// Creates the partition of day `d` (`false` when another collector
    /// created it first). When `events_default` holds no rows of that day,
    /// the table is made on its own and attached: attaching does not lock
    /// out writers of the other partitions nor wait behind readers of
    /// `events`. Otherwise the day's rows are moved into it in one
    /// transaction that blocks writes to `events` while it runs.
    async fn create_day(
        &self,
        pool: &sqlx::PgPool,
        d: NaiveDate,
        report: &mut PartitionReport,
    ) -> Result<bool> {
        let name = Partition::Day(d).name();
        let (lo, hi) = (day_start(d), day_start(d + Days::days(1)));
        let create =
            format!("CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS INCLUDING COMPRESSION)");
        let attach = format!(
            "ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')"
        );
        let fail = |cause| crate::StoreError::Sql {
            what: "creating a partition of events",
            cause,
        };
        for moving in [false, true] {
            let mut tx = pool.begin().await.map_err(fail)?;
            sqlx::query(LOCK_TIMEOUT)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PARTITIONS_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(&name)
                .fetch_one(&mut *tx)
                .await
                .map_err(fail)?;
            if exists {
                return Ok(false);
            }
            let step = async {
                if !moving {
                    // Fails with 23514 when events_default holds rows of
                    // the day: then they are moved (the second pass).
                    sqlx::query(&create).execute(&mut *tx).await?;
                    sqlx::query(&attach).execute(&mut *tx).await?;
                    return Ok(());
                }
                // The parent, then the default partition: the order in
                // which every writer locks them, so a COPY waits instead
                // of deadlocking; no rows enter while the day's rows leave.
                for lock in [
                    "LOCK TABLE ONLY events IN SHARE ROW EXCLUSIVE MODE",
                    "LOCK TABLE events_default IN EXCLUSIVE MODE",
                ] {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                sqlx::query(&create).execute(&mut *tx).await?;
                let n = sqlx::query(&format!(
                    "INSERT INTO {name} ({COLUMNS}) SELECT {COLUMNS} FROM events_default \
                     WHERE received_at >= $1::timestamptz AND received_at < $2::timestamptz"
                ))
                .bind(&lo)
                .bind(&hi)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "DELETE FROM events_default WHERE received_at >= $1::timestamptz AND received_at < $2::timestamptz",
                )
                .bind(&lo)
                .bind(&hi)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&attach).execute(&mut *tx).await?;
                report.moved_rows += n;
                Ok::<_, sqlx::Error>(())
            };
            match step.await {
                Ok(()) => {}
                Err(e) if already_exists(&e) => return Ok(false),
                Err(e) if !moving && is_code(&e, "23514") => continue,
                Err(e) => return Err(fail(e)),
            }
            tx.commit().await.map_err(fail)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Removes events older than `days` days before `now_us`: with
    /// PostgreSQL the partitions whose whole range is older are dropped
    /// (and old rows of the default partition deleted); with SQLite the
    /// rows are deleted in batches. `days` 0 keeps everything.
    pub async fn apply_retention(&self, now_us: i64, days: u32) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        if days == 0 {
            return Ok(report);
        }
        let cutoff_us = now_us.saturating_sub(i64::from(days) * 86_400_000_000);
        match self {
            Store::Sqlite(pool) => {
                let cutoff = crate::format_micros(cutoff_us);
                loop {
                    let n = sqlx::query(
                        "DELETE FROM events WHERE id IN \
                         (SELECT id FROM events WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
                    )
                    .bind(&cutoff)
                    .bind(DELETE_BATCH)
                    .execute(pool)
                    .await
                    .map_err(sql("deleting old events"))?
                    .rows_affected();
                    report.deleted_rows += n;
                    if n < DELETE_BATCH as u64 {
                        break;
                    }
                    tokio::time::sleep(DELETE_PAUSE).await;
                }
            }
            Store::Postgres(pool) => {
                // A partition goes when its range ends on or before the
                // cutoff's day: every row in it is older than `days`.
                let cutoff_day = day_of(cutoff_us);
                for p in self.event_partitions().await? {
                    if p.end().is_none_or(|end| end > cutoff_day) {
                        continue;
                    }
                    let name = p.name();
                    let mut tx = pool.begin().await.map_err(sql("dropping a partition"))?;
                    sqlx::query(LOCK_TIMEOUT)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("dropping a partition"))?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(PARTITIONS_LOCK)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("dropping a partition"))?;
                    let rows: Option<f32> =
                        sqlx::query("SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)")
                            .bind(&name)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(sql("dropping a partition"))?
                            .map(|r| r.get(0));
                    let Some(rows) = rows else {
                        // Another collector dropped it first.
                        continue;
                    };
                    // The parent first, as writers lock it.
                    sqlx::query("LOCK TABLE ONLY events IN ACCESS EXCLUSIVE MODE")
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("dropping a partition"))?;
                    sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("dropping a partition"))?;
                    tx.commit().await.map_err(sql("dropping a partition"))?;
                    report.dropped_rows_estimate += rows.max(0.0) as u64;
                    report.dropped.push(name);
                }
                loop {
                    let n = sqlx::query(
                        "DELETE FROM events_default WHERE ctid IN \
                         (SELECT ctid FROM events_default WHERE received_at < $1::timestamptz LIMIT $2) \
                         AND received_at < $1::timestamptz",
                    )
                    .bind(crate::format_micros(cutoff_us) + "+00")
                    .bind(DELETE_BATCH)
                    .execute(pool)
                    .await
                    .map_err(sql("deleting old events from events_default"))?
                    .rows_affected();
                    report.deleted_rows += n;
                    if n < DELETE_BATCH as u64 {
                        break;
                    }
                    tokio::time::sleep(DELETE_PAUSE).await;
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        assert_eq!(Partition::from_name("events_20261203"), Partition::Day(d));
        assert_eq!(
            Partition::from_name("events_upto_20261203"),
            Partition::UpTo(d)
        );
        assert_eq!(Partition::from_name("events_default"), Partition::Default);
        for other in [
            "events_2026120",
            "events_20261332",
            "events_x0261203",
            "evts_20261203",
        ] {
            assert_eq!(Partition::from_name(other), Partition::Other(other.into()));
        }
        assert_eq!(Partition::Day(d).name(), "events_20261203");
        assert_eq!(
            Partition::Day(d).end(),
            NaiveDate::from_ymd_opt(2026, 12, 4)
        );
        assert_eq!(Partition::UpTo(d).end(), Some(d));
        assert_eq!(day_start(d), "2026-12-03 00:00:00+00");
        assert_eq!(
            day_of(1_795_995_692_315_517),
            NaiveDate::from_ymd_opt(2026, 11, 29).unwrap()
        );
    }
}
