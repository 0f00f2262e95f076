//! The mount table: which secrets engine serves which path prefix.
//!
//! Mount paths always end in `/`. A request path is routed to the mount with the longest matching prefix. Each
//! mount has a `uuid` (its data lives under `kv/<uuid>/`, so a remount at the same path starts empty) and an
//! `accessor` like `kv_1a2b3c4d`; both are generated on the active node and carried in the command.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{decode_stored, ApplyError, Error, Output, Result};
use crate::raft::{codec, StateReader, StateTxn};
use crate::storage::StorageError;

const MOUNT_PREFIX: &str = "sys/mount/";

/// Paths that can never be mounted over: Vault's system backends.
pub const RESERVED_PREFIXES: [&str; 4] = ["sys/", "auth/", "cubbyhole/", "identity/"];

/// A mounted secrets engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    /// Mount path with trailing slash, e.g. `kv/`.
    pub path: String,
    /// Engine type, e.g. `kv`.
    pub engine_type: String,
    /// Free-form description.
    pub description: String,
    /// Accessor, e.g. `kv_1a2b3c4d`.
    pub accessor: String,
    /// Unique id of this mounting.
    pub uuid: String,
    /// Engine options, e.g. `version = "1"`.
    pub options: BTreeMap<String, String>,
    /// When it was mounted (leader time, nanoseconds since the Unix epoch).
    pub created_unix_nanos: i64,
}

impl MountEntry {
    /// A new mount entry with a fresh uuid and accessor (call on the active node only).
    pub fn new(path: &str, engine_type: &str, description: &str, options: BTreeMap<String, String>) -> Self {
        let uuid = uuid::Uuid::new_v4();
        let accessor = format!("{}_{}", engine_type.replace('-', "_"), &uuid.simple().to_string()[..8]);
        let created_unix_nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        MountEntry {
            path: path.to_string(),
            engine_type: engine_type.to_string(),
            description: description.to_string(),
            accessor,
            uuid: uuid.to_string(),
            options,
            created_unix_nanos,
        }
    }

    /// The identity used by data commands to check they still target this mounting.
    pub fn as_ref(&self) -> MountRef {
        MountRef { path: self.path.clone(), uuid: self.uuid.clone() }
    }
}

/// Identifies one mounting of an engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRef {
    /// Mount path with trailing slash.
    pub path: String,
    /// The mounting's uuid.
    pub uuid: String,
}

fn mount_key(path: &str) -> Vec<u8> {
    format!("{MOUNT_PREFIX}{path}").into_bytes()
}

/// Normalizes and validates a mount path from a request: no leading slash, exactly one trailing slash.
pub fn normalize_path(raw: &str) -> Result<String> {
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() {
        return Err(Error::BadRequest("missing mount path".into()));
    }
    if trimmed.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err(Error::BadRequest(format!("invalid mount path {raw:?}")));
    }
    if !trimmed.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
        return Err(Error::BadRequest(format!(
            "invalid mount path {raw:?}: use letters, digits, '-', '_', '.' and '/'"
        )));
    }
    Ok(format!("{trimmed}/"))
}

/// All mounts, ordered by path (the decoded table is shared through the read cache).
pub fn list(state: &StateReader) -> Result<Arc<Vec<MountEntry>>> {
    state.scan_decoded(MOUNT_PREFIX.as_bytes(), |entries| {
        let mounts: Result<Vec<MountEntry>> = entries.iter().map(|(_, v)| decode_stored(v)).collect();
        mounts.map(Arc::new)
    })
}

/// The mount at exactly `path` (with trailing slash).
pub fn get(state: &StateReader, path: &str) -> Result<Option<MountEntry>> {
    Ok(find(&list(state)?, path).cloned())
}

fn find<'a>(table: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    table.binary_search_by(|m| m.path.as_str().cmp(path)).ok().map(|i| &table[i])
}

/// Routes a request path (without `/v1/`) to its mount: the mount and the rest of the path below it.
pub fn resolve(state: &StateReader, request_path: &str) -> Result<Option<(MountEntry, String)>> {
    // Try each prefix ending at a '/', longest first, against the (cached) mount table.
    let mut candidates: Vec<usize> = request_path.match_indices('/').map(|(i, _)| i + 1).collect();
    if !request_path.ends_with('/') {
        candidates.push(request_path.len());
    }
    let table = list(state)?;
    for end in candidates.into_iter().rev() {
        let prefix = &request_path[..end];
        let path = if prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        if let Some(mount) = find(&table, &path) {
            let rest = request_path.get(path.len()..).unwrap_or("").to_string();
            return Ok(Some((mount.clone(), rest)));
        }
    }
    Ok(None)
}

/// Checks that `path` can be mounted given `existing` mounts.
fn check_conflict(path: &str, existing: &[MountEntry]) -> std::result::Result<(), ApplyError> {
    if let Some(reserved) = RESERVED_PREFIXES.iter().find(|r| path.starts_with(*r)) {
        return Err(ApplyError::MountConflict(format!("cannot mount under {reserved}: it is reserved")));
    }
    for mount in existing {
        if mount.path == path {
            return Err(ApplyError::MountConflict(format!("path is already in use at {path}")));
        }
        if path.starts_with(&mount.path) {
            return Err(ApplyError::MountConflict(format!("cannot mount under existing mount \"{}\"", mount.path)));
        }
        if mount.path.starts_with(path) {
            return Err(ApplyError::MountConflict(format!(
                "cannot mount at \"{path}\": existing mount \"{}\" is below it",
                mount.path
            )));
        }
    }
    Ok(())
}

fn existing_mounts(txn: &StateTxn<'_>) -> std::result::Result<Vec<MountEntry>, StorageError> {
    txn.scan_prefix(MOUNT_PREFIX.as_bytes())?.iter().map(|(_, v)| codec::decode(v)).collect()
}

/// Reads the mount a data command targets, if it is still the same mounting.
pub(crate) fn current(txn: &StateTxn<'_>, mount: &MountRef) -> std::result::Result<Option<MountEntry>, StorageError> {
    let entry: Option<MountEntry> = txn.get_decoded(&mount_key(&mount.path), codec::decode)?;
    Ok(entry.filter(|entry| entry.uuid == mount.uuid))
}

/// Applies a mount: the path must be free and must not overlap another mount.
pub(crate) fn apply_mount(
    txn: &mut StateTxn<'_>,
    entry: &MountEntry,
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    if let Err(e) = check_conflict(&entry.path, &existing_mounts(txn)?) {
        return Ok(Err(e));
    }
    txn.put(mount_key(&entry.path), codec::encode(entry)?);
    Ok(Ok(Output::Done))
}

/// Applies a tune: the same mounting (path and uuid) gets new settings.
pub(crate) fn apply_tune(
    txn: &mut StateTxn<'_>,
    entry: &MountEntry,
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    if current(txn, &entry.as_ref())?.is_none() {
        return Ok(Err(ApplyError::NoRoute(entry.path.clone())));
    }
    txn.put(mount_key(&entry.path), codec::encode(entry)?);
    Ok(Ok(Output::Done))
}

/// Applies an unmount: removes the mount and every key of its data. Unmounting nothing succeeds, as in Vault.
pub(crate) fn apply_unmount(
    txn: &mut StateTxn<'_>,
    path: &str,
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    let Some(bytes) = txn.get(&mount_key(path))? else {
        return Ok(Ok(Output::Done));
    };
    let entry: MountEntry = codec::decode(&bytes)?;
    for prefix in [super::kv::data_prefix(&entry.uuid), super::kv2::data_prefix(&entry.uuid)] {
        for (key, _) in txn.scan_prefix(prefix.as_bytes())? {
            txn.delete(key);
        }
    }
    txn.delete(mount_key(path));
    Ok(Ok(Output::Done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(path: &str) -> MountEntry {
        MountEntry::new(path, "kv", "", BTreeMap::new())
    }

    #[test]
    fn normalize_path_cases() {
        assert_eq!(normalize_path("kv").unwrap(), "kv/");
        assert_eq!(normalize_path("/team/kv/").unwrap(), "team/kv/");
        for bad in ["", "/", "a//b", "a/../b", "a b", "ä"] {
            assert!(matches!(normalize_path(bad), Err(Error::BadRequest(_))), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn conflicts_follow_vault() {
        let existing = vec![mount("kv/"), mount("team/a/")];
        let msg = |p: &str| check_conflict(p, &existing).err().map(|e| e.to_string());
        assert_eq!(msg("kv/"), Some("path is already in use at kv/".into()));
        assert_eq!(msg("kv/sub/"), Some("cannot mount under existing mount \"kv/\"".into()));
        assert_eq!(msg("team/"), Some("cannot mount at \"team/\": existing mount \"team/a/\" is below it".into()));
        assert_eq!(msg("sys/x/"), Some("cannot mount under sys/: it is reserved".into()));
        assert_eq!(msg("kv2/"), None);
        assert_eq!(msg("team/b/"), None);
    }

    #[test]
    fn accessor_is_type_and_eight_hex_digits() {
        let m = mount("kv/");
        assert!(m.accessor.starts_with("kv_"));
        assert_eq!(m.accessor.len(), 11);
        assert!(m.accessor[3..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
