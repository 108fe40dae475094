//! The Redis engine: every room change is one Lua script (one round trip, atomic): membership
//! in both directions, the room and edge indexes, the room's seq, the publish of the resulting
//! push and its history entry change together. Values are plain strings a person can read in
//! redis-cli (names in [`crate::keys`]); only pub/sub payloads and history entries are binary
//! (see [`roomcast_protocol::bus`]).
//!
//! Files: [`scripts`] (all Lua), `rooms.rs` (membership, pushes, history), `sessions.rs` (the
//! global uid → session claims), `registry.rs` (edges and backends), `bus.rs` (pub/sub
//! subscriptions on a dedicated connection).

mod bus;
mod call;
mod registry;
mod rooms;
pub mod scripts;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::engine::Engine;
use crate::keys::Keys;
use crate::{HistoryConfig, PresenceConfig, Result, RESPONSE_TIMEOUT};

/// A handle on roomcast's Redis state. Cheap to clone; reconnects by itself.
#[derive(Clone)]
pub struct RedisEngine {
    keys: Keys,
    /// Multiplexed, auto-reconnecting connection with a response timeout, so that a Redis
    /// outage turns into prompt errors instead of hung requests.
    conn: ConnectionManager,
    /// For the dedicated pub/sub connections of subscriptions.
    client: redis::Client,
    history: HistoryConfig,
    presence: PresenceConfig,
    /// Set on an edge's own handle: its joins and claims carry the fencing token.
    fence: Option<Arc<crate::Fence>>,
    /// Payloads queued per subscription opened through this handle ([`crate::BUS_QUEUE_LEN`];
    /// smaller in tests, so that overflowing it is quick).
    bus_queue_len: usize,
}

impl RedisEngine {
    /// (fenced edge, token) as script arguments; empty when this handle is not fenced.
    fn fence_args(&self) -> (String, String) {
        self.fence
            .as_ref()
            .map(|f| (f.edge().to_string(), f.token()))
            .unwrap_or_default()
    }
}

impl RedisEngine {
    /// Connects to `url` (fails at once if Redis is unreachable now).
    pub async fn connect(url: &str, keys: Keys) -> Result<RedisEngine> {
        let client = redis::Client::open(url)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client.clone(), cfg).await?;
        // A store without a marker is new when a process connects to it (see the contract's
        // "Losing state"); a running process finding it gone later opens the recovery window.
        let _: String = scripts::INIT_GENERATION
            .key(keys.generation())
            .arg(crate::now_ms())
            .invoke_async(&mut conn.clone())
            .await?;
        Ok(RedisEngine {
            keys,
            conn,
            client,
            history: HistoryConfig::default(),
            presence: PresenceConfig::default(),
            fence: None,
            bus_queue_len: crate::BUS_QUEUE_LEN,
        })
    }

    /// Subscriptions opened through this handle queue `len` payloads (at least 1) instead of
    /// [`crate::BUS_QUEUE_LEN`].
    pub fn with_bus_queue_len(mut self, len: usize) -> RedisEngine {
        self.bus_queue_len = len.max(1);
        self
    }
}

#[async_trait]
impl Engine for RedisEngine {
    fn keys(&self) -> &Keys {
        &self.keys
    }

    fn history_config(&self) -> HistoryConfig {
        self.history
    }

    fn presence_config(&self) -> PresenceConfig {
        self.presence
    }

    fn reconfigured(&self, history: HistoryConfig, presence: PresenceConfig) -> Arc<dyn Engine> {
        Arc::new(RedisEngine {
            history,
            presence,
            ..self.clone()
        })
    }

    fn fenced(&self, fence: Arc<crate::Fence>) -> Arc<dyn Engine> {
        Arc::new(RedisEngine {
            fence: Some(fence),
            ..self.clone()
        })
    }

    async fn init_settings(&self, settings: &[(String, String)]) -> Result<Vec<String>> {
        let mut inv = scripts::INIT_SETTINGS.prepare_invoke();
        inv.key(self.keys.settings());
        for (name, value) in settings {
            inv.arg(name).arg(value);
        }
        Ok(inv.invoke_async(&mut self.conn.clone()).await?)
    }

    async fn forget_everything(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.keys.prefix());
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
