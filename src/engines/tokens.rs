//! Tokens: creation, lookup, renewal and revocation, with Vault's semantics.
//!
//! A token id (`hvs.` + 24 random base62 characters, ~143 bits) is shown to its owner once and never stored: the
//! state keeps only its SHA-256. Because ids are long random strings, an unsalted hash cannot be reversed by
//! guessing. Two indexes sit beside each token: its accessor (a second, non-secret handle) and, for a child token,
//! an entry under its parent, so revoking a parent revokes its whole subtree in the same command.
//!
//! Expiry is an absolute time stamped by the active node when it creates or renews a token (it is in the command),
//! so every node agrees on it; a node compares it with its own clock when a token is used.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{decode_stored, ApplyError, Error, Output, Result};
use crate::raft::{codec, StateReader, StateTxn};
use crate::storage::StorageError;

const TOKEN_PREFIX: &str = "token/";
const ACCESSOR_PREFIX: &str = "token-accessor/";
const CHILD_PREFIX: &str = "token-child/";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Vault's default token TTL (768h) for tokens created without `ttl` and without the root policy.
pub const DEFAULT_TTL_SECS: u64 = 768 * 3600;

/// A stored token. The id itself is not here, only its hash (the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// SHA-256 of the token id, hex.
    pub id_hash: String,
    /// Accessor: a second, non-secret handle to the token.
    pub accessor: String,
    /// Policies attached to the token, sorted.
    pub policies: Vec<String>,
    /// Display name, e.g. `root` or `token-ci`.
    pub display_name: String,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// Creation time (leader clock, nanoseconds since the Unix epoch).
    pub created_unix_nanos: i64,
    /// The TTL it was created with, seconds (0: none).
    pub creation_ttl_secs: u64,
    /// When it expires (leader clock, nanoseconds), if it does.
    pub expire_unix_nanos: Option<i64>,
    /// Its lifetime never exceeds this many seconds from creation (0: no limit).
    pub explicit_max_ttl_secs: u64,
    /// Uses left (0: unlimited). Each use is counted on the active node; the last one revokes the token.
    pub num_uses: u64,
    /// Whether it may be renewed.
    pub renewable: bool,
    /// The hash of the parent token, unless this is an orphan.
    pub parent_hash: Option<String>,
    /// The path that created it, e.g. `auth/token/create`.
    pub path: String,
}

impl TokenEntry {
    /// True if the token carries the `root` policy.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    /// True if, at `now_unix_nanos`, the token has expired.
    pub fn is_expired(&self, now_unix_nanos: i64) -> bool {
        self.expire_unix_nanos.is_some_and(|t| now_unix_nanos >= t)
    }

    /// Seconds of life left at `now_unix_nanos` (0 for tokens that never expire).
    pub fn ttl_secs(&self, now_unix_nanos: i64) -> u64 {
        match self.expire_unix_nanos {
            Some(t) => u64::try_from((t - now_unix_nanos).max(0) / 1_000_000_000).unwrap_or(0),
            None => 0,
        }
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

fn accessor_key(accessor: &str) -> Vec<u8> {
    format!("{ACCESSOR_PREFIX}{accessor}").into_bytes()
}

fn child_prefix(parent_hash: &str) -> String {
    format!("{CHILD_PREFIX}{parent_hash}/")
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

/// The active node's clock, nanoseconds since the Unix epoch (stamped into commands, never read at apply).
pub fn now_unix_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// A root token entry for `token_id` (call on the active node).
pub fn root_entry(token_id: &str) -> Result<TokenEntry> {
    Ok(TokenEntry {
        id_hash: hash(token_id),
        accessor: random_base62(24)?,
        policies: vec!["root".into()],
        display_name: "root".into(),
        meta: BTreeMap::new(),
        created_unix_nanos: now_unix_nanos(),
        creation_ttl_secs: 0,
        expire_unix_nanos: None,
        explicit_max_ttl_secs: 0,
        num_uses: 0,
        renewable: false,
        parent_hash: None,
        path: "auth/token/root".into(),
    })
}

/// Looks a token id up in the applied state; an expired token is treated as absent.
pub fn lookup(state: &StateReader, token_id: &str) -> Result<Option<TokenEntry>> {
    lookup_hash(state, &hash(token_id))
}

/// Looks a token up by the hash of its id; an expired token is treated as absent.
pub fn lookup_hash(state: &StateReader, id_hash: &str) -> Result<Option<TokenEntry>> {
    let entry: Option<TokenEntry> = state.get_decoded(&key(id_hash), decode_stored)?;
    Ok(entry.filter(|t| !t.is_expired(now_unix_nanos())))
}

/// Looks a token up by accessor; an expired token is treated as absent.
pub fn lookup_accessor(state: &StateReader, accessor: &str) -> Result<Option<TokenEntry>> {
    match state.get(&accessor_key(accessor))? {
        Some(id_hash) => lookup_hash(state, &String::from_utf8_lossy(&id_hash)),
        None => Ok(None),
    }
}

/// Token changes, replicated through Raft.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TokenCommand {
    /// Stores a new token (its parent, if any, must still exist).
    Create(TokenEntry),
    /// Sets a token's expiry (renewal).
    Renew {
        /// Hash of the token id.
        id_hash: String,
        /// The new expiry, stamped by the active node.
        expire_unix_nanos: Option<i64>,
    },
    /// Counts one use of a limited-use token; the last use revokes it (and its children).
    Use {
        /// Hash of the token id.
        id_hash: String,
    },
    /// Revokes a token and, unless `orphan_children`, every token below it.
    Revoke {
        /// Hash of the token id.
        id_hash: String,
        /// Keep the children, making them orphans (Vault's `revoke-orphan`).
        orphan_children: bool,
    },
}

/// Stores `entry` and its indexes.
pub(crate) fn put(txn: &mut StateTxn<'_>, entry: &TokenEntry) -> std::result::Result<(), StorageError> {
    txn.put(key(&entry.id_hash), codec::encode(entry)?);
    txn.put(accessor_key(&entry.accessor), entry.id_hash.clone().into_bytes());
    if let Some(parent) = &entry.parent_hash {
        txn.put(format!("{}{}", child_prefix(parent), entry.id_hash).into_bytes(), Vec::new());
    }
    Ok(())
}

fn get(txn: &StateTxn<'_>, id_hash: &str) -> std::result::Result<Option<TokenEntry>, StorageError> {
    txn.get(&key(id_hash))?.map(|v| codec::decode(&v)).transpose()
}

pub(crate) fn apply(
    txn: &mut StateTxn<'_>,
    command: TokenCommand,
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    match command {
        TokenCommand::Create(entry) => {
            if let Some(parent) = &entry.parent_hash {
                if get(txn, parent)?.is_none() {
                    return Ok(Err(ApplyError::Invalid("parent token was revoked".into())));
                }
            }
            put(txn, &entry)?;
        }
        TokenCommand::Renew { id_hash, expire_unix_nanos } => {
            let Some(mut entry) = get(txn, &id_hash)? else { return Ok(Err(ApplyError::NotFound)) };
            entry.expire_unix_nanos = expire_unix_nanos;
            txn.put(key(&id_hash), codec::encode(&entry)?);
        }
        TokenCommand::Use { id_hash } => {
            let Some(mut entry) = get(txn, &id_hash)? else { return Ok(Err(ApplyError::NotFound)) };
            match entry.num_uses {
                0 => {}
                1 => revoke(txn, &id_hash, false)?,
                n => {
                    entry.num_uses = n - 1;
                    txn.put(key(&id_hash), codec::encode(&entry)?);
                }
            }
        }
        TokenCommand::Revoke { id_hash, orphan_children } => {
            if get(txn, &id_hash)?.is_none() {
                return Ok(Ok(Output::Done)); // Revoking a token that is gone succeeds, as in Vault.
            }
            revoke(txn, &id_hash, orphan_children)?;
        }
    }
    Ok(Ok(Output::Done))
}

/// Deletes a token, its indexes, and (unless `orphan_children`) its subtree; orphaned children lose their parent.
fn revoke(txn: &mut StateTxn<'_>, id_hash: &str, orphan_children: bool) -> std::result::Result<(), StorageError> {
    let mut pending = vec![id_hash.to_string()];
    let mut first = true;
    while let Some(hash) = pending.pop() {
        let Some(entry) = get(txn, &hash)? else { continue };
        let children: Vec<String> = txn
            .scan_prefix(child_prefix(&hash).as_bytes())?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[child_prefix(&hash).len()..]).into_owned())
            .collect();
        for child in &children {
            txn.delete(format!("{}{child}", child_prefix(&hash)).into_bytes());
            if first && orphan_children {
                if let Some(mut orphan) = get(txn, child)? {
                    orphan.parent_hash = None;
                    txn.put(key(child), codec::encode(&orphan)?);
                }
            } else {
                pending.push(child.clone());
            }
        }
        if let Some(parent) = &entry.parent_hash {
            txn.delete(format!("{}{hash}", child_prefix(parent)).into_bytes());
        }
        txn.delete(accessor_key(&entry.accessor));
        txn.delete(key(&hash));
        first = false;
    }
    Ok(())
}

/// Parses a duration field the way Vault does (integer seconds, `90s`, `1h30m`, `1.5h`, `2d`; see
/// [`super::duration`]) into whole, non-negative seconds.
pub fn parse_duration_secs(field: &str, value: &serde_json::Value) -> Result<u64> {
    let bad = || Error::BadRequest(format!("invalid duration for {field:?}: {value}"));
    let secs = match value {
        serde_json::Value::Null => return Ok(0),
        serde_json::Value::Number(n) => super::duration::parse_duration_seconds(&n.to_string()),
        serde_json::Value::String(s) => super::duration::parse_duration_seconds(s.trim()),
        _ => return Err(bad()),
    };
    secs.ok().and_then(|s| u64::try_from(s).ok()).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn durations_parse_like_vault() {
        let cases = [
            (json!(90), Some(90)),
            (json!("90"), Some(90)),
            (json!("1h30m"), Some(5400)),
            (json!("45s"), Some(45)),
            (json!("768h"), Some(2_764_800)),
            (json!("1500ms"), Some(1)),
            (json!("1.5h"), Some(5400)),
            (json!("2d"), Some(172_800)),
            (json!(""), Some(0)),
            (json!("1x"), None),
            (json!("h"), None),
            (json!("10m5"), None),
            (json!(-5), None),
            (json!(true), None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_duration_secs("ttl", &value).ok(), expected, "{value}");
        }
    }

    #[test]
    fn expiry_and_ttl() {
        let mut t = root_entry("x").unwrap();
        assert!(!t.is_expired(i64::MAX));
        t.expire_unix_nanos = Some(10_000_000_000);
        assert!(!t.is_expired(9_999_999_999));
        assert!(t.is_expired(10_000_000_000));
        assert_eq!(t.ttl_secs(4_000_000_000), 6);
        assert_eq!(t.ttl_secs(20_000_000_000), 0);
    }
}
