//! Runs every example query of docs/sql.md against both stores, filled by a
//! running collector with the real-code vectors (plus a few events of our
//! own), and checks what each returns.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use ossec_proto::{encode, Header, Sealing};
use ossec_store::Store;
use sqlx::Row;

/// (name, dialect, sql) of every documented query.
fn documented_queries() -> Vec<(String, String, String)> {
    let doc = std::fs::read_to_string(repo("docs/sql.md")).unwrap();
    let mut out = Vec::new();
    for block in doc.split("```sql\n").skip(1) {
        let sql = block.split("```").next().unwrap();
        let head = sql.lines().next().unwrap();
        let meta = head
            .strip_prefix("-- name: ")
            .unwrap_or_else(|| panic!("query without name: {head}"));
        let (name, dialect) = meta.split_once("; dialect: ").unwrap();
        out.push((name.to_owned(), dialect.trim().to_owned(), sql.to_owned()));
    }
    out
}

fn cell<R: Row>(row: &R, i: usize) -> String
where
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i32>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<f64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let show = |v: Option<String>| v.unwrap_or_else(|| "NULL".into());
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return show(v);
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return show(v.map(|x| x.to_string()));
    }
    if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
        return show(v.map(|x| x.to_string()));
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        return show(v.map(|x| x.to_string()));
    }
    "?".into()
}

async fn run_query(store: &Store, sql: &str) -> Vec<Vec<String>> {
    match store {
        Store::Postgres(p) => sqlx::query(sql)
            .fetch_all(p)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| {
                (0..sqlx::Row::columns(r).len())
                    .map(|i| cell(r, i))
                    .collect()
            })
            .collect(),
        Store::Sqlite(p) => sqlx::query(sql)
            .fetch_all(p)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| {
                (0..sqlx::Row::columns(r).len())
                    .map(|i| cell(r, i))
                    .collect()
            })
            .collect(),
    }
}

fn rows(v: &[&[&str]]) -> Vec<Vec<String>> {
    v.iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect()
}

/// Expected rows (leading columns only), compared as sets: ties sort
/// differently under PostgreSQL collations and SQLite's binary order.
fn expected() -> BTreeMap<&'static str, Vec<Vec<String>>> {
    let wazuh5 = ["db-02", "edge-04", "legacy-05", "myagent", "web-01"];
    let per = |names: &[&str], n: &str| -> Vec<Vec<String>> {
        names
            .iter()
            .map(|a| vec![a.to_string(), n.to_string()])
            .collect()
    };
    let mut e = BTreeMap::new();
    e.insert(
        "failed-ssh",
        rows(&[
            &["web-01", "3"],
            &["db-02", "1"],
            &["edge-04", "1"],
            &["legacy-05", "1"],
            &["myagent", "1"],
        ]),
    );
    // Every agent of the test's keys file, imported with origin `file`
    // (the columns compared are id, name, origin).
    let file_agents: Vec<Vec<String>> = [
        ("001", "web-01"),
        ("002", "db-02"),
        ("003", "myagent"),
        ("004", "edge-04"),
        ("005", "legacy-05"),
        ("006", "quiet-06"),
        ("1024", "ossec-old"),
        ("1025", "ossec-new"),
        ("1026", "ossec-bf"),
    ]
    .iter()
    .map(|(id, name)| vec![id.to_string(), name.to_string(), "file".to_string()])
    .collect();
    e.insert("agent-keys", file_agents.clone());
    e.insert("new-agents", file_agents);
    e.insert(
        "silent-agents",
        rows(&[&["006", "quiet-06", "never_connected"]]),
    );
    let mut fim = per(&wazuh5, "/etc/passwd");
    fim.push(vec!["ossec-old".into(), "NULL".into()]);
    e.insert("fim-etc", fim);
    e.insert(
        "noisy-locations",
        rows(&[
            &["/var/log/auth.log", "7", "5"],
            &["rootcheck", "7", "7"],
            &["syscheck", "6", "6"],
            &["/var/log/app.log", "5", "5"],
            &["C:\\Program Files (x86)\\app\\log|old.txt", "5", "5"],
            &["EventChannel", "5", "5"],
            &["syscollector", "5", "5"],
            &["/var/log/messages", "2", "1"],
            &["/var/log/secure", "2", "2"],
            &["/var/log/bin.log", "1", "1"],
        ]),
    );
    e.insert(
        "by-queue",
        rows(&[
            &["localfile", "22"],
            &["rootcheck", "7"],
            &["syscheck", "6"],
            &["eventchannel", "5"],
            &["syscollector", "5"],
        ]),
    );
    e.insert(
        "status-counts",
        rows(&[
            &["active", "3"],
            &["disconnected", "5"],
            &["never_connected", "1"],
        ]),
    );
    e.insert(
        "agent-latest",
        rows(&[
            &["/var/log/auth.log"],
            &["/var/log/auth.log"],
            &["/var/log/auth.log"],
            &["syscheck"],
            &["rootcheck"],
            &["C:\\Program Files (x86)\\app\\log|old.txt"],
            &["/var/log/app.log"],
            &["EventChannel"],
            &["syscollector"],
            &["/var/log/bin.log"],
        ]),
    );
    e.insert("windows-failed-logons", per(&wazuh5, "1"));
    e.insert(
        "versions",
        rows(&[
            &["Wazuh v4.14.7", "5"],
            &["OSSEC HIDS v3.7.0", "3"],
            &["unknown", "1"],
        ]),
    );
    let mut rc = per(&wazuh5, "1");
    rc.extend(per(&["ossec-new", "ossec-bf"], "1"));
    e.insert("rootcheck", rc);
    e.insert(
        "raw-bytes",
        rows(&[&[
            "001",
            "/var/log/bin.log",
            "bad \u{FFFD}\u{FFFD} bytes\u{FFFD} end",
            "17",
        ]]),
    );
    e.insert(
        "quiet-agents",
        rows(&[&["006", "quiet-06", "never_connected"]]),
    );
    e
}

async fn check(backend: Backend) {
    let db = TestDb::new(backend).await;
    let keys = format!(
        "{}006 quiet-06 any 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        loopback_vector_keys()
    );
    let c = start(&keys, &db, |a| a.verify_counters = Some(false)).await;
    let mut socks = std::collections::HashMap::new();
    for v in jsonl("testdata/vectors/vectors.jsonl") {
        if v["direction"] != "agent->manager" {
            continue;
        }
        let src = vector_source(&v);
        if let std::collections::hash_map::Entry::Vacant(e) = socks.entry(src) {
            e.insert(udp_from(src).await);
        }
        socks[&src]
            .send_to(
                &hex::decode(v["wire_hex"].as_str().unwrap()).unwrap(),
                c.addr,
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let key = agent_key(&keys, "001");
    let extra: [&[u8]; 3] = [
        b"1:/var/log/auth.log:Nov 29 10:05:01 web-01 sshd[99]: Failed password for invalid user admin from 203.0.113.7 port 1 ssh2",
        b"1:/var/log/auth.log:Nov 29 10:05:02 web-01 sshd[99]: Failed password for invalid user admin from 203.0.113.7 port 2 ssh2",
        b"1:/var/log/bin.log:bad \xff\xfe bytes\x00 end",
    ];
    for (i, p) in extra.iter().enumerate() {
        let h = Header {
            rand: 1,
            global_counter: 9000,
            local_counter: i as u32 + 1,
        };
        let wire = encode(&key, Sealing::AesFixed, Some("001"), h, p).unwrap();
        socks[&"127.0.0.1".parse().unwrap()]
            .send_to(&wire, c.addr)
            .await
            .unwrap();
    }
    wait_events(&c.running.store, 45).await;
    // Agent records reach the store about once a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let dialect = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let expected = expected();
    let mut ran = Vec::new();
    for (name, d, sql) in documented_queries() {
        if d != dialect && d != "both" {
            continue;
        }
        let got = run_query(&c.running.store, &sql).await;
        ran.push(name.clone());
        if name == "per-minute" {
            let total: i64 = got.iter().map(|r| r[1].parse::<i64>().unwrap()).sum();
            assert_eq!(total, 45, "{name} ({dialect}): {got:?}");
            continue;
        }
        let want = expected
            .get(name.as_str())
            .unwrap_or_else(|| panic!("no expectation for {name}"));
        let width = want[0].len();
        let mut got: Vec<Vec<String>> = got
            .into_iter()
            .map(|r| r.into_iter().take(width).collect())
            .collect();
        let mut want = want.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{name} ({dialect})");
    }
    ran.sort();
    ran.dedup();
    assert!(
        ran.len() >= 13,
        "every documented query ran on {dialect}: {ran:?}"
    );
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_queries_work_on_sqlite() {
    check(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_queries_work_on_postgres() {
    check(Backend::Postgres).await;
}
