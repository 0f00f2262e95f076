//! `vigil read|write|delete|list <PATH>`: the generic commands on `/v1/<PATH>`, also used by `vigil kv`.

use serde_json::{Map, Value};

use super::output::{self, check, json_body, CliError, CmdResult, Format};
use super::Ctx;

/// The API path (`/v1/...`) of a user-supplied path such as `kv/foo` or `/kv/foo`, percent-encoding anything
/// that cannot appear in a URL path as-is (spaces, `?`, `#`, `%`, non-ASCII...).
pub fn api_path(path: &str) -> String {
    let mut out = String::from("/v1/");
    for b in path.trim_start_matches('/').bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path as shown in messages (without a leading `/`).
pub fn display_path(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// `GET`: prints the secret's Key/Value table (json: the whole response). A 404 is `No value found at`.
pub async fn read(ctx: &Ctx, display: &str, api_path: &str) -> CmdResult {
    let action = format!("Error reading {display}");
    let resp = ctx.client.get(api_path).await.map_err(|e| CliError::client(&action, &e))?;
    if resp.status == 404 {
        return Err(CliError::not_found(display));
    }
    let resp = check(&action, resp)?;
    let body = json_body(&action, &resp)?;
    print_secret(ctx.format, &body);
    Ok(())
}

/// `PUT` of `data` as JSON: prints `Success! Data written to: <path>`, or the returned secret if there is one.
pub async fn write(ctx: &Ctx, display: &str, api_path: &str, data: Map<String, Value>) -> CmdResult {
    let action = format!("Error writing {display}");
    let resp = ctx.client.put(api_path, &Value::Object(data)).await.map_err(|e| CliError::client(&action, &e))?;
    let resp = check(&action, resp)?;
    match resp.json() {
        Ok(body) if has_secret(&body) => print_secret(ctx.format, &body),
        Ok(body) if ctx.format == Format::Json => output::print_json(&body),
        _ if ctx.format == Format::Json => {}
        _ => output::out(&format!("Success! Data written to: {display}")),
    }
    Ok(())
}

/// `DELETE`: prints `Success! Data deleted (if it existed) at: <path>`.
pub async fn delete(ctx: &Ctx, display: &str, api_path: &str) -> CmdResult {
    let action = format!("Error deleting {display}");
    let resp = ctx.client.delete(api_path).await.map_err(|e| CliError::client(&action, &e))?;
    let resp = check(&action, resp)?;
    match (ctx.format, resp.json()) {
        (Format::Json, Ok(body)) => output::print_json(&body),
        (Format::Json, Err(_)) => {}
        (Format::Table, _) => output::out(&format!("Success! Data deleted (if it existed) at: {display}")),
    }
    Ok(())
}

/// `LIST`: prints `Keys`, a dashed line and the keys (json: the array of keys, as `vault list` does).
pub async fn list(ctx: &Ctx, display: &str, api_path: &str) -> CmdResult {
    let action = format!("Error listing {display}");
    let resp = ctx.client.list(api_path).await.map_err(|e| CliError::client(&action, &e))?;
    if resp.status == 404 {
        return Err(CliError::not_found(display));
    }
    let resp = check(&action, resp)?;
    let body = json_body(&action, &resp)?;
    output::print_warnings(&body);
    let keys = match body.pointer("/data/keys") {
        Some(Value::Array(keys)) => keys.clone(),
        _ => return Err(CliError::not_found(display)),
    };
    if keys.is_empty() {
        return Err(CliError::remote(format!("No entries found at {display}")));
    }
    match ctx.format {
        Format::Json => output::print_json(&Value::Array(keys)),
        Format::Table => {
            let rows: Vec<Vec<String>> = keys.iter().map(|k| vec![output::cell(k)]).collect();
            output::out(&output::table(&["Keys"], &rows));
        }
    }
    Ok(())
}

/// Whether a response carries something worth printing as a secret (data, auth or lease).
fn has_secret(body: &Value) -> bool {
    let non_empty = |key: &str| match body.get(key) {
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    };
    non_empty("data") || non_empty("auth")
}

/// Prints a secret response: the Key/Value table of its lease, data and auth (json: the whole response).
pub fn print_secret(format: Format, body: &Value) {
    match format {
        Format::Json => output::print_json(body),
        Format::Table => {
            output::print_warnings(body);
            let rows = output::secret_rows(body);
            if !rows.is_empty() {
                output::out(&output::kv_table(&rows));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_paths() {
        assert_eq!(api_path("kv/foo"), "/v1/kv/foo");
        assert_eq!(api_path("/kv/foo/"), "/v1/kv/foo/");
        assert_eq!(api_path("kv/a b?c#d%e"), "/v1/kv/a%20b%3Fc%23d%25e");
        assert_eq!(api_path("kv/é"), "/v1/kv/%C3%A9");
        assert_eq!(display_path("/kv/foo"), "kv/foo");
    }

    #[test]
    fn secrets() {
        assert!(has_secret(&json!({"data": {"a": 1}})));
        assert!(!has_secret(&json!({"data": {}, "auth": null})));
        assert!(!has_secret(&json!({"data": null})));
        assert!(has_secret(&json!({"auth": {"client_token": "t"}})));
    }
}
