//! `vigil kv get|put|delete|list`: the key-value secrets engine.
//!
//! Today every mount is treated as kv version 1, where the API path is simply `<mount>/<path>`. Each command
//! first resolves its arguments to a [`KvTarget`] (in [`resolve`]) and then asks the target for the API path
//! of the operation it performs ([`KvTarget::read_path`], [`KvTarget::write_path`], ...). kv-v2 support
//! slots in there: `resolve` detects the mount's version (`GET /v1/sys/internal/ui/mounts/<path>`, which
//! returns the mount path and `options.version`), and the path methods insert `data/` or `metadata/` after the
//! mount for version 2 (plus the `{"data": ...}` wrapping of writes and unwrapping of reads).

use super::data::parse_data;
use super::logical;
use super::output::{CliError, CmdResult};
use super::Ctx;

/// `vigil kv <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KvCmd {
    /// Read a secret.
    Get(KvPathArgs),
    /// Write a secret: `vigil kv put kv/foo a=1 b=@file`.
    Put {
        #[command(flatten)]
        target: KvPathArgs,
        /// The data as key=value pairs (`key=@file` reads a file, `key=-` reads stdin).
        #[arg(value_name = "K=V", required = true)]
        data: Vec<String>,
    },
    /// Delete a secret.
    Delete(KvPathArgs),
    /// List the keys under a path.
    List(KvPathArgs),
}

/// The `[-mount=<m>] <PATH>` arguments shared by the kv commands.
#[derive(Debug, Clone, clap::Args)]
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
}

impl KvTarget {
    /// `mount/path`, as shown in messages.
    pub fn display(&self) -> String {
        if self.path.is_empty() {
            format!("{}/", self.mount)
        } else {
            format!("{}/{}", self.mount, self.path)
        }
    }

    /// The API path for reading the secret (kv-v2 later: `<mount>/data/<path>`).
    pub fn read_path(&self) -> String {
        logical::api_path(&self.display())
    }

    /// The API path for writing the secret (kv-v2 later: `<mount>/data/<path>`).
    pub fn write_path(&self) -> String {
        logical::api_path(&self.display())
    }

    /// The API path for deleting the secret (kv-v2 later: `<mount>/data/<path>`).
    pub fn delete_path(&self) -> String {
        logical::api_path(&self.display())
    }

    /// The API path for listing keys (kv-v2 later: `<mount>/metadata/<path>`).
    pub fn list_path(&self) -> String {
        logical::api_path(&self.display())
    }
}

/// Resolves `[-mount] PATH` to a target. Without `-mount`, the first path segment is taken as the mount (the
/// kv-v2 work replaces this guess with the server's answer from `sys/internal/ui/mounts/<path>`).
pub async fn resolve(_ctx: &Ctx, args: &KvPathArgs) -> Result<KvTarget, CliError> {
    split_target(args.mount.as_deref(), &args.path)
}

/// The offline part of [`resolve`].
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
    Ok(KvTarget { mount, path })
}

/// Runs a kv command.
pub async fn run(ctx: &Ctx, cmd: &KvCmd) -> CmdResult {
    match cmd {
        KvCmd::Get(args) => {
            let t = resolve(ctx, args).await?;
            logical::read(ctx, &t.display(), &t.read_path()).await
        }
        KvCmd::Put { target, data } => {
            let data = parse_data(data)?;
            let t = resolve(ctx, target).await?;
            logical::write(ctx, &t.display(), &t.write_path(), data).await
        }
        KvCmd::Delete(args) => {
            let t = resolve(ctx, args).await?;
            logical::delete(ctx, &t.display(), &t.delete_path()).await
        }
        KvCmd::List(args) => {
            let t = resolve(ctx, args).await?;
            logical::list(ctx, &t.display(), &t.list_path()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = split_target(None, "kv/foo/bar").unwrap();
        assert_eq!(t, KvTarget { mount: "kv".into(), path: "foo/bar".into() });
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
}
