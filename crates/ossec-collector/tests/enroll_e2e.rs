//! Enrollment on the TLS port as agents do it: enroll, then the returned
//! key works on 1514 at once; every refusal of PROTOCOL.md §7.3 with its
//! exact words and an unchanged store; keys added and removed by the CLI
//! reach a running collector within 2 s; the keys file manages only its own
//! agents; 200 agents enrolling at once; `openssl s_client` as a client.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use ossec_agent_sim::enroll::{enroll_many, EnrollClient, EnrolledKey};
use ossec_proto::codec::Header;
use ossec_proto::{encode, AgentKey, ClientKeys, Sealing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOOPBACK: &str = "127.0.0.1";

fn key_of(k: &EnrolledKey) -> AgentKey {
    ClientKeys::parse(k.line().as_bytes())
        .unwrap()
        .by_id(&k.id)
        .unwrap()
        .agent_key
        .clone()
}

fn msg(key: &AgentKey, id: &str, local: u32, payload: &str) -> Vec<u8> {
    let h = Header {
        rand: 7,
        global_counter: 0,
        local_counter: local,
    };
    encode(key, Sealing::AesFixed, Some(id), h, payload.as_bytes()).unwrap()
}

/// Sends a startup over UDP; whether an ACK came back.
async fn acked(addr: SocketAddr, k: &EnrolledKey, local: u32) -> bool {
    let sock = udp_from(LOOPBACK.parse::<IpAddr>().unwrap()).await;
    sock.send_to(&msg(&key_of(k), &k.id, local, "#!-agent startup "), addr)
        .await
        .unwrap();
    udp_reply(&sock, Duration::from_millis(700)).await.is_some()
}

/// Polls `acked` until it returns `want` or `within` has passed; returns
/// how long it took.
async fn until_acked(addr: SocketAddr, k: &EnrolledKey, want: bool, within: Duration) -> Duration {
    let start = Instant::now();
    let mut local = 1000;
    loop {
        local += 1;
        if acked(addr, k, local).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "agent {} still {} after {within:?}",
            k.id,
            if want { "refused" } else { "accepted" }
        );
    }
}

/// A collector with the enrollment listener on a free port. Its
/// certificate comes from PEM files made here, except with `self_signed`
/// (SQLite only: the pair is then made next to the store).
async fn collector(
    db: &TestDb,
    password: Option<&str>,
    self_signed: bool,
    tweak: impl FnOnce(&mut ossec_collector::config::ServeArgs),
) -> (Collector, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pass");
    if let Some(p) = password {
        std::fs::write(&pw, format!("{p}\n")).unwrap();
    }
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = rcgen::generate_simple_self_signed(vec!["ossec-collector".into()]).unwrap();
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let c = start("", db, |a| {
        a.enroll_listen = Some("127.0.0.1:0".into());
        a.enroll_password_file = password.map(|_| pw.clone());
        a.enroll_rate_per_ip = Some(0);
        if !self_signed {
            a.enroll_cert = Some(cert.clone());
            a.enroll_key = Some(key.clone());
        }
        tweak(a);
    })
    .await;
    let addr = c.running.enroll_addr.expect("enrollment listener");
    (c, addr, dir)
}

async fn key_rows(store: &ossec_store::Store) -> i64 {
    count(store, "SELECT COUNT(*) FROM agent_keys").await
}

/// Enroll over TLS 1.3 and 1.2, then the key is accepted on 1514 at once
/// and an event is stored under the new ID; both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_agent_is_acked_and_its_events_stored() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let (c, enroll_addr, _d) = collector(&db, Some("s3cret"), false, |_| {}).await;
        for (i, v) in [&rustls::version::TLS13, &rustls::version::TLS12]
            .into_iter()
            .enumerate()
        {
            let client = EnrollClient::new(enroll_addr, Some("s3cret".into()), None, &[v]).unwrap();
            let k = client
                .enroll(&format!("web-{i}"), &["default"], None, None)
                .await
                .unwrap_or_else(|e| panic!("{backend:?} {v:?}: {e:#}"));
            assert_eq!(k.id, format!("{:03}", i + 1), "IDs count up from 001");
            assert_eq!(k.ip, "any");
            assert_eq!(k.key.len(), 64);
            assert!(k.key.bytes().all(|b| b.is_ascii_hexdigit()));
            // The enrolling collector applies the key before it answers.
            assert!(
                acked(c.addr, &k, 1).await,
                "{backend:?}: startup of {} ACKed at once",
                k.id
            );
            let sock = udp_from(LOOPBACK.parse::<IpAddr>().unwrap()).await;
            sock.send_to(
                &msg(
                    &key_of(&k),
                    &k.id,
                    2,
                    "1:/var/log/auth.log:enrolled and sending",
                ),
                c.addr,
            )
            .await
            .unwrap();
        }
        let rows = wait_events(&c.running.store, 2).await;
        assert_eq!(rows.len(), 2, "{backend:?}: {rows:?}");
        assert_eq!(rows[0].0, "001");
        assert_eq!(rows[1].0, "002");
        assert_eq!(rows[0].5, "enrolled and sending");
        let (origin, groups): (String, String) = match &c.running.store {
            ossec_store::Store::Postgres(p) => {
                sqlx::query_as("SELECT origin, groups FROM agent_keys WHERE id = '001'")
                    .fetch_one(p)
                    .await
                    .unwrap()
            }
            ossec_store::Store::Sqlite(p) => {
                sqlx::query_as("SELECT origin, groups FROM agent_keys WHERE id = '001'")
                    .fetch_one(p)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            (origin.as_str(), groups.as_str()),
            ("enrollment", "default")
        );
        c.running.shutdown().await.unwrap();
    }
}

/// Reads the whole answer to raw bytes sent over TLS (for malformed lines).
async fn raw_answer(client: &EnrollClient, bytes: &[u8]) -> String {
    String::from_utf8_lossy(&client.exchange(bytes).await.unwrap()).into_owned()
}

/// Every refusal of §7.3 gives its exact words and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_wazuh_words_and_leave_the_store_unchanged() {
    let db = TestDb::new(Backend::Postgres).await;
    let (c, addr, _d) = collector(&db, Some("pw"), false, |_| {}).await;
    let client = EnrollClient::new(addr, None, None, &[]).unwrap();
    let ok =
        |name: &str, extra: &str| format!("OSSEC PASS: pw OSSEC A:'{name}' V:'v4.14.7'{extra}\n");
    // Two agents to collide with: a name, and an IP.
    assert!(raw_answer(&client, ok("taken", "").as_bytes())
        .await
        .starts_with("OSSEC K:'001 taken any "));
    assert!(
        raw_answer(&client, ok("fixed-ip", " IP:'10.9.8.7'").as_bytes())
            .await
            .starts_with("OSSEC K:'002 fixed-ip 10.9.8.7 ")
    );
    let before = key_rows(&c.running.store).await;
    let long = format!("OSSEC PASS: pw OSSEC A:'{}'\n", "a".repeat(70_000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"OSSEC A:'nopass' V:'v4.14.7'\n".to_vec(),
            "ERROR: Invalid password. Unable to add agent",
        ),
        (
            b"OSSEC PASS: wrong OSSEC A:'x1' V:'v4.14.7'\n".to_vec(),
            "ERROR: Invalid password. Unable to add agent",
        ),
        (
            ok("bad name", "").into_bytes(),
            "ERROR: Invalid agent name: bad name. Unable to add agent",
        ),
        (
            ok("taken", "").into_bytes(),
            "ERROR: Duplicate agent name: taken. Unable to add agent",
        ),
        (
            ok("other", " IP:'10.9.8.7'").into_bytes(),
            "ERROR: Duplicate IP: 10.9.8.7. Unable to add agent",
        ),
        (
            ok("g1", " G:'ok,../etc'").into_bytes(),
            "ERROR: Invalid group name: ../etc. Unable to add agent",
        ),
        (
            ok("ip1", " IP:'300.1.1.1'").into_bytes(),
            "ERROR: Invalid IP: 300.1.1.1. Unable to add agent",
        ),
        (
            b"OSSEC PASS: pw OSSEC A:'u1' V:'v4.14\n".to_vec(),
            "ERROR: Unterminated version field. Unable to add agent",
        ),
        (
            b"OSSEC PASS: pw OSSEC A:'u1' V:'v4.14.7' G:'default\n".to_vec(),
            "ERROR: Unterminated group field. Unable to add agent",
        ),
        (
            b"OSSEC PASS: pw OSSEC A:'u1' V:'v4.14.7' IP:'1.2.3.4\n".to_vec(),
            "ERROR: Unterminated IP field. Unable to add agent",
        ),
        (
            b"OSSEC PASS: pw OSSEC A:'u1' V:'v4.14.7' K:'abc\n".to_vec(),
            "ERROR: Unterminated key field. Unable to add agent",
        ),
        (
            b"OSSEC PASS: pw HELLO\n".to_vec(),
            "ERROR: Invalid request for new agent. Unable to add agent",
        ),
        (
            long.into_bytes(),
            "ERROR: Invalid request for new agent. Unable to add agent",
        ),
        // OSSEC agents (no Wazuh field) get the OSSEC form.
        (
            b"OSSEC PASS: pw OSSEC A:'taken'\n".to_vec(),
            "ERROR: Duplicate agent name: taken\n\nERROR: Unable to add agent.\n\n",
        ),
    ];
    for (line, want) in &cases {
        let got = raw_answer(&client, line).await;
        assert_eq!(
            got,
            *want,
            "request {:?}",
            String::from_utf8_lossy(&line[..line.len().min(60)])
        );
    }
    // No newline: the agent half-closes, the answer still comes.
    {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = tls_over(tcp).await;
        tls.write_all(b"OSSEC PASS: pw OSSEC A:'nonl' V:'v4.14.7'")
            .await
            .unwrap();
        tls.shutdown().await.unwrap();
        let mut got = Vec::new();
        let _ = tls.read_to_end(&mut got).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            "ERROR: Invalid request for new agent. Unable to add agent"
        );
    }
    // TLS garbage: the connection closes, nothing is answered, it is counted.
    {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"OSSEC A:'plain' not TLS at all\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
            .await
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&got).contains("OSSEC K:"),
            "{got:?}"
        );
    }
    assert_eq!(
        key_rows(&c.running.store).await,
        before,
        "no refusal wrote a key"
    );
    let outcomes = c.running.metrics.enrollments();
    let n = |o: &str| {
        outcomes
            .iter()
            .find(|(k, _)| *k == o)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    assert_eq!(n("enrolled"), 2);
    assert_eq!(n("invalid_password"), 2);
    assert_eq!(n("duplicate_name"), 2);
    assert_eq!(n("duplicate_ip"), 1);
    assert_eq!(n("oversize"), 1);
    assert_eq!(n("no_newline"), 1);
    assert!(n("tls_error") >= 1, "{outcomes:?}");
    c.running.shutdown().await.unwrap();
}

/// A TLS client over `tcp` that takes any server certificate (as an agent
/// without a CA does), for requests the enrollment client cannot send.
async fn tls_over(
    tcp: tokio::net::TcpStream,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = ossec_agent_sim::enroll::client_config(None, &[], None).unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect("x".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

fn cli(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args(args)
        .args(["--database-url", &db.url])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `agents add` / `agents remove` from another process reach a running
/// collector within 2 s, without SIGHUP; `list` and `export-keys` show them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keys_reach_a_running_collector_within_two_seconds() {
    let db = TestDb::new(Backend::Postgres).await;
    let c = start("", &db, |_| {}).await;
    let (ok, line, err) = cli(&db, &["agents", "add", "cli-agent", "--group", "linux"]);
    assert!(ok, "{err}");
    let f: Vec<&str> = line.trim_end().split(' ').collect();
    assert_eq!(&f[..3], ["001", "cli-agent", "any"], "{line}");
    let k = EnrolledKey {
        id: f[0].into(),
        name: f[1].into(),
        ip: f[2].into(),
        key: f[3].into(),
    };
    let took = until_acked(c.addr, &k, true, Duration::from_secs(2)).await;
    eprintln!("added key accepted after {took:?}");
    let (ok, again, err) = cli(&db, &["agents", "add", "cli-agent"]);
    assert!(
        !ok && again.is_empty() && err.contains("already exists"),
        "{err}"
    );
    assert!(wait_status(&c.running.store, "001", "pending").await);
    let (ok, list, _) = cli(&db, &["agents", "list", "--format", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["id"], "001");
    assert_eq!(
        v[0]["status"], "pending",
        "the startup made it pending: {v}"
    );
    assert_eq!(v[0]["origin"], "cli");
    let (ok, exported, _) = cli(&db, &["agents", "export-keys"]);
    assert!(ok);
    assert_eq!(
        exported, line,
        "export-keys gives the same client.keys line"
    );
    let (ok, out, err) = cli(&db, &["agents", "remove", "001"]);
    assert!(ok, "{err}");
    assert!(out.contains("removed"));
    let took = until_acked(c.addr, &k, false, Duration::from_secs(2)).await;
    eprintln!("removed key refused after {took:?}");
    let (ok, _, err) = cli(&db, &["agents", "remove", "001"]);
    assert!(!ok && err.contains("no agent 001"), "{err}");
    // The next agent never reuses a removed ID.
    let (_, line2, _) = cli(&db, &["agents", "add", "second"]);
    assert!(line2.starts_with("002 second any "), "{line2}");
    c.running.shutdown().await.unwrap();
    // Read-only commands never create a store.
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args(["agents", "list", "--database-url", &missing])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no store at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("nope.db").exists());
}

const FILE_KEY_1: &str =
    "001 file-one any 1111111111111111111111111111111111111111111111111111111111111111\n";
const FILE_KEY_5: &str =
    "005 file-five any 5555555555555555555555555555555555555555555555555555555555555555\n";

/// The keys file manages its own agents only: removing its line removes
/// that agent; an enrolled agent is never touched by the file, and a file
/// line claiming its ID is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_file_manages_only_file_agents() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (c, enroll_addr, _d) = collector(&db, None, true, |a| a.keys_poll_interval = Some(1)).await;
    let store_dir = std::path::Path::new(db.url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .to_owned();
    assert!(
        store_dir.join("sslmanager.cert").exists() && store_dir.join("sslmanager.key").exists(),
        "self-signed pair next to the store"
    );
    std::fs::write(&c.keys_path, format!("{FILE_KEY_1}{FILE_KEY_5}")).unwrap();
    c.running.reload_keys();
    let file1 = EnrolledKey {
        id: "001".into(),
        name: "file-one".into(),
        ip: "any".into(),
        key: "1".repeat(64),
    };
    until_acked(c.addr, &file1, true, Duration::from_secs(3)).await;
    let client = EnrollClient::new(enroll_addr, None, None, &[]).unwrap();
    let enrolled = client.enroll("enrolled-1", &[], None, None).await.unwrap();
    assert_eq!(enrolled.id, "006", "after the largest ID in use");
    assert!(acked(c.addr, &enrolled, 1).await);
    // The file drops 001 and claims 006 for another agent.
    std::fs::write(
        &c.keys_path,
        format!("{FILE_KEY_5}006 impostor any 6666666666666666666666666666666666666666666666666666666666666666\n"),
    )
    .unwrap();
    c.running.reload_keys();
    until_acked(c.addr, &file1, false, Duration::from_secs(3)).await;
    assert!(
        acked(c.addr, &enrolled, 2).await,
        "the enrolled agent keeps its key"
    );
    let impostor = EnrolledKey {
        id: "006".into(),
        name: "impostor".into(),
        ip: "any".into(),
        key: "6".repeat(64),
    };
    assert!(
        !acked(c.addr, &impostor, 1).await,
        "the file's line for 006 is ignored"
    );
    assert_eq!(
        count(
            &c.running.store,
            "SELECT COUNT(*) FROM agent_keys WHERE removed_at IS NULL"
        )
        .await,
        2,
        "005 from the file and the enrolled 006"
    );
    c.running.shutdown().await.unwrap();
}

/// 200 agents enroll at once: IDs unique, every key works, all events land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_enrollments() {
    let db = TestDb::new(Backend::Postgres).await;
    let (c, enroll_addr, _d) = collector(&db, Some("pw"), false, |a| {
        a.enroll_max_concurrent = Some(256)
    })
    .await;
    let client = EnrollClient::new(enroll_addr, Some("pw".into()), None, &[]).unwrap();
    let names: Vec<String> = (0..200).map(|i| format!("many-{i:03}")).collect();
    let started = Instant::now();
    let keys = enroll_many(&client, names, 200).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "200 concurrent enrollments (TLS 1.3, file key) in {secs:.2} s: {:.0}/s",
        200.0 / secs
    );
    let mut ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "unique IDs");
    assert_eq!((ids[0], ids[199]), ("001", "200"));
    let sock = udp_from(LOOPBACK.parse::<IpAddr>().unwrap()).await;
    for k in &keys {
        sock.send_to(
            &msg(&key_of(k), &k.id, 1, &format!("1:app:event of {}", k.name)),
            c.addr,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rows = wait_events(&c.running.store, 200).await;
    assert_eq!(rows.len(), 200);
    c.running.shutdown().await.unwrap();
}

/// `openssl s_client` (OpenSSL 3, what agents link) enrolls too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_enrolls() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (c, addr, _d) = collector(&db, None, false, |_| {}).await;
    for (proto, name) in [("-tls1_3", "ossl-13"), ("-tls1_2", "ossl-12")] {
        let out = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &addr.to_string(),
                    proto,
                    "-quiet",
                    "-ign_eof",
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("openssl is installed (apt-get install -y openssl)");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("OSSEC A:'{name}'\n").as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.starts_with("OSSEC K:'")
                && stdout.contains(&format!(" {name} any "))
                && stdout.ends_with("'\n\n"),
            "{proto}: OSSEC-form answer expected, got {stdout:?} (stderr {})",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    c.running.shutdown().await.unwrap();
}

/// With the force rules allowing it, a second enrollment under a taken name
/// replaces the old agent, whose key is refused on 1514 at once; with the
/// defaults (registered less than an hour ago) it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_replacement_retires_the_old_key_at_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let (c, addr, _d) = collector(&db, None, false, |a| {
        a.enroll_force_disconnected_time = Some(0);
        a.enroll_force_after_registration_time = Some(0);
    })
    .await;
    let client = EnrollClient::new(addr, None, None, &[]).unwrap();
    let old = client.enroll("reinstalled", &[], None, None).await.unwrap();
    assert!(acked(c.addr, &old, 1).await);
    // The agent still holds its key and says so (K:): not replaced.
    let same = ossec_proto::enroll::key_hash(&old.id, &old.name, old.key.as_bytes());
    let err = client
        .enroll("reinstalled", &[], None, Some(&same))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "ERROR: Duplicate agent name: reinstalled. Unable to add agent"
    );
    // A reinstalled agent (another or no key): replaced.
    let new = client.enroll("reinstalled", &[], None, None).await.unwrap();
    assert_ne!(new.id, old.id);
    assert!(
        !acked(c.addr, &old, 2).await,
        "the replaced key is refused at once"
    );
    assert!(acked(c.addr, &new, 1).await);
    // Agents of the keys file are never replaced (the file would bring
    // them back at its next import).
    std::fs::write(&c.keys_path, FILE_KEY_5).unwrap();
    c.running.reload_keys();
    let file5 = EnrolledKey {
        id: "005".into(),
        name: "file-five".into(),
        ip: "any".into(),
        key: "5".repeat(64),
    };
    until_acked(c.addr, &file5, true, Duration::from_secs(3)).await;
    let err = client
        .enroll("file-five", &[], None, None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "ERROR: Duplicate agent name: file-five. Unable to add agent"
    );
    assert!(
        acked(c.addr, &file5, 2000).await,
        "the file's agent keeps its key"
    );
    c.running.shutdown().await.unwrap();

    // Wazuh's defaults: an agent registered a moment ago is not replaced.
    let db2 = TestDb::new(Backend::Sqlite).await;
    let (c2, addr2, _d2) = collector(&db2, None, false, |_| {}).await;
    let client = EnrollClient::new(addr2, None, None, &[]).unwrap();
    client.enroll("fresh", &[], None, None).await.unwrap();
    let err = client.enroll("fresh", &[], None, None).await.unwrap_err();
    assert!(
        err.to_string().contains("Duplicate agent name: fresh"),
        "{err}"
    );
    c2.running.shutdown().await.unwrap();
}

/// `IP:'src'` and `--enroll-use-source-ip` register the TLS peer's address;
/// the key then only works from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_is_registered_when_asked() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (c, addr, _d) = collector(&db, None, false, |a| a.enroll_use_source_ip = Some(true)).await;
    let client = EnrollClient::new(addr, None, None, &[]).unwrap();
    let a = client
        .enroll("by-src", &[], Some("src"), None)
        .await
        .unwrap();
    assert_eq!(a.ip, "127.0.0.1");
    // --enroll-use-source-ip: no IP field means the peer's address, which
    // `by-src` holds already (and is not replaceable yet).
    let err = client.enroll("by-flag", &[], None, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "ERROR: Duplicate IP: 127.0.0.1. Unable to add agent"
    );
    let c_any = client
        .enroll("explicit", &[], Some("any"), None)
        .await
        .unwrap();
    assert_eq!(c_any.ip, "any", "an explicit IP wins");
    assert!(acked(c.addr, &a, 1).await, "from 127.0.0.1");
    let other = udp_from("127.0.0.2".parse::<IpAddr>().unwrap()).await;
    other
        .send_to(&msg(&key_of(&a), &a.id, 2, "#!-agent startup "), c.addr)
        .await
        .unwrap();
    assert!(
        udp_reply(&other, Duration::from_millis(700))
            .await
            .is_none(),
        "the key bound to 127.0.0.1 is refused from 127.0.0.2"
    );
    c.running.shutdown().await.unwrap();
}

/// `--enroll-ca`: only agents with a certificate from that CA get a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_from_the_ca_are_required() {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_path = dir.path().join("agents-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let identity = |signer: Option<(&rcgen::Certificate, &KeyPair)>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["agent".to_owned()]).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = match signer {
            Some((c, k)) => p.signed_by(&key, c, k).unwrap(),
            None => p.self_signed(&key).unwrap(),
        };
        let der: PrivateKeyDer<'static> = PrivatePkcs8KeyDer::from(key.serialize_der()).into();
        (vec![cert.der().clone()], der)
    };
    let db = TestDb::new(Backend::Sqlite).await;
    let (c, addr, _d) = collector(&db, None, false, |a| a.enroll_ca = Some(ca_path.clone())).await;
    let good =
        EnrollClient::with_identity(addr, None, None, &[], Some(identity(Some((&ca, &ca_key)))))
            .unwrap();
    let k = good.enroll("with-cert", &[], None, None).await.unwrap();
    assert_eq!(k.name, "with-cert");
    let stranger =
        EnrollClient::with_identity(addr, None, None, &[], Some(identity(None))).unwrap();
    assert!(stranger.enroll("other-ca", &[], None, None).await.is_err());
    let none = EnrollClient::new(addr, None, None, &[]).unwrap();
    assert!(none.enroll("no-cert", &[], None, None).await.is_err());
    assert_eq!(
        key_rows(&c.running.store).await,
        1,
        "only the agent with a CA certificate"
    );
    c.running.shutdown().await.unwrap();
}

/// Enrolls `name` with `IP:'src'` through a PROXY v1 header claiming
/// `src`; the answer, or an empty string when the connection was closed.
async fn enroll_via_proxy(addr: SocketAddr, src: &str, name: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("PROXY TCP4 {src} 10.0.0.1 51000 1515\r\n").as_bytes())
        .await
        .unwrap();
    let cfg = ossec_agent_sim::enroll::client_config(None, &[], None).unwrap();
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect("x".try_into().unwrap(), tcp)
        .await
    else {
        return String::new();
    };
    tls.write_all(format!("OSSEC A:'{name}' V:'v4.14.7' IP:'src'\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// Behind a load balancer (`--proxy-protocol v1` before TLS), `IP:'src'`
/// registers the agent's address from the header, not the balancer's, and
/// the per-IP rate limit counts the agents' addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_behind_a_proxy_uses_the_header_address() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (c, addr, _d) = collector(&db, None, false, |a| {
        a.proxy_protocol = Some("v1".into());
        a.enroll_rate_per_ip = Some(1);
    })
    .await;
    let got = enroll_via_proxy(addr, "10.9.9.9", "behind-lb").await;
    assert!(got.starts_with("OSSEC K:'001 behind-lb 10.9.9.9 "), "{got}");
    assert_eq!(
        enroll_via_proxy(addr, "10.9.9.9", "again").await,
        "",
        "rate-limited by the header's address"
    );
    let other = enroll_via_proxy(addr, "10.9.9.8", "other-host").await;
    assert!(
        other.starts_with("OSSEC K:'002 other-host 10.9.9.8 "),
        "{other}"
    );
    // Without a header the connection is refused before TLS.
    let plain = EnrollClient::new(addr, None, None, &[]).unwrap();
    assert!(plain.enroll("no-header", &[], None, None).await.is_err());
    let n = |o: &str| {
        c.running
            .metrics
            .enrollments()
            .iter()
            .find(|(k, _)| *k == o)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    assert_eq!(
        (n("enrolled"), n("rate_limited"), n("proxy_header_rejected")),
        (2, 1, 1)
    );
    c.running.shutdown().await.unwrap();
}
