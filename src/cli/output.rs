//! Shared output of the client commands: tables, JSON, Vault-style error messages and exit codes.

use std::io::Write;

use serde_json::{Map, Value};

use crate::client::{ClientError, Response};

/// `--format`: how a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    // Human-readable tables, like Vault's default output.
    Table,
    // The response (or a JSON rendering of the result), pretty-printed.
    Json,
}

/// Why a command failed: what to print on stderr and the exit code.
///
/// Exit codes follow Vault: 1 for local errors (bad arguments, unreadable files), 2 for errors reported by or
/// talking to the server (including "no value found").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// Printed to stderr as-is (a newline is added).
    pub message: String,
    /// The process exit code.
    pub code: u8,
}

impl CliError {
    /// A local error (bad input, unreadable file): exit code 1.
    pub fn local(message: impl Into<String>) -> CliError {
        CliError { message: message.into(), code: 1 }
    }

    /// A remote error with a ready message: exit code 2.
    pub fn remote(message: impl Into<String>) -> CliError {
        CliError { message: message.into(), code: 2 }
    }

    /// The request did not produce a response. `action` reads like "Error reading kv/foo".
    pub fn client(action: &str, e: &ClientError) -> CliError {
        CliError::remote(format!("{action}: {e}"))
    }

    /// The server answered with an error status, printed as Vault does:
    /// `Error reading kv/foo: Code: 403. Errors:\n\n* permission denied`.
    pub fn api(action: &str, resp: &Response) -> CliError {
        let mut errors = resp.errors();
        if errors.is_empty() {
            let text = resp.text();
            let text = text.trim();
            if !text.is_empty() && resp.json().is_err() {
                errors.push(text.to_string());
            }
        }
        let mut message = format!("{action}: Code: {}. Errors:\n", resp.status);
        if errors.is_empty() {
            message.push_str("\n* (the response carried no error message)");
        }
        for e in errors {
            message.push_str("\n* ");
            message.push_str(&e);
        }
        CliError::remote(message)
    }

    /// `No value found at <path>`: exit code 2.
    pub fn not_found(path: &str) -> CliError {
        CliError::remote(format!("No value found at {path}"))
    }
}

/// The result of a command.
pub type CmdResult = Result<(), CliError>;

/// Checks the status of `resp`: an API error for anything but 2xx.
pub fn check(action: &str, resp: Response) -> Result<Response, CliError> {
    if resp.is_success() {
        Ok(resp)
    } else {
        Err(CliError::api(action, &resp))
    }
}

/// The JSON body of a successful response, or a remote error naming `action`.
pub fn json_body(action: &str, resp: &Response) -> Result<Value, CliError> {
    resp.json().map_err(|e| CliError::remote(format!("{action}: {e}")))
}

/// Writes `text` and a newline to stdout, ignoring a closed pipe (e.g. `vigil list kv/ | head -1`).
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

/// Writes `text` and a newline to stderr.
pub fn err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Prints a JSON value, pretty-printed with two-space indentation.
pub fn print_json(value: &Value) {
    out(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Renders a table: a header row, a row of dashes under each header, then `rows`. Columns are padded to
/// their widest cell and separated by four spaces (like Vault's columnized output); trailing spaces are
/// trimmed. Returns the lines joined by newlines (no trailing newline).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let dashes: Vec<String> = headers.iter().map(|h| "-".repeat(h.chars().count())).collect();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut lines = Vec::with_capacity(rows.len() + 2);
    for row in std::iter::once(&header_row).chain(std::iter::once(&dashes)).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            line.push_str(cell);
            if i + 1 < columns {
                line.push_str(&" ".repeat(width - cell.chars().count() + 4));
            }
        }
        lines.push(line.trim_end().to_string());
    }
    lines.join("\n")
}

/// A `Key`/`Value` table.
pub fn kv_table(rows: &[(String, String)]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
    table(&["Key", "Value"], &rows)
}

/// Renders a JSON value for a table cell the way Vault (Go) does: strings bare, `null` as `<nil>`, arrays as
/// `[a b]`, objects as `map[k:v]` with sorted keys.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(cell).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys.iter().map(|k| format!("{k}:{}", cell(&map[*k]))).collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// A duration in seconds the way Vault prints a refresh interval: `768h`, `1h30m`, `45s`, `0s`.
pub fn human_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The rows Vault shows for a secret response (its `OutputSecret` table): lease information, then token
/// information if the response carries `auth`, then the `data` keys in sorted order. Values of keys that look like
/// durations (`ttl`, `*_ttl`, `period`, ...) are shown as durations when they are whole seconds, and empty values as
/// `n/a`, as Vault's table formatter does.
pub fn secret_rows(resp: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let lease_id = resp.get("lease_id").and_then(Value::as_str).unwrap_or("");
    let lease_duration = resp.get("lease_duration").and_then(Value::as_u64).unwrap_or(0);
    if lease_duration > 0 {
        if !lease_id.is_empty() {
            rows.push(("lease_id".to_string(), lease_id.to_string()));
            rows.push(("lease_duration".to_string(), human_duration(lease_duration)));
            let renewable = resp.get("renewable").and_then(Value::as_bool).unwrap_or(false);
            rows.push(("lease_renewable".to_string(), renewable.to_string()));
        } else {
            rows.push(("refresh_interval".to_string(), human_duration(lease_duration)));
        }
    }
    if let Some(Value::Object(auth)) = resp.get("auth") {
        let text = |name: &str| auth.get(name).and_then(Value::as_str).unwrap_or("").to_string();
        rows.push(("token".to_string(), text("client_token")));
        rows.push(("token_accessor".to_string(), text("accessor")));
        let duration = auth.get("lease_duration").and_then(Value::as_u64).unwrap_or(0);
        // A token that never expires (a root token, typically) has no lease duration: Vault shows infinity.
        let duration = if duration == 0 { "∞".to_string() } else { human_duration(duration) };
        rows.push(("token_duration".to_string(), duration));
        let renewable = auth.get("renewable").and_then(Value::as_bool).unwrap_or(false);
        rows.push(("token_renewable".to_string(), renewable.to_string()));
        for name in ["token_policies", "identity_policies", "policies"] {
            rows.push((name.to_string(), quoted_list(auth.get(name))));
        }
        if let Some(Value::Object(meta)) = auth.get("metadata") {
            let mut keys: Vec<&String> = meta.keys().collect();
            keys.sort();
            for k in keys {
                rows.push((format!("token_meta_{k}"), cell(&meta[k])));
            }
        }
    }
    if let Some(Value::Object(data)) = resp.get("data") {
        rows.extend(map_rows(data));
    }
    for row in &mut rows {
        if row.1.is_empty() {
            row.1 = NOT_APPLICABLE.to_string();
        }
    }
    rows
}

/// What Vault's tables show for an empty cell.
pub const NOT_APPLICABLE: &str = "n/a";

/// The Key/Value rows of a JSON object as Vault's table formatter shows a map: keys sorted, duration-like keys
/// (see [`looks_like_duration`]) with whole-second values as durations, empty values as `n/a`.
pub fn map_rows(map: &Map<String, Value>) -> Vec<(String, String)> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let value = &map[k];
            let shown = match value.as_u64() {
                Some(secs) if looks_like_duration(k) => human_duration(secs),
                _ => cell(value),
            };
            let shown = if shown.is_empty() { NOT_APPLICABLE.to_string() } else { shown };
            (k.clone(), shown)
        })
        .collect()
}

/// Whether Vault's table formatter shows the value of key `k` as a duration.
pub fn looks_like_duration(k: &str) -> bool {
    k == "period"
        || k.ends_with("_period")
        || k == "ttl"
        || k.ends_with("_ttl")
        || k == "duration"
        || k.ends_with("_duration")
        || k == "lease_max"
        || k == "ttl_max"
}

/// A list of strings the way Go prints a `[]string` with `%q`: `["default" "app"]`; absent or null is `[]`.
pub fn quoted_list(value: Option<&Value>) -> String {
    let items: Vec<String> = match value {
        Some(Value::Array(items)) => items.iter().map(|v| go_quote(&cell(v))).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![go_quote(&cell(other))],
    };
    format!("[{}]", items.join(" "))
}

/// A string quoted like Go's `%q`: in double quotes, with `"`, `\` and control characters escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A section title padded with `=` like Vault's kv output (`======= Metadata =======`): the title line is about
/// as wide as `width`, with at least two `=` on each side and as many on the left as on the right.
pub fn pad_equal_signs(title: &str, width: usize) -> String {
    let mut signs = width.saturating_sub(title.len() + 2);
    if signs == 0 {
        signs = 4;
    }
    if signs % 2 != 0 {
        signs += 1;
    }
    let side = "=".repeat(signs / 2);
    format!("{side} {title} {side}")
}

/// The title line Vault prints above the Key/Value table of `map`: as wide as the table's header line would be
/// with the longest key.
pub fn header_for_map(title: &str, map: &Map<String, Value>) -> String {
    let longest = map.keys().map(String::len).max().unwrap_or(0);
    // Four spaces between the columns and five for "Value".
    pad_equal_signs(title, longest + 4 + 5)
}

/// Prints the `warnings` of a response, if any, to stderr.
pub fn print_warnings(resp: &Value) {
    let Some(Value::Array(warnings)) = resp.get("warnings") else {
        return;
    };
    if warnings.is_empty() {
        return;
    }
    let mut text = String::from("WARNING! The following warnings were returned from Vigil:\n");
    for w in warnings {
        text.push_str("\n  * ");
        text.push_str(&cell(w));
    }
    text.push('\n');
    err(&text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn response(status: u16, body: &str) -> Response {
        Response { status, headers: hyper::HeaderMap::new(), body: Bytes::from(body.to_string()) }
    }

    #[test]
    fn table_layout() {
        let t = table(
            &["Node", "Address", "State", "Voter"],
            &[
                vec!["node1".into(), "127.0.0.1:8201".into(), "leader".into(), "true".into()],
                vec!["node22".into(), "127.0.0.1:8211".into(), "follower".into(), "false".into()],
            ],
        );
        assert_eq!(
            t,
            "Node      Address           State       Voter\n\
             ----      -------           -----       -----\n\
             node1     127.0.0.1:8201    leader      true\n\
             node22    127.0.0.1:8211    follower    false"
        );
        assert_eq!(kv_table(&[("Joined".into(), "true".into())]), "Key       Value\n---       -----\nJoined    true");
    }

    #[test]
    fn api_error_message() {
        let e = CliError::api("Error reading kv/foo", &response(403, r#"{"errors":["permission denied"]}"#));
        assert_eq!(e.message, "Error reading kv/foo: Code: 403. Errors:\n\n* permission denied");
        assert_eq!(e.code, 2);
        let e = CliError::api("Error writing kv/foo", &response(500, "boom"));
        assert_eq!(e.message, "Error writing kv/foo: Code: 500. Errors:\n\n* boom");
    }

    #[test]
    fn cells_and_rows() {
        assert_eq!(cell(&json!("x")), "x");
        assert_eq!(cell(&json!(null)), "<nil>");
        assert_eq!(cell(&json!(["a", 1])), "[a 1]");
        assert_eq!(cell(&json!({"b": 1, "a": "x"})), "map[a:x b:1]");
        assert_eq!(human_duration(2_764_800), "768h");
        assert_eq!(human_duration(5400), "1h30m");
        assert_eq!(human_duration(0), "0s");
        let rows = secret_rows(&json!({"lease_duration": 2764800, "lease_id": "", "data": {"b": "2", "a": "1"}}));
        assert_eq!(
            rows,
            vec![
                ("refresh_interval".to_string(), "768h".to_string()),
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
            ]
        );
    }

    fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn auth_rows_follow_vault() {
        let resp = json!({"lease_id": "", "lease_duration": 0, "data": null, "auth": {
            "client_token": "hvs.t", "accessor": "acc", "lease_duration": 3600, "renewable": true,
            "token_policies": ["app", "default"], "policies": ["app", "default"],
            "metadata": {"team": "ops", "env": "prod"}}});
        assert_eq!(
            secret_rows(&resp),
            rows(&[
                ("token", "hvs.t"),
                ("token_accessor", "acc"),
                ("token_duration", "1h"),
                ("token_renewable", "true"),
                ("token_policies", "[\"app\" \"default\"]"),
                ("identity_policies", "[]"),
                ("policies", "[\"app\" \"default\"]"),
                ("token_meta_env", "prod"),
                ("token_meta_team", "ops"),
            ])
        );
        let root = json!({"auth": {"client_token": "r", "accessor": "", "lease_duration": 0, "policies": ["root"]}});
        let root = secret_rows(&root);
        assert_eq!(root[1], ("token_accessor".to_string(), "n/a".to_string()));
        assert_eq!(root[2], ("token_duration".to_string(), "∞".to_string()));
        assert_eq!(root[4], ("token_policies".to_string(), "[]".to_string()));
    }

    #[test]
    fn data_rows_follow_vault() {
        let resp = json!({"lease_id": "l1", "lease_duration": 60, "renewable": true, "data": {
            "ttl": 2764799, "creation_ttl": 0, "explicit_max_ttl": "1h", "period": 90, "entity_id": "",
            "meta": null, "num_uses": 3, "policies": ["default"]}});
        assert_eq!(
            secret_rows(&resp),
            rows(&[
                ("lease_id", "l1"),
                ("lease_duration", "1m"),
                ("lease_renewable", "true"),
                ("creation_ttl", "0s"),
                ("entity_id", "n/a"),
                ("explicit_max_ttl", "1h"),
                ("meta", "<nil>"),
                ("num_uses", "3"),
                ("period", "1m30s"),
                ("policies", "[default]"),
                ("ttl", "767h59m59s"),
            ])
        );
        // A lease id without a duration is not shown, as in Vault.
        assert!(secret_rows(&json!({"lease_id": "l1", "lease_duration": 0})).is_empty());
        assert!(looks_like_duration("ttl") && looks_like_duration("token_ttl") && looks_like_duration("lease_max"));
        assert!(!looks_like_duration("delete_version_after") && !looks_like_duration("ttls"));
    }

    #[test]
    fn quoting_and_headers() {
        assert_eq!(go_quote("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\x01é\"");
        assert_eq!(quoted_list(Some(&json!(["a", "b"]))), "[\"a\" \"b\"]");
        assert_eq!(quoted_list(Some(&Value::Null)), "[]");
        assert_eq!(pad_equal_signs("Data", 0), "== Data ==");
        assert_eq!(pad_equal_signs("Data", 13), "==== Data ====");
        assert_eq!(pad_equal_signs("Data", 14), "==== Data ====");
        let map = json!({"custom_metadata": 1}).as_object().unwrap().clone();
        assert_eq!(header_for_map("Metadata", &map), "======= Metadata =======");
    }
}
