//! Stored ACL policies (`sys/policies/acl`) and the ACL of a token.
//!
//! Policies are stored as their HCL text under `policy/<name>`; text is validated (parsed) on the active node
//! before it is proposed, so apply only stores it. The built-in `default` policy is written at initialization and may
//! be edited but not deleted; `root` is implicit: never stored, never writable.

use super::policy::{self, Acl, Policy};
use super::tokens::TokenEntry;
use super::{ApplyError, Error, Output, Result};
use crate::raft::{StateReader, StateTxn};
use crate::storage::StorageError;

const POLICY_PREFIX: &str = "policy/";

fn key(name: &str) -> Vec<u8> {
    format!("{POLICY_PREFIX}{name}").into_bytes()
}

/// The text of policy `name`, if stored.
pub fn get(state: &StateReader, name: &str) -> Result<Option<String>> {
    Ok(state.get(&key(name))?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Names of all policies, sorted, including the implicit `root`.
pub fn list(state: &StateReader) -> Result<Vec<String>> {
    let mut names: Vec<String> = state
        .scan_prefix(POLICY_PREFIX.as_bytes())?
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k[POLICY_PREFIX.len()..]).into_owned())
        .collect();
    names.push("root".into());
    names.sort();
    Ok(names)
}

/// The ACL a token's policies give it. Policies that do not exist (any more) grant nothing, as in Vault.
pub fn acl_for(state: &StateReader, token: &TokenEntry) -> Result<Acl> {
    if token.is_root() {
        return Ok(Acl::root());
    }
    let mut policies: Vec<Policy> = Vec::with_capacity(token.policies.len());
    for name in &token.policies {
        // Parsed once per version of the policy, through the read cache.
        let parsed = state.get_decoded(&key(name), |bytes| {
            // Stored text was validated before it was written; a failure here means corruption.
            policy::parse(name, &String::from_utf8_lossy(bytes))
                .map_err(|e| Error::Internal(format!("stored policy {name}: {e}")))
        })?;
        policies.extend(parsed);
    }
    Ok(Acl::new(&policies))
}

pub(crate) fn apply_write(
    txn: &mut StateTxn<'_>,
    name: &str,
    text: &str,
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    if name == "root" {
        return Ok(Err(ApplyError::Invalid("cannot update root policy".into())));
    }
    txn.put(key(name), text.as_bytes().to_vec());
    Ok(Ok(Output::Done))
}

pub(crate) fn apply_delete(
    txn: &mut StateTxn<'_>,
    name: &str,
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    match name {
        "root" => return Ok(Err(ApplyError::Invalid("cannot delete root policy".into()))),
        "default" => return Ok(Err(ApplyError::Invalid("cannot delete default policy".into()))),
        _ => txn.delete(key(name)),
    }
    Ok(Ok(Output::Done))
}
