//! The token auth method: `auth/token/*` with Vault's paths, parameters and response shapes.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::acl;
use super::request::{Operation, VaultRequest};
use super::{envelope, Api};
use crate::engines::policy::{self, Capability};
use crate::engines::tokens::{self, TokenCommand, TokenEntry};
use crate::engines::{Command, Error, Result};

/// Handles `auth/token/<rest>`; `caller` is the authenticated token (already authorized for this path).
pub async fn handle(api: &Api, req: &VaultRequest, caller: &TokenEntry, rest: &str) -> Result<Response> {
    let body = if req.op == Operation::Update { parse_body(req)? } else { Map::new() };
    match (rest, req.op) {
        ("create", Operation::Update) => create(api, req, caller, &body, false).await,
        ("create-orphan", Operation::Update) => create(api, req, caller, &body, true).await,
        ("lookup-self", Operation::Read | Operation::Update) => Ok(lookup_answer(caller, req.token())),
        ("lookup", Operation::Update) => {
            let id = required(&body, "token")?;
            let token = tokens::lookup(&api.engines.state(), &id)?.ok_or_else(bad_token)?;
            Ok(lookup_answer(&token, Some(&id)))
        }
        ("lookup-accessor", Operation::Update) => {
            let accessor = required(&body, "accessor")?;
            let token = tokens::lookup_accessor(&api.engines.state(), &accessor)?.ok_or_else(bad_token)?;
            Ok(lookup_answer(&token, None))
        }
        ("renew-self", Operation::Update) => renew(api, caller, req.token().unwrap_or_default(), &body).await,
        ("renew", Operation::Update) => {
            let id = required(&body, "token")?;
            let token = tokens::lookup(&api.engines.state(), &id)?.ok_or_else(bad_token)?;
            renew(api, &token, &id, &body).await
        }
        ("revoke-self", Operation::Update) => revoke(api, &caller.id_hash, false).await,
        ("revoke", Operation::Update) => revoke(api, &tokens::hash(&required(&body, "token")?), false).await,
        ("revoke-orphan", Operation::Update) => revoke(api, &tokens::hash(&required(&body, "token")?), true).await,
        ("revoke-accessor", Operation::Update) => {
            let accessor = required(&body, "accessor")?;
            match tokens::lookup_accessor(&api.engines.state(), &accessor)? {
                Some(token) => revoke(api, &token.id_hash, false).await,
                None => Err(bad_token()),
            }
        }
        _ => Err(Error::UnsupportedOperation("unsupported operation".into())),
    }
}

fn parse_body(req: &VaultRequest) -> Result<Map<String, Value>> {
    req.json_body().map_err(|e| Error::BadRequest(e.errors.join("; ")))
}

fn bad_token() -> Error {
    Error::BadRequest("bad token".into())
}

fn required(body: &Map<String, Value>, field: &str) -> Result<String> {
    match body.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(Error::BadRequest(format!("missing {field}"))),
        Some(_) => Err(Error::BadRequest(format!("field {field:?} must be a string"))),
    }
}

fn bool_field(body: &Map<String, Value>, field: &str, default: bool) -> Result<bool> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => {
            super::request::parse_bool(field, s).map_err(|e| Error::BadRequest(e.errors.join("")))
        }
        Some(_) => Err(Error::BadRequest(format!("field {field:?} must be a boolean"))),
    }
}

/// `policies` as an array of strings or a comma-separated string, normalized like Vault (lowercase, sorted, unique).
fn policies_field(body: &Map<String, Value>) -> Result<Option<Vec<String>>> {
    let raw: Vec<String> = match body.get("policies") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| Error::BadRequest("policies must be strings".into())))
            .collect::<Result<_>>()?,
        Some(_) => return Err(Error::BadRequest("field \"policies\" must be a list of strings".into())),
    };
    let mut names = Vec::new();
    for name in raw.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        names.push(policy::validate_name(name).map_err(Error::BadRequest)?);
    }
    names.sort();
    names.dedup();
    Ok(Some(names))
}

fn meta_field(body: &Map<String, Value>) -> Result<BTreeMap<String, String>> {
    match body.get("meta") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(Error::BadRequest(format!("meta value for {k:?} must be a string"))),
            })
            .collect(),
        Some(_) => Err(Error::BadRequest("field \"meta\" must be an object of strings".into())),
    }
}

fn duration_field(body: &Map<String, Value>, field: &str) -> Result<u64> {
    body.get(field).map(|v| tokens::parse_duration_secs(field, v)).transpose().map(|d| d.unwrap_or(0))
}

async fn create(
    api: &Api,
    req: &VaultRequest,
    caller: &TokenEntry,
    body: &Map<String, Value>,
    orphan_path: bool,
) -> Result<Response> {
    let no_parent = orphan_path || bool_field(body, "no_parent", false)?;
    if no_parent && !orphan_path && !caller.is_root() {
        let acl = acl::acl(api, caller)?;
        if !acl.allows(req.path.trim_start_matches('/'), Capability::Sudo) {
            return Err(Error::BadRequest("root or sudo privileges required to create orphan token".into()));
        }
    }
    let requested = policies_field(body)?;
    let mut policies = match &requested {
        Some(p) if !p.is_empty() => p.clone(),
        _ => caller.policies.clone(),
    };
    if !caller.is_root() {
        // A token can only hand out what it has (the default policy is always allowed).
        if let Some(extra) = policies.iter().find(|p| *p != "default" && !caller.policies.contains(p)) {
            return Err(Error::BadRequest(format!("child policies must be subset of parent: {extra} is not")));
        }
    }
    let root = policies.iter().any(|p| p == "root");
    if !root && !bool_field(body, "no_default_policy", false)? && !policies.iter().any(|p| p == "default") {
        policies.push("default".into());
        policies.sort();
    }
    let explicit_max_ttl_secs = duration_field(body, "explicit_max_ttl")?;
    let mut ttl = duration_field(body, "ttl")?;
    if ttl == 0 && !root {
        ttl = tokens::DEFAULT_TTL_SECS;
    }
    if explicit_max_ttl_secs > 0 && (ttl == 0 || ttl > explicit_max_ttl_secs) {
        ttl = explicit_max_ttl_secs;
    }
    let num_uses = match body.get("num_uses") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(|| Error::BadRequest("num_uses must be a non-negative integer".into()))?,
    };
    let display_name = match body.get("display_name").and_then(Value::as_str).map(str::trim) {
        Some(name) if !name.is_empty() => format!("token-{name}"),
        _ => "token".to_string(),
    };
    let now = tokens::now_unix_nanos();
    let id = tokens::generate_id()?;
    let entry = TokenEntry {
        id_hash: tokens::hash(&id),
        accessor: tokens::random_base62(24)?,
        policies,
        display_name,
        meta: meta_field(body)?,
        created_unix_nanos: now,
        creation_ttl_secs: ttl,
        expire_unix_nanos: (ttl > 0)
            .then(|| now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX) * 1_000_000_000)),
        explicit_max_ttl_secs,
        num_uses,
        renewable: bool_field(body, "renewable", true)?,
        parent_hash: (!no_parent).then(|| caller.id_hash.clone()),
        path: if orphan_path { "auth/token/create-orphan".into() } else { "auth/token/create".into() },
    };
    api.engines.execute(&Command::Token(TokenCommand::Create(entry.clone()))).await?;
    Ok(auth_answer(&entry, &id, now))
}

async fn renew(api: &Api, token: &TokenEntry, id: &str, body: &Map<String, Value>) -> Result<Response> {
    let now = tokens::now_unix_nanos();
    if token.expire_unix_nanos.is_none() {
        return Ok(auth_answer(token, id, now)); // Nothing to extend: it never expires.
    }
    if !token.renewable {
        return Err(Error::BadRequest("lease is not renewable".into()));
    }
    let increment = duration_field(body, "increment")?;
    let ttl = if increment > 0 { increment } else { token.creation_ttl_secs };
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1_000_000_000);
    let mut expire = now.saturating_add(secs(ttl));
    if token.explicit_max_ttl_secs > 0 {
        expire = expire.min(token.created_unix_nanos.saturating_add(secs(token.explicit_max_ttl_secs)));
    }
    let command = TokenCommand::Renew { id_hash: token.id_hash.clone(), expire_unix_nanos: Some(expire) };
    api.engines.execute(&Command::Token(command)).await?;
    let renewed = TokenEntry { expire_unix_nanos: Some(expire), ..token.clone() };
    Ok(auth_answer(&renewed, id, now))
}

async fn revoke(api: &Api, id_hash: &str, orphan_children: bool) -> Result<Response> {
    let command = TokenCommand::Revoke { id_hash: id_hash.to_string(), orphan_children };
    let executed = api.engines.execute(&Command::Token(command)).await?;
    Ok(super::forward::no_content(executed.log_index))
}

/// Vault's answer to token creation and renewal: an `auth` block, no `data`.
fn auth_answer(token: &TokenEntry, id: &str, now: i64) -> Response {
    let mut body = envelope(Value::Null, 0, "token");
    body["auth"] = json!({
        "client_token": id,
        "accessor": token.accessor,
        "policies": token.policies,
        "token_policies": token.policies,
        "metadata": if token.meta.is_empty() { Value::Null } else { json!(token.meta) },
        "lease_duration": token.ttl_secs(now),
        "renewable": token.renewable && token.expire_unix_nanos.is_some(),
        "entity_id": "",
        "token_type": "service",
        "orphan": token.parent_hash.is_none(),
        "mfa_requirement": null,
        "num_uses": token.num_uses,
    });
    Json(body).into_response()
}

fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Vault's token lookup `data`; `id` is shown only when the caller presented the token itself.
fn lookup_answer(token: &TokenEntry, id: Option<&str>) -> Response {
    let now = tokens::now_unix_nanos();
    let data = json!({
        "accessor": token.accessor,
        "creation_time": token.created_unix_nanos / 1_000_000_000,
        "creation_ttl": token.creation_ttl_secs,
        "display_name": token.display_name,
        "entity_id": "",
        "expire_time": token.expire_unix_nanos.map(rfc3339),
        "explicit_max_ttl": token.explicit_max_ttl_secs,
        "id": id.unwrap_or_default(),
        "issue_time": rfc3339(token.created_unix_nanos),
        "meta": if token.meta.is_empty() { Value::Null } else { json!(token.meta) },
        "num_uses": token.num_uses,
        "orphan": token.parent_hash.is_none(),
        "path": token.path,
        "policies": token.policies,
        "renewable": token.renewable && token.expire_unix_nanos.is_some(),
        "ttl": token.ttl_secs(now),
        "type": "service",
    });
    (StatusCode::OK, Json(envelope(data, 0, "token"))).into_response()
}
