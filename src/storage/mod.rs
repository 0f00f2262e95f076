//! The storage layer: an ordered, durable key-value store behind a small trait.
//!
//! Everything a node persists but the Raft log (its vote, the state machine, snapshots, node-local secrets) lives
//! in one [`Storage`] split into [`Keyspace`]s. The log itself is a [`segment_log::SegmentLog`]: files written
//! sequentially and synced with `fdatasync`, because it is the one thing synced on every write.
//!
//! The trait is deliberately narrow — point reads, ordered scans, one atomic batch per keyspace, and a durable
//! flush — so the engine behind it can be swapped. Today it is sled 0.34 ([`sled_store::SledStorage`]); sled is
//! unmaintained, so redb is the planned alternative, and nothing above this module names sled.
//!
//! A node's storage is the engine wrapped in a [`WriteBackStorage`], which buffers writes to the state keyspace
//! for a few tens of milliseconds and hands them to the engine as one batch, because a batch per applied entry
//! made the engine write to disk for every entry (see its documentation).
//!
//! Durability contract: a write is durable once a later [`Storage::flush`] returns (a real fsync); after a crash
//! each keyspace holds a prefix of its writes, each batch whole or not at all. Across keyspaces, only a flush
//! orders writes.

mod read_cache;
pub mod segment_log;
mod sled_store;
mod write_back;

use std::fmt;
use std::ops::Bound;
use std::path::Path;

pub use read_cache::ReadCache;
pub use sled_store::SledStorage;
pub use write_back::WriteBackStorage;

/// The separate key spaces of one node's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyspace {
    /// Raft log entries, keyed by big-endian log index, as versions before the segment files kept them; read
    /// once at start-up to move them (see `raft::log_store`).
    Log,
    /// Raft's own metadata: vote, committed and last-purged log ids.
    RaftMeta,
    /// The replicated state machine: everything engines store, plus the last applied log id.
    State,
    /// The latest state-machine snapshot, so it survives restarts.
    Snapshot,
    /// Node-local data that is never replicated, such as the cluster secret.
    Node,
}

impl Keyspace {
    /// Every keyspace, for opening them all at start-up.
    pub const ALL: [Keyspace; 5] =
        [Keyspace::Log, Keyspace::RaftMeta, Keyspace::State, Keyspace::Snapshot, Keyspace::Node];

    /// The stable on-disk name of this keyspace.
    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Log => "raft_log",
            Keyspace::RaftMeta => "raft_meta",
            Keyspace::State => "state",
            Keyspace::Snapshot => "snapshot",
            Keyspace::Node => "node",
        }
    }
}

/// A storage failure: always an I/O or corruption problem, never bad input.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StorageError(pub String);

impl StorageError {
    /// Wraps any displayable error.
    pub fn new(e: impl fmt::Display) -> Self {
        StorageError(e.to_string())
    }
}

/// Result alias for storage operations.
pub type Result<T> = std::result::Result<T, StorageError>;

/// A storage error about the file or directory `path`.
pub fn io_error(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError(format!("{what} {}: {e}", path.display()))
}

/// Makes directory `dir`'s entries (files created, renamed or deleted in it) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("cannot sync directory", dir, e))
}

/// Creates the file `path` (which must not exist) holding `bytes`, durably: the file and its directory entry are
/// synced before this returns.
pub fn write_new_file_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error("cannot create", path, e))?;
    file.write_all(bytes).and_then(|_| file.sync_all()).map_err(|e| io_error("cannot write", path, e))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// A key-value pair as returned by scans.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An ordered iterator over key-value pairs.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KeyValue>> + Send + 'a>;

/// A set of writes to one keyspace, applied atomically by [`Storage::write`].
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// True if the batch holds no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The writes in order: `(key, Some(value))` to set, `(key, None)` to remove.
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }
}

/// An ordered, durable key-value store split into keyspaces.
pub trait Storage: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Iterates keys in `range`, in ascending order.
    fn range(&self, ks: Keyspace, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> ScanIter<'_>;

    /// Applies `batch` atomically: after a crash either all of it or none of it is visible. Writes to
    /// [`Keyspace::State`] invalidate their keys in [`Storage::read_cache`] before this returns.
    fn write(&self, ks: Keyspace, batch: &WriteBatch) -> Result<()>;

    /// Decoded values of [`Keyspace::State`] keys, kept coherent with [`Storage::write`].
    fn read_cache(&self) -> &ReadCache;

    /// Makes every write made before this call durable (fsync). Blocking: call it off the async runtime.
    fn flush(&self) -> Result<()>;

    /// Iterates the keys that start with `prefix`, in ascending order.
    fn scan_prefix(&self, ks: Keyspace, prefix: &[u8]) -> ScanIter<'_> {
        let start = Bound::Included(prefix.to_vec());
        let end = match prefix_successor(prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        self.range(ks, (start, end))
    }

    /// Writes one key (atomically, not flushed).
    fn put(&self, ks: Keyspace, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write(ks, &batch)
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None` if there is none (all `0xff`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, SledStorage) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStorage::open(dir.path()).expect("open");
        (dir, store)
    }

    fn keys(iter: ScanIter<'_>) -> Vec<Vec<u8>> {
        iter.map(|kv| kv.expect("scan").0).collect()
    }

    #[test]
    fn prefix_successor_handles_carry() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(b""), None);
    }

    #[test]
    fn batch_scan_and_keyspaces_are_separate() {
        let (_dir, store) = open();
        let mut batch = WriteBatch::new();
        batch.put(b"a/1".to_vec(), b"x".to_vec());
        batch.put(b"a/2".to_vec(), b"y".to_vec());
        batch.put(b"b/1".to_vec(), b"z".to_vec());
        batch.delete(b"a/2".to_vec());
        store.write(Keyspace::State, &batch).expect("write");
        store.put(Keyspace::Node, b"a/9", b"n").expect("put");

        assert_eq!(keys(store.scan_prefix(Keyspace::State, b"a/")), vec![b"a/1".to_vec()]);
        assert_eq!(store.get(Keyspace::State, b"b/1").expect("get"), Some(b"z".to_vec()));
        assert_eq!(store.get(Keyspace::State, b"a/9").expect("get"), None);
        assert_eq!(keys(store.scan_prefix(Keyspace::Node, b"")), vec![b"a/9".to_vec()]);
    }

    #[test]
    fn flushed_writes_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStorage::open(dir.path()).expect("open");
            store.put(Keyspace::Log, &7u64.to_be_bytes(), b"entry").expect("put");
            store.flush().expect("flush");
        }
        let store = SledStorage::open(dir.path()).expect("reopen");
        assert_eq!(store.get(Keyspace::Log, &7u64.to_be_bytes()).expect("get"), Some(b"entry".to_vec()));
    }
}
