//! The backend's entry in the Redis registry (`<prefix>:backend:<id>`), which is how edges
//! find it: there is no static backend list anywhere.
//!
//! The entry is a lease: it expires [`TTL`] after the last refresh, so a backend that is
//! killed (no chance to unregister) disappears by itself within a few seconds, and edges stop
//! choosing it at their next registry read. A clean shutdown removes it at once.

use std::time::Duration;

use roomcast_store::{BackendInfo, Store, StoreError};
use tokio::task::JoinHandle;

/// How often the entry is refreshed. Edges read the registry every second as well.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long the entry outlives the last refresh: several refresh periods, so that one or two
/// slow or failed refreshes (a Redis hiccup) do not make a healthy backend vanish, yet a dead
/// backend is forgotten within seconds.
pub const TTL: Duration = Duration::from_secs(5);

/// A live registration, refreshed in the background until [`Registration::stop`].
pub struct Registration {
    store: Store,
    info: BackendInfo,
    refresher: JoinHandle<()>,
}

impl Registration {
    /// Registers `info` now (failing if Redis refuses, so a backend that cannot be found does
    /// not pretend to be up), then keeps refreshing it.
    pub async fn start(store: Store, info: BackendInfo) -> Result<Registration, StoreError> {
        store.register_backend(&info, TTL).await?;
        let refresher = tokio::spawn(refresh(store.clone(), info.clone()));
        Ok(Registration {
            store,
            info,
            refresher,
        })
    }

    /// The registered entry.
    pub fn info(&self) -> &BackendInfo {
        &self.info
    }

    /// Stops refreshing, then removes the entry so that edges stop choosing this backend at
    /// their next registry read. The refresher is stopped first, or it could write the entry
    /// back after the removal. A failed removal is logged: the entry then expires by itself.
    pub async fn stop(self) {
        self.refresher.abort();
        let _ = self.refresher.await;
        if let Err(e) = self.store.unregister_backend(&self.info.id).await {
            tracing::warn!(
                "could not unregister backend {} ({e}); its entry expires within {} s",
                self.info.id,
                TTL.as_secs()
            );
        }
    }
}

/// How soon a failed refresh is retried: a Redis restart wipes the entry, and edges answer
/// 502 when they find no backend, so the entry is written back within this of Redis's return.
pub const RETRY: Duration = Duration::from_millis(200);

/// Refreshes the entry every [`REFRESH`] until aborted. Redis errors are logged and the
/// refresh retried every [`RETRY`]: an outage shorter than [`TTL`] goes unnoticed by edges,
/// and after a longer one (or a Redis restart that lost the data) the entry is back within
/// [`RETRY`] of Redis answering again.
async fn refresh(store: Store, info: BackendInfo) {
    // The entry was just written.
    tokio::time::sleep(REFRESH).await;
    let mut failing = false;
    loop {
        match store.register_backend(&info, TTL).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(backend = %info.id, "registry refresh works again");
            }
            Ok(()) => {}
            // Warn once per outage, not once a second.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(backend = %info.id, error = %e, "registry refresh failed; retrying");
            }
            Err(e) => tracing::debug!(backend = %info.id, error = %e, "registry refresh failed"),
        }
        tokio::time::sleep(if failing { RETRY } else { REFRESH }).await;
    }
}
