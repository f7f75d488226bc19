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
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::agents::Agent;
use crate::ingest::{Ingest, Origin, Outcome};
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
        let Some((stream, peer)) = accept(&listener, "TCP", &mut shutdown).await else {
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
        tokio::spawn(serve_one(
            stream,
            peer,
            ingest.clone(),
            tx.clone(),
            limits.idle_timeout,
            proxy.clone(),
            shutdown.clone(),
            permit,
        ));
    }
}

/// One accepted connection, as its own task: the PROXY header when
/// configured, then [`connection`].
#[allow(clippy::too_many_arguments)]
async fn serve_one(
    mut stream: TcpStream,
    peer: SocketAddr,
    ingest: Arc<Ingest>,
    tx: mpsc::Sender<EventRow>,
    idle: Duration,
    proxy: Option<Arc<ProxySettings>>,
    mut shutdown: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
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
    drop(proxy);
    // By reference: moved into it, they would take room twice in the task.
    let reason = connection(&mut stream, peer, &ingest, &tx, idle, &mut shutdown).await;
    ingest.metrics.tcp_closed(reason);
    drop(permit);
}

/// Serves one connection; returns why it ended.
///
/// Memory: a fleet keeps tens of thousands of agents connected that send
/// little more than a keepalive a minute, so an idle connection holds as
/// little as possible. It waits for the socket to become readable without
/// a read buffer, takes one only to read, and gives it back (with the
/// replies buffer) once everything read was handled and the socket has
/// nothing more; only a partial frame keeps its buffer. The futures of the
/// rarely taken paths (a counter read from the store inside
/// [`Ingest::receive`], waiting for room in the queue) are boxed, so that
/// they do not make every connection's task larger.
async fn connection(
    stream: &mut TcpStream,
    peer: SocketAddr,
    ingest: &Ingest,
    tx: &mpsc::Sender<EventRow>,
    idle: Duration,
    shutdown: &mut watch::Receiver<bool>,
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
    // No allocation until there is something to read.
    let mut buf = BytesMut::new();
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
    // As `shutdown::requested`, in a smaller future.
    let stopping = async {
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::pin!(stopping);
    let reason = 'conn: loop {
        // Biased: shutdown and takeover first (a busy agent must not delay
        // them), then data before the idle timer (data that is ready never
        // loses to a timer that fired meanwhile).
        tokio::select! {
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
            }
            _ = &mut taken_over => break CloseReason::Takeover,
            // Readiness through the stream's own waker slot: a smaller
            // future than `readable()`, which queues a waiter.
            r = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => {
                if r.is_err() {
                    break CloseReason::IoError;
                }
                // Room to read into: 4 KiB for a quiet agent, doubled (up
                // to 64 KiB) while reads keep filling it, so that a busy
                // agent's frames come in a few large reads instead of many
                // small ones.
                if buf.capacity() - buf.len() < read_size / 4 {
                    buf.reserve(read_size);
                }
                match stream.try_read_buf(&mut buf) {
                    Ok(0) => break CloseReason::Eof,
                    Ok(_) => {
                        if buf.capacity() == buf.len() {
                            read_size = (read_size * 2).min(MAX_READ);
                        }
                    }
                    Err(e) if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {
                        // Nothing (more) to read: wait without buffers
                        // unless a partial frame needs its buffer. The
                        // replies were flushed after the last pass.
                        if buf.is_empty() && buf.capacity() > 0 {
                            buf = BytesMut::new();
                        }
                        if replies.is_empty() && replies.capacity() > 0 {
                            replies = Vec::new();
                        }
                        continue;
                    }
                    Err(_) => break CloseReason::IoError,
                }
            }
            _ = &mut idle_timer => {
                let deadline = last_active + idle;
                if tokio::time::Instant::now() >= deadline {
                    break CloseReason::Idle;
                }
                idle_timer.as_mut().reset(deadline);
                continue;
            }
        }
        loop {
            match frame::check(&buf) {
                Ok(FrameCheck::Complete(len)) => {
                    let wire = &buf[frame::LEN_PREFIX..frame::LEN_PREFIX + len];
                    let out = ingest.receive(wire, &origin).await;
                    buf.advance(frame::LEN_PREFIX + len);
                    let close = out.close;
                    match take(out, &mut bound, &mut replies, tx, ingest) {
                        Then::Next => {}
                        Then::Wait(ev) => {
                            let wait = queue_when_room(stream, &mut replies, ingest, tx, *ev);
                            if let Err(reason) = Box::pin(wait).await {
                                break 'conn reason;
                            }
                            ingest.metrics.events_queued.fetch_add(1, Ordering::Relaxed);
                        }
                        Then::Stop => break 'conn CloseReason::Shutdown,
                    }
                    if close {
                        let _ = flush(stream, &mut replies, ingest).await;
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
                    let _ = flush(stream, &mut replies, ingest).await;
                    break 'conn CloseReason::Rejected;
                }
            }
        }
        if flush(stream, &mut replies, ingest).await.is_err() {
            break CloseReason::IoError;
        }
        if closing {
            break CloseReason::Shutdown;
        }
        last_active = tokio::time::Instant::now();
        // Give back memory after a large frame.
        if buf.is_empty() && buf.capacity() > 2 * MAX_READ {
            read_size = MIN_READ;
            buf = BytesMut::new();
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

/// What is left to do for a handled frame once the parts that need no
/// waiting are done.
enum Then {
    Next,
    /// The queue is full: wait for room for this event (boxed: the rare
    /// case keeps the connection's future small).
    Wait(Box<EventRow>),
    /// The queue is closed: the collector is stopping.
    Stop,
}

/// Takes a handled frame's outcome apart without waiting: the agent it
/// bound, its reply (framed into `replies`), its event (queued if there
/// is room).
fn take(
    out: Outcome,
    bound: &mut Vec<Arc<Agent>>,
    replies: &mut Vec<u8>,
    tx: &mpsc::Sender<EventRow>,
    ingest: &Ingest,
) -> Then {
    if let Some(a) = out.bound {
        bound.push(a);
    }
    if let Some(reply) = out.reply {
        let _ = frame::encode_frame(&reply, replies);
    }
    let Some(ev) = out.event else {
        return Then::Next;
    };
    match tx.try_send(ev) {
        Ok(()) => {
            ingest.metrics.events_queued.fetch_add(1, Ordering::Relaxed);
            Then::Next
        }
        Err(mpsc::error::TrySendError::Full(ev)) => Then::Wait(Box::new(ev)),
        Err(mpsc::error::TrySendError::Closed(_)) => Then::Stop,
    }
}

/// Backpressure: the queue is full. Sends the ACKs already due first (so
/// that agents do not time out while the store catches up), then waits
/// for room rather than dropping the event.
async fn queue_when_room(
    stream: &mut TcpStream,
    replies: &mut Vec<u8>,
    ingest: &Ingest,
    tx: &mpsc::Sender<EventRow>,
    ev: EventRow,
) -> Result<(), CloseReason> {
    if flush(stream, replies, ingest).await.is_err() {
        return Err(CloseReason::IoError);
    }
    if tx.send(ev).await.is_err() {
        return Err(CloseReason::Shutdown);
    }
    Ok(())
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
