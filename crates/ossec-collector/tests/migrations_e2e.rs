//! Schema upgrades on a real PostgreSQL: a database made by an earlier
//! release (the migrations before `0003_agent_id_collation`) with events
//! and agents in it is opened by this release's store, which must apply the
//! new migration without losing or changing a row, and leave agent IDs
//! byte-ordered (`COLLATE "C"`) with the "one agent over a time range" index
//! usable by plain queries and joins.

mod common;

use std::collections::BTreeMap;

use common::{insert_old_schema as insert_old, repo, Backend, TestDb};
use ossec_store::{EventRow, Store};
use sqlx::migrate::Migrator;
use sqlx::Row;

/// The version that introduced `COLLATE "C"` for agent IDs.
const COLLATION_MIGRATION: i64 = 3;

fn row(i: u32, agent: &str) -> EventRow {
    EventRow {
        received_at: 1_795_995_692_000_000 + i64::from(i) * 1_000,
        agent_id: agent.into(),
        agent_name: format!("host-{agent}").into(),
        source_ip: "10.0.0.7".parse().unwrap(),
        transport: "tcp",
        queue: b'1',
        queue_name: "localfile",
        location: b"/var/log/auth.log".to_vec(),
        message: format!("sshd[{i}]: Failed password for root").into_bytes(),
        global_counter: i,
        local_counter: i % 9997,
    }
}

async fn collation(pool: &sqlx::PgPool, table: &str, column: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT collation_name::text FROM information_schema.columns WHERE table_name = $1 AND column_name = $2",
    )
    .bind(table)
    .bind(column)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn upgrade_to_byte_ordered_agent_ids_keeps_every_row() {
    let db = TestDb::new(Backend::Postgres).await;

    // 1. The schema of the release before: every migration older than 0003.
    let mut old = Migrator::new(repo("migrations/postgres")).await.unwrap();
    let all = old.migrations.len();
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version < COLLATION_MIGRATION)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert!(
        old.migrations.len() < all,
        "migrations/postgres has no version {COLLATION_MIGRATION}"
    );
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    old.run(&pool).await.unwrap();
    assert_eq!(collation(&pool, "events", "agent_id").await, None);
    for (id, name) in [("001", "web-1"), ("002", "db-1"), ("010", "mail-1")] {
        sqlx::query("INSERT INTO agents (id, name, registered_ip) VALUES ($1, $2, 'any')")
            .bind(id)
            .bind(name)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO counter_resets (agent_id) VALUES ('002')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    // Events written by the old schema, through the same COPY path.
    let old_rows: Vec<EventRow> = (0..600)
        .map(|i| row(i, ["001", "002", "010"][(i % 3) as usize]))
        .collect();
    {
        let store = connect_at(&db.url, COLLATION_MIGRATION - 1).await;
        let Store::Postgres(pool) = &store else {
            unreachable!()
        };
        insert_old(pool, &old_rows).await;
        store.close().await;
    }

    // 2. This release opens the database: 0003 is applied.
    let store = Store::connect(&db.url).await.unwrap();
    let Store::Postgres(pool) = &store else {
        panic!("expected PostgreSQL")
    };
    for (table, column) in [
        ("events", "agent_id"),
        ("agents", "id"),
        ("counter_resets", "agent_id"),
    ] {
        assert_eq!(
            collation(pool, table, column).await.as_deref(),
            Some("C"),
            "{table}.{column}"
        );
    }
    assert!(schema_version(pool).await >= COLLATION_MIGRATION);

    // Every row is still there, unchanged, and new rows go in alongside.
    let new_rows = [row(600, "001"), row(601, "010")];
    store.insert_events(&new_rows).await.unwrap();
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in old_rows.iter().chain(&new_rows) {
        let e = expected.entry(r.agent_id.to_string()).or_default();
        e.0 += 1;
        e.1 += i64::from(r.global_counter);
    }
    let per_agent: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT agent_id, count(*), sum(global_counter)::bigint FROM events GROUP BY agent_id ORDER BY agent_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        per_agent,
        expected
            .into_iter()
            .map(|(id, (n, sum))| (id, n, sum))
            .collect::<Vec<_>>()
    );
    let m: String =
        sqlx::query("SELECT message FROM events WHERE agent_id = '002' AND global_counter = 301")
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
    assert_eq!(m, "sshd[301]: Failed password for root");

    // Joins with `agents` and the pending counter reset still match.
    let joined: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e JOIN agents a ON a.id = e.agent_id WHERE a.name = 'mail-1'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(joined, 201);
    assert_eq!(
        store.counter_resets_since(None).await.unwrap().0,
        vec!["002".to_string()]
    );

    // "One agent over a time range" still uses its index.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM events WHERE agent_id = '010' AND received_at >= '2026-12-01' ORDER BY received_at",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(
        plan.iter()
            .any(|l| l.contains("agent_time") || l.contains("agent_id_received_at_idx")),
        "plan does not use the (agent_id, received_at) index: {plan:#?}"
    );
    drop(conn);
    store.close().await;
}

/// The newest migration applied to the database.
async fn schema_version(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A store on a database whose schema is at `version`: the old release's
/// `Store::connect` would have run only its own migrations; this test opens
/// the pool itself so that the newer embedded migrations are not applied yet.
async fn connect_at(url: &str, version: i64) -> Store {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    assert_eq!(schema_version(&pool).await, version);
    Store::Postgres(pool)
}
