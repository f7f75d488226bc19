//! Operating the real `ossec-collector serve` binary: graceful shutdown on
//! SIGTERM stores every event in flight, SIGHUP and file changes reload
//! client.keys (a broken file keeps the old keys), `/metrics` and
//! `/health` answer over HTTP, JSON logs, config file errors.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use ossec_proto::{encode, AgentKey, Header, Sealing};

const KEY1: &str =
    "001 web-01 any a4c123b1612dd272d1371c17149d439536b3216fdaeeb975729fae923d5a4fd1\n";
const KEY2: &str =
    "002 db-02 any 2aabfe228f219e9cb0eb53f16947ccf25ec84d8dbc74254770f58904dba41ecc\n";
const KEY2_NEW: &str =
    "002 db-02 any ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\n";

/// The binary, running with JSON logs; its ready line gives the addresses.
struct Serve {
    child: Child,
    /// Its spool (unless `extra` says otherwise).
    _spool: tempfile::TempDir,
    addr: SocketAddr,
    metrics: SocketAddr,
    logs: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Serve {
    fn start(keys: &std::path::Path, db: &str, extra: &[&str]) -> Serve {
        let spool = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ossec-collector"));
        cmd.arg("serve");
        if !extra.contains(&"--spool-dir") {
            cmd.arg("--spool-dir").arg(spool.path());
        }
        let mut child = cmd
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .arg("--keys")
            .arg(keys)
            .args(["--database-url", db])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, logs) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut s = Serve {
            child,
            _spool: spool,
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
            logs,
            seen: Vec::new(),
        };
        let ready = s.wait_log("ready", Duration::from_secs(30));
        let v: serde_json::Value = serde_json::from_str(&ready).expect("JSON log line");
        s.addr = v["fields"]["tcp"].as_str().unwrap().parse().unwrap();
        s.metrics = v["fields"]["metrics"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            v["fields"]["udp"].as_str().unwrap(),
            s.addr.to_string(),
            "UDP and TCP share the port"
        );
        s
    }

    /// Waits for a log line containing `needle` (also among lines seen before).
    fn wait_log(&mut self, needle: &str, wait: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + wait;
        while let Ok(line) = self
            .logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
        panic!(
            "no log line with {needle:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }

    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    fn wait_exit(&mut self, wait: Duration) -> Option<i32> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp[9..12].parse().unwrap();
    (code, resp.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, body) = http_get(addr, "/metrics");
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

fn key_of(line: &str, id: &str) -> AgentKey {
    agent_key(line, id)
}

fn msg(key: &AgentKey, id: &str, local: u32, payload: &str) -> Vec<u8> {
    let h = Header {
        rand: 3,
        global_counter: 1,
        local_counter: local,
    };
    encode(key, Sealing::AesFixed, Some(id), h, payload.as_bytes()).unwrap()
}

fn framed(wire: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    ossec_proto::frame::encode_frame(wire, &mut f).unwrap();
    f
}

/// SIGTERM while events are queued: every event the collector received is
/// in PostgreSQL afterwards and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_every_event_in_flight() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::write(&keys, format!("{KEY1}{KEY2}")).unwrap();
    // Large batches, the longest linger: events sit in the queue.
    let mut serve = Serve::start(
        &keys,
        &db.url,
        &["--batch-size", "1000000", "--flush-interval-ms", "200"],
    );
    let per_agent = 1500u32;
    let mut conns = Vec::new();
    for (id, line) in [("001", KEY1), ("002", KEY2)] {
        let key = key_of(line, id);
        let mut bytes = Vec::new();
        for i in 1..=per_agent {
            bytes.extend(framed(&msg(
                &key,
                id,
                i,
                &format!("1:/var/log/app.log:event {i} of {id}"),
            )));
        }
        let mut s = std::net::TcpStream::connect(serve.addr).unwrap();
        s.write_all(&bytes).unwrap();
        conns.push(s);
    }
    let total = u64::from(per_agent) * 2;
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(
        serve.metrics,
        "ossec_messages_received_total{transport=\"tcp\"}",
    ) < total
    {
        assert!(
            Instant::now() < deadline,
            "collector did not receive everything"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let stored_at_term = metric(serve.metrics, "ossec_events_stored_total");
    serve.signal(libc::SIGTERM);
    assert_eq!(
        serve.wait_exit(Duration::from_secs(30)),
        Some(0),
        "exit 0 after SIGTERM"
    );
    serve.wait_log("shutdown complete", Duration::from_secs(1));
    assert!(
        stored_at_term < total,
        "the test must catch events in flight (stored {stored_at_term} of {total})"
    );
    let store = ossec_store::Store::connect(&db.url).await.unwrap();
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM events").await,
        total as i64
    );
    assert_eq!(
        count(&store, "SELECT COUNT(DISTINCT message) FROM events").await,
        total as i64,
        "no duplicates"
    );
    store.close().await;
}

/// SIGHUP and a changed file reload client.keys: a new agent works at once,
/// a removed agent is rejected, a changed key takes effect, and a broken
/// file keeps the old keys with a log line saying what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_reload_by_sighup_and_file_change() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::write(&keys, KEY1).unwrap();
    let mut serve = Serve::start(&keys, &db.url, &["--keys-poll-interval", "1"]);
    let sock = udp_from("127.0.0.1".parse::<IpAddr>().unwrap()).await;
    let mut local = 0;
    let addr = serve.addr;
    let mut ack = |key: AgentKey, id: &'static str| {
        local += 1;
        let wire = msg(&key, id, local, "#!-agent startup ");
        let sock = &sock;
        async move {
            sock.send_to(&wire, addr).await.unwrap();
            udp_reply(sock, Duration::from_millis(800)).await.is_some()
        }
    };
    assert!(ack(key_of(KEY1, "001"), "001").await, "001 known");
    assert!(!ack(key_of(KEY2, "002"), "002").await, "002 not yet known");

    // New agent + SIGHUP: works at once.
    std::fs::write(&keys, format!("{KEY1}{KEY2}")).unwrap();
    serve.signal(libc::SIGHUP);
    serve.wait_log("client.keys reloaded", Duration::from_secs(5));
    assert!(ack(key_of(KEY2, "002"), "002").await, "002 added by SIGHUP");

    // Broken file: the old keys stay, the log names the problem.
    std::fs::write(&keys, format!("{KEY1}{KEY2}003 broken\n")).unwrap();
    serve.signal(libc::SIGHUP);
    let line = serve.wait_log("reload refused", Duration::from_secs(5));
    assert!(line.contains("line 3"), "{line}");
    assert!(
        ack(key_of(KEY2, "002"), "002").await,
        "old keys still in use"
    );

    // Removal and a changed key, picked up by the file poll (no signal).
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&keys, KEY2_NEW).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ack(key_of(KEY2_NEW, "002"), "002").await {
            break;
        }
        assert!(Instant::now() < deadline, "changed key never took effect");
    }
    assert!(
        !ack(key_of(KEY2, "002"), "002").await,
        "old key of 002 rejected"
    );
    assert!(
        !ack(key_of(KEY1, "001"), "001").await,
        "removed agent 001 rejected"
    );
    assert!(metric(serve.metrics, "ossec_key_reloads_total") >= 2);
    assert_eq!(metric(serve.metrics, "ossec_key_reload_errors_total"), 1);
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.wait_exit(Duration::from_secs(30)), Some(0));
}

/// Without a spool (`--spool-dir off`), `/health` is 200 while the store
/// takes writes and 503 when it does not; `/metrics` counts what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::write(&keys, KEY1).unwrap();
    let serve = Serve::start(&keys, &db.url, &["--spool-dir", "off"]);
    assert_eq!(
        http_get(serve.metrics, "/health"),
        (200, "{\"status\":\"ok\",\"store\":\"up\"}\n".to_owned())
    );
    let status = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args([
            "healthcheck",
            "--url",
            &format!("http://{}/health", serve.metrics),
        ])
        .status()
        .unwrap();
    assert!(status.success());

    let sock = udp_from("127.0.0.1".parse().unwrap()).await;
    sock.send_to(b"garbage", serve.addr).await.unwrap();
    sock.send_to(
        &msg(&key_of(KEY1, "001"), "001", 1, "#!-agent startup "),
        serve.addr,
    )
    .await
    .unwrap();
    assert!(udp_reply(&sock, Duration::from_secs(3)).await.is_some());
    sock.send_to(b"#ping", serve.addr).await.unwrap();
    assert_eq!(
        udp_reply(&sock, Duration::from_secs(3)).await.as_deref(),
        Some(&b"#pong"[..])
    );
    let (code, body) = http_get(serve.metrics, "/metrics");
    assert_eq!(code, 200);
    for want in [
        "ossec_messages_received_total{transport=\"udp\"} 3",
        "ossec_messages_rejected_total{kind=\"format\"} 1",
        "ossec_acks_sent_total 1",
        "ossec_pongs_sent_total 1",
        "ossec_control_messages_total{type=\"startup\"} 1",
        "ossec_tcp_connections_open 0",
        "ossec_queue_depth 0",
        "# TYPE ossec_batch_write_seconds histogram",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (_, body) = http_get(serve.metrics, "/metrics");
    assert!(
        body.contains("ossec_agents{status=\"pending\"} 1"),
        "{body}"
    );
    assert_eq!(http_get(serve.metrics, "/nope").0, 404);

    // The store goes away: health turns 503.
    {
        use sqlx::Connection;
        let name = db.url.rsplit('/').next().unwrap().to_owned();
        let mut c = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut c)
            .await
            .unwrap();
    }
    let (code, body) = http_get(serve.metrics, "/health");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("\"status\":\"down\"") && body.contains("\"store\":\"down\""),
        "{body}"
    );
    let status = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .args([
            "healthcheck",
            "--url",
            &format!("http://{}/health", serve.metrics),
        ])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

/// A bad config file is refused with a message naming the problem.
#[test]
fn config_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:1514\"\nlisten_adress = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_adress"), "{err}");
    std::fs::write(&cfg, "database_url = \"${OC_TEST_UNSET_VAR}\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .env_remove("OC_TEST_UNSET_VAR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OC_TEST_UNSET_VAR"));
    // A missing keys file is an error naming it, not a panic.
    std::fs::write(
        &cfg,
        "keys = \"/nonexistent/client.keys\"\nmetrics_listen = \"off\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ossec-collector"))
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/client.keys"));
}

/// A client.keys with CRLF line ends: `serve` warns at start naming the
/// line, and the agent's rejected messages say why and how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_keys_are_named_at_start_and_in_rejects() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::write(&keys, KEY1.replace('\n', "\r\n")).unwrap();
    let mut serve = Serve::start(&keys, &db.url, &[]);
    let warn = serve.wait_log("CR", Duration::from_secs(5));
    assert!(warn.contains("line 1"), "{warn}");
    // The agent has the key without the CR, as its manager gave it.
    let sock = udp_from("127.0.0.1".parse::<IpAddr>().unwrap()).await;
    sock.send_to(
        &msg(&key_of(KEY1, "001"), "001", 1, "#!-agent startup "),
        serve.addr,
    )
    .await
    .unwrap();
    let reject = serve.wait_log("rejected message", Duration::from_secs(5));
    assert!(reject.contains("dos2unix"), "{reject}");
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.wait_exit(Duration::from_secs(30)), Some(0));
}
