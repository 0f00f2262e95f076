//! STUB: the kv-v2 engine (being written).

use serde::{Deserialize, Serialize};

use super::mounts::MountRef;
use super::{ApplyError, Output};
use crate::raft::state_machine::ApplyContext;
use crate::raft::StateTxn;
use crate::storage::StorageError;

/// A kv-v2 change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Kv2Command {}

/// Applies a kv-v2 command to the mount `mount`.
pub(crate) fn apply(
    _ctx: &ApplyContext<'_>,
    _mount: &MountRef,
    command: Kv2Command,
    _txn: &mut StateTxn<'_>,
) -> Result<Result<Output, ApplyError>, StorageError> {
    match command {}
}
