//! What `events.data` costs, measured in one run: the collector's CPU to
//! encode a batch for COPY with and without `data` (the parsing of JSON,
//! Windows XML and syslog headers happens there), per event kind, and
//! PostgreSQL's CPU per row to take the same rows without `data`, with it,
//! and with it plus a GIN index on `data`.
//!
//!     cargo run --release -p ossec-collector --example json_cost -- [ROWS]
//!
//! Uses `DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres)
//! to create and drop a database of its own. PostgreSQL's CPU is read from
//! `/proc/<backend pid>/stat`, so the server must run on this machine.
//! Prints a table and, last, one JSON object.

use std::time::Instant;

use ossec_agent_sim::events::{build, EventCtx, EventKind, Mix};
use ossec_agent_sim::Flavor;
use ossec_store::{copy_rows, EventOptions, EventRow, Store};
use rand::{rngs::SmallRng, SeedableRng};
use sqlx::Connection;

fn rows_of(kind: Option<EventKind>, n: usize) -> Vec<EventRow> {
    let mut rng = SmallRng::seed_from_u64(7);
    let mix = Mix::default();
    let now = ossec_store::now_micros();
    let ctx = EventCtx {
        name: "web-01",
        key_ip: "any",
        flavor: Flavor::Wazuh,
        now_us: now,
        stamp: false,
    };
    let mut out = String::new();
    (0..n)
        .map(|i| {
            let k = kind.unwrap_or_else(|| mix.pick(&mut rng, Flavor::Wazuh));
            build(k, &ctx, &mut rng, &mut out);
            // `queue:location:message`
            let mut parts = out.splitn(3, ':');
            let q = parts.next().unwrap_or("1");
            let loc = parts.next().unwrap_or("");
            let msg = parts.next().unwrap_or("");
            EventRow {
                received_at: now + i as i64,
                agent_id: "001".into(),
                agent_name: "web-01".into(),
                source_ip: "10.0.0.7".parse().unwrap(),
                transport: "tcp",
                queue: q.as_bytes().first().copied().unwrap_or(b'1'),
                queue_name: "localfile",
                location: loc.as_bytes().to_vec(),
                message: msg.as_bytes().to_vec(),
                global_counter: i as u32,
                local_counter: (i % 9999) as u32,
            }
        })
        .collect()
}

/// Best µs per row of encoding `rows` for COPY, over 5 rounds.
fn encode_us(rows: &[EventRow], data: bool) -> f64 {
    let mut buf = Vec::with_capacity(rows.len() * 1024);
    let mut best = f64::MAX;
    for _ in 0..5 {
        buf.clear();
        let t = Instant::now();
        copy_rows(rows, EventOptions { data }, &mut buf);
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / rows.len() as f64);
    }
    best
}

/// utime + stime of a process, in µs.
fn cpu_us(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (t(11) + t(12)) / tick * 1e6
}

/// PostgreSQL's CPU µs per row and rows/s for one COPY of `buf`, best of 3
/// (the table emptied between rounds).
async fn pg_copy(conn: &mut sqlx::PgConnection, buf: &[u8], rows: usize) -> (f64, f64) {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let mut best = (f64::MAX, 0.0);
    for _ in 0..3 {
        sqlx::query("TRUNCATE events")
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query("CHECKPOINT").execute(&mut *conn).await.ok();
        let c0 = cpu_us(pid);
        let t = Instant::now();
        let mut copy = conn
            .copy_in_raw(
                "COPY events (received_at, agent_id, agent_name, source_ip, transport, queue, queue_name, location, message, message_raw, location_raw, global_counter, local_counter, data) FROM STDIN WITH (FORMAT binary)",
            )
            .await
            .unwrap();
        for chunk in buf.chunks(256 * 1024) {
            copy.send(chunk).await.unwrap();
        }
        copy.finish().await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        let cpu = (cpu_us(pid) - c0) / rows as f64;
        if cpu < best.0 {
            best = (cpu, rows as f64 / secs);
        }
    }
    best
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut json = serde_json::Map::new();
    println!("collector: encoding for COPY (µs/event, best of 5, {n} events each)");
    println!(
        "{:<14} {:>10} {:>10} {:>10}",
        "kind", "no data", "data", "data cost"
    );
    let mut enc = serde_json::Map::new();
    for (name, kind) in [
        ("mix", None),
        ("syslog", Some(EventKind::Syslog)),
        ("syscheck", Some(EventKind::Syscheck)),
        ("eventchannel", Some(EventKind::EventChannel)),
        ("rootcheck", Some(EventKind::Rootcheck)),
    ] {
        let rows = rows_of(kind, n);
        let (off, on) = (encode_us(&rows, false), encode_us(&rows, true));
        println!("{name:<14} {off:>10.3} {on:>10.3} {:>10.3}", on - off);
        enc.insert(
            name.into(),
            serde_json::json!({"no_data_us": off, "data_us": on, "data_cost_us": on - off}),
        );
    }
    json.insert("encode_us_per_event".into(), enc.into());

    // PostgreSQL: the mix, three ways, on a database of our own.
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("oc_json_cost_{}", std::process::id());
    let mut a = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut a)
        .await
        .unwrap();
    let base = &admin[..admin.rfind('/').unwrap()];
    let url = format!("{base}/{db}");
    let store = Store::connect(&url).await.unwrap();
    store.close().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let rows = rows_of(None, n);
    let mut no_data = Vec::new();
    copy_rows(&rows, EventOptions { data: false }, &mut no_data);
    let mut with_data = Vec::new();
    copy_rows(&rows, EventOptions { data: true }, &mut with_data);
    let off = pg_copy(&mut conn, &no_data, n).await;
    let on = pg_copy(&mut conn, &with_data, n).await;
    sqlx::query("CREATE INDEX events_data_gin ON events USING GIN (data)")
        .execute(&mut conn)
        .await
        .unwrap();
    let gin = pg_copy(&mut conn, &with_data, n).await;
    sqlx::query("DROP INDEX events_data_gin")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("CREATE INDEX events_data_gin ON events USING GIN (data jsonb_path_ops)")
        .execute(&mut conn)
        .await
        .unwrap();
    let gin_path = pg_copy(&mut conn, &with_data, n).await;
    println!("\nPostgreSQL: binary COPY of the mix ({n} rows, best of 3)");
    println!("{:<26} {:>12} {:>12}", "case", "CPU µs/row", "rows/s");
    let mut pg = serde_json::Map::new();
    for (name, (cpu, rate)) in [
        ("no_data", off),
        ("data", on),
        ("data_gin", gin),
        ("data_gin_jsonb_path_ops", gin_path),
    ] {
        println!("{name:<26} {cpu:>12.2} {rate:>12.0}");
        pg.insert(
            name.into(),
            serde_json::json!({"cpu_us_per_row": cpu, "rows_per_s": rate}),
        );
    }
    json.insert("postgres_copy".into(), pg.into());
    json.insert("rows".into(), n.into());
    drop(conn);
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut a)
        .await
        .ok();
    println!("{}", serde_json::Value::Object(json));
}
