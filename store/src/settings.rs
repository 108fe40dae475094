//! Settings every process of a deployment must share. A history length that differs between
//! an edge and a backend, or id rules that differ between edges, break guarantees silently
//! (gaps reported where there are none, ids accepted on one edge and refused on another), so
//! the first process writes them to the store (Redis: the hash `rc:settings`) and every later
//! one compares its own values and refuses to start on a mismatch.

use roomcast_protocol::ids::IdRules;

use crate::{HistoryConfig, PresenceConfig, Result, Store, StoreError};

/// The shared settings of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    pub history: HistoryConfig,
    pub presence: PresenceConfig,
    pub ids: IdRules,
}

impl Settings {
    /// `(name, value)` pairs as stored: readable names and decimal values (`rc:settings` in
    /// redis-cli reads as the flags that set them).
    pub fn fields(&self) -> Vec<(String, String)> {
        vec![
            ("history_len".into(), self.history.max_len.to_string()),
            (
                "history_age_ms".into(),
                (self.history.max_age.as_millis() as u64).to_string(),
            ),
            (
                "presence_max_members".into(),
                self.presence.max_members.to_string(),
            ),
            ("max_id_bytes".into(), self.ids.max_bytes.to_string()),
            (
                "ascii_ids".into(),
                u8::from(self.ids.ascii_only).to_string(),
            ),
        ]
    }

    /// Writes the settings not stored yet, then fails on the first stored value that differs.
    pub async fn check(&self, store: &Store) -> Result<()> {
        let fields = self.fields();
        let stored = store.init_settings(&fields).await?;
        for ((name, ours), stored) in fields.into_iter().zip(stored) {
            if ours != stored {
                return Err(StoreError::SettingsMismatch { name, ours, stored });
            }
        }
        Ok(())
    }
}
