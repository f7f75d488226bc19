//! The runtime: one lightweight tokio task per agent, the rate schedule,
//! reconnects, the shared counters and the JSON summary.
//!
//! Owns the agent life cycle of PROTOCOL.md §6/§8/§13 as seen from the
//! agent: connect (optionally from its own loopback source address), send
//! startup and resend it until it is ACKed (on TCP over the same connection,
//! a new connection after [`STARTUP_TRIES`]), then the first event and a
//! keepalive, keepalives every `--keepalive`, events on a per-agent schedule
//! (`--eps` spread over the agents), and a reconnect when no ACK arrives
//! within `3 × keepalive` or the connection fails. At the end it waits a
//! little for outstanding ACKs, sends `#!-agent shutdown ` (Wazuh), and on
//! TCP half-closes and reads until the server closes, so that the server
//! has read every byte sent before the simulator exits.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ossec_proto::frame::{encode_frame, FrameReader};
use ossec_proto::{Cipher, ClientKeys};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::agent::{Agent, Flavor};
use crate::events::{EventKind, Mix};
use crate::preseal::{self, seq_of, Presealed};

/// Startup messages sent on one connection before reconnecting.
pub const STARTUP_TRIES: u32 = 5;
/// Most event frames written in one go.
pub const BATCH: usize = 32;
/// Receive buffer per agent. UDP: a whole datagram (replies are ACKs of
/// ~100 bytes; OSSEC's limit is 6144). TCP: any chunk size works, frames are
/// reassembled.
const RECV_BUF_UDP: usize = 6144 + 64;
const RECV_BUF_TCP: usize = 1024;

/// `tcp`, `udp` or half of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportChoice {
    Tcp,
    Udp,
    /// Even agents TCP, odd agents UDP.
    Mixed,
}

/// `aes`, `blowfish` or both (alternating in pairs of agents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CipherChoice {
    Aes,
    Blowfish,
    Mixed,
}

/// The transport of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// An IPv4 or IPv6 network, e.g. `127.1.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}` is not ADDR/PREFIX (e.g. 127.1.0.0/16)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("`{s}`: bad prefix length"))?
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Usable addresses (without network and broadcast when there are more than 2).
    pub fn size(&self) -> u128 {
        let bits = if self.addr.is_ipv4() { 32 } else { 128 } - u32::from(self.prefix);
        let n = if bits >= 127 {
            u128::MAX
        } else {
            1u128 << bits
        };
        if n > 2 {
            n - 2
        } else {
            n
        }
    }

    /// The `i`-th usable address (wrapping around).
    pub fn nth(&self, i: u128) -> IpAddr {
        let size = self.size();
        let bits = if self.addr.is_ipv4() { 32 } else { 128 } - u32::from(self.prefix);
        let off = if (1u128.checked_shl(bits).unwrap_or(u128::MAX)) > 2 {
            1 + i % size
        } else {
            i % size
        };
        match self.addr {
            IpAddr::V4(a) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                IpAddr::V4(Ipv4Addr::from((u32::from(a) & mask) | off as u32))
            }
            IpAddr::V6(a) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                IpAddr::V6(Ipv6Addr::from((u128::from(a) & mask) | off))
            }
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub server: SocketAddr,
    /// The agents; the first `agents` entries are simulated.
    pub keys: Arc<ClientKeys>,
    pub agents: usize,
    pub flavor: Flavor,
    pub transport: TransportChoice,
    pub cipher: CipherChoice,
    /// Events per second over all agents; 0 = as fast as possible.
    pub eps: f64,
    pub duration: Duration,
    pub keepalive: Duration,
    /// Seconds between startup resends while waiting for the ACK.
    pub startup_retry: Duration,
    /// No ACK for this long after a control message: reconnect.
    pub ack_timeout: Duration,
    /// Agents start spread over this time.
    pub ramp_up: Duration,
    /// At the end, how long to wait for outstanding ACKs.
    pub ack_grace: Duration,
    /// At the end, how long to wait for the server to read everything (TCP).
    pub drain_timeout: Duration,
    pub source_ips: Option<Cidr>,
    pub stamp: bool,
    pub mix: Mix,
    /// zlib level of every message (real agents: 9).
    pub zlib_level: u32,
    /// Events to seal before the run, over all agents (0: seal every event
    /// when it is sent). See [`crate::preseal`].
    pub preseal: u64,
    /// With `preseal` and `stamp`: one live stamped event after every this
    /// many pre-sealed ones of an agent.
    pub stamp_every: usize,
    pub seed: u64,
    /// Progress line on stderr every so often.
    pub progress: Option<Duration>,
}

impl SimConfig {
    /// Defaults for `agents` agents of `keys` against `server`.
    pub fn new(server: SocketAddr, keys: Arc<ClientKeys>) -> Self {
        let agents = keys.len();
        SimConfig {
            server,
            keys,
            agents,
            flavor: Flavor::Wazuh,
            transport: TransportChoice::Tcp,
            cipher: CipherChoice::Aes,
            eps: 0.0,
            duration: Duration::from_secs(10),
            keepalive: Duration::from_secs(20),
            startup_retry: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(60),
            ramp_up: Duration::ZERO,
            ack_grace: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(120),
            source_ips: None,
            stamp: false,
            mix: Mix::default(),
            zlib_level: 9,
            preseal: 0,
            stamp_every: preseal::STAMP_EVERY,
            seed: rand::random(),
            progress: None,
        }
    }

    pub fn transport_of(&self, i: usize) -> Transport {
        match (self.flavor, self.transport) {
            (Flavor::Ossec, _) | (_, TransportChoice::Udp) => Transport::Udp,
            (_, TransportChoice::Tcp) => Transport::Tcp,
            (_, TransportChoice::Mixed) if i & 1 == 0 => Transport::Tcp,
            _ => Transport::Udp,
        }
    }

    pub fn cipher_of(&self, i: usize) -> Cipher {
        match self.cipher {
            CipherChoice::Aes => Cipher::Aes,
            CipherChoice::Blowfish => Cipher::Blowfish,
            CipherChoice::Mixed if (i >> 1) & 1 == 0 => Cipher::Aes,
            CipherChoice::Mixed => Cipher::Blowfish,
        }
    }
}

/// 100 µs buckets up to 10 s, then one overflow bucket.
const HIST_BUCKETS: usize = 100_001;

/// Counters shared by every agent task.
pub struct Stats {
    pub sent: AtomicU64,
    pub sent_tcp: AtomicU64,
    pub sent_udp: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub by_kind: [AtomicU64; 5],
    pub startups: AtomicU64,
    pub keepalives: AtomicU64,
    pub shutdowns: AtomicU64,
    pub acks: AtomicU64,
    pub acks_over_1s: AtomicU64,
    pub replies_not_ack: AtomicU64,
    pub replies_out_of_order: AtomicU64,
    pub reply_errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub ack_timeouts: AtomicU64,
    pub startup_retries: AtomicU64,
    pub connect_errors: AtomicU64,
    pub io_errors: AtomicU64,
    pub encode_errors: AtomicU64,
    pub unclean_closes: AtomicU64,
    pub agents_handshaken: AtomicU64,
    pub connected: AtomicI64,
    pub presealed_sent: AtomicU64,
    pub presealed_skipped: AtomicU64,
    pub presealed_exhausted: AtomicU64,
    ack_max_us: AtomicU64,
    ack_hist: Box<[AtomicU64]>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            sent: Default::default(),
            sent_tcp: Default::default(),
            sent_udp: Default::default(),
            bytes_sent: Default::default(),
            by_kind: Default::default(),
            startups: Default::default(),
            keepalives: Default::default(),
            shutdowns: Default::default(),
            acks: Default::default(),
            acks_over_1s: Default::default(),
            replies_not_ack: Default::default(),
            replies_out_of_order: Default::default(),
            reply_errors: Default::default(),
            reconnects: Default::default(),
            ack_timeouts: Default::default(),
            startup_retries: Default::default(),
            connect_errors: Default::default(),
            io_errors: Default::default(),
            encode_errors: Default::default(),
            unclean_closes: Default::default(),
            agents_handshaken: Default::default(),
            connected: Default::default(),
            presealed_sent: Default::default(),
            presealed_skipped: Default::default(),
            presealed_exhausted: Default::default(),
            ack_max_us: Default::default(),
            ack_hist: (0..HIST_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Stats {
    fn ack_latency(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.ack_max_us.fetch_max(us, Relaxed);
        self.ack_hist[((us / 100) as usize).min(HIST_BUCKETS - 1)].fetch_add(1, Relaxed);
        if d > Duration::from_secs(1) {
            self.acks_over_1s.fetch_add(1, Relaxed);
        }
    }

    /// The `q` quantile of ACK latencies in ms (bucket upper bound).
    fn ack_quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.ack_hist.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, c) in counts.iter().enumerate() {
            acc += c;
            if acc >= want {
                return Some(if i == HIST_BUCKETS - 1 {
                    self.ack_max_us.load(Relaxed) as f64 / 1000.0
                } else {
                    (i as f64 + 1.0) / 10.0
                });
            }
        }
        None
    }

    fn sent_event(&self, t: Transport, kind: EventKind, bytes: usize) {
        self.sent.fetch_add(1, Relaxed);
        match t {
            Transport::Tcp => &self.sent_tcp,
            Transport::Udp => &self.sent_udp,
        }
        .fetch_add(1, Relaxed);
        self.by_kind[kind.index()].fetch_add(1, Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }
}

/// The JSON summary printed at the end.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Events sent (written to the socket without error).
    pub sent: u64,
    /// `#!-agent ack ` replies received and accepted.
    pub acked: u64,
    /// Startups and keepalives sent that got no ACK.
    pub missing_acks: u64,
    pub reconnects: u64,
    /// connect + I/O + reply decoding + encoding errors + unclean closes.
    pub errors: u64,
    /// `sent` over the sending time (not counting the end-of-run drain).
    pub achieved_eps: f64,
    pub flavor: String,
    pub transport: String,
    pub cipher: String,
    pub agents: usize,
    pub target_eps: f64,
    pub duration_s: f64,
    pub elapsed_s: f64,
    pub sent_tcp: u64,
    pub sent_udp: u64,
    pub bytes_sent: u64,
    pub events_by_kind: serde_json::Map<String, serde_json::Value>,
    pub control_sent: u64,
    pub startups_sent: u64,
    pub keepalives_sent: u64,
    pub shutdowns_sent: u64,
    pub startup_retries: u64,
    pub acks_over_1s: u64,
    pub ack_latency_p50_ms: Option<f64>,
    pub ack_latency_p99_ms: Option<f64>,
    pub max_ack_latency_ms: f64,
    pub replies_not_ack: u64,
    pub replies_out_of_order: u64,
    pub reply_errors: u64,
    pub ack_timeouts: u64,
    pub connect_errors: u64,
    pub io_errors: u64,
    pub encode_errors: u64,
    pub unclean_closes: u64,
    /// Agents that completed at least one handshake.
    pub agents_handshaken: u64,
    pub stamp: bool,
    pub zlib_level: u32,
    /// `--preseal`: events sealed before the run, how many of them were
    /// sent, how many were skipped (their counter went to a live message;
    /// never sent), how many agents used all theirs up before the end (and
    /// then sent no more events), and the seconds and bytes the sealing took.
    pub presealed: u64,
    pub presealed_sent: u64,
    pub presealed_skipped: u64,
    pub presealed_exhausted_agents: u64,
    pub preseal_s: f64,
    /// CPU the whole process had used when the pre-sealing ended (to take
    /// off the simulator's CPU over the run).
    pub preseal_cpu_s: f64,
    pub preseal_mib: f64,
}

/// User + system CPU seconds of this process so far.
fn process_cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct passed.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return 0.0;
        }
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// One agent's connection.
enum Link {
    Tcp {
        stream: TcpStream,
        frames: FrameReader,
    },
    Udp(UdpSocket),
}

async fn connect(
    t: Transport,
    server: SocketAddr,
    source: Option<IpAddr>,
) -> io::Result<(Link, IpAddr)> {
    match t {
        Transport::Tcp => {
            let sock = if server.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(ip) = source {
                sock.bind(SocketAddr::new(ip, 0))?;
            }
            let stream = timeout(Duration::from_secs(10), sock.connect(server))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            let local = stream.local_addr()?.ip();
            Ok((
                Link::Tcp {
                    stream,
                    frames: FrameReader::new(),
                },
                local,
            ))
        }
        Transport::Udp => {
            let bind = match (source, server) {
                (Some(ip), _) => SocketAddr::new(ip, 0),
                (None, SocketAddr::V4(_)) => SocketAddr::from(([0, 0, 0, 0], 0)),
                (None, SocketAddr::V6(_)) => SocketAddr::from(([0u16; 8], 0)),
            };
            let sock = UdpSocket::bind(bind).await?;
            sock.connect(server).await?;
            let local = sock.local_addr()?.ip();
            Ok((Link::Udp(sock), local))
        }
    }
}

/// A reply received at some instant.
type Received = (Instant, Vec<u8>);

impl Link {
    /// Waits for the next data; appends whole replies to `out`.
    async fn recv(&mut self, buf: &mut [u8], out: &mut Vec<Received>) -> io::Result<()> {
        match self {
            Link::Tcp { stream, frames } => {
                let n = stream.read(buf).await?;
                feed(frames, &buf[..n], out)
            }
            Link::Udp(s) => {
                let n = s.recv(buf).await?;
                out.push((Instant::now(), buf[..n].to_vec()));
                Ok(())
            }
        }
    }

    /// Reads whatever has already arrived, without waiting.
    fn try_recv(&mut self, buf: &mut [u8], out: &mut Vec<Received>) -> io::Result<()> {
        loop {
            let r = match self {
                Link::Tcp { stream, frames } => match stream.try_read(buf) {
                    Ok(n) => feed(frames, &buf[..n], out),
                    Err(e) => Err(e),
                },
                Link::Udp(s) => s.try_recv(buf).map(|n| {
                    out.push((Instant::now(), buf[..n].to_vec()));
                }),
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends messages (TCP: one write of all frames, reading replies while
    /// the write waits, so that ACK latency is not inflated by our own
    /// backpressure). Returns the bytes put on the wire.
    async fn send(
        &mut self,
        wires: &[Vec<u8>],
        buf: &mut [u8],
        out: &mut Vec<Received>,
    ) -> io::Result<usize> {
        match self {
            Link::Tcp { .. } => {
                let mut data = Vec::with_capacity(wires.iter().map(|w| w.len() + 4).sum());
                for w in wires {
                    encode_frame(w, &mut data)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                }
                self.send_frames(&data, buf, out).await
            }
            Link::Udp(s) => {
                let mut total = 0;
                for w in wires {
                    total += s.send(w).await?;
                }
                Ok(total)
            }
        }
    }

    /// Sends messages that are already TCP-framed (back to back): on TCP in
    /// one write, on UDP one datagram each.
    async fn send_frames(
        &mut self,
        data: &[u8],
        buf: &mut [u8],
        out: &mut Vec<Received>,
    ) -> io::Result<usize> {
        match self {
            Link::Tcp { stream, frames } => {
                let (mut rd, mut wr) = stream.split();
                let write = wr.write_all(data);
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        biased;
                        r = &mut write => return r.map(|()| data.len()),
                        r = rd.read(buf) => {
                            let n = r?;
                            feed(frames, &buf[..n], out)?;
                        }
                    }
                }
            }
            Link::Udp(s) => {
                let mut total = 0;
                for m in preseal::messages(data) {
                    total += s.send(m).await?;
                }
                Ok(total)
            }
        }
    }
}

fn feed(frames: &mut FrameReader, data: &[u8], out: &mut Vec<Received>) -> io::Result<()> {
    if data.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed the connection",
        ));
    }
    frames.feed(data);
    let now = Instant::now();
    while let Some(f) = frames
        .next_frame()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
    {
        out.push((now, f.to_vec()));
    }
    Ok(())
}

/// How a session ended.
enum End {
    /// The run is over (graceful close done or to do).
    Stop,
    /// Reconnect (the counter is already incremented).
    Reconnect,
}

/// One agent's task state.
struct Task {
    sh: Arc<Shared>,
    agent: Agent,
    transport: Transport,
    source: Option<IpAddr>,
    /// Events per second for this agent (0 = unlimited).
    rate: f64,
    /// Startups/keepalives sent and not yet ACKed, oldest first.
    outstanding: VecDeque<Instant>,
    replies: Vec<Received>,
    buf: Box<[u8]>,
    stop: watch::Receiver<bool>,
    handshaken: bool,
    /// `--preseal`: this agent's pre-sealed events.
    preseal: Option<Presealed>,
    /// Its pre-sealed events are used up.
    exhausted: bool,
}

struct Shared {
    cfg: SimConfig,
    stats: Stats,
}

impl Task {
    fn stats(&self) -> &Stats {
        &self.sh.stats
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self, start_delay: Duration) {
        self.connect_loop(start_delay).await;
        if let Some(p) = self.preseal.take() {
            self.sh
                .stats
                .presealed_skipped
                .fetch_add(p.skipped(), Relaxed);
        }
    }

    async fn connect_loop(&mut self, start_delay: Duration) {
        tokio::select! {
            _ = sleep(start_delay) => {}
            _ = self.stop.changed() => return,
        }
        let mut backoff = Duration::from_millis(500);
        while !self.stopping() {
            let (mut link, local) =
                match connect(self.transport, self.sh.cfg.server, self.source).await {
                    Ok(x) => x,
                    Err(e) => {
                        self.stats().connect_errors.fetch_add(1, Relaxed);
                        tracing::debug!(agent = self.agent.id(), "connect failed: {e}");
                        let jitter = self.agent.rng().gen_range(0..500);
                        tokio::select! {
                            _ = sleep(backoff + Duration::from_millis(jitter)) => {}
                            _ = self.stop.changed() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
            backoff = Duration::from_millis(500);
            tracing::debug!(agent = self.agent.id(), local = %local, "connected");
            self.outstanding.clear();
            self.sh.stats.connected.fetch_add(1, Relaxed);
            let end = self.session(&mut link, local).await;
            if let End::Stop = end {
                self.finish(&mut link).await;
            }
            self.sh.stats.connected.fetch_sub(1, Relaxed);
            if let End::Stop = end {
                break;
            }
            // Like a real agent: a short pause, then a new connection.
            let pause = Duration::from_millis(self.agent.rng().gen_range(200..1200));
            tokio::select! {
                _ = sleep(pause) => {}
                _ = self.stop.changed() => {}
            }
        }
    }

    /// Seals one control message, or counts the failure.
    fn control(&mut self, which: &str, local: IpAddr) -> Option<Vec<u8>> {
        let r = match which {
            "startup" => self.agent.startup(),
            _ => self.agent.keepalive(Some(local)),
        };
        self.sync_preseal();
        match r {
            Ok(w) => Some(w),
            Err(e) => {
                self.stats().encode_errors.fetch_add(1, Relaxed);
                tracing::warn!("cannot encode {which}: {e}");
                None
            }
        }
    }

    async fn send_control(&mut self, link: &mut Link, which: &str, local: IpAddr) -> bool {
        let Some(w) = self.control(which, local) else {
            return true;
        };
        let sent_at = Instant::now();
        match link.send(&[w], &mut self.buf, &mut self.replies).await {
            Ok(n) => {
                self.stats().bytes_sent.fetch_add(n as u64, Relaxed);
                match which {
                    "startup" => &self.sh.stats.startups,
                    _ => &self.sh.stats.keepalives,
                }
                .fetch_add(1, Relaxed);
                self.outstanding.push_back(sent_at);
                true
            }
            Err(e) => {
                self.io_error(&e);
                false
            }
        }
    }

    /// After a message was sealed live: pre-sealed events whose counters it
    /// used are skipped, so the server keeps seeing increasing counters.
    fn sync_preseal(&mut self) {
        if let Some(p) = &mut self.preseal {
            p.skip_used(seq_of(self.agent.counter()));
        }
    }

    fn io_error(&self, e: &io::Error) {
        self.stats().io_errors.fetch_add(1, Relaxed);
        tracing::debug!(agent = self.agent.id(), "I/O error: {e}");
    }

    /// Checks the replies received so far; returns whether an ACK came.
    fn process_replies(&mut self) -> bool {
        let mut acked = false;
        let stale = self.sh.cfg.keepalive.min(self.sh.cfg.startup_retry);
        for (at, wire) in std::mem::take(&mut self.replies) {
            match self.agent.check_reply(&wire) {
                Ok(r) => {
                    if !r.in_order {
                        self.stats().replies_out_of_order.fetch_add(1, Relaxed);
                    }
                    if !r.accepted {
                        continue;
                    }
                    if !r.ack {
                        self.stats().replies_not_ack.fetch_add(1, Relaxed);
                        tracing::debug!(
                            agent = self.agent.id(),
                            "reply is not an ACK: {:?}",
                            r.payload_start
                        );
                        continue;
                    }
                    acked = true;
                    self.stats().acks.fetch_add(1, Relaxed);
                    // UDP: a control message older than one period with a
                    // newer one behind it was lost: do not charge its age to
                    // this ACK. (TCP loses nothing: ACKs come in order.)
                    while self.transport == Transport::Udp
                        && self.outstanding.len() > 1
                        && self
                            .outstanding
                            .front()
                            .is_some_and(|t| at.saturating_duration_since(*t) > stale)
                    {
                        self.outstanding.pop_front();
                    }
                    if let Some(sent) = self.outstanding.pop_front() {
                        self.stats().ack_latency(at.saturating_duration_since(sent));
                    }
                }
                Err(e) => {
                    self.stats().reply_errors.fetch_add(1, Relaxed);
                    tracing::debug!(agent = self.agent.id(), "bad reply: {e}");
                }
            }
        }
        acked
    }

    /// Handshake, then keepalives and events until stop or trouble.
    async fn session(&mut self, link: &mut Link, local: IpAddr) -> End {
        // Startup, resent until ACKed.
        let mut tries = 0;
        'handshake: loop {
            if tries == STARTUP_TRIES {
                self.stats().reconnects.fetch_add(1, Relaxed);
                return End::Reconnect;
            }
            if tries > 0 {
                self.stats().startup_retries.fetch_add(1, Relaxed);
            }
            tries += 1;
            if !self.send_control(link, "startup", local).await {
                self.stats().reconnects.fetch_add(1, Relaxed);
                return End::Reconnect;
            }
            let retry_at = Instant::now() + self.sh.cfg.startup_retry;
            loop {
                if self.process_replies() {
                    break 'handshake;
                }
                tokio::select! {
                    biased;
                    _ = self.stop.changed() => return End::Stop,
                    r = link.recv(&mut self.buf, &mut self.replies) => if let Err(e) = r {
                        self.io_error(&e);
                        self.stats().reconnects.fetch_add(1, Relaxed);
                        return End::Reconnect;
                    },
                    _ = sleep_until(retry_at) => continue 'handshake,
                }
            }
        }
        // Startup ACKs that crossed a resend are not waited for.
        self.outstanding.clear();
        tracing::debug!(agent = self.agent.id(), tries, "startup ACKed");
        if !self.handshaken {
            self.handshaken = true;
            self.stats().agents_handshaken.fetch_add(1, Relaxed);
        }
        // After the ACK: "Agent started", then a keepalive (§13).
        if !self
            .send_events(link, 1, Some(EventKind::AgentStarted))
            .await
        {
            return End::Reconnect;
        }
        if !self.send_control(link, "keepalive", local).await {
            self.stats().reconnects.fetch_add(1, Relaxed);
            return End::Reconnect;
        }
        let keepalive = self.sh.cfg.keepalive;
        let ack_timeout = self.sh.cfg.ack_timeout;
        let mut next_keepalive = Instant::now() + keepalive;
        let unlimited = self.rate <= 0.0;
        let interval = if unlimited {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(1.0 / self.rate)
        };
        // Random phase so that agents do not send in lockstep.
        let phase = interval.mul_f64(self.agent.rng().gen::<f64>());
        let ev_start = Instant::now() + phase;
        let mut ev_sent: u64 = 0;
        loop {
            // Sending may never wait (a fast server, big socket buffers), so
            // look for replies on every round.
            if let Err(e) = link.try_recv(&mut self.buf, &mut self.replies) {
                self.io_error(&e);
                self.stats().reconnects.fetch_add(1, Relaxed);
                return End::Reconnect;
            }
            self.process_replies();
            let now = Instant::now();
            if let Some(oldest) = self.outstanding.front() {
                if now.saturating_duration_since(*oldest) > ack_timeout {
                    self.stats().ack_timeouts.fetch_add(1, Relaxed);
                    self.stats().reconnects.fetch_add(1, Relaxed);
                    return End::Reconnect;
                }
            }
            if now >= next_keepalive {
                if !self.send_control(link, "keepalive", local).await {
                    self.stats().reconnects.fetch_add(1, Relaxed);
                    return End::Reconnect;
                }
                next_keepalive += keepalive;
                if next_keepalive < now {
                    next_keepalive = now + keepalive;
                }
                continue;
            }
            let due = if self.exhausted {
                0
            } else if unlimited {
                BATCH as u64
            } else if now >= ev_start {
                let should = (now - ev_start).as_secs_f64() * self.rate;
                (should as u64 + 1).saturating_sub(ev_sent)
            } else {
                0
            };
            if due > 0 {
                let n = due.min(BATCH as u64) as usize;
                match self.send_mix(link, n).await {
                    Some(sent) => ev_sent += sent,
                    None => return End::Reconnect,
                }
                if self.stopping() {
                    return End::Stop;
                }
                // A socket with room completes writes without yielding; let
                // the other agents (and their ACKs) run between batches.
                tokio::task::yield_now().await;
                if unlimited {
                    continue;
                }
            }
            let mut wake = next_keepalive;
            if let Some(oldest) = self.outstanding.front() {
                wake = wake.min(*oldest + ack_timeout);
            }
            if !unlimited && !self.exhausted {
                wake = wake.min(ev_start + interval.mul_f64(ev_sent as f64));
            }
            tokio::select! {
                biased;
                _ = self.stop.changed() => return End::Stop,
                r = link.recv(&mut self.buf, &mut self.replies) => if let Err(e) = r {
                    self.io_error(&e);
                    self.stats().reconnects.fetch_add(1, Relaxed);
                    return End::Reconnect;
                },
                _ = sleep_until(wake) => {}
            }
        }
    }

    /// Sends `n` events of the mix: sealed now, or with `--preseal` the
    /// next pre-sealed ones (with `--stamp`, a live stamped event after
    /// every `--stamp-every`). An agent whose pre-sealed events are
    /// used up sends no more events (it stays connected), so that sealing
    /// never takes CPU from the server during a run.
    /// Returns how many events went out (a stamped one counts against the
    /// agent's rate like any other), `None` when the link failed.
    async fn send_mix(&mut self, link: &mut Link, n: usize) -> Option<u64> {
        let Some(p) = self.preseal.as_mut() else {
            return self.send_events(link, n, None).await.then_some(n as u64);
        };
        if p.remaining() == 0 {
            if !self.exhausted {
                self.exhausted = true;
                self.sh.stats.presealed_exhausted.fetch_add(1, Relaxed);
            }
            return Some(0);
        }
        let (frames, kinds) = p.peek(n);
        let k = kinds.len();
        let before = p.position();
        match link
            .send_frames(frames, &mut self.buf, &mut self.replies)
            .await
        {
            Ok(bytes) => {
                // Bytes on the wire: with the TCP length prefixes, UDP without.
                let stats = &self.sh.stats;
                for &kind in kinds {
                    stats.by_kind[kind.index()].fetch_add(1, Relaxed);
                }
                stats.sent.fetch_add(k as u64, Relaxed);
                match self.transport {
                    Transport::Tcp => &stats.sent_tcp,
                    Transport::Udp => &stats.sent_udp,
                }
                .fetch_add(k as u64, Relaxed);
                stats.bytes_sent.fetch_add(bytes as u64, Relaxed);
                stats.presealed_sent.fetch_add(k as u64, Relaxed);
                let last = p.advance(k);
                self.agent.set_counter(last);
            }
            Err(e) => {
                // Some of these may have reached the server: move past all of
                // them (not counted as sent), so that the next connection's
                // startup has a newer counter than anything it accepted.
                let last = p.advance(k);
                p.count_skipped(k);
                self.agent.set_counter(last);
                self.io_error(&e);
                self.stats().reconnects.fetch_add(1, Relaxed);
                return None;
            }
        }
        let every = self.sh.cfg.stamp_every;
        let stamped = (before + 1..=before + k).any(|n| Presealed::stamp_after(n, every));
        if self.sh.cfg.stamp && stamped {
            return self
                .send_events(link, 1, None)
                .await
                .then_some(k as u64 + 1);
        }
        Some(k as u64)
    }

    /// Builds, seals and sends `n` events (of the mix, or all of `kind`).
    async fn send_events(&mut self, link: &mut Link, n: usize, kind: Option<EventKind>) -> bool {
        let stamp = self.sh.cfg.stamp;
        let mut wires = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        for _ in 0..n {
            let now = now_us();
            let r = match kind {
                Some(k) => self.agent.event(k, now, stamp).map(|w| (k, w)),
                None => self.agent.next_event(&self.sh.cfg.mix, now, stamp),
            };
            match r {
                Ok((k, w)) => {
                    kinds.push(k);
                    wires.push(w);
                }
                Err(e) => {
                    self.stats().encode_errors.fetch_add(1, Relaxed);
                    tracing::warn!("cannot encode an event: {e}");
                }
            }
        }
        self.sync_preseal();
        match link.send(&wires, &mut self.buf, &mut self.replies).await {
            Ok(_) => {
                let frame = if self.transport == Transport::Tcp {
                    4
                } else {
                    0
                };
                for (k, w) in kinds.into_iter().zip(&wires) {
                    self.sh.stats.sent_event(self.transport, k, w.len() + frame);
                }
                true
            }
            Err(e) => {
                // On UDP some datagrams may have left before the error; they
                // are not counted as sent (the server may store a few more).
                self.io_error(&e);
                self.stats().reconnects.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// End of run: wait for outstanding ACKs, say goodbye, and on TCP make
    /// sure the server has read everything before closing.
    async fn finish(&mut self, link: &mut Link) {
        let grace_end = Instant::now() + self.sh.cfg.ack_grace;
        while !self.outstanding.is_empty() {
            self.process_replies();
            if self.outstanding.is_empty() {
                break;
            }
            tokio::select! {
                r = link.recv(&mut self.buf, &mut self.replies) => if r.is_err() { break },
                _ = sleep_until(grace_end) => break,
            }
        }
        self.process_replies();
        if self.handshaken {
            if let Some(Ok(w)) = self.agent.shutdown() {
                if link
                    .send(&[w], &mut self.buf, &mut self.replies)
                    .await
                    .is_ok()
                {
                    self.stats().shutdowns.fetch_add(1, Relaxed);
                }
            }
        }
        if let Link::Tcp { stream, frames } = link {
            // Half-close, then read until the server closes: it has then
            // read (and queued) every frame. Closing with unread data would
            // send a RST and could discard what the server has not read yet.
            // ACKs that arrive meanwhile (late, behind a backlog) still count.
            if stream.shutdown().await.is_err() {
                self.stats().unclean_closes.fetch_add(1, Relaxed);
                return;
            }
            let deadline = Instant::now() + self.sh.cfg.drain_timeout;
            loop {
                tokio::select! {
                    r = stream.read(&mut self.buf) => match r {
                        Ok(0) => break,
                        Ok(n) => {
                            if feed(frames, &self.buf[..n], &mut self.replies).is_ok() {
                                self.process_replies();
                            }
                        }
                        Err(_) => { self.stats().unclean_closes.fetch_add(1, Relaxed); break }
                    },
                    _ = sleep_until(deadline) => {
                        self.stats().unclean_closes.fetch_add(1, Relaxed);
                        break
                    }
                }
            }
        }
    }
}

/// Runs the simulation until `duration` passes or `stop` turns true;
/// returns the summary. Must run inside a tokio runtime.
pub async fn run(cfg: SimConfig, mut stop: watch::Receiver<bool>) -> anyhow::Result<Summary> {
    anyhow::ensure!(cfg.agents > 0, "no agents to simulate");
    anyhow::ensure!(
        cfg.agents <= cfg.keys.len(),
        "{} agents requested but the keys have only {}",
        cfg.agents,
        cfg.keys.len()
    );
    let n = cfg.agents;
    let rate = if cfg.eps > 0.0 {
        cfg.eps / n as f64
    } else {
        0.0
    };
    let sh = Arc::new(Shared {
        cfg: cfg.clone(),
        stats: Stats::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut seeds = SmallRng::seed_from_u64(cfg.seed);
    let mut agents: Vec<Agent> = (0..n)
        .map(|i| {
            let mut agent = Agent::new(
                cfg.keys.clone(),
                i,
                cfg.flavor,
                cfg.cipher_of(i),
                seeds.gen(),
            );
            agent.set_zlib_level(cfg.zlib_level);
            agent
        })
        .collect();
    let (mut streams, preseal_s, preseal_mib) = if cfg.preseal > 0 {
        let per_agent = cfg.preseal.div_ceil(n as u64) as usize;
        let t = Instant::now();
        let mix = cfg.mix;
        let (agents_back, streams) = tokio::task::spawn_blocking(move || {
            let streams = preseal::build_all(&mut agents, per_agent, &mix);
            (agents, streams)
        })
        .await?;
        agents = agents_back;
        let secs = t.elapsed().as_secs_f64();
        let mib = streams.iter().map(Presealed::size).sum::<usize>() as f64 / 1048576.0;
        // A line a benchmark script can wait for before it starts measuring.
        eprintln!(
            "pre-sealed {} events ({per_agent} per agent, zlib level {}) in {secs:.1} s: {mib:.0} MiB; sending",
            per_agent * n,
            cfg.zlib_level
        );
        (streams.into_iter().map(Some).collect::<Vec<_>>(), secs, mib)
    } else {
        ((0..n).map(|_| None).collect(), 0.0, 0.0)
    };
    let preseal_cpu_s = if cfg.preseal > 0 {
        process_cpu_s()
    } else {
        0.0
    };
    let presealed: u64 = streams.iter().flatten().map(|p| p.remaining() as u64).sum();
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for (i, (agent, preseal)) in agents.into_iter().zip(streams.drain(..)).enumerate() {
        let transport = cfg.transport_of(i);
        let buf_len = match transport {
            Transport::Tcp => RECV_BUF_TCP,
            Transport::Udp => RECV_BUF_UDP,
        };
        let task = Task {
            sh: sh.clone(),
            agent,
            transport,
            source: cfg.source_ips.map(|c| c.nth(i as u128)),
            rate,
            outstanding: VecDeque::new(),
            replies: Vec::new(),
            buf: vec![0u8; buf_len].into_boxed_slice(),
            stop: stop_rx.clone(),
            handshaken: false,
            preseal,
            exhausted: false,
        };
        let delay = cfg.ramp_up.mul_f64(i as f64 / n as f64);
        handles.push(tokio::spawn(task.run(delay)));
    }
    let progress = {
        let sh = sh.clone();
        let every = cfg.progress;
        tokio::spawn(async move {
            let Some(every) = every else { return };
            let mut last = 0;
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let s = &sh.stats;
                let sent = s.sent.load(Relaxed);
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "elapsed_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                        "sent": sent,
                        "eps": ((sent - last) as f64 / every.as_secs_f64()).round(),
                        "acked": s.acks.load(Relaxed),
                        "connected": s.connected.load(Relaxed),
                        "handshaken": s.agents_handshaken.load(Relaxed),
                        "reconnects": s.reconnects.load(Relaxed),
                        "errors": s.connect_errors.load(Relaxed) + s.io_errors.load(Relaxed) + s.reply_errors.load(Relaxed),
                    })
                );
                last = sent;
            }
        })
    };
    tokio::select! {
        _ = sleep(cfg.duration) => {}
        _ = async {
            loop {
                if *stop.borrow_and_update() {
                    break;
                }
                if stop.changed().await.is_err() {
                    // Nobody can ask for an early stop any more.
                    std::future::pending::<()>().await;
                }
            }
        } => {}
    }
    let send_time = started.elapsed();
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    progress.abort();
    let s = &sh.stats;
    let l = |a: &AtomicU64| a.load(Relaxed);
    let control = l(&s.startups) + l(&s.keepalives);
    let acked = l(&s.acks);
    let mut by_kind = serde_json::Map::new();
    for k in EventKind::MIX.iter().chain([&EventKind::AgentStarted]) {
        by_kind.insert(k.as_str().into(), l(&s.by_kind[k.index()]).into());
    }
    let errors = l(&s.connect_errors)
        + l(&s.io_errors)
        + l(&s.reply_errors)
        + l(&s.encode_errors)
        + l(&s.unclean_closes);
    let sent = l(&s.sent);
    Ok(Summary {
        sent,
        acked,
        missing_acks: control.saturating_sub(acked),
        reconnects: l(&s.reconnects),
        errors,
        achieved_eps: (sent as f64 / send_time.as_secs_f64()).round(),
        flavor: cfg.flavor.as_str().into(),
        transport: match cfg.flavor {
            Flavor::Ossec => "udp".into(),
            _ => serde_json::to_value(cfg.transport)?
                .as_str()
                .unwrap_or_default()
                .into(),
        },
        cipher: serde_json::to_value(cfg.cipher)?
            .as_str()
            .unwrap_or_default()
            .into(),
        agents: n,
        target_eps: cfg.eps,
        duration_s: (send_time.as_secs_f64() * 1000.0).round() / 1000.0,
        elapsed_s: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        sent_tcp: l(&s.sent_tcp),
        sent_udp: l(&s.sent_udp),
        bytes_sent: l(&s.bytes_sent),
        events_by_kind: by_kind,
        control_sent: control,
        startups_sent: l(&s.startups),
        keepalives_sent: l(&s.keepalives),
        shutdowns_sent: l(&s.shutdowns),
        startup_retries: l(&s.startup_retries),
        acks_over_1s: l(&s.acks_over_1s),
        ack_latency_p50_ms: s.ack_quantile_ms(0.5),
        ack_latency_p99_ms: s.ack_quantile_ms(0.99),
        max_ack_latency_ms: l(&s.ack_max_us) as f64 / 1000.0,
        replies_not_ack: l(&s.replies_not_ack),
        replies_out_of_order: l(&s.replies_out_of_order),
        reply_errors: l(&s.reply_errors),
        ack_timeouts: l(&s.ack_timeouts),
        connect_errors: l(&s.connect_errors),
        io_errors: l(&s.io_errors),
        encode_errors: l(&s.encode_errors),
        unclean_closes: l(&s.unclean_closes),
        agents_handshaken: l(&s.agents_handshaken),
        stamp: cfg.stamp,
        zlib_level: cfg.zlib_level,
        presealed,
        presealed_sent: l(&s.presealed_sent),
        presealed_skipped: l(&s.presealed_skipped),
        presealed_exhausted_agents: l(&s.presealed_exhausted),
        preseal_s: (preseal_s * 10.0).round() / 10.0,
        preseal_cpu_s: (preseal_cpu_s * 100.0).round() / 100.0,
        preseal_mib: preseal_mib.round(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_addresses() {
        let c: Cidr = "127.1.0.0/16".parse().unwrap();
        assert_eq!(c.size(), 65_534);
        assert_eq!(c.nth(0), "127.1.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.nth(255), "127.1.1.0".parse::<IpAddr>().unwrap());
        assert_eq!(c.nth(65_534), "127.1.0.1".parse::<IpAddr>().unwrap());
        let one: Cidr = "127.0.0.9".parse().unwrap();
        assert_eq!(one.nth(5), "127.0.0.9".parse::<IpAddr>().unwrap());
        let two: Cidr = "127.0.0.8/31".parse().unwrap();
        assert_eq!(two.nth(1), "127.0.0.9".parse::<IpAddr>().unwrap());
        assert!("127.0.0.1/33".parse::<Cidr>().is_err());
        let v6: Cidr = "fd00::/120".parse().unwrap();
        assert_eq!(v6.nth(0), "fd00::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn transport_and_cipher_assignment() {
        let keys = Arc::new(ClientKeys::default());
        let mut c = SimConfig::new("127.0.0.1:1514".parse().unwrap(), keys);
        c.transport = TransportChoice::Mixed;
        c.cipher = CipherChoice::Mixed;
        let got: Vec<_> = (0..4)
            .map(|i| (c.transport_of(i), c.cipher_of(i)))
            .collect();
        assert_eq!(
            got,
            vec![
                (Transport::Tcp, Cipher::Aes),
                (Transport::Udp, Cipher::Aes),
                (Transport::Tcp, Cipher::Blowfish),
                (Transport::Udp, Cipher::Blowfish)
            ]
        );
        c.flavor = Flavor::Ossec;
        assert_eq!(c.transport_of(0), Transport::Udp);
    }

    fn one_agent(server: SocketAddr, transport: TransportChoice) -> SimConfig {
        let text = crate::generate_keys(1, &mut SmallRng::seed_from_u64(1));
        let keys = Arc::new(ClientKeys::parse(text.as_bytes()).unwrap());
        let mut c = SimConfig::new(server, keys);
        c.transport = transport;
        c.duration = Duration::from_millis(1500);
        c.startup_retry = Duration::from_millis(200);
        c.ack_grace = Duration::ZERO;
        c.drain_timeout = Duration::from_millis(200);
        c.eps = 10.0;
        c
    }

    /// A server that never answers: startup is resent every retry interval,
    /// then the agent reconnects; no events are sent before an ACK.
    #[tokio::test]
    async fn unanswered_startup_is_retried_then_reconnects() {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_addr = tcp.local_addr().unwrap();
        // Accept and hold connections without answering.
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = tcp.accept().await {
                held.push(s);
            }
        });
        for (addr, t) in [
            (udp.local_addr().unwrap(), TransportChoice::Udp),
            (tcp_addr, TransportChoice::Tcp),
        ] {
            let (_tx, rx) = watch::channel(false);
            let s = run(one_agent(addr, t), rx).await.unwrap();
            assert_eq!(s.sent, 0, "{t:?}");
            assert_eq!(s.acked, 0);
            assert!(s.startups_sent >= 5, "{t:?}: {}", s.startups_sent);
            assert_eq!(s.missing_acks, s.startups_sent);
            assert!(s.reconnects >= 1, "{t:?}");
            assert_eq!(s.agents_handshaken, 0);
        }
    }

    /// Nothing listening: connect errors are counted and retried, and the run
    /// still ends on time.
    #[tokio::test]
    async fn connection_refused_is_an_error_not_a_hang() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let (_tx, rx) = watch::channel(false);
        let started = std::time::Instant::now();
        let s = run(one_agent(addr, TransportChoice::Tcp), rx)
            .await
            .unwrap();
        assert!(s.connect_errors >= 1);
        assert!(s.errors >= s.connect_errors);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn quantiles() {
        let s = Stats::default();
        for ms in [1u64, 2, 3, 4, 100] {
            s.ack_latency(Duration::from_micros(ms * 1000 - 50));
        }
        assert_eq!(s.ack_quantile_ms(0.5), Some(3.0));
        assert_eq!(s.ack_quantile_ms(0.99), Some(100.0));
        assert_eq!(s.acks_over_1s.load(Relaxed), 0);
    }
}
