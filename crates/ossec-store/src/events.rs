//! Events as the collector hands them to the store, and writing a batch of
//! them in one transaction with the spool position it ends at. The dialects'
//! writers are `pg_copy` and `sqlite_events`; the structured `data` column
//! is derived here by `ossec-fields` while the rows are encoded.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use ossec_fields::Outcome;

use crate::pg_copy::copy_events;
use crate::sqlite_events::insert_events_sqlite;
use crate::{sql, Result, Store};

/// One event row, as the collector hands it to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Unix time in microseconds, UTC.
    pub received_at: i64,
    pub agent_id: Arc<str>,
    pub agent_name: Arc<str>,
    pub source_ip: IpAddr,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    pub queue: u8,
    pub queue_name: &'static str,
    pub location: Vec<u8>,
    pub message: Vec<u8>,
    pub global_counter: u32,
    pub local_counter: u32,
}

/// Makes `bytes` storable in a text column: the text, and the exact bytes
/// when the text is not exact.
pub fn text_and_raw(bytes: &[u8]) -> (Cow<'_, str>, Option<&[u8]>) {
    // SIMD validation: this runs on every message and location, and std's
    // validator was 6 % of the collector's CPU in the benchmark profile.
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) if !bytes.contains(&0) => (Cow::Borrowed(s), None),
        Ok(s) => (Cow::Owned(s.replace('\0', "\u{FFFD}")), Some(bytes)),
        Err(_) => (
            Cow::Owned(String::from_utf8_lossy(bytes).replace('\0', "\u{FFFD}")),
            Some(bytes),
        ),
    }
}

/// How a batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOptions {
    /// Fill `events.data` (the parsed JSON, eventchannel or syslog
    /// fields); off, the column stays NULL and no parsing is done.
    pub data: bool,
}

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions { data: true }
    }
}

/// What `events.data` got in a committed batch, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataCounts {
    /// Rows whose message was a JSON object or array.
    pub json: u64,
    /// Windows eventchannel events turned into `win.*` fields.
    pub eventchannel: u64,
    /// Text lines with a syslog header (`predecoder.*`).
    pub syslog: u64,
    /// JSON-looking messages that did not parse: `data` NULL.
    pub json_invalid: u64,
    /// Eventchannel events whose XML did not parse: `data` NULL.
    pub xml_invalid: u64,
    /// Rows stored with `data` NULL because the database refused the
    /// batch's `data` (a data exception, SQLSTATE class 22): the batch was
    /// written again without it rather than retried forever.
    pub refused: u64,
}

impl DataCounts {
    pub(crate) fn add(&mut self, o: Outcome) {
        match o {
            Outcome::None => {}
            Outcome::Json => self.json += 1,
            Outcome::EventChannel => self.eventchannel += 1,
            Outcome::Syslog => self.syslog += 1,
            Outcome::JsonInvalid => self.json_invalid += 1,
            Outcome::XmlInvalid => self.xml_invalid += 1,
        }
    }
}

/// SQLite takes no ids: the database numbers rows in the (only) order
/// they are written.
async fn sqlite_ignoring_ids(
    conn: &mut sqlx::SqliteConnection,
    rows: &[EventRow],
    _ids: Option<&[i64]>,
    opts: EventOptions,
) -> Result<DataCounts> {
    insert_events_sqlite(conn, rows, opts).await
}

/// A database "data exception" (SQLSTATE class 22: a value the column
/// type refuses), as opposed to a lost connection or a full disk.
fn is_data_exception(e: &crate::StoreError) -> bool {
    matches!(e, crate::StoreError::Sql { cause: sqlx::Error::Database(d), .. }
        if d.code().is_some_and(|c| c.starts_with("22")))
}

/// Where a spool's events are committed up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolProgress {
    pub spool_id: String,
    pub segment: i64,
    pub offset: i64,
}

impl Store {
    /// Writes a batch of events in one transaction (one COPY for
    /// PostgreSQL), `data` filled.
    pub async fn insert_events(&self, rows: &[EventRow]) -> Result<DataCounts> {
        self.insert_events_at(rows, None, EventOptions::default())
            .await
    }

    /// Writes a batch of events and, in the same transaction, the spool
    /// position they end at (`spool_progress`): after a crash the spool is
    /// read again from the committed position, so every event is stored
    /// exactly once whenever the process died. Returns what `data` got
    /// (counted only for the attempt that committed).
    pub async fn insert_events_at(
        &self,
        rows: &[EventRow],
        progress: Option<&SpoolProgress>,
        opts: EventOptions,
    ) -> Result<DataCounts> {
        if rows.is_empty() && progress.is_none() {
            return Ok(DataCounts::default());
        }
        self.write_batch(rows, None, progress, opts, std::future::ready(true))
            .await
    }

    /// [`Store::insert_events_at`] for spool batches written concurrently,
    /// in order: the rows are written at once (so that several batches keep
    /// the server busy together), then `turn` is awaited (it says whether
    /// the previous batch committed) and only then is the position saved and
    /// the transaction committed. Transactions so commit in the order of
    /// their batches and the committed position is always the end of a
    /// committed prefix of the spool: exactly once still holds whenever the
    /// process dies. When `turn` says false the transaction is rolled back
    /// ([`StoreError::PreviousNotCommitted`](crate::StoreError)).
    ///
    /// `ids` (from [`Store::reserve_event_ids`], in spool order) become the
    /// rows' `id`s on PostgreSQL, so that `ORDER BY id` keeps each agent's
    /// order although batches are written at once.
    pub async fn insert_events_ordered(
        &self,
        rows: &[EventRow],
        ids: Option<&[i64]>,
        progress: &SpoolProgress,
        opts: EventOptions,
        turn: impl std::future::Future<Output = bool>,
    ) -> Result<DataCounts> {
        self.write_batch(rows, ids, Some(progress), opts, turn)
            .await
    }

    /// One transaction: the rows, then (once `turn` says the batch before
    /// committed) the spool position, then the commit.
    async fn write_batch(
        &self,
        rows: &[EventRow],
        ids: Option<&[i64]>,
        progress: Option<&SpoolProgress>,
        opts: EventOptions,
        turn: impl std::future::Future<Output = bool>,
    ) -> Result<DataCounts> {
        const PROGRESS: &str = "INSERT INTO spool_progress (spool_id, segment, byte_offset) VALUES ($1, $2, $3) \
            ON CONFLICT (spool_id) DO UPDATE SET segment = excluded.segment, byte_offset = excluded.byte_offset, \
            updated_at = excluded.updated_at";
        macro_rules! write {
            ($pool:expr, $rows:path) => {{
                let mut o = opts;
                let (mut tx, mut counts) = loop {
                    let mut tx = $pool
                        .begin()
                        .await
                        .map_err(sql("beginning a transaction"))?;
                    match $rows(&mut tx, rows, ids, o).await {
                        Ok(c) => break (tx, c),
                        // One event whose `data` the database refuses would
                        // otherwise block its batch (and every later one)
                        // for ever: the batch is written once more with
                        // `data` NULL, its text intact.
                        Err(e) if o.data && is_data_exception(&e) => {
                            tracing::warn!(
                                rows = rows.len(),
                                "the store refused the structured data of a batch; storing it with data NULL: {e}"
                            );
                            drop(tx);
                            o = EventOptions { data: false };
                        }
                        Err(e) => return Err(e),
                    }
                };
                if !o.data && opts.data {
                    counts.refused = rows.len() as u64;
                }
                if !turn.await {
                    return Err(crate::StoreError::PreviousNotCommitted);
                }
                if let Some(p) = progress {
                    sqlx::query(PROGRESS)
                        .bind(&p.spool_id)
                        .bind(p.segment)
                        .bind(p.offset)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("saving the spool position"))?;
                }
                tx.commit().await.map_err(sql("committing events"))?;
                Ok(counts)
            }};
        }
        match self {
            Store::Postgres(pool) => write!(pool, copy_events),
            Store::Sqlite(pool) => write!(pool, sqlite_ignoring_ids),
        }
    }

    /// `n` new event ids, ascending (PostgreSQL; `None` for SQLite, which
    /// writes one batch at a time). Taken from the `events` sequence like
    /// the ids the database gives itself: unused ones are gaps, as after a
    /// rolled back transaction.
    pub async fn reserve_event_ids(&self, n: usize) -> Result<Option<Vec<i64>>> {
        const Q: &str =
            "SELECT array_agg(nextval('events_id_seq')) FROM generate_series(1, $1::bigint)";
        match self {
            Store::Postgres(pool) => {
                if n == 0 {
                    return Ok(Some(Vec::new()));
                }
                let (ids,): (Vec<i64>,) = sqlx::query_as(Q)
                    .bind(n as i64)
                    .fetch_one(pool)
                    .await
                    .map_err(sql("reserving event ids"))?;
                let mut ids = ids;
                ids.sort_unstable();
                Ok(Some(ids))
            }
            Store::Sqlite(_) => Ok(None),
        }
    }

    /// The committed position of a spool (`None`: nothing committed yet).
    pub async fn spool_progress(&self, spool_id: &str) -> Result<Option<(i64, i64)>> {
        const Q: &str = "SELECT segment, byte_offset FROM spool_progress WHERE spool_id = $1";
        match self {
            Store::Postgres(pool) => sqlx::query_as(Q).bind(spool_id).fetch_optional(pool).await,
            Store::Sqlite(pool) => sqlx::query_as(Q).bind(spool_id).fetch_optional(pool).await,
        }
        .map_err(sql("reading the spool position"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_lossless() {
        assert_eq!(text_and_raw(b"plain"), (Cow::Borrowed("plain"), None));
        let (t, raw) = text_and_raw(b"a\0b");
        assert_eq!(t, "a\u{FFFD}b");
        assert_eq!(raw, Some(&b"a\0b"[..]));
        let (t, raw) = text_and_raw(b"a\xffb");
        assert_eq!(t, "a\u{FFFD}b");
        assert_eq!(raw, Some(&b"a\xffb"[..]));
    }
}
