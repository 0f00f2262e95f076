//! The replicated state machine: openraft's `RaftStateMachine` over [`Keyspace::State`].
//!
//! Commands are applied by a [`CommandApplier`] (the engines layer) into a [`StateTxn`]; the whole `apply` call —
//! every command's writes, the last applied log id and the membership — is written as one atomic storage batch.
//! Nothing here is flushed: the log is durable, and after a crash the entries after the stored last-applied id are
//! applied again.
//!
//! Snapshots hold every engine key of the state keyspace as of their last log id, without pausing applies while
//! the state is read: see [`Capture`]. The kept snapshot's data is a file, its record lives beside the state, and
//! it only moves forward; see [`SnapshotStore`] for why.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use serde::{Deserialize, Serialize};

use super::{
    codec, snapshot_data, Entry, LogId, NodeId, NodeInfo, RaftResponse, RaftStorageError, StoredMembership, TypeConfig,
};
use crate::storage::{
    io_error, prefix_successor, write_new_file_durably, KeyValue, Keyspace, Storage, StorageError, WriteBatch,
};

/// Keys the Raft layer owns inside the state keyspace; engines must not use this prefix.
const RAFT_PREFIX: &[u8] = b"raft/";
const APPLIED_KEY: &[u8] = b"raft/applied";
const MEMBERSHIP_KEY: &[u8] = b"raft/membership";

/// Where a command sits, and what the leader stamped on its entry.
#[derive(Debug, Clone)]
pub struct ApplyContext<'a> {
    /// The log id of the entry holding the command.
    pub log_id: LogId,
    /// The position of the command within its entry's batch.
    pub position: usize,
    /// The accepting leader's wall clock, nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    /// The accepting leader's node name.
    pub proposer: &'a str,
}

/// Gives commands their meaning. Implemented by the engines layer.
pub trait CommandApplier: Send + Sync + 'static {
    /// Applies one command and returns its encoded output.
    ///
    /// Must be deterministic (see the module docs of [`crate::raft`]): an invalid command yields an error *output*
    /// (call [`StateTxn::rollback_command`] so none of its writes remain); only a storage failure is returned as
    /// `Err`, and stops the node.
    fn apply(&self, ctx: &ApplyContext<'_>, command: &[u8], txn: &mut StateTxn<'_>) -> Result<Vec<u8>, StorageError>;

    /// Called after applied entries were written to storage as `written`, or an installed snapshot replaced the
    /// whole state (`None`), on the state machine's task, so the engines can publish what changed (the event
    /// bus) without reading it back. An error stops the node like any storage failure.
    fn after_write(&self, written: Option<&WriteBatch>) -> Result<(), StorageError> {
        let _ = written;
        Ok(())
    }
}

/// A key written by the current command and its previous pending entry (`None`: it had none).
type UndoRecord = (Vec<u8>, Option<Option<Vec<u8>>>);

/// Pending writes of one `apply` call over the state keyspace, readable before they are committed.
///
/// Commands are atomic within it: [`StateTxn::rollback_command`] undoes every write since the current command
/// began, so a command that fails halfway leaves nothing behind.
pub struct StateTxn<'a> {
    storage: &'a dyn Storage,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// For each write of the current command: the key and its previous pending entry (`None` = none).
    undo: Vec<UndoRecord>,
}

impl<'a> StateTxn<'a> {
    fn new(storage: &'a dyn Storage) -> Self {
        StateTxn { storage, pending: BTreeMap::new(), undo: Vec::new() }
    }

    /// Starts a new command: its writes can be rolled back until the next call.
    fn begin_command(&mut self) {
        self.undo.clear();
    }

    /// Undoes every write of the current command.
    pub fn rollback_command(&mut self) {
        while let Some((key, previous)) = self.undo.pop() {
            match previous {
                Some(value) => self.pending.insert(key, value),
                None => self.pending.remove(&key),
            };
        }
    }

    fn record(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let previous = self.pending.insert(key.clone(), value);
        self.undo.push((key, previous));
    }

    /// Reads a key, seeing this transaction's own writes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.pending.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.storage.get(Keyspace::State, key),
        }
    }

    /// Reads a key decoded by `decode`, seeing this transaction's own writes; applied values come through the
    /// storage's read cache (see [`super::StateReader::get_decoded`]).
    pub fn get_decoded<T, E>(&self, key: &[u8], decode: impl FnOnce(&[u8]) -> Result<T, E>) -> Result<Option<T>, E>
    where
        T: Clone + Send + Sync + 'static,
        E: From<StorageError>,
    {
        match self.pending.get(key) {
            Some(value) => value.as_deref().map(decode).transpose(),
            None => super::get_decoded(self.storage, key, decode),
        }
    }

    /// Sets a key.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let key = key.into();
        debug_assert!(!key.starts_with(RAFT_PREFIX), "engines may not write raft/ keys");
        self.record(key, Some(value.into()));
    }

    /// Removes a key.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.record(key.into(), None);
    }

    /// Lists the entries under `prefix`, in key order, seeing this transaction's own writes.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for item in self.storage.scan_prefix(Keyspace::State, prefix) {
            let (k, v) = item?;
            merged.insert(k, v);
        }
        let end = prefix_successor(prefix);
        let pending = self.pending.range(prefix.to_vec()..).take_while(|(k, _)| match &end {
            Some(end) => k.as_slice() < end.as_slice(),
            None => true,
        });
        for (k, v) in pending {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (k, v) in self.pending {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        batch
    }
}

/// A snapshot: its meta and data.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeInfo>,
    data: Vec<u8>,
}

/// The record of the kept snapshot, in the state keyspace; its data is the file `file` of the snapshot directory.
#[derive(Serialize, Deserialize)]
struct KeptSnapshot {
    meta: SnapshotMeta<NodeId, NodeInfo>,
    file: String,
    bytes: u64,
}

/// Where the current snapshot is kept: its data in a file of the snapshot directory, and its record — meta, file
/// name, size — in the state keyspace under the Raft prefix (so snapshots never contain snapshots), next to its last
/// log id.
///
/// Keeping the record beside the state makes installing a snapshot one atomic batch — the new state, the applied
/// log id and the snapshot together — written once the snapshot's file is on disk. openraft's recovery needs that:
/// at start-up it takes the applied log id as a purge point when the log ends before it, and refuses to start if
/// its snapshot is older than its purge point. A file no record names (left by a crash between writing it and
/// the batch, or before the replaced snapshot's file was deleted) is deleted at open.
///
/// The data itself is not in the state keyspace, where it once was: sled rewrites a whole tree node, large values
/// included, as it consolidates the updates to it, and the node holding the snapshot also held the applied log id,
/// which every apply writes — at 500,000 keys followers spent their time rewriting a 140 MB value and writes
/// slowed to a tenth. (A snapshot kept there by an earlier version is still read until the next one is kept.)
///
/// The state machine (installing a snapshot from the leader) and the snapshot builder (building one locally, in
/// its own task) both keep snapshots, so they share one lock, and the kept snapshot only moves forward: a local
/// build that started before an install and finishes after it is not written over the installed one.
#[derive(Clone)]
struct SnapshotStore {
    storage: Arc<dyn Storage>,
    dir: Arc<PathBuf>,
    lock: Arc<Mutex<()>>,
    /// Size of the kept snapshot's data (0 when there is none), for the snapshot schedule.
    kept_bytes: Arc<AtomicU64>,
}

const KEPT_SNAPSHOT_KEY: &[u8] = b"raft/snapshot-file";
pub(super) const SNAPSHOT_LAST_LOG_ID_KEY: &[u8] = b"raft/snapshot-last-log-id";
/// Where earlier versions kept the whole snapshot in the state keyspace.
const INLINE_SNAPSHOT_KEY: &[u8] = b"raft/snapshot";
/// Where snapshots were kept before they moved beside the state.
const LEGACY_SNAPSHOT_KEY: &[u8] = b"current";
const SNAPSHOT_FILE_SUFFIX: &str = ".snap";

impl SnapshotStore {
    /// Opens the snapshots recorded in `storage` with their files in `dir` (created if missing), deleting files
    /// that no record names.
    fn open(storage: Arc<dyn Storage>, dir: &Path) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let kept = kept_record(storage.as_ref())?;
        let listing = fs::read_dir(dir).map_err(|e| io_error("cannot list", dir, e))?;
        for item in listing {
            let path = item.map_err(|e| io_error("cannot list", dir, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.ends_with(SNAPSHOT_FILE_SUFFIX) && kept.as_ref().is_none_or(|k| k.file != name) {
                fs::remove_file(&path).map_err(|e| io_error("cannot delete", &path, e))?;
                tracing::info!(file = %path.display(), "deleted a snapshot file no longer kept");
            }
        }
        let kept_bytes = Arc::new(AtomicU64::new(kept.map_or(0, |k| k.bytes)));
        Ok(SnapshotStore { storage, dir: Arc::new(dir.to_path_buf()), lock: Arc::default(), kept_bytes })
    }

    /// Keeps a locally built snapshot as the current one, durably, unless a newer one is kept already; returns
    /// whether it was kept.
    fn keep_built(&self, snapshot: &StoredSnapshot) -> Result<bool, StorageError> {
        let file = self.write_file(&snapshot.data)?;
        let guard = self.lock();
        if kept_snapshot_last_log_id(self.storage.as_ref())? > snapshot.meta.last_log_id {
            drop(guard);
            self.delete_file(&file);
            return Ok(false);
        }
        self.keep(guard, &snapshot.meta, file, snapshot.data.len(), WriteBatch::new())?;
        Ok(true)
    }

    /// Keeps a snapshot from the leader: writes `data`, then `batch` (which replaces the state with the snapshot's)
    /// together with the snapshot's record. openraft installs only snapshots newer than anything kept.
    fn keep_installed(
        &self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        data: &[u8],
        batch: WriteBatch,
    ) -> Result<(), StorageError> {
        let file = self.write_file(data)?;
        self.keep(self.lock(), meta, file, data.len(), batch)
    }

    /// Writes `batch` and the record of the snapshot `meta` (data in `file`, `bytes` long) in one durable write,
    /// then deletes the replaced snapshot's file.
    fn keep(
        &self,
        _guard: std::sync::MutexGuard<'_, ()>,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        file: String,
        bytes: usize,
        mut batch: WriteBatch,
    ) -> Result<(), StorageError> {
        let replaced = kept_record(self.storage.as_ref())?;
        let record = KeptSnapshot { meta: meta.clone(), file, bytes: bytes as u64 };
        // A batch applies its operations in order, so these win over any earlier deletes of the same keys.
        batch.put(KEPT_SNAPSHOT_KEY, codec::encode(&record)?);
        batch.put(SNAPSHOT_LAST_LOG_ID_KEY, codec::encode(&meta.last_log_id)?);
        batch.delete(INLINE_SNAPSHOT_KEY);
        self.storage.write(Keyspace::State, &batch)?;
        self.storage.flush()?;
        self.kept_bytes.store(record.bytes, Ordering::SeqCst);
        if let Some(replaced) = replaced {
            self.delete_file(&replaced.file);
        }
        Ok(())
    }

    /// Writes snapshot data to a new file, durably; returns the file's name.
    fn write_file(&self, data: &[u8]) -> Result<String, StorageError> {
        let name = format!("{}{SNAPSHOT_FILE_SUFFIX}", uuid::Uuid::new_v4().simple());
        write_new_file_durably(&self.dir.join(&name), data)?;
        Ok(name)
    }

    /// Deletes a snapshot file that is no longer kept; one left behind is deleted at the next open.
    fn delete_file(&self, name: &str) {
        let path = self.dir.join(name);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot delete a snapshot file no longer kept");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The snapshot kept now, if any.
    fn current(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        // Under the lock: the file of a record read here is not deleted before it is read.
        let _guard = self.lock();
        if let Some(kept) = kept_record(self.storage.as_ref())? {
            let path = self.dir.join(&kept.file);
            let data = fs::read(&path).map_err(|e| io_error("cannot read the kept snapshot", &path, e))?;
            return Ok(Some(StoredSnapshot { meta: kept.meta, data }));
        }
        let bytes = match self.storage.get(Keyspace::State, INLINE_SNAPSHOT_KEY)? {
            Some(bytes) => Some(bytes),
            None => self.storage.get(Keyspace::Snapshot, LEGACY_SNAPSHOT_KEY)?,
        };
        bytes.map(|b| codec::decode(&b)).transpose()
    }
}

/// The record of the kept snapshot, if one is kept in a file.
fn kept_record(storage: &dyn Storage) -> Result<Option<KeptSnapshot>, StorageError> {
    storage.get(Keyspace::State, KEPT_SNAPSHOT_KEY)?.map(|bytes| codec::decode(&bytes)).transpose()
}

/// The last log id covered by the snapshot kept (durably) in `storage`, if any.
///
/// While a snapshot from the leader is being received and installed, a purge beyond it waits until the install is
/// on disk: openraft issues the purge that follows an install at the same time as the install itself, and a crash
/// after the purge but before the installed snapshot is on disk would leave a log purged beyond its snapshot, which
/// openraft refuses to start from. See [`StateMachine::installs_in_flight`].
pub(super) fn kept_snapshot_last_log_id(storage: &dyn Storage) -> Result<Option<LogId>, StorageError> {
    if let Some(bytes) = storage.get(Keyspace::State, SNAPSHOT_LAST_LOG_ID_KEY)? {
        return codec::decode(&bytes);
    }
    match storage.get(Keyspace::Snapshot, LEGACY_SNAPSHOT_KEY)? {
        Some(bytes) => Ok(codec::decode::<StoredSnapshot>(&bytes)?.meta.last_log_id),
        None => Ok(None),
    }
}

/// The state machine of one node.
pub struct StateMachine {
    storage: Arc<dyn Storage>,
    snapshots: SnapshotStore,
    /// Snapshot captures in progress: each must see the old value of every key before it is written.
    captures: Vec<Arc<Capture>>,
    /// Set from the first chunk of a snapshot from the leader until it is installed.
    receiving: Arc<AtomicBool>,
    applier: Arc<dyn CommandApplier>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

fn sm_read_err(e: StorageError) -> RaftStorageError {
    StorageIOError::<NodeId>::read_state_machine(&e).into()
}

fn sm_write_err(e: StorageError) -> RaftStorageError {
    StorageIOError::<NodeId>::write_state_machine(&e).into()
}

impl StateMachine {
    /// Opens the state machine stored in `storage`, with snapshot files in `snapshot_dir`.
    pub fn open(
        storage: Arc<dyn Storage>,
        snapshot_dir: &Path,
        applier: Arc<dyn CommandApplier>,
    ) -> Result<Self, StorageError> {
        let last_applied = match storage.get(Keyspace::State, APPLIED_KEY)? {
            Some(bytes) => codec::decode(&bytes)?,
            None => None,
        };
        let membership = match storage.get(Keyspace::State, MEMBERSHIP_KEY)? {
            Some(bytes) => codec::decode(&bytes)?,
            None => StoredMembership::default(),
        };
        let snapshots = SnapshotStore::open(storage.clone(), snapshot_dir)?;
        let receiving = Arc::default();
        Ok(StateMachine { storage, snapshots, captures: Vec::new(), receiving, applier, last_applied, membership })
    }

    /// A flag that is set while a snapshot from the leader is being received and installed, for the log store
    /// ([`super::log_store::LogStore::holding_purges_while`]).
    pub fn installs_in_flight(&self) -> Arc<AtomicBool> {
        self.receiving.clone()
    }

    /// The size in bytes of the snapshot kept now (0 if none), kept current as snapshots are built and installed.
    pub fn kept_snapshot_bytes(&self) -> Arc<AtomicU64> {
        self.snapshots.kept_bytes.clone()
    }

    fn apply_entries(&mut self, entries: impl Iterator<Item = Entry>) -> Result<Vec<RaftResponse>, StorageError> {
        let mut txn = StateTxn::new(self.storage.as_ref());
        let mut responses = Vec::new();
        let mut last_applied = self.last_applied;
        let mut membership = self.membership.clone();
        for entry in entries {
            last_applied = Some(entry.log_id);
            let mut response = RaftResponse::default();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(request) => {
                    for (position, command) in request.commands.iter().enumerate() {
                        let ctx = ApplyContext {
                            log_id: entry.log_id,
                            position,
                            time_unix_nanos: request.time_unix_nanos,
                            proposer: &request.proposer,
                        };
                        txn.begin_command();
                        response.outputs.push(self.applier.apply(&ctx, command, &mut txn)?);
                    }
                }
                EntryPayload::Membership(m) => membership = StoredMembership::new(Some(entry.log_id), m),
            }
            responses.push(response);
        }
        let mut batch = txn.into_batch();
        batch.put(APPLIED_KEY, codec::encode(&last_applied)?);
        batch.put(MEMBERSHIP_KEY, codec::encode(&membership)?);
        self.captures.retain(|capture| capture.is_open());
        for capture in &self.captures {
            capture.record(self.storage.as_ref(), &batch)?;
        }
        self.storage.write(Keyspace::State, &batch)?;
        self.last_applied = last_applied;
        self.membership = membership;
        self.applier.after_write(Some(&batch))?;
        Ok(responses)
    }

    /// Replaces the whole state with a snapshot's and keeps the snapshot, in one atomic, flushed batch.
    fn install(&mut self, meta: &SnapshotMeta<NodeId, NodeInfo>, data: Vec<u8>) -> Result<(), StorageError> {
        let entries = snapshot_data::decode(&data)?;
        let mut batch = WriteBatch::new();
        for item in self.storage.scan_prefix(Keyspace::State, b"") {
            batch.delete(item?.0);
        }
        // A batch applies its operations in order, so the inserts win over the deletes of the same keys.
        for (k, v) in entries {
            batch.put(k, v);
        }
        batch.put(APPLIED_KEY, codec::encode(&meta.last_log_id)?);
        batch.put(MEMBERSHIP_KEY, codec::encode(&meta.last_membership)?);
        self.snapshots.keep_installed(meta, &data, batch)?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.applier.after_write(None)?;
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<RaftResponse>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        self.apply_entries(entries.into_iter()).map_err(sm_write_err)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called on the state-machine worker between applies: the capture starts exactly at the last applied id.
        let capture = Arc::new(Capture::begin());
        self.captures.push(capture.clone());
        SnapshotBuilder {
            storage: self.storage.clone(),
            capture,
            snapshots: self.snapshots.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        self.receiving.store(true, Ordering::SeqCst);
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        tracing::info!(snapshot = %meta.snapshot_id, "installing snapshot");
        let storage_err = |e: StorageError| StorageIOError::<NodeId>::write_snapshot(Some(meta.signature()), &e);
        let data = snapshot.into_inner();
        // Rare and bounded by the snapshot size: done inline on the state-machine worker, which must wait anyway.
        let installed = self.install(meta, data).map_err(|e| storage_err(e).into());
        self.receiving.store(false, Ordering::SeqCst);
        installed
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let current = self.snapshots.current().map_err(sm_read_err)?;
        Ok(current.map(|stored| Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}

/// A copy of every engine key as of one applied log id, read while applies go on.
///
/// Reading the whole state takes long (~100 ms for 60,000 keys here), and sled has no point-in-time reads, so
/// instead of pausing applies for it the state machine records, before it writes a batch, the value each key
/// had when the capture began (the first time a key is written during the capture). The scan, run in the
/// builder's own task, may see any mix of old and new values; replacing every recorded key with its recorded
/// value gives back exactly the state at the start. Recording stops when the scan is done.
struct Capture {
    /// `None` once the capture is finished.
    before: Mutex<Option<ValuesBefore>>,
}

/// The pre-capture value of each key written since a capture began (`None` value: it did not exist).
type ValuesBefore = HashMap<Vec<u8>, Option<Vec<u8>>>;

impl Capture {
    fn begin() -> Self {
        Capture { before: Mutex::new(Some(HashMap::new())) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ValuesBefore>> {
        self.before.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_open(&self) -> bool {
        self.lock().is_some()
    }

    /// Records the current value of every engine key `batch` is about to write, unless recorded already.
    fn record(&self, storage: &dyn Storage, batch: &WriteBatch) -> Result<(), StorageError> {
        let mut before = self.lock();
        let Some(before) = before.as_mut() else {
            return Ok(());
        };
        for (key, _) in batch.ops() {
            if !key.starts_with(RAFT_PREFIX) && !before.contains_key(key) {
                before.insert(key.clone(), storage.get(Keyspace::State, key)?);
            }
        }
        Ok(())
    }

    /// Reads the state and returns it as of the capture's start, sorted by key; ends the recording.
    fn finish(&self, storage: &dyn Storage) -> Result<Vec<KeyValue>, StorageError> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        // Every key but the Raft layer's own (which include the previous snapshot: never read it back for this).
        let before = storage.range(Keyspace::State, (Unbounded, Excluded(RAFT_PREFIX.to_vec())));
        let after = match prefix_successor(RAFT_PREFIX) {
            Some(end) => storage.range(Keyspace::State, (Included(end), Unbounded)),
            None => Box::new(std::iter::empty()),
        };
        let mut state = before.chain(after).collect::<Result<BTreeMap<_, _>, _>>()?;
        let changed = self.lock().take().unwrap_or_default();
        let changed_count = changed.len();
        for (key, value) in changed {
            match value {
                Some(value) => state.insert(key, value),
                None => state.remove(&key),
            };
        }
        tracing::debug!(keys = state.len(), changed_during_scan = changed_count, "read the state for a snapshot");
        Ok(state.into_iter().collect())
    }
}

/// Builds a snapshot of the state as of [`StateMachine::get_snapshot_builder`]'s call.
pub struct SnapshotBuilder {
    storage: Arc<dyn Storage>,
    capture: Arc<Capture>,
    snapshots: SnapshotStore,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl Drop for SnapshotBuilder {
    fn drop(&mut self) {
        // A builder dropped unused (or failed) must not keep the state machine recording.
        self.capture.lock().take();
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let started = std::time::Instant::now();
        let (storage, capture) = (self.storage.clone(), self.capture.clone());
        let entries = tokio::task::spawn_blocking(move || capture.finish(storage.as_ref()))
            .await
            .map_err(|e| sm_read_err(StorageError(e.to_string())))?
            .map_err(sm_read_err)?;
        let keys = entries.len();
        let data = snapshot_data::encode(entries).map_err(sm_read_err)?;
        let snapshot_id = match self.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, uuid::Uuid::new_v4().simple()),
            None => format!("empty-{}", uuid::Uuid::new_v4().simple()),
        };
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let snapshots = self.snapshots.clone();
        let (kept, stored) =
            tokio::task::spawn_blocking(move || snapshots.keep_built(&stored).map(|kept| (kept, stored)))
                .await
                .map_err(|e| sm_write_err(StorageError(e.to_string())))?
                .map_err(sm_write_err)?;
        let ms = started.elapsed().as_millis() as u64;
        if kept {
            tracing::info!(snapshot = %meta.snapshot_id, keys, bytes = stored.data.len(), ms, "built snapshot");
        } else {
            // openraft keeps the newer snapshot it already has and ignores this one.
            tracing::info!(snapshot = %meta.snapshot_id, "built snapshot superseded by a newer installed one; not kept");
        }
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStorage;

    fn snapshot_at(index: u64) -> StoredSnapshot {
        let last_log_id = Some(LogId::new(openraft::CommittedLeaderId::new(1, 7), index));
        let meta =
            SnapshotMeta { last_log_id, last_membership: StoredMembership::default(), snapshot_id: index.to_string() };
        // Sizes differ from snapshot to snapshot.
        let data = format!("state through {index};").repeat(1 + (index % 10) as usize).into_bytes();
        StoredSnapshot { meta, data }
    }

    #[test]
    fn the_kept_snapshot_only_moves_forward_and_leaves_one_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(SledStorage::open(dir.path()).expect("open"));
        let files_dir = dir.path().join("snapshots");
        let files = || {
            let mut names: Vec<String> = fs::read_dir(&files_dir)
                .expect("ls")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let snapshots = SnapshotStore::open(storage.clone(), &files_dir).expect("open");
        assert!(snapshots.current().expect("current").is_none());
        assert_eq!(snapshots.kept_bytes.load(Ordering::SeqCst), 0);
        // Installed from the leader at 759; then a local build captured at 719 finishes.
        let installed = snapshot_at(759);
        snapshots.keep_installed(&installed.meta, &installed.data, WriteBatch::new()).expect("install");
        assert!(!snapshots.keep_built(&snapshot_at(719)).expect("keep"));
        let current = snapshots.current().expect("current").expect("a snapshot");
        assert_eq!((current.meta.snapshot_id, current.data), ("759".to_string(), snapshot_at(759).data));
        assert_eq!(kept_snapshot_last_log_id(storage.as_ref()).expect("read"), snapshot_at(759).meta.last_log_id);
        let kept_file = files();
        assert_eq!(kept_file.len(), 1, "the superseded build's file is deleted: {kept_file:?}");
        assert_eq!(snapshots.kept_bytes.load(Ordering::SeqCst), snapshot_at(759).data.len() as u64);

        assert!(snapshots.keep_built(&snapshot_at(800)).expect("keep"));
        assert_eq!(snapshots.current().expect("current").expect("a snapshot").data, snapshot_at(800).data);
        assert_eq!(kept_snapshot_last_log_id(storage.as_ref()).expect("read"), snapshot_at(800).meta.last_log_id);
        let kept_file = files();
        assert_eq!(kept_file.len(), 1, "the replaced snapshot's file is deleted: {kept_file:?}");

        // A file no record names (a crash before its batch) is deleted at open; the kept one and its size stay.
        fs::write(files_dir.join("0123.snap"), b"orphan").expect("write");
        let reopened = SnapshotStore::open(storage.clone(), &files_dir).expect("reopen");
        assert_eq!(files(), kept_file);
        assert_eq!(reopened.kept_bytes.load(Ordering::SeqCst), snapshot_at(800).data.len() as u64);
        assert_eq!(reopened.current().expect("current").expect("a snapshot").data, snapshot_at(800).data);
    }

    #[test]
    fn a_snapshot_kept_inline_by_an_earlier_version_is_read_until_the_next_one_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(SledStorage::open(dir.path()).expect("open"));
        let old = snapshot_at(500);
        let mut batch = WriteBatch::new();
        batch.put(INLINE_SNAPSHOT_KEY, codec::encode(&old).expect("encode"));
        batch.put(SNAPSHOT_LAST_LOG_ID_KEY, codec::encode(&old.meta.last_log_id).expect("encode"));
        storage.write(Keyspace::State, &batch).expect("write");

        let snapshots = SnapshotStore::open(storage.clone(), &dir.path().join("snapshots")).expect("open");
        let current = snapshots.current().expect("current").expect("the inline snapshot");
        assert_eq!((current.meta.snapshot_id, current.data), ("500".to_string(), old.data));
        assert!(!snapshots.keep_built(&snapshot_at(400)).expect("keep"), "older than the inline one");
        assert!(snapshots.keep_built(&snapshot_at(600)).expect("keep"));
        assert_eq!(snapshots.current().expect("current").expect("a snapshot").data, snapshot_at(600).data);
        assert_eq!(storage.get(Keyspace::State, INLINE_SNAPSHOT_KEY).expect("get"), None, "the inline copy is gone");
    }

    #[test]
    fn a_capture_returns_the_state_as_it_began_although_writes_went_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = SledStorage::open(dir.path()).expect("open");
        let write = |ops: &[(&str, Option<&str>)], capture: &Capture| {
            let mut batch = WriteBatch::new();
            for (key, value) in ops {
                match value {
                    Some(v) => batch.put(key.as_bytes(), v.as_bytes()),
                    None => batch.delete(key.as_bytes()),
                }
            }
            capture.record(&storage, &batch).expect("record");
            storage.write(Keyspace::State, &batch).expect("write");
        };
        let closed = Capture { before: Mutex::new(None) };
        write(&[("a", Some("1")), ("b", Some("2")), ("d", Some("4")), ("raft/applied", Some("7"))], &closed);

        let capture = Capture::begin();
        // Applies go on while the capture is open: changes, a new key, a deletion, the same key twice.
        write(&[("a", Some("10")), ("c", Some("3")), ("b", None), ("raft/applied", Some("8"))], &capture);
        write(&[("a", Some("11")), ("b", Some("22"))], &capture);
        let state = capture.finish(&storage).expect("finish");
        let as_text: Vec<(String, String)> = state
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).expect("utf8"), String::from_utf8(v).expect("utf8")))
            .collect();
        let expected = [("a", "1"), ("b", "2"), ("d", "4")].map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(as_text, expected.to_vec(), "the state as the capture began, without raft/ keys");
        // Finished: later writes are no longer recorded.
        assert!(!capture.is_open());
        write(&[("e", Some("5"))], &capture);
        assert!(capture.lock().is_none());
    }

    #[test]
    fn txn_reads_its_writes_scans_merged_and_rolls_back_one_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = SledStorage::open(dir.path()).expect("open");
        storage.put(Keyspace::State, b"a/1", b"stored").expect("put");
        storage.put(Keyspace::State, b"a/2", b"stored").expect("put");
        let mut txn = StateTxn::new(&storage);

        txn.begin_command();
        txn.put(b"a/3".to_vec(), b"new".to_vec());
        txn.delete(b"a/1".to_vec());
        assert_eq!(txn.get(b"a/1").expect("get"), None);
        let keys: Vec<_> = txn.scan_prefix(b"a/").expect("scan").into_iter().map(|kv| kv.0).collect();
        assert_eq!(keys, vec![b"a/2".to_vec(), b"a/3".to_vec()]);

        txn.begin_command();
        txn.put(b"a/2".to_vec(), b"overwritten".to_vec());
        txn.put(b"a/4".to_vec(), b"x".to_vec());
        txn.delete(b"a/3".to_vec());
        txn.rollback_command();

        assert_eq!(txn.get(b"a/2").expect("get"), Some(b"stored".to_vec()));
        assert_eq!(txn.get(b"a/3").expect("get"), Some(b"new".to_vec()));
        assert_eq!(txn.get(b"a/4").expect("get"), None);
        let batch = txn.into_batch();
        assert_eq!(batch.ops(), &[(b"a/1".to_vec(), None), (b"a/3".to_vec(), Some(b"new".to_vec()))]);
    }
}
