//! The operator endpoint on `--metrics-listen`: Prometheus `/metrics`,
//! `/health`, the status page `/` ([`page`]) and its JSON `/api/agents`,
//! `/api/stats` ([`api`]).
//!
//! Owns the HTTP stack (axum routes on hyper, one HTTP/1.1 connection at a
//! time through hyper-util so that every limit is ours: [`LIMITS`]), the
//! optional bearer token (`--http-token-file`; every route but `/health`),
//! and graceful shutdown with the rest of `serve` (stop accepting, let the
//! requests under way finish). `/health` answers 200 while the collector
//! accepts events — the listeners are bound and the store takes writes, or
//! (with the disk spool) the spool takes them while the store is away
//! (`"status":"degraded"`) — and 503 when it cannot; its body is JSON
//! naming the state.

pub mod api;
pub mod page;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ossec_store::{EventRow, Store};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::agents::AgentTable;
use crate::history::History;
use crate::metrics::Metrics;

/// Bounds on what a client of the endpoint can cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and headers together (hyper's read buffer; larger
    /// heads get 431).
    pub head_bytes: usize,
    /// To receive the request line and headers.
    pub head_timeout: Duration,
    /// Request bodies (nothing here takes one; larger get 413).
    pub body_bytes: usize,
    /// To produce an answer (408 after it).
    pub handler_timeout: Duration,
    /// A whole connection, from accept to the last byte sent.
    pub connection_timeout: Duration,
    /// Connections at once; more are closed at accept.
    pub max_connections: usize,
}

pub const LIMITS: Limits = Limits {
    head_bytes: 16 * 1024,
    head_timeout: Duration::from_secs(5),
    body_bytes: 1024,
    handler_timeout: Duration::from_secs(10),
    connection_timeout: Duration::from_secs(20),
    max_connections: 256,
};

/// What the routes read.
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub table: Arc<AgentTable>,
    pub store: Store,
    /// Weak, so that it does not keep the queue open at shutdown.
    pub queue: mpsc::WeakSender<EventRow>,
    pub queue_capacity: usize,
    /// Listeners bound.
    pub ready: AtomicBool,
    /// SHA-256 of `--http-token-file`'s token.
    pub token: Option<[u8; 32]>,
    pub history: Arc<History>,
    /// `--disconnect-after`: beyond it without a keepalive, an agent is silent.
    pub disconnect_after: Duration,
    /// `--instance-name`.
    pub instance: String,
    /// Unix µs.
    pub started_at_us: i64,
}

impl HttpState {
    /// Events in the queue now.
    pub fn queue_depth(&self) -> usize {
        self.queue
            .upgrade()
            .map(|tx| tx.max_capacity() - tx.capacity())
            .unwrap_or(0)
    }
}

/// Reads `--http-token-file`: its first line, without surrounding blanks.
/// An empty token is refused rather than silently turning auth off.
pub fn read_token(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the HTTP token file {}", path.display()))?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.trim_ascii();
    if line.is_empty() {
        anyhow::bail!(
            "the HTTP token file {} is empty: write the token on its first line",
            path.display()
        );
    }
    Ok(Sha256::digest(line).into())
}

/// Warns when the endpoint is open to more than this host.
pub fn warn_if_open(addr: SocketAddr, token: bool) {
    if !token && !addr.ip().is_loopback() {
        tracing::warn!(
            listen = %addr,
            "the metrics listener {addr} has no token: anyone who reaches it can read /metrics, the status page and the agent list (set --http-token-file)"
        );
    }
}

/// The routes and their layers.
pub fn router(state: Arc<HttpState>) -> Router {
    let protected = Router::new()
        .route("/", get(page::page))
        .route("/metrics", get(metrics))
        .route("/api/agents", get(api::agents))
        .route("/api/stats", get(api::stats_route))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health_route))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(common_headers))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            LIMITS.handler_timeout,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            LIMITS.body_bytes,
        ))
}

/// Serves until shutdown, then lets the requests under way finish (at
/// most 2 s).
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(state);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(LIMITS.max_connections));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = crate::shutdown::requested(&mut shutdown) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the limit: closed at once.
            continue;
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(LIMITS.head_timeout)
            .max_buf_size(LIMITS.head_bytes)
            // One request per connection, as the endpoint always did:
            // clients that read to EOF keep working, and an idle
            // connection holds no slot.
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(LIMITS.connection_timeout, conn).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}

/// `Authorization: Bearer <token>` (or, for browsers, Basic with the token
/// as the password), compared in constant time, when a token is set.
async fn auth(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    match &state.token {
        Some(want) if !authorized(want, req.headers()) => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                "a token is needed: Authorization: Bearer <token> (see --http-token-file)\n",
            )
                .into_response();
            let h = r.headers_mut();
            h.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ossec-collector\""),
            );
            h.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ossec-collector\", charset=\"UTF-8\""),
            );
            r
        }
        _ => next.run(req).await,
    }
}

/// Whether the request carries the token.
pub fn authorized(want: &[u8; 32], headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let v = v.as_bytes();
    let scheme_is = |s: &[u8]| v.len() > s.len() && v[..s.len()].eq_ignore_ascii_case(s);
    let presented: Vec<u8> = if scheme_is(b"bearer ") {
        v[7..].trim_ascii().to_vec()
    } else if scheme_is(b"basic ") {
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(v[6..].trim_ascii()) {
            Ok(userpass) => match userpass.iter().position(|&b| b == b':') {
                Some(i) => userpass[i + 1..].to_vec(),
                None => return false,
            },
            Err(_) => return false,
        }
    } else {
        return false;
    };
    // Digests have one length: the comparison time says nothing.
    let got: [u8; 32] = Sha256::digest(&presented).into();
    bool::from(got.ct_eq(want))
}

/// On every answer: never cached, never sniffed.
async fn common_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: try /, /metrics, /health, /api/agents or /api/stats\n",
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let body = tokio::task::spawn_blocking(move || {
        state.metrics.render(
            state.queue_depth(),
            state.queue_capacity,
            &state.table.by_status(),
        )
    })
    .await;
    match body {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn health_route(State(state): State<Arc<HttpState>>) -> Response {
    let (code, body) = health(&state).await;
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `/health`: the status code and the JSON body.
async fn health(state: &HttpState) -> (StatusCode, String) {
    let store =
        match tokio::time::timeout(Duration::from_secs(3), state.store.check_writable()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("store does not accept writes: {e}")),
            Err(_) => Err("store write timed out".to_owned()),
        };
    let spool = state.metrics.spool.read().clone();
    let ready = state.ready.load(Ordering::Relaxed);
    let mut body = serde_json::Map::new();
    let down = StatusCode::SERVICE_UNAVAILABLE;
    let (code, status, reason) = match (&store, &spool) {
        _ if !ready => (down, "down", Some("listeners not bound".to_owned())),
        (_, Some(sp)) if sp.full.load(Ordering::Relaxed) => (
            down,
            "down",
            Some("the spool does not accept events (full or failing disk)".to_owned()),
        ),
        (Ok(()), _) => (StatusCode::OK, "ok", None),
        // The spool keeps what arrives: keep sending agents here.
        (Err(e), Some(_)) => (StatusCode::OK, "degraded", Some(e.clone())),
        (Err(e), None) => (down, "down", Some(e.clone())),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn token_by_bearer_or_basic_password() {
        let want: [u8; 32] = Sha256::digest(b"s3cret").into();
        assert!(authorized(&want, &headers("Bearer s3cret")));
        assert!(authorized(&want, &headers("bearer   s3cret ")));
        // user:s3cret
        assert!(authorized(&want, &headers("Basic dXNlcjpzM2NyZXQ=")));
        // :s3cret (no user name)
        assert!(authorized(&want, &headers("Basic OnMzY3JldA==")));
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Bearer ",
            "s3cret",
            "Basic dXNlcjp3cm9uZw==",
            "Basic !!!",
            "Basic czNjcmV0",
            "Token s3cret",
        ] {
            assert!(!authorized(&want, &headers(bad)), "{bad}");
        }
        assert!(!authorized(&want, &HeaderMap::new()));
    }

    #[test]
    fn token_file_first_line_and_no_empty_token() {
        let dir = tempfile_dir();
        let f = dir.join("token");
        std::fs::write(&f, "  s3cret \r\nignored\n").unwrap();
        let want: [u8; 32] = Sha256::digest(b"s3cret").into();
        assert_eq!(read_token(&f).unwrap(), want);
        std::fs::write(&f, "\n\nx").unwrap();
        assert!(read_token(&f).unwrap_err().to_string().contains("empty"));
        assert!(read_token(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "oc-http-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
