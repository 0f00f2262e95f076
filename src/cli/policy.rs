//! `vigil policy write|read|list|delete`: ACL policies at `sys/policies/acl/<name>`, like `vault policy`.
//!
//! Policy names are trimmed and lowercased before use (the server stores them lowercased).

use std::io::Read;

use serde_json::{json, Value};

use super::logical::api_path;
use super::output::{self, check, json_body, CliError, CmdResult, Format};
use super::Ctx;

/// `vigil policy <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCmd {
    /// Upload a named policy from a file (`-` reads it from stdin): `vigil policy write app app.hcl`.
    Write {
        /// The policy's name.
        name: String,
        /// The file holding the policy's HCL, or `-` for stdin.
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Print the contents of a policy.
    Read {
        /// The policy's name.
        name: String,
    },
    /// List the names of the installed policies.
    List,
    /// Delete a policy.
    Delete {
        /// The policy's name.
        name: String,
    },
}

/// Runs a policy command.
pub async fn run(ctx: &Ctx, cmd: &PolicyCmd) -> CmdResult {
    match cmd {
        PolicyCmd::Write { name, file } => {
            let text = read_policy_text(file)?;
            write(ctx, &normalize_name(name), &text).await
        }
        PolicyCmd::Read { name } => read(ctx, &normalize_name(name)).await,
        PolicyCmd::List => list(ctx).await,
        PolicyCmd::Delete { name } => delete(ctx, &normalize_name(name)).await,
    }
}

/// A policy name as the server stores it.
pub fn normalize_name(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The API path of the policy `name`.
pub fn policy_path(name: &str) -> String {
    api_path(&format!("sys/policies/acl/{name}"))
}

/// The policy text from `file`, or from stdin for `-`.
fn read_policy_text(file: &str) -> Result<String, CliError> {
    let file = file.trim();
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::local(format!("Error reading policy: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(file).map_err(|e| CliError::local(format!("Error opening policy file: {file}: {e}")))
}

async fn write(ctx: &Ctx, name: &str, text: &str) -> CmdResult {
    let action = "Error uploading policy";
    let body = json!({ "policy": text });
    let resp = ctx.client.put(&policy_path(name), &body).await.map_err(|e| CliError::client(action, &e))?;
    check(action, resp)?;
    output::out(&format!("Success! Uploaded policy: {name}"));
    Ok(())
}

/// Prints the policy text (json: `{"policy": "<text>"}`, as `vault policy read -format=json` does).
async fn read(ctx: &Ctx, name: &str) -> CmdResult {
    let action = format!("Error reading policy named {name}");
    let resp = ctx.client.get(&policy_path(name)).await.map_err(|e| CliError::client(&action, &e))?;
    if resp.status == 404 {
        return Err(no_policy(name));
    }
    let resp = check(&action, resp)?;
    let body = json_body(&action, &resp)?;
    let text = match body.pointer("/data/policy").or_else(|| body.pointer("/data/rules")) {
        Some(Value::String(text)) if !text.is_empty() => text.clone(),
        _ => return Err(no_policy(name)),
    };
    match ctx.format {
        Format::Table => output::out(text.trim()),
        Format::Json => output::print_json(&json!({ "policy": text })),
    }
    Ok(())
}

fn no_policy(name: &str) -> CliError {
    CliError::remote(format!("No policy named: {name}"))
}

/// Prints the policy names one per line (json: an array of names).
async fn list(ctx: &Ctx) -> CmdResult {
    let action = "Error listing policies";
    let resp = ctx.client.list("/v1/sys/policies/acl").await.map_err(|e| CliError::client(action, &e))?;
    let resp = check(action, resp)?;
    let body = json_body(action, &resp)?;
    let names: Vec<String> = match body.pointer("/data/keys").or_else(|| body.pointer("/data/policies")) {
        Some(Value::Array(keys)) => keys.iter().map(output::cell).collect(),
        _ => return Err(CliError::remote(format!("{action}: the response has no data.keys: {}", resp.text()))),
    };
    match ctx.format {
        Format::Table => {
            if !names.is_empty() {
                output::out(&names.join("\n"));
            }
        }
        Format::Json => output::print_json(&json!(names)),
    }
    Ok(())
}

async fn delete(ctx: &Ctx, name: &str) -> CmdResult {
    let action = format!("Error deleting {name}");
    let resp = ctx.client.delete(&policy_path(name)).await.map_err(|e| CliError::client(&action, &e))?;
    check(&action, resp)?;
    output::out(&format!("Success! Deleted policy: {name}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(normalize_name(" App-Read "), "app-read");
        assert_eq!(policy_path("app"), "/v1/sys/policies/acl/app");
        assert_eq!(policy_path("a b"), "/v1/sys/policies/acl/a%20b");
    }

    #[test]
    fn policy_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.hcl");
        std::fs::write(&file, "path \"kv/*\" {}\n").unwrap();
        assert_eq!(read_policy_text(file.to_str().unwrap()).unwrap(), "path \"kv/*\" {}\n");
        let err = read_policy_text(dir.path().join("missing.hcl").to_str().unwrap()).unwrap_err();
        assert!(err.message.starts_with("Error opening policy file: "), "{}", err.message);
        assert_eq!(err.code, 1);
    }
}
