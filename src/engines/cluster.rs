//! Cluster initialization: the first command of every cluster.
//!
//! `PUT /v1/sys/init` on a brand-new node makes it a one-member Raft cluster, creates the cluster secret (kept
//! node-locally, handed to joining nodes) and replicates one [`super::Command::Initialize`] that records the
//! cluster's identity, the root token's hash and the default mounts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::mounts::MountEntry;
use super::tokens::{self, TokenEntry};
use super::{decode_stored, ApplyError, Command, Engines, Error, Output, Result};
use crate::raft::{codec, StateReader, StateTxn};
use crate::storage::StorageError;

const CLUSTER_KEY: &[u8] = b"sys/cluster";

/// The identity of an initialized cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Random cluster id (UUID).
    pub cluster_id: String,
    /// Human-readable name, `vigil-cluster-<first 8 hex digits of the id>`.
    pub cluster_name: String,
}

/// The cluster record, once the cluster is initialized.
pub fn record(state: &StateReader) -> Result<Option<ClusterRecord>> {
    state.get(CLUSTER_KEY)?.map(|v| decode_stored(&v)).transpose()
}

/// Mounts a new cluster starts with: `kv/` as kv-v1, and `secret/` as kv-v2 (as Vault's dev mode has).
pub fn default_mounts() -> Vec<MountEntry> {
    let version = |v: &str| BTreeMap::from([("version".to_string(), v.to_string())]);
    vec![
        MountEntry::new("kv/", "kv", "key/value secret storage", version("1")),
        MountEntry::new("secret/", "kv", "key/value secret storage", version("2")),
    ]
}

/// Initializes a brand-new cluster on this node and returns the root token id.
///
/// `root_token_id` fixes the root token (dev mode); otherwise a random one is generated.
pub async fn initialize(engines: &Engines, root_token_id: Option<String>) -> Result<String> {
    let node = engines.node();
    if node.is_initialized() {
        return Err(Error::BadRequest("Vigil is already initialized".into()));
    }
    if node.secret().get().is_some() {
        // It joined a cluster and is waiting for the leader's replication: initializing it would fork the cluster.
        return Err(Error::BadRequest(
            "this node has joined a cluster and is catching up; it cannot be initialized".into(),
        ));
    }
    node.initialize().await?;
    let secret = tokens::random_base62(43)?;
    node.set_secret(secret).await?;
    let root_token_id = match root_token_id {
        Some(id) => id,
        None => tokens::generate_id()?,
    };
    let cluster_id = uuid::Uuid::new_v4();
    let cluster = ClusterRecord {
        cluster_id: cluster_id.to_string(),
        cluster_name: format!("vigil-cluster-{}", &cluster_id.simple().to_string()[..8]),
    };
    let command =
        Command::Initialize { cluster, root_token: tokens::root_entry(&root_token_id)?, mounts: default_mounts() };
    engines.execute(&command).await?;
    Ok(root_token_id)
}

pub(crate) fn apply_initialize(
    txn: &mut StateTxn<'_>,
    cluster: &ClusterRecord,
    root_token: &TokenEntry,
    mounts: &[MountEntry],
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    if txn.get(CLUSTER_KEY)?.is_some() {
        return Ok(Err(ApplyError::AlreadyInitialized));
    }
    txn.put(CLUSTER_KEY, codec::encode(cluster)?);
    super::events::apply_initialize(txn, &cluster.cluster_id)?;
    tokens::put(txn, root_token)?;
    if let Err(e) = super::policy_store::apply_write(txn, "default", super::policy::DEFAULT_POLICY)? {
        return Ok(Err(e));
    }
    for mount in mounts {
        if let Err(e) = super::mounts::apply_mount(txn, mount)? {
            return Ok(Err(e));
        }
    }
    Ok(Ok(Output::Done))
}
