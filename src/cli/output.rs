//! Shared output of the client commands: tables, JSON, Vault-style error messages and exit codes.

use std::io::Write;

use serde_json::Value;

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

/// The rows Vault shows for a secret response: lease information, then the `data` keys in sorted order, then
/// token information if the response carries `auth`.
pub fn secret_rows(resp: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let lease_id = resp.get("lease_id").and_then(Value::as_str).unwrap_or("");
    let lease_duration = resp.get("lease_duration").and_then(Value::as_u64).unwrap_or(0);
    if !lease_id.is_empty() {
        rows.push(("lease_id".to_string(), lease_id.to_string()));
        rows.push(("lease_duration".to_string(), human_duration(lease_duration)));
        let renewable = resp.get("renewable").and_then(Value::as_bool).unwrap_or(false);
        rows.push(("lease_renewable".to_string(), renewable.to_string()));
    } else if lease_duration > 0 {
        rows.push(("refresh_interval".to_string(), human_duration(lease_duration)));
    }
    if let Some(Value::Object(data)) = resp.get("data") {
        let mut keys: Vec<&String> = data.keys().collect();
        keys.sort();
        for k in keys {
            rows.push((k.clone(), cell(&data[k])));
        }
    }
    if let Some(auth @ Value::Object(_)) = resp.get("auth") {
        let field = |name: &str| auth.get(name).map(cell).unwrap_or_else(|| "n/a".to_string());
        rows.push(("token".to_string(), field("client_token")));
        rows.push(("token_accessor".to_string(), field("accessor")));
        let duration = auth.get("lease_duration").and_then(Value::as_u64).unwrap_or(0);
        rows.push((
            "token_duration".to_string(),
            if duration == 0 { "∞".to_string() } else { human_duration(duration) },
        ));
        rows.push(("token_renewable".to_string(), field("renewable")));
        rows.push(("token_policies".to_string(), field("token_policies")));
        rows.push(("policies".to_string(), field("policies")));
    }
    rows
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
}
