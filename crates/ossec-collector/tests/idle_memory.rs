//! Idle TCP connections: what a connected, quiet agent costs the collector
//! in heap (a fleet keeps tens of thousands connected that send little
//! more than a keepalive), and that framing still works across the buffer
//! an idle connection gives back: a frame split into single bytes with
//! pauses between them, a large frame (about 30 KB) split across reads,
//! frames that arrive after idle periods.
//!
//! The heap is counted by this binary's global allocator (live bytes and
//! live blocks by size), around a collector in this process; the agents
//! are blocking `std` sockets so that they allocate nothing on the client
//! side while connected. The tests of this file take one lock: under
//! `cargo test` they would otherwise count each other's allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ossec_agent_sim::agent::{Agent as SimAgent, Flavor};
use ossec_proto::{Cipher, ClientKeys};
use rand::SeedableRng;

/// Counts live heap bytes, and live blocks in 64-byte size classes (the
/// last class: everything of 16 KiB and more).
struct Counting;

const CLASS: usize = 64;
const CLASSES: usize = 257;
static LIVE: AtomicI64 = AtomicI64::new(0);
static BLOCKS: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];

fn note(size: usize, n: i64) {
    LIVE.fetch_add(n * size as i64, Relaxed);
    BLOCKS[(size.saturating_sub(1) / CLASS).min(CLASSES - 1)].fetch_add(n, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            note(l.size(), 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            note(l.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        note(l.size(), -1);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            note(l.size(), -1);
            note(new, 1);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn snapshot() -> (i64, Vec<i64>) {
    (
        LIVE.load(Relaxed),
        BLOCKS.iter().map(|b| b.load(Relaxed)).collect(),
    )
}

fn framed(wire: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    ossec_proto::frame::encode_frame(wire, &mut f).unwrap();
    f
}

/// Reads one frame from a blocking socket.
fn read_frame(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut f = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut f).unwrap();
    f
}

/// Connects agents `range` of `keys`: startup and keepalive, each ACKed,
/// then leaves them connected and quiet. Returns the sockets.
fn connect_agents(
    addr: SocketAddr,
    keys: &Arc<ClientKeys>,
    range: std::ops::Range<usize>,
    out: &mut Vec<std::net::TcpStream>,
) {
    for i in range {
        let mut agent = SimAgent::new(keys.clone(), i, Flavor::Wazuh, Cipher::Aes, i as u64);
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&framed(&agent.startup().unwrap())).unwrap();
        assert!(agent.check_reply(&read_frame(&mut s)).unwrap().ack);
        s.write_all(&framed(&agent.keepalive(None).unwrap()))
            .unwrap();
        assert!(agent.check_reply(&read_frame(&mut s)).unwrap().ack);
        out.push(s);
    }
}

/// The live heap once it stopped moving (the state writer's flush of the
/// new agents' records and other background work are done).
async fn settled() -> (i64, Vec<i64>) {
    let mut last = snapshot();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = snapshot();
        if (now.0 - last.0).abs() < 16 * 1024 {
            return now;
        }
        last = now;
    }
    last
}

/// A collector on SQLite, spool off, with `n` generated agents' keys
/// (seeded); the database must outlive it.
async fn collector_for(n: usize, seed: u64) -> (Arc<ClientKeys>, TestDb, Collector) {
    let keys_text =
        ossec_agent_sim::generate_keys(n, &mut rand::rngs::SmallRng::seed_from_u64(seed));
    let keys = Arc::new(ClientKeys::parse(keys_text.as_bytes()).unwrap());
    let db = TestDb::new(Backend::Sqlite).await;
    let c = start(&keys_text, &db, |a| {
        a.spool_dir = Some("off".into());
    })
    .await;
    (keys, db, c)
}

/// A connected, idle agent keeps no read buffer (4 KiB before), no
/// replies buffer, and a connection task without the rare paths' futures:
/// measured over the second of two equal groups of agents, so that what
/// the first connections grow once (slabs, tables) is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_costs_little_heap() {
    let _one = ONE_AT_A_TIME.lock().await;
    const N: usize = 200;
    let (keys, _db, c) = collector_for(2 * N, 7).await;
    let addr = c.addr;
    let (mut socks, k) = (Vec::with_capacity(2 * N), keys.clone());
    socks = tokio::task::spawn_blocking(move || {
        connect_agents(addr, &k, 0..N, &mut socks);
        socks
    })
    .await
    .unwrap();
    let (before, before_blocks) = settled().await;
    let k = keys.clone();
    socks = tokio::task::spawn_blocking(move || {
        connect_agents(addr, &k, N..2 * N, &mut socks);
        socks
    })
    .await
    .unwrap();
    let (after, after_blocks) = settled().await;
    let per_conn = (after - before) as f64 / N as f64;
    let mut grown: Vec<(i64, usize)> = before_blocks
        .iter()
        .zip(&after_blocks)
        .enumerate()
        .map(|(i, (b, a))| (a - b, i))
        .filter(|(d, _)| *d >= N as i64 / 2)
        .collect();
    grown.sort_unstable_by(|a, b| b.cmp(a));
    let classes: Vec<String> = grown
        .iter()
        .map(|(d, i)| format!("{d} × {}..{} B", i * CLASS + 1, (i + 1) * CLASS))
        .collect();
    eprintln!(
        "heap per idle TCP agent: {per_conn:.0} B; blocks that grew: {}",
        classes.join(", ")
    );
    assert_eq!(
        c.running
            .metrics
            .tcp_open
            .load(std::sync::atomic::Ordering::Relaxed),
        2 * N as i64
    );
    // A read buffer per idle connection alone would be 4 KiB.
    assert!(
        per_conn < 3.0 * 1024.0,
        "an idle TCP agent costs {per_conn:.0} B of heap"
    );
    drop(socks);
    c.running.shutdown().await.unwrap();
}

/// The buffer an idle connection gives back is taken again for each read,
/// and a frame survives that: one split into single bytes with pauses
/// (each byte a separate read after the connection went idle), a large
/// one (about 30 KB) split across reads, and one after an idle period. Every event is stored, in order, each with its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_survive_the_idle_buffer_being_given_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (keys, _db, c) = collector_for(1, 9).await;
    let addr = c.addr;
    let big: String = {
        use rand::Rng;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        // Random hex: compresses to about half, so the frame is ~30 KB,
        // many reads of the collector's socket.
        (0..60_000)
            .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
            .collect()
    };
    let messages = vec![
        "split into single bytes".to_string(),
        big.clone(),
        "after an idle period".to_string(),
    ];
    let m = messages.clone();
    tokio::task::spawn_blocking(move || {
        let mut agent = SimAgent::new(keys, 0, Flavor::Wazuh, Cipher::Aes, 1);
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(&framed(&agent.startup().unwrap())).unwrap();
        assert!(agent.check_reply(&read_frame(&mut s)).unwrap().ack);
        let seal = |agent: &mut SimAgent, msg: &str| {
            framed(
                &agent
                    .seal(format!("1:/var/log/test:{msg}").as_bytes())
                    .unwrap(),
            )
        };
        // Idle first, then one byte at a time.
        std::thread::sleep(Duration::from_millis(300));
        for b in seal(&mut agent, &m[0]) {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        // The large one in uneven pieces.
        let f = seal(&mut agent, &m[1]);
        assert!(f.len() > 16 * 1024, "the large frame is {} bytes", f.len());
        for piece in f.chunks(7_001) {
            s.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(500));
        s.write_all(&seal(&mut agent, &m[2])).unwrap();
        s
    })
    .await
    .unwrap();
    let rows = wait_events(&c.running.store, 3).await;
    let stored: Vec<&str> = rows.iter().map(|r| r.5.as_str()).collect();
    assert_eq!(
        stored,
        messages.iter().map(String::as_str).collect::<Vec<_>>()
    );
    c.running.shutdown().await.unwrap();
}
