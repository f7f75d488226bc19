//! What several collectors on one store need from it to behave as one
//! manager.
//!
//! Owns the shared replay state (receive counters written monotonically,
//! read back by a collector that has not heard an agent lately), the
//! once-per-cluster jobs' lock (a PostgreSQL session advisory lock held on a
//! connection of its own, so that it moves to another collector when the
//! holder dies) and the jobs' SQL (the whole-store disconnect sweep).

use sqlx::pool::PoolConnection;
use sqlx::Postgres;

use crate::{format_micros, sql, Result, Store, PG_COUNTERS_NEWER};

/// An agent's receive counters as one collector holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    pub id: String,
    pub epoch: i64,
    pub recv: Option<(u32, u32)>,
}

/// The advisory lock key of the once-per-cluster jobs (any constant; this
/// is "ossc" "jobs" in ASCII).
const JOBS_LOCK: i64 = 0x6f73_7363_6a6f_6273;

/// Who may run the once-per-cluster jobs.
pub enum JobLock {
    /// SQLite: one collector per file, so it always runs them.
    Alone,
    /// PostgreSQL: the connection that holds the advisory lock.
    Held(PoolConnection<Postgres>),
    /// PostgreSQL: another collector holds it (or the store is away).
    NotHeld,
}

impl JobLock {
    pub fn is_held(&self) -> bool {
        !matches!(self, JobLock::NotHeld)
    }
}

impl Store {
    /// Writes receive counters, never lowering a stored one (see
    /// `recv_epoch` in the migrations). Returns how many rows moved.
    pub async fn save_counters(&self, rows: &[CounterRow]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        match self {
            Store::Postgres(pool) => {
                static QUERY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let q = QUERY.get_or_init(|| {
                    format!(
                        "UPDATE agents AS a SET recv_global = u.recv_global, recv_local = u.recv_local, \
                         recv_epoch = u.recv_epoch \
                         FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[]) \
                         AS u(id, recv_epoch, recv_global, recv_local) \
                         WHERE a.id = u.id AND {PG_COUNTERS_NEWER}"
                    )
                });
                let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                let epochs: Vec<i64> = rows.iter().map(|r| r.epoch).collect();
                let g: Vec<Option<i64>> = rows
                    .iter()
                    .map(|r| r.recv.map(|c| i64::from(c.0)))
                    .collect();
                let l: Vec<Option<i64>> = rows
                    .iter()
                    .map(|r| r.recv.map(|c| i64::from(c.1)))
                    .collect();
                sqlx::query(q)
                    .bind(ids)
                    .bind(epochs)
                    .bind(g)
                    .bind(l)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(sql("saving receive counters"))
            }
            Store::Sqlite(pool) => {
                // The shared condition names save_agents' placeholders.
                let cond = crate::SQLITE_COUNTERS_NEWER
                    .replace("?21", "?2")
                    .replace("?22", "?3")
                    .replace("?24", "?4");
                let q = format!(
                    "UPDATE agents SET recv_global = ?2, recv_local = ?3, recv_epoch = ?4 WHERE id = ?1 AND {cond}"
                );
                let mut tx = pool.begin().await.map_err(sql("beginning a transaction"))?;
                let mut n = 0;
                for r in rows {
                    n += sqlx::query(&q)
                        .bind(&r.id)
                        .bind(r.recv.map(|c| i64::from(c.0)))
                        .bind(r.recv.map(|c| i64::from(c.1)))
                        .bind(r.epoch)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("saving receive counters"))?
                        .rows_affected();
                }
                tx.commit().await.map_err(sql("saving receive counters"))?;
                Ok(n)
            }
        }
    }

    /// One agent's stored counters and their epoch (`None`: no such agent).
    pub async fn load_counters(&self, id: &str) -> Result<Option<CounterRow>> {
        const Q: &str = "SELECT recv_epoch, recv_global, recv_local FROM agents WHERE id = $1";
        let row: Option<(i64, Option<i64>, Option<i64>)> = match self {
            Store::Postgres(pool) => sqlx::query_as(Q).bind(id).fetch_optional(pool).await,
            Store::Sqlite(pool) => sqlx::query_as(Q).bind(id).fetch_optional(pool).await,
        }
        .map_err(sql("loading receive counters"))?;
        let clamp = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        Ok(row.map(|(epoch, g, l)| CounterRow {
            id: id.to_owned(),
            epoch,
            recv: match (g, l) {
                (Some(g), Some(l)) => Some((clamp(g), clamp(l))),
                _ => None,
            },
        }))
    }

    /// Tries to take (or checks that this collector still holds) the lock
    /// of the once-per-cluster jobs. Pass the previous result back in.
    pub async fn job_lock(&self, previous: JobLock) -> JobLock {
        let pool = match self {
            Store::Sqlite(_) => return JobLock::Alone,
            Store::Postgres(pool) => pool,
        };
        if let JobLock::Held(mut conn) = previous {
            // Still ours while the session lives.
            return match sqlx::query("SELECT 1").execute(&mut *conn).await {
                Ok(_) => JobLock::Held(conn),
                Err(_) => {
                    // The session is gone, and the lock with it; do not
                    // return this connection to the pool.
                    let _ = conn.detach();
                    JobLock::NotHeld
                }
            };
        }
        let Ok(mut conn) = pool.acquire().await else {
            return JobLock::NotHeld;
        };
        match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(JOBS_LOCK)
            .fetch_one(&mut *conn)
            .await
        {
            Ok(true) => JobLock::Held(conn),
            _ => JobLock::NotHeld,
        }
    }

    /// The whole-store disconnect sweep (a once-per-cluster job): marks
    /// `disconnected` every `pending`/`active` agent whose last control
    /// message is older than `cutoff` (Unix µs), whichever collector heard
    /// it, and returns their IDs.
    pub async fn sweep_disconnected(&self, cutoff: i64) -> Result<Vec<String>> {
        match self {
            Store::Postgres(pool) => sqlx::query_scalar(
                "UPDATE agents SET status = 'disconnected' WHERE status IN ('pending', 'active') \
                 AND last_control < 'epoch'::timestamptz + $1 * interval '1 microsecond' RETURNING id",
            )
            .bind(cutoff)
            .fetch_all(pool)
            .await,
            Store::Sqlite(pool) => sqlx::query_scalar(
                "UPDATE agents SET status = 'disconnected' WHERE status IN ('pending', 'active') \
                 AND last_control < ?1 RETURNING id",
            )
            .bind(format_micros(cutoff))
            .fetch_all(pool)
            .await,
        }
        .map_err(sql("marking agents disconnected"))
    }
}
