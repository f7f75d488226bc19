//! Test harness: a real collector on loopback sockets, a fresh database per
//! test (SQLite file or PostgreSQL database), and a minimal agent built on
//! the protocol crate that sends bytes and decodes replies as an agent would.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ossec_collector::config::ServeArgs;
use ossec_collector::server::{self, Running};
use ossec_proto::codec::{parse_wire, Wire};
use ossec_proto::frame::FrameReader;
use ossec_proto::{AgentKey, ClientKeys, Decoder};
use ossec_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

pub fn jsonl(p: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(repo(p))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub url: String,
    pg_admin: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.path().join("events.db").display()),
                pg_admin: None,
                _dir: dir,
            },
            Backend::Postgres => {
                use sqlx::Connection;
                let admin = admin_url();
                let name = format!(
                    "oc_test_{}_{}_{}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::Relaxed),
                    rand::random::<u32>()
                );
                let mut c = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (set DATABASE_URL): {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                let base = match admin.rfind('/') {
                    Some(i) if i > "postgres://".len() => &admin[..i],
                    _ => admin.as_str(),
                };
                TestDb {
                    url: format!("{base}/{name}"),
                    pg_admin: Some((admin.clone(), name)),
                    _dir: dir,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg_admin.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A collector on 127.0.0.1 with a random port (UDP and TCP share it).
pub struct Collector {
    pub running: Running,
    pub addr: SocketAddr,
    pub keys_path: PathBuf,
    _dir: tempfile::TempDir,
}

pub async fn start(keys: &str, db: &TestDb, tweak: impl FnOnce(&mut ServeArgs)) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let keys_path = dir.path().join("client.keys");
    std::fs::write(&keys_path, keys).unwrap();
    let mut args = ServeArgs {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        keys: Some(keys_path.clone()),
        database_url: Some(db.url.clone()),
        metrics_listen: Some("off".into()),
        flush_interval_ms: Some(20),
        udp_workers: Some(2),
        // Each collector its own spool (the default for PostgreSQL is the
        // working directory, shared by parallel tests).
        spool_dir: Some(dir.path().join("spool").display().to_string()),
        ..Default::default()
    };
    tweak(&mut args);
    let running = server::start(args.resolve().unwrap()).await.unwrap();
    let addr = running.tcp_addr.or(running.udp_addr).unwrap();
    Collector {
        running,
        addr,
        keys_path,
        _dir: dir,
    }
}

/// Rows of `events` as comparable tuples:
/// (agent_id, transport, queue, queue_name, location, message, global, local, source_ip).
pub type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
);

pub async fn events(store: &Store) -> Vec<Row> {
    const Q: &str = "SELECT agent_id, transport, queue, queue_name, location, message, global_counter, CAST(local_counter AS BIGINT), source_ip FROM events ORDER BY id";
    match store {
        Store::Postgres(p) => sqlx::query_as(Q).fetch_all(p).await.unwrap(),
        Store::Sqlite(p) => sqlx::query_as(Q).fetch_all(p).await.unwrap(),
    }
}

pub async fn count(store: &Store, sql: &str) -> i64 {
    match store {
        Store::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Store::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
    }
}

/// Waits until `events` has `n` rows (and stays there a moment).
pub async fn wait_events(store: &Store, n: i64) -> Vec<Row> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let c = count(store, "SELECT COUNT(*) FROM events").await;
        if c >= n || tokio::time::Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(150)).await;
            return events(store).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An agent's status and a few columns as the `agents` table shows them.
pub async fn agent_row(
    store: &Store,
    id: &str,
) -> (String, Option<String>, Option<String>, Option<String>) {
    const Q: &str = "SELECT status, version, hostname, cipher FROM agents WHERE id = $1";
    match store {
        Store::Postgres(p) => sqlx::query_as(Q).bind(id).fetch_one(p).await.unwrap(),
        Store::Sqlite(p) => sqlx::query_as(Q).bind(id).fetch_one(p).await.unwrap(),
    }
}

/// Polls the agents table until `id` has `status`.
pub async fn wait_status(store: &Store, id: &str, status: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if agent_row(store, id).await.0 == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Decodes a manager→agent reply as the agent would: with its own key.
pub fn open_reply(
    key: &AgentKey,
    wire: &[u8],
) -> Result<(Vec<u8>, ossec_proto::Cipher, Option<ossec_proto::AesIv>), String> {
    let Ok(Wire::Sealed { id: None, sealed }) = parse_wire(wire) else {
        return Err(format!(
            "reply is not a sealed message without prefix: {wire:02x?}"
        ));
    };
    let mut d = Decoder::new();
    let o = d.open(key, sealed).map_err(|e| e.to_string())?;
    Ok((o.payload.to_vec(), o.cipher, o.aes_iv))
}

pub fn agent_key(keys: &str, id: &str) -> AgentKey {
    ClientKeys::parse(keys.as_bytes())
        .unwrap()
        .by_id(id)
        .unwrap()
        .agent_key
        .clone()
}

/// A UDP agent socket bound to `src` on loopback.
pub async fn udp_from(src: IpAddr) -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(src, 0)).await.unwrap()
}

/// Receives one datagram, or None after `wait`.
pub async fn udp_reply(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// A TCP agent connection from `src`.
pub struct TcpAgent {
    pub stream: TcpStream,
    reader: FrameReader,
}

impl TcpAgent {
    pub async fn connect(src: IpAddr, server: SocketAddr) -> TcpAgent {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(src, 0)).unwrap();
        TcpAgent {
            stream: s.connect(server).await.unwrap(),
            reader: FrameReader::new(),
        }
    }

    /// Wraps a stream connected any other way (e.g. over IPv6).
    pub fn from_stream(stream: TcpStream) -> TcpAgent {
        TcpAgent {
            stream,
            reader: FrameReader::new(),
        }
    }

    pub async fn send(&mut self, wire: &[u8]) {
        let mut f = Vec::new();
        ossec_proto::frame::encode_frame(wire, &mut f).unwrap();
        self.stream.write_all(&f).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next frame, or None on timeout or close.
    pub async fn reply(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Ok(Some(f)) = self.reader.next_frame() {
                return Some(f.to_vec());
            }
            let mut buf = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.reader.feed(&buf[..n]),
            }
        }
    }

    /// Whether the server closed the connection within `wait`.
    pub async fn closed(&mut self, wait: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// The vectors' client.keys with IP-bound agents moved to loopback
/// addresses (10.0.0.12 → 127.0.0.12, 10.0.0.30 → 127.0.0.30,
/// 192.168.10.0/24 → 127.0.10.0/24).
pub fn loopback_vector_keys() -> String {
    std::fs::read_to_string(repo("testdata/vectors/client.keys"))
        .unwrap()
        .replace(" 10.0.0.12 ", " 127.0.0.12 ")
        .replace(" 10.0.0.30 ", " 127.0.0.30 ")
        .replace(" 192.168.10.0/24 ", " 127.0.10.0/24 ")
}

/// Where a vector must come from after the loopback rewrite.
pub fn vector_source(v: &serde_json::Value) -> IpAddr {
    match (v["source_ip"].as_str(), v["agent_id"].as_str()) {
        (Some("10.0.0.12"), _) => "127.0.0.12".parse().unwrap(),
        (Some("10.0.0.30"), _) => "127.0.0.30".parse().unwrap(),
        (Some(other), _) => panic!("unexpected source {other}"),
        (None, Some("004")) => "127.0.10.5".parse().unwrap(),
        _ => "127.0.0.1".parse().unwrap(),
    }
}

/// Independent split of `Q:location:message` with Wazuh's `|` escapes.
pub fn split_event(p: &str) -> (String, String, String) {
    let (q, rest) = p.split_at(1);
    let rest = &rest[1..];
    let (mut loc, mut chars) = (String::new(), rest.char_indices());
    let end = loop {
        match chars.next() {
            Some((_, '|')) => loc.extend(chars.next().map(|c| c.1)),
            Some((i, ':')) => break i,
            Some((_, c)) => loc.push(c),
            None => panic!("no location end in {p}"),
        }
    };
    (q.to_owned(), loc, rest[end + 1..].to_owned())
}

/// A TCP proxy in front of the machine's PostgreSQL that a test cuts and
/// restores (a store outage without touching the shared server).
pub struct PgProxy {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    /// Bumped on every cut: connections of an older generation close.
    generation: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

use std::sync::Arc;

impl PgProxy {
    /// Starts the proxy towards the server of [`admin_url`] (host:port).
    pub async fn start() -> PgProxy {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        let admin = admin_url();
        let hostport = admin
            .trim_start_matches("postgres://")
            .trim_start_matches("postgresql://")
            .split('/')
            .next()
            .unwrap()
            .rsplit('@')
            .next()
            .unwrap()
            .to_owned();
        let target = if hostport.contains(':') {
            hostport
        } else {
            format!("{hostport}:5432")
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (up2, gen2) = (up.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let gen = gen2.clone();
                let mine = gen.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    tokio::pin!(copy);
                    loop {
                        tokio::select! {
                            _ = &mut copy => return,
                            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                                if gen.load(Ordering::SeqCst) != mine {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        PgProxy {
            port,
            up,
            generation,
            task,
        }
    }

    /// `db`'s URL through the proxy.
    pub fn url(&self, db: &TestDb) -> String {
        let name = db.url.rsplit('/').next().unwrap();
        let admin = admin_url();
        let user = admin
            .trim_start_matches("postgres://")
            .split('@')
            .next()
            .filter(|u| !u.contains('/'))
            .unwrap_or("postgres")
            .to_owned();
        format!("postgres://{user}@127.0.0.1:{}/{name}", self.port)
    }

    /// The store goes away: open connections are closed, new ones refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Inserts rows as a release before `events.data` did (the columns of
/// migrations 0001–0007).
pub async fn insert_old_schema(pool: &sqlx::PgPool, rows: &[ossec_store::EventRow]) {
    for r in rows {
        sqlx::query(
            "INSERT INTO events (received_at, agent_id, agent_name, source_ip, transport, queue, queue_name, location, message, global_counter, local_counter) \
             VALUES ('epoch'::timestamptz + $1 * interval '1 microsecond', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(r.received_at)
        .bind(&*r.agent_id)
        .bind(&*r.agent_name)
        .bind(r.source_ip.to_string())
        .bind(r.transport)
        .bind((r.queue as char).to_string())
        .bind(r.queue_name)
        .bind(String::from_utf8_lossy(&r.location).into_owned())
        .bind(String::from_utf8_lossy(&r.message).into_owned())
        .bind(i64::from(r.global_counter))
        .bind(r.local_counter as i32)
        .execute(pool)
        .await
        .unwrap();
    }
}
