//! The SQL store of ossec-collector.
//!
//! Owns all SQL; nothing outside this crate writes any. By module:
//! `schema` (connecting, applying `migrations/`), `events` (the rows and a
//! batch's transaction), `pg_copy` and `sqlite_events` (each dialect's
//! event writer, which fills `events.data` through `ossec-fields`),
//! `partitions` (daily partitions and retention), `agents` (the `agents`
//! table, counter resets, the sender counter), `keys` (the agent keys),
//! `cluster` (what several collectors on one database share).
//!
//! Text columns are lossless: when a message or location is not valid UTF-8
//! or holds NUL (which PostgreSQL text cannot store), the text column gets
//! U+FFFD in place of the offending bytes and the exact bytes go to
//! `message_raw` / `location_raw`; otherwise those columns are NULL.

mod agents;
mod cluster;
mod events;
mod keys;
mod partitions;
mod pg_copy;
mod schema;
mod sqlite_events;
mod time;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

pub use agents::{AgentRecord, AgentStatus};
pub(crate) use agents::{PG_COUNTERS_NEWER, SQLITE_COUNTERS_NEWER};
pub use cluster::{CounterRow, JobLock};
pub use events::{text_and_raw, DataCounts, EventOptions, EventRow, SpoolProgress};
pub use keys::{AddOutcome, Conflict, FileKey, Holder, ImportReport, KeyOrigin, NewKey, StoredKey};
pub use partitions::{Partition, PartitionReport, RetentionReport};
pub use pg_copy::copy_rows;
pub use schema::{redact, sqlite_file};
pub use time::{format_micros, now_micros, parse_micros};

/// A store error, naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    /// A limit of the data, e.g. no agent ID left.
    #[error("{0}")]
    Limit(String),
    // The causes are part of each message and deliberately not `source()`:
    // `{:#}` chains would print them two or three times.
    #[error("cannot connect to {what}: {reason}")]
    Connect { what: String, reason: String },
    #[error("applying migrations failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("{what}: {cause}")]
    Sql {
        what: &'static str,
        cause: sqlx::Error,
    },
    /// [`Store::insert_events_ordered`]: the batch before this one was not
    /// committed, so this one was rolled back (it is written again after it).
    #[error("rolled back: the batch before it was not committed")]
    PreviousNotCommitted,
}

type Result<T> = std::result::Result<T, StoreError>;

fn sql(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |cause| StoreError::Sql { what, cause }
}

/// The store: PostgreSQL or SQLite.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Store {
    /// `postgresql` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgresql",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Checks that the store accepts writes (for `/health`).
    pub async fn check_writable(&self) -> Result<()> {
        const Q: &str = "INSERT INTO collector_state (name, value) VALUES ('health_check', $1) ON CONFLICT (name) DO UPDATE SET value = excluded.value";
        let now = now_micros();
        match self {
            Store::Postgres(pool) => sqlx::query(Q).bind(now).execute(pool).await.map(|_| ()),
            Store::Sqlite(pool) => sqlx::query(Q).bind(now).execute(pool).await.map(|_| ()),
        }
        .map_err(sql("health check write"))
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Store::Postgres(p) => p.close().await,
            Store::Sqlite(p) => p.close().await,
        }
    }
}
