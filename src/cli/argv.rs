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
const VALUE_OPTIONS: &[&str] = &[
    // Global and server options.
    "config",
    "dev-root-token-id",
    "dev-listen-address",
    "address",
    "token",
    "format",
    // kv.
    "mount",
    "cas",
    "versions",
    "max-versions",
    "delete-version-after",
    "custom-metadata",
    // token.
    "policy",
    "ttl",
    "explicit-max-ttl",
    "use-limit",
    "display-name",
    "metadata",
    "mode",
    "increment",
];

/// Long options that are switches, or booleans whose value can only be attached (`-renewable=false`).
///
/// `version` is both the global `--version` switch and the value option of `kv get` (`-version=2`). Listing it
/// here is right for both: the attached form keeps its value, and in `kv get -version 2` the `2` is left as it
/// is (it does not look like an option) for clap to take as the value.
const SWITCH_OPTIONS: &[&str] =
    &["dev", "help", "version", "orphan", "no-default-policy", "accessor", "self", "renewable", "cas-required"];

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
    fn kv_policy_and_token_options() {
        assert_eq!(
            norm(&["vigil", "token", "create", "-policy=a", "-policy", "b", "-ttl=1h", "-orphan", "-renewable=false"]),
            ["vigil", "token", "create", "--policy=a", "--policy", "b", "--ttl=1h", "--orphan", "--renewable=false"]
        );
        assert_eq!(
            norm(&["vigil", "token", "create", "-explicit-max-ttl", "2h", "-use-limit=3", "-display-name=ci"]),
            ["vigil", "token", "create", "--explicit-max-ttl", "2h", "--use-limit=3", "--display-name=ci"]
        );
        assert_eq!(
            norm(&["vigil", "token", "create", "-metadata", "k=v", "-no-default-policy"]),
            ["vigil", "token", "create", "--metadata", "k=v", "--no-default-policy"]
        );
        assert_eq!(
            norm(&["vigil", "token", "revoke", "-self", "-accessor", "-mode=orphan", "x"]),
            ["vigil", "token", "revoke", "--self", "--accessor", "--mode=orphan", "x"]
        );
        assert_eq!(norm(&["vigil", "token", "renew", "-increment=1h"]), ["vigil", "token", "renew", "--increment=1h"]);
        assert_eq!(
            norm(&["vigil", "kv", "get", "-version=2", "-version", "3", "s/a"]),
            ["vigil", "kv", "get", "--version=2", "--version", "3", "s/a"]
        );
        assert_eq!(
            norm(&["vigil", "kv", "put", "-cas=0", "s/a", "k=-v"]),
            ["vigil", "kv", "put", "--cas=0", "s/a", "k=-v"]
        );
        assert_eq!(
            norm(&["vigil", "kv", "destroy", "-versions", "1,2", "s/a"]),
            ["vigil", "kv", "destroy", "--versions", "1,2", "s/a"]
        );
        assert_eq!(
            norm(&["vigil", "kv", "metadata", "put", "-max-versions=2", "-cas-required", "-delete-version-after=1h"]),
            ["vigil", "kv", "metadata", "put", "--max-versions=2", "--cas-required", "--delete-version-after=1h"]
        );
        assert_eq!(norm(&["vigil", "-custom-metadata", "a=b"]), ["vigil", "--custom-metadata", "a=b"]);
        // A token value that looks like a switch stays a value; `-` (stdin) is not an option.
        assert_eq!(norm(&["vigil", "-mode", "-self"]), ["vigil", "--mode", "-self"]);
        assert_eq!(norm(&["vigil", "policy", "write", "p", "-"]), ["vigil", "policy", "write", "p", "-"]);
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
