//! `key=value` arguments of `vigil write` and `vigil kv put`.
//!
//! - `k=v` sets `k` to the string `v` (everything after the first `=`, which may itself contain `=`);
//! - `k=@file` sets `k` to the contents of `file`;
//! - `k=-` sets `k` to everything read from stdin (at most once per command);
//! - a key given several times collects its values into an array, as Vault does.

use std::io::Read;

use serde_json::{Map, Value};

use super::output::CliError;

/// [`parse_pairs`] as a command error (a local error, exit code 1).
pub fn parse_data(args: &[String]) -> Result<Map<String, Value>, CliError> {
    parse_pairs(args).map_err(|e| CliError::local(format!("Failed to parse K=V data: {e}")))
}

/// Parses `key=value` arguments, reading `@file` and `-` values from the filesystem and stdin.
pub fn parse_pairs(args: &[String]) -> Result<Map<String, Value>, String> {
    parse_pairs_with(
        args,
        |path| std::fs::read_to_string(path).map_err(|e| format!("error reading {path}: {e}")),
        || {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| format!("error reading stdin: {e}"))?;
            Ok(s)
        },
    )
}

/// [`parse_pairs`] with injectable file and stdin readers (for tests).
pub fn parse_pairs_with(
    args: &[String],
    mut read_file: impl FnMut(&str) -> Result<String, String>,
    mut read_stdin: impl FnMut() -> Result<String, String>,
) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    let mut stdin_used = false;
    for arg in args {
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(format!("invalid key/value pair {arg:?}: format must be key=value"));
        };
        if key.is_empty() {
            return Err(format!("invalid key/value pair {arg:?}: the key is empty"));
        }
        let value = if raw == "-" {
            if stdin_used {
                return Err("stdin (-) can only be used for one value".to_string());
            }
            stdin_used = true;
            read_stdin()?
        } else if let Some(path) = raw.strip_prefix('@') {
            if path.is_empty() {
                return Err(format!("invalid key/value pair {arg:?}: no file name after @"));
            }
            read_file(path)?
        } else {
            raw.to_string()
        };
        match map.get_mut(key) {
            None => {
                map.insert(key.to_string(), Value::String(value));
            }
            Some(Value::Array(items)) => items.push(Value::String(value)),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(value)]);
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(args: &[&str]) -> Result<Value, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_pairs_with(
            &args,
            |path| match path {
                "secret.txt" => Ok("from file\n".to_string()),
                _ => Err(format!("error reading {path}: not found")),
            },
            || Ok("from stdin".to_string()),
        )
        .map(Value::Object)
    }

    #[test]
    fn plain_pairs() {
        assert_eq!(parse(&["a=1", "b=2"]).unwrap(), json!({"a": "1", "b": "2"}));
        assert_eq!(parse(&["a=x=y", "e="]).unwrap(), json!({"a": "x=y", "e": ""}));
        assert_eq!(parse(&[]).unwrap(), json!({}));
        assert_eq!(parse(&["k=-1x"]).unwrap(), json!({"k": "-1x"}));
    }

    #[test]
    fn files_and_stdin() {
        assert_eq!(parse(&["a=@secret.txt"]).unwrap(), json!({"a": "from file\n"}));
        assert_eq!(parse(&["a=-"]).unwrap(), json!({"a": "from stdin"}));
        assert!(parse(&["a=@missing"]).unwrap_err().contains("missing"));
        assert!(parse(&["a=@"]).is_err());
        assert!(parse(&["a=-", "b=-"]).unwrap_err().contains("stdin"));
    }

    #[test]
    fn repeated_keys_collect() {
        assert_eq!(parse(&["p=a", "p=b", "p=c"]).unwrap(), json!({"p": ["a", "b", "c"]}));
    }

    #[test]
    fn malformed_pairs() {
        assert!(parse(&["novalue"]).unwrap_err().contains("key=value"));
        assert!(parse(&["=v"]).unwrap_err().contains("empty"));
    }
}
