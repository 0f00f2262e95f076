//! Authorization: which capability a request needs, and whether the token's policies grant it.
//!
//! Runs in [`super::Api::dispatch`] on the node that received the request, after the token is found and before the
//! request is forwarded or handled, so a denied request never leaves the node and never reaches an engine.
//!
//! The capability follows Vault: GET → `read`, LIST → `list`, DELETE → `delete`, PATCH → `patch`, and PUT/POST →
//! `create` when the target does not exist yet, else `update` (paths without an existence check, such as `sys/*`
//! and `auth/*`, always need `update`). A few operator endpoints also need `sudo`, as in Vault.

use super::request::{Operation, VaultRequest};
use super::Api;
use crate::engines::policy::{Acl, Capability};
use crate::engines::tokens::TokenEntry;
use crate::engines::{kv, mounts, policy_store, Error, Result};

/// Paths that also require `sudo` (Vault's root-protected paths among those Vigil serves).
const SUDO_PATHS: [&str; 4] = [
    "sys/storage/raft/configuration",
    "sys/storage/raft/remove-peer",
    "sys/storage/raft/bootstrap/join",
    "auth/token/revoke-orphan",
];

/// The capability `req` needs on its path.
pub fn required_capability(api: &Api, req: &VaultRequest) -> Result<Capability> {
    Ok(match req.op {
        Operation::Read => Capability::Read,
        Operation::List => Capability::List,
        Operation::Delete => Capability::Delete,
        Operation::Patch => Capability::Patch,
        Operation::Update if exists(api, &req.path)? == Some(false) => Capability::Create,
        Operation::Update => Capability::Update,
    })
}

/// Whether the resource a write targets exists: `None` for paths without an existence check.
fn exists(api: &Api, path: &str) -> Result<Option<bool>> {
    if path.starts_with("sys/") || path.starts_with("auth/") {
        return Ok(None);
    }
    let state = api.engines.state();
    let Some((mount, rest)) = mounts::resolve(&state, path)? else { return Ok(None) };
    match (mount.engine_type.as_str(), mount.options.get("version").map(String::as_str)) {
        ("kv", Some("2")) => crate::engines::kv2::exists(&state, &mount, &rest),
        ("kv", _) => match kv::exists(&state, &mount, &rest) {
            Ok(found) => Ok(Some(found)),
            Err(Error::BadRequest(_)) => Ok(None), // the handler will reject the key itself
            Err(e) => Err(e),
        },
        _ => Ok(None),
    }
}

/// The ACL of `token` on this node's applied state.
pub fn acl(api: &Api, token: &TokenEntry) -> Result<Acl> {
    policy_store::acl_for(&api.engines.state(), token)
}

/// Checks that `token` may perform `req`; `Err(PermissionDenied)` otherwise.
pub fn authorize(api: &Api, req: &VaultRequest, token: &TokenEntry) -> Result<()> {
    if token.is_root() {
        return Ok(());
    }
    let acl = acl(api, token)?;
    let path = req.path.trim_start_matches('/');
    let needed = required_capability(api, req)?;
    let sudo_ok = !SUDO_PATHS.contains(&path.trim_end_matches('/')) || acl.allows(path, Capability::Sudo);
    if acl.allows(path, needed) && sudo_ok {
        Ok(())
    } else {
        Err(Error::PermissionDenied)
    }
}

/// Vault's answer to "what may this token do at `path`": `["root"]` for root tokens, `["deny"]` when nothing.
pub fn capability_names(api: &Api, token: &TokenEntry, path: &str) -> Result<Vec<String>> {
    if token.is_root() {
        return Ok(vec!["root".into()]);
    }
    let mut names: Vec<String> =
        acl(api, token)?.capabilities(path.trim_start_matches('/')).names().into_iter().map(str::to_string).collect();
    // Vault answers in alphabetical order.
    names.sort();
    Ok(if names.is_empty() { vec!["deny".into()] } else { names })
}
