//! `vigil token create|lookup|revoke|renew`: the token auth method (`auth/token/*`), like `vault token`.
//!
//! Output follows Vault: the secret table of the response (`token`, `token_accessor`, `token_duration`, ... for
//! create and renew; the token's properties for lookup), or the whole response with `-format=json`.

use serde_json::{json, Map, Value};

use super::flags::{go_duration, parse_bool, parse_duration, parse_key_value};
use super::logical::print_secret;
use super::output::{self, check, json_body, CliError, CmdResult};
use super::Ctx;

/// `vigil token <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCmd {
    /// Create a new token (a child of the calling token unless -orphan).
    Create(CreateArgs),
    /// Show a token's properties: the calling token's without TOKEN.
    Lookup {
        /// Treat the argument as an accessor instead of a token.
        #[arg(long)]
        accessor: bool,
        /// The token (or accessor, with -accessor) to look up [default: the calling token].
        // Not named `token`: that is the id of the global `--token` option, which clap would fill with it.
        #[arg(value_name = "TOKEN")]
        token_id: Option<String>,
    },
    /// Revoke a token and its children: `vigil token revoke TOKEN`, `-self`, `-accessor ACCESSOR`.
    Revoke(RevokeArgs),
    /// Renew a token's lease: the calling token's without TOKEN.
    Renew {
        /// The lease extension to request, e.g. 30m [default: the token's TTL].
        #[arg(long, short = 'i', value_name = "DURATION", value_parser = parse_duration)]
        increment: Option<u64>,
        /// The token to renew [default: the calling token].
        #[arg(value_name = "TOKEN")]
        token_id: Option<String>,
    },
}

/// The options of `vigil token create`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct CreateArgs {
    /// A policy to attach (repeatable, or comma-separated) [default: the calling token's policies].
    #[arg(long = "policy", value_name = "NAME", value_delimiter = ',')]
    pub policies: Vec<String>,
    /// The token's initial TTL, e.g. 1h [default: 768h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<u64>,
    /// A TTL the token can never be renewed past.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub explicit_max_ttl: Option<u64>,
    /// The number of uses after which the token is revoked (0: unlimited).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub use_limit: u64,
    /// Whether the token can be renewed (-renewable=false to forbid).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    pub renewable: bool,
    /// A name shown in lookups and audit logs (stored as `token-<name>`).
    #[arg(long, value_name = "NAME")]
    pub display_name: Option<String>,
    /// Metadata to attach to the token (repeatable).
    #[arg(long = "metadata", value_name = "K=V", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// Create the token without a parent, so revoking the caller does not revoke it.
    #[arg(long)]
    pub orphan: bool,
    /// Do not attach the default policy.
    #[arg(long)]
    pub no_default_policy: bool,
}

/// The options of `vigil token revoke`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RevokeArgs {
    /// Treat the argument as an accessor instead of a token.
    #[arg(long)]
    pub accessor: bool,
    /// Revoke the calling token.
    #[arg(long = "self")]
    pub revoke_self: bool,
    /// `orphan`: revoke only the token, leaving its children as orphans.
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// The token (or accessor, with -accessor) to revoke.
    #[arg(value_name = "TOKEN")]
    pub token_id: Option<String>,
}

/// Runs a token command.
pub async fn run(ctx: &Ctx, cmd: &TokenCmd) -> CmdResult {
    match cmd {
        TokenCmd::Create(args) => {
            let (path, body) = create_request(args);
            send(ctx, "Error creating token", path, Some(body)).await
        }
        TokenCmd::Lookup { accessor, token_id } => {
            let (path, body) = lookup_request(*accessor, token_id.as_deref())?;
            send(ctx, "Error looking up token", path, body).await
        }
        TokenCmd::Revoke(args) => {
            let (path, body) = revoke_request(args)?;
            let action = "Error revoking token";
            let resp = ctx.client.post(path, &body).await.map_err(|e| CliError::client(action, &e))?;
            check(action, resp)?;
            output::out("Success! Revoked token (if it existed)");
            Ok(())
        }
        TokenCmd::Renew { increment, token_id } => {
            let (path, body) = renew_request(*increment, token_id.as_deref());
            send(ctx, "Error renewing token", path, Some(body)).await
        }
    }
}

/// Sends a request (`GET` without a body, else `POST`) and prints the returned secret.
async fn send(ctx: &Ctx, action: &str, path: &str, body: Option<Value>) -> CmdResult {
    let resp = match &body {
        Some(body) => ctx.client.post(path, body).await,
        None => ctx.client.get(path).await,
    }
    .map_err(|e| CliError::client(action, &e))?;
    let resp = check(action, resp)?;
    let body = json_body(action, &resp)?;
    print_secret(ctx.format, &body);
    Ok(())
}

/// The path and body of a token creation, as `vault token create` sends them.
pub fn create_request(args: &CreateArgs) -> (&'static str, Value) {
    let mut body = Map::new();
    let policies: Vec<&str> = args.policies.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).collect();
    if !policies.is_empty() {
        body.insert("policies".into(), json!(policies));
    }
    if !args.metadata.is_empty() {
        let meta: Map<String, Value> = args.metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        body.insert("meta".into(), Value::Object(meta));
    }
    if let Some(ttl) = args.ttl {
        body.insert("ttl".into(), json!(go_duration(ttl)));
    }
    if let Some(max) = args.explicit_max_ttl {
        body.insert("explicit_max_ttl".into(), json!(go_duration(max)));
    }
    if args.no_default_policy {
        body.insert("no_default_policy".into(), json!(true));
    }
    body.insert("display_name".into(), json!(args.display_name.as_deref().unwrap_or("")));
    body.insert("num_uses".into(), json!(args.use_limit));
    body.insert("renewable".into(), json!(args.renewable));
    let path = if args.orphan { "/v1/auth/token/create-orphan" } else { "/v1/auth/token/create" };
    (path, Value::Object(body))
}

/// The path and body (`None`: a `GET`) of a token lookup.
pub fn lookup_request(accessor: bool, token: Option<&str>) -> Result<(&'static str, Option<Value>), CliError> {
    let token = token.map(str::trim);
    Ok(match (accessor, token) {
        (true, None) => {
            return Err(CliError::local("Not enough arguments with -accessor (expected 1, got 0)"));
        }
        (true, Some(accessor)) => ("/v1/auth/token/lookup-accessor", Some(json!({ "accessor": accessor }))),
        (false, None) => ("/v1/auth/token/lookup-self", None),
        (false, Some(token)) => ("/v1/auth/token/lookup", Some(json!({ "token": token }))),
    })
}

/// The path and body of a revocation, after Vault's checks of the option combinations.
pub fn revoke_request(args: &RevokeArgs) -> Result<(&'static str, Value), CliError> {
    let orphan = match args.mode.as_deref() {
        None | Some("") => false,
        Some("orphan") => true,
        Some("path") => return Err(CliError::local("Invalid mode: path (Vigil does not support -mode=path)")),
        Some(other) => return Err(CliError::local(format!("Invalid mode: {other}"))),
    };
    let token = args.token_id.as_deref().map(str::trim);
    if args.revoke_self {
        if token.is_some() {
            return Err(CliError::local("Too many arguments with -self (expected 0, got 1)"));
        }
        if args.accessor {
            return Err(CliError::local("Cannot use -self with -accessor!"));
        }
        if orphan {
            return Err(CliError::local("Cannot use -self with -mode!"));
        }
        return Ok(("/v1/auth/token/revoke-self", json!({})));
    }
    let Some(token) = token else {
        return Err(CliError::local("Not enough arguments (expected 1 or -self, got 0)"));
    };
    Ok(match (args.accessor, orphan) {
        (true, true) => return Err(CliError::local("Cannot use -accessor with -mode=orphan!")),
        (true, false) => ("/v1/auth/token/revoke-accessor", json!({ "accessor": token })),
        (false, true) => ("/v1/auth/token/revoke-orphan", json!({ "token": token })),
        (false, false) => ("/v1/auth/token/revoke", json!({ "token": token })),
    })
}

/// The path and body of a renewal.
pub fn renew_request(increment: Option<u64>, token: Option<&str>) -> (&'static str, Value) {
    let mut body = Map::new();
    let path = match token.map(str::trim) {
        Some(token) => {
            body.insert("token".into(), json!(token));
            "/v1/auth/token/renew"
        }
        None => "/v1/auth/token/renew-self",
    };
    if let Some(increment) = increment {
        body.insert("increment".into(), json!(go_duration(increment)));
    }
    (path, Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{argv, Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<TokenCmd, clap::Error> {
        let mut full = vec!["vigil", "token"];
        full.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv::normalize(full))?;
        match cli.command {
            Command::Token { cmd } => Ok(cmd),
            other => panic!("not a token command: {other:?}"),
        }
    }

    fn create(args: &[&str]) -> CreateArgs {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        match parse(&full).unwrap() {
            TokenCmd::Create(args) => args,
            other => panic!("{other:?}"),
        }
    }

    fn revoke(args: &[&str]) -> Result<(&'static str, Value), CliError> {
        let mut full = vec!["revoke"];
        full.extend_from_slice(args);
        match parse(&full).unwrap() {
            TokenCmd::Revoke(args) => revoke_request(&args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_defaults() {
        let args = create(&[]);
        assert_eq!(
            args,
            CreateArgs {
                policies: vec![],
                ttl: None,
                explicit_max_ttl: None,
                use_limit: 0,
                renewable: true,
                display_name: None,
                metadata: vec![],
                orphan: false,
                no_default_policy: false,
            }
        );
        assert_eq!(
            create_request(&args),
            ("/v1/auth/token/create", json!({"display_name": "", "num_uses": 0, "renewable": true}))
        );
    }

    #[test]
    fn create_with_every_option() {
        let args = create(&[
            "-policy=app",
            "-policy",
            "ops,audit",
            "-ttl=1h",
            "-explicit-max-ttl",
            "48h",
            "-use-limit=3",
            "-renewable=false",
            "-display-name=ci",
            "-metadata=team=ops",
            "-metadata",
            "env=prod",
            "-orphan",
            "-no-default-policy",
        ]);
        assert_eq!(args.policies, ["app", "ops", "audit"]);
        assert_eq!((args.ttl, args.explicit_max_ttl, args.use_limit), (Some(3600), Some(172_800), 3));
        assert!(!args.renewable && args.orphan && args.no_default_policy);
        assert_eq!(args.metadata, [("team".to_string(), "ops".to_string()), ("env".to_string(), "prod".to_string())]);
        assert_eq!(
            create_request(&args),
            (
                "/v1/auth/token/create-orphan",
                json!({
                    "policies": ["app", "ops", "audit"],
                    "meta": {"team": "ops", "env": "prod"},
                    "ttl": "1h0m0s",
                    "explicit_max_ttl": "48h0m0s",
                    "no_default_policy": true,
                    "display_name": "ci",
                    "num_uses": 3,
                    "renewable": false,
                })
            )
        );
        // Vault's spellings: a bare -renewable, double dashes, a bare number of seconds.
        let args = create(&["-renewable", "--ttl", "90", "--policy=x"]);
        assert!(args.renewable);
        assert_eq!((args.ttl, args.policies.as_slice()), (Some(90), &["x".to_string()][..]));
    }

    #[test]
    fn create_rejects_bad_values() {
        for bad in [
            &["create", "-ttl=soon"][..],
            &["create", "-use-limit=-1"],
            &["create", "-renewable=maybe"],
            &["create", "-metadata=novalue"],
            &["create", "extra"],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn lookups() {
        let TokenCmd::Lookup { accessor, token_id } = parse(&["lookup"]).unwrap() else { panic!() };
        assert_eq!(lookup_request(accessor, token_id.as_deref()).unwrap(), ("/v1/auth/token/lookup-self", None));
        let TokenCmd::Lookup { accessor, token_id } = parse(&["lookup", "hvs.abc"]).unwrap() else { panic!() };
        assert_eq!(
            lookup_request(accessor, token_id.as_deref()).unwrap(),
            ("/v1/auth/token/lookup", Some(json!({"token": "hvs.abc"})))
        );
        let TokenCmd::Lookup { accessor, token_id } = parse(&["lookup", "-accessor", "acc1"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            lookup_request(accessor, token_id.as_deref()).unwrap(),
            ("/v1/auth/token/lookup-accessor", Some(json!({"accessor": "acc1"})))
        );
        let err = lookup_request(true, None).unwrap_err();
        assert_eq!((err.message.as_str(), err.code), ("Not enough arguments with -accessor (expected 1, got 0)", 1));
        assert!(parse(&["lookup", "a", "b"]).is_err());
    }

    #[test]
    fn revocations() {
        assert_eq!(revoke(&["t1"]).unwrap(), ("/v1/auth/token/revoke", json!({"token": "t1"})));
        assert_eq!(revoke(&["-mode=orphan", "t1"]).unwrap(), ("/v1/auth/token/revoke-orphan", json!({"token": "t1"})));
        assert_eq!(
            revoke(&["-accessor", "a1"]).unwrap(),
            ("/v1/auth/token/revoke-accessor", json!({"accessor": "a1"}))
        );
        assert_eq!(revoke(&["-self"]).unwrap(), ("/v1/auth/token/revoke-self", json!({})));
        let message = |args: &[&str]| revoke(args).unwrap_err().message;
        assert_eq!(message(&[]), "Not enough arguments (expected 1 or -self, got 0)");
        assert_eq!(message(&["-self", "t1"]), "Too many arguments with -self (expected 0, got 1)");
        assert_eq!(message(&["-self", "-accessor"]), "Cannot use -self with -accessor!");
        assert_eq!(message(&["-self", "-mode=orphan"]), "Cannot use -self with -mode!");
        assert_eq!(message(&["-accessor", "-mode=orphan", "a1"]), "Cannot use -accessor with -mode=orphan!");
        assert_eq!(message(&["-mode=tree", "t1"]), "Invalid mode: tree");
        assert!(message(&["-mode=path", "t1"]).starts_with("Invalid mode: path"));
        assert_eq!(revoke(&[]).unwrap_err().code, 1);
    }

    #[test]
    fn renewals() {
        let TokenCmd::Renew { increment, token_id } = parse(&["renew"]).unwrap() else { panic!() };
        assert_eq!(renew_request(increment, token_id.as_deref()), ("/v1/auth/token/renew-self", json!({})));
        let TokenCmd::Renew { increment, token_id } = parse(&["renew", "-increment=30m", "t1"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            renew_request(increment, token_id.as_deref()),
            ("/v1/auth/token/renew", json!({"token": "t1", "increment": "30m0s"}))
        );
        let TokenCmd::Renew { increment, .. } = parse(&["renew", "-i", "45"]).unwrap() else { panic!() };
        assert_eq!(increment, Some(45));
    }
}
