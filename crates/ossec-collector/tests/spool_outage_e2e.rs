//! The disk spool through a store outage, end to end: a real collector on
//! loopback, PostgreSQL behind a TCP proxy that the tests cut (the store goes
//! away) and restore, and simulated Wazuh agents.
//!
//! Proves that
//! * a 60 s outage under steady TCP + UDP load loses nothing received: every
//!   TCP event is stored exactly once and in each agent's order, UDP losses
//!   are only those counted (our drops, the kernel's receive-buffer errors),
//!   agents keep being ACKed, `/health` says 200 `degraded` / store `down`
//!   with `ossec_store_up 0`, and after the restore the backlog drains at
//!   least twice as fast as events arrive;
//! * a full spool (`--spool-max-bytes`) with `--spool-when-full block` stops
//!   reading TCP (backpressure) without losing anything, answers `/health`
//!   503 `down` with `ossec_spool_full 1`, and drops and counts UDP events
//!   (`reason="spool_full"`);
//! * with `--spool-when-full drop-newest` every event is either stored or
//!   dropped and counted (stored + dropped == sent, exactly), and the spool
//!   takes events again once the store has drained it.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ossec_agent_sim::agent::{generate_keys, Agent, Flavor};
use ossec_agent_sim::events::Mix;
use ossec_agent_sim::sim::{SimConfig, TransportChoice};
use ossec_collector::config::WhenFull;
use ossec_collector::metrics::{Metrics, Transport};
use ossec_proto::{Cipher, ClientKeys};
use ossec_store::Store;
use rand::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, sleep_until, Instant};

const LO: &str = "127.0.0.1";

/// GET on the operator endpoint: status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("no answer to GET {path} within 20 s"))
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// `/health`: status code and the parsed JSON body.
async fn health(c: &Collector) -> (u16, serde_json::Value) {
    let addr = c.running.metrics_addr.expect("started with metrics_listen");
    let (code, body) = http_get(addr, "/health").await;
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/health body is not JSON ({e}): {body:?}"));
    (code, json)
}

/// `/metrics` over HTTP, as a scraper sees it.
async fn scrape(c: &Collector) -> String {
    let addr = c.running.metrics_addr.expect("started with metrics_listen");
    let (code, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of the sample `name` (with its labels, if any) in `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample `{name}` in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The kernel's count of UDP datagrams dropped for a full socket receive
/// buffer (`/proc/net/snmp`, `Udp: … RcvbufErrors …`), this network
/// namespace over.
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").expect("/proc/net/snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (head, vals) = (udp.next().unwrap(), udp.next().unwrap());
    let i = head
        .split_whitespace()
        .position(|h| h == "RcvbufErrors")
        .expect("RcvbufErrors in /proc/net/snmp");
    vals.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// A pool on the test database that does not go through the proxy (it sees
/// the store while the collector cannot).
async fn direct_store(db: &TestDb) -> Store {
    Store::Postgres(sqlx::PgPool::connect(&db.url).await.unwrap())
}

/// Polls `f` every 100 ms until it holds; panics with `what` after `limit`.
async fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "after {limit:?}: {what}");
        sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the database until `sql` counts `want` (or the deadline passes);
/// returns the last count.
async fn wait_count(store: &Store, sql: &str, want: i64, limit: Duration) -> i64 {
    let deadline = Instant::now() + limit;
    loop {
        let n = count(store, sql).await;
        if n >= want || Instant::now() > deadline {
            return n;
        }
        sleep(Duration::from_millis(200)).await;
    }
}

fn spool_full(m: &Metrics) -> bool {
    m.spool
        .read()
        .as_ref()
        .is_some_and(|s| s.full.load(Relaxed))
}

/// Every stored event exactly once and, per agent, in the order it was
/// sent: stored rows ordered by `id` have strictly increasing counters.
async fn assert_once_and_in_order(store: &Store) {
    let total = count(store, "SELECT count(*) FROM events").await;
    let distinct = count(
        store,
        "SELECT count(*) FROM (SELECT DISTINCT agent_id, global_counter, local_counter FROM events) d",
    )
    .await;
    assert_eq!(total, distinct, "events stored twice");
    let Store::Postgres(pool) = store else {
        unreachable!()
    };
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT agent_id, CAST(global_counter AS BIGINT), CAST(local_counter AS BIGINT) FROM events ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut last: HashMap<String, (i64, i64)> = HashMap::new();
    for (agent, g, l) in rows {
        if let Some(prev) = last.get(&agent) {
            assert!(
                (g, l) > *prev,
                "agent {agent}: stored {g}:{l} after {}:{} (order not kept)",
                prev.0,
                prev.1
            );
        }
        last.insert(agent, (g, l));
    }
}

/// One agent on its own TCP connection, driven by hand.
struct Hand {
    agent: Agent,
    link: TcpAgent,
}

impl Hand {
    /// Connects and completes the handshake (startup ACKed).
    async fn connect(keys: &Arc<ClientKeys>, i: usize, server: SocketAddr) -> Hand {
        let mut agent = Agent::new(keys.clone(), i, Flavor::Wazuh, Cipher::Aes, 100 + i as u64);
        agent.set_zlib_level(1);
        let mut h = Hand {
            agent,
            link: TcpAgent::connect(LO.parse().unwrap(), server).await,
        };
        let w = h.agent.startup().unwrap();
        h.link.send(&w).await;
        h.acked(Duration::from_secs(10)).await;
        h
    }

    /// Waits for the next reply and checks that it is an ACK.
    async fn acked(&mut self, wait: Duration) {
        let id = self.agent.id().to_owned();
        let reply = self
            .link
            .reply(wait)
            .await
            .unwrap_or_else(|| panic!("agent {id}: no ACK within {wait:?}"));
        let r = self.agent.check_reply(&reply).unwrap();
        assert!(r.ack, "agent {id}: reply is not an ACK: {r:?}");
    }

    /// `n` events of the mix, TCP-framed back to back.
    fn frames(&mut self, n: usize) -> Vec<u8> {
        let mix = Mix::default();
        let mut out = Vec::new();
        for _ in 0..n {
            let (_, w) = self
                .agent
                .next_event(&mix, ossec_store::now_micros(), false)
                .unwrap();
            ossec_proto::frame::encode_frame(&w, &mut out).unwrap();
        }
        out
    }

    /// A keepalive, and its ACK: the collector handles a connection's
    /// frames in order, so once it is ACKed every earlier event of this
    /// connection has been taken in (queued, or dropped and counted).
    async fn barrier(&mut self, wait: Duration) {
        let w = self.agent.keepalive(Some(LO.parse().unwrap())).unwrap();
        self.link.send(&w).await;
        self.acked(wait).await;
    }
}

fn parse_keys(text: &str) -> Arc<ClientKeys> {
    Arc::new(ClientKeys::parse(text.as_bytes()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_loses_nothing_received() {
    const AGENTS: usize = 40;
    const EPS: f64 = 300.0;
    let run_for = Duration::from_secs(90);
    let (cut_after, restore_after) = (Duration::from_secs(15), Duration::from_secs(75));

    let db = TestDb::new(Backend::Postgres).await;
    let proxy = PgProxy::start().await;
    let keys = generate_keys(AGENTS, &mut rand::rngs::StdRng::seed_from_u64(11));
    let url = proxy.url(&db);
    let c = start(&keys, &db, |a| {
        a.database_url = Some(url);
        a.metrics_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let m = c.running.metrics.clone();
    let direct = direct_store(&db).await;
    let kernel_before = udp_rcvbuf_errors();

    // 20 TCP agents (even) and 20 UDP agents (odd) at a steady rate.
    let mut cfg = SimConfig::new(c.addr, parse_keys(&keys));
    cfg.transport = TransportChoice::Mixed;
    cfg.eps = EPS;
    cfg.duration = run_for;
    cfg.keepalive = Duration::from_secs(5);
    cfg.ramp_up = Duration::from_secs(2);
    cfg.zlib_level = 6;
    cfg.seed = 7;
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let sim = tokio::spawn(ossec_agent_sim::sim::run(cfg, stop_rx));

    sleep_until(t0 + cut_after).await;
    assert!(
        m.events_stored.load(Relaxed) > 0,
        "events are stored before the outage"
    );
    let (code, h) = health(&c).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")), "{h}");

    // The store goes away.
    proxy.cut();
    let cut_at = Instant::now();
    let queued_at_cut = m.events_queued.load(Relaxed);
    wait_for(
        Duration::from_secs(30),
        "the collector notices the store is down",
        || !m.store_up(),
    )
    .await;
    let stored_in_outage = m.events_stored.load(Relaxed);
    let acks_in_outage = m.acks_sent.load(Relaxed);
    let (code, h) = health(&c).await;
    println!("/health during the outage: {code} {h}");
    assert_eq!(code, 200, "the spool accepts events: {h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["store"], "down", "{h}");
    let text = scrape(&c).await;
    assert_eq!(sample(&text, "ossec_store_up"), 0.0);
    assert!(sample(&text, "ossec_spool_bytes") > 0.0);

    // Later in the outage: still degraded, the spool grows and ages, nothing
    // reaches the store.
    sleep_until(t0 + restore_after - Duration::from_secs(10)).await;
    let (code, h) = health(&c).await;
    println!("/health late in the outage: {code} {h}");
    assert_eq!((code, h["status"].as_str()), (200, Some("degraded")), "{h}");
    assert_eq!(h["store"], "down", "{h}");
    let age = h["spool_oldest_age_s"].as_f64().unwrap();
    assert!(
        age > 20.0,
        "the oldest spooled event waits since the cut ({age} s)"
    );
    let text = scrape(&c).await;
    assert_eq!(sample(&text, "ossec_store_up"), 0.0);
    assert!(sample(&text, "ossec_spool_oldest_event_age_seconds") > 20.0);
    assert_eq!(
        m.events_stored.load(Relaxed),
        stored_in_outage,
        "nothing is stored while the store is away"
    );

    sleep_until(t0 + restore_after).await;
    let acks_during = m.acks_sent.load(Relaxed) - acks_in_outage;
    assert!(
        acks_during >= AGENTS as u64 * 5,
        "agents are ACKed during the outage ({acks_during} ACKs)"
    );
    // The store is back: the backlog drains while events keep arriving.
    proxy.restore();
    let restored_at = Instant::now();
    let queued_at_restore = m.events_queued.load(Relaxed);
    let stored_at_restore = m.events_stored.load(Relaxed);
    let backlog = queued_at_restore - stored_at_restore;
    // Caught up: less than a second of ingest waits.
    wait_for(
        Duration::from_secs(60),
        "the backlog drains after the restore",
        || {
            let (q, s) = (m.events_queued.load(Relaxed), m.events_stored.load(Relaxed));
            q.saturating_sub(s) < EPS as u64
        },
    )
    .await;
    let drain_s = restored_at.elapsed().as_secs_f64();
    let drained = m.events_stored.load(Relaxed) - stored_at_restore;
    let ingest_in_drain = m.events_queued.load(Relaxed) - queued_at_restore;
    let drain_rate = drained as f64 / drain_s;
    let ingest_rate = (queued_at_restore - queued_at_cut) as f64
        / restored_at.duration_since(cut_at).as_secs_f64();
    let spool_bytes_after = sample(&scrape(&c).await, "ossec_spool_bytes");
    println!(
        "drain: backlog {backlog} events at restore; {drained} events stored in {drain_s:.2} s after the restore = {drain_rate:.0} events/s, while {ingest_in_drain} arrived ({:.0}/s); ingest during the outage {ingest_rate:.0} events/s; drain/ingest = {:.1}x; ossec_spool_bytes after the drain: {spool_bytes_after}",
        ingest_in_drain as f64 / drain_s,
        drain_rate / ingest_rate
    );
    assert!(
        drain_rate >= 2.0 * ingest_rate,
        "the backlog drains at least twice as fast as events arrive ({drain_rate:.0} vs {ingest_rate:.0} events/s)"
    );
    let (code, h) = health(&c).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")), "{h}");
    assert_eq!(h["store"], "up", "{h}");

    let summary = sim.await.unwrap().unwrap();
    let elapsed = t0.elapsed();
    println!("simulator: {}", serde_json::to_string(&summary).unwrap());
    // Everything received is stored.
    wait_for(
        Duration::from_secs(60),
        "every received event is stored",
        || m.events_stored.load(Relaxed) == m.events_queued.load(Relaxed),
    )
    .await;
    let stored_tcp = count(
        &direct,
        "SELECT count(*) FROM events WHERE transport = 'tcp'",
    )
    .await;
    let stored_udp = count(
        &direct,
        "SELECT count(*) FROM events WHERE transport = 'udp'",
    )
    .await;
    let kernel = udp_rcvbuf_errors() - kernel_before;
    let dropped = m.dropped_total();
    let udp_lost = summary.sent_udp as i64 - stored_udp;
    println!(
        "TCP: sent {} stored {stored_tcp}; UDP: sent {} stored {stored_udp}, lost {udp_lost}; counted drops {dropped}, kernel RcvbufErrors delta {kernel} (whole namespace); rejected (replay) {}; run {:.1} s",
        summary.sent_tcp,
        summary.sent_udp,
        m.rejected_total(ossec_proto::RejectKind::Replay),
        elapsed.as_secs_f64()
    );
    assert_eq!(
        (summary.missing_acks, summary.reconnects),
        (0, 0),
        "agents are ACKed throughout and never reconnect: {summary:?}"
    );
    assert!(summary.sent_tcp > 0 && summary.sent_udp > 0);
    assert_eq!(
        stored_tcp, summary.sent_tcp as i64,
        "every TCP event is stored"
    );
    assert!(udp_lost >= 0, "more UDP events stored than sent");
    assert!(
        udp_lost as u64 <= dropped + kernel,
        "UDP losses are counted: {udp_lost} lost, {dropped} dropped by us, {kernel} by the kernel"
    );
    assert_eq!(
        m.events_stored.load(Relaxed) as i64,
        stored_tcp + stored_udp,
        "ossec_events_stored_total matches the table"
    );
    assert_once_and_in_order(&direct).await;
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_blocks_tcp_without_loss() {
    const TCP_AGENTS: usize = 4;
    const PER_AGENT: usize = 1500;
    const UDP_N: usize = 100;
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = PgProxy::start().await;
    let keys = generate_keys(TCP_AGENTS + 1, &mut rand::rngs::StdRng::seed_from_u64(12));
    let url = proxy.url(&db);
    let c = start(&keys, &db, |a| {
        a.database_url = Some(url);
        a.metrics_listen = Some("127.0.0.1:0".into());
        a.spool_max_bytes = Some(256 << 10);
        // A short memory queue in front of the spool, so that a full spool
        // soon stops the TCP readers.
        a.queue_capacity = Some(32);
    })
    .await;
    let m = c.running.metrics.clone();
    let direct = direct_store(&db).await;
    let ks = parse_keys(&keys);

    // Handshakes with the store up; the UDP agent too.
    let mut hands = Vec::new();
    for i in 0..TCP_AGENTS {
        hands.push(Hand::connect(&ks, i, c.addr).await);
    }
    let mut udp_agent = Agent::new(ks.clone(), TCP_AGENTS, Flavor::Wazuh, Cipher::Aes, 99);
    let udp = udp_from(LO.parse::<IpAddr>().unwrap()).await;
    udp.send_to(&udp_agent.startup().unwrap(), c.addr)
        .await
        .unwrap();
    let reply = udp_reply(&udp, Duration::from_secs(10))
        .await
        .expect("UDP startup ACKed");
    assert!(udp_agent.check_reply(&reply).unwrap().ack);

    proxy.cut();
    // Far more than the spool holds (~0.7 KB per event: ~370 fit).
    let total = (TCP_AGENTS * PER_AGENT) as i64;
    let writers: Vec<_> = hands
        .into_iter()
        .map(|mut h| {
            let bytes = h.frames(PER_AGENT);
            tokio::spawn(async move {
                h.link.send_raw(&bytes).await.unwrap();
                h
            })
        })
        .collect();
    wait_for(Duration::from_secs(60), "the spool fills up", || {
        spool_full(&m)
    })
    .await;
    // The collector stops reading TCP: the count of frames taken in settles
    // below what was sent.
    let mut read = m.received_total(Transport::Tcp);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        sleep(Duration::from_secs(1)).await;
        let now = m.received_total(Transport::Tcp);
        if now == read {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "TCP reading does not stop while the spool is full ({now} frames read)"
        );
        read = now;
    }
    println!(
        "spool full: {read} TCP frames read of {} sent (startups included)",
        total + TCP_AGENTS as i64
    );
    assert!(
        (read as i64) < total,
        "backpressure: TCP reading stops ({read} of {total} frames read)"
    );
    assert!(
        spool_full(&m),
        "the spool stays full while the store is away"
    );
    let (code, h) = health(&c).await;
    println!("/health with a full spool: {code} {h}");
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["status"], "down", "{h}");
    assert_eq!(h["store"], "down", "{h}");
    assert_eq!(sample(&scrape(&c).await, "ossec_spool_full"), 1.0);

    // UDP meanwhile: dropped and counted as spool_full.
    let kernel_before = udp_rcvbuf_errors();
    for i in 0..UDP_N {
        let (_, w) = udp_agent
            .next_event(&Mix::default(), ossec_store::now_micros(), false)
            .unwrap();
        udp.send_to(&w, c.addr).await.unwrap();
        if i % 20 == 19 {
            sleep(Duration::from_millis(10)).await;
        }
    }
    wait_for(
        Duration::from_secs(10),
        "UDP datagrams sent while the spool is full are taken in",
        || m.received_total(Transport::Udp) > UDP_N as u64,
    )
    .await;
    let text = scrape(&c).await;
    let spool_drops = sample(&text, "ossec_events_dropped_total{reason=\"spool_full\"}");
    println!("UDP while full: {spool_drops} of {UDP_N} dropped (spool_full)");
    assert!(spool_drops > 0.0, "UDP drops are counted as spool_full");
    assert_eq!(
        sample(&text, "ossec_events_dropped_total{reason=\"queue_full\"}"),
        0.0,
        "a full spool is the reason, not the queue"
    );

    // The store is back: everything sent over TCP is stored, once.
    proxy.restore();
    let restored_at = Instant::now();
    let mut hands = Vec::new();
    for w in writers {
        let mut h = tokio::time::timeout(Duration::from_secs(90), w)
            .await
            .expect("the TCP writers complete after the restore")
            .unwrap();
        h.barrier(Duration::from_secs(60)).await;
        hands.push(h);
    }
    let stored_tcp = wait_count(
        &direct,
        "SELECT count(*) FROM events WHERE transport = 'tcp'",
        total,
        Duration::from_secs(60),
    )
    .await;
    println!(
        "after the restore: {stored_tcp} of {total} TCP events stored in {:.1} s",
        restored_at.elapsed().as_secs_f64()
    );
    assert_eq!(stored_tcp, total, "every TCP event is stored");
    let stored_udp = count(
        &direct,
        "SELECT count(*) FROM events WHERE transport = 'udp'",
    )
    .await;
    let dropped = m.dropped_total() as i64;
    let kernel = (udp_rcvbuf_errors() - kernel_before) as i64;
    assert!(
        stored_udp + dropped <= UDP_N as i64 && stored_udp + dropped + kernel >= UDP_N as i64,
        "UDP: {stored_udp} stored + {dropped} dropped (kernel: {kernel}) of {UDP_N}"
    );
    wait_for(
        Duration::from_secs(20),
        "the spool takes events again",
        || !spool_full(&m),
    )
    .await;
    let (code, h) = health(&c).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")), "{h}");
    assert_once_and_in_order(&direct).await;
    drop(hands);
    c.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drop_newest_drops_and_counts() {
    const N: i64 = 3000;
    const AFTER: i64 = 100;
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = PgProxy::start().await;
    let keys = generate_keys(1, &mut rand::rngs::StdRng::seed_from_u64(13));
    let url = proxy.url(&db);
    let c = start(&keys, &db, |a| {
        a.database_url = Some(url);
        a.spool_max_bytes = Some(256 << 10);
        a.spool_when_full = Some(WhenFull::DropNewest);
    })
    .await;
    let m = c.running.metrics.clone();
    let direct = direct_store(&db).await;
    let mut h = Hand::connect(&parse_keys(&keys), 0, c.addr).await;

    proxy.cut();
    let bytes = h.frames(N as usize);
    h.link.send_raw(&bytes).await.unwrap();
    // Once the keepalive behind them is ACKed, ingest has seen all N.
    h.barrier(Duration::from_secs(30)).await;
    assert_eq!(m.events_queued.load(Relaxed), N as u64);
    wait_for(
        Duration::from_secs(10),
        "the spool refuses what does not fit",
        || m.dropped_total() > 0,
    )
    .await;

    proxy.restore();
    let stored = |m: &Metrics| m.events_stored.load(Relaxed) as i64;
    wait_for(
        Duration::from_secs(60),
        "every event is stored or dropped after the restore",
        || stored(&m) + m.dropped_total() as i64 >= N,
    )
    .await;
    let in_table = wait_count(
        &direct,
        "SELECT count(*) FROM events",
        stored(&m),
        Duration::from_secs(10),
    )
    .await;
    let dropped = m.dropped_total() as i64;
    println!("drop-newest: {N} sent, {in_table} stored, {dropped} dropped (spool_full)");
    assert_eq!(
        in_table,
        stored(&m),
        "ossec_events_stored_total matches the table"
    );
    assert_eq!(in_table + dropped, N, "stored + dropped == sent");
    assert!(in_table > 0 && dropped > 0, "some fit, some did not");
    let text = c.running.metrics.render(0, 1, &[]);
    assert_eq!(
        sample(&text, "ossec_events_dropped_total{reason=\"spool_full\"}") as i64,
        dropped,
        "all drops have the reason spool_full"
    );

    // Drained, the spool takes events again: nothing more is dropped.
    let bytes = h.frames(AFTER as usize);
    h.link.send_raw(&bytes).await.unwrap();
    h.barrier(Duration::from_secs(30)).await;
    let after = wait_count(
        &direct,
        "SELECT count(*) FROM events",
        in_table + AFTER,
        Duration::from_secs(30),
    )
    .await;
    println!(
        "after the drain: {} of {AFTER} more events stored, {} more dropped",
        after - in_table,
        m.dropped_total() as i64 - dropped
    );
    assert_eq!(
        (after, m.dropped_total() as i64),
        (in_table + AFTER, dropped),
        "after the drain the spool takes every new event"
    );
    assert_once_and_in_order(&direct).await;
    c.running.shutdown().await.unwrap();
}
