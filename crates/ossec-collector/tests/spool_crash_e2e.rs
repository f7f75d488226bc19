//! What the disk spool (`--spool-dir`) promises when the process dies, proved
//! on the real `ossec-collector serve` binary writing to PostgreSQL:
//!
//! 1. SIGKILL five times at random moments under continuous TCP load
//!    (restarting on the same spool and database each time) never stores an
//!    event twice, and loses nothing that was received (a keepalive barrier
//!    ACKed) more than `--spool-fsync-ms` + 100 ms before the kill; the loss
//!    window observed per kill is printed;
//! 2. a torn tail (half a record after the last one) and a flipped byte in
//!    one record in the middle of a segment are recovered at start: the torn
//!    bytes are cut, exactly that one record is skipped and counted
//!    (`ossec_spool_corrupt_records_total`), every other event is stored;
//! 3. SIGTERM during a store outage exits 0 within `--shutdown-timeout`,
//!    leaves the received events in the spool, and the next start stores
//!    every one of them exactly once (`ossec_spool_replayed_events_total`).
//!
//! Events carry unique markers (`ev <agent> <seq>`) in their message, so the
//! store's rows are compared with what each agent sent, one by one.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ossec_agent_sim::agent::{Agent, Flavor};
use ossec_proto::{Cipher, ClientKeys};
use ossec_store::Store;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `--spool-fsync-ms` of every collector here.
const FSYNC_MS: u64 = 200;
/// Events received (barrier ACKed) at least this long before a SIGKILL
/// must be stored: the fsync interval plus scheduling slack.
const MARGIN: Duration = Duration::from_millis(300);
/// Events between two keepalive barriers.
const BARRIER_EVERY: usize = 50;

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

/// How a collector is started (the same for every restart).
#[derive(Clone)]
struct Opts {
    keys: PathBuf,
    db_url: String,
    spool: PathBuf,
    extra: Vec<String>,
}

/// One `ossec-collector serve` process; SIGKILLed and reaped when dropped.
struct Serve {
    child: Child,
    tcp: SocketAddr,
    metrics: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn spawn(o: &Opts, tcp: SocketAddr, metrics: SocketAddr) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ossec-collector"));
        // Settings come from these flags only.
        for (k, _) in std::env::vars() {
            if k.starts_with("OSSEC_COLLECTOR_") {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(o.spool.parent().unwrap())
            .arg("serve")
            .args(["--listen", &tcp.to_string(), "--no-udp"])
            .arg("--keys")
            .arg(&o.keys)
            .args(["--database-url", &o.db_url])
            .arg("--spool-dir")
            .arg(&o.spool)
            .args(["--spool-fsync-ms", &FSYNC_MS.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--flush-interval-ms", "20"])
            .args(&o.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Serve {
            child,
            tcp,
            metrics,
            logs,
        }
    }

    /// Starts a collector on `port` (another one if that is taken by now)
    /// and waits for `/health` 200.
    async fn start(o: &Opts, port: u16) -> Serve {
        let mut port = port;
        for attempt in 0.. {
            let mut s = Serve::spawn(o, lo(port), lo(free_port()));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(st) = s.child.try_wait().unwrap() {
                    assert!(
                        attempt < 2,
                        "the collector exited ({st}) before it was healthy:\n{}",
                        s.log_text()
                    );
                    // Most likely a port taken meanwhile: try others.
                    port = free_port();
                    break;
                }
                if let Some((200, _)) = http_get(s.metrics, "/health").await {
                    return s;
                }
                assert!(
                    Instant::now() < deadline,
                    "the collector never became healthy:\n{}",
                    s.log_text()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        unreachable!()
    }

    fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The value of an unlabelled sample in `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(self.metrics, "/metrics")
            .await
            .expect("no answer from /metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// SIGKILL; returns the moment just before the signal was sent (the
    /// process cannot have died earlier).
    fn kill9(&mut self) -> Instant {
        let at = Instant::now();
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        at
    }

    fn sigterm(&self) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    async fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
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

/// One HTTP/1.1 GET: status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        let code = out.get(9..12)?.parse().ok()?;
        Some((code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// The unique marker at the start of event `seq`'s message.
fn marker(id: &str, seq: u64) -> String {
    format!("ev {id} {seq:08} ")
}

/// A localfile event (`1:location:message`) with `marker` and `pad` bytes.
fn event_payload(id: &str, seq: u64, pad: usize) -> Vec<u8> {
    let mut p = format!("1:/var/log/spool-crash.log:{}", marker(id, seq)).into_bytes();
    p.resize(p.len() + pad, b'x');
    p
}

fn frame(wire: &[u8], out: &mut Vec<u8>) {
    ossec_proto::frame::encode_frame(wire, out).unwrap();
}

/// Whether the next frame is an `#!-agent ack ` for `agent`.
async fn acked(agent: &mut Agent, c: &mut TcpAgent, wait: Duration) -> bool {
    match c.reply(wait).await {
        Some(w) => agent.check_reply(&w).is_ok_and(|r| r.ack),
        None => false,
    }
}

/// A TCP connection with its startup ACKed (`None`: nobody there).
async fn connect(agent: &mut Agent, addr: SocketAddr) -> Option<TcpAgent> {
    let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let mut c = TcpAgent::from_stream(stream);
    let mut f = Vec::new();
    frame(&agent.startup().unwrap(), &mut f);
    c.send_raw(&f).await.ok()?;
    acked(agent, &mut c, Duration::from_secs(5))
        .await
        .then_some(c)
}

/// Sends events `from..to` of agent `id` and a keepalive barrier; true once
/// the barrier is ACKed (every event before it was received and queued).
async fn send_with_barrier(agent: &mut Agent, c: &mut TcpAgent, from: u64, to: u64) -> bool {
    let id = agent.id().to_owned();
    let mut buf = Vec::new();
    for seq in from..to {
        frame(
            &agent.seal(&event_payload(&id, seq, 300)).unwrap(),
            &mut buf,
        );
    }
    frame(&agent.keepalive(None).unwrap(), &mut buf);
    c.send_raw(&buf).await.is_ok() && acked(agent, c, Duration::from_secs(10)).await
}

/// Stored events as (agent ID, marker sequence number), one per row.
async fn stored_markers(store: &Store) -> Vec<(String, u64)> {
    let Store::Postgres(p) = store else {
        unreachable!("PostgreSQL only")
    };
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT agent_id, substr(message, 1, 32) FROM events")
            .fetch_all(p)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(agent, m)| {
            let mut w = m.split(' ');
            assert_eq!(w.next(), Some("ev"), "not an event of this test: {m:?}");
            assert_eq!(
                w.next(),
                Some(agent.as_str()),
                "marker of another agent: {m:?}"
            );
            let seq = w.next().and_then(|s| s.parse().ok());
            (agent, seq.unwrap_or_else(|| panic!("no sequence in {m:?}")))
        })
        .collect()
}

/// Rows that repeat another row's agent and counters, or its marker.
async fn duplicates(store: &Store) -> (i64, i64) {
    (
        count(
            store,
            "SELECT COUNT(*) - COUNT(DISTINCT (agent_id, global_counter, local_counter)) FROM events",
        )
        .await,
        count(
            store,
            "SELECT COUNT(*) - COUNT(DISTINCT (agent_id, substr(message, 1, 32))) FROM events",
        )
        .await,
    )
}

/// Waits until the store's row count, `ossec_spool_bytes` and
/// `ossec_events_stored_total` have not moved for 1.5 s (and at least
/// `at_least` rows are there); returns the row count.
async fn wait_drained(s: &Serve, store: &Store, at_least: i64, wait: Duration) -> i64 {
    let deadline = Instant::now() + wait;
    let mut last = None;
    let mut same = 0;
    loop {
        let rows = count(store, "SELECT COUNT(*) FROM events").await;
        let now = (
            rows,
            s.metric("ossec_spool_bytes").await as u64,
            s.metric("ossec_events_stored_total").await as u64,
        );
        if last == Some(now) && rows >= at_least {
            same += 1;
            if same >= 6 {
                return rows;
            }
        } else {
            same = 0;
        }
        last = Some(now);
        assert!(
            Instant::now() < deadline,
            "not drained within {wait:?}: {now:?} (rows, spool bytes, stored), {at_least} rows expected"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the collector's store check says the store is down.
async fn wait_store_down(s: &Serve) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut downs = 0;
    while downs < 2 {
        match http_get(s.metrics, "/health").await {
            Some((200, body)) if body.contains("\"store\":\"down\"") => downs += 1,
            _ => downs = 0,
        }
        assert!(Instant::now() < deadline, "the store never looked down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The spool's segment files, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// (segment, offset) of every occurrence of `needle` in the spool files.
fn find_in_spool(dir: &Path, needle: &[u8]) -> Vec<(PathBuf, usize)> {
    segments(dir)
        .into_iter()
        .flat_map(|p| {
            let b = std::fs::read(&p).unwrap();
            find_all(&b, needle)
                .into_iter()
                .map(move |o| (p.clone(), o))
        })
        .collect()
}

fn write_keys(dir: &Path, n: usize) -> (PathBuf, Arc<ClientKeys>) {
    let keys = ossec_agent_sim::generate_keys(n, &mut SmallRng::seed_from_u64(0x5b001));
    let path = dir.join("client.keys");
    std::fs::write(&path, &keys).unwrap();
    (path, Arc::new(ClientKeys::parse(keys.as_bytes()).unwrap()))
}

fn new_agent(keys: &Arc<ClientKeys>, index: usize, seed: u64) -> Agent {
    let mut a = Agent::new(keys.clone(), index, Flavor::Wazuh, Cipher::Aes, seed);
    a.set_zlib_level(1);
    a
}

// ---------------------------------------------------------------------------
// 1. SIGKILL under load.

/// What the agents share with the test: which collector runs (its index,
/// bumped after each kill), where, and whether to stop.
struct Shared {
    generation: AtomicUsize,
    addr: Mutex<SocketAddr>,
    stop: AtomicBool,
}

/// Events `first..end` sent on one connection to collector `generation`.
struct ConnLog {
    generation: usize,
    first: u64,
    end: u64,
}

/// Events `first..to` of a connection to collector `generation` were
/// received: the keepalive after them was ACKed at `acked`.
struct BarrierLog {
    generation: usize,
    first: u64,
    to: u64,
    acked: Instant,
}

struct AgentLog {
    id: String,
    /// When each event (index = sequence number) was written to the socket.
    sent: Vec<Instant>,
    conns: Vec<ConnLog>,
    barriers: Vec<BarrierLog>,
}

/// Sends continuously: `BARRIER_EVERY` events and a keepalive, waits for
/// its ACK, again; reconnects (counters keep rising) when the collector
/// is gone. After `stop` it finishes with one more ACKed barrier.
async fn load_agent(mut agent: Agent, shared: Arc<Shared>, seed: u64) -> AgentLog {
    let mut rng = SmallRng::seed_from_u64(seed);
    let id = agent.id().to_owned();
    let mut log = AgentLog {
        id: id.clone(),
        sent: Vec::new(),
        conns: Vec::new(),
        barriers: Vec::new(),
    };
    'connect: while !shared.stop.load(Ordering::SeqCst) {
        // Read before connecting: a connection can only reach this
        // collector or a later one (which makes the check below weaker,
        // never wrong).
        let generation = shared.generation.load(Ordering::SeqCst);
        let addr = *shared.addr.lock().unwrap();
        let Some(mut c) = connect(&mut agent, addr).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let first = log.sent.len() as u64;
        log.conns.push(ConnLog {
            generation,
            first,
            end: first,
        });
        loop {
            let stopping = shared.stop.load(Ordering::SeqCst);
            let mut buf = Vec::with_capacity(BARRIER_EVERY * 400);
            for _ in 0..BARRIER_EVERY {
                let seq = log.sent.len() as u64;
                let pad = rng.gen_range(100..600);
                frame(
                    &agent.seal(&event_payload(&id, seq, pad)).unwrap(),
                    &mut buf,
                );
                // Recorded before the write: whatever reaches the store
                // is among the events sent.
                log.sent.push(Instant::now());
            }
            frame(&agent.keepalive(None).unwrap(), &mut buf);
            log.conns.last_mut().unwrap().end = log.sent.len() as u64;
            if c.send_raw(&buf).await.is_err() {
                continue 'connect;
            }
            if !acked(&mut agent, &mut c, Duration::from_secs(10)).await {
                continue 'connect;
            }
            log.barriers.push(BarrierLog {
                generation,
                first,
                to: log.sent.len() as u64,
                acked: Instant::now(),
            });
            if stopping {
                break 'connect;
            }
        }
    }
    log
}

/// Several TCP agents send continuously while the collector is SIGKILLed
/// five times at random moments and restarted on the same spool and
/// database. Nothing is ever stored twice, and every event received more
/// than `MARGIN` before a kill is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_and_duplicates_nothing() {
    const AGENTS: usize = 4;
    const KILLS: usize = 5;
    let seed: u64 = std::env::var("SPOOL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (SPOOL_CRASH_SEED={seed} repeats the kill delays)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let (keys_path, keys) = write_keys(dir.path(), AGENTS);
    let opts = Opts {
        keys: keys_path,
        db_url: db.url.clone(),
        spool: dir.path().join("spool"),
        // Small batches: the drain is in a transaction (a COPY) much of
        // the time, so that kills land in one, and commits end mid-segment.
        extra: vec!["--batch-size".into(), "100".into()],
    };
    let mut serve = Serve::start(&opts, free_port()).await;
    let store = Store::connect(&db.url).await.unwrap();
    let shared = Arc::new(Shared {
        generation: AtomicUsize::new(0),
        addr: Mutex::new(serve.tcp),
        stop: AtomicBool::new(false),
    });
    let agents: Vec<_> = (0..AGENTS)
        .map(|i| {
            let agent = new_agent(&keys, i, seed ^ i as u64);
            tokio::spawn(load_agent(
                agent,
                shared.clone(),
                seed.wrapping_add(i as u64),
            ))
        })
        .collect();

    // The kills: `kills[g]` ended collector `g`.
    let mut kills: Vec<Instant> = Vec::new();
    let mut replayed_total = 0.0;
    let mut old_logs: Vec<String> = Vec::new();
    for k in 0..KILLS {
        let delay = Duration::from_millis(rng.gen_range(300..2000));
        tokio::time::sleep(delay).await;
        let stored_before = serve.metric("ossec_events_stored_total").await;
        let replayed = serve.metric("ossec_spool_replayed_events_total").await;
        replayed_total += replayed;
        kills.push(serve.kill9());
        old_logs.push(serve.log_text());
        println!(
            "kill {}: SIGKILL {} ms after /health 200 ({stored_before} events stored by that process, {replayed} of them left in the spool by the previous one)",
            k + 1,
            delay.as_millis()
        );
        shared.generation.store(k + 1, Ordering::SeqCst);
        serve = Serve::start(&opts, serve.tcp.port()).await;
        *shared.addr.lock().unwrap() = serve.tcp;
    }
    // The last start: let the agents get going again, then stop them.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    shared.stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for a in agents {
        logs.push(
            tokio::time::timeout(Duration::from_secs(30), a)
                .await
                .expect("an agent did not finish")
                .unwrap(),
        );
    }
    let rows = wait_drained(&serve, &store, 0, Duration::from_secs(60)).await;
    old_logs.push(serve.log_text());

    // No duplicates, ever.
    let (dup_counters, dup_markers) = duplicates(&store).await;
    let markers = stored_markers(&store).await;
    let mut stored: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut repeated = 0;
    for (agent, seq) in &markers {
        if !stored.entry(agent.clone()).or_default().insert(*seq) {
            repeated += 1;
        }
    }
    let replayed = replayed_total + serve.metric("ossec_spool_replayed_events_total").await;

    // Per collector (kill): events sent, proven received at least MARGIN
    // before its kill, lost.
    #[derive(Default, Debug)]
    struct PerKill {
        sent: u64,
        proven: u64,
        lost: u64,
        recent: u64,
        recent_lost: u64,
        oldest_lost_before_kill: Option<Duration>,
    }
    let last_generation = KILLS;
    let mut per: Vec<PerKill> = (0..=KILLS).map(|_| PerKill::default()).collect();
    // (agent, seq) → (collector, how long before its kill the barrier
    // proving it was ACKed).
    let mut missing_required: std::collections::BTreeMap<(String, u64), (usize, Option<u128>)> =
        Default::default();
    let mut unknown = Vec::new();
    let mut total_sent = 0u64;
    for log in &logs {
        total_sent += log.sent.len() as u64;
        let empty = HashSet::new();
        let got = stored.get(&log.id).unwrap_or(&empty);
        unknown.extend(
            got.iter()
                .filter(|&&s| s >= log.sent.len() as u64)
                .map(|s| (log.id.clone(), *s)),
        );
        // The prefix of each connection that barriers prove.
        let mut proven_to: HashMap<u64, u64> = HashMap::new();
        for b in &log.barriers {
            let required = b.generation == last_generation
                || kills[b.generation].saturating_duration_since(b.acked) >= MARGIN;
            if required {
                let e = proven_to.entry(b.first).or_insert(b.first);
                *e = (*e).max(b.to);
                let lead = kills
                    .get(b.generation)
                    .map(|k| k.saturating_duration_since(b.acked).as_millis());
                for seq in (b.first..b.to).filter(|s| !got.contains(s)) {
                    // The earliest barrier covering it: the longest lead.
                    missing_required
                        .entry((log.id.clone(), seq))
                        .or_insert((b.generation, lead));
                }
            }
        }
        for c in &log.conns {
            let p = &mut per[c.generation];
            p.sent += c.end - c.first;
            p.proven += proven_to.get(&c.first).map_or(0, |to| to - c.first);
            for seq in c.first..c.end {
                let lost = !got.contains(&seq);
                let at = log.sent[seq as usize];
                let before_kill = kills
                    .get(c.generation)
                    .map(|k| k.saturating_duration_since(at));
                let recent = before_kill.is_some_and(|d| d < MARGIN);
                p.lost += u64::from(lost);
                p.recent += u64::from(recent);
                p.recent_lost += u64::from(recent && lost);
                if let (true, Some(d)) = (lost, before_kill) {
                    p.oldest_lost_before_kill =
                        Some(p.oldest_lost_before_kill.map_or(d, |o| o.max(d)));
                }
            }
        }
    }
    println!(
        "{AGENTS} agents sent {total_sent} events, {rows} stored ({replayed} of them by the next process, from what the spool held at its start), {} lost",
        total_sent as i64 - rows
    );
    for (g, p) in per.iter().enumerate() {
        let window = p.sent - p.proven;
        match kills.get(g) {
            Some(_) => println!(
                "kill {}: {} sent to that process, {} received ≥ {} ms before the kill, {window} in the window (not proven received), {} lost; of the {} sent in the last {} ms, {} lost; oldest lost event sent {} before the kill",
                g + 1,
                p.sent,
                p.proven,
                MARGIN.as_millis(),
                p.lost,
                p.recent,
                MARGIN.as_millis(),
                p.recent_lost,
                p.oldest_lost_before_kill
                    .map_or("-".to_owned(), |d| format!("{} ms", d.as_millis())),
            ),
            None => println!(
                "last start (no kill): {} sent, {} received (barrier ACKed), {} lost",
                p.sent, p.proven, p.lost
            ),
        }
    }
    assert_eq!(
        (dup_counters, dup_markers, repeated),
        (0, 0, 0),
        "events stored twice (same counters, same marker, repeated in Rust)"
    );
    assert!(unknown.is_empty(), "stored events never sent: {unknown:?}");
    if !missing_required.is_empty() {
        let generations: HashSet<usize> = missing_required.values().map(|v| v.0).collect();
        for g in generations {
            println!("--- log of collector {g} (and the start after it) ---");
            for text in &old_logs[g..(g + 2).min(old_logs.len())] {
                println!("{text}");
            }
        }
    }
    assert!(
        missing_required.is_empty(),
        "{} events received more than {} ms before a kill are not stored: (agent, seq) → (collector, ms from barrier ACK to kill): {:?}",
        missing_required.len(),
        MARGIN.as_millis(),
        missing_required
    );
    assert_eq!(per[last_generation].lost, 0, "the last run lost events");
    assert!(
        per[..KILLS].iter().map(|p| p.proven).sum::<u64>() > 0,
        "no event was proven received before any kill: this tested nothing: {per:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. Torn tail and flipped byte.

/// A crash left half a record at the end of the last segment, and one
/// record in the middle has a flipped byte: the next start cuts the torn
/// bytes, skips and counts exactly that record, and stores all the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_and_flipped_byte_are_recovered() {
    const N: u64 = 40;
    const FLIPPED: u64 = N / 2;
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = PgProxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (keys_path, keys) = write_keys(dir.path(), 1);
    let opts = Opts {
        keys: keys_path,
        db_url: proxy.url(&db),
        spool: dir.path().join("spool"),
        extra: vec![],
    };
    let mut serve = Serve::start(&opts, free_port()).await;
    let store = Store::connect(&db.url).await.unwrap();

    // The store goes away: the events stay in the spool.
    proxy.cut();
    wait_store_down(&serve).await;
    let mut agent = new_agent(&keys, 0, 7);
    let id = agent.id().to_owned();
    let mut c = connect(&mut agent, serve.tcp)
        .await
        .expect("no startup ACK");
    assert!(
        send_with_barrier(&mut agent, &mut c, 0, N).await,
        "no barrier ACK"
    );
    // Synced: the spool files hold only synced records.
    let last = marker(&id, N - 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while find_in_spool(&opts.spool, last.as_bytes()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the last event never reached the spool file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&store, "SELECT COUNT(*) FROM events").await, 0);
    serve.kill9();
    drop(c);

    // A torn tail: a record header announcing 80 bytes, 3 of them written.
    let segs: Vec<PathBuf> = segments(&opts.spool)
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    let tail_seg = segs.last().expect("no segment with data").clone();
    let valid_len = std::fs::metadata(&tail_seg).unwrap().len();
    let torn = [80u8, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3];
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&tail_seg)
            .unwrap();
        f.write_all(&torn).unwrap();
    }
    // A flipped byte: the first digit of event FLIPPED's marker.
    let hits = find_in_spool(&opts.spool, marker(&id, FLIPPED).as_bytes());
    assert_eq!(hits.len(), 1, "event {FLIPPED}'s marker: {hits:?}");
    let (flip_seg, at) = &hits[0];
    let mut bytes = std::fs::read(flip_seg).unwrap();
    let digit = at + "ev ".len() + id.len() + 1;
    bytes[digit] ^= 0x01;
    std::fs::write(flip_seg, &bytes).unwrap();
    println!(
        "corrupted {}: {} torn bytes appended to {} ({valid_len} valid bytes), byte {digit} of {} flipped (event {FLIPPED})",
        opts.spool.display(),
        torn.len(),
        tail_seg.file_name().unwrap().to_string_lossy(),
        flip_seg.file_name().unwrap().to_string_lossy(),
    );

    proxy.restore();
    let serve = Serve::start(&opts, serve.tcp.port()).await;
    // The torn bytes were cut at start (before /health said 200), unless
    // the segment is already gone (committed and released).
    if let Ok(m) = std::fs::metadata(&tail_seg) {
        assert_eq!(m.len(), valid_len, "the torn tail was not cut");
    }
    let rows = wait_drained(&serve, &store, N as i64 - 1, Duration::from_secs(30)).await;
    let corrupt = serve.metric("ossec_spool_corrupt_records_total").await;
    let replayed = serve.metric("ossec_spool_replayed_events_total").await;
    let warned = serve
        .logs
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("torn record"))
        .cloned();
    let mut got: Vec<u64> = stored_markers(&store)
        .await
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    got.sort_unstable();
    let want: Vec<u64> = (0..N).filter(|&s| s != FLIPPED).collect();
    println!(
        "after restart: {rows} of {N} events stored, {corrupt} corrupt record skipped, {replayed} replayed, {} torn bytes cut; loss: 1 event (the corrupted one)",
        torn.len()
    );
    println!(
        "torn-tail warning: {}",
        warned.as_deref().unwrap_or("(none logged)")
    );
    assert_eq!(rows, N as i64 - 1, "exactly the corrupted event is missing");
    assert_eq!(got, want, "the stored events are all but the corrupted one");
    assert_eq!(duplicates(&store).await, (0, 0));
    assert_eq!(corrupt, 1.0, "ossec_spool_corrupt_records_total");
    assert!(
        warned.is_some_and(|l| l.contains(&format!("bytes={}", torn.len()))),
        "no warning naming the {} torn bytes:\n{}",
        torn.len(),
        serve.log_text()
    );
}

// ---------------------------------------------------------------------------
// 3. SIGTERM during an outage.

/// SIGTERM while the store is away: the process exits 0 within
/// `--shutdown-timeout`, the events stay in the spool, and the next start
/// stores every one exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_outage_keeps_the_spool() {
    const N: u64 = 300;
    const TIMEOUT_S: u64 = 3;
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = PgProxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (keys_path, keys) = write_keys(dir.path(), 1);
    let opts = Opts {
        keys: keys_path,
        db_url: proxy.url(&db),
        spool: dir.path().join("spool"),
        extra: vec!["--shutdown-timeout".into(), TIMEOUT_S.to_string()],
    };
    let mut serve = Serve::start(&opts, free_port()).await;
    let store = Store::connect(&db.url).await.unwrap();

    proxy.cut();
    wait_store_down(&serve).await;
    let mut agent = new_agent(&keys, 0, 11);
    let id = agent.id().to_owned();
    let mut c = connect(&mut agent, serve.tcp)
        .await
        .expect("no startup ACK");
    for from in (0..N).step_by(BARRIER_EVERY) {
        let to = (from + BARRIER_EVERY as u64).min(N);
        assert!(
            send_with_barrier(&mut agent, &mut c, from, to).await,
            "no barrier ACK"
        );
    }
    // Right after the last ACK: some events are still unsynced, maybe
    // still in the memory queue.
    let term = Instant::now();
    serve.sigterm();
    let status = serve
        .wait_exit(Duration::from_secs(TIMEOUT_S + 10))
        .await
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", serve.log_text()));
    let took = term.elapsed();
    println!(
        "SIGTERM with the store down: exit {status} after {} ms (--shutdown-timeout {TIMEOUT_S})",
        took.as_millis()
    );
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        serve.log_text()
    );
    // The events get `--shutdown-timeout`; the agents' state gets at most
    // 2 s more (server.rs); then the process exits.
    assert!(
        took <= Duration::from_millis(TIMEOUT_S * 1000 + 2000 + 1000),
        "the stop took {took:?} with --shutdown-timeout {TIMEOUT_S}:\n{}",
        serve.log_text()
    );
    drop(c);
    // The spool holds every event; the store none.
    let spool_bytes: u64 = segments(&opts.spool)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let in_spool = (0..N)
        .filter(|&s| find_in_spool(&opts.spool, marker(&id, s).as_bytes()).len() == 1)
        .count() as u64;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM events").await, 0);
    println!("spool after the stop: {spool_bytes} bytes, {in_spool} of {N} events in it");
    assert_eq!(in_spool, N, "events missing from the spool after SIGTERM");

    proxy.restore();
    let serve = Serve::start(&opts, serve.tcp.port()).await;
    let rows = wait_drained(&serve, &store, N as i64, Duration::from_secs(30)).await;
    let replayed = serve.metric("ossec_spool_replayed_events_total").await;
    let mut got: Vec<u64> = stored_markers(&store)
        .await
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    got.sort_unstable();
    let lost = N as i64 - rows;
    println!("after restart: {rows} of {N} stored, {replayed} replayed from the spool; loss window of SIGTERM: {lost} events");
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every event exactly once");
    assert_eq!(duplicates(&store).await, (0, 0));
    assert!(
        replayed >= N as f64,
        "ossec_spool_replayed_events_total {replayed} < {N}"
    );
}
