//! Large event batches through the store into real PostgreSQL and SQLite:
//! PostgreSQL's binary COPY is sent in 256 KiB pieces, so a batch of
//! thousands of rows of every size (up to the 64 KiB limit, invalid UTF-8,
//! NUL, IPv6 sources, any queue byte) must arrive whole and exact.

mod common;

use std::sync::Arc;

use common::{Backend, TestDb};
use ossec_store::{EventRow, Store};
use sqlx::Row;

fn rows() -> Vec<EventRow> {
    let mut x: u32 = 0x2545_F491;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let ids: Vec<Arc<str>> = (1..=7).map(|i| format!("{i:03}").into()).collect();
    (0..3000u32)
        .map(|i| {
            let len = match i % 10 {
                0 => 65_536 - 200,
                1 => 0,
                2..=4 => (rnd() % 4096) as usize,
                _ => (rnd() % 300) as usize,
            };
            let mut message: Vec<u8> = (0..len)
                .map(|j| b'a' + ((i as usize + j) % 26) as u8)
                .collect();
            match i % 13 {
                0 if len > 3 => message[len / 2] = 0xff,
                1 if len > 3 => message[1] = 0,
                2 => message.extend_from_slice("é\tline\nnext\\".as_bytes()),
                _ => {}
            }
            EventRow {
                received_at: 1_795_995_692_315_517 + i64::from(i),
                agent_id: ids[(i % 7) as usize].clone(),
                agent_name: format!("host-{}", i % 7).into(),
                source_ip: if i % 2 == 0 {
                    format!("10.0.{}.{}", i % 256, i % 200).parse().unwrap()
                } else {
                    "2001:db8::7".parse().unwrap()
                },
                transport: if i % 3 == 0 { "udp" } else { "tcp" },
                queue: [b'1', b'8', b'f', b'9', 0, 0xc3][(i % 6) as usize],
                queue_name: "localfile",
                location: if i % 17 == 0 {
                    b"C:\\x\xfe".to_vec()
                } else {
                    format!("/var/log/{i}.log").into_bytes()
                },
                message,
                global_counter: i,
                local_counter: i % 9997,
            }
        })
        .collect()
}

/// (text, raw) as the store promises: the exact bytes, or U+FFFD in the text
/// and the exact bytes in the raw column.
fn expect_text(b: &[u8]) -> (String, Option<Vec<u8>>) {
    match std::str::from_utf8(b) {
        Ok(s) if !b.contains(&0) => (s.to_owned(), None),
        _ => (
            String::from_utf8_lossy(b).replace('\0', "\u{FFFD}"),
            Some(b.to_vec()),
        ),
    }
}

async fn check(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url).await.unwrap();
    let rows = rows();
    store.insert_events(&rows).await.unwrap();
    // A second batch after the first: ids continue.
    store.insert_events(&rows[..10]).await.unwrap();
    // The same columns from both dialects: time as µs (PostgreSQL) or text
    // (SQLite), counters as 64-bit integers.
    let (ts, local) = match backend {
        Backend::Postgres => (
            "(extract(epoch FROM received_at) * 1000000)::bigint::text",
            "local_counter::bigint",
        ),
        Backend::Sqlite => ("received_at", "local_counter"),
    };
    let q = format!(
        "SELECT {ts} AS us, agent_id, source_ip, queue, location, location_raw, message, \
         message_raw, global_counter, {local} AS local_counter FROM events ORDER BY id"
    );
    macro_rules! fetch {
        ($pool:expr) => {
            sqlx::query(&q)
                .fetch_all($pool)
                .await
                .unwrap()
                .into_iter()
                .map(|r| {
                    let us: String = r.get("us");
                    (
                        us.parse::<i64>()
                            .ok()
                            .or_else(|| ossec_store::parse_micros(&us))
                            .unwrap(),
                        r.get::<String, _>("agent_id"),
                        r.get::<String, _>("source_ip"),
                        r.get::<String, _>("queue"),
                        r.get::<String, _>("location"),
                        r.get::<Option<Vec<u8>>, _>("location_raw"),
                        r.get::<String, _>("message"),
                        r.get::<Option<Vec<u8>>, _>("message_raw"),
                        r.get::<i64, _>("global_counter"),
                        r.get::<i64, _>("local_counter"),
                    )
                })
                .collect::<Vec<_>>()
        };
    }
    let got = match &store {
        Store::Postgres(p) => fetch!(p),
        Store::Sqlite(p) => fetch!(p),
    };
    assert_eq!(got.len(), rows.len() + 10);
    for (n, (r, g)) in rows.iter().chain(&rows[..10]).zip(&got).enumerate() {
        let (location, location_raw) = expect_text(&r.location);
        let (message, message_raw) = expect_text(&r.message);
        let queue = if r.queue.is_ascii() && r.queue != 0 {
            (r.queue as char).to_string()
        } else {
            "\u{FFFD}".to_owned()
        };
        let want = (
            r.received_at,
            r.agent_id.to_string(),
            r.source_ip.to_string(),
            queue,
            location,
            location_raw,
            message,
            message_raw,
            i64::from(r.global_counter),
            i64::from(r.local_counter),
        );
        // SQLite keeps a NUL queue byte as it is (its text holds NUL).
        if backend == Backend::Sqlite && r.queue == 0 {
            assert_eq!((&g.0, &g.4, &g.6), (&want.0, &want.4, &want.6), "row {n}");
            continue;
        }
        assert_eq!(g, &want, "row {n}");
    }
}

#[tokio::test]
async fn large_batches_arrive_whole_and_exact_postgres() {
    check(Backend::Postgres).await;
}

#[tokio::test]
async fn large_batches_arrive_whole_and_exact_sqlite() {
    check(Backend::Sqlite).await;
}

/// A batch whose `data` the database refuses (here a trigger raising a data
/// exception, SQLSTATE 22P02, for one row) is stored once more with `data`
/// NULL instead of being retried for ever; a batch refused for another
/// reason is still an error (and retried by the caller).
#[tokio::test]
async fn a_refused_data_batch_is_stored_without_data() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = Store::connect(&db.url).await.unwrap();
    let Store::Postgres(pool) = &store else {
        unreachable!()
    };
    sqlx::query(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.data ? 'poison' THEN RAISE EXCEPTION 'poisoned data' USING ERRCODE = '22P02'; END IF; \
         RETURN NEW; END $$",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()",
    )
    .execute(pool)
    .await
    .unwrap();
    let mut batch: Vec<EventRow> = rows().into_iter().take(50).collect();
    let mut json = batch[0].clone();
    json.queue = b'8';
    json.message = br#"{"type":"event","data":{"path":"/etc/passwd"}}"#.to_vec();
    batch.push(json.clone());
    let mut poison = json.clone();
    poison.message = br#"{"poison":1}"#.to_vec();
    batch.push(poison);
    let counts = store.insert_events(&batch).await.unwrap();
    assert_eq!(counts.refused, batch.len() as u64);
    let (n, with_data): (i64, i64) = sqlx::query_as("SELECT count(*), count(data) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!((n, with_data), (batch.len() as i64, 0));
    // Without the poison, data is stored again.
    let counts = store.insert_events(&[json]).await.unwrap();
    assert_eq!((counts.refused, counts.json), (0, 1));
    store.close().await;
}
