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

/// A failed logon as a Wazuh 4.x agent sends it from a Windows host: the
/// rendered message and the event's XML (Windows' own layout of event 4625,
/// single-quoted attributes as `EvtRender` writes them).
const WINDOWS_4625: &[u8] = br#"f:EventChannel:{"Message":"An account failed to log on.\r\n\r\nSubject:\r\n\tSecurity ID:\t\tS-1-0-0\r\n\tAccount Name:\t\t-\r\n\r\nLogon Type:\t\t\t3\r\n\r\nAccount For Which Logon Failed:\r\n\tAccount Name:\t\tadministrator\r\n\tAccount Domain:\t\tEXAMPLE","Event":"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Security-Auditing' Guid='{54849625-5478-4994-a5ba-3e3b0328c30d}'/><EventID>4625</EventID><Version>0</Version><Level>0</Level><Task>12544</Task><Opcode>0</Opcode><Keywords>0x8010000000000000</Keywords><TimeCreated SystemTime='2026-11-29T10:00:05.1234567Z'/><EventRecordID>123456</EventRecordID><Correlation ActivityID='{0d6f0a6e-2a56-0001-7c0b-6f0d562ad901}'/><Execution ProcessID='660' ThreadID='4496'/><Channel>Security</Channel><Computer>WIN-DC01.example.local</Computer><Security/></System><EventData><Data Name='SubjectUserSid'>S-1-0-0</Data><Data Name='SubjectUserName'>-</Data><Data Name='SubjectDomainName'>-</Data><Data Name='SubjectLogonId'>0x0</Data><Data Name='TargetUserSid'>S-1-0-0</Data><Data Name='TargetUserName'>administrator</Data><Data Name='TargetDomainName'>EXAMPLE</Data><Data Name='Status'>0xc000006d</Data><Data Name='FailureReason'>%%2313</Data><Data Name='SubStatus'>0xc000006a</Data><Data Name='LogonType'>3</Data><Data Name='LogonProcessName'>NtLmSsp </Data><Data Name='AuthenticationPackageName'>NTLM</Data><Data Name='WorkstationName'>ATTACKER</Data><Data Name='TransmittedServices'>-</Data><Data Name='LmPackageName'>-</Data><Data Name='KeyLength'>0</Data><Data Name='ProcessId'>0x0</Data><Data Name='ProcessName'>-</Data><Data Name='IpAddress'>203.0.113.50</Data><Data Name='IpPort'>49832</Data></EventData></Event>"}"#;

/// An inventory change as Wazuh 4.x's syscollector sends it (the shape of
/// Wazuh's own `test_decoder_syscollector.c`, `dbsync_packages`).
const PACKAGE_INSERTED: &[u8] = br#"d:syscollector:{"type":"dbsync_packages","operation":"INSERTED","data":{"scan_time":"2026/11/29 10:00:06","format":"deb","name":"openssl","priority":"optional","groups":"utils","size":2150,"vendor":"Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>","install_time":"2026/11/01 08:12:44","version":"3.0.2-0ubuntu1.12","architecture":"amd64","multiarch":"foreign","source":"openssl","description":"Secure Sockets Layer toolkit - cryptographic utility","location":" ","checksum":"2b6b0ec7f12a4fe1b0d5d0e8f6c8a1f5e6d4c3b2","item_id":"4c2b0f2e3a1d5c6b7a8f9e0d1c2b3a4f5e6d7c8b"}}"#;

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
    e.insert("fim-etc", per(&wazuh5, "/etc/passwd"));
    e.insert(
        "noisy-locations",
        rows(&[
            &["/var/log/auth.log", "7", "5"],
            &["rootcheck", "7", "7"],
            &["syscheck", "6", "6"],
            &["/var/log/app.log", "5", "5"],
            &["C:\\Program Files (x86)\\app\\log|old.txt", "5", "5"],
            &["EventChannel", "6", "5"],
            &["syscollector", "6", "5"],
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
            &["eventchannel", "6"],
            &["syscollector", "6"],
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
            &["EventChannel"],
            &["syscollector"],
        ]),
    );
    let others: Vec<&str> = wazuh5.iter().copied().filter(|a| *a != "web-01").collect();
    let mut win = per(&others, "1");
    win.push(vec!["web-01".into(), "2".into()]);
    e.insert("windows-failed-logons", win);
    e.insert(
        "windows-logon-sources",
        rows(&[&["administrator", "203.0.113.50", "3", "1"]]),
    );
    e.insert(
        "packages",
        rows(&[&["web-01", "openssl", "3.0.2-0ubuntu1.12", "INSERTED"]]),
    );
    e.insert(
        "syslog-programs",
        rows(&[&["sshd", "7"], &["sudo", "2"], &["su", "1"]]),
    );
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
    let extra: [&[u8]; 5] = [
        b"1:/var/log/auth.log:Nov 29 10:05:01 web-01 sshd[99]: Failed password for invalid user admin from 203.0.113.7 port 1 ssh2",
        b"1:/var/log/auth.log:Nov 29 10:05:02 web-01 sshd[99]: Failed password for invalid user admin from 203.0.113.7 port 2 ssh2",
        b"1:/var/log/bin.log:bad \xff\xfe bytes\x00 end",
        WINDOWS_4625,
        PACKAGE_INSERTED,
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
    wait_events(&c.running.store, 47).await;
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
            assert_eq!(total, 47, "{name} ({dialect}): {got:?}");
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
        ran.len() >= 16,
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
