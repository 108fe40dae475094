//! Client authentication: JSON Web Tokens carrying the user id, an expiry and the rooms the user
//! may join.
//!
//! Edges verify tokens with one configured algorithm: HS256 (a shared secret), RS256 or ES256
//! (a public key). A token signed with any other algorithm is refused, whatever its signature —
//! that closes the classic "alg: none" and HS/RS confusion attacks. The uid always comes from the
//! token's `sub`, never from a request body.
//!
//! ```json
//! {"sub": "alice", "exp": 1767225600, "rooms": ["lobby", "game-*"]}
//! ```
//!
//! `rooms` lists room ids or patterns: an entry ending in `*` matches every room id starting with
//! what precedes it, so `"*"` allows every room. No `rooms` claim allows no room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Clock skew tolerated on `exp`, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// Longest token accepted, in bytes (a token is read before it is verified).
pub const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Rooms (or `prefix*` patterns) the user may join.
    #[serde(default)]
    pub rooms: Vec<String>,
}

impl Claims {
    /// Whether these claims allow joining `rid`.
    pub fn allows_room(&self, rid: &str) -> bool {
        self.rooms.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => rid.starts_with(prefix),
            None => p == rid,
        })
    }
}

/// Why a token was refused; each message says what to fix.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a token is required: pass `token` (a JWT) in the request")]
    Missing,
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's signature is not valid (forged, or signed with another key)")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is signed with {found}; this deployment accepts only {expected}")]
    WrongAlgorithm { found: String, expected: String },
    #[error("the token does not allow room `{0}`")]
    RoomNotAllowed(String),
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(String),
}

/// Verified tokens remembered per [`Verifier`] (and its clones). A client presents the same
/// token for every room it enters; checking a signature again costs ~30 000 instructions for
/// HS256 and far more for RS256/ES256. Entries are whole tokens compared exactly, and their
/// expiry is checked on every use. At this bound the cache is emptied: at most 4096 tokens of
/// at most [`MAX_TOKEN_BYTES`] (16 MiB in theory; a few hundred bytes each in practice).
pub const MAX_CACHED_TOKENS: usize = 4096;

/// How an edge verifies tokens.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    alg: Algorithm,
    /// Tokens whose signature and claims were already checked (see [`MAX_CACHED_TOKENS`]).
    verified: Arc<Mutex<HashMap<Box<str>, Claims>>>,
}

impl Verifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Verifier {
        Verifier {
            key: DecodingKey::from_secret(secret),
            alg: Algorithm::HS256,
            verified: Arc::default(),
        }
    }

    /// RS256 or ES256 with a PEM public key.
    pub fn public_key(alg: &str, pem: &[u8]) -> Result<Verifier, String> {
        let (alg, key) = match alg {
            "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(pem)),
            "ES256" => (Algorithm::ES256, DecodingKey::from_ec_pem(pem)),
            other => {
                return Err(format!(
                    "unsupported JWT algorithm `{other}` (use RS256 or ES256)"
                ))
            }
        };
        Ok(Verifier {
            key: key.map_err(|e| format!("bad {alg:?} public key: {e}"))?,
            alg,
            verified: Arc::default(),
        })
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// [`Verifier::verify`] as of `now` (seconds since the epoch) for a token verified before;
    /// a new token is checked against the real clock.
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(claims) = verified.get(token) {
            if now <= claims.exp.saturating_add(LEEWAY_SECS) {
                return Ok(claims.clone());
            }
            verified.remove(token);
            return Err(AuthError::Expired);
        }
        drop(verified);
        let claims = self.check(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= MAX_CACHED_TOKENS {
            verified.clear();
        }
        verified.insert(token.into(), claims.clone());
        Ok(claims)
    }

    /// The signature, algorithm and claims of a token not seen before.
    fn check(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != self.alg {
            return Err(AuthError::WrongAlgorithm {
                found: format!("{:?}", header.alg),
                expected: format!("{:?}", self.alg),
            });
        }
        let mut v = Validation::new(self.alg);
        v.leeway = LEEWAY_SECS;
        v.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.key, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm {
                    found: format!("{:?}", header.alg),
                    expected: format!("{:?}", self.alg),
                },
                ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
                _ => AuthError::Malformed,
            })
    }
}

/// Mints HS256 tokens (the development gate, and tests).
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
}

impl Minter {
    pub fn hs256(secret: &[u8]) -> Minter {
        Minter {
            key: EncodingKey::from_secret(secret),
        }
    }

    /// A token for `uid`, valid for `ttl`, allowing `rooms`.
    pub fn mint(&self, uid: &str, rooms: &[String], ttl: Duration) -> String {
        let exp = unix_now() + ttl.as_secs();
        self.mint_claims(&Claims {
            sub: uid.to_string(),
            exp,
            rooms: rooms.to_vec(),
        })
    }

    pub fn mint_claims(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key)
            .expect("HS256 signing cannot fail")
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test secret";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn accepts_a_valid_token_and_checks_rooms() {
        let t = Minter::hs256(SECRET).mint(
            "alice",
            &["lobby".into(), "game-*".into()],
            Duration::from_secs(60),
        );
        let c = Verifier::hs256(SECRET).verify(&t).unwrap();
        assert_eq!(c.sub, "alice");
        assert!(c.allows_room("lobby"));
        assert!(c.allows_room("game-42"));
        assert!(!c.allows_room("lobby2"));
        assert!(!c.allows_room("admin"));
        let all = Claims {
            sub: "x".into(),
            exp: 0,
            rooms: vec!["*".into()],
        };
        assert!(all.allows_room("anything"));
        let none = Claims {
            sub: "x".into(),
            exp: 0,
            rooms: vec![],
        };
        assert!(!none.allows_room("lobby"));
    }

    #[test]
    fn refuses_missing_forged_expired_and_garbage() {
        let v = Verifier::hs256(SECRET);
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        assert_eq!(v.verify("not.a.jwt"), Err(AuthError::Malformed));
        let forged = Minter::hs256(b"other secret").mint("alice", &[], Duration::from_secs(60));
        assert_eq!(v.verify(&forged), Err(AuthError::BadSignature));
        let expired = Minter::hs256(SECRET).mint_claims(&Claims {
            sub: "alice".into(),
            exp: now() - 3600,
            rooms: vec![],
        });
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        assert_eq!(
            v.verify(&"x".repeat(MAX_TOKEN_BYTES + 1)),
            Err(AuthError::TooLong)
        );
    }

    #[test]
    fn refuses_other_algorithms_including_none() {
        let v = Verifier::hs256(SECRET);
        // {"alg":"none"} with no signature.
        let none =
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(v.verify(none).is_err());
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &Claims {
                sub: "a".into(),
                exp: now() + 60,
                rooms: vec![],
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(
            v.verify(&hs384),
            Err(AuthError::WrongAlgorithm { .. })
        ));
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_forgery_of_it_is_checked() {
        let v = Verifier::hs256(SECRET);
        let t = Minter::hs256(SECRET).mint("alice", &["lobby".into()], Duration::from_secs(60));
        let first = v.verify(&t).unwrap();
        // The second use is served from the cache, with the same claims.
        assert_eq!(v.clone().verify(&t).unwrap(), first);
        // Past its expiry (and the leeway) the remembered token is refused like any other.
        let later = first.exp + LEEWAY_SECS + 1;
        assert_eq!(v.verify_at(&t, later), Err(AuthError::Expired));
        // A token differing from a remembered one in its signature is verified, not matched.
        let mut forged = t.clone().into_bytes();
        let i = forged.len() - 5;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        v.verify(&t).unwrap();
        assert!(v.verify(&forged).is_err());
    }
}
