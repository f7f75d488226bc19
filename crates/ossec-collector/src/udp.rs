//! The UDP listener: one datagram is one message.
//!
//! Owns the UDP sockets (several with `SO_REUSEPORT` so that reading and
//! decoding use every core; the kernel keeps one agent on one socket) and
//! their loops: receive, hand to [`Ingest`], queue the event without
//! waiting (a full queue drops the event and counts it), send the reply to
//! the address the message came from.

use std::net::SocketAddr;
use std::sync::Arc;

use ossec_store::EventRow;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::ingest::{Ingest, Origin};
use crate::metrics::Transport;

/// Kernel receive buffer asked for per UDP socket.
pub const RECV_BUFFER: usize = 16 << 20;

/// Binds `workers` UDP sockets on `addr` (the port of the first is reused
/// by the others when `addr` asks for port 0).
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<UdpSocket>> {
    let mut out = Vec::with_capacity(workers);
    let mut addr = addr;
    for i in 0..workers.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(false)?;
        }
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        // Bigger kernel buffers absorb bursts; the kernel caps them at
        // net.core.rmem_max.
        let _ = s.set_recv_buffer_size(RECV_BUFFER);
        if i == 0 {
            if let Ok(reported) = s.recv_buffer_size() {
                // Linux reports twice the size it grants (the doubled part
                // is its own bookkeeping).
                let got = if cfg!(target_os = "linux") {
                    reported / 2
                } else {
                    reported
                };
                if got < RECV_BUFFER {
                    tracing::warn!(
                        asked = RECV_BUFFER,
                        granted = got,
                        "the kernel gave each UDP socket a {} KiB receive buffer instead of {} KiB: bursts of UDP events may be dropped by the kernel (counted in /proc/net/snmp, not by us); raise it with `sysctl -w net.core.rmem_max={}`",
                        got / 1024,
                        RECV_BUFFER / 1024,
                        RECV_BUFFER
                    );
                }
            }
        }
        let _ = s.set_send_buffer_size(4 << 20);
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        let sock = UdpSocket::from_std(s.into())?;
        addr = sock.local_addr()?;
        out.push(sock);
    }
    Ok(out)
}

/// Reads datagrams until `shutdown` turns true.
pub async fn serve(
    sock: UdpSocket,
    ingest: Arc<Ingest>,
    tx: mpsc::Sender<EventRow>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65536];
    let metrics = ingest.metrics.clone();
    let mut closing = false;
    loop {
        let (n, peer) = if closing {
            // Shutting down: take what the kernel already queued, then stop.
            match sock.try_recv_from(&mut buf) {
                Ok(x) => x,
                // ICMP errors from earlier sends are one-shot; anything else ends the drain.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                r = sock.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here; keep going.
                        tracing::debug!("UDP receive error: {e}");
                        continue;
                    }
                },
                _ = crate::shutdown::requested(&mut shutdown) => {
                    closing = true;
                    continue;
                }
            }
        };
        let origin = Origin {
            transport: Transport::Udp,
            peer,
            conn: None,
        };
        let out = ingest.receive(&buf[..n], &origin).await;
        if let Some(ev) = out.event {
            // At shutdown, wait for room: what was received is stored.
            if closing {
                if tx.send(ev).await.is_ok() {
                    metrics
                        .events_queued
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            } else {
                match tx.try_send(ev) {
                    Ok(()) => {
                        metrics
                            .events_queued
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => metrics.dropped(peer),
                }
            }
        }
        if let Some(reply) = out.reply {
            match sock.send_to(&reply, peer).await {
                Ok(n) => metrics.sent(Transport::Udp, n),
                Err(e) => tracing::debug!(peer = %peer, "UDP send failed: {e}"),
            }
        }
    }
}
