//! The backend's entry in the Redis registry (`rc:backend:<id>`), which is how edges find it.
//! It expires [`TTL`] after the last refresh, so a killed backend disappears by itself.

use std::time::Duration;

use roomcast_common::store::{BackendInfo, Store};

/// How often the entry is refreshed.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long the entry outlives the last refresh.
pub const TTL: Duration = Duration::from_secs(5);

/// Refreshes the entry until the task is aborted; Redis errors are logged and retried.
pub async fn run(store: Store, info: BackendInfo) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = store.register_backend(&info, TTL).await {
            tracing::warn!("backend registry refresh failed: {e}");
        }
    }
}
