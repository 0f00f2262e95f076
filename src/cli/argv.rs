//! Vault-style single-dash long options.
//!
//! Vault's users type `vault server -config=node.hcl` or `vault status -format=json`: long options with one
//! dash. clap would read `-config` as a cluster of short flags, so before parsing, [`normalize`] rewrites a
//! single-dash spelling of one of the known long options below (`-name` or `-name=value`) to its double-dash
//! form. Nothing else changes: unknown `-xyz` arguments, short flags such as `-h`, arguments after a `--`
//! separator, and the value following a value-taking option (`--token -dev` keeps `-dev` as the token) are
//! left alone.

use std::ffi::OsString;

/// Long options that take a value (`-name value` or `-name=value`).
const VALUE_OPTIONS: &[&str] =
    &["config", "dev-root-token-id", "dev-listen-address", "address", "token", "format", "mount"];

/// Long options that are plain switches.
const SWITCH_OPTIONS: &[&str] = &["dev", "help", "version"];

/// Rewrites single-dash known long options to double-dash; `args` includes the program name.
pub fn normalize<I>(args: I) -> Vec<OsString>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut out = Vec::new();
    let mut iter = args.into_iter().map(Into::into);
    if let Some(program) = iter.next() {
        out.push(program);
    }
    let mut rest_verbatim = false;
    let mut next_is_value = false;
    for arg in iter {
        if rest_verbatim || next_is_value {
            next_is_value = false;
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            rest_verbatim = true;
            out.push(arg);
            continue;
        }
        // `--name` (clap's own spelling) or `-name`, with or without `=value`.
        let (dashes, body) = if let Some(body) = text.strip_prefix("--") {
            ("--", body)
        } else if let Some(body) = text.strip_prefix('-') {
            ("-", body)
        } else {
            out.push(arg);
            continue;
        };
        let (name, has_value) = match body.split_once('=') {
            Some((name, _)) => (name, true),
            None => (body, false),
        };
        let takes_value = VALUE_OPTIONS.contains(&name);
        if !takes_value && !SWITCH_OPTIONS.contains(&name) {
            out.push(arg);
            continue;
        }
        next_is_value = takes_value && !has_value;
        if dashes == "-" {
            out.push(OsString::from(format!("-{text}")));
        } else {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize(args.iter().copied()).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn single_dash_long_options_become_double_dash() {
        assert_eq!(norm(&["vigil", "server", "-config=n.hcl"]), ["vigil", "server", "--config=n.hcl"]);
        assert_eq!(norm(&["vigil", "server", "-config", "n.hcl"]), ["vigil", "server", "--config", "n.hcl"]);
        assert_eq!(
            norm(&["vigil", "server", "-dev", "-dev-root-token-id=abc", "-dev-listen-address", "127.0.0.1:9200"]),
            ["vigil", "server", "--dev", "--dev-root-token-id=abc", "--dev-listen-address", "127.0.0.1:9200"]
        );
        assert_eq!(
            norm(&["vigil", "status", "-format=json", "-address=http://h:1"]),
            ["vigil", "status", "--format=json", "--address=http://h:1"]
        );
        assert_eq!(norm(&["vigil", "kv", "get", "-mount=kv", "foo"]), ["vigil", "kv", "get", "--mount=kv", "foo"]);
        assert_eq!(norm(&["vigil", "-help"]), ["vigil", "--help"]);
    }

    #[test]
    fn other_arguments_are_untouched() {
        assert_eq!(norm(&["vigil", "--format", "json", "status"]), ["vigil", "--format", "json", "status"]);
        assert_eq!(norm(&["vigil", "-h"]), ["vigil", "-h"]);
        assert_eq!(norm(&["vigil", "-unknown=1"]), ["vigil", "-unknown=1"]);
        assert_eq!(norm(&["vigil", "write", "kv/a", "x=-dev"]), ["vigil", "write", "kv/a", "x=-dev"]);
        // The value of a value-taking option is never rewritten.
        assert_eq!(norm(&["vigil", "-token", "-dev", "status"]), ["vigil", "--token", "-dev", "status"]);
        assert_eq!(norm(&["vigil", "--token", "-format", "status"]), ["vigil", "--token", "-format", "status"]);
        // Nothing after `--` is rewritten.
        assert_eq!(norm(&["vigil", "write", "--", "-dev"]), ["vigil", "write", "--", "-dev"]);
        // The program name is kept even if it looks like an option.
        assert_eq!(norm(&["-dev"]), ["-dev"]);
        assert!(norm(&[]).is_empty());
    }
}
