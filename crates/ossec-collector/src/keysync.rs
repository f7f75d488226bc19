//! Keys from the store: the `agent_keys` table is the source of truth, and
//! this module keeps the collector's [`AgentTable`] in step with it.
//!
//! Owns the import of `--keys FILE` (on start, on SIGHUP and when the file
//! changes; the file only manages its own `file` agents), the poll of the
//! store's change feed (every [`SYNC_EVERY`], so a key added or removed by
//! any process — enrollment, `agents add/remove`, another replica — is
//! applied within about a second), and the rebuild of the key set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ossec_proto::{ClientKeys, KeyEntry};
use ossec_store::{FileKey, Store, StoredKey};
use tokio::sync::{mpsc, watch, Notify};

use crate::agents::AgentTable;
use crate::metrics::Metrics;

/// How often the store's key feed is polled.
pub const SYNC_EVERY: Duration = Duration::from_millis(500);

/// The entries of a parsed file, as the store imports them. A key that is
/// not UTF-8 cannot be stored as text; it is left out and named.
fn file_keys(path: &Path, keys: &ClientKeys) -> Vec<FileKey> {
    keys.entries()
        .iter()
        .filter_map(|e| match String::from_utf8(e.key.clone()) {
            Ok(key) => Some(FileKey {
                id: e.id.clone(),
                name: e.name.clone(),
                ip: e.ip.clone(),
                key,
                line: e.line,
            }),
            Err(_) => {
                tracing::error!(
                    file = %path.display(),
                    line = e.line,
                    agent = %e.id,
                    "the key of agent {} (line {}) is not UTF-8 text and cannot be stored; the agent is left out",
                    e.id,
                    e.line
                );
                None
            }
        })
        .collect()
}

/// Why a keys-file import did not happen.
#[derive(Debug)]
pub enum ImportError {
    /// The file cannot be read or is not a valid client.keys: the store is
    /// unchanged until the file changes.
    File(anyhow::Error),
    /// The store refused the import: worth retrying.
    Store(anyhow::Error),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::File(e) | ImportError::Store(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ImportError {}

/// Imports the keys file into the store. What `keys check` would report
/// is logged as a warning, once per problem (`warned` remembers).
pub async fn import_file(
    store: &Store,
    path: &Path,
    warned: &mut std::collections::HashSet<String>,
) -> Result<ossec_store::ImportReport, ImportError> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the keys file {}", path.display()))
        .map_err(ImportError::File)?;
    // Warned once per problem while it lasts: the set holds the file's
    // current findings only, so it cannot grow across reloads.
    let before = std::mem::take(warned);
    for f in ossec_proto::keys::check(&text) {
        let msg = format!("{} line {}: {}", path.display(), f.line, f.problem);
        if !before.contains(&msg) {
            tracing::warn!(
                file = %path.display(),
                line = f.line,
                "{msg} (`ossec-collector keys check {}` lists every problem)",
                path.display()
            );
        }
        warned.insert(msg);
    }
    let keys = ClientKeys::parse(&text)
        .with_context(|| format!("{} is not a valid client.keys", path.display()))
        .map_err(ImportError::File)?;
    let report = store
        .import_file_keys(&file_keys(path, &keys))
        .await
        .with_context(|| format!("cannot import {} into the store", path.display()))
        .map_err(ImportError::Store)?;
    for c in &report.conflicts {
        tracing::warn!(file = %path.display(), "{}: {c}", path.display());
    }
    Ok(report)
}

/// The store's keys as the collector holds them: every active row by ID
/// with its derived entry (made once per change of the row, so that a new
/// key among 50,000 does not derive them all again), and the revision seen
/// last.
#[derive(Default)]
pub struct KeyMirror {
    active: BTreeMap<String, (StoredKey, Option<KeyEntry>)>,
    rev: i64,
}

impl KeyMirror {
    /// Applies changed rows; returns whether the active set changed. A row
    /// that cannot be a client.keys entry is kept out of the key set and
    /// logged.
    pub fn apply(&mut self, changes: Vec<StoredKey>) -> bool {
        let mut changed = false;
        for k in changes {
            self.rev = self.rev.max(k.rev);
            if k.is_active() {
                let same = self
                    .active
                    .get(&k.id)
                    .is_some_and(|(o, _)| o.name == k.name && o.ip == k.ip && o.key == k.key);
                if !same {
                    let entry = KeyEntry::new(
                        k.id.clone(),
                        k.name.clone(),
                        k.ip.clone(),
                        k.key.clone().into_bytes(),
                        0,
                    )
                    .map_err(|p| tracing::error!("agent_keys row left out: {p}"))
                    .ok();
                    self.active.insert(k.id.clone(), (k, entry));
                    changed = true;
                }
            } else if self.active.remove(&k.id).is_some() {
                changed = true;
            }
        }
        changed
    }

    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// How many active keys the store holds.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// The active keys as a key set, ordered by ID.
    pub fn key_set(&self) -> ClientKeys {
        let (keys, problems) =
            ClientKeys::from_key_entries(self.active.values().filter_map(|(_, e)| e.clone()));
        for p in problems {
            tracing::error!("agent_keys row left out: {}", p.problem);
        }
        keys
    }
}

/// Loads every key from the store (at start).
pub async fn load(store: &Store) -> anyhow::Result<KeyMirror> {
    let mut m = KeyMirror::default();
    m.apply(
        store
            .key_changes(0)
            .await
            .context("cannot read agent keys")?,
    );
    Ok(m)
}

/// Identity of a file for change detection: (mtime, inode, size).
pub fn file_id(p: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.ino(), m.len()))
}

/// The key-sync task's inputs.
pub struct KeySync {
    pub store: Store,
    pub table: Arc<AgentTable>,
    pub metrics: Arc<Metrics>,
    pub mirror: KeyMirror,
    /// `--keys FILE`, if any, and how often to look at it.
    pub file: Option<PathBuf>,
    pub file_poll: Duration,
    /// Reload the file now (SIGHUP, `Running::reload_keys`).
    pub reload: mpsc::UnboundedReceiver<()>,
    /// Poll the store now (this process just changed a key).
    pub poke: Arc<Notify>,
    /// The revision applied to the table, for waiters (enrollment).
    pub applied: watch::Sender<i64>,
    /// Keys-file problems already warned about.
    pub warned: std::collections::HashSet<String>,
    /// SIGHUP, registered before the collector says it is ready.
    pub hup: Option<tokio::signal::unix::Signal>,
}

impl KeySync {
    /// Polls the store and re-imports the file until shutdown.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut hup = self.hup.take();
        let mut sync = tokio::time::interval(SYNC_EVERY);
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut file_tick = tokio::time::interval(self.file_poll.max(Duration::from_millis(100)));
        file_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_file = self.file.as_deref().and_then(file_id);
        loop {
            let file_trigger = tokio::select! {
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => Some("SIGHUP"),
                Some(()) = self.reload.recv() => Some("request"),
                _ = file_tick.tick() => {
                    let now = self.file.as_deref().and_then(file_id);
                    (now.is_some() && now != last_file).then_some("file changed")
                }
                _ = sync.tick() => None,
                _ = self.poke.notified() => None,
                _ = crate::shutdown::requested(&mut shutdown) => return,
            };
            let (Some(why), Some(path)) = (file_trigger, self.file.clone()) else {
                self.sync_once().await;
                continue;
            };
            last_file = file_id(&path);
            let imported = import_file(&self.store, &path, &mut self.warned).await;
            // Applied before the log line: after "reloaded", the keys work.
            self.sync_once().await;
            match imported {
                Ok(r) => {
                    self.metrics.key_reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        trigger = why,
                        added = r.added,
                        changed = r.changed,
                        removed = r.removed,
                        "client.keys reloaded: {} imported into the store",
                        path.display()
                    );
                }
                Err(e) => {
                    self.metrics
                        .key_reload_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        trigger = why,
                        "keys file reload refused, the previous keys stay in use: {e:#}"
                    );
                }
            }
        }
    }

    /// Applies the store's changes since the last poll.
    pub async fn sync_once(&mut self) {
        match self.store.key_changes(self.mirror.rev()).await {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => {
                if self.mirror.apply(changes) {
                    let (added, removed, changed) = self.table.reload(self.mirror.key_set());
                    let n = self.table.current().agents.len();
                    self.metrics.agents_known.store(n as u64, Ordering::Relaxed);
                    tracing::info!(
                        added,
                        removed,
                        changed,
                        agents = n,
                        rev = self.mirror.rev(),
                        "agent keys updated from the store"
                    );
                }
            }
            Err(e) => self.metrics.key_sync_error(&e),
        }
        self.applied.send_replace(self.mirror.rev());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossec_store::KeyOrigin;

    fn row(id: &str, key: &str, rev: i64, removed: bool) -> StoredKey {
        StoredKey {
            id: id.into(),
            name: format!("n{id}"),
            ip: "any".into(),
            key: key.into(),
            groups: vec![],
            origin: KeyOrigin::Enrollment,
            created_at: 0,
            removed_at: removed.then_some(1),
            rev,
        }
    }

    #[test]
    fn mirror_follows_the_feed() {
        let mut m = KeyMirror::default();
        assert!(m.apply(vec![row("002", "k2", 1, false), row("001", "k1", 1, false)]));
        assert_eq!(m.rev(), 1);
        let ids: Vec<_> = m.key_set().entries().iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, ["001", "002"]);
        // The same row again (another column changed): no new key set.
        assert!(!m.apply(vec![row("001", "k1", 2, false)]));
        assert_eq!(m.rev(), 2);
        assert!(m.apply(vec![row("001", "k1b", 3, false)]));
        assert!(m.apply(vec![row("002", "k2", 4, true)]));
        assert_eq!(m.key_set().len(), 1);
        assert!(
            !m.apply(vec![row("009", "k", 5, true)]),
            "removing an unknown ID"
        );
        // A row that cannot be a client.keys line is left out, not fatal.
        let mut bad = row("003", "k3", 6, false);
        bad.ip = "not-an-ip".into();
        assert!(m.apply(vec![bad]));
        assert_eq!(m.key_set().len(), 1);
    }
}
