//! `vigil kv ...`: the key-value secrets engine, versions 1 and 2, like `vault kv`.
//!
//! Each command first resolves its arguments to a [`KvTarget`] ([`resolve`]): the mount, the path below it and
//! the mount's kv version. The version comes from the server: `GET /v1/sys/internal/ui/mounts/<path>` names the
//! mount serving the path and its `options.version` (any token with access under the mount may ask, as in Vault).
//! Failing that, `GET /v1/sys/mounts/<mount>/` answers the mount's
//! `options.version`. Without `-mount`, the mount is found by asking for each leading part of the path in turn
//! (`team`, then `team/secrets`, ...); the server refuses overlapping mounts, so the first one that exists is the
//! mount that serves the path — the longest mount prefix, as the server routes it. If no answer comes (the mount
//! table is not readable with the token, or the node is unreachable), the first path segment is taken as the mount
//! and version 1 is assumed, and the request itself reports any problem.
//!
//! Version 1 keeps the plain API paths (`<mount>/<path>`) and the output of `vigil read|write|delete|list`.
//! Version 2 inserts `data/`, `metadata/`, `delete/`, `undelete/` or `destroy/` after the mount and prints the
//! `== Secret Path ==`, `== Metadata ==` and `== Data ==` sections `vault kv` prints ([`super::kv2`]).

use serde_json::Value;

use super::data::parse_data;
use super::flags::{parse_bool, parse_duration, parse_key_value};
use super::kv2;
use super::logical;
use super::output::{CliError, CmdResult};
use super::Ctx;

/// `vigil kv <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KvCmd {
    /// Read a secret (kv-v2: the latest version, or -version=N).
    // `-version` is this command's own option, so the global `--version` flag is not offered here.
    #[command(disable_version_flag = true)]
    Get {
        /// kv-v2: the version to read [default: the latest].
        #[arg(long, value_name = "N")]
        version: Option<u64>,
        #[command(flatten)]
        target: KvPathArgs,
    },
    /// Write a secret: `vigil kv put kv/foo a=1 b=@file` (kv-v2: a new version).
    Put {
        /// kv-v2: check-and-set; write only if the secret's current version is N (0: only if it does not exist).
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
        #[command(flatten)]
        target: KvPathArgs,
        /// The data as key=value pairs (`key=@file` reads a file, `key=-` reads stdin).
        #[arg(value_name = "K=V", required = true)]
        data: Vec<String>,
    },
    /// kv-v2: update some keys of the latest version, keeping the others (a JSON merge patch).
    Patch {
        /// Check-and-set: patch only if the secret's current version is N.
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
        #[command(flatten)]
        target: KvPathArgs,
        /// The data as key=value pairs (`key=@file` reads a file, `key=-` reads stdin).
        #[arg(value_name = "K=V", required = true)]
        data: Vec<String>,
    },
    /// Delete a secret (kv-v2: soft-delete the latest version, or -versions=1,2).
    Delete {
        /// kv-v2: the versions to delete (comma-separated or repeated) [default: the latest].
        #[arg(long, value_name = "N", value_delimiter = ',')]
        versions: Vec<u64>,
        #[command(flatten)]
        target: KvPathArgs,
    },
    /// kv-v2: restore soft-deleted versions: `vigil kv undelete -versions=2 secret/foo`.
    Undelete {
        /// The versions to restore (comma-separated or repeated).
        #[arg(long, value_name = "N", value_delimiter = ',')]
        versions: Vec<u64>,
        #[command(flatten)]
        target: KvPathArgs,
    },
    /// kv-v2: permanently remove the data of versions: `vigil kv destroy -versions=1 secret/foo`.
    Destroy {
        /// The versions to destroy (comma-separated or repeated).
        #[arg(long, value_name = "N", value_delimiter = ',')]
        versions: Vec<u64>,
        #[command(flatten)]
        target: KvPathArgs,
    },
    /// List the keys under a path.
    List(KvPathArgs),
    /// kv-v2: a secret's metadata and versions: get, put, delete.
    Metadata {
        #[command(subcommand)]
        cmd: KvMetadataCmd,
    },
}

/// `vigil kv metadata <command>` (kv-v2 only).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KvMetadataCmd {
    /// Show a secret's metadata and the state of each of its versions.
    Get(KvPathArgs),
    /// Create or update a secret's metadata.
    Put(MetadataPutArgs),
    /// Delete a secret's metadata and all of its versions.
    Delete(KvPathArgs),
}

/// The options of `vigil kv metadata put`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct MetadataPutArgs {
    /// The number of versions to keep (0: the mount's setting).
    #[arg(long, value_name = "N")]
    pub max_versions: Option<u64>,
    /// Whether every write of the secret must use check-and-set (-cas-required=false to turn it off).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_bool)]
    pub cas_required: Option<bool>,
    /// How long after a version is written it is soft-deleted, e.g. 72h (0s: never).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub delete_version_after: Option<u64>,
    /// Custom metadata to set (repeatable; replaces the existing custom metadata).
    #[arg(long = "custom-metadata", value_name = "K=V", value_parser = parse_key_value)]
    pub custom_metadata: Vec<(String, String)>,
    #[command(flatten)]
    pub target: KvPathArgs,
}

/// The `[-mount=<m>] <PATH>` arguments shared by the kv commands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct KvPathArgs {
    /// The mount of the kv engine; PATH is then relative to it (`kv get -mount=kv foo` = `kv get kv/foo`).
    #[arg(long, value_name = "MOUNT")]
    pub mount: Option<String>,
    /// The secret's path, including the mount unless -mount is given.
    #[arg(value_name = "PATH")]
    pub path: String,
}

/// A secret path resolved against its mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvTarget {
    /// The mount, without surrounding slashes (`kv`, `team/secrets`).
    pub mount: String,
    /// The path below the mount, without a leading slash (may be empty or end with `/` for lists).
    pub path: String,
    /// True for a kv version 2 mount.
    pub v2: bool,
}

impl KvTarget {
    /// `mount/path`, as the user wrote it (and as kv-v1 messages show it).
    pub fn display(&self) -> String {
        if self.path.is_empty() {
            format!("{}/", self.mount)
        } else {
            format!("{}/{}", self.mount, self.path)
        }
    }

    /// kv-v2: `mount/<segment>/path`, the path of one of the engine's endpoints (`data`, `metadata`, `delete`,
    /// `undelete`, `destroy`) for this secret.
    pub fn v2_display(&self, segment: &str) -> String {
        format!("{}/{segment}/{}", self.mount, self.path)
    }

    /// The path of the secret's data, as messages show it: `mount/path` (v1) or `mount/data/path` (v2).
    pub fn data_display(&self) -> String {
        if self.v2 {
            self.v2_display("data")
        } else {
            self.display()
        }
    }

    /// The path listed by `kv list`, as messages show it: `mount/path` (v1) or `mount/metadata/path` (v2).
    pub fn list_display(&self) -> String {
        if self.v2 {
            self.v2_display("metadata")
        } else {
            self.display()
        }
    }

    /// The API path for reading the secret.
    pub fn read_path(&self) -> String {
        logical::api_path(&self.data_display())
    }

    /// The API path for writing the secret.
    pub fn write_path(&self) -> String {
        logical::api_path(&self.data_display())
    }

    /// The API path for deleting the secret (kv-v2: its latest version).
    pub fn delete_path(&self) -> String {
        logical::api_path(&self.data_display())
    }

    /// The API path for listing keys.
    pub fn list_path(&self) -> String {
        logical::api_path(&self.list_display())
    }
}

/// Resolves `[-mount] PATH` to a target, asking the server for the mount and its version (see the module docs).
pub async fn resolve(ctx: &Ctx, args: &KvPathArgs) -> Result<KvTarget, CliError> {
    let guess = split_target(args.mount.as_deref(), &args.path)?;
    if let Some(target) = ask_mount_for_path(ctx, &guess).await {
        return Ok(target);
    }
    let candidates = match &args.mount {
        Some(_) => vec![guess.mount.clone()],
        None => mount_candidates(&args.path),
    };
    for mount in candidates {
        match probe_mount(ctx, &mount).await {
            Probe::Mount { v2 } => {
                let full = guess.display();
                let path = full.strip_prefix(mount.as_str()).unwrap_or("").trim_start_matches('/').to_string();
                return Ok(KvTarget { mount, path, v2 });
            }
            Probe::NoMount => continue,
            Probe::NoAnswer => break,
        }
    }
    Ok(guess)
}

/// Asks `sys/internal/ui/mounts/<path>` which mount serves the target's full path.
async fn ask_mount_for_path(ctx: &Ctx, guess: &KvTarget) -> Option<KvTarget> {
    let full = guess.display();
    let resp = ctx.client.get(&logical::api_path(&format!("sys/internal/ui/mounts/{full}"))).await.ok()?;
    if !resp.is_success() {
        return None;
    }
    let body = resp.json().ok()?;
    let mount = body.pointer("/data/path")?.as_str()?.trim_end_matches('/').to_string();
    let path = full.strip_prefix(mount.as_str())?.trim_start_matches('/').to_string();
    Some(KvTarget { v2: is_kv_v2(&body), mount, path })
}

/// What the server says about a mount path.
enum Probe {
    /// A mount exists there; `v2` if it is kv version 2.
    Mount { v2: bool },
    /// No mount there (or the mount table is not readable with this token).
    NoMount,
    /// The server could not be asked: stop asking.
    NoAnswer,
}

async fn probe_mount(ctx: &Ctx, mount: &str) -> Probe {
    let path = logical::api_path(&format!("sys/mounts/{mount}/"));
    let Ok(resp) = ctx.client.get(&path).await else { return Probe::NoAnswer };
    match resp.json() {
        Ok(body) if resp.is_success() => Probe::Mount { v2: is_kv_v2(&body) },
        _ => Probe::NoMount,
    }
}

/// Whether a `sys/mounts/<path>` answer describes a kv version 2 mount.
fn is_kv_v2(body: &Value) -> bool {
    let mount = body.get("data").filter(|d| d.is_object()).unwrap_or(body);
    let engine = mount.get("type").and_then(Value::as_str).unwrap_or("kv");
    let version = mount.pointer("/options/version").and_then(Value::as_str).unwrap_or("1");
    engine == "kv-v2" || (engine == "kv" && version == "2")
}

/// The mounts that could serve `path`, shortest first: `a/b/c` → `a`, `a/b`, `a/b/c`.
fn mount_candidates(path: &str) -> Vec<String> {
    let full = path.trim_matches('/');
    let mut out: Vec<String> = full.match_indices('/').map(|(i, _)| full[..i].to_string()).collect();
    if !full.is_empty() {
        out.push(full.to_string());
    }
    out.retain(|m| !m.is_empty() && !m.ends_with('/'));
    out
}

/// The target assumed without the server's answer: `-mount`, else the first path segment, and version 1.
fn split_target(mount: Option<&str>, path: &str) -> Result<KvTarget, CliError> {
    let (mount, path) = match mount {
        Some(m) => (m.trim_matches('/').to_string(), path.trim_start_matches('/').to_string()),
        None => {
            let full = path.trim_start_matches('/');
            match full.split_once('/') {
                Some((m, rest)) => (m.to_string(), rest.to_string()),
                None => (full.to_string(), String::new()),
            }
        }
    };
    if mount.is_empty() {
        return Err(CliError::local("a kv path must start with its mount, e.g. kv/foo (or use -mount)"));
    }
    Ok(KvTarget { mount, path, v2: false })
}

/// Runs a kv command.
pub async fn run(ctx: &Ctx, cmd: &KvCmd) -> CmdResult {
    match cmd {
        KvCmd::Get { version, target } => {
            let t = resolve(ctx, target).await?;
            if t.v2 {
                kv2::get(ctx, &t, *version).await
            } else {
                logical::read(ctx, &t.display(), &t.read_path()).await
            }
        }
        KvCmd::Put { cas, target, data } => {
            let data = parse_data(data)?;
            let t = resolve(ctx, target).await?;
            if t.v2 {
                kv2::put(ctx, &t, data, *cas).await
            } else {
                logical::write(ctx, &t.display(), &t.write_path(), data).await
            }
        }
        KvCmd::Patch { cas, target, data } => {
            let data = parse_data(data)?;
            let t = resolve(ctx, target).await?;
            if !t.v2 {
                return Err(CliError::remote("K/V engine mount must be version 2 for patch support"));
            }
            kv2::patch(ctx, &t, data, *cas).await
        }
        KvCmd::Delete { versions, target } => {
            let t = resolve(ctx, target).await?;
            if t.v2 {
                kv2::delete(ctx, &t, versions).await
            } else {
                logical::delete(ctx, &t.display(), &t.delete_path()).await
            }
        }
        KvCmd::Undelete { versions, target } => {
            let t = v2_target(ctx, target, versions, "undelete", "Undelete").await?;
            kv2::write_versions(ctx, &t, "undelete", "POST", versions).await
        }
        KvCmd::Destroy { versions, target } => {
            let t = v2_target(ctx, target, versions, "destroy", "Destroy").await?;
            kv2::write_versions(ctx, &t, "destroy", "PUT", versions).await
        }
        KvCmd::List(args) => {
            let t = resolve(ctx, args).await?;
            logical::list(ctx, &t.list_display(), &t.list_path()).await
        }
        KvCmd::Metadata { cmd } => {
            let args = match cmd {
                KvMetadataCmd::Get(args) | KvMetadataCmd::Delete(args) => args,
                KvMetadataCmd::Put(put) => &put.target,
            };
            let t = resolve(ctx, args).await?;
            if !t.v2 {
                return Err(CliError::local("Metadata not supported on KV Version 1"));
            }
            match cmd {
                KvMetadataCmd::Get(_) => kv2::metadata_get(ctx, &t).await,
                KvMetadataCmd::Put(put) => kv2::metadata_put(ctx, &t, put).await,
                KvMetadataCmd::Delete(_) => kv2::metadata_delete(ctx, &t).await,
            }
        }
    }
}

/// Checks `-versions`, then resolves a target that must be kv-v2 (Vault's messages for undelete and destroy).
async fn v2_target(
    ctx: &Ctx,
    args: &KvPathArgs,
    versions: &[u64],
    verb: &str,
    title: &str,
) -> Result<KvTarget, CliError> {
    if versions.is_empty() {
        return Err(CliError::local(format!(
            "No versions provided, use the \"-versions\" flag to specify the version to {verb}."
        )));
    }
    let t = resolve(ctx, args).await?;
    if !t.v2 {
        return Err(CliError::local(format!("{title} not supported on KV Version 1")));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{argv, Cli, Command};
    use clap::Parser;
    use serde_json::json;

    fn parse(args: &[&str]) -> Result<KvCmd, clap::Error> {
        let mut full = vec!["vigil", "kv"];
        full.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv::normalize(full))?;
        match cli.command {
            Command::Kv { cmd } => Ok(cmd),
            other => panic!("not a kv command: {other:?}"),
        }
    }

    fn path_args(mount: Option<&str>, path: &str) -> KvPathArgs {
        KvPathArgs { mount: mount.map(String::from), path: path.to_string() }
    }

    #[test]
    fn targets() {
        let t = split_target(None, "kv/foo/bar").unwrap();
        assert_eq!(t, KvTarget { mount: "kv".into(), path: "foo/bar".into(), v2: false });
        assert_eq!(t.display(), "kv/foo/bar");
        assert_eq!(t.read_path(), "/v1/kv/foo/bar");

        let t = split_target(Some("kv"), "foo").unwrap();
        assert_eq!(t.display(), "kv/foo");
        assert_eq!(t.write_path(), "/v1/kv/foo");

        let t = split_target(Some("/team/secrets/"), "/a").unwrap();
        assert_eq!(t.display(), "team/secrets/a");

        let t = split_target(None, "kv/").unwrap();
        assert_eq!(t.display(), "kv/");
        assert_eq!(t.list_path(), "/v1/kv/");
        let t = split_target(None, "kv").unwrap();
        assert_eq!(t.list_path(), "/v1/kv/");

        let t = split_target(None, "kv/dir/").unwrap();
        assert_eq!(t.list_path(), "/v1/kv/dir/");

        assert!(split_target(None, "/").is_err());
        assert!(split_target(Some(""), "x").is_err());
    }

    #[test]
    fn v2_paths() {
        let t = KvTarget { mount: "team/secrets".into(), path: "app/db".into(), v2: true };
        assert_eq!(t.display(), "team/secrets/app/db");
        assert_eq!(t.data_display(), "team/secrets/data/app/db");
        assert_eq!(t.read_path(), "/v1/team/secrets/data/app/db");
        assert_eq!(t.write_path(), "/v1/team/secrets/data/app/db");
        assert_eq!(t.delete_path(), "/v1/team/secrets/data/app/db");
        assert_eq!(t.v2_display("destroy"), "team/secrets/destroy/app/db");
        assert_eq!(t.list_display(), "team/secrets/metadata/app/db");
        let root = KvTarget { mount: "secret".into(), path: String::new(), v2: true };
        assert_eq!(root.list_path(), "/v1/secret/metadata/");
        let dir = KvTarget { mount: "secret".into(), path: "a b/".into(), v2: true };
        assert_eq!(dir.list_path(), "/v1/secret/metadata/a%20b/");
    }

    #[test]
    fn candidates_and_versions() {
        assert_eq!(
            mount_candidates("team/secrets/app/db"),
            ["team", "team/secrets", "team/secrets/app", "team/secrets/app/db"]
        );
        assert_eq!(mount_candidates("/kv/dir/"), ["kv", "kv/dir"]);
        assert_eq!(mount_candidates("kv"), ["kv"]);
        assert_eq!(mount_candidates("kv//x"), ["kv", "kv//x"]);
        assert!(mount_candidates("/").is_empty());

        assert!(is_kv_v2(&json!({"data": {"type": "kv", "options": {"version": "2"}}})));
        assert!(!is_kv_v2(&json!({"data": {"type": "kv", "options": {"version": "1"}}})));
        assert!(!is_kv_v2(&json!({"data": {"type": "kv", "options": null}})));
        assert!(is_kv_v2(&json!({"data": {"type": "kv-v2", "options": null}})));
        assert!(!is_kv_v2(&json!({"data": {"type": "pki", "options": {"version": "2"}}})));
        assert!(is_kv_v2(&json!({"type": "kv", "options": {"version": "2"}})));
    }

    #[test]
    fn v2_commands_parse() {
        let KvCmd::Get { version, target } = parse(&["get", "-version=3", "secret/foo"]).unwrap() else { panic!() };
        assert_eq!((version, target), (Some(3), path_args(None, "secret/foo")));
        let KvCmd::Get { version, target } = parse(&["get", "-mount=secret", "-version", "2", "foo"]).unwrap() else {
            panic!()
        };
        assert_eq!((version, target), (Some(2), path_args(Some("secret"), "foo")));
        let KvCmd::Get { version, .. } = parse(&["get", "secret/foo"]).unwrap() else { panic!() };
        assert_eq!(version, None);

        let KvCmd::Put { cas, target, data } = parse(&["put", "-cas=0", "secret/foo", "a=1"]).unwrap() else {
            panic!()
        };
        assert_eq!((cas, target, data), (Some(0), path_args(None, "secret/foo"), vec!["a=1".to_string()]));
        let KvCmd::Patch { cas, data, .. } = parse(&["patch", "secret/foo", "a=1", "b=2"]).unwrap() else { panic!() };
        assert_eq!((cas, data.len()), (None, 2));
        assert!(parse(&["patch", "secret/foo"]).is_err());

        let KvCmd::Delete { versions, .. } = parse(&["delete", "secret/foo"]).unwrap() else { panic!() };
        assert!(versions.is_empty());
        let KvCmd::Delete { versions, .. } =
            parse(&["delete", "-versions=1,2", "-versions", "5", "secret/foo"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(versions, [1, 2, 5]);
        let KvCmd::Undelete { versions, .. } = parse(&["undelete", "-versions=3", "secret/foo"]).unwrap() else {
            panic!()
        };
        assert_eq!(versions, [3]);
        let KvCmd::Destroy { versions, target } = parse(&["destroy", "-versions=1", "-mount=s", "foo"]).unwrap() else {
            panic!()
        };
        assert_eq!((versions, target), (vec![1], path_args(Some("s"), "foo")));
        assert!(parse(&["delete", "-versions=one", "secret/foo"]).is_err());
        assert!(parse(&["get", "-version=-1", "secret/foo"]).is_err());
    }

    #[test]
    fn metadata_commands_parse() {
        let KvCmd::Metadata { cmd: KvMetadataCmd::Get(args) } = parse(&["metadata", "get", "secret/foo"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(args, path_args(None, "secret/foo"));
        let KvCmd::Metadata { cmd: KvMetadataCmd::Put(put) } = parse(&[
            "metadata",
            "put",
            "-max-versions=5",
            "-cas-required",
            "-delete-version-after=1h",
            "-custom-metadata=team=ops",
            "-custom-metadata",
            "env=prod",
            "secret/foo",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            put,
            MetadataPutArgs {
                max_versions: Some(5),
                cas_required: Some(true),
                delete_version_after: Some(3600),
                custom_metadata: vec![("team".into(), "ops".into()), ("env".into(), "prod".into())],
                target: path_args(None, "secret/foo"),
            }
        );
        let KvCmd::Metadata { cmd: KvMetadataCmd::Put(put) } =
            parse(&["metadata", "put", "-cas-required=false", "secret/foo"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((put.cas_required, put.max_versions, put.delete_version_after), (Some(false), None, None));
        assert!(matches!(
            parse(&["metadata", "delete", "-mount=secret", "foo"]).unwrap(),
            KvCmd::Metadata { cmd: KvMetadataCmd::Delete(_) }
        ));
        assert!(parse(&["metadata", "put", "-custom-metadata=oops", "secret/foo"]).is_err());
    }
}
