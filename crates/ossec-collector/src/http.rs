//! The operator endpoint: Prometheus `/metrics` and `/health`.
//!
//! Owns a deliberately tiny HTTP/1.1 responder (GET only, one request per
//! connection, bounded request size and time). `/health` answers 200 only
//! when the listeners are bound and the store accepts a write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ossec_store::{EventRow, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::agents::AgentTable;
use crate::metrics::Metrics;

pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub table: Arc<AgentTable>,
    pub store: Store,
    /// Weak, so that it does not keep the queue open at shutdown.
    pub queue: mpsc::WeakSender<EventRow>,
    pub queue_capacity: usize,
    /// Listeners bound.
    pub ready: AtomicBool,
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = crate::shutdown::requested(&mut shutdown) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), respond(stream, &state)).await;
        });
    }
}

async fn respond(mut stream: TcpStream, state: &HttpState) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&chunk[..n]);
    }
    let line = req.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let depth = state
                .queue
                .upgrade()
                .map(|tx| tx.max_capacity() - tx.capacity())
                .unwrap_or(0);
            let body = state
                .metrics
                .render(depth, state.queue_capacity, &state.table.by_status());
            ("200 OK", "text/plain; version=0.0.4", body)
        }
        ("GET", "/health") => {
            let store =
                tokio::time::timeout(Duration::from_secs(3), state.store.check_writable()).await;
            match (state.ready.load(Ordering::Relaxed), store) {
                (true, Ok(Ok(()))) => ("200 OK", "text/plain", "ok\n".to_owned()),
                (false, _) => (
                    "503 Service Unavailable",
                    "text/plain",
                    "listeners not bound\n".to_owned(),
                ),
                (_, Ok(Err(e))) => (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("store does not accept writes: {e}\n"),
                ),
                (_, Err(_)) => (
                    "503 Service Unavailable",
                    "text/plain",
                    "store write timed out\n".to_owned(),
                ),
            }
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /health\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
