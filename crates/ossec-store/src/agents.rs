//! The `agents` table and the collector's own persisted state: what the
//! collector learns from agents' control messages (status, version, OS,
//! counters), merged so that several writers never move it backwards;
//! `reset-counters` requests; the manager's sender counter.

use sqlx::postgres::PgPool;
use sqlx::Row;

use crate::{format_micros, parse_micros, sql, Result, Store};

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

/// A timestamp column's text, from Unix µs.
fn opt_ts(v: Option<i64>) -> Option<String> {
    v.map(format_micros)
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
