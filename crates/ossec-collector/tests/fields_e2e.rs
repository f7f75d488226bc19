//! `events.data` end to end: messages of every shape, sealed as a Wazuh
//! agent seals them, sent to a running `serve` over UDP and TCP, land in
//! both stores with the structured fields a SIEM user queries (JSON as
//! sent, Windows eventchannel as Wazuh's `win.*` fields, the syslog
//! predecoder), and hostile JSON or XML is stored with `data` NULL and
//! counted, without failing the batch it is in.

mod common;

use std::time::Duration;

use common::*;
use ossec_proto::{encode, Header, Sealing};
use ossec_store::Store;
use serde_json::Value;

const WINDOWS_4625: &str = r#"f:EventChannel:{"Message":"An account failed to log on.\r\n\r\nSubject:\r\n\tSecurity ID:\t\tS-1-0-0","Event":"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-Security-Auditing' Guid='{54849625-5478-4994-a5ba-3e3b0328c30d}'/><EventID>4625</EventID><Version>0</Version><Level>0</Level><Task>12544</Task><Opcode>0</Opcode><Keywords>0x8010000000000000</Keywords><TimeCreated SystemTime='2026-11-29T10:00:05.1234567Z'/><EventRecordID>123456</EventRecordID><Correlation/><Execution ProcessID='660' ThreadID='4496'/><Channel>Security</Channel><Computer>WIN-DC01.example.local</Computer><Security/></System><EventData><Data Name='TargetUserName'>administrator</Data><Data Name='TargetDomainName'>EXAMPLE</Data><Data Name='LogonType'>3</Data><Data Name='IpAddress'>203.0.113.50</Data><Data Name='IpPort'>49832</Data></EventData></Event>"}"#;

/// What `data` must hold for one message: a check on the parsed value, or
/// NULL.
enum Want {
    Null,
    Check(fn(&Value)),
}

fn cases() -> Vec<(Vec<u8>, Want)> {
    let deep_json = format!("5:syscollector:{}", "[".repeat(60_000));
    let deep_xml = format!(
        r#"f:EventChannel:{{"Message":"m","Event":"<Event>{}</Event>"}}"#,
        "<a>".repeat(20_000)
    );
    let big_attr = format!(
        r#"f:EventChannel:{{"Message":"m","Event":"<Event><System><Provider Name='{}'/><EventID>1</EventID></System></Event>"}}"#,
        "A".repeat(50_000)
    );
    let laughs = r#"f:EventChannel:{"Message":"m","Event":"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'><!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]><Event><System><EventID>&lol3;</EventID></System></Event>"}"#;
    vec![
        (
            br#"8:syscheck:{"type":"event","data":{"path":"/etc/passwd","mode":"realtime","type":"modified","changed_attributes":["size","mtime","md5"],"attributes":{"type":"file","size":2417,"perm":"rw-r--r--","uid":"0","gid":"0","md5":"1c2b4e0a9f3d"}}}"#.to_vec(),
            Want::Check(|v| {
                assert_eq!(v["data"]["path"], "/etc/passwd");
                assert_eq!(v["data"]["changed_attributes"][1], "mtime");
                assert_eq!(v["data"]["attributes"]["size"], 2417);
            }),
        ),
        (
            WINDOWS_4625.as_bytes().to_vec(),
            Want::Check(|v| {
                let s = &v["win"]["system"];
                assert_eq!(s["eventID"], "4625", "{v}");
                assert_eq!(s["providerName"], "Microsoft-Windows-Security-Auditing");
                assert_eq!(s["providerGuid"], "{54849625-5478-4994-a5ba-3e3b0328c30d}");
                assert_eq!(s["channel"], "Security");
                assert_eq!(s["computer"], "WIN-DC01.example.local");
                assert_eq!(s["eventRecordID"], "123456");
                assert_eq!(s["processID"], "660");
                assert_eq!(s["threadID"], "4496");
                assert_eq!(s["systemTime"], "2026-11-29T10:00:05.1234567Z");
                assert_eq!(s["keywords"], "0x8010000000000000");
                assert!(
                    s["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("An account failed to log on")),
                    "{v}"
                );
                let d = &v["win"]["eventdata"];
                assert_eq!(d["targetUserName"], "administrator");
                assert_eq!(d["ipAddress"], "203.0.113.50");
                assert_eq!(d["logonType"], "3");
            }),
        ),
        (
            b"1:/var/log/auth.log:Nov 29 10:05:01 web-01 sshd[99]: Failed password for root from 203.0.113.9 port 4242 ssh2".to_vec(),
            Want::Check(|v| {
                let p = &v["predecoder"];
                assert_eq!(p["timestamp"], "Nov 29 10:05:01", "{v}");
                assert_eq!(p["hostname"], "web-01");
                assert_eq!(p["program_name"], "sshd");
                assert_eq!(p["pid"], "99");
            }),
        ),
        (
            b"1:/var/log/messages:Nov 29 10:00:03 ossec-old su: pam_unix(su:auth): authentication failure".to_vec(),
            Want::Check(|v| {
                assert_eq!(v["predecoder"]["program_name"], "su", "{v}");
                assert!(v["predecoder"].get("pid").is_none(), "{v}");
            }),
        ),
        (
            b"2:syslog:<34>1 2026-11-29T10:00:05.003Z mymachine.example.com su 4711 ID47 - 'su root' failed for lonvick on /dev/pts/8".to_vec(),
            Want::Check(|v| {
                assert_eq!(v["predecoder"]["hostname"], "mymachine.example.com", "{v}");
                assert_eq!(v["predecoder"]["program_name"], "su", "{v}");
            }),
        ),
        // Not UTF-8, with a syslog header: the header's fields still come.
        (
            b"1:/var/log/bin.log:Nov 29 10:05:03 web-01 app[7]: bad \xff\xfe bytes".to_vec(),
            Want::Check(|v| {
                assert_eq!(v["predecoder"]["program_name"], "app", "{v}");
            }),
        ),
        (
            "1:/var/log/app.log:utilisateur « Zoë » connecté — 東京 ✓".as_bytes().to_vec(),
            Want::Null,
        ),
        (
            b"9:rootcheck:Trojaned version of file '/bin/ls' detected.".to_vec(),
            Want::Null,
        ),
        // Hostile or broken: stored, data NULL, counted.
        (br#"8:syscheck:{"type":"event","data":{"path":"/etc/"#.to_vec(), Want::Null),
        (deep_json.into_bytes(), Want::Null),
        (deep_xml.into_bytes(), Want::Null),
        (laughs.as_bytes().to_vec(), Want::Null),
        (big_attr.into_bytes(), Want::Check(|v| {
            // Long but well-formed: parsed in full.
            assert_eq!(v["win"]["system"]["providerName"].as_str().map(str::len), Some(50_000));
        })),
        (b"f:EventChannel:{\"Message\":\"m\",\"Event\":\"<Event><System><EventID>1</Event>\"}".to_vec(), Want::Null),
        // JSON that PostgreSQL's jsonb would refuse (NUL escape, a number
        // beyond its range): must not fail the batch.
        (
            br#"5:syscollector:{"type":"dbsync_processes","data":{"name":"a\u0000b","huge":1e999999}}"#.to_vec(),
            Want::Check(|_| {}),
        ),
    ]
}

async fn data_of(store: &Store, local: i64) -> Option<Value> {
    let text: Option<String> = match store {
        Store::Postgres(p) => {
            sqlx::query_scalar("SELECT data::text FROM events WHERE local_counter = $1")
                .bind(local as i32)
                .fetch_one(p)
                .await
                .unwrap()
        }
        Store::Sqlite(p) => sqlx::query_scalar("SELECT data FROM events WHERE local_counter = ?")
            .bind(local)
            .fetch_one(p)
            .await
            .unwrap(),
    };
    text.map(|t| serde_json::from_str(&t).unwrap())
}

async fn run(backend: Backend, transport: &str) {
    let db = TestDb::new(backend).await;
    let keys = loopback_vector_keys();
    let c = start(&keys, &db, |a| a.verify_counters = Some(false)).await;
    let key = agent_key(&keys, "001");
    let cases = cases();
    let mut tcp = if transport == "tcp" {
        Some(TcpAgent::connect("127.0.0.1".parse().unwrap(), c.addr).await)
    } else {
        None
    };
    let udp = udp_from("127.0.0.1".parse().unwrap()).await;
    for (i, (payload, _)) in cases.iter().enumerate() {
        let h = Header {
            rand: 7,
            global_counter: 100,
            local_counter: i as u32 + 1,
        };
        match &mut tcp {
            Some(t) => {
                let wire = encode(&key, Sealing::AesFixed, Some("001"), h, payload).unwrap();
                let mut f = Vec::new();
                ossec_proto::frame::encode_frame(&wire, &mut f).unwrap();
                if let Err(e) = t.send_raw(&f).await {
                    panic!(
                        "case {i}: {e}; rejects: {:?}",
                        ossec_proto::RejectKind::ALL
                            .iter()
                            .map(|k| (k, c.running.metrics.rejected_total(*k)))
                            .collect::<Vec<_>>()
                    );
                }
            }
            None => {
                let wire = encode(&key, Sealing::AesFixed, Some("001"), h, payload).unwrap();
                udp.send_to(&wire, c.addr).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rows = wait_events(&c.running.store, cases.len() as i64).await;
    assert_eq!(
        rows.len(),
        cases.len(),
        "every event stored ({backend:?}, {transport})"
    );
    let mut nulls = 0;
    for (i, (payload, want)) in cases.iter().enumerate() {
        let got = data_of(&c.running.store, i as i64 + 1).await;
        let what = String::from_utf8_lossy(&payload[..payload.len().min(80)]).into_owned();
        match (want, got) {
            (Want::Null, None) => nulls += 1,
            (Want::Null, Some(v)) => panic!("{what}: expected NULL, got {v}"),
            (Want::Check(_), None) => panic!("{what}: expected data, got NULL"),
            (Want::Check(f), Some(v)) => f(&v),
        }
    }
    let [json, eventchannel, syslog, json_invalid, xml_invalid] = c.running.metrics.data_totals();
    assert_eq!(json, 2, "FIM and the NUL/huge-number JSON");
    assert_eq!(eventchannel, 2);
    assert_eq!(syslog, 4);
    assert_eq!(json_invalid, 2, "truncated and 60,000 levels deep");
    assert_eq!(xml_invalid, 3, "deep, entities, mismatched");
    assert_eq!(nulls, 7);
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_fields_in_sqlite_over_udp() {
    run(Backend::Sqlite, "udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_fields_in_postgres_over_tcp() {
    run(Backend::Postgres, "tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_fields_in_postgres_over_udp() {
    run(Backend::Postgres, "udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_off_stores_null() {
    let db = TestDb::new(Backend::Postgres).await;
    let keys = loopback_vector_keys();
    let c = start(&keys, &db, |a| {
        a.verify_counters = Some(false);
        a.event_data = Some(false);
    })
    .await;
    let key = agent_key(&keys, "001");
    let udp = udp_from("127.0.0.1".parse().unwrap()).await;
    for (i, p) in [
        WINDOWS_4625.as_bytes(),
        b"1:/var/log/auth.log:Nov 29 10:05:01 web-01 sshd[99]: x",
    ]
    .iter()
    .enumerate()
    {
        let h = Header {
            rand: 7,
            global_counter: 100,
            local_counter: i as u32 + 1,
        };
        let wire = encode(&key, Sealing::AesFixed, Some("001"), h, p).unwrap();
        udp.send_to(&wire, c.addr).await.unwrap();
    }
    wait_events(&c.running.store, 2).await;
    assert_eq!(
        count(
            &c.running.store,
            "SELECT count(*) FROM events WHERE data IS NULL"
        )
        .await,
        2
    );
    assert_eq!(c.running.metrics.data_totals(), [0; 5]);
    c.running.shutdown().await.unwrap();
}
