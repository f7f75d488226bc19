//! Daily partitions and retention on real databases: the upgrade of an
//! unpartitioned `events` table (migrations 0001–0007) that keeps every row
//! without rewriting it, partitions created ahead and the default
//! partition, rows of a day without a partition moved into a new one,
//! retention over rows spread across ten days (PostgreSQL drops partitions,
//! SQLite deletes in batches), and two collectors running the jobs at once.

mod common;

use common::{insert_old_schema as insert_old, repo, Backend, TestDb};
use ossec_store::{EventRow, Partition, Store};
use sqlx::migrate::Migrator;

const DAY_US: i64 = 86_400_000_000;
/// The first migration of the partitioned schema.
const PARTITIONED: i64 = 8;

fn row(i: u32, at: i64) -> EventRow {
    EventRow {
        received_at: at,
        agent_id: format!("{:03}", i % 7).into(),
        agent_name: "web-01".into(),
        source_ip: "10.0.0.7".parse().unwrap(),
        transport: "tcp",
        queue: b'1',
        queue_name: "localfile",
        location: b"/var/log/auth.log".to_vec(),
        message: format!(
            "Nov 29 10:00:01 web-01 sshd[{i}]: Failed password for root from 203.0.113.9 port 4242 ssh2"
        )
        .into_bytes(),
        global_counter: i,
        local_counter: i % 9999,
    }
}

/// The start of today (UTC) in Unix µs.
fn today_us() -> i64 {
    let now = ossec_store::now_micros();
    now - now.rem_euclid(DAY_US)
}

/// `YYYYMMDD` of a time (UTC).
fn ymd(at_us: i64) -> String {
    ossec_store::format_micros(at_us)[..10].replace('-', "")
}

fn day_name(at_us: i64) -> String {
    format!("events_{}", ymd(at_us))
}

fn pg(store: &Store) -> &sqlx::PgPool {
    match store {
        Store::Postgres(p) => p,
        Store::Sqlite(_) => panic!("expected PostgreSQL"),
    }
}

async fn scalar_i64(pool: &sqlx::PgPool, q: &str) -> i64 {
    sqlx::query_scalar(q).fetch_one(pool).await.unwrap()
}

async fn partition_names(store: &Store) -> Vec<String> {
    store
        .event_partitions()
        .await
        .unwrap()
        .iter()
        .map(Partition::name)
        .collect()
}

#[tokio::test]
async fn upgrade_attaches_the_old_table_without_rewriting_it() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut old = Migrator::new(repo("migrations/postgres")).await.unwrap();
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version < PARTITIONED)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    old.run(&pool).await.unwrap();
    // 900 rows over the last 9 days, written as the old release did.
    let t0 = today_us() - 9 * DAY_US;
    let rows: Vec<EventRow> = (0..900)
        .map(|i| row(i, t0 + i64::from(i) * (DAY_US / 100)))
        .collect();
    insert_old(&pool, &rows).await;
    // A row from a clock three days ahead, and a read-only role of the
    // security team.
    insert_old(&pool, &[row(5000, today_us() + 3 * DAY_US + 60_000_000)]).await;
    let role = format!("oc_reader_{}", std::process::id());
    sqlx::query(&format!("CREATE ROLE {role}"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("GRANT SELECT ON events TO {role}"))
        .execute(&pool)
        .await
        .unwrap();
    let before: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT id, global_counter, message FROM events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let filenode: i64 = scalar_i64(&pool, "SELECT pg_relation_filenode('events')::bigint").await;
    pool.close().await;

    let store = Store::connect(&db.url).await.unwrap();
    let pool = pg(&store);
    assert_eq!(
        scalar_i64(
            pool,
            "SELECT count(*) FROM pg_class WHERE relname = 'events' AND relkind = 'p'"
        )
        .await,
        1,
        "events is partitioned"
    );
    let names = partition_names(&store).await;
    let tomorrow = today_us() + DAY_US;
    let legacy = format!("events_upto_{}", ymd(tomorrow));
    assert!(names.contains(&legacy), "{names:?}");
    assert!(names.contains(&"events_default".to_string()), "{names:?}");
    // Today is in the old table's range; the day partitions start after it.
    for d in 1..=2 {
        assert!(
            names.contains(&day_name(today_us() + d * DAY_US)),
            "{names:?}"
        );
    }
    // Not rewritten: the old table's file is the partition's file.
    let after_node: i64 = scalar_i64(
        pool,
        &format!("SELECT pg_relation_filenode('{legacy}')::bigint"),
    )
    .await;
    assert_eq!(after_node, filenode, "the upgraded table was rewritten");
    // Every row, unchanged, ids included.
    let after: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT id, global_counter, message FROM events ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(after, before);
    // The future row left the old table (whose bound stays tomorrow) for
    // events_default (no partition that far ahead yet), and the partition
    // job gives it its day's partition.
    let where_is = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT tableoid::regclass::text FROM events WHERE global_counter = 5000",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    assert_eq!(where_is().await, "events_default");
    store
        .maintain_partitions(ossec_store::now_micros(), 2, 0)
        .await
        .unwrap();
    assert_eq!(where_is().await, day_name(today_us() + 3 * DAY_US));
    // The grant moved to the new table.
    let can: bool = sqlx::query_scalar(&format!(
        "SELECT has_table_privilege('{role}', 'events', 'SELECT')"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(can, "SELECT on events granted to {role} was lost");
    // New rows continue the ids and land in a partition; data is filled.
    let max_id = before.last().unwrap().0;
    store
        .insert_events(&[
            row(1000, ossec_store::now_micros()),
            row(1001, tomorrow + 60_000_000),
        ])
        .await
        .unwrap();
    let new: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, tableoid::regclass::text FROM events WHERE global_counter IN (1000, 1001) ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        new.iter().all(|(id, _)| *id > max_id),
        "{new:?} vs {max_id}"
    );
    assert_eq!(new[0].1, legacy);
    assert_eq!(new[1].1, day_name(tomorrow));
    // A plain id lookup and the time-range index still work.
    assert_eq!(
        scalar_i64(
            pool,
            &format!("SELECT count(*) FROM events WHERE id = {}", before[5].0)
        )
        .await,
        1
    );
    // Roles belong to the whole server: drop this one.
    sqlx::query(&format!("DROP OWNED BY {role}"))
        .execute(pool)
        .await
        .unwrap();
    store.close().await;
    let admin = sqlx::PgPool::connect(&common::admin_url()).await.unwrap();
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}

#[tokio::test]
async fn fresh_schema_has_today_ahead_and_a_default_partition() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = Store::connect(&db.url).await.unwrap();
    let names = partition_names(&store).await;
    for d in 0..=2 {
        assert!(
            names.contains(&day_name(today_us() + d * DAY_US)),
            "{names:?}"
        );
    }
    assert!(names.contains(&"events_default".to_string()));
    assert!(
        !names.iter().any(|n| n.starts_with("events_upto_")),
        "{names:?}"
    );

    // Ahead of a later "now": the missing days are created, twice is a no-op.
    let later = ossec_store::now_micros() + 5 * DAY_US;
    let r = store.maintain_partitions(later, 3, 0).await.unwrap();
    assert_eq!(r.created.len(), 4, "{r:?}");
    let again = store.maintain_partitions(later, 3, 0).await.unwrap();
    assert!(again.created.is_empty(), "{again:?}");

    // A row of a day without partition goes to the default partition (the
    // insert never fails), and the next run gives that day a partition
    // with the row moved into it.
    let far = today_us() + 30 * DAY_US + 3_600_000_000;
    store
        .insert_events(&[row(1, far), row(2, far + 1)])
        .await
        .unwrap();
    let pool = pg(&store);
    assert_eq!(
        scalar_i64(pool, "SELECT count(*) FROM events_default").await,
        2
    );
    let r = store
        .maintain_partitions(ossec_store::now_micros(), 2, 0)
        .await
        .unwrap();
    assert_eq!(r.created, vec![day_name(far)]);
    assert_eq!(r.moved_rows, 2);
    assert_eq!(
        scalar_i64(pool, "SELECT count(*) FROM events_default").await,
        0
    );
    assert_eq!(
        scalar_i64(pool, &format!("SELECT count(*) FROM {}", day_name(far))).await,
        2
    );
    // The moved partition has the same indexes as the others.
    assert_eq!(
        scalar_i64(
            pool,
            &format!(
                "SELECT count(*) FROM pg_indexes WHERE tablename = '{}'",
                day_name(far)
            )
        )
        .await,
        3,
        "primary key, BRIN and (agent_id, received_at)"
    );
    store.close().await;
}

#[tokio::test]
async fn retention_drops_whole_old_days_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = Store::connect(&db.url).await.unwrap();
    let now = ossec_store::now_micros();
    // 100 rows on each of the last 10 days (day 0 = today).
    let rows: Vec<EventRow> = (0..1000u32)
        .map(|i| {
            let day = i64::from(i / 100);
            row(
                i,
                today_us() - day * DAY_US + i64::from(i % 100) * 60_000_000,
            )
        })
        .collect();
    store.insert_events(&rows).await.unwrap();
    // The past days land in the default partition, then get their own.
    let r = store.maintain_partitions(now, 2, 0).await.unwrap();
    assert_eq!(r.moved_rows, 900, "days -1 … -9: {r:?}");
    assert_eq!(r.created.len(), 9);
    let pool = pg(&store);
    assert_eq!(
        scalar_i64(pool, "SELECT count(*) FROM events_default").await,
        0
    );

    let r = store.apply_retention(now, 3).await.unwrap();
    // A day partition goes when it ends on or before the start of the
    // cutoff's day (the cutoff is now - 3 days): days -4 … -9. Day -3
    // holds rows on both sides of the cutoff and stays.
    let cutoff_day_start = (now - 3 * DAY_US) - (now - 3 * DAY_US).rem_euclid(DAY_US);
    let expected_dropped: Vec<String> = (1..10)
        .map(|d| today_us() - d * DAY_US)
        .filter(|start| start + DAY_US <= cutoff_day_start)
        .map(day_name)
        .collect();
    let mut dropped = r.dropped.clone();
    dropped.sort();
    let mut exp = expected_dropped.clone();
    exp.sort();
    assert_eq!(dropped, exp, "{r:?}");
    assert_eq!(r.deleted_rows, 0);
    let left = scalar_i64(pool, "SELECT count(*) FROM events").await;
    assert_eq!(left, 1000 - 100 * expected_dropped.len() as i64);
    // Nothing kept is older than the oldest kept partition's day.
    let oldest: i64 = scalar_i64(
        pool,
        "SELECT (extract(epoch FROM min(received_at)) * 1000000)::bigint FROM events",
    )
    .await;
    assert!(oldest >= cutoff_day_start - DAY_US);
    // Idempotent.
    assert!(store
        .apply_retention(now, 3)
        .await
        .unwrap()
        .dropped
        .is_empty());
    store.close().await;
}

#[tokio::test]
async fn two_collectors_run_the_partition_jobs_at_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let a = Store::connect(&db.url).await.unwrap();
    let b = Store::connect(&db.url).await.unwrap();
    let now = ossec_store::now_micros();
    let past: Vec<EventRow> = (0..300u32)
        .map(|i| row(i, today_us() - (1 + i64::from(i % 3)) * DAY_US))
        .collect();
    a.insert_events(&past).await.unwrap();
    for round in 0..3 {
        let later = now + round * 10 * DAY_US;
        let (ra, rb) = tokio::join!(
            a.maintain_partitions(later, 5, 0),
            b.maintain_partitions(later, 5, 0)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        // Each partition is created by exactly one of them.
        for n in &ra.created {
            assert!(!rb.created.contains(n), "{n} created twice");
        }
        if round == 0 {
            assert_eq!(ra.moved_rows + rb.moved_rows, 300);
        }
    }
    let (ra, rb) = tokio::join!(a.apply_retention(now, 1), b.apply_retention(now, 1));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    for n in &ra.dropped {
        assert!(!rb.dropped.contains(n), "{n} dropped twice");
    }
    assert!(!ra.dropped.is_empty() || !rb.dropped.is_empty());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn retention_deletes_old_rows_on_sqlite_in_batches() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = Store::connect(&db.url).await.unwrap();
    let now = ossec_store::now_micros();
    // 1,500 rows on each of the last 10 days: more than one delete batch.
    let rows: Vec<EventRow> = (0..15_000u32)
        .map(|i| {
            row(
                i,
                now - i64::from(i / 1500) * DAY_US - i64::from(i % 1500) * 1_000_000,
            )
        })
        .collect();
    for chunk in rows.chunks(5000) {
        store.insert_events(chunk).await.unwrap();
    }
    let cutoff = now - 3 * DAY_US;
    let older = rows.iter().filter(|r| r.received_at < cutoff).count() as u64;
    // While retention deletes, events keep being written.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            let started = std::time::Instant::now();
            let mut worst = std::time::Duration::ZERO;
            while started.elapsed() < std::time::Duration::from_millis(800) {
                let t = std::time::Instant::now();
                store
                    .insert_events(&[row(100_000 + n, ossec_store::now_micros())])
                    .await
                    .unwrap();
                worst = worst.max(t.elapsed());
                n += 1;
            }
            (n, worst)
        })
    };
    let r = store.apply_retention(now, 3).await.unwrap();
    let (written, worst) = writer.await.unwrap();
    assert_eq!(r.deleted_rows, older, "{r:?}");
    assert!(r.dropped.is_empty());
    let Store::Sqlite(pool) = &store else {
        unreachable!()
    };
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left as u64, 15_000 - older + u64::from(written));
    assert!(written > 0);
    assert!(
        worst < std::time::Duration::from_secs(2),
        "an insert waited {worst:?} behind the deletes"
    );
    store.close().await;
}

/// `serve --retention-days 3` on a store holding ten days of events: at
/// start, the collector that holds the jobs lock removes what is older (and
/// on PostgreSQL first gives the past days their partitions), logs and
/// counts it, while it keeps taking events.
async fn serve_applies_retention(backend: Backend) {
    use std::sync::atomic::Ordering::Relaxed;
    let db = TestDb::new(backend).await;
    let now = ossec_store::now_micros();
    {
        let store = Store::connect(&db.url).await.unwrap();
        let rows: Vec<EventRow> = (0..1000u32)
            .map(|i| {
                row(
                    i,
                    now - i64::from(i / 100) * DAY_US - i64::from(i % 100) * 1_000_000,
                )
            })
            .collect();
        store.insert_events(&rows).await.unwrap();
        store.close().await;
    }
    let c = common::start(&common::loopback_vector_keys(), &db, |a| {
        a.retention_days = Some(3);
    })
    .await;
    let m = c.running.metrics.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let removed = || {
        m.retention_rows_deleted.load(Relaxed) + 100 * m.retention_partitions_dropped.load(Relaxed)
    };
    while removed() < 600 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let left = common::count(&c.running.store, "SELECT count(*) FROM events").await;
    match backend {
        Backend::Sqlite => {
            // Rows older than exactly 3 days: days 3 (partly: the later
            // part of day 3's rows are 3 days + i s old) … 9.
            assert!(m.retention_rows_deleted.load(Relaxed) >= 600);
            assert_eq!(left, 1000 - m.retention_rows_deleted.load(Relaxed) as i64);
        }
        Backend::Postgres => {
            // The past days within the retention got partitions (their rows
            // moved out of events_default); older rows were deleted from
            // the default partition; the day of the cutoff is kept whole.
            assert!(
                m.partitions_created.load(Relaxed) >= 3,
                "past days got partitions"
            );
            assert!(m.partition_rows_moved.load(Relaxed) >= 200);
            assert!(m.retention_rows_deleted.load(Relaxed) >= 500);
            assert!((300..=400).contains(&left), "{left} rows left");
            assert_eq!(
                common::count(
                    &c.running.store,
                    "SELECT count(*) FROM events WHERE received_at < now() - interval '4 days' - interval '10 minutes'"
                )
                .await,
                0
            );
            assert_eq!(
                common::count(&c.running.store, "SELECT count(*) FROM events_default").await,
                0
            );
        }
    }
    let recent = common::count(
        &c.running.store,
        "SELECT count(*) FROM events WHERE global_counter < 300",
    )
    .await;
    assert_eq!(recent, 300, "the last three days are kept");
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_applies_retention_on_sqlite() {
    serve_applies_retention(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_applies_retention_on_postgres() {
    serve_applies_retention(Backend::Postgres).await;
}

/// Partition changes while batches are being written: every COPY
/// succeeds (none is chosen as a deadlock victim, none fails for a missing
/// partition) and every row is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_jobs_do_not_disturb_concurrent_copies() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = Store::connect(&db.url).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut written = 0u64;
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Today, and days ahead that have no partition yet (their
                // rows go to events_default and are moved by the jobs).
                let batch: Vec<EventRow> = (0..200)
                    .map(|k| {
                        i += 1;
                        row(i, today_us() + i64::from(k % 20) * DAY_US + 1_000)
                    })
                    .collect();
                store.insert_events(&batch).await.unwrap();
                written += batch.len() as u64;
            }
            written
        })
    };
    let now = ossec_store::now_micros();
    for round in 0..8 {
        store
            .maintain_partitions(now + round * DAY_US, 2 + round as u32, 0)
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    let pool = pg(&store);
    assert_eq!(
        scalar_i64(pool, "SELECT count(*) FROM events").await as u64,
        written
    );
    assert!(written > 0);
    store.close().await;
}
