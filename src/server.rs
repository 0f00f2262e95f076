//! One Vigil node: wires config -> storage -> raft -> engines -> http together and runs until shutdown.
//!
//! STUB: being written.

use std::path::PathBuf;

/// Arguments of `vigil server`.
#[derive(Debug, Clone)]
pub struct ServerArgs {
    /// `-config <file>`: the node's HCL configuration (required unless `dev`).
    pub config: Option<PathBuf>,
    /// `--dev`: a ready single-node cluster with data in a temporary directory.
    pub dev: bool,
    /// `--dev-root-token-id`: the root token of a dev server (default `root`).
    pub dev_root_token_id: String,
    /// `--dev-listen-address`: the API address of a dev server (default `127.0.0.1:8200`); the cluster
    /// port is the next port up.
    pub dev_listen_address: String,
}

/// Why a node could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid: exit code 2.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// Anything else: exit code 1.
    #[error("{0}")]
    Startup(String),
}

impl ServerError {
    /// The process exit code for this error: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Config(_) => 2,
            ServerError::Startup(_) => 1,
        }
    }
}

/// Runs a node until SIGINT/SIGTERM.
pub async fn run(_args: ServerArgs) -> Result<(), ServerError> {
    Err(ServerError::Startup("not implemented".into()))
}
