//! `vigil server`: runs one node.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::server::ServerArgs;

use super::output;

/// `vigil server`: run a Vigil node until SIGINT/SIGTERM.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).multiple(true).args(["config", "dev"])))]
pub struct ServerCmd {
    /// The node's HCL configuration file (required unless --dev).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run a ready single-node dev cluster with its data in a temporary directory.
    #[arg(long)]
    pub dev: bool,
    /// The root token of a dev server.
    #[arg(long, value_name = "ID", default_value = "root")]
    pub dev_root_token_id: String,
    /// The API address of a dev server (the cluster port is the next port up).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8200")]
    pub dev_listen_address: String,
}

impl ServerCmd {
    /// The arguments handed to [`crate::server::run`].
    pub fn server_args(&self) -> ServerArgs {
        ServerArgs {
            config: self.config.clone(),
            dev: self.dev,
            dev_root_token_id: self.dev_root_token_id.clone(),
            dev_listen_address: self.dev_listen_address.clone(),
        }
    }
}

/// Runs the node; on failure prints `Error: <e>` and exits with the error's code (2 for configuration errors).
pub async fn run(cmd: &ServerCmd) -> ExitCode {
    match crate::server::run(cmd.server_args()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::err(&format!("Error: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
