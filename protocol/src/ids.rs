//! Validation of the identifiers that reach Redis key names.
//!
//! User ids and room ids come from clients, so they may hold any printable UTF-8 (including
//! `:`, `*`, `{`, `}` and spaces: `roomcast_store::keys` escapes those). Node ids (edges, backends)
//! come from configuration and are restricted to a safe alphabet, because Lua scripts append
//! them to key prefixes.

/// Longest accepted uid or room id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// What user ids and room ids may look like (edges and backends: `--max-id-bytes`,
/// `--ascii-ids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRules {
    /// Longest accepted id, in bytes.
    pub max_bytes: usize,
    /// Only printable ASCII (`!`..`~` and space), for deployments whose other systems need it.
    pub ascii_only: bool,
}

impl Default for IdRules {
    fn default() -> Self {
        IdRules {
            max_bytes: MAX_ID_BYTES,
            ascii_only: false,
        }
    }
}

impl IdRules {
    /// Checks a user id or room id; the error names the field and says what is wrong.
    pub fn check(&self, field: &str, value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Err(format!("`{field}` must not be empty"));
        }
        if value.len() > self.max_bytes {
            return Err(format!(
                "`{field}` is {} bytes long; the maximum is {}",
                value.len(),
                self.max_bytes
            ));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(format!("`{field}` must not contain control characters"));
        }
        if self.ascii_only && !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(format!(
                "`{field}` must be printable ASCII on this deployment"
            ));
        }
        Ok(())
    }
}

/// Checks a user id or room id with the default rules.
pub fn check_user_id(field: &str, value: &str) -> Result<(), String> {
    IdRules::default().check(field, value)
}

/// Checks an edge or backend id: 1–64 of `[A-Za-z0-9._-]`.
pub fn check_node_id(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node id `{value}` must be 1-64 characters of A-Z a-z 0-9 . _ -"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert!(check_user_id("rid", "lobby {1}: *x").is_ok());
        assert!(check_user_id("rid", "").unwrap_err().contains("empty"));
        assert!(check_user_id("uid", "a\nb")
            .unwrap_err()
            .contains("control"));
        assert!(check_user_id("uid", &"x".repeat(129))
            .unwrap_err()
            .contains("129"));
    }

    #[test]
    fn configured_rules() {
        let strict = IdRules {
            max_bytes: 8,
            ascii_only: true,
        };
        assert!(strict.check("rid", "lobby 1").is_ok());
        assert!(strict.check("rid", "salón").unwrap_err().contains("ASCII"));
        assert!(strict
            .check("rid", "123456789")
            .unwrap_err()
            .contains("maximum is 8"));
    }

    #[test]
    fn node_ids() {
        assert!(check_node_id("edge-1.eu_west").is_ok());
        assert!(check_node_id("edge:1").is_err());
        assert!(check_node_id("").is_err());
    }
}
