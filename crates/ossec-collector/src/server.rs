//! `serve`: wires the listeners, the ingest path, the writer, key reload,
//! metrics and shutdown together.
//!
//! Owns the start-up order (keys, store and migrations, agent state, sender
//! counter, sockets), the ready log line, `client.keys` reload (SIGHUP and a
//! poll of the file), and graceful shutdown: stop reading, let the writer
//! store everything queued and persist agent state and counters, within
//! `--shutdown-timeout`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ossec_proto::SenderCounter;
use ossec_store::{JobLock, Store};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::agents::AgentTable;
use crate::config::Settings;
use crate::enroll;
use crate::history::{History, Sample};
use crate::http::{self, HttpState};
use crate::ingest::{CounterSync, Ingest};
use crate::keysync::{self, KeySync};
use crate::metrics::Metrics;
use crate::writer::{CounterWriter, StateWriter, Writer};
use crate::{spool, tcp, udp};

/// A running collector.
pub struct Running {
    pub tcp_addr: Option<SocketAddr>,
    pub udp_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// The enrollment (TLS) listener, when on.
    pub enroll_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub table: Arc<AgentTable>,
    pub store: Store,
    shutdown: watch::Sender<bool>,
    give_up: watch::Sender<bool>,
    sink: Sink,
    state_writer: JoinHandle<()>,
    state_done: oneshot::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
    reload: mpsc::UnboundedSender<()>,
    /// Held while running (one `serve` per SQLite file).
    _sqlite_lock: Option<std::fs::File>,
}

/// Where received events go.
enum Sink {
    /// `--spool-dir off`: the memory queue's writer (returns the events it
    /// could not store).
    Memory(JoinHandle<u64>),
    /// The spool's writer and its drain into the store (returns whether
    /// everything was stored).
    Spool {
        writer: JoinHandle<()>,
        drain: JoinHandle<bool>,
    },
}

/// The enrollment password: the first line of the file, without its line
/// end (as Wazuh reads `authd.pass`). Refuses an empty or blank one rather
/// than silently turning the password off.
pub fn read_password(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the enrollment password file {}",
            path.display()
        )
    })?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        anyhow::bail!(
            "the enrollment password file {} is empty: write the password on its first line",
            path.display()
        );
    }
    Ok(line.to_vec())
}

/// One `serve` per SQLite file: an exclusive `flock` on `FILE.serve-lock`,
/// held while the collector runs. Two collectors on one file would each
/// keep their own counters and agent state, and SQLite is no store for
/// replicas (PostgreSQL is). The `agents` commands do not take it.
pub fn lock_sqlite(database_url: &str) -> anyhow::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let Some(file) = ossec_store::sqlite_file(database_url) else {
        return Ok(None);
    };
    let mut lock_path = file.clone().into_os_string();
    lock_path.push(".serve-lock");
    let lock = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
    {
        Ok(f) => f,
        // The store's own open names a missing directory better.
        Err(_) => return Ok(None),
    };
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another `ossec-collector serve` already uses {}: one collector per SQLite file (run several collectors on PostgreSQL)",
            file.display()
        );
    }
    Ok(Some(lock))
}

/// The floor of the manager's sender counter after a (re)start. Replies
/// are clocked (`SenderCounter::advance_at`: never below the Unix time),
/// so with a clock that moved forward the floor is the clock itself, as on
/// every other collector of the store: one second ahead would make this
/// collector's replies look newer than another's for a second, and an
/// agent moving to that one would drop its replies. Only when the
/// persisted counter (the highest sent, saved every second) is not behind
/// the clock (the clock went back) does the floor jump one second past it,
/// over the replies sent after the last save.
pub fn initial_sender_counter(stored: Option<(u32, u32)>, unix_now_us: i64) -> SenderCounter {
    let clock = SenderCounter::clock(unix_now_us);
    match stored {
        Some((g, l)) if (g, l) >= clock => SenderCounter::new(g.saturating_add(1), 0),
        _ => SenderCounter::new(clock.0, clock.1),
    }
}

/// Raises the soft open-files limit to the hard limit (thousands of agents).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Starts everything and returns once the sockets are bound.
pub async fn start(s: Settings) -> anyhow::Result<Running> {
    raise_fd_limit();
    let sqlite_lock = lock_sqlite(&s.database_url)?;
    let store = Store::connect(&s.database_url).await?;
    let mut warned = std::collections::HashSet::new();
    if let Some(path) = &s.keys {
        let r = keysync::import_file(&store, path, &mut warned).await?;
        tracing::info!(
            added = r.added,
            changed = r.changed,
            removed = r.removed,
            "{} imported into the store",
            path.display()
        );
    }
    // Reset requests already in the store are reflected in the agents
    // loaded below (the request also cleared the stored counters).
    let (_, resets_seen) = store.counter_resets_since(None).await?;
    let mirror = keysync::load(&store).await?;
    let stored = store.load_agents().await?;
    let table = Arc::new(AgentTable::new(mirror.key_set(), stored));
    let sender = initial_sender_counter(
        store.load_sender_counter().await?,
        ossec_store::now_micros(),
    );
    let metrics = Metrics::new();
    metrics
        .agents_known
        .store(table.current().agents.len() as u64, Ordering::Relaxed);
    // With one collector per file (SQLite) nobody else moves the counters:
    // they are read only after a new key or a reset.
    let counter_sync = match &store {
        Store::Postgres(_) => s.counter_sync,
        Store::Sqlite(_) => None,
    };
    let ingest = Arc::new(Ingest::new(
        table.clone(),
        metrics.clone(),
        s.verify_counters,
        sender,
        s.instance_name.as_str().into(),
        Some(CounterSync {
            store: store.clone(),
            window_us: counter_sync.map(|d| d.as_micros() as i64),
        }),
    ));
    // The disk spool, recovered before anything is accepted: its counters
    // are part of the replay check.
    let spooled = match &s.spool {
        Some(settings) => {
            let opened = spool::open(settings, &table)?;
            *metrics.spool.write() = Some(opened.stats.clone());
            Some((opened, settings.clone()))
        }
        None => None,
    };
    let (tx, rx) = mpsc::channel(s.queue_capacity);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (give_up, give_up_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // TCP first, so that a port 0 request gives UDP the same port.
    let mut listen = s.listen;
    let mut tcp_addr = None;
    if s.tcp {
        let l = tcp::bind(listen).with_context(|| format!("cannot listen on TCP {listen}"))?;
        listen = l.local_addr()?;
        tcp_addr = Some(listen);
        let limits = tcp::Limits {
            max_connections: s.max_connections,
            idle_timeout: s.tcp_idle_timeout,
        };
        tasks.push(tokio::spawn(tcp::serve(
            l,
            ingest.clone(),
            tx.clone(),
            limits,
            s.proxy.clone().map(Arc::new),
            shutdown_rx.clone(),
        )));
    }
    let mut udp_addr = None;
    if s.udp {
        let socks = udp::bind(listen, s.udp_workers)
            .with_context(|| format!("cannot listen on UDP {listen}"))?;
        udp_addr = Some(socks[0].local_addr()?);
        for sock in socks {
            tasks.push(tokio::spawn(udp::serve(
                sock,
                ingest.clone(),
                tx.clone(),
                shutdown_rx.clone(),
            )));
        }
    }
    let queue = tx.downgrade();
    drop(tx);

    // socket → queue → (spool →) store.
    let sink = match spooled {
        None => Sink::Memory(tokio::spawn(
            Writer {
                store: store.clone(),
                rx,
                metrics: metrics.clone(),
                batch_size: s.batch_size,
                flush_interval: s.flush_interval,
                parallel: s.store_writers,
                options: ossec_store::EventOptions { data: s.event_data },
            }
            .run(give_up_rx.clone()),
        )),
        Some((opened, settings)) => {
            let durable = opened.durable.subscribe();
            let writer = tokio::spawn(
                spool::SpoolWriter {
                    spool: opened.spool.clone(),
                    durable: opened.durable,
                    stats: opened.stats.clone(),
                    table: table.clone(),
                    metrics: metrics.clone(),
                    fsync: settings.fsync,
                    when_full: settings.when_full,
                }
                .run(rx),
            );
            let drain = tokio::spawn(
                spool::Drain {
                    store: store.clone(),
                    spool: opened.spool,
                    dir: opened.dir,
                    id: opened.id,
                    start_end: opened.start_end,
                    durable,
                    stats: opened.stats,
                    metrics: metrics.clone(),
                    batch_size: s.batch_size,
                    parallel: s.store_writers,
                    options: ossec_store::EventOptions { data: s.event_data },
                }
                .run(give_up_rx.clone()),
            );
            Sink::Spool { writer, drain }
        }
    };
    let (state_done, state_done_rx) = oneshot::channel();
    let state_writer = tokio::spawn(
        StateWriter {
            store: store.clone(),
            table: table.clone(),
            ingest: ingest.clone(),
            metrics: metrics.clone(),
            disconnect_after: s.disconnect_after,
            resets_seen,
            job_lock: JobLock::NotHeld,
            jobs_run: 0,
            retention_days: s.retention_days,
            partitions_ahead: s.partitions_ahead,
            partition_job: None,
        }
        .run(state_done_rx, give_up_rx),
    );
    // The others read our counters every `--counter-sync-ms`: write them
    // at twice that rate.
    // (At shutdown the state writer's last write carries them too.)
    if let Some(every) = counter_sync {
        tasks.push(tokio::spawn(
            CounterWriter {
                store: store.clone(),
                table: table.clone(),
                metrics: metrics.clone(),
                every: (every / 2).max(Duration::from_millis(50)),
            }
            .run(shutdown_rx.clone()),
        ));
    }

    let (reload, reload_rx) = mpsc::unbounded_channel();
    let keys_changed = Arc::new(Notify::new());
    let (keys_applied_tx, keys_applied) = watch::channel(mirror.rev());
    tasks.push(tokio::spawn(
        KeySync {
            store: store.clone(),
            table: table.clone(),
            metrics: metrics.clone(),
            mirror,
            file: s.keys.clone(),
            file_poll: s.keys_poll_interval,
            reload: reload_rx,
            poke: keys_changed.clone(),
            applied: keys_applied_tx,
            warned,
            hup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
        .run(shutdown_rx.clone()),
    ));

    let mut metrics_addr = None;
    if let Some(addr) = s.metrics_listen {
        let token = s
            .http_token_file
            .as_deref()
            .map(http::read_token)
            .transpose()?;
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        metrics_addr = Some(l.local_addr()?);
        http::warn_if_open(addr, token.is_some());
        let history = History::new(Sample::now(&metrics));
        tasks.push(tokio::spawn(
            history.clone().run(metrics.clone(), shutdown_rx.clone()),
        ));
        let state = Arc::new(HttpState {
            metrics: metrics.clone(),
            table: table.clone(),
            store: store.clone(),
            queue,
            queue_capacity: s.queue_capacity,
            ready: AtomicBool::new(true),
            token,
            history,
            disconnect_after: s.disconnect_after,
            instance: s.instance_name.clone(),
            started_at_us: ossec_store::now_micros(),
        });
        tasks.push(tokio::spawn(http::serve(l, state, shutdown_rx.clone())));
    }

    let mut enroll_addr = None;
    if let Some(es) = &s.enroll {
        let password = es.password_file.as_deref().map(read_password).transpose()?;
        if password.is_none() && !es.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %es.listen,
                "enrollment needs no password: anyone who reaches {} can enroll an agent (set --enroll-password-file)",
                es.listen
            );
        }
        let acceptor = enroll::tls::acceptor(es)?;
        let l = enroll::bind(es.listen)
            .await
            .with_context(|| format!("cannot listen for enrollment on {}", es.listen))?;
        enroll_addr = Some(l.local_addr()?);
        let enroller = Arc::new(enroll::Enroller {
            settings: es.clone(),
            password,
            acceptor,
            store: store.clone(),
            metrics: metrics.clone(),
            keys_changed: keys_changed.clone(),
            keys_applied: keys_applied.clone(),
            proxy: s.proxy.clone(),
        });
        tasks.push(tokio::spawn(enroll::serve(
            l,
            enroller,
            shutdown_rx.clone(),
        )));
    }

    let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
    tracing::info!(
        udp = %show(udp_addr),
        tcp = %show(tcp_addr),
        metrics = %show(metrics_addr),
        enroll = %show(enroll_addr),
        store = %ossec_store::redact(&s.database_url),
        agents = table.current().agents.len(),
        verify_counters = s.verify_counters,
        instance = %s.instance_name,
        "ossec-collector ready: listening on udp {} and tcp {}, writing to {} ({} agents; keys file {})",
        show(udp_addr),
        show(tcp_addr),
        ossec_store::redact(&s.database_url),
        table.current().agents.len(),
        s.keys.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
    );
    Ok(Running {
        tcp_addr,
        udp_addr,
        metrics_addr,
        enroll_addr,
        metrics,
        table,
        store,
        shutdown,
        give_up,
        sink,
        state_writer,
        state_done,
        tasks,
        shutdown_timeout: s.shutdown_timeout,
        reload,
        _sqlite_lock: sqlite_lock,
    })
}

impl Running {
    /// Asks for a client.keys reload (what SIGHUP does).
    pub fn reload_keys(&self) {
        let _ = self.reload.send(());
    }

    /// Graceful shutdown: stop reading, store what is queued, persist state.
    /// Errors if events could not be stored within the timeout.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("shutting down: no more reads, storing queued events");
        let _ = self.shutdown.send(true);
        let Running {
            sink,
            state_writer,
            state_done,
            tasks,
            give_up,
            shutdown_timeout,
            metrics,
            store,
            // Released when shutdown is over, not when it starts.
            _sqlite_lock: _held,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        let stored_before = metrics.events_stored.load(Ordering::Relaxed);
        let mut left_in_spool = false;
        let lost = match sink {
            Sink::Memory(mut writer) => {
                match tokio::time::timeout_at(deadline, &mut writer).await {
                    Ok(r) => r.unwrap_or(0),
                    Err(_) => {
                        let _ = give_up.send(true);
                        let queued = metrics.events_queued.load(Ordering::Relaxed);
                        let stored = metrics.events_stored.load(Ordering::Relaxed);
                        let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
                        writer.abort();
                        // Still try to save agent state and counters (a store that
                        // refuses events may take them; the state writer gives up
                        // on errors once `give_up` is set).
                        let _ = state_done.send(());
                        let _ = tokio::time::timeout(Duration::from_secs(2), state_writer).await;
                        anyhow::bail!(
                        "shutdown timeout: {} queued events were not stored (is the store reachable?)",
                        queued.saturating_sub(stored)
                    );
                    }
                }
            }
            Sink::Spool {
                mut writer,
                mut drain,
            } => {
                // Everything queued goes into the spool (synced) first:
                // from then on nothing received can be lost.
                if tokio::time::timeout_at(deadline, &mut writer)
                    .await
                    .is_err()
                {
                    tracing::error!("the spool writer did not finish before the shutdown timeout");
                    writer.abort();
                }
                match tokio::time::timeout_at(deadline, &mut drain).await {
                    Ok(r) => left_in_spool = !r.unwrap_or(false),
                    Err(_) => {
                        let _ = give_up.send(true);
                        left_in_spool = true;
                        let _ = tokio::time::timeout(Duration::from_secs(2), &mut drain).await;
                        drain.abort();
                    }
                }
                0
            }
        };
        // Agent state and counters last, so they include the final events.
        let _ = state_done.send(());
        if tokio::time::timeout_at(deadline + Duration::from_secs(2), state_writer)
            .await
            .is_err()
        {
            tracing::error!("agent state could not be saved before the shutdown timeout");
        }
        for t in tasks {
            t.abort();
        }
        store.close().await;
        if lost > 0 {
            anyhow::bail!("{lost} events could not be stored at shutdown");
        }
        let stored_during_shutdown = metrics.events_stored.load(Ordering::Relaxed) - stored_before;
        if left_in_spool {
            let bytes = metrics
                .spool
                .read()
                .as_ref()
                .map_or(0, |sp| sp.bytes.load(Ordering::Relaxed));
            tracing::warn!(
                stored_during_shutdown,
                spool_bytes = bytes,
                "shutdown complete; events not yet in the store stay in the spool and are stored at the next start"
            );
        } else {
            tracing::info!(
                stored_during_shutdown,
                "shutdown complete: every received event is stored"
            );
        }
        Ok(())
    }
}

/// Runs `serve` until SIGTERM or SIGINT.
pub async fn run(s: Settings) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a signal right after the ready line must find them.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let running = start(s).await?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    running.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_counter_survives_restarts_and_clock() {
        let now = 1_800_000_000_500_000; // half a second into 1_800_000_000
        let c = initial_sender_counter(None, now);
        assert_eq!((c.global, c.local), SenderCounter::clock(now));
        // Saved earlier in the same second: the clock is the floor.
        let c = initial_sender_counter(Some((1_800_000_000, 9)), now);
        assert_eq!((c.global, c.local), SenderCounter::clock(now));
        // Counter ahead of the clock (the clock went back): one second past it.
        let c = initial_sender_counter(Some((1_900_000_000, 9)), now);
        assert_eq!((c.global, c.local), (1_900_000_001, 0));
    }
}
