//! Tokens. Only the root token exists so far; full token management comes with policies.
//!
//! A token id (`hvs.` + 24 random base62 characters, ~143 bits) is shown to its owner once and never stored: the
//! state keeps only its SHA-256. Because ids are long random strings, an unsalted hash cannot be reversed by
//! guessing.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{decode_stored, Error, Result};
use crate::raft::StateReader;

const TOKEN_PREFIX: &str = "token/";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A stored token. The id itself is not here, only its hash (the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// SHA-256 of the token id, hex.
    pub id_hash: String,
    /// Accessor: a second, non-secret handle to the token.
    pub accessor: String,
    /// Policies attached to the token.
    pub policies: Vec<String>,
    /// Display name, e.g. `root` or `token`.
    pub display_name: String,
    /// Creation time (leader clock, nanoseconds since the Unix epoch).
    pub created_unix_nanos: i64,
}

impl TokenEntry {
    /// True if the token carries the `root` policy.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }
}

/// SHA-256 of a token id, hex encoded.
pub fn hash(token_id: &str) -> String {
    hex::encode(Sha256::digest(token_id.as_bytes()))
}

/// The state key of a token.
pub(crate) fn key(id_hash: &str) -> Vec<u8> {
    format!("{TOKEN_PREFIX}{id_hash}").into_bytes()
}

/// `n` random base62 characters from the OS CSPRNG.
pub fn random_base62(n: usize) -> Result<String> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
        // Rejection sampling keeps the distribution uniform: 248 = 4 * 62.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == n {
                break;
            }
            out.push(BASE62[usize::from(*b % 62)] as char);
        }
    }
    Ok(out)
}

/// A fresh token id, `hvs.` followed by 24 random base62 characters.
pub fn generate_id() -> Result<String> {
    Ok(format!("hvs.{}", random_base62(24)?))
}

/// A root token entry for `token_id` (call on the active node).
pub fn root_entry(token_id: &str) -> Result<TokenEntry> {
    Ok(TokenEntry {
        id_hash: hash(token_id),
        accessor: random_base62(24)?,
        policies: vec!["root".into()],
        display_name: "root".into(),
        created_unix_nanos: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
    })
}

/// Looks a token id up in the applied state.
pub fn lookup(state: &StateReader, token_id: &str) -> Result<Option<TokenEntry>> {
    state.get(&key(&hash(token_id)))?.map(|v| decode_stored(&v)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_vault_service_tokens() {
        let id = generate_id().unwrap();
        assert!(id.starts_with("hvs."));
        assert_eq!(id.len(), 28);
        assert!(id[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(id, generate_id().unwrap());
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(hash("root"), "4813494d137e1631bba301d5acab6e7bb7aa74ce1185d456565ef51d737677b2");
    }
}
