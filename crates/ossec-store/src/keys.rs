//! Agent keys (`agent_keys`): the store is the source of truth for which
//! agents may talk on port 1514.
//!
//! Owns every write to `agent_keys` and the matching `agents` rows: the
//! import of a `client.keys` file (origin `file`), a new agent from
//! enrollment or the CLI (with the ID allocation and the duplicate-name/IP
//! replacement, decided by the caller's policy), removal, and the change feed
//! that collectors poll (`rev`). Writers serialise on a table lock
//! (PostgreSQL) or `BEGIN IMMEDIATE` (SQLite), so revisions become visible
//! in the order they are given out and two enrollments never get one ID.

use std::collections::HashMap;

use sqlx::Row;

use crate::{parse_micros, sql, AgentStatus, Result, Store};

/// Where a key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Imported from `serve --keys FILE`; the file manages it.
    File,
    /// Made by enrollment on port 1515.
    Enrollment,
    /// Made by `ossec-collector agents add`.
    Cli,
}

impl KeyOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOrigin::File => "file",
            KeyOrigin::Enrollment => "enrollment",
            KeyOrigin::Cli => "cli",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "file" => KeyOrigin::File,
            "cli" => KeyOrigin::Cli,
            _ => KeyOrigin::Enrollment,
        }
    }
}

/// One `agent_keys` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub id: String,
    pub name: String,
    pub ip: String,
    pub key: String,
    pub groups: Vec<String>,
    pub origin: KeyOrigin,
    /// Unix microseconds.
    pub created_at: i64,
    pub removed_at: Option<i64>,
    pub rev: i64,
}

impl StoredKey {
    pub fn is_active(&self) -> bool {
        self.removed_at.is_none()
    }
}

/// One active line of a `client.keys` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    pub id: String,
    pub name: String,
    pub ip: String,
    pub key: String,
    /// 1-based line number, for messages.
    pub line: usize,
}

/// What an import changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    /// Lines left out, each with the reason (an ID that an enrolled agent holds).
    pub conflicts: Vec<String>,
}

impl ImportReport {
    pub fn changed_anything(&self) -> bool {
        self.added + self.changed + self.removed > 0
    }
}

/// A key to add (enrollment or CLI). The store picks the ID.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub ip: String,
    pub key: String,
    pub groups: Vec<String>,
    pub origin: KeyOrigin,
}

/// Why an active agent stands in the way of a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Ip,
    Name,
}

/// An active agent holding the requested name or IP, as the replacement
/// policy sees it.
#[derive(Debug, Clone)]
pub struct Holder {
    pub key: StoredKey,
    pub status: AgentStatus,
    /// Last valid message (Unix µs).
    pub last_seen: Option<i64>,
}

/// The result of [`Store::add_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    Added {
        key: StoredKey,
        /// IDs of the agents removed to make room (force replacement).
        replaced: Vec<String>,
    },
    /// The policy kept the holder; nothing was written.
    Refused(Conflict),
}

/// Agents accept IDs of at most 8 digits.
const MAX_AGENT_ID: i64 = 99_999_999;

const PG_COLS: &str = "k.id, k.name, k.ip, k.key, k.groups, k.origin, \
    to_char(k.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS created_at, \
    to_char(k.removed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS removed_at, k.rev";
const SQLITE_COLS: &str =
    "k.id, k.name, k.ip, k.key, k.groups, k.origin, k.created_at, k.removed_at, k.rev";
const PG_NOW: &str = "now()";
const SQLITE_NOW: &str = "strftime('%Y-%m-%d %H:%M:%f', 'now')";
const PG_MAX_ID: &str = "SELECT GREATEST(\
    (SELECT max(id::bigint) FROM agent_keys WHERE id ~ '^[0-9]{1,18}$'), \
    (SELECT max(id::bigint) FROM agents WHERE id ~ '^[0-9]{1,18}$'))";
const SQLITE_MAX_ID: &str = "SELECT max(v) FROM (\
    SELECT CAST(id AS INTEGER) AS v FROM agent_keys WHERE id <> '' AND length(id) <= 18 AND id NOT GLOB '*[^0-9]*' \
    UNION ALL SELECT CAST(id AS INTEGER) FROM agents WHERE id <> '' AND length(id) <= 18 AND id NOT GLOB '*[^0-9]*')";
const UPSERT_AGENT: &str = "INSERT INTO agents (id, name, registered_ip, in_keys) VALUES ($1, $2, $3, TRUE) \
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, registered_ip = excluded.registered_ip, in_keys = TRUE";

/// A new key for an ID: its stored receive counters no longer apply, and
/// a collector still holding the old ones (an older epoch) cannot write
/// them back.
const NEW_COUNTER_EPOCH: &str = "UPDATE agents SET recv_global = NULL, recv_local = NULL, recv_epoch = recv_epoch + 1 WHERE id = $1";

/// Decodes a row selected with `PG_COLS` / `SQLITE_COLS`.
macro_rules! decode_key {
    ($row:expr) => {{
        let row = $row;
        let groups: String = row.try_get("groups")?;
        StoredKey {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            ip: row.try_get("ip")?,
            key: row.try_get("key")?,
            groups: groups
                .split(',')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
            origin: KeyOrigin::parse(&row.try_get::<String, _>("origin")?),
            created_at: row
                .try_get::<Option<String>, _>("created_at")?
                .as_deref()
                .and_then(parse_micros)
                .unwrap_or(0),
            removed_at: row
                .try_get::<Option<String>, _>("removed_at")?
                .as_deref()
                .and_then(parse_micros),
            rev: row.try_get("rev")?,
        }
    }};
}

/// Selects keys with `$where` (and binds `$bind`), in both dialects.
macro_rules! select_keys {
    ($store:expr, $where:literal $(, $bind:expr)*) => {{
        match $store {
            Store::Postgres(pool) => {
                let q = format!("SELECT {PG_COLS} FROM agent_keys k {}", $where);
                let rows = sqlx::query(&q)$(.bind($bind))*.fetch_all(pool).await.map_err(sql("reading agent keys"))?;
                rows.iter()
                    .map(|r| -> std::result::Result<StoredKey, sqlx::Error> { Ok(decode_key!(r)) })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(sql("decoding agent keys"))?
            }
            Store::Sqlite(pool) => {
                let q = format!("SELECT {SQLITE_COLS} FROM agent_keys k {}", $where);
                let rows = sqlx::query(&q)$(.bind($bind))*.fetch_all(pool).await.map_err(sql("reading agent keys"))?;
                rows.iter()
                    .map(|r| -> std::result::Result<StoredKey, sqlx::Error> { Ok(decode_key!(r)) })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(sql("decoding agent keys"))?
            }
        }
    }};
}

/// Runs `$body` in a key-writing transaction `$tx`, with the dialect's SQL
/// fragments bound to `$cols`, `$now`, `$max_id`.
macro_rules! key_tx {
    ($store:expr, |$tx:ident, $cols:ident, $now:ident, $max_id:ident| $body:block) => {{
        match $store {
            Store::Postgres(pool) => {
                let mut $tx = pool.begin().await.map_err(sql("beginning a transaction"))?;
                sqlx::query("LOCK TABLE agent_keys IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *$tx)
                    .await
                    .map_err(sql("locking agent_keys"))?;
                let ($cols, $now, $max_id) = (PG_COLS, PG_NOW, PG_MAX_ID);
                $body
            }
            Store::Sqlite(pool) => {
                let mut $tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(sql("beginning a transaction"))?;
                let ($cols, $now, $max_id) = (SQLITE_COLS, SQLITE_NOW, SQLITE_MAX_ID);
                $body
            }
        }
    }};
}

/// The next revision, inside a key-writing transaction.
macro_rules! next_rev {
    ($tx:ident) => {{
        let r: i64 = sqlx::query_scalar("SELECT coalesce(max(rev), 0) + 1 FROM agent_keys")
            .fetch_one(&mut *$tx)
            .await
            .map_err(sql("reading the key revision"))?;
        r
    }};
}

macro_rules! mark_removed {
    ($tx:ident, $now:ident, $rev:expr, $id:expr) => {{
        let q = format!(
            "UPDATE agent_keys SET removed_at = {}, rev = $1 WHERE id = $2",
            $now
        );
        sqlx::query(&q)
            .bind($rev)
            .bind($id)
            .execute(&mut *$tx)
            .await
            .map_err(sql("removing an agent key"))?;
        sqlx::query("UPDATE agents SET in_keys = FALSE WHERE id = $1")
            .bind($id)
            .execute(&mut *$tx)
            .await
            .map_err(sql("removing an agent key"))?;
    }};
}

impl Store {
    /// Keys whose row changed after revision `after` (active and removed),
    /// oldest change first.
    pub async fn key_changes(&self, after: i64) -> Result<Vec<StoredKey>> {
        Ok(select_keys!(
            self,
            "WHERE k.rev > $1 ORDER BY k.rev, k.id",
            after
        ))
    }

    /// Every key row, removed ones too, by ID.
    pub async fn all_keys(&self) -> Result<Vec<StoredKey>> {
        Ok(select_keys!(self, "ORDER BY k.id"))
    }

    /// Makes the `file` keys match a `client.keys` file: new lines are added,
    /// changed lines re-keyed, lines gone removed. Keys of other origins are
    /// never touched; a line whose ID an enrolled or CLI agent holds is left
    /// out and reported.
    pub async fn import_file_keys(&self, file: &[FileKey]) -> Result<ImportReport> {
        key_tx!(self, |tx, cols, now, _max_id| {
            let q = format!("SELECT {cols} FROM agent_keys k");
            let rows = sqlx::query(&q)
                .fetch_all(&mut *tx)
                .await
                .map_err(sql("reading agent keys"))?;
            let mut stored: HashMap<String, StoredKey> = HashMap::with_capacity(rows.len());
            for r in &rows {
                let k =
                    (|| -> std::result::Result<StoredKey, sqlx::Error> { Ok(decode_key!(r)) })()
                        .map_err(sql("decoding agent keys"))?;
                stored.insert(k.id.clone(), k);
            }
            let rev = next_rev!(tx);
            let mut report = ImportReport::default();
            let mut in_file = std::collections::HashSet::with_capacity(file.len());
            for e in file {
                in_file.insert(e.id.as_str());
                let (write, is_new) = match stored.get(&e.id) {
                    None => (true, true),
                    Some(s) if s.origin != KeyOrigin::File && s.is_active() => {
                        report.conflicts.push(format!(
                            "line {}: agent ID {} belongs to the {} agent `{}`; the line is ignored (give it another ID, or remove that agent first)",
                            e.line,
                            e.id,
                            s.origin.as_str(),
                            s.name
                        ));
                        (false, false)
                    }
                    Some(s) => (
                        !s.is_active()
                            || s.origin != KeyOrigin::File
                            || s.name != e.name
                            || s.ip != e.ip
                            || s.key != e.key,
                        !s.is_active(),
                    ),
                };
                if !write {
                    continue;
                }
                // A new key (or name) for the ID: the agent counts afresh.
                let rekeyed = stored
                    .get(&e.id)
                    .is_none_or(|s| !s.is_active() || s.name != e.name || s.key != e.key);
                let q = format!(
                    "INSERT INTO agent_keys (id, name, ip, key, groups, origin, rev) VALUES ($1, $2, $3, $4, '', 'file', $5) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, ip = excluded.ip, key = excluded.key, \
                     origin = 'file', removed_at = NULL, rev = excluded.rev, \
                     created_at = CASE WHEN agent_keys.removed_at IS NULL THEN agent_keys.created_at ELSE {now} END"
                );
                sqlx::query(&q)
                    .bind(&e.id)
                    .bind(&e.name)
                    .bind(&e.ip)
                    .bind(&e.key)
                    .bind(rev)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql("importing the keys file"))?;
                sqlx::query(UPSERT_AGENT)
                    .bind(&e.id)
                    .bind(&e.name)
                    .bind(&e.ip)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql("importing the keys file"))?;
                if rekeyed {
                    sqlx::query(NEW_COUNTER_EPOCH)
                        .bind(&e.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("importing the keys file"))?;
                }
                if is_new {
                    report.added += 1;
                } else {
                    report.changed += 1;
                }
            }
            for s in stored.values() {
                if s.origin == KeyOrigin::File && s.is_active() && !in_file.contains(s.id.as_str())
                {
                    mark_removed!(tx, now, rev, &s.id);
                    report.removed += 1;
                }
            }
            if report.changed_anything() {
                tx.commit().await.map_err(sql("importing the keys file"))?;
            } else {
                tx.rollback()
                    .await
                    .map_err(sql("importing the keys file"))?;
            }
            Ok(report)
        })
    }

    /// Adds an agent with the next `%03d` ID after the largest numeric ID
    /// ever used (in `agent_keys` or `agents`). An active agent with the
    /// same IP (unless `any`) or name is first shown to `replace`: `true`
    /// removes it, `false` refuses the new agent. Agents of the keys file
    /// are never replaced (the file would bring them back). IP conflicts
    /// are decided before name conflicts, as Wazuh does.
    pub async fn add_key(
        &self,
        new: &NewKey,
        replace: impl Fn(Conflict, &Holder) -> bool,
    ) -> Result<AddOutcome> {
        key_tx!(self, |tx, cols, now, max_id| {
            let q = format!(
                "SELECT {cols}, a.status AS agent_status, a.last_seen_us FROM agent_keys k \
                 LEFT JOIN (SELECT id, status, {last_seen} AS last_seen_us FROM agents) a ON a.id = k.id \
                 WHERE k.removed_at IS NULL AND (k.name = $1 OR ($2 <> 'any' AND k.ip = $2))",
                last_seen = if now == PG_NOW {
                    "to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
                } else {
                    "last_seen"
                }
            );
            let rows = sqlx::query(&q)
                .bind(&new.name)
                .bind(&new.ip)
                .fetch_all(&mut *tx)
                .await
                .map_err(sql("looking for duplicate agents"))?;
            let mut holders = Vec::with_capacity(rows.len());
            for r in &rows {
                let h = (|| -> std::result::Result<Holder, sqlx::Error> {
                    Ok(Holder {
                        key: decode_key!(r),
                        status: AgentStatus::parse(
                            r.try_get::<Option<String>, _>("agent_status")?
                                .as_deref()
                                .unwrap_or(""),
                        ),
                        last_seen: r
                            .try_get::<Option<String>, _>("last_seen_us")?
                            .as_deref()
                            .and_then(parse_micros),
                    })
                })()
                .map_err(sql("decoding duplicate agents"))?;
                holders.push(h);
            }
            let conflict_of = |h: &Holder| {
                if new.ip != "any" && h.key.ip == new.ip {
                    Conflict::Ip
                } else {
                    Conflict::Name
                }
            };
            holders.sort_by_key(|h| conflict_of(h) != Conflict::Ip);
            let mut replaced = Vec::new();
            for h in &holders {
                let c = conflict_of(h);
                // The keys file manages its agents: a replaced one would
                // come back at the next import.
                if h.key.origin == KeyOrigin::File || !replace(c, h) {
                    tx.rollback().await.map_err(sql("adding an agent"))?;
                    return Ok(AddOutcome::Refused(c));
                }
                replaced.push(h.key.id.clone());
            }
            let rev = next_rev!(tx);
            for id in &replaced {
                mark_removed!(tx, now, rev, id);
            }
            let max: Option<i64> = sqlx::query_scalar(max_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(sql("choosing an agent ID"))?;
            let next = max.unwrap_or(0).saturating_add(1).max(1);
            if next > MAX_AGENT_ID {
                tx.rollback().await.map_err(sql("adding an agent"))?;
                return Err(crate::StoreError::Limit(format!(
                    "no agent ID left: the next would be {next}, agents accept at most 8 digits"
                )));
            }
            let id = format!("{next:03}");
            let q = "INSERT INTO agent_keys (id, name, ip, key, groups, origin, rev) VALUES ($1, $2, $3, $4, $5, $6, $7)";
            sqlx::query(q)
                .bind(&id)
                .bind(&new.name)
                .bind(&new.ip)
                .bind(&new.key)
                .bind(new.groups.join(","))
                .bind(new.origin.as_str())
                .bind(rev)
                .execute(&mut *tx)
                .await
                .map_err(sql("adding an agent"))?;
            sqlx::query(UPSERT_AGENT)
                .bind(&id)
                .bind(&new.name)
                .bind(&new.ip)
                .execute(&mut *tx)
                .await
                .map_err(sql("adding an agent"))?;
            let q = format!("SELECT {cols} FROM agent_keys k WHERE k.id = $1");
            let row = sqlx::query(&q)
                .bind(&id)
                .fetch_one(&mut *tx)
                .await
                .map_err(sql("adding an agent"))?;
            let key =
                (|| -> std::result::Result<StoredKey, sqlx::Error> { Ok(decode_key!(&row)) })()
                    .map_err(sql("adding an agent"))?;
            tx.commit().await.map_err(sql("adding an agent"))?;
            Ok(AddOutcome::Added { key, replaced })
        })
    }

    /// Removes an active agent key. Returns the removed row, or `None` when
    /// no active agent has this ID.
    pub async fn remove_key(&self, id: &str) -> Result<Option<StoredKey>> {
        key_tx!(self, |tx, cols, now, _max_id| {
            let q =
                format!("SELECT {cols} FROM agent_keys k WHERE k.id = $1 AND k.removed_at IS NULL");
            let row = sqlx::query(&q)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql("removing an agent key"))?;
            let Some(row) = row else {
                tx.rollback().await.map_err(sql("removing an agent key"))?;
                return Ok(None);
            };
            let key =
                (|| -> std::result::Result<StoredKey, sqlx::Error> { Ok(decode_key!(&row)) })()
                    .map_err(sql("removing an agent key"))?;
            let rev = next_rev!(tx);
            mark_removed!(tx, now, rev, id);
            tx.commit().await.map_err(sql("removing an agent key"))?;
            Ok(Some(key))
        })
    }
}
