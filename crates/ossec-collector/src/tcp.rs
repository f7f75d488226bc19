//! The TCP listener: length-prefixed frames on long-lived connections.
//!
//! Owns accepting (bounded by `--max-connections`), one task per
//! connection that reads, frames, hands each frame to [`Ingest`], waits for
//! room in the event queue (backpressure: a slow store slows the agent
//! instead of losing events) and writes replies on the same connection.
//! A connection is closed when its framing breaks, a message does not
//! decrypt (as Wazuh does), it is idle too long, a newer connection of the
//! same agent takes over, or the collector shuts down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ossec_proto::frame::{self, FrameCheck};
use ossec_store::EventRow;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

use crate::agents::Agent;
use crate::ingest::{Ingest, Origin};
use crate::metrics::{CloseReason, Transport};
use crate::proxy::ProxySettings;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
/// Read sizes of a connection: from this…
const MIN_READ: usize = 4096;
/// …up to this while the agent keeps the buffer full.
const MAX_READ: usize = 65536;

/// Binds the TCP listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    TcpListener::from_std(s.into())
}

/// The next connection, or `None` once shutdown is requested. A failed
/// accept (EMFILE and friends) is logged and retried after a short wait
/// instead of spinning. Shared by the agent (1514) and enrollment (1515)
/// listeners.
pub async fn accept(
    listener: &TcpListener,
    what: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::warn!("{what} accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = crate::shutdown::requested(shutdown) => return None,
        }
    }
}

/// Limits for connections.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    tx: mpsc::Sender<EventRow>,
    limits: Limits,
    proxy: Option<Arc<ProxySettings>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let metrics = ingest.metrics.clone();
    loop {
        let Some((mut stream, peer)) = accept(&listener, "TCP", &mut shutdown).await else {
            break;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.tcp_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        metrics.tcp_accepted.fetch_add(1, Ordering::Relaxed);
        metrics.tcp_open.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let sock = socket2::SockRef::from(&stream);
        let _ = sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(30))
                .with_interval(Duration::from_secs(10)),
        );
        let (ingest, tx, shutdown) = (ingest.clone(), tx.clone(), shutdown.clone());
        let proxy = proxy.clone();
        tokio::spawn(async move {
            // Behind a load balancer the agent is the header's address.
            let peer = match crate::proxy::agent_addr(&mut stream, peer, proxy.as_deref()).await {
                Ok(agent) => agent,
                Err(reason) => {
                    ingest.metrics.proxy_rejected(reason, peer);
                    ingest.metrics.tcp_closed(CloseReason::Rejected);
                    drop(permit);
                    return;
                }
            };
            let reason =
                connection(stream, peer, &ingest, &tx, limits.idle_timeout, shutdown).await;
            ingest.metrics.tcp_closed(reason);
            drop(permit);
        });
    }
}

/// Serves one connection; returns why it ended.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    ingest: &Ingest,
    tx: &mpsc::Sender<EventRow>,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> CloseReason {
    let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let takeover = Arc::new(Notify::new());
    let origin = Origin {
        transport: Transport::Tcp,
        peer,
        conn: Some((conn_id, takeover.clone())),
    };
    let mut bound: Vec<Arc<Agent>> = Vec::new();
    let mut read_size = MIN_READ;
    let mut buf = BytesMut::with_capacity(read_size);
    let mut replies: Vec<u8> = Vec::new();
    let mut closing = false;
    // One idle timer, one takeover waiter and one shutdown waiter for the
    // whole connection, not new ones for every read: the timer is only
    // re-armed when it fires early (the connection was active meanwhile).
    // Takeover and shutdown end the connection when they complete, so
    // neither is polled again after that. Idle means no data for `idle`:
    // time spent waiting for queue room (backpressure) or writing replies
    // is activity, so `last_active` moves after every pass as well.
    let mut last_active = tokio::time::Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    let taken_over = takeover.notified();
    tokio::pin!(taken_over);
    let stopping = crate::shutdown::requested(&mut shutdown);
    tokio::pin!(stopping);
    let reason = 'conn: loop {
        // Room to read into: 4 KiB for a quiet agent, doubled (up to 64 KiB)
        // while reads keep filling it, so that a busy agent's frames come
        // in a few large reads instead of many small ones.
        if buf.capacity() - buf.len() < read_size / 4 {
            buf.reserve(read_size);
        }
        // Biased: shutdown and takeover first (a busy agent must not delay
        // them), then data before the idle timer (data that is ready never
        // loses to a timer that fired meanwhile).
        let n = tokio::select! {
            biased;
            _ = &mut stopping => {
                // Take in what the kernel already received, then stop.
                let mut drained = 0;
                loop {
                    buf.reserve(16384);
                    match stream.try_read_buf(&mut buf) {
                        Ok(n) if n > 0 => drained += n,
                        _ => break,
                    }
                }
                if drained == 0 {
                    break CloseReason::Shutdown;
                }
                closing = true;
                drained
            }
            _ = &mut taken_over => break CloseReason::Takeover,
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) => break CloseReason::Eof,
                Ok(n) => {
                    if buf.capacity() == buf.len() {
                        read_size = (read_size * 2).min(MAX_READ);
                    }
                    n
                }
                Err(_) => break CloseReason::IoError,
            },
            _ = &mut idle_timer => {
                let deadline = last_active + idle;
                if tokio::time::Instant::now() >= deadline {
                    break CloseReason::Idle;
                }
                idle_timer.as_mut().reset(deadline);
                continue;
            }
        };
        let _ = n;
        loop {
            match frame::check(&buf) {
                Ok(FrameCheck::Complete(len)) => {
                    let out = ingest
                        .receive(&buf[frame::LEN_PREFIX..frame::LEN_PREFIX + len], &origin)
                        .await;
                    buf.advance(frame::LEN_PREFIX + len);
                    if let Some(a) = out.bound {
                        bound.push(a);
                    }
                    if let Some(reply) = out.reply {
                        let _ = frame::encode_frame(&reply, &mut replies);
                    }
                    if let Some(ev) = out.event {
                        // Backpressure: wait for room rather than drop; but first
                        // send the ACKs already due, so agents do not time out.
                        let ev = match tx.try_send(ev) {
                            Ok(()) => None,
                            Err(mpsc::error::TrySendError::Full(ev)) => Some(ev),
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                break 'conn CloseReason::Shutdown
                            }
                        };
                        if let Some(ev) = ev {
                            if flush(&mut stream, &mut replies, ingest).await.is_err() {
                                break 'conn CloseReason::IoError;
                            }
                            if tx.send(ev).await.is_err() {
                                break 'conn CloseReason::Shutdown;
                            }
                        }
                        ingest.metrics.events_queued.fetch_add(1, Ordering::Relaxed);
                    }
                    if out.close {
                        let _ = flush(&mut stream, &mut replies, ingest).await;
                        break 'conn CloseReason::Rejected;
                    }
                }
                Ok(FrameCheck::Incomplete) => {
                    // Make room for the rest of a large frame in one go.
                    if let Some(p) = buf.get(..4) {
                        let want = frame::LEN_PREFIX
                            + u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
                        buf.reserve(want.saturating_sub(buf.len()));
                    }
                    break;
                }
                Err(r) => {
                    ingest
                        .metrics
                        .rejected(r.kind, None, peer, Transport::Tcp, &r.detail);
                    let _ = flush(&mut stream, &mut replies, ingest).await;
                    break 'conn CloseReason::Rejected;
                }
            }
        }
        if flush(&mut stream, &mut replies, ingest).await.is_err() {
            break CloseReason::IoError;
        }
        if closing {
            break CloseReason::Shutdown;
        }
        last_active = tokio::time::Instant::now();
        // Give back memory after a large frame.
        if buf.is_empty() && buf.capacity() > 2 * MAX_READ {
            read_size = MIN_READ;
            buf = BytesMut::with_capacity(read_size);
        }
    };
    for a in bound {
        let mut st = a.state.lock();
        if matches!(st.tcp_conn, Some((id, _)) if id == conn_id) {
            st.tcp_conn = None;
        }
    }
    reason
}

async fn flush(
    stream: &mut TcpStream,
    replies: &mut Vec<u8>,
    ingest: &Ingest,
) -> std::io::Result<()> {
    if replies.is_empty() {
        return Ok(());
    }
    let r = stream.write_all(replies).await;
    if r.is_ok() {
        ingest.metrics.sent(Transport::Tcp, replies.len());
    }
    replies.clear();
    r
}
