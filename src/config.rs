//! Node configuration, read from an HCL file shaped like Vault's server configuration.
//!
//! STUB: the parser is being written; only the types are fixed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One node's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `storage "raft" { ... }`: where and how this node keeps its Raft log and state.
    pub storage: RaftStorageConfig,
    /// `listener "tcp" { ... }`: the sockets this node listens on.
    pub listener: ListenerConfig,
    /// The URL other nodes and forwarded clients use to reach this node's API, e.g. `http://127.0.0.1:8200`.
    pub api_addr: String,
    /// The URL other nodes use to reach this node's cluster (Raft) port, e.g. `http://127.0.0.1:8201`.
    pub cluster_addr: String,
    /// When true this node, as a follower, is a plain standby that forwards reads too.
    pub disable_performance_standby: bool,
    /// Log filter (`trace`, `debug`, `info`, `warn`, `error`, or a tracing directive). Default `info`.
    pub log_level: String,
}

/// `storage "raft"` block.
#[derive(Debug, Clone, PartialEq)]
pub struct RaftStorageConfig {
    /// Directory holding this node's database.
    pub path: PathBuf,
    /// This node's Raft node id, a non-empty name such as `node1`.
    pub node_id: String,
    /// Leaders to join at start-up when this node is not yet part of a cluster.
    pub retry_join: Vec<RetryJoin>,
    /// Take a snapshot after this many log entries since the last one (Vault's `snapshot_threshold`).
    pub snapshot_threshold: u64,
    /// Keep this many log entries behind a snapshot before purging (Vault's `trailing_logs`).
    pub trailing_logs: u64,
}

/// `retry_join` block inside `storage "raft"`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryJoin {
    /// API address of a cluster member to join through, e.g. `http://127.0.0.1:8200`.
    pub leader_api_addr: String,
    /// File holding a token allowed to join nodes (read at each attempt); `VIGIL_TOKEN` is used when unset.
    pub leader_token_file: Option<PathBuf>,
}

/// `listener "tcp"` block.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// API socket address.
    pub address: SocketAddr,
    /// Cluster (Raft transport) socket address.
    pub cluster_address: SocketAddr,
}

/// Why a configuration file was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            field: "-".into(),
            message: e.to_string(),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses configuration text; `file` names it in errors.
    pub fn parse(_text: &str, file: &str) -> Result<Config, ConfigError> {
        Err(ConfigError { file: file.into(), line: 0, field: "-".into(), message: "not implemented".into() })
    }
}
