//! The engines layer: what Vigil's replicated commands mean, and how its state is read.
//!
//! Every change is a [`Command`]: built on the active node (which stamps ids and secrets-derived hashes into it),
//! replicated by Raft, and applied deterministically by [`Applier`] on every node. Reads go straight to the local
//! applied state through [`crate::raft::StateReader`], which is what lets performance standbys answer them.
//!
//! State keys (all in the state keyspace, each engine under its own prefix):
//!
//! | prefix | value |
//! |---|---|
//! | `sys/cluster` | [`cluster::ClusterRecord`] — present once the cluster is initialized |
//! | `sys/mount/<path>` | [`mounts::MountEntry`] |
//! | `kv/<mount uuid>/<key>` | kv-v1 secret, JSON object text |
//! | `kv2/<mount uuid>/…` | kv-v2: `config`, `meta/<key>` (versions, settings), `data/<key>/<version>` (JSON) |
//! | `policy/<name>` | ACL policy HCL text |
//! | `token/<sha256 of token id>` | [`tokens::TokenEntry`] — tokens are stored only as hashes |
//! | `token-accessor/<accessor>`, `token-child/<parent>/<child>` | token indexes |
//! | `sys/events` | [`events::EventLogMeta`] — last sequence, trimmed point |
//! | `event/<sequence, 20 digits>` | [`events::Event`] — the event log |

pub mod cluster;
pub mod duration;
pub mod events;
pub mod kv;
pub mod kv2;
pub mod mounts;
pub mod policy;
pub mod policy_store;
pub mod tokens;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::raft::state_machine::ApplyContext;
use crate::raft::{codec, CommandApplier, ProposeError, RaftNode, StateReader, StateTxn};
use crate::storage::{StorageError, WriteBatch};

pub use mounts::MountEntry;

/// A replicated change. Everything apply needs is inside: no clock, randomness or local state beyond the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Initializes a brand-new cluster.
    Initialize {
        /// Cluster identity.
        cluster: cluster::ClusterRecord,
        /// The root token (hashed).
        root_token: tokens::TokenEntry,
        /// Mounts every new cluster starts with.
        mounts: Vec<MountEntry>,
    },
    /// Mounts a secrets engine.
    Mount(MountEntry),
    /// Replaces a mount's tunable settings (description, options); its identity must be unchanged.
    MountTune(MountEntry),
    /// Unmounts the engine at `path` and deletes its data.
    Unmount {
        /// Mount path with trailing slash.
        path: String,
    },
    /// Writes a kv-v1 secret.
    KvPut {
        /// Identity of the mount the request resolved to; the write fails if it was replaced meanwhile.
        mount: mounts::MountRef,
        /// Key below the mount.
        key: String,
        /// The secret, as JSON object text.
        #[serde(with = "crate::raft::codec::bytes")]
        value: Vec<u8>,
    },
    /// Deletes a kv-v1 secret.
    KvDelete {
        /// Identity of the mount.
        mount: mounts::MountRef,
        /// Key below the mount.
        key: String,
    },
    /// A token change.
    Token(tokens::TokenCommand),
    /// Stores (creates or replaces) an ACL policy; its text was validated on the active node.
    PolicyWrite {
        /// Normalized policy name.
        name: String,
        /// HCL text.
        text: String,
    },
    /// Deletes an ACL policy.
    PolicyDelete {
        /// Normalized policy name.
        name: String,
    },
    /// A kv-v2 change on the mount `mount`.
    KvV2 {
        /// Identity of the mount.
        mount: mounts::MountRef,
        /// What to do.
        command: kv2::Kv2Command,
    },
    /// Removes the oldest events, up to and including sequence `through` (proposed by the retention task).
    EventTrim {
        /// The last sequence to remove.
        through: u64,
    },
}

impl Command {
    /// Whether applying it can change what a token may do (so live subscriptions must re-check their token).
    fn changes_authorization(&self) -> bool {
        matches!(
            self,
            Command::Initialize { .. } | Command::Token(_) | Command::PolicyWrite { .. } | Command::PolicyDelete { .. }
        )
    }
}

/// A deterministic failure of a command, the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// The cluster was already initialized.
    #[error("Vigil is already initialized")]
    AlreadyInitialized,
    /// A mount exists at or overlapping the path.
    #[error("{0}")]
    MountConflict(String),
    /// The request's mount no longer exists (it was removed or replaced concurrently).
    #[error("no handler for route \"{0}\". route entry not found.")]
    NoRoute(String),
    /// The command could not be decoded: written by an incompatible version. Fails identically on every node.
    #[error("undecodable command: {0}")]
    Undecodable(String),
    /// The command is not valid for the current state, e.g. a check-and-set mismatch (400 with this message).
    #[error("{0}")]
    Invalid(String),
    /// The command targets something that does not exist (404).
    #[error("not found")]
    NotFound,
}

/// Errors of the engines layer. Mapped to HTTP statuses in one place, `crate::http::error`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or not allowed in this state (400).
    #[error("{0}")]
    BadRequest(String),
    /// The path exists but the operation is not supported there (405).
    #[error("{0}")]
    UnsupportedOperation(String),
    /// Nothing stored at the path (404 with an empty error list, as Vault answers).
    #[error("not found")]
    NotFound,
    /// No mount handles the path (404).
    #[error("no handler for route \"{0}\". route entry not found.")]
    NoRoute(String),
    /// The token is missing, unknown or lacks permission (403).
    #[error("permission denied")]
    PermissionDenied,
    /// A deterministic apply failure.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// This node is not the active node and cannot perform the write (the HTTP layer forwards it).
    #[error("this node is not the active node")]
    NotLeader,
    /// The cluster cannot serve the request right now (503).
    #[error("{0}")]
    Unavailable(String),
    /// A local failure (500).
    #[error("{0}")]
    Internal(String),
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<crate::raft::RaftLayerError> for Error {
    fn from(e: crate::raft::RaftLayerError) -> Self {
        use crate::raft::RaftLayerError as R;
        match e {
            R::NotLeader => Error::NotLeader,
            R::Invalid(msg) => Error::BadRequest(msg),
            R::NotInitialized(msg) | R::Timeout(msg) => Error::Unavailable(msg),
            R::Storage(e) => Error::Internal(e.to_string()),
            R::Raft(msg) => Error::Internal(msg),
        }
    }
}

/// Result alias for the engines layer.
pub type Result<T> = std::result::Result<T, Error>;

/// What a command produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Output {
    /// The change was made.
    Done,
    /// The change was made; the answer's `data` is this JSON text.
    Json(#[serde(with = "crate::raft::codec::bytes")] Vec<u8>),
}

/// The outcome of an executed command: its output and the log index that carried it.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The command's output.
    pub output: Output,
    /// The Raft log index of the entry that carried the command.
    pub log_index: u64,
}

/// Applies [`Command`]s to the state: the engines' side of the Raft contract. Tells the node's event bus what
/// was applied.
pub struct Applier {
    events: Arc<events::bus::EventBus>,
}

impl Applier {
    /// An applier that publishes to `events`.
    pub fn new(events: Arc<events::bus::EventBus>) -> Self {
        Applier { events }
    }
}

impl CommandApplier for Applier {
    fn apply(
        &self,
        ctx: &ApplyContext<'_>,
        command: &[u8],
        txn: &mut StateTxn<'_>,
    ) -> std::result::Result<Vec<u8>, StorageError> {
        let result: std::result::Result<Output, ApplyError> = match codec::decode::<Command>(command) {
            Ok(command) => {
                if command.changes_authorization() {
                    self.events.note_auth_change();
                }
                let result = apply_command(ctx, command, txn)?;
                if result.is_err() {
                    txn.rollback_command();
                }
                result
            }
            // Commands are encoded by this same code on the leader; an undecodable one is a version mismatch,
            // and failing the same way everywhere keeps replicas identical.
            Err(e) => {
                tracing::error!(error = %e, index = ctx.log_id.index, "undecodable command");
                Err(ApplyError::Undecodable(e.to_string()))
            }
        };
        codec::encode(&result)
    }

    fn after_write(&self, written: Option<&WriteBatch>) -> std::result::Result<(), StorageError> {
        self.events.on_applied(written)
    }
}

fn apply_command(
    ctx: &ApplyContext<'_>,
    command: Command,
    txn: &mut StateTxn<'_>,
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    match command {
        Command::Initialize { cluster, root_token, mounts } => {
            cluster::apply_initialize(txn, &cluster, &root_token, &mounts)
        }
        Command::EventTrim { through } => events::apply_trim(txn, through),
        Command::Mount(entry) => mounts::apply_mount(txn, &entry),
        Command::MountTune(entry) => mounts::apply_tune(txn, &entry),
        Command::Unmount { path } => mounts::apply_unmount(txn, &path),
        Command::KvPut { mount, key, value } => kv::apply_put(ctx, txn, &mount, &key, value),
        Command::KvDelete { mount, key } => kv::apply_delete(ctx, txn, &mount, &key),
        Command::KvV2 { mount, command } => kv2::apply(ctx, &mount, command, txn),
        Command::Token(command) => tokens::apply(txn, command),
        Command::PolicyWrite { name, text } => policy_store::apply_write(txn, &name, &text),
        Command::PolicyDelete { name } => policy_store::apply_delete(txn, &name),
    }
}

/// The engines of one node: executes commands through Raft and reads the applied state.
#[derive(Clone)]
pub struct Engines {
    node: Arc<RaftNode>,
    events: Arc<events::bus::EventBus>,
}

impl Engines {
    /// Engines over `node`, whose applier publishes to `events`.
    pub fn new(node: Arc<RaftNode>, events: Arc<events::bus::EventBus>) -> Self {
        Engines { node, events }
    }

    /// This node's event bus.
    pub fn events(&self) -> &Arc<events::bus::EventBus> {
        &self.events
    }

    /// The Raft node underneath.
    pub fn node(&self) -> &Arc<RaftNode> {
        &self.node
    }

    /// Read access to the applied state.
    pub fn state(&self) -> StateReader {
        self.node.state()
    }

    /// Proposes `command` and waits for its output. Only the active node can do this.
    pub async fn execute(&self, command: &Command) -> Result<Executed> {
        let bytes = codec::encode(command)?;
        let applied = self.node.propose(bytes).await.map_err(|e| match e {
            ProposeError::NotLeader(_) => Error::NotLeader,
            ProposeError::ShuttingDown => Error::Unavailable("the node is shutting down".into()),
            ProposeError::Unknown(msg) => Error::Unavailable(format!(
                "the write's outcome is unknown, it may or may not have been applied: {msg}"
            )),
        })?;
        let result: std::result::Result<Output, ApplyError> = codec::decode(&applied.output)?;
        Ok(Executed { output: result?, log_index: applied.log_index })
    }
}

/// Decodes a stored value, treating corruption as an internal error.
pub(crate) fn decode_stored<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    codec::decode(bytes).map_err(|e| Error::Internal(format!("corrupt stored value: {e}")))
}

/// Parses `bytes` as a JSON object; anything else is an error naming what was found.
pub(crate) fn decode_json_object(
    bytes: &[u8],
) -> std::result::Result<serde_json::Map<String, serde_json::Value>, String> {
    use serde_json::Value;
    match serde_json::from_slice::<Value>(bytes).map_err(|e| e.to_string())? {
        Value::Object(map) => Ok(map),
        Value::Array(_) => Err("expected a JSON object, got an array".into()),
        Value::String(_) => Err("expected a JSON object, got a string".into()),
        Value::Number(_) => Err("expected a JSON object, got a number".into()),
        Value::Bool(_) => Err("expected a JSON object, got a boolean".into()),
        Value::Null => Err("expected a JSON object, got null".into()),
    }
}
