//! The shipped `deploy/haproxy.cfg` (TCP mode, `send-proxy-v2`, leastconn,
//! `/health` checks) in front of two `ossec-collector serve` processes on one
//! PostgreSQL database, with 20 OSSEC agents that verify the manager's reply
//! counters, each from its own loopback address with an IP-bound key:
//!
//! 1. the agents spread over both replicas and `events.source_ip` is each
//!    agent's own address (the PROXY header's, not HAProxy's);
//! 2. a message accepted by one replica, captured and sent again to the
//!    other more than 1.2 s later, is a replay there (no ACK, not stored,
//!    `ossec_messages_rejected_total{kind="replay"}` counts it);
//! 3. after SIGKILL of replica A its agents reconnect through HAProxy to B,
//!    every reply stays in order (no OSSEC agent would drop one), B rejects
//!    nothing as a replay, and every event sent after the reconnect is
//!    stored exactly once. The failover time (kill → first ACK from B) is
//!    printed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ossec_agent_sim::agent::{Agent, Flavor};
use ossec_proto::proxy::V2_SIGNATURE;
use ossec_proto::{Cipher, ClientKeys};
use ossec_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Agents 011…030 on 127.0.0.11…127.0.0.30.
const FIRST: u8 = 11;
const AGENTS: u8 = 20;
/// Events each agent sends after the failover.
const AFTER: usize = 5;

/// A child process killed (SIGKILL) and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lo(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// One `ossec-collector serve` process.
struct Replica {
    name: &'static str,
    tcp: SocketAddr,
    metrics: u16,
    /// Only for HAProxy's enrollment backend; nothing listens there.
    enroll: u16,
    proc: Option<Proc>,
}

impl Replica {
    fn spawn(name: &'static str, keys: &Path, db: &TestDb, dir: &Path) -> Replica {
        let (tcp, metrics, enroll) = (lo(free_port()), free_port(), free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ossec-collector"));
        // Settings come from these flags only.
        for (k, _) in std::env::vars() {
            if k.starts_with("OSSEC_COLLECTOR_") {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(dir)
            .arg("serve")
            .args(["--listen", &tcp.to_string(), "--no-udp"])
            .arg("--keys")
            .arg(keys)
            .args(["--database-url", &db.url])
            .args(["--metrics-listen", &lo(metrics).to_string()])
            .args(["--proxy-protocol", "v2", "--proxy-from", "127.0.0.0/8"])
            .args(["--instance-name", name, "--flush-interval-ms", "20"])
            .arg("--spool-dir")
            .arg(dir.join(format!("spool-{name}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().unwrap();
        Replica {
            name,
            tcp,
            metrics,
            enroll,
            proc: Some(Proc(child)),
        }
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = http_get(self.metrics, "/health").await {
                if r.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "replica {} never became healthy",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics")
            .await
            .unwrap_or_else(|| panic!("no /metrics from replica {}", self.name))
    }

    /// The value of the sample `series` (name with labels) in `/metrics`.
    async fn metric(&self, series: &str) -> u64 {
        let text = self.metrics_text().await;
        sample(&text, series).unwrap_or_else(|| panic!("no {series} in /metrics of {}", self.name))
    }

    async fn replays(&self) -> u64 {
        self.metric("ossec_messages_rejected_total{kind=\"replay\"}")
            .await
    }

    /// All rejected messages, of any kind.
    async fn rejected(&self) -> u64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| l.starts_with("ossec_messages_rejected_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }
}

fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    })
}

/// One HTTP/1.1 GET on 127.0.0.1:`port`; the whole response.
async fn http_get(port: u16, path: &str) -> Option<String> {
    let fut = async {
        let mut s = TcpStream::connect(lo(port)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// `deploy/haproxy.cfg` with addresses and ports for this test: the
/// frontends on free loopback ports, the replicas' listeners as servers,
/// each checked on its own metrics port, no Docker DNS. Everything else
/// (balance, checks, `send-proxy-v2`, timeouts, retries) is the shipped
/// file's. Panics when the shipped file no longer has what is replaced.
fn haproxy_cfg(shipped: &str, front: u16, front_enroll: u16, replicas: &[&Replica]) -> String {
    let mut out = String::new();
    let mut in_resolvers = false;
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();
    let mut hit = |what: &'static str| *done.entry(what).or_default() += 1;
    for line in shipped.lines() {
        let t = line.trim();
        let indent = &line[..line.len() - line.trim_start().len()];
        if in_resolvers {
            if t.is_empty() {
                in_resolvers = false;
            }
            continue;
        }
        if t.starts_with("resolvers ") {
            in_resolvers = true;
            hit("resolvers section");
            continue;
        }
        let new = if t == "bind :1514" {
            hit("bind :1514");
            format!("{indent}bind 127.0.0.1:{front}")
        } else if t == "bind :1515" {
            hit("bind :1515");
            format!("{indent}bind 127.0.0.1:{front_enroll}")
        } else if let Some(n) = t.strip_prefix("maxconn ") {
            // 100000 needs a file descriptor limit of 200k+; HAProxy refuses
            // to start below it (the test machine allows 20000).
            assert!(n.parse::<u32>().unwrap() > 0);
            hit("maxconn");
            format!("{indent}maxconn 2000")
        } else if t.starts_with("default-server ") {
            hit("default-server");
            assert!(t.contains(" send-proxy-v2 "), "{t}");
            assert!(t.contains(" check port 9514 "), "{t}");
            assert!(t.ends_with(" resolvers docker init-addr libc,none"), "{t}");
            let t = t
                .replace(" check port 9514 ", " check ")
                .replace(" resolvers docker init-addr libc,none", "");
            format!("{indent}{t}")
        } else if t.starts_with("server ") {
            let parts: Vec<&str> = t.split_whitespace().collect();
            assert_eq!(parts.len(), 3, "unexpected server line: {t}");
            let (host, port) = parts[2].split_once(':').unwrap();
            let i = match host {
                "collector-1" => 0,
                "collector-2" => 1,
                _ => panic!("unexpected server {t}"),
            };
            let r = replicas[i];
            let to = match port {
                "1514" => r.tcp.port(),
                "1515" => r.enroll,
                _ => panic!("unexpected port in {t}"),
            };
            hit("server");
            format!(
                "{indent}server {} 127.0.0.1:{to} check port {}",
                parts[1], r.metrics
            )
        } else {
            line.to_owned()
        };
        out.push_str(&new);
        out.push('\n');
    }
    let expected = BTreeMap::from([
        ("bind :1514", 1),
        ("bind :1515", 1),
        ("default-server", 2),
        ("maxconn", 1),
        ("resolvers section", 1),
        ("server", 4),
    ]);
    assert_eq!(done, expected, "deploy/haproxy.cfg changed shape");
    assert!(!out.contains("resolvers") && !out.contains("9514"), "{out}");
    out
}

/// The PROXY v2 header HAProxy would send for a TCP connection from `src`.
fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only here")
    };
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

fn framed(wire: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    ossec_proto::frame::encode_frame(wire, &mut f).unwrap();
    f
}

/// A TCP connection from `src`, or the error.
async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpAgent> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((src, 0)))?;
    Ok(TcpAgent::from_stream(s.connect(to).await?))
}

/// One OSSEC 4.x agent (AES, random IV, no `!ID!`: its key is bound to its
/// address) and its connection through HAProxy.
struct Sim {
    agent: Agent,
    ip: Ipv4Addr,
    conn: Option<TcpAgent>,
}

impl Sim {
    fn id(&self) -> String {
        self.agent.id().to_owned()
    }

    /// Sends a control message and checks the reply as an OSSEC agent
    /// does; None when no reply came within `wait` (or the connection closed).
    async fn control(&mut self, wire: &[u8], wait: Duration) -> Option<()> {
        let conn = self.conn.as_mut().unwrap();
        conn.send_raw(&framed(wire)).await.ok()?;
        let reply = conn.reply(wait).await?;
        let r = self.agent.check_reply(&reply).unwrap();
        assert!(r.ack, "agent {}: not an ACK: {r:?}", self.agent.id());
        assert!(
            r.in_order,
            "agent {}: the reply's counters went back; an OSSEC agent drops it",
            self.agent.id()
        );
        Some(())
    }

    async fn keepalive(&mut self) {
        let w = self.agent.keepalive(None).unwrap();
        self.control(&w, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("agent {}: keepalive not ACKed", self.agent.id()));
    }

    async fn event(&mut self, message: &str) -> Vec<u8> {
        let w = self
            .agent
            .seal(format!("1:/var/log/haproxy-e2e:{message}").as_bytes())
            .unwrap();
        let conn = self.conn.as_mut().unwrap();
        conn.send(&w).await;
        w
    }

    /// Connects through HAProxy until a keepalive (or the startup, the first
    /// time) is ACKed; returns the attempts it took.
    async fn join(&mut self, front: SocketAddr, startup: bool, deadline: Instant) -> u32 {
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(
                Instant::now() < deadline,
                "agent {}: no ACK through HAProxy after {attempts} attempts",
                self.agent.id()
            );
            let Ok(c) = connect_from(self.ip, front).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            self.conn = Some(c);
            let w = if startup {
                self.agent.startup().unwrap()
            } else {
                self.agent.keepalive(None).unwrap()
            };
            // HAProxy holds a connection while it retries a dead server
            // (`retries 2`, a second apart) and then closes it.
            if self.control(&w, Duration::from_secs(5)).await.is_some() {
                return attempts;
            }
            self.conn = None;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// HAProxy from PATH or /usr/sbin (not always in a user's PATH).
fn haproxy_bin() -> String {
    for bin in ["haproxy", "/usr/sbin/haproxy"] {
        if Command::new(bin)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return bin.to_owned();
        }
    }
    panic!("haproxy not found: install it: apt-get install -y haproxy");
}

fn pg(store: &Store) -> &sqlx::PgPool {
    match store {
        Store::Postgres(p) => p,
        Store::Sqlite(_) => unreachable!(),
    }
}

/// `agents.collector` of every agent, once all have one.
async fn collectors(
    store: &Store,
    until: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT id, collector FROM agents ORDER BY id")
                .fetch_all(pg(store))
                .await
                .unwrap();
        let m: BTreeMap<String, String> = rows
            .iter()
            .filter_map(|(id, c)| Some((id.clone(), c.clone()?)))
            .collect();
        if m.len() == AGENTS as usize && until(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "agents.collector: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(agent_id, source_ip, message)` of the events whose message starts with `prefix`.
async fn rows(store: &Store, prefix: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT agent_id, source_ip, message FROM events WHERE message LIKE $1 ORDER BY id",
    )
    .bind(format!("{prefix}%"))
    .fetch_all(pg(store))
    .await
    .unwrap()
}

/// Waits until `n` events start with `prefix`.
async fn wait_rows(store: &Store, prefix: &str, n: usize) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rows(store, prefix).await;
        if r.len() >= n {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} `{prefix}` events stored",
            r.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_spreads_fails_over_and_keeps_replays_out() {
    let begin = Instant::now();
    let haproxy = haproxy_bin();
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();

    // Keys bound to each agent's own address.
    let mut keys = String::new();
    for n in FIRST..FIRST + AGENTS {
        let key: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        keys.push_str(&format!("{n:03} agent-{n:03} 127.0.0.{n} {key}\n"));
    }
    let keys_path = dir.path().join("client.keys");
    std::fs::write(&keys_path, &keys).unwrap();
    let parsed = Arc::new(ClientKeys::parse(keys.as_bytes()).unwrap());

    // Two replicas on one database (started one after the other).
    let mut a = Replica::spawn("a", &keys_path, &db, dir.path());
    a.wait_healthy().await;
    let b = Replica::spawn("b", &keys_path, &db, dir.path());
    b.wait_healthy().await;

    // HAProxy with the shipped configuration.
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/haproxy.cfg"
    ))
    .unwrap();
    let (front_port, front_enroll) = (free_port(), free_port());
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg_path,
        haproxy_cfg(&shipped, front_port, front_enroll, &[&a, &b]),
    )
    .unwrap();
    let check = Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let _haproxy = Proc(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let front = lo(front_port);
    let store = Store::connect(&db.url).await.unwrap();

    // 1. Twenty agents, one after the other, each on its own connection.
    let mut sims: Vec<Sim> = (0..AGENTS)
        .map(|i| Sim {
            agent: Agent::new(
                parsed.clone(),
                i as usize,
                Flavor::Ossec,
                Cipher::Aes,
                i as u64,
            ),
            ip: Ipv4Addr::new(127, 0, 0, FIRST + i),
            conn: None,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for s in &mut sims {
        s.join(front, true, deadline).await;
        s.keepalive().await;
        for k in 0..2 {
            s.event(&format!("before {} {k}", s.id())).await;
        }
    }
    let ip_of: HashMap<String, String> = sims.iter().map(|s| (s.id(), s.ip.to_string())).collect();
    let before = wait_rows(&store, "before ", 2 * AGENTS as usize).await;
    assert_eq!(before.len(), 2 * AGENTS as usize, "{before:?}");
    for (id, src, msg) in &before {
        assert_eq!(src, &ip_of[id], "events.source_ip of {id} ({msg})");
    }
    let placed = collectors(&store, |_| true).await;
    let on = |m: &BTreeMap<String, String>, r: &str| m.values().filter(|c| *c == r).count();
    let (on_a, on_b) = (on(&placed, "a"), on(&placed, "b"));
    eprintln!("spread through HAProxy: {on_a} agents on replica a, {on_b} on b");
    assert_eq!(on_a + on_b, AGENTS as usize, "{placed:?}");
    assert!(on_a >= 5 && on_b >= 5, "leastconn spread: {placed:?}");
    assert_eq!(
        a.metric("ossec_tcp_connections_open").await as usize,
        on_a,
        "a's connections"
    );
    assert_eq!(
        b.metric("ossec_tcp_connections_open").await as usize,
        on_b,
        "b's connections"
    );

    // 2. A message captured on its way to one replica, sent again to the
    // other one later, from the agent's address (a PROXY header as
    // HAProxy's): a keepalive (ACKed the first time) and an event (stored
    // the first time).
    assert_eq!((a.replays().await, b.replays().await), (0, 0));
    let mut captured = Vec::new();
    for (from, to) in [(&a, &b), (&b, &a)] {
        let s = sims
            .iter_mut()
            .find(|s| placed[&s.id()] == from.name)
            .unwrap();
        let ka = s.agent.keepalive(None).unwrap();
        s.control(&ka, Duration::from_secs(10)).await.unwrap();
        let ev = s.event(&format!("replayed {}", s.id())).await;
        s.keepalive().await;
        captured.push((s.id(), s.ip, ka, ev, to));
    }
    wait_rows(&store, "replayed ", 2).await;
    let captured_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(captured_at.elapsed() > Duration::from_millis(1200));
    let mut replays = Vec::new();
    for (id, ip, ka, ev, to) in &captured {
        let mut conn = connect_from(Ipv4Addr::LOCALHOST, to.tcp).await.unwrap();
        let mut bytes = v2_header(SocketAddr::from((*ip, 40_000)), to.tcp);
        bytes.extend(framed(ka));
        bytes.extend(framed(ev));
        conn.send_raw(&bytes).await.unwrap();
        replays.push((id, to, conn));
    }
    for r in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.replays().await < 2 {
            assert!(
                Instant::now() < deadline,
                "replica {} did not reject the replays as such: {}",
                r.name,
                r.metrics_text().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(r.replays().await, 2, "replica {}", r.name);
        assert_eq!(
            r.rejected().await,
            2,
            "replica {}: other rejections",
            r.name
        );
    }
    // Both messages were handled (and rejected): an ACK would be there now.
    for (id, to, mut conn) in replays {
        assert!(
            conn.reply(Duration::from_millis(300)).await.is_none(),
            "replica {} answered agent {id}'s replayed keepalive",
            to.name
        );
        let per_agent =
            format!("ossec_agent_messages_rejected_total{{agent=\"{id}\",kind=\"replay\"}}");
        assert_eq!(to.metric(&per_agent).await, 2, "{per_agent} on {}", to.name);
    }
    let replayed = rows(&store, "replayed ").await;
    assert_eq!(
        replayed.len(),
        2,
        "replayed events stored again: {replayed:?}"
    );
    eprintln!("replays: both replicas rejected the other's captured keepalive and event");

    // 3. SIGKILL replica a; its agents reconnect through HAProxy to b.
    let (movers, stayers): (Vec<Sim>, Vec<Sim>) =
        sims.into_iter().partition(|s| placed[&s.id()] == "a");
    let mut stayers = stayers;
    let killed = Instant::now();
    {
        let mut p = a.proc.take().unwrap();
        p.0.kill().unwrap();
        p.0.wait().unwrap();
    }
    let mut tasks = Vec::new();
    for mut s in movers {
        tasks.push(tokio::spawn(async move {
            let old = s.conn.as_mut().unwrap();
            assert!(
                old.closed(Duration::from_secs(10)).await,
                "agent {}: HAProxy kept the connection to the dead replica open",
                s.id()
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            let attempts = s.join(front, false, deadline).await;
            (s, killed.elapsed(), attempts)
        }));
    }
    // b's own agents go on meanwhile.
    let mut rounds = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        for s in &mut stayers {
            s.keepalive().await;
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut moved = Vec::new();
    let mut times = Vec::new();
    for t in tasks {
        let (s, took, attempts) = t.await.unwrap();
        times.push((took, attempts));
        moved.push(s);
    }
    times.sort();
    let (first, last) = (times[0].0, times[times.len() - 1].0);
    let each: Vec<String> = times
        .iter()
        .map(|(t, n)| format!("{}ms/{n}", t.as_millis()))
        .collect();
    eprintln!(
        "failover: replica a killed; first ACK from b after {first:?}, all {} of its agents ACKed by b after {last:?} (per agent ms/connection attempts: {}); b's {} agents ACKed in {rounds} rounds meanwhile",
        times.len(),
        each.join(" "),
        stayers.len()
    );

    // Every agent, now all on b: events, then a keepalive behind them.
    let mut sims: Vec<Sim> = moved.into_iter().chain(stayers).collect();
    for s in &mut sims {
        for k in 0..AFTER {
            s.event(&format!("after {} {k}", s.id())).await;
        }
        s.keepalive().await;
    }
    let n = AFTER * AGENTS as usize;
    let after = wait_rows(&store, "after ", n).await;
    let all_b = collectors(&store, |m| m.values().all(|c| c == "b")).await;
    assert_eq!(all_b.len(), AGENTS as usize);
    // Stored exactly once each, with the agent's address.
    let after = {
        let again = rows(&store, "after ").await;
        assert_eq!(again, after, "more events arrived");
        again
    };
    let mut seen = BTreeMap::new();
    for (id, src, msg) in &after {
        assert_eq!(src, &ip_of[id], "events.source_ip of {id} ({msg})");
        *seen.entry(msg.clone()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), n, "missing events: {seen:?}");
    assert!(seen.values().all(|&c| c == 1), "duplicates: {seen:?}");
    let last_ips: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, last_ip FROM agents ORDER BY id")
            .fetch_all(pg(&store))
            .await
            .unwrap();
    for (id, ip) in &last_ips {
        assert_eq!(
            ip.as_deref(),
            Some(ip_of[id].as_str()),
            "agents.last_ip of {id}"
        );
    }
    assert_eq!(
        b.replays().await,
        2,
        "b rejected messages as replays after the failover"
    );
    assert_eq!(
        b.rejected().await,
        2,
        "b rejected messages after the failover"
    );
    eprintln!("haproxy e2e took {:?}", begin.elapsed());
    store.close().await;
}
