//! The SQL store of ossec-collector.
//!
//! Owns all SQL: applying `migrations/` at start, writing batches of events
//! (PostgreSQL through `COPY … FROM STDIN`, SQLite through one transaction
//! per batch), the `agents` table and the collector's own persisted state
//! (the manager's sender counter). Nothing outside this crate writes SQL.
//!
//! Text columns are lossless: when a message or location is not valid UTF-8
//! or holds NUL (which PostgreSQL text cannot store), the text column gets
//! U+FFFD in place of the offending bytes and the exact bytes go to
//! `message_raw` / `location_raw`; otherwise those columns are NULL.

mod cluster;
mod keys;
mod time;

use std::borrow::Cow;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

pub use cluster::{CounterRow, JobLock};
pub use keys::{AddOutcome, Conflict, FileKey, Holder, ImportReport, KeyOrigin, NewKey, StoredKey};
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
}

type Result<T> = std::result::Result<T, StoreError>;

fn sql(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |cause| StoreError::Sql { what, cause }
}

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

/// Agent status, with Wazuh's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentStatus {
    /// In client.keys, never sent a valid message.
    #[default]
    NeverConnected,
    /// Sent a startup, no keepalive since.
    Pending,
    /// Keepalives arrive.
    Active,
    /// Sent a shutdown, or no keepalive for `--disconnect-after`.
    Disconnected,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 4] = [
        AgentStatus::NeverConnected,
        AgentStatus::Pending,
        AgentStatus::Active,
        AgentStatus::Disconnected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::NeverConnected => "never_connected",
            AgentStatus::Pending => "pending",
            AgentStatus::Active => "active",
            AgentStatus::Disconnected => "disconnected",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => AgentStatus::Pending,
            "active" => AgentStatus::Active,
            "disconnected" => AgentStatus::Disconnected,
            _ => AgentStatus::NeverConnected,
        }
    }
}

/// The dynamic part of an `agents` row: everything the collector learns
/// from an agent's messages. Timestamps are Unix microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentRecord {
    pub id: String,
    pub status: AgentStatus,
    pub version: Option<String>,
    pub os_name: Option<String>,
    pub os_platform: Option<String>,
    pub os_version: Option<String>,
    pub arch: Option<String>,
    pub hostname: Option<String>,
    pub uname: Option<String>,
    pub config_sum: Option<String>,
    pub merged_sum: Option<String>,
    /// JSON object of label key → value.
    pub labels: Option<serde_json::Value>,
    pub last_ip: Option<String>,
    pub transport: Option<String>,
    pub cipher: Option<String>,
    pub aes_iv: Option<String>,
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    pub last_keepalive: Option<i64>,
    pub last_control: Option<i64>,
    /// Counters of the last accepted message.
    pub recv: Option<(u32, u32)>,
    /// The counters' epoch: raised by `reset-counters` and by a new key
    /// for the ID. Stored counters are only replaced by newer ones of the
    /// same epoch or by any of a newer epoch.
    pub recv_epoch: i64,
    /// The collector (`serve --instance-name`) that last heard the agent.
    pub collector: Option<String>,
}

/// The store: PostgreSQL or SQLite.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
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

/// PostgreSQL's binary COPY signature, flags and header extension length.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
/// Columns per row in [`COPY_EVENTS`].
const COPY_COLUMNS: i16 = 13;

const COPY_EVENTS: &str = "COPY events (received_at, agent_id, agent_name, source_ip, transport, queue, queue_name, location, message, message_raw, location_raw, global_counter, local_counter) FROM STDIN WITH (FORMAT binary)";

/// One field of a binary COPY row: its length, then its bytes. Fields are
/// bounded by the 64 KiB message limit, far below `i32::MAX`.
fn copy_field(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

fn copy_opt_field(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => copy_field(out, b),
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// Encodes rows in PostgreSQL's binary COPY format, header and trailer
/// included: no text escaping on our side and no text parsing on the
/// server's, which made the server spend about a third less CPU per row
/// than the text format (docs/benchmarks.md).
pub fn copy_rows(rows: &[EventRow], out: &mut Vec<u8>) {
    out.extend_from_slice(COPY_BINARY_HEADER);
    for r in rows {
        copy_row(r, out);
    }
    copy_trailer(out);
}

/// The end of binary COPY data.
fn copy_trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// One row of binary COPY data.
fn copy_row(r: &EventRow, out: &mut Vec<u8>) {
    use std::io::Write;
    let (location, location_raw) = text_and_raw(&r.location);
    let (message, message_raw) = text_and_raw(&r.message);
    out.extend_from_slice(&COPY_COLUMNS.to_be_bytes());
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(
        &r.received_at
            .saturating_sub(PG_EPOCH_OFFSET_US)
            .to_be_bytes(),
    );
    copy_field(out, r.agent_id.as_bytes());
    copy_field(out, r.agent_name.as_bytes());
    // The address, written in place behind its length (at most 45 bytes).
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", r.source_ip);
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    copy_field(out, r.transport.as_bytes());
    // The queue character as text; a non-ASCII byte becomes U+FFFD
    // (queue characters are ASCII in every agent).
    let q = [r.queue];
    copy_field(out, text_and_raw(&q).0.as_bytes());
    copy_field(out, r.queue_name.as_bytes());
    copy_field(out, location.as_bytes());
    copy_field(out, message.as_bytes());
    copy_opt_field(out, message_raw);
    copy_opt_field(out, location_raw);
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&i64::from(r.global_counter).to_be_bytes());
    out.extend_from_slice(&4i32.to_be_bytes());
    // The local counter has four digits on the wire: it fits an i32.
    out.extend_from_slice(&(r.local_counter.min(i32::MAX as u32) as i32).to_be_bytes());
}

/// COPY data is sent in pieces of about this size while it is encoded: the
/// server starts on the first rows while later ones are encoded, and no
/// batch-sized buffer is built (and copied again by the driver).
const COPY_CHUNK: usize = 256 * 1024;

fn opt_ts(v: Option<i64>) -> Option<String> {
    v.map(format_micros)
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` (the SQLite file is created
    /// if missing) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = pg_options(url)?;
            // One connection first, so that a refused connection, an
            // unknown host, a wrong password or a missing database is
            // reported at once and by name; the pool would retry them
            // silently until its timeout.
            let first =
                tokio::time::timeout(CONNECT_TIMEOUT, sqlx::ConnectOptions::connect(&opts)).await;
            match first {
                Ok(Ok(c)) => drop(c),
                Ok(Err(e)) => {
                    return Err(StoreError::Connect {
                        what: redact(url),
                        reason: connect_reason(&e),
                    })
                }
                Err(_) => {
                    return Err(StoreError::Connect {
                        what: redact(url),
                        reason: format!(
                            "no answer within {} s (is the host reachable and the port right?)",
                            CONNECT_TIMEOUT.as_secs()
                        ),
                    })
                }
            }
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(CONNECT_TIMEOUT)
                .connect_with(opts)
                .await
                .map_err(|e| StoreError::Connect {
                    what: redact(url),
                    reason: connect_reason(&e),
                })?;
            sqlx::migrate!("../../migrations/postgres")
                .run(&pool)
                .await
                .map_err(StoreError::Migrate)?;
            Store::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Url {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(std::time::Duration::from_secs(10));
            let file = opts.get_filename().to_owned();
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(StoreError::Connect {
                        what: url.to_owned(),
                        reason: format!(
                            "the directory {} does not exist (create it, or give another path)",
                            dir.display()
                        ),
                    });
                }
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(|e| StoreError::Connect {
                    what: url.to_owned(),
                    reason: match &e {
                        sqlx::Error::Database(d) => format!(
                            "{} ({}: check that the file is writable by this user)",
                            d.message(),
                            file.display()
                        ),
                        _ => connect_reason(&e),
                    },
                })?;
            sqlx::migrate!("../../migrations/sqlite")
                .run(&pool)
                .await
                .map_err(StoreError::Migrate)?;
            Store::Sqlite(pool)
        } else {
            return Err(StoreError::Url {
                url: redact(url),
                reason: "expected postgres://… or sqlite://…".into(),
            });
        };
        Ok(store)
    }

    /// `postgresql` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgresql",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Writes a batch of events in one transaction (one COPY for PostgreSQL).
    pub async fn insert_events(&self, rows: &[EventRow]) -> Result<()> {
        self.insert_events_at(rows, None).await
    }

    /// Writes a batch of events and, in the same transaction, the spool
    /// position they end at (`spool_progress`): after a crash the spool is
    /// read again from the committed position, so every event is stored
    /// exactly once whenever the process died.
    pub async fn insert_events_at(
        &self,
        rows: &[EventRow],
        progress: Option<&SpoolProgress>,
    ) -> Result<()> {
        const PROGRESS: &str = "INSERT INTO spool_progress (spool_id, segment, byte_offset) VALUES ($1, $2, $3) \
            ON CONFLICT (spool_id) DO UPDATE SET segment = excluded.segment, byte_offset = excluded.byte_offset, \
            updated_at = excluded.updated_at";
        if rows.is_empty() && progress.is_none() {
            return Ok(());
        }
        // The rows, then the position, then one commit.
        macro_rules! write {
            ($pool:expr, $rows:path) => {{
                let mut tx = $pool
                    .begin()
                    .await
                    .map_err(sql("beginning a transaction"))?;
                $rows(&mut tx, rows).await?;
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
            }};
        }
        match self {
            Store::Postgres(pool) => write!(pool, copy_events),
            Store::Sqlite(pool) => write!(pool, insert_events_sqlite),
        }
        Ok(())
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

/// Where a spool's events are committed up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolProgress {
    pub spool_id: String,
    pub segment: i64,
    pub offset: i64,
}

/// The rows of one batch as one binary COPY on `conn` (inside the caller's
/// transaction).
async fn copy_events(conn: &mut sqlx::PgConnection, rows: &[EventRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut copy = conn
        .copy_in_raw(COPY_EVENTS)
        .await
        .map_err(sql("starting COPY"))?;
    // One chunk and the row that crosses its end (grown if a row
    // is larger).
    let mut buf = Vec::with_capacity(2 * COPY_CHUNK);
    buf.extend_from_slice(COPY_BINARY_HEADER);
    let mut sent = Ok(());
    for (i, r) in rows.iter().enumerate() {
        copy_row(r, &mut buf);
        if i + 1 == rows.len() {
            copy_trailer(&mut buf);
        }
        if buf.len() >= COPY_CHUNK || i + 1 == rows.len() {
            sent = copy.send(buf.as_slice()).await.map(|_| ());
            if sent.is_err() {
                break;
            }
            buf.clear();
        }
    }
    if let Err(e) = sent {
        let _ = copy.abort("send failed").await;
        return Err(StoreError::Sql {
            what: "sending COPY data",
            cause: e,
        });
    }
    copy.finish().await.map_err(sql("finishing COPY"))?;
    Ok(())
}

/// The rows of one batch as INSERTs inside the caller's SQLite transaction.
async fn insert_events_sqlite(conn: &mut sqlx::SqliteConnection, rows: &[EventRow]) -> Result<()> {
    for r in rows {
        let (location, location_raw) = text_and_raw(&r.location);
        let (message, message_raw) = text_and_raw(&r.message);
        sqlx::query(
            "INSERT INTO events (received_at, agent_id, agent_name, source_ip, transport, queue, queue_name, location, message, message_raw, location_raw, global_counter, local_counter) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(format_micros(r.received_at))
        .bind(&*r.agent_id)
        .bind(&*r.agent_name)
        .bind(r.source_ip.to_string())
        .bind(r.transport)
        .bind(String::from_utf8_lossy(&[r.queue]).into_owned())
        .bind(r.queue_name)
        .bind(&*location)
        .bind(&*message)
        .bind(message_raw)
        .bind(location_raw)
        .bind(i64::from(r.global_counter))
        .bind(i64::from(r.local_counter))
        .execute(&mut *conn)
        .await
        .map_err(sql("inserting events"))?;
    }
    Ok(())
}

impl Store {
    /// Saves what the collector learnt about agents (one transaction).
    pub async fn save_agents(&self, records: &[AgentRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let pool = match self {
            Store::Postgres(pool) => return save_agents_pg(pool, records).await,
            Store::Sqlite(pool) => pool,
        };
        // Several writers may hold different news of one agent (with
        // PostgreSQL: several collectors). The newest contact wins the
        // descriptive columns, the newest control message the status, and
        // the counters only ever move forward within an epoch.
        const Q: &str = "UPDATE agents SET \
            status = CASE WHEN ?20 IS NOT NULL AND (last_control IS NULL OR ?20 > last_control) THEN ?2 ELSE status END, \
            version = CASE WHEN ?99 THEN ?3 ELSE version END, os_name = CASE WHEN ?99 THEN ?4 ELSE os_name END, \
            os_platform = CASE WHEN ?99 THEN ?5 ELSE os_platform END, os_version = CASE WHEN ?99 THEN ?6 ELSE os_version END, \
            arch = CASE WHEN ?99 THEN ?7 ELSE arch END, hostname = CASE WHEN ?99 THEN ?8 ELSE hostname END, \
            uname = CASE WHEN ?99 THEN ?9 ELSE uname END, config_sum = CASE WHEN ?99 THEN ?10 ELSE config_sum END, \
            merged_sum = CASE WHEN ?99 THEN ?11 ELSE merged_sum END, labels = CASE WHEN ?99 THEN ?12 ELSE labels END, \
            last_ip = CASE WHEN ?99 THEN ?13 ELSE last_ip END, transport = CASE WHEN ?99 THEN ?14 ELSE transport END, \
            cipher = CASE WHEN ?99 THEN ?15 ELSE cipher END, aes_iv = CASE WHEN ?99 THEN ?16 ELSE aes_iv END, \
            collector = CASE WHEN ?99 THEN ?23 ELSE collector END, \
            first_seen = CASE WHEN first_seen IS NULL OR ?17 < first_seen THEN ?17 ELSE first_seen END, \
            last_seen = max(coalesce(last_seen, ?18), coalesce(?18, last_seen)), \
            last_keepalive = max(coalesce(last_keepalive, ?19), coalesce(?19, last_keepalive)), \
            last_control = max(coalesce(last_control, ?20), coalesce(?20, last_control)), \
            recv_global = CASE WHEN ?98 THEN ?21 ELSE recv_global END, \
            recv_local = CASE WHEN ?98 THEN ?22 ELSE recv_local END, \
            recv_epoch = CASE WHEN ?98 THEN ?24 ELSE recv_epoch END \
            WHERE id = ?1";
        static QUERY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let q = QUERY.get_or_init(|| {
            Q.replace("?99", "(last_seen IS NULL OR ?18 >= last_seen)")
                .replace("?98", SQLITE_COUNTERS_NEWER)
        });
        let mut tx = pool.begin().await.map_err(sql("beginning a transaction"))?;
        for r in records {
            sqlx::query(q)
                .bind(&r.id)
                .bind(r.status.as_str())
                .bind(&r.version)
                .bind(&r.os_name)
                .bind(&r.os_platform)
                .bind(&r.os_version)
                .bind(&r.arch)
                .bind(&r.hostname)
                .bind(&r.uname)
                .bind(&r.config_sum)
                .bind(&r.merged_sum)
                .bind(r.labels.as_ref().map(|l| l.to_string()))
                .bind(&r.last_ip)
                .bind(&r.transport)
                .bind(&r.cipher)
                .bind(&r.aes_iv)
                .bind(opt_ts(r.first_seen))
                .bind(opt_ts(r.last_seen))
                .bind(opt_ts(r.last_keepalive))
                .bind(opt_ts(r.last_control))
                .bind(r.recv.map(|c| i64::from(c.0)))
                .bind(r.recv.map(|c| i64::from(c.1)))
                .bind(&r.collector)
                .bind(r.recv_epoch)
                .execute(&mut *tx)
                .await
                .map_err(sql("saving agents"))?;
        }
        tx.commit().await.map_err(sql("saving agents"))?;
        Ok(())
    }

    /// Loads every agent row (to restore counters and status at start).
    pub async fn load_agents(&self) -> Result<Vec<AgentRecord>> {
        const COLS: &str = "id, status, version, os_name, os_platform, os_version, arch, hostname, uname, config_sum, merged_sum";
        macro_rules! run {
            ($pool:expr, $ts:literal, $labels:literal) => {{
                let q = format!(
                    "SELECT {COLS}, {labels} AS labels, last_ip, transport, cipher, aes_iv, {fs} AS first_seen, {ls} AS last_seen, \
                     {lk} AS last_keepalive, {lc} AS last_control, recv_global, recv_local, recv_epoch, collector FROM agents",
                    labels = $labels,
                    fs = format!($ts, "first_seen"),
                    ls = format!($ts, "last_seen"),
                    lk = format!($ts, "last_keepalive"),
                    lc = format!($ts, "last_control"),
                );
                let rows = sqlx::query(&q).fetch_all($pool).await.map_err(sql("loading agents"))?;
                rows.iter()
                    .map(|row| -> std::result::Result<AgentRecord, sqlx::Error> {
                        let ts = |c: &str| -> std::result::Result<Option<i64>, sqlx::Error> {
                            Ok(row.try_get::<Option<String>, _>(c)?.as_deref().and_then(parse_micros))
                        };
                        let g: Option<i64> = row.try_get("recv_global")?;
                        let l: Option<i64> = row.try_get("recv_local")?;
                        Ok(AgentRecord {
                            id: row.try_get("id")?,
                            status: AgentStatus::parse(&row.try_get::<String, _>("status")?),
                            version: row.try_get("version")?,
                            os_name: row.try_get("os_name")?,
                            os_platform: row.try_get("os_platform")?,
                            os_version: row.try_get("os_version")?,
                            arch: row.try_get("arch")?,
                            hostname: row.try_get("hostname")?,
                            uname: row.try_get("uname")?,
                            config_sum: row.try_get("config_sum")?,
                            merged_sum: row.try_get("merged_sum")?,
                            labels: row
                                .try_get::<Option<String>, _>("labels")?
                                .and_then(|s| serde_json::from_str(&s).ok()),
                            last_ip: row.try_get("last_ip")?,
                            transport: row.try_get("transport")?,
                            cipher: row.try_get("cipher")?,
                            aes_iv: row.try_get("aes_iv")?,
                            first_seen: ts("first_seen")?,
                            last_seen: ts("last_seen")?,
                            last_keepalive: ts("last_keepalive")?,
                            last_control: ts("last_control")?,
                            recv: match (g, l) {
                                (Some(g), Some(l)) => Some((g.clamp(0, u32::MAX as i64) as u32, l.clamp(0, u32::MAX as i64) as u32)),
                                _ => None,
                            },
                            recv_epoch: row.try_get("recv_epoch")?,
                            collector: row.try_get("collector")?,
                        })
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(sql("reading agents"))?
            }};
        }
        Ok(match self {
            Store::Postgres(pool) => run!(
                pool,
                "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
                "labels::text"
            ),
            Store::Sqlite(pool) => run!(pool, "{}", "labels"),
        })
    }

    /// Forgets the stored receive counters of one agent, so that a
    /// reinstalled agent (whose counters restarted) is accepted again, and
    /// leaves a request that a running collector applies to its memory.
    /// Returns whether the agent exists.
    pub async fn reset_counters(&self, id: &str) -> Result<bool> {
        const RESET: &str = "UPDATE agents SET recv_global = NULL, recv_local = NULL, recv_epoch = recv_epoch + 1 WHERE id = $1";
        const REQUEST: &str =
            "INSERT INTO counter_resets (agent_id) VALUES ($1) ON CONFLICT (agent_id) DO UPDATE SET requested_at = excluded.requested_at";
        macro_rules! run {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await.map_err(sql("resetting counters"))?;
                let n = sqlx::query(RESET)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql("resetting counters"))?
                    .rows_affected();
                if n > 0 {
                    sqlx::query(REQUEST)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("resetting counters"))?;
                }
                tx.commit().await.map_err(sql("resetting counters"))?;
                n
            }};
        }
        let n = match self {
            Store::Postgres(pool) => run!(pool),
            Store::Sqlite(pool) => run!(pool),
        };
        Ok(n > 0)
    }

    /// The `reset-counters` requests made after `after` (Unix µs of the
    /// newest request already applied; `None`: all), and the newest request
    /// time. Requests stay for an hour (see
    /// [`Store::prune_counter_resets`]), so that every collector on the
    /// store applies them.
    pub async fn counter_resets_since(
        &self,
        after: Option<i64>,
    ) -> Result<(Vec<String>, Option<i64>)> {
        const PG_SELECT: &str = "SELECT agent_id, to_char(requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM counter_resets";
        const SQLITE_SELECT: &str = "SELECT agent_id, requested_at FROM counter_resets";
        let rows: Vec<(String, String)> = match self {
            Store::Postgres(pool) => sqlx::query_as(PG_SELECT).fetch_all(pool).await,
            Store::Sqlite(pool) => sqlx::query_as(SQLITE_SELECT).fetch_all(pool).await,
        }
        .map_err(sql("reading counter reset requests"))?;
        let mut newest = after;
        let mut ids = Vec::new();
        for (id, at) in rows {
            let Some(at) = parse_micros(&at) else {
                continue;
            };
            if after.is_none_or(|a| at > a) {
                ids.push(id);
            }
            newest = Some(newest.map_or(at, |n| n.max(at)));
        }
        Ok((ids, newest))
    }

    /// Deletes `reset-counters` requests older than an hour (a
    /// once-per-cluster job). Returns how many.
    pub async fn prune_counter_resets(&self) -> Result<u64> {
        const PG_PRUNE: &str =
            "DELETE FROM counter_resets WHERE requested_at < now() - interval '1 hour'";
        const SQLITE_PRUNE: &str = "DELETE FROM counter_resets WHERE requested_at < strftime('%Y-%m-%d %H:%M:%f', 'now', '-1 hour')";
        match self {
            Store::Postgres(pool) => sqlx::query(PG_PRUNE)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            Store::Sqlite(pool) => sqlx::query(SQLITE_PRUNE)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        }
        .map_err(sql("pruning counter reset requests"))
    }

    /// The persisted manager sender counter, if any.
    pub async fn load_sender_counter(&self) -> Result<Option<(u32, u32)>> {
        const Q: &str = "SELECT name, value FROM collector_state WHERE name IN ('sender_global', 'sender_local')";
        let rows: Vec<(String, i64)> = match self {
            Store::Postgres(pool) => sqlx::query_as(Q).fetch_all(pool).await,
            Store::Sqlite(pool) => sqlx::query_as(Q).fetch_all(pool).await,
        }
        .map_err(sql("loading the sender counter"))?;
        let get = |n: &str| {
            rows.iter()
                .find(|r| r.0 == n)
                .map(|r| r.1.clamp(0, u32::MAX as i64) as u32)
        };
        Ok(match (get("sender_global"), get("sender_local")) {
            (Some(g), Some(l)) => Some((g, l)),
            _ => None,
        })
    }

    /// Persists the manager sender counter.
    pub async fn save_sender_counter(&self, counter: (u32, u32)) -> Result<()> {
        const Q: &str = "INSERT INTO collector_state (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value";
        macro_rules! run {
            ($pool:expr) => {{
                let mut tx = $pool
                    .begin()
                    .await
                    .map_err(sql("saving the sender counter"))?;
                for (n, v) in [("sender_global", counter.0), ("sender_local", counter.1)] {
                    sqlx::query(Q)
                        .bind(n)
                        .bind(i64::from(v))
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("saving the sender counter"))?;
                }
                tx.commit()
                    .await
                    .map_err(sql("saving the sender counter"))?;
            }};
        }
        match self {
            Store::Postgres(pool) => run!(pool),
            Store::Sqlite(pool) => run!(pool),
        }
        Ok(())
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

/// When a counter write (epoch ?24, counters ?21:?22) replaces the stored
/// counters: a newer epoch, or the same epoch and newer counters.
pub(crate) const SQLITE_COUNTERS_NEWER: &str =
    "(?24 > recv_epoch OR (?24 = recv_epoch AND ?21 IS NOT NULL \
    AND (recv_global IS NULL OR ?21 > recv_global OR (?21 = recv_global AND ?22 > recv_local))))";

/// The PostgreSQL form of [`SQLITE_COUNTERS_NEWER`], for `a` (stored) and
/// `u` (written).
pub(crate) const PG_COUNTERS_NEWER: &str =
    "(u.recv_epoch > a.recv_epoch OR (u.recv_epoch = a.recv_epoch \
    AND u.recv_global IS NOT NULL AND (a.recv_global IS NULL \
    OR (u.recv_global, u.recv_local) > (a.recv_global, a.recv_local))))";

/// One `UPDATE … FROM UNNEST(…)` for all records: with thousands of agents
/// reporting every second this is one statement instead of thousands.
/// Timestamps go as integer microseconds (formatting them as text was a
/// visible cost with 10,000 agents).
async fn save_agents_pg(pool: &PgPool, records: &[AgentRecord]) -> Result<()> {
    fn col<T>(records: &[AgentRecord], f: impl Fn(&AgentRecord) -> T) -> Vec<T> {
        records.iter().map(f).collect()
    }
    // As for SQLite: the newest contact wins the descriptive columns, the
    // newest control message the status, counters only move forward.
    const Q: &str = "UPDATE agents AS a SET \
        status = CASE WHEN u.last_control IS NOT NULL AND (a.last_control IS NULL \
            OR 'epoch'::timestamptz + u.last_control * interval '1 microsecond' > a.last_control) THEN u.status ELSE a.status END, \
        version = CASE WHEN NEWER THEN u.version ELSE a.version END, \
        os_name = CASE WHEN NEWER THEN u.os_name ELSE a.os_name END, \
        os_platform = CASE WHEN NEWER THEN u.os_platform ELSE a.os_platform END, \
        os_version = CASE WHEN NEWER THEN u.os_version ELSE a.os_version END, \
        arch = CASE WHEN NEWER THEN u.arch ELSE a.arch END, \
        hostname = CASE WHEN NEWER THEN u.hostname ELSE a.hostname END, \
        uname = CASE WHEN NEWER THEN u.uname ELSE a.uname END, \
        config_sum = CASE WHEN NEWER THEN u.config_sum ELSE a.config_sum END, \
        merged_sum = CASE WHEN NEWER THEN u.merged_sum ELSE a.merged_sum END, \
        labels = CASE WHEN NEWER THEN u.labels::jsonb ELSE a.labels END, \
        last_ip = CASE WHEN NEWER THEN u.last_ip ELSE a.last_ip END, \
        transport = CASE WHEN NEWER THEN u.transport ELSE a.transport END, \
        cipher = CASE WHEN NEWER THEN u.cipher ELSE a.cipher END, \
        aes_iv = CASE WHEN NEWER THEN u.aes_iv ELSE a.aes_iv END, \
        collector = CASE WHEN NEWER THEN u.collector ELSE a.collector END, \
        first_seen = LEAST(a.first_seen, 'epoch'::timestamptz + u.first_seen * interval '1 microsecond'), \
        last_seen = GREATEST(a.last_seen, 'epoch'::timestamptz + u.last_seen * interval '1 microsecond'), \
        last_keepalive = GREATEST(a.last_keepalive, 'epoch'::timestamptz + u.last_keepalive * interval '1 microsecond'), \
        last_control = GREATEST(a.last_control, 'epoch'::timestamptz + u.last_control * interval '1 microsecond'), \
        recv_global = CASE WHEN COUNTERS THEN u.recv_global ELSE a.recv_global END, \
        recv_local = CASE WHEN COUNTERS THEN u.recv_local ELSE a.recv_local END, \
        recv_epoch = CASE WHEN COUNTERS THEN u.recv_epoch ELSE a.recv_epoch END \
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                    $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], \
                    $17::int8[], $18::int8[], $19::int8[], $20::int8[], $21::int8[], $22::int8[], $23::text[], $24::int8[]) \
             AS u(id, status, version, os_name, os_platform, os_version, arch, hostname, uname, config_sum, merged_sum, \
                  labels, last_ip, transport, cipher, aes_iv, first_seen, last_seen, last_keepalive, last_control, \
                  recv_global, recv_local, collector, recv_epoch) \
        WHERE a.id = u.id";
    static QUERY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let q = QUERY.get_or_init(|| {
        Q.replace(
            "NEWER",
            "(a.last_seen IS NULL OR 'epoch'::timestamptz + u.last_seen * interval '1 microsecond' >= a.last_seen)",
        )
        .replace("COUNTERS", PG_COUNTERS_NEWER)
    });
    sqlx::query(q)
        .bind(col(records, |r| r.id.clone()))
        .bind(col(records, |r| r.status.as_str().to_owned()))
        .bind(col(records, |r| r.version.clone()))
        .bind(col(records, |r| r.os_name.clone()))
        .bind(col(records, |r| r.os_platform.clone()))
        .bind(col(records, |r| r.os_version.clone()))
        .bind(col(records, |r| r.arch.clone()))
        .bind(col(records, |r| r.hostname.clone()))
        .bind(col(records, |r| r.uname.clone()))
        .bind(col(records, |r| r.config_sum.clone()))
        .bind(col(records, |r| r.merged_sum.clone()))
        .bind(col(records, |r| r.labels.as_ref().map(|l| l.to_string())))
        .bind(col(records, |r| r.last_ip.clone()))
        .bind(col(records, |r| r.transport.clone()))
        .bind(col(records, |r| r.cipher.clone()))
        .bind(col(records, |r| r.aes_iv.clone()))
        .bind(col(records, |r| r.first_seen))
        .bind(col(records, |r| r.last_seen))
        .bind(col(records, |r| r.last_keepalive))
        .bind(col(records, |r| r.last_control))
        .bind(col(records, |r| r.recv.map(|c| i64::from(c.0))))
        .bind(col(records, |r| r.recv.map(|c| i64::from(c.1))))
        .bind(col(records, |r| r.collector.clone()))
        .bind(col(records, |r| r.recv_epoch))
        .execute(pool)
        .await
        .map_err(sql("saving agents"))?;
    Ok(())
}

/// How long a PostgreSQL server may stay silent at connect.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connect error in one line, naming the cause and what to check.
fn connect_reason(e: &sqlx::Error) -> String {
    use std::io::ErrorKind;
    match e {
        sqlx::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => {
                "connection refused (is PostgreSQL running, and listening on that host and port?)"
                    .into()
            }
            ErrorKind::NotFound => format!("{io} (is the socket path right?)"),
            _ if io.to_string().contains("failed to lookup address")
                || io.to_string().contains("Name or service not known") =>
            {
                format!("cannot resolve the host name ({io})")
            }
            _ => io.to_string(),
        },
        sqlx::Error::Database(d) => match d.code().as_deref() {
            Some("3D000") => format!(
                "{} (create it, e.g. `createdb`, or fix the URL)",
                d.message()
            ),
            Some("28P01") | Some("28000") => {
                format!(
                    "authentication failed: {} (check the user and password in the URL)",
                    d.message()
                )
            }
            _ => d.message().to_owned(),
        },
        sqlx::Error::Tls(t) => format!("TLS failed: {t} (sslmode in the URL?)"),
        sqlx::Error::PoolTimedOut => "no connection within the timeout".into(),
        other => other.to_string(),
    }
}

/// Connection options from a `postgres://` URL. Without an explicit
/// `sslmode` (in the URL or `PGSSLMODE`), a server on a loopback address
/// or a Unix socket is reached without TLS: there it protects nothing and
/// would cost CPU for every byte of COPY data on both sides. Elsewhere the
/// libpq default (`prefer`) stays.
fn pg_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions> {
    let opts = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| StoreError::Url {
        url: redact(url),
        reason: e.to_string(),
    })?;
    // sqlx takes `sslmode` and `ssl-mode` in the query string.
    let in_url = url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|kv| matches!(kv.split('=').next(), Some("sslmode" | "ssl-mode")))
    });
    let explicit = in_url || std::env::var_os("PGSSLMODE").is_some();
    if !explicit && is_local_host(opts.get_host()) {
        return Ok(opts.ssl_mode(sqlx::postgres::PgSslMode::Disable));
    }
    Ok(opts)
}

/// Loopback addresses, `localhost` and Unix socket directories.
fn is_local_host(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The file of a `sqlite://FILE` or `sqlite:FILE` URL (query string
/// removed); `None` for other stores and `:memory:`.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let f = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let f = f.split('?').next().unwrap_or(f);
    (f != ":memory:" && !f.is_empty()).then(|| std::path::PathBuf::from(f))
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
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

    /// Reads one binary COPY field: `None` for NULL.
    fn field<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = b.split_at(4);
        let len = i32::from_be_bytes(len.try_into().unwrap());
        if len < 0 {
            *b = rest;
            return None;
        }
        let (f, rest) = rest.split_at(len as usize);
        *b = rest;
        Some(f)
    }

    #[test]
    fn copy_rows_binary_layout() {
        let row = EventRow {
            received_at: 946_684_800_000_001, // 2000-01-01 00:00:00.000001 UTC
            agent_id: "001".into(),
            agent_name: "a\tb".into(),
            source_ip: "127.0.0.1".parse().unwrap(),
            transport: "tcp",
            queue: 0,
            queue_name: "localfile",
            location: b"C:\\x".to_vec(),
            message: b"l1\nl2\0".to_vec(),
            global_counter: 4_000_000_000,
            local_counter: 2,
        };
        let rows = [row.clone(), row];
        let mut out = Vec::new();
        copy_rows(&rows, &mut out);
        let mut b = &out[..];
        assert_eq!(&b[..19], COPY_BINARY_HEADER);
        b = &b[19..];
        for _ in 0..2 {
            assert_eq!(&b[..2], &13i16.to_be_bytes());
            b = &b[2..];
            let mut f = || field(&mut b);
            assert_eq!(f(), Some(&1i64.to_be_bytes()[..]));
            assert_eq!(f(), Some(&b"001"[..]));
            assert_eq!(f(), Some(&b"a\tb"[..]));
            assert_eq!(f(), Some(&b"127.0.0.1"[..]));
            assert_eq!(f(), Some(&b"tcp"[..]));
            // NUL cannot be stored as text: U+FFFD.
            assert_eq!(f(), Some("\u{FFFD}".as_bytes()));
            assert_eq!(f(), Some(&b"localfile"[..]));
            assert_eq!(f(), Some(&b"C:\\x"[..]));
            assert_eq!(f(), Some("l1\nl2\u{FFFD}".as_bytes()));
            assert_eq!(
                f(),
                Some(&b"l1\nl2\0"[..]),
                "message_raw keeps the exact bytes"
            );
            assert_eq!(f(), None, "location_raw is NULL when the text is exact");
            assert_eq!(f(), Some(&4_000_000_000i64.to_be_bytes()[..]));
            assert_eq!(f(), Some(&2i32.to_be_bytes()[..]));
        }
        assert_eq!(b, &(-1i16).to_be_bytes());
    }

    #[test]
    fn local_servers_need_no_tls() {
        use sqlx::postgres::PgSslMode;
        let mode = |u: &str| format!("{:?}", pg_options(u).unwrap().get_ssl_mode());
        if std::env::var_os("PGSSLMODE").is_none() {
            assert_eq!(
                mode("postgres://u@127.0.0.1:5432/db"),
                format!("{:?}", PgSslMode::Disable)
            );
            assert_eq!(
                mode("postgres://u@localhost/db"),
                format!("{:?}", PgSslMode::Disable)
            );
            assert_eq!(
                mode("postgres://u@[::1]:5432/db"),
                format!("{:?}", PgSslMode::Disable)
            );
            assert_eq!(
                mode("postgres://u@db.example:5432/db"),
                format!("{:?}", PgSslMode::Prefer)
            );
        }
        assert_eq!(
            mode("postgres://u@127.0.0.1/db?sslmode=require"),
            format!("{:?}", PgSslMode::Require)
        );
        assert_eq!(
            mode("postgres://u@127.0.0.1/db?application_name=x&ssl-mode=verify-full"),
            format!("{:?}", PgSslMode::VerifyFull)
        );
        assert!(matches!(
            pg_options("postgres://u@h:notaport/db"),
            Err(StoreError::Url { .. })
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
