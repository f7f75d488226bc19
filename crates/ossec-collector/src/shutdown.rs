//! The shutdown signal shared by every task: a `watch` channel that turns
//! `true` once, when SIGTERM/SIGINT arrives (or a test asks).

use tokio::sync::watch;

/// Resolves when shutdown was requested (or the sender is gone).
pub async fn requested(rx: &mut watch::Receiver<bool>) {
    // The guard returned by `wait_for` is not `Send`; drop it here.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
