//! The kv-v1 secrets engine: unversioned JSON objects at paths below a mount.
//!
//! Secrets are stored as JSON object text under `kv/<mount uuid>/<key>`. LIST returns the immediate children of a
//! folder: `a/b/c` listed at `a/` yields `b/`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::events::{self, NewEvent};
use super::mounts::{self, MountEntry, MountRef};
use super::{decode_json_object, ApplyError, Error, Output, Result};
use crate::raft::state_machine::ApplyContext;
use crate::raft::{StateReader, StateTxn};
use crate::storage::StorageError;

/// The state-key prefix of a mount's data.
pub(crate) fn data_prefix(mount_uuid: &str) -> String {
    format!("kv/{mount_uuid}/")
}

fn data_key(mount_uuid: &str, key: &str) -> Vec<u8> {
    format!("kv/{mount_uuid}/{key}").into_bytes()
}

/// Validates a key below a mount for reads and writes.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.ends_with('/') {
        return Err(Error::BadRequest("missing key: give a path below the mount, not ending in '/'".into()));
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(Error::BadRequest(format!("invalid key {key:?}: empty, '.' and '..' segments are not allowed")));
    }
    Ok(())
}

/// Reads the secret at `key`.
pub fn read(state: &StateReader, mount: &MountEntry, key: &str) -> Result<Map<String, Value>> {
    check_key(key)?;
    let bytes = state.get(&data_key(&mount.uuid, key))?.ok_or(Error::NotFound)?;
    decode_json_object(&bytes).map_err(|e| Error::Internal(format!("corrupt secret: {e}")))
}

/// Whether a secret is stored at `key` (no decoding: the ACL's create-vs-update check asks this on every write).
pub fn exists(state: &StateReader, mount: &MountEntry, key: &str) -> Result<bool> {
    check_key(key)?;
    Ok(state.get(&data_key(&mount.uuid, key))?.is_some())
}

/// Lists the immediate children of folder `prefix` (empty for the mount's root).
pub fn list(state: &StateReader, mount: &MountEntry, prefix: &str) -> Result<Vec<String>> {
    let folder = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
    let scan = format!("{}{folder}", data_prefix(&mount.uuid));
    let mut children = BTreeSet::new();
    for (key, _) in state.scan_prefix(scan.as_bytes())? {
        let rest = String::from_utf8_lossy(&key[scan.len()..]).into_owned();
        let child = match rest.find('/') {
            Some(i) => rest[..=i].to_string(),
            None => rest,
        };
        children.insert(child);
    }
    if children.is_empty() {
        return Err(Error::NotFound);
    }
    Ok(children.into_iter().collect())
}

/// Parses a write body: a JSON object with at least one field.
pub fn parse_write_body(body: &[u8]) -> Result<Vec<u8>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::BadRequest("no data provided: the body must be a JSON object of secret fields".into()));
    }
    let object = decode_json_object(body).map_err(|e| Error::BadRequest(format!("failed to parse JSON input: {e}")))?;
    if object.is_empty() {
        return Err(Error::BadRequest("no data provided: the body must be a JSON object of secret fields".into()));
    }
    serde_json::to_vec(&object).map_err(|e| Error::Internal(e.to_string()))
}

/// Writes a secret; the event is `kv-v1/write`.
pub(crate) fn apply_put(
    ctx: &ApplyContext<'_>,
    txn: &mut StateTxn<'_>,
    mount: &MountRef,
    key: &str,
    value: Vec<u8>,
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    let Some(entry) = mounts::current(txn, mount)? else {
        return Ok(Err(ApplyError::NoRoute(format!("{}{key}", mount.path))));
    };
    txn.put(data_key(&mount.uuid, key), value);
    events::append(ctx, txn, NewEvent::kv(&entry, "write", key, Some(key)))?;
    Ok(Ok(Output::Done))
}

/// Deletes a secret (whether or not it exists, as Vault does); the event is `kv-v1/delete`.
pub(crate) fn apply_delete(
    ctx: &ApplyContext<'_>,
    txn: &mut StateTxn<'_>,
    mount: &MountRef,
    key: &str,
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    let Some(entry) = mounts::current(txn, mount)? else {
        return Ok(Err(ApplyError::NoRoute(format!("{}{key}", mount.path))));
    };
    txn.delete(data_key(&mount.uuid, key));
    events::append(ctx, txn, NewEvent::kv(&entry, "delete", key, None))?;
    Ok(Ok(Output::Done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(check_key("a/b").is_ok());
        for bad in ["", "a/", "a//b", "../x", "a/./b"] {
            assert!(matches!(check_key(bad), Err(Error::BadRequest(_))), "{bad:?}");
        }
    }

    #[test]
    fn write_bodies_must_be_non_empty_objects() {
        assert_eq!(parse_write_body(br#"{"a":1}"#).unwrap(), br#"{"a":1}"#.to_vec());
        let err = |b: &[u8]| parse_write_body(b).unwrap_err().to_string();
        assert_eq!(err(b""), "no data provided: the body must be a JSON object of secret fields");
        assert_eq!(err(b"{}"), "no data provided: the body must be a JSON object of secret fields");
        assert!(err(b"[1]").starts_with("failed to parse JSON input: "), "{}", err(b"[1]"));
        assert!(err(b"{\"a\":").starts_with("failed to parse JSON input: "));
    }
}
