//! The `vigil` command line, shaped like Vault's.
//!
//! - `vigil server` runs a node ([`server`]);
//! - `vigil operator init|raft ...` ([`operator`]), `vigil status` ([`status`]),
//!   `vigil read|write|delete|list` ([`logical`]), `vigil kv ...` ([`kv`], kv-v2 in [`kv2`]),
//!   `vigil policy ...` ([`policy`]) and `vigil token ...` ([`token`]) talk to a node through
//!   [`crate::client::Client`].
//!
//! Client commands find the node from `--address`, else `VIGIL_ADDR`, else `VAULT_ADDR`, else
//! `http://127.0.0.1:8200`, and the token from `--token`, else `VIGIL_TOKEN`, else `VAULT_TOKEN`.
//! Vault-style single-dash long options (`-config=file`, `-format=json`) are accepted (see [`argv`]).
//!
//! Exit codes: 0 success; 1 local error (bad arguments, unreadable file); 2 usage error, server error, or
//! server unreachable.

pub mod argv;
pub mod data;
pub mod events;
pub mod flags;
pub mod kv;
pub mod kv2;
pub mod logical;
pub mod operator;
pub mod output;
pub mod policy;
pub mod server;
pub mod status;
pub mod token;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::client::Client;
use output::{CmdResult, Format};

/// The default node address of the client commands.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8200";

/// `vigil`: a Raft-replicated secrets store that speaks Vault's HTTP API.
#[derive(Debug, Clone, Parser)]
#[command(name = "vigil", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of the client commands (accepted anywhere on the command line).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Client options")]
pub struct GlobalArgs {
    /// The node's API address [default: $VIGIL_ADDR, else $VAULT_ADDR, else http://127.0.0.1:8200].
    #[arg(long, global = true, value_name = "URL")]
    pub address: Option<String>,
    /// The token to authenticate with [default: $VIGIL_TOKEN, else $VAULT_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The `vigil` commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Run a Vigil node.
    Server(server::ServerCmd),
    /// Cluster operations: init, raft peers.
    Operator {
        #[command(subcommand)]
        cmd: operator::OperatorCmd,
    },
    /// Show the node's status.
    Status,
    /// Read data at a path: `vigil read kv/foo`.
    Read {
        /// The path, e.g. kv/foo.
        path: String,
    },
    /// Write data to a path: `vigil write kv/foo a=1 b=@file`.
    Write {
        /// The path, e.g. kv/foo.
        path: String,
        /// The data as key=value pairs (`key=@file` reads a file, `key=-` reads stdin).
        #[arg(value_name = "K=V")]
        data: Vec<String>,
    },
    /// Delete data at a path.
    Delete {
        /// The path, e.g. kv/foo.
        path: String,
    },
    /// List the keys under a path.
    List {
        /// The path, e.g. kv/.
        path: String,
    },
    /// Key-value secrets (kv-v1 and kv-v2): get, put, patch, delete, undelete, destroy, list, metadata.
    Kv {
        #[command(subcommand)]
        cmd: kv::KvCmd,
    },
    /// ACL policies: write, read, list, delete.
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// Tokens: create, lookup, revoke, renew.
    Token {
        #[command(subcommand)]
        cmd: token::TokenCmd,
    },
    /// Event notifications: `vigil events subscribe <TYPE>` prints events as JSON lines.
    // The arguments are parsed by `events::EventsCli`: its `--format json|protobuf` differs from the global one.
    #[command(disable_help_flag = true, override_usage = events::SUBSCRIBE_USAGE)]
    Events {
        /// `subscribe <TYPE> [OPTIONS]` (see `vigil events subscribe --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_name = "ARGS")]
        args: Vec<String>,
    },
}

/// What a client command needs: the client for the node and the output format.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The client for the node at the resolved address, with the resolved token.
    pub client: Client,
    /// `--format`.
    pub format: Format,
}

impl Ctx {
    /// Resolves the address and token from the flags, then the environment (`lookup` reads a variable).
    pub fn from_args(global: &GlobalArgs, lookup: impl Fn(&str) -> Option<String>) -> Ctx {
        let non_empty = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let address = global
            .address
            .clone()
            .or_else(|| non_empty("VIGIL_ADDR"))
            .or_else(|| non_empty("VAULT_ADDR"))
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
        let token = global.token.clone().or_else(|| non_empty("VIGIL_TOKEN")).or_else(|| non_empty("VAULT_TOKEN"));
        let mut client = Client::new(&address);
        if let Some(token) = token {
            client = client.with_token(token.trim());
        }
        Ctx { client, format: global.format }
    }
}

/// Entry point of the `vigil` binary.
pub fn main() -> ExitCode {
    let args = argv::normalize(std::env::args_os());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            output::err(&format!("Error: could not start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(cli));
    // Don't let a stray blocking task hold the process open forever.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    if let Command::Server(cmd) = &cli.command {
        return server::run(cmd).await;
    }
    let ctx = Ctx::from_args(&cli.global, |name| std::env::var(name).ok());
    match dispatch(&ctx, &cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::err(&e.message);
            ExitCode::from(e.code)
        }
    }
}

async fn dispatch(ctx: &Ctx, command: &Command) -> CmdResult {
    match command {
        Command::Server(_) => unreachable!("handled by run"),
        Command::Operator { cmd } => operator::run(ctx, cmd).await,
        Command::Status => status::run(ctx).await,
        Command::Read { path } => logical::read(ctx, logical::display_path(path), &logical::api_path(path)).await,
        Command::Write { path, data } => {
            let data = data::parse_data(data)?;
            logical::write(ctx, logical::display_path(path), &logical::api_path(path), data).await
        }
        Command::Delete { path } => logical::delete(ctx, logical::display_path(path), &logical::api_path(path)).await,
        Command::List { path } => logical::list(ctx, logical::display_path(path), &logical::api_path(path)).await,
        Command::Kv { cmd } => kv::run(ctx, cmd).await,
        Command::Policy { cmd } => policy::run(ctx, cmd).await,
        Command::Token { cmd } => token::run(ctx, cmd).await,
        Command::Events { args } => events::run(ctx, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(argv::normalize(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_flags() {
        let cli = parse(&["vigil", "server", "-config=node1.hcl"]).unwrap();
        let Command::Server(cmd) = cli.command else { panic!() };
        let args = cmd.server_args();
        assert_eq!(args.config.as_deref(), Some(std::path::Path::new("node1.hcl")));
        assert!(!args.dev);
        assert_eq!(args.dev_root_token_id, "root");
        assert_eq!(args.dev_listen_address, "127.0.0.1:8200");

        let cli =
            parse(&["vigil", "server", "-dev", "-dev-root-token-id", "t", "-dev-listen-address=127.0.0.1:9"]).unwrap();
        let Command::Server(cmd) = cli.command else { panic!() };
        let args = cmd.server_args();
        assert!(args.dev && args.config.is_none());
        assert_eq!((args.dev_root_token_id.as_str(), args.dev_listen_address.as_str()), ("t", "127.0.0.1:9"));

        let cli = parse(&["vigil", "server", "--dev", "--config", "x.hcl"]).unwrap();
        assert!(matches!(cli.command, Command::Server(_)));

        let err = parse(&["vigil", "server"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn client_commands() {
        let cli = parse(&["vigil", "kv", "put", "-mount=kv", "foo", "a=1", "-format=json"]).unwrap();
        assert_eq!(cli.global.format, Format::Json);
        let Command::Kv { cmd: kv::KvCmd::Put { target, data, cas: None } } = cli.command else { panic!() };
        assert_eq!((target.mount.as_deref(), target.path.as_str()), (Some("kv"), "foo"));
        assert_eq!(data, ["a=1"]);

        let cli = parse(&["vigil", "-address=http://h:1", "operator", "raft", "join", "http://l:2"]).unwrap();
        assert_eq!(cli.global.address.as_deref(), Some("http://h:1"));
        assert!(matches!(
            cli.command,
            Command::Operator { cmd: operator::OperatorCmd::Raft { cmd: operator::RaftCmd::Join { .. } } }
        ));
        assert!(parse(&["vigil", "operator", "raft", "remove-peer", "node3"]).is_ok());
        assert!(parse(&["vigil", "operator", "raft", "list-peers"]).is_ok());
        assert!(parse(&["vigil", "operator", "init"]).is_ok());
        assert!(parse(&["vigil", "status", "--format", "yaml"]).is_err());
        assert!(parse(&["vigil", "kv", "put", "kv/foo"]).is_err());
        assert!(parse(&["vigil", "write", "kv/foo"]).is_ok());

        let cli = parse(&["vigil", "policy", "write", "App", "-", "-format=json"]).unwrap();
        assert_eq!(cli.global.format, Format::Json);
        let Command::Policy { cmd: policy::PolicyCmd::Write { name, file } } = cli.command else { panic!() };
        assert_eq!((name.as_str(), file.as_str()), ("App", "-"));
        assert!(matches!(
            parse(&["vigil", "policy", "read", "app"]).unwrap().command,
            Command::Policy { cmd: policy::PolicyCmd::Read { .. } }
        ));
        assert!(matches!(
            parse(&["vigil", "policy", "list"]).unwrap().command,
            Command::Policy { cmd: policy::PolicyCmd::List }
        ));
        assert!(matches!(
            parse(&["vigil", "policy", "delete", "app"]).unwrap().command,
            Command::Policy { cmd: policy::PolicyCmd::Delete { .. } }
        ));
        assert!(parse(&["vigil", "policy", "write", "app"]).is_err());
        assert!(parse(&["vigil", "policy", "list", "extra"]).is_err());

        let cli = parse(&["vigil", "token", "create", "-policy=app", "-token=t", "-address", "http://h:1"]).unwrap();
        assert_eq!((cli.global.token.as_deref(), cli.global.address.as_deref()), (Some("t"), Some("http://h:1")));
        let Command::Token { cmd: token::TokenCmd::Create(args) } = cli.command else { panic!() };
        assert_eq!(args.policies, ["app"]);
        assert!(matches!(
            parse(&["vigil", "token", "lookup"]).unwrap().command,
            Command::Token { cmd: token::TokenCmd::Lookup { accessor: false, token_id: None } }
        ));
        // A token argument is the subject of the command, not the token the request is sent with.
        for args in [&["lookup", "hvs.x"][..], &["revoke", "hvs.x"], &["renew", "hvs.x"]] {
            let mut full = vec!["vigil", "token"];
            full.extend_from_slice(args);
            let cli = parse(&full).unwrap();
            assert_eq!(cli.global.token, None, "{args:?}");
            let subject = match cli.command {
                Command::Token { cmd: token::TokenCmd::Lookup { token_id, .. } } => token_id,
                Command::Token { cmd: token::TokenCmd::Revoke(args) } => args.token_id,
                Command::Token { cmd: token::TokenCmd::Renew { token_id, .. } } => token_id,
                other => panic!("{other:?}"),
            };
            assert_eq!(subject.as_deref(), Some("hvs.x"), "{args:?}");
        }
        let cli = parse(&["vigil", "token", "lookup", "-token=t", "hvs.x"]).unwrap();
        assert_eq!(cli.global.token.as_deref(), Some("t"));

        // `-version` is a kv get option; elsewhere `--version` still prints the version.
        let cli = parse(&["vigil", "kv", "get", "-version=2", "secret/foo"]).unwrap();
        assert!(matches!(cli.command, Command::Kv { cmd: kv::KvCmd::Get { version: Some(2), .. } }));
        assert_eq!(parse(&["vigil", "-version"]).unwrap_err().kind(), clap::error::ErrorKind::DisplayVersion);
        assert_eq!(parse(&["vigil", "token", "--version"]).unwrap_err().kind(), clap::error::ErrorKind::DisplayVersion);
    }

    #[test]
    fn address_and_token_resolution() {
        let global = |address: Option<&str>, token: Option<&str>| GlobalArgs {
            address: address.map(String::from),
            token: token.map(String::from),
            format: Format::Table,
        };
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };

        let ctx = Ctx::from_args(&global(None, None), env(&[]));
        assert_eq!(ctx.client.addr(), DEFAULT_ADDRESS);
        assert_eq!(ctx.client.token(), None);

        let both = env(&[("VIGIL_ADDR", "http://v:1"), ("VAULT_ADDR", "http://a:2"), ("VAULT_TOKEN", "vt")]);
        let ctx = Ctx::from_args(&global(None, None), both);
        assert_eq!(ctx.client.addr(), "http://v:1");
        assert_eq!(ctx.client.token(), Some("vt"));

        let vault_only = env(&[("VAULT_ADDR", "http://a:2/"), ("VIGIL_TOKEN", "gt"), ("VAULT_TOKEN", "vt")]);
        let ctx = Ctx::from_args(&global(None, None), vault_only);
        assert_eq!(ctx.client.addr(), "http://a:2");
        assert_eq!(ctx.client.token(), Some("gt"));

        let ctx = Ctx::from_args(&global(Some("http://f:3"), Some("ft")), both);
        assert_eq!(ctx.client.addr(), "http://f:3");
        assert_eq!(ctx.client.token(), Some("ft"));
    }
}
