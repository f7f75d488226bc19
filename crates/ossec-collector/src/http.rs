//! The operator endpoint: Prometheus `/metrics` and `/health`.
//!
//! Owns a deliberately tiny HTTP/1.1 responder (GET only, one request per
//! connection, bounded request size and time). `/health` answers 200 while
//! the collector accepts events — the listeners are bound and the store
//! takes writes, or (with the disk spool) the spool takes them while the
//! store is away (`"status":"degraded"`) — and 503 when it cannot; its
//! body is JSON naming the state.

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
            let (code, body) = health(state).await;
            (code, "application/json", body)
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

/// `/health`: the status code and the JSON body.
async fn health(state: &HttpState) -> (&'static str, String) {
    let store =
        match tokio::time::timeout(Duration::from_secs(3), state.store.check_writable()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("store does not accept writes: {e}")),
            Err(_) => Err("store write timed out".to_owned()),
        };
    let spool = state.metrics.spool.read().clone();
    let ready = state.ready.load(Ordering::Relaxed);
    let mut body = serde_json::Map::new();
    let (code, status, reason) = match (&store, &spool) {
        _ if !ready => (
            "503 Service Unavailable",
            "down",
            Some("listeners not bound".to_owned()),
        ),
        (_, Some(sp)) if sp.full.load(Ordering::Relaxed) => (
            "503 Service Unavailable",
            "down",
            Some("the spool does not accept events (full or failing disk)".to_owned()),
        ),
        (Ok(()), _) => ("200 OK", "ok", None),
        // The spool keeps what arrives: keep sending agents here.
        (Err(e), Some(_)) => ("200 OK", "degraded", Some(e.clone())),
        (Err(e), None) => ("503 Service Unavailable", "down", Some(e.clone())),
    };
    body.insert("status".into(), status.into());
    body.insert(
        "store".into(),
        if store.is_ok() { "up" } else { "down" }.into(),
    );
    if let Some(sp) = &spool {
        let oldest = sp.oldest_us.load(Ordering::Relaxed);
        let age = if oldest > 0 {
            (ossec_store::now_micros() - oldest).max(0) as f64 / 1e6
        } else {
            0.0
        };
        body.insert(
            "spool_bytes".into(),
            sp.bytes.load(Ordering::Relaxed).into(),
        );
        body.insert(
            "spool_oldest_age_s".into(),
            ((age * 1000.0).round() / 1000.0).into(),
        );
    }
    if let Some(r) = reason {
        body.insert("reason".into(), r.into());
    }
    let mut text = serde_json::Value::Object(body).to_string();
    text.push('\n');
    (code, text)
}
