//! The kv-v2 side of `vigil kv`: requests to `<mount>/data|metadata|delete|undelete|destroy/<path>` and the
//! sectioned output of `vault kv`:
//!
//! ```text
//! == Secret Path ==
//! secret/data/foo
//!
//! ======= Metadata =======
//! Key                Value
//! ---                -----
//! created_time       2024-05-01T10:00:00.000000Z
//! ...
//!
//! === Data ===
//! Key    Value
//! ---    -----
//! foo    bar
//! ```
//!
//! With `-format=json` every command prints the server's response as is.

use serde_json::{json, Map, Value};

use super::flags::go_duration;
use super::kv::{KvTarget, MetadataPutArgs};
use super::logical::{api_path, print_secret};
use super::output::{self, check, json_body, CliError, CmdResult, Format};
use super::Ctx;
use crate::client::Response;

/// The content type of a JSON merge patch (RFC 7386), which kv-v2 `PATCH` requires.
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// `kv get`: `GET <mount>/data/<path>[?version=N]`.
pub async fn get(ctx: &Ctx, t: &KvTarget, version: Option<u64>) -> CmdResult {
    let display = t.data_display();
    let action = format!("Error reading {display}");
    let mut path = api_path(&display);
    if let Some(version) = version.filter(|v| *v > 0) {
        path.push_str(&format!("?version={version}"));
    }
    let resp = ctx.client.get(&path).await.map_err(|e| CliError::client(&action, &e))?;
    let body = if resp.status == 404 {
        // A deleted or destroyed version answers 404 with its metadata: Vault shows that metadata.
        match resp.json() {
            Ok(body) if carries_secret(&body) => body,
            _ => return Err(CliError::not_found(&display)),
        }
    } else {
        json_body(&action, &check(&action, resp)?)?
    };
    match ctx.format {
        Format::Json => output::print_json(&body),
        Format::Table => {
            output::print_warnings(&body);
            output::out(&render_get(&display, &body));
        }
    }
    Ok(())
}

/// `kv put`: `POST <mount>/data/<path>` with `{"data": {...}, "options": {"cas": N}}`.
pub async fn put(ctx: &Ctx, t: &KvTarget, data: Map<String, Value>, cas: Option<u64>) -> CmdResult {
    let display = t.data_display();
    let action = format!("Error writing data to {display}");
    let resp = ctx.client.post(&api_path(&display), &write_body(data, cas)).await;
    let resp = check(&action, resp.map_err(|e| CliError::client(&action, &e))?)?;
    print_version(ctx.format, &display, &resp);
    Ok(())
}

/// `kv patch`: `PATCH <mount>/data/<path>` with a JSON merge patch `{"data": {...}}`.
pub async fn patch(ctx: &Ctx, t: &KvTarget, data: Map<String, Value>, cas: Option<u64>) -> CmdResult {
    let display = t.data_display();
    let action = format!("Error writing data to {display}");
    let mut body = json!({ "data": data });
    if let Some(cas) = cas {
        body["options"] = json!({ "cas": cas });
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| CliError::local(format!("{action}: {e}")))?;
    let headers = [("Content-Type", MERGE_PATCH)];
    let resp = ctx.client.request_raw("PATCH", &api_path(&display), &headers, bytes).await;
    let resp = check(&action, resp.map_err(|e| CliError::client(&action, &e))?)?;
    print_version(ctx.format, &display, &resp);
    Ok(())
}

/// `kv delete`: the latest version (`DELETE <mount>/data/<path>`) or the given versions
/// (`POST <mount>/delete/<path>` with `{"versions": [...]}`).
pub async fn delete(ctx: &Ctx, t: &KvTarget, versions: &[u64]) -> CmdResult {
    let display = t.data_display();
    let action = format!("Error deleting {display}");
    let resp = if versions.is_empty() {
        ctx.client.delete(&api_path(&display)).await
    } else {
        ctx.client.post(&api_path(&t.v2_display("delete")), &json!({ "versions": versions })).await
    };
    let resp = check(&action, resp.map_err(|e| CliError::client(&action, &e))?)?;
    match (ctx.format, resp.json()) {
        (Format::Json, Ok(body)) => output::print_json(&body),
        (Format::Json, Err(_)) => {}
        (Format::Table, _) => output::out(&format!("Success! Data deleted (if it existed) at: {display}")),
    }
    Ok(())
}

/// `kv undelete` / `kv destroy`: `<method> <mount>/<segment>/<path>` with `{"versions": [...]}`.
pub async fn write_versions(ctx: &Ctx, t: &KvTarget, segment: &str, method: &str, versions: &[u64]) -> CmdResult {
    send_write(ctx, &t.v2_display(segment), method, &json!({ "versions": versions })).await
}

/// Sends a write to `display` and prints Vault's answer to it.
async fn send_write(ctx: &Ctx, display: &str, method: &str, body: &Value) -> CmdResult {
    let action = format!("Error writing data to {display}");
    let resp = ctx.client.request(method, &api_path(display), Some(body)).await;
    let resp = check(&action, resp.map_err(|e| CliError::client(&action, &e))?)?;
    print_written(ctx.format, display, &resp);
    Ok(())
}

/// `kv metadata get`: `GET <mount>/metadata/<path>`, shown as the metadata table and one table per version.
pub async fn metadata_get(ctx: &Ctx, t: &KvTarget) -> CmdResult {
    let display = t.v2_display("metadata");
    let action = format!("Error reading {display}");
    let resp = ctx.client.get(&api_path(&display)).await.map_err(|e| CliError::client(&action, &e))?;
    if resp.status == 404 {
        return Err(CliError::not_found(&display));
    }
    let body = json_body(&action, &check(&action, resp)?)?;
    match ctx.format {
        Format::Json => output::print_json(&body),
        Format::Table => {
            if !matches!(body.pointer("/data/versions"), Some(Value::Object(_))) {
                return Err(CliError::not_found(&display));
            }
            output::print_warnings(&body);
            output::out(&render_metadata(&display, &body));
        }
    }
    Ok(())
}

/// `kv metadata put`: `POST <mount>/metadata/<path>` with the options that were given.
pub async fn metadata_put(ctx: &Ctx, t: &KvTarget, args: &MetadataPutArgs) -> CmdResult {
    send_write(ctx, &t.v2_display("metadata"), "POST", &metadata_body(args)).await
}

/// `kv metadata delete`: `DELETE <mount>/metadata/<path>` (every version and the metadata).
pub async fn metadata_delete(ctx: &Ctx, t: &KvTarget) -> CmdResult {
    let display = t.v2_display("metadata");
    super::logical::delete(ctx, &display, &api_path(&display)).await
}

/// The body of a kv-v2 write: the data, and the check-and-set version if one was given.
pub fn write_body(data: Map<String, Value>, cas: Option<u64>) -> Value {
    let mut options = Map::new();
    if let Some(cas) = cas {
        options.insert("cas".into(), json!(cas));
    }
    json!({ "data": data, "options": options })
}

/// The body of `kv metadata put`: only the settings that were given.
pub fn metadata_body(args: &MetadataPutArgs) -> Value {
    let mut body = Map::new();
    if let Some(max) = args.max_versions {
        body.insert("max_versions".into(), json!(max));
    }
    if let Some(required) = args.cas_required {
        body.insert("cas_required".into(), json!(required));
    }
    if let Some(after) = args.delete_version_after {
        body.insert("delete_version_after".into(), json!(go_duration(after)));
    }
    if !args.custom_metadata.is_empty() {
        let custom: Map<String, Value> = args.custom_metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        body.insert("custom_metadata".into(), Value::Object(custom));
    }
    Value::Object(body)
}

/// Whether a 404 answer still carries something to show (data or warnings), as Vault's kv read checks.
fn carries_secret(body: &Value) -> bool {
    let non_empty = |v: Option<&Value>| match v {
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        _ => false,
    };
    non_empty(body.get("data")) || non_empty(body.get("warnings"))
}

/// Prints the answer to a write of a version (put, patch): the new version's metadata under the secret's path,
/// or `Success! Data written to: <path>` when the server answered without data.
fn print_version(format: Format, display: &str, resp: &Response) {
    match resp.json() {
        Ok(body) if format == Format::Json => output::print_json(&body),
        Ok(body) if matches!(body.get("data"), Some(Value::Object(_))) => {
            output::print_warnings(&body);
            output::out(&render_version(display, &body));
        }
        _ if format == Format::Json => {}
        _ => output::out(&format!("Success! Data written to: {display}")),
    }
}

/// Prints the answer to a write without a version (undelete, destroy, metadata put).
fn print_written(format: Format, display: &str, resp: &Response) {
    match resp.json() {
        Ok(body) if matches!(body.get("data"), Some(Value::Object(m)) if !m.is_empty()) => print_secret(format, &body),
        Ok(body) if format == Format::Json => output::print_json(&body),
        _ if format == Format::Json => {}
        _ => output::out(&format!("Success! Data written to: {display}")),
    }
}

/// `== <title> ==` (as wide as the path), the path, and an empty line.
fn path_section(title: &str, display: &str) -> Vec<String> {
    vec![output::pad_equal_signs(title, display.len()), display.to_string(), String::new()]
}

/// A titled Key/Value table of `map` (only the title when the map is empty, as Vault prints it).
fn map_section(title: &str, map: &Map<String, Value>) -> Vec<String> {
    let mut lines = vec![output::header_for_map(title, map)];
    let rows = output::map_rows(map);
    if !rows.is_empty() {
        lines.push(output::kv_table(&rows));
    }
    lines
}

/// The table output of `kv get`.
pub fn render_get(display: &str, body: &Value) -> String {
    let mut lines = path_section("Secret Path", display);
    if let Some(Value::Object(metadata)) = body.pointer("/data/metadata") {
        lines.extend(map_section("Metadata", metadata));
        lines.push(String::new());
    }
    if let Some(Value::Object(data)) = body.pointer("/data/data") {
        lines.extend(map_section("Data", data));
    }
    lines.join("\n")
}

/// The table output of `kv put` and `kv patch`: the new version's metadata.
pub fn render_version(display: &str, body: &Value) -> String {
    let mut lines = path_section("Secret Path", display);
    if let Some(Value::Object(metadata)) = body.get("data") {
        lines.extend(map_section("Metadata", metadata));
    }
    lines.join("\n")
}

/// The table output of `kv metadata get`: the metadata (without `versions`), then a table per version, oldest
/// first.
pub fn render_metadata(display: &str, body: &Value) -> String {
    let mut lines = path_section("Metadata Path", display);
    let mut rest = body.clone();
    let versions = match rest.get_mut("data").and_then(Value::as_object_mut) {
        Some(data) => data.remove("versions"),
        None => None,
    };
    let data = rest.get("data").and_then(Value::as_object).cloned().unwrap_or_default();
    lines.push(output::header_for_map("Metadata", &data));
    let rows = output::secret_rows(&rest);
    if !rows.is_empty() {
        lines.push(output::kv_table(&rows));
    }
    if let Some(Value::Object(versions)) = versions {
        let mut numbered: Vec<(u64, &Value)> =
            versions.iter().filter_map(|(k, v)| k.parse::<u64>().ok().map(|n| (n, v))).collect();
        numbered.sort_by_key(|(n, _)| *n);
        for (n, version) in numbered {
            let empty = Map::new();
            let version = version.as_object().unwrap_or(&empty);
            lines.push(String::new());
            lines.extend(map_section(&format!("Version {n}"), version));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::kv::KvPathArgs;

    fn get_body() -> Value {
        json!({
            "request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0,
            "data": {
                "data": {"foo": "a", "password": "s3cret"},
                "metadata": {"created_time": "2024-05-01T10:00:00.123456Z", "custom_metadata": null,
                    "deletion_time": "", "destroyed": false, "version": 2}
            },
            "warnings": null
        })
    }

    #[test]
    fn headers() {
        assert_eq!(output::pad_equal_signs("Secret Path", "secret/data/foo".len()), "= Secret Path =");
        assert_eq!(output::pad_equal_signs("Secret Path", "kv/data/a".len()), "== Secret Path ==");
        assert_eq!(output::pad_equal_signs("Secret Path", "secret/data/app/db".len()), "=== Secret Path ===");
        let meta = get_body()["data"]["metadata"].as_object().unwrap().clone();
        assert_eq!(output::header_for_map("Metadata", &meta), "======= Metadata =======");
        assert_eq!(output::header_for_map("Data", &Map::new()), "== Data ==");
    }

    #[test]
    fn get_output() {
        assert_eq!(
            render_get("secret/data/foo", &get_body()),
            "= Secret Path =\n\
             secret/data/foo\n\
             \n\
             ======= Metadata =======\n\
             Key                Value\n\
             ---                -----\n\
             created_time       2024-05-01T10:00:00.123456Z\n\
             custom_metadata    <nil>\n\
             deletion_time      n/a\n\
             destroyed          false\n\
             version            2\n\
             \n\
             ====== Data ======\n\
             Key         Value\n\
             ---         -----\n\
             foo         a\n\
             password    s3cret"
        );
        // A deleted version: metadata only.
        let mut deleted = get_body();
        deleted["data"]["data"] = Value::Null;
        deleted["data"]["metadata"]["deletion_time"] = json!("2024-05-02T00:00:00Z");
        let out = render_get("kv/data/a", &deleted);
        assert!(out.starts_with("== Secret Path ==\nkv/data/a\n\n======= Metadata =======\n"), "{out}");
        assert!(
            out.ends_with("deletion_time      2024-05-02T00:00:00Z\ndestroyed          false\nversion            2\n")
        );
        assert!(carries_secret(&deleted));
        assert!(!carries_secret(&json!({"errors": []})));
        assert!(carries_secret(&json!({"data": null, "warnings": ["w"]})));
    }

    #[test]
    fn put_output() {
        let body = json!({"data": {"created_time": "2024-05-01T10:00:00Z", "custom_metadata": {"team": "ops"},
            "deletion_time": "", "destroyed": false, "version": 1}});
        assert_eq!(
            render_version("secret/data/foo", &body),
            "= Secret Path =\n\
             secret/data/foo\n\
             \n\
             ======= Metadata =======\n\
             Key                Value\n\
             ---                -----\n\
             created_time       2024-05-01T10:00:00Z\n\
             custom_metadata    map[team:ops]\n\
             deletion_time      n/a\n\
             destroyed          false\n\
             version            1"
        );
    }

    #[test]
    fn metadata_output() {
        let body = json!({"lease_duration": 0, "data": {
            "cas_required": false, "created_time": "2024-05-01T10:00:00Z", "current_version": 2,
            "custom_metadata": null, "delete_version_after": "0s", "max_versions": 0, "oldest_version": 0,
            "updated_time": "2024-05-01T11:00:00Z",
            "versions": {
                "10": {"created_time": "t10", "deletion_time": "", "destroyed": false},
                "2": {"created_time": "t2", "deletion_time": "d2", "destroyed": true}
            }
        }});
        assert_eq!(
            render_metadata("secret/metadata/foo", &body),
            "== Metadata Path ==\n\
             secret/metadata/foo\n\
             \n\
             ========== Metadata ==========\n\
             Key                     Value\n\
             ---                     -----\n\
             cas_required            false\n\
             created_time            2024-05-01T10:00:00Z\n\
             current_version         2\n\
             custom_metadata         <nil>\n\
             delete_version_after    0s\n\
             max_versions            0\n\
             oldest_version          0\n\
             updated_time            2024-05-01T11:00:00Z\n\
             \n\
             ====== Version 2 ======\n\
             Key              Value\n\
             ---              -----\n\
             created_time     t2\n\
             deletion_time    d2\n\
             destroyed        true\n\
             \n\
             ===== Version 10 =====\n\
             Key              Value\n\
             ---              -----\n\
             created_time     t10\n\
             deletion_time    n/a\n\
             destroyed        false"
        );
    }

    #[test]
    fn request_bodies() {
        let mut data = Map::new();
        data.insert("a".into(), json!("1"));
        assert_eq!(write_body(data.clone(), None), json!({"data": {"a": "1"}, "options": {}}));
        assert_eq!(write_body(data, Some(0)), json!({"data": {"a": "1"}, "options": {"cas": 0}}));

        let target = KvPathArgs { mount: None, path: "secret/foo".into() };
        let args = MetadataPutArgs {
            max_versions: None,
            cas_required: None,
            delete_version_after: None,
            custom_metadata: vec![],
            target: target.clone(),
        };
        assert_eq!(metadata_body(&args), json!({}));
        let args = MetadataPutArgs {
            max_versions: Some(5),
            cas_required: Some(false),
            delete_version_after: Some(90),
            custom_metadata: vec![("team".into(), "ops".into())],
            target,
        };
        assert_eq!(
            metadata_body(&args),
            json!({"max_versions": 5, "cas_required": false, "delete_version_after": "1m30s",
                "custom_metadata": {"team": "ops"}})
        );
    }
}
