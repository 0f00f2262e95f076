//! kv-v2 endpoints below a mount, as Vault serves them: `config`, `data/<key>`, `metadata/<key>`,
//! `delete|undelete|destroy/<key>` and `subkeys/<key>`.
//!
//! Input is checked here, on the node that received the request, with Vault's messages (including its
//! `error converting input … for field …` type errors); everything that depends on state (check-and-set, pruning,
//! version existence) is decided when the command is applied. Answers follow Vault byte for byte where it
//! matters to clients: a deleted or destroyed version reads as 404 *with* its metadata, an absent secret as
//! `404 {"errors":[]}`, and paths that are not kv-v2 endpoints as 404 with a warning.

use std::collections::BTreeMap;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::forward::{no_content, with_index};
use super::request::{Operation, VaultRequest};
use super::{envelope, Api};
use crate::engines::kv2::{self, Cas, CustomMetadataPatch, Kv2Command, VersionRead, WriteOutput};
use crate::engines::{tokens, ApplyError, Command, Error, MountEntry, Output, Result};

/// Vault's answer to an operation a kv-v2 path does not support (its core wraps the error in a multierror).
const UNSUPPORTED: &str = "1 error occurred:\n\t* unsupported operation\n\n";

const MERGE_PATCH: &str = "application/merge-patch+json";
const MAX_CUSTOM_METADATA_KEYS: usize = 64;
const MAX_CUSTOM_METADATA_KEY_LEN: usize = 128;
const MAX_CUSTOM_METADATA_VALUE_LEN: usize = 512;
const CUSTOM_METADATA_INVALID: &str = "custom_metadata validation failed";

/// Which kv-v2 endpoint a path below the mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Config,
    Data(&'a str),
    Metadata(&'a str),
    Delete(&'a str),
    Undelete(&'a str),
    Destroy(&'a str),
    Subkeys(&'a str),
    /// `data`, `metadata`, … without a key.
    EndpointRoot,
    /// Anything else.
    Invalid,
}

fn route(path: &str) -> Route<'_> {
    if path == "config" {
        return Route::Config;
    }
    if let Some(key) = path.strip_prefix("data/") {
        // Vault's pattern: a non-empty key not ending in '/'.
        return if key.is_empty() || key.ends_with('/') { Route::Invalid } else { Route::Data(key) };
    }
    if let Some(key) = path.strip_prefix("metadata/") {
        return Route::Metadata(key);
    }
    if let Some(key) = path.strip_prefix("delete/") {
        return Route::Delete(key);
    }
    if let Some(key) = path.strip_prefix("undelete/") {
        return Route::Undelete(key);
    }
    if let Some(key) = path.strip_prefix("destroy/") {
        return Route::Destroy(key);
    }
    if let Some(key) = path.strip_prefix("subkeys/") {
        return Route::Subkeys(key);
    }
    match path {
        "metadata" | "data" | "delete" | "undelete" | "destroy" => Route::EndpointRoot,
        _ => Route::Invalid,
    }
}

/// Handles a request to the kv-v2 mount `mount`; `rest` is the path below it (e.g. `data/app/db`).
pub async fn handle(api: &Api, req: &VaultRequest, mount: &MountEntry, rest: &str) -> Result<Response> {
    if req.op == Operation::Patch {
        if let Err(refused) = check_merge_patch_content_type(req) {
            return Ok(refused.into_response());
        }
    }
    // Vault lists folders: a listed path always ends in '/'.
    let path = if req.op == Operation::List && !rest.ends_with('/') { format!("{rest}/") } else { rest.to_string() };
    use Operation as Op;
    match (route(&path), req.op) {
        (Route::Config, Op::Read) => Ok(ok_json(kv2::config(&api.engines.state(), mount)?.to_json())),
        (Route::Config, Op::Update) => write_config(api, req, mount).await,
        (Route::Data(key), Op::Read) => read_data(api, req, mount, key),
        (Route::Data(key), Op::Update) => write_data(api, req, mount, key).await,
        (Route::Data(key), Op::Patch) => patch_data(api, req, mount, key).await,
        (Route::Data(key), Op::Delete) => {
            execute_no_content(api, mount, Kv2Command::DeleteLatest { key: key.to_string() }).await
        }
        (Route::Metadata(folder), Op::List) => list(api, req, mount, folder),
        (Route::Metadata(key), Op::Read) => match kv2::metadata(&api.engines.state(), mount, key)? {
            Some(meta) => Ok(ok_json(meta.to_json())),
            None => Err(Error::NotFound),
        },
        (Route::Metadata(key), Op::Update) => write_metadata(api, req, mount, key).await,
        (Route::Metadata(key), Op::Patch) => patch_metadata(api, req, mount, key).await,
        (Route::Metadata(key), Op::Delete) => {
            execute_no_content(api, mount, Kv2Command::MetadataDelete { key: key.to_string() }).await
        }
        (Route::Delete(key), Op::Update) => {
            let versions = parse_versions(req, "No version number provided")?;
            execute_no_content(api, mount, Kv2Command::DeleteVersions { key: key.to_string(), versions }).await
        }
        (Route::Undelete(key), Op::Update) => {
            let versions = parse_versions(req, "No version number provided")?;
            execute_no_content(api, mount, Kv2Command::Undelete { key: key.to_string(), versions }).await
        }
        (Route::Destroy(key), Op::Update) => {
            let versions = parse_versions(req, "no version number provided")?;
            execute_no_content(api, mount, Kv2Command::Destroy { key: key.to_string(), versions }).await
        }
        (Route::Subkeys(key), Op::Read) => read_subkeys(api, req, mount, key),
        (Route::EndpointRoot, _) => {
            Ok(not_found_with_warning("Non-listing operations on the root of a K/V v2 mount are not supported."))
        }
        (Route::Invalid, op) => {
            let command = match op {
                Op::Update => "put",
                Op::Patch => "patch",
                Op::Read => "get",
                Op::List => "list",
                Op::Delete => "delete",
            };
            Ok(not_found_with_warning(&format!(
                "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API \
                 endpoints to use. If using the Vault CLI, use 'vault kv {command}' for this operation."
            )))
        }
        _ => Err(Error::UnsupportedOperation(UNSUPPORTED.into())),
    }
}

// ----- handlers -----

async fn write_config(api: &Api, req: &VaultRequest, mount: &MountEntry) -> Result<Response> {
    let body = body(req)?;
    let max_versions = int_field(&body, "max_versions")?;
    let cas_required = bool_field(&body, "cas_required")?;
    let delete_version_after = duration_field(&body, "delete_version_after", true)?;
    if max_versions.is_none() && cas_required.is_none() && delete_version_after.is_none() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let command = Kv2Command::ConfigWrite {
        // Vault stores the integer as a uint32, truncating it.
        max_versions: max_versions.map(|v| v as u32),
        cas_required,
        delete_version_after,
    };
    execute_no_content(api, mount, command).await
}

fn read_data(api: &Api, req: &VaultRequest, mount: &MountEntry, key: &str) -> Result<Response> {
    let version = int_query(req, "version")?.unwrap_or(0);
    match kv2::read_version(&api.engines.state(), mount, key, version, tokens::now_unix_nanos())? {
        VersionRead::Missing => Err(Error::NotFound),
        VersionRead::Gone { metadata } => Ok(raw_not_found(json!({ "data": null, "metadata": metadata }))),
        VersionRead::Live { metadata, data } => Ok(ok_json(json!({ "data": data, "metadata": metadata }))),
    }
}

fn read_subkeys(api: &Api, req: &VaultRequest, mount: &MountEntry, key: &str) -> Result<Response> {
    let depth = int_query(req, "depth")?.unwrap_or(0);
    let version = int_query(req, "version")?.unwrap_or(0);
    match kv2::read_version(&api.engines.state(), mount, key, version, tokens::now_unix_nanos())? {
        VersionRead::Missing => Err(Error::NotFound),
        VersionRead::Gone { metadata } => Ok(raw_not_found(json!({ "subkeys": null, "metadata": metadata }))),
        VersionRead::Live { metadata, data } => {
            Ok(ok_json(json!({ "subkeys": kv2::subkeys(&data, depth), "metadata": metadata })))
        }
    }
}

fn list(api: &Api, req: &VaultRequest, mount: &MountEntry, folder: &str) -> Result<Response> {
    let exclude_deleted = match req.query_param("exclude_deleted") {
        Some(v) => weak_bool(&Value::String(v.into())).map_err(|e| field_error("exclude_deleted", &json!(v), &e))?,
        None => false,
    };
    let keys = kv2::list(&api.engines.state(), mount, folder, exclude_deleted)?;
    if keys.is_empty() {
        return Err(Error::NotFound);
    }
    Ok(ok_json(json!({ "keys": keys })))
}

/// The `data` and `options.cas` of a data write or patch.
fn data_and_cas(req: &VaultRequest) -> Result<(Map<String, Value>, Cas)> {
    let body = body(req)?;
    let options = map_field(&body, "options")?;
    let data = map_field(&body, "data")?;
    int_field(&body, "version")?; // accepted (and ignored) by Vault, but type-checked
    let Some(data) = data else { return Err(Error::BadRequest("no data provided".into())) };
    let cas = match options.as_ref().and_then(|o| o.get("cas")) {
        None => Cas::Absent,
        Some(v) => weak_int(v, "").map(Cas::Version).unwrap_or(Cas::Unparsable),
    };
    Ok((data, cas))
}

async fn write_data(api: &Api, req: &VaultRequest, mount: &MountEntry, key: &str) -> Result<Response> {
    let (data, cas) = data_and_cas(req)?;
    check_key(key)?;
    let data = serde_json::to_string(&data).map_err(|e| Error::Internal(e.to_string()))?;
    let command = Kv2Command::Write { key: key.to_string(), data, cas };
    let executed = execute(api, mount, command).await?;
    version_answer(executed.output, executed.log_index)
}

async fn patch_data(api: &Api, req: &VaultRequest, mount: &MountEntry, key: &str) -> Result<Response> {
    let (patch, cas) = data_and_cas(req)?;
    let patch = serde_json::to_string(&patch).map_err(|e| Error::Internal(e.to_string()))?;
    let command = Kv2Command::Patch { key: key.to_string(), patch, cas };
    match execute(api, mount, command).await {
        Ok(executed) => version_answer(executed.output, executed.log_index),
        // No such key or no current version: Vault answers 404 with an empty body.
        Err(Error::Apply(ApplyError::NotFound)) => Ok(empty_not_found()),
        Err(e) => Err(e),
    }
}

/// The answer to a data write or patch.
fn version_answer(output: Output, log_index: u64) -> Result<Response> {
    let Output::Json(bytes) = output else { return Err(Error::Internal("kv-v2 write produced no output".into())) };
    let output: WriteOutput =
        serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("kv-v2 write output: {e}")))?;
    Ok(match output {
        WriteOutput::Written(data) => with_index(ok_json(data), log_index),
        WriteOutput::Gone(data) => with_index(raw_not_found(data), log_index),
    })
}

/// The settings fields shared by metadata writes and patches.
struct MetadataFields {
    max_versions: Option<i64>,
    cas_required: Option<bool>,
    delete_version_after: Option<i64>,
    custom_metadata: Option<Option<Map<String, Value>>>,
}

fn metadata_fields(body: &Map<String, Value>) -> Result<MetadataFields> {
    let custom_metadata = match body.get("custom_metadata") {
        None => None,
        Some(_) => Some(map_field(body, "custom_metadata")?),
    };
    Ok(MetadataFields {
        max_versions: int_field(body, "max_versions")?,
        cas_required: bool_field(body, "cas_required")?,
        delete_version_after: duration_field(body, "delete_version_after", false)?,
        custom_metadata,
    })
}

/// Vault's warning when a key turns `cas_required` off while the mount requires it.
fn cas_warning(api: &Api, mount: &MountEntry, cas_required: Option<bool>) -> Result<Option<String>> {
    if cas_required == Some(false) && kv2::config(&api.engines.state(), mount)?.cas_required {
        return Ok(Some(
            "\"cas_required\" set to false, but is mandated by backend config. This value will be ignored.".into(),
        ));
    }
    Ok(None)
}

async fn write_metadata(api: &Api, req: &VaultRequest, mount: &MountEntry, key: &str) -> Result<Response> {
    let body = body(req)?;
    let fields = metadata_fields(&body)?;
    if key.is_empty() {
        return Err(Error::BadRequest("missing path".into()));
    }
    if fields.max_versions.is_none()
        && fields.cas_required.is_none()
        && fields.delete_version_after.is_none()
        && fields.custom_metadata.is_none()
    {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let custom_metadata = match fields.custom_metadata {
        None => None,
        Some(raw) => {
            let parsed = parse_custom_metadata(&raw.unwrap_or_default(), false)?;
            let parsed: BTreeMap<String, String> =
                parsed.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
            validate_custom_metadata(&parsed)?;
            Some(parsed)
        }
    };
    let warning = cas_warning(api, mount, fields.cas_required)?;
    check_key(key)?;
    let command = Kv2Command::MetadataWrite {
        key: key.to_string(),
        max_versions: fields.max_versions.map(|v| v as u32),
        cas_required: fields.cas_required,
        delete_version_after: fields.delete_version_after,
        custom_metadata,
    };
    let executed = execute(api, mount, command).await?;
    Ok(settings_answer(warning, executed.log_index))
}

async fn patch_metadata(api: &Api, req: &VaultRequest, mount: &MountEntry, key: &str) -> Result<Response> {
    let body = body(req)?;
    let fields = metadata_fields(&body)?;
    if key.is_empty() {
        return Err(Error::BadRequest("missing path".into()));
    }
    let custom_metadata = match fields.custom_metadata {
        None => None,
        Some(None) => Some(CustomMetadataPatch::Clear),
        Some(Some(raw)) => {
            let parsed = parse_custom_metadata(&raw, true)?;
            let set: BTreeMap<String, String> =
                parsed.iter().filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))).collect();
            validate_custom_metadata(&set)?;
            Some(CustomMetadataPatch::Merge(parsed))
        }
    };
    let command = Kv2Command::MetadataPatch {
        key: key.to_string(),
        max_versions: fields.max_versions.map(|v| v as u32),
        cas_required: fields.cas_required,
        delete_version_after: fields.delete_version_after,
        custom_metadata,
    };
    let executed = match execute(api, mount, command).await {
        Ok(executed) => executed,
        Err(Error::Apply(ApplyError::NotFound)) => return Ok(empty_not_found()),
        Err(e) => return Err(e),
    };
    let warning = cas_warning(api, mount, fields.cas_required)?;
    Ok(settings_answer(warning, executed.log_index))
}

/// 204, or 200 carrying a warning (Vault answers a warning-only response with `data: null`).
fn settings_answer(warning: Option<String>, log_index: u64) -> Response {
    match warning {
        None => no_content(log_index),
        Some(warning) => {
            let mut body = envelope(Value::Null, 0, "kv");
            body["warnings"] = json!([warning]);
            with_index(Json(body).into_response(), log_index)
        }
    }
}

fn parse_versions(req: &VaultRequest, missing: &str) -> Result<Vec<i64>> {
    let body = body(req)?;
    let versions = match body.get("versions") {
        None => Vec::new(),
        Some(v) => weak_int_slice(v).map_err(|e| field_error("versions", v, &e))?,
    };
    if versions.is_empty() {
        return Err(Error::BadRequest(missing.into()));
    }
    Ok(versions)
}

// ----- proposing -----

async fn execute(api: &Api, mount: &MountEntry, command: Kv2Command) -> Result<crate::engines::Executed> {
    api.engines.execute(&Command::KvV2 { mount: mount.as_ref(), command }).await
}

async fn execute_no_content(api: &Api, mount: &MountEntry, command: Kv2Command) -> Result<Response> {
    let executed = execute(api, mount, command).await?;
    Ok(no_content(executed.log_index))
}

/// Keys that create state must be well-formed paths (Vault's own HTTP layer cleans such paths instead).
fn check_key(key: &str) -> Result<()> {
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(Error::BadRequest(format!("invalid key {key:?}: empty, '.' and '..' segments are not allowed")));
    }
    Ok(())
}

// ----- answers -----

fn ok_json(data: Value) -> Response {
    Json(envelope(data, 0, "kv")).into_response()
}

/// A 404 whose body is a whole response envelope, as Vault's `RespondWithStatusCode` produces (its
/// `mount_type` is empty because the body is built inside the engine).
fn raw_not_found(data: Value) -> Response {
    (StatusCode::NOT_FOUND, Json(envelope(data, 0, ""))).into_response()
}

fn not_found_with_warning(warning: &str) -> Response {
    let mut body = envelope(Value::Null, 0, "");
    body["warnings"] = json!([warning]);
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// Vault's 404 without a body (a raw response with no body).
fn empty_not_found() -> Response {
    (StatusCode::NOT_FOUND, [(CONTENT_TYPE, "application/json")]).into_response()
}

fn check_merge_patch_content_type(req: &VaultRequest) -> std::result::Result<(), ApiError> {
    let header = req.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = header.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media_type.is_empty() {
        return Err(ApiError::bad_request("mime: no media type"));
    }
    if media_type != MERGE_PATCH {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("PATCH requires Content-Type of {MERGE_PATCH}, provided {media_type}"),
        ));
    }
    Ok(())
}

// ----- input, decoded the way Vault's framework (mapstructure, weakly typed) does -----

/// The request body as a JSON object; empty or `null` is no fields.
fn body(req: &VaultRequest) -> Result<Map<String, Value>> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        _ => Err(Error::BadRequest("error parsing JSON".into())),
    }
}

/// Vault's message for a field whose value has the wrong type.
fn field_error(field: &str, input: &Value, error: &str) -> Error {
    Error::BadRequest(format!("error converting input {} for field {field:?}: {error}", go_value(input)))
}

fn int_query(req: &VaultRequest, name: &str) -> Result<Option<i64>> {
    match req.query_param(name) {
        None => Ok(None),
        Some(v) => {
            let input = Value::String(v.to_string());
            weak_int(&input, "").map(Some).map_err(|e| field_error(name, &input, &e))
        }
    }
}

fn int_field(body: &Map<String, Value>, name: &str) -> Result<Option<i64>> {
    body.get(name).map(|v| weak_int(v, "").map_err(|e| field_error(name, v, &e))).transpose()
}

fn bool_field(body: &Map<String, Value>, name: &str) -> Result<Option<bool>> {
    body.get(name).map(|v| weak_bool(v).map_err(|e| field_error(name, v, &e))).transpose()
}

/// An object field; `Some(None)` when it is `null`.
fn map_field(body: &Map<String, Value>, name: &str) -> Result<Option<Map<String, Value>>> {
    match body.get(name) {
        None => Ok(None),
        Some(v) => weak_map(v).map_err(|e| field_error(name, v, &e)),
    }
}

/// A duration field (Vault's `TypeDurationSecond`, or `TypeSignedDurationSecond` if `signed`), in seconds;
/// `null` counts as absent.
fn duration_field(body: &Map<String, Value>, name: &str, signed: bool) -> Result<Option<i64>> {
    let Some(input) = body.get(name) else { return Ok(None) };
    let secs = match input {
        Value::Null => return Ok(None),
        Value::String(s) => kv2::parse_duration_seconds(s),
        Value::Number(n) => kv2::parse_duration_seconds(&n.to_string()),
        _ => Err("could not parse duration from input".to_string()),
    }
    .map_err(|e| field_error(name, input, &e))?;
    if !signed && secs < 0 {
        return Err(field_error(name, input, &format!("cannot provide negative value '{secs}'")));
    }
    Ok(Some(secs))
}

/// Go's `%v` rendering of a decoded JSON value.
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(go_value).collect::<Vec<_>>().join(" ")),
        Value::Object(map) => {
            format!("map[{}]", map.iter().map(|(k, v)| format!("{k}:{}", go_value(v))).collect::<Vec<_>>().join(" "))
        }
    }
}

/// The Go type of a decoded JSON value, as mapstructure names it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "json.Number",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// The reflect kind of a decoded JSON value (numbers are `json.Number`, a string kind).
fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(_) | Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn unconvertible(name: &str, target: &str, v: &Value) -> String {
    format!("'{name}' expected type '{target}', got unconvertible type '{}', value: '{}'", go_type(v), go_value(v))
}

/// mapstructure's weak decoding into an int: numbers and numeric strings (`""` is 0), booleans as 0/1.
fn weak_int(v: &Value, name: &str) -> std::result::Result<i64, String> {
    let text = match v {
        Value::Null => return Ok(0),
        Value::Bool(b) => return Ok(i64::from(*b)),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.is_empty() => return Ok(0),
        Value::String(s) => s.clone(),
        other => return Err(unconvertible(name, "int", other)),
    };
    text.parse::<i64>().map_err(|e| format!("cannot parse '{name}' as int: {}", kv2::go_parse_int_error(&text, &e)))
}

/// mapstructure's weak decoding into a bool: Go's `strconv.ParseBool` on strings and numbers.
fn weak_bool(v: &Value) -> std::result::Result<bool, String> {
    let text = match v {
        Value::Null => return Ok(false),
        Value::Bool(b) => return Ok(*b),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => return Err(unconvertible("", "bool", other)),
    };
    match text.as_str() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" | "" => Ok(false),
        _ => Err(format!("cannot parse '' as bool: strconv.ParseBool: parsing {text:?}: invalid syntax")),
    }
}

/// mapstructure's weak decoding into a string: numbers as written, booleans as `1`/`0`, `null` as `""`.
fn weak_string(v: &Value) -> std::result::Result<String, String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::Bool(b) => Ok(if *b { "1" } else { "0" }.into()),
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        other => Err(unconvertible("", "string", other)),
    }
}

/// mapstructure's weak decoding into a map: objects; `null` is `None`; an array of objects is merged.
fn weak_map(v: &Value) -> std::result::Result<Option<Map<String, Value>>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map.clone())),
        Value::Array(items) => {
            let mut merged = Map::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Object(map) => merged.extend(map.clone()),
                    other => return Err(format!("'[{i}]' expected a map, got '{}'", go_kind(other))),
                }
            }
            Ok(Some(merged))
        }
        other => Err(format!("'' expected a map, got '{}'", go_kind(other))),
    }
}

/// Vault's `TypeCommaIntSlice`: an array, a comma-separated string, or a single value, each element an int.
fn weak_int_slice(v: &Value) -> std::result::Result<Vec<i64>, String> {
    let items: Vec<Value> = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items.clone(),
        Value::String(s) if s.is_empty() => return Ok(Vec::new()),
        Value::String(s) => s.split(',').map(|p| Value::String(p.to_string())).collect(),
        Value::Number(n) => n.to_string().split(',').map(|p| Value::String(p.to_string())).collect(),
        Value::Object(map) if map.is_empty() => return Ok(Vec::new()),
        other => vec![other.clone()],
    };
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match weak_int(item, &format!("[{i}]")) {
            Ok(n) => out.push(n),
            Err(e) => errors.push(format!("* {e}")),
        }
    }
    if errors.is_empty() {
        return Ok(out);
    }
    errors.sort();
    Err(format!("{} error(s) decoding:\n\n{}", errors.len(), errors.join("\n")))
}

/// `custom_metadata` as a string map (values weakly decoded); with `keep_nulls`, `null` values (removals in a
/// PATCH) are kept as `None`.
fn parse_custom_metadata(raw: &Map<String, Value>, keep_nulls: bool) -> Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        if keep_nulls && v.is_null() {
            out.insert(k.clone(), None);
            continue;
        }
        let s = weak_string(v).map_err(|e| Error::BadRequest(format!("{CUSTOM_METADATA_INVALID}: {e}")))?;
        out.insert(k.clone(), Some(s));
    }
    Ok(out)
}

/// Go's `unicode.IsPrint`, closely enough: no control, format, private-use or non-ASCII-space characters.
fn printable(s: &str) -> bool {
    s.chars().all(|c| {
        c == ' '
            || !(c.is_control()
                || c.is_whitespace()
                || matches!(c, '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{180e}')
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}')
                || matches!(c, '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e000}'..='\u{f8ff}')
                || c >= '\u{e0000}')
    })
}

/// Vault's custom metadata limits, every violation reported in its multierror format.
fn validate_custom_metadata(map: &BTreeMap<String, String>) -> Result<()> {
    let mut errors = Vec::new();
    if map.len() > MAX_CUSTOM_METADATA_KEYS {
        errors.push(format!(
            "{CUSTOM_METADATA_INVALID}: payload must contain at most {MAX_CUSTOM_METADATA_KEYS} keys, provided {}",
            map.len()
        ));
    } else {
        for (k, v) in map {
            if k.is_empty() || k.len() > MAX_CUSTOM_METADATA_KEY_LEN {
                errors.push(format!(
                    "{CUSTOM_METADATA_INVALID}: length of key {k:?} is {} but must be 0 < len(key) <= \
                     {MAX_CUSTOM_METADATA_KEY_LEN}",
                    k.len()
                ));
            }
            if v.is_empty() || v.len() > MAX_CUSTOM_METADATA_VALUE_LEN {
                errors.push(format!(
                    "{CUSTOM_METADATA_INVALID}: length of value for key {k:?} is {} but must be 0 < len(value) <= \
                     {MAX_CUSTOM_METADATA_VALUE_LEN}",
                    v.len()
                ));
            }
            if !printable(k) {
                errors.push(format!("{CUSTOM_METADATA_INVALID}: key {k:?} ({k}) contains unprintable characters"));
            }
            if !printable(v) {
                errors.push(format!("{CUSTOM_METADATA_INVALID}: value for key {k:?} contains unprintable characters"));
            }
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(Error::BadRequest(format!("1 error occurred:\n\t* {}\n\n", errors[0]))),
        n => {
            let points: Vec<String> = errors.iter().map(|e| format!("* {e}")).collect();
            Err(Error::BadRequest(format!("{n} errors occurred:\n\t{}\n\n", points.join("\n\t"))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_vaults_path_patterns() {
        assert_eq!(route("config"), Route::Config);
        assert_eq!(route("data/a/b"), Route::Data("a/b"));
        assert_eq!(route("data/a/"), Route::Invalid);
        assert_eq!(route("data/"), Route::Invalid);
        assert_eq!(route("metadata/"), Route::Metadata(""));
        assert_eq!(route("metadata/a/"), Route::Metadata("a/"));
        assert_eq!(route("delete/a"), Route::Delete("a"));
        assert_eq!(route("undelete/a"), Route::Undelete("a"));
        assert_eq!(route("destroy/a"), Route::Destroy("a"));
        assert_eq!(route("subkeys/a"), Route::Subkeys("a"));
        for root in ["data", "metadata", "delete", "undelete", "destroy"] {
            assert_eq!(route(root), Route::EndpointRoot, "{root}");
        }
        for invalid in ["", "subkeys", "config/", "foo", "foo/bar", "configs"] {
            assert_eq!(route(invalid), Route::Invalid, "{invalid:?}");
        }
    }

    #[test]
    fn weak_decoding_matches_mapstructure() {
        assert_eq!(weak_int(&json!(5), ""), Ok(5));
        assert_eq!(weak_int(&json!("7"), ""), Ok(7));
        assert_eq!(weak_int(&json!(""), ""), Ok(0));
        assert_eq!(weak_int(&json!(null), ""), Ok(0));
        assert_eq!(weak_int(&json!(true), ""), Ok(1));
        assert_eq!(
            weak_int(&json!("abc"), ""),
            Err("cannot parse '' as int: strconv.ParseInt: parsing \"abc\": invalid syntax".into())
        );
        assert_eq!(
            weak_int(&json!(1.5), ""),
            Err("cannot parse '' as int: strconv.ParseInt: parsing \"1.5\": invalid syntax".into())
        );
        assert_eq!(
            weak_int(&json!({"a": 1}), ""),
            Err("'' expected type 'int', got unconvertible type 'map[string]interface {}', value: 'map[a:1]'".into())
        );
        assert_eq!(weak_bool(&json!("true")), Ok(true));
        assert_eq!(weak_bool(&json!(1)), Ok(true));
        assert_eq!(weak_bool(&json!("F")), Ok(false));
        assert_eq!(
            weak_bool(&json!("maybe")),
            Err("cannot parse '' as bool: strconv.ParseBool: parsing \"maybe\": invalid syntax".into())
        );
        assert_eq!(weak_string(&json!(12)), Ok("12".into()));
        assert_eq!(weak_string(&json!(true)), Ok("1".into()));
        assert_eq!(
            weak_string(&json!(["a", "b"])),
            Err("'' expected type 'string', got unconvertible type '[]interface {}', value: '[a b]'".into())
        );
        assert_eq!(weak_map(&json!({"a": 1})), Ok(Some(json!({"a": 1}).as_object().unwrap().clone())));
        assert_eq!(weak_map(&json!([])), Ok(Some(Map::new())));
        assert_eq!(weak_map(&json!(null)), Ok(None));
        assert_eq!(weak_map(&json!("x")), Err("'' expected a map, got 'string'".into()));
        assert_eq!(weak_map(&json!(3)), Err("'' expected a map, got 'string'".into()));
        assert_eq!(weak_map(&json!([1])), Err("'[0]' expected a map, got 'string'".into()));
        assert_eq!(weak_int_slice(&json!([1, "2"])), Ok(vec![1, 2]));
        assert_eq!(weak_int_slice(&json!("1,3")), Ok(vec![1, 3]));
        assert_eq!(weak_int_slice(&json!(4)), Ok(vec![4]));
        assert_eq!(weak_int_slice(&json!([])), Ok(vec![]));
        assert_eq!(
            weak_int_slice(&json!("1,a")),
            Err("1 error(s) decoding:\n\n* cannot parse '[1]' as int: strconv.ParseInt: parsing \"a\": invalid syntax"
                .into())
        );
        assert_eq!(go_value(&json!({"b": [1, "x"], "a": null})), "map[a:<nil> b:[1 x]]");
    }

    #[test]
    fn custom_metadata_is_validated_like_vault() {
        let ok = BTreeMap::from([("owner".to_string(), "jdoe".to_string())]);
        assert!(validate_custom_metadata(&ok).is_ok());
        let one = BTreeMap::from([("k".to_string(), String::new())]);
        assert_eq!(
            validate_custom_metadata(&one).unwrap_err().to_string(),
            "1 error occurred:\n\t* custom_metadata validation failed: length of value for key \"k\" is 0 but must \
             be 0 < len(value) <= 512\n\n"
        );
        let two = BTreeMap::from([("".to_string(), "a\u{7}".to_string())]);
        assert_eq!(
            validate_custom_metadata(&two).unwrap_err().to_string(),
            "2 errors occurred:\n\t* custom_metadata validation failed: length of key \"\" is 0 but must be 0 < \
             len(key) <= 128\n\t* custom_metadata validation failed: value for key \"\" contains unprintable \
             characters\n\n"
        );
        let many: BTreeMap<String, String> = (0..65).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert_eq!(
            validate_custom_metadata(&many).unwrap_err().to_string(),
            "1 error occurred:\n\t* custom_metadata validation failed: payload must contain at most 64 keys, \
             provided 65\n\n"
        );
        let raw = json!({"a": 1, "b": null, "c": {"x": 1}});
        let raw = raw.as_object().unwrap();
        assert_eq!(
            parse_custom_metadata(raw, false).unwrap_err().to_string(),
            "custom_metadata validation failed: '' expected type 'string', got unconvertible type \
             'map[string]interface {}', value: 'map[x:1]'"
        );
        let mut patch = raw.clone();
        patch.remove("c");
        assert_eq!(
            parse_custom_metadata(&patch, true).unwrap(),
            BTreeMap::from([("a".to_string(), Some("1".to_string())), ("b".to_string(), None)])
        );
    }

    #[test]
    fn field_errors_read_like_vault() {
        let body = json!({"max_versions": "x", "delete_version_after": "3x", "data": "s"});
        let body = body.as_object().unwrap();
        assert_eq!(
            int_field(body, "max_versions").unwrap_err().to_string(),
            "error converting input x for field \"max_versions\": cannot parse '' as int: strconv.ParseInt: \
             parsing \"x\": invalid syntax"
        );
        assert_eq!(
            duration_field(body, "delete_version_after", true).unwrap_err().to_string(),
            "error converting input 3x for field \"delete_version_after\": time: unknown unit \"x\" in duration \"3x\""
        );
        assert_eq!(
            map_field(body, "data").unwrap_err().to_string(),
            "error converting input s for field \"data\": '' expected a map, got 'string'"
        );
        let negative = json!({"delete_version_after": -5});
        assert_eq!(
            duration_field(negative.as_object().unwrap(), "delete_version_after", false).unwrap_err().to_string(),
            "error converting input -5 for field \"delete_version_after\": cannot provide negative value '-5'"
        );
        assert_eq!(duration_field(negative.as_object().unwrap(), "delete_version_after", true).unwrap(), Some(-5));
    }
}
