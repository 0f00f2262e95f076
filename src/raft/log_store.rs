//! The durable Raft log: openraft's `RaftLogStorage` on a [`SegmentLog`], with the vote, the committed log id and
//! the purge point in [`Keyspace::RaftMeta`] of the node's [`Storage`].
//!
//! Entries are written to the segment files as openraft appends them, and kept decoded in a bounded in-memory
//! cache of the newest entries, which is where replication reads them from: a follower that keeps up never
//! causes a disk read or a decode. An appended entry is acknowledged to openraft (its `LogFlushed` callback) only
//! after an `fdatasync` that covers it. Those syncs run on one dedicated flusher thread, which takes every request
//! waiting at that moment and serves them all with one sync: under load one sync serves many appends, and the
//! async runtime never blocks on the disk. Requests are answered in the order they were made.
//!
//! The state machine is not synced at all (see `state_machine`), which is safe because openraft 0.9 applies only
//! entries this node has flushed, so the applied state on disk never gets ahead of the log; a purge first makes
//! the storage durable (the snapshot that replaces the purged entries with it) and only then deletes segments.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError, Vote};

use super::{codec, Entry, LogId, NodeId, RaftStorageError, TypeConfig};
use crate::storage::segment_log::SegmentLog;
use crate::storage::{Keyspace, Storage, StorageError, WriteBatch};

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";
/// Longest a purge waits for the snapshot install it follows (openraft's own install timeout is 10 s).
const INSTALL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Encoded bytes of the newest entries kept decoded in memory for replication.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The Raft log of one node.
pub struct LogStore {
    storage: Arc<dyn Storage>,
    log: Arc<Mutex<Log>>,
    /// While set, purges beyond the snapshot on disk wait for it (see [`LogStore::holding_purges_while`]).
    installing: Option<Arc<AtomicBool>>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
}

/// The entries: on disk, and the newest of them in memory.
struct Log {
    file: SegmentLog,
    /// Decoded copies of the newest entries, with their encoded sizes; `cache_first` is the index of the front.
    cache: VecDeque<(Entry, usize)>,
    cache_first: u64,
    cache_bytes: usize,
    /// The id of the last entry, if any is left after purges.
    last: Option<LogId>,
}

/// A cheap read handle on the log, used by openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    log: Arc<Mutex<Log>>,
}

fn io_err(e: StorageError) -> RaftStorageError {
    StorageIOError::<NodeId>::write_logs(&e).into()
}

fn read_err(e: StorageError) -> RaftStorageError {
    StorageIOError::<NodeId>::read_logs(&e).into()
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    // A panic while holding the lock leaves the log as consistent as the disk it mirrors; keep going.
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Log {
    /// The entry at `index`, from the cache or the disk.
    fn entry(&self, index: u64) -> Result<Option<Entry>, StorageError> {
        if let Some(i) = index.checked_sub(self.cache_first) {
            if let Some((entry, _)) = self.cache.get(i as usize) {
                return Ok(Some(entry.clone()));
            }
        }
        match self.file.read(index)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn cache_push(&mut self, entry: Entry, size: usize) {
        if self.cache.is_empty() || self.cache_first + self.cache.len() as u64 != entry.log_id.index {
            self.cache.clear();
            self.cache_bytes = 0;
            self.cache_first = entry.log_id.index;
        }
        self.cache.push_back((entry, size));
        self.cache_bytes += size;
        while self.cache_bytes > CACHE_BYTES && self.cache.len() > 1 {
            if let Some((_, size)) = self.cache.pop_front() {
                self.cache_bytes -= size;
                self.cache_first += 1;
            }
        }
    }

    /// Removes entries `>= from` from the cache.
    fn cache_truncate(&mut self, from: u64) {
        while self.cache_first + (self.cache.len() as u64) > from {
            match self.cache.pop_back() {
                Some((_, size)) => self.cache_bytes -= size,
                None => break,
            }
        }
    }

    /// Removes entries `<= upto` from the cache.
    fn cache_purge(&mut self, upto: u64) {
        while self.cache_first <= upto {
            match self.cache.pop_front() {
                Some((_, size)) => {
                    self.cache_bytes -= size;
                    self.cache_first += 1;
                }
                None => {
                    self.cache_first = upto + 1;
                    break;
                }
            }
        }
    }
}

impl LogStore {
    /// Opens the log in directory `dir` (its metadata in `storage`) and starts its flusher thread, which ends
    /// when the store is dropped. A log kept in `storage` by an earlier version is moved into `dir` first.
    pub fn open(dir: &Path, storage: Arc<dyn Storage>) -> Result<Self, StorageError> {
        let last_purged: Option<LogId> = read_meta(storage.as_ref(), LAST_PURGED_KEY)?;
        let mut file = SegmentLog::open(dir, last_purged.map(|id| id.index))?;
        move_legacy_entries(storage.as_ref(), &mut file)?;
        let last = match file.next_index().checked_sub(1).filter(|i| *i >= file.first_index()) {
            Some(index) => match file.read(index)? {
                Some(bytes) => Some(codec::decode::<Entry>(&bytes)?.log_id),
                None => None,
            },
            None => None,
        };
        let log = Log { cache_first: file.next_index(), file, cache: VecDeque::new(), cache_bytes: 0, last };
        let log = Arc::new(Mutex::new(log));
        let (tx, rx) = mpsc::channel();
        let flusher_log = log.clone();
        std::thread::Builder::new()
            .name("vigil-log-flush".into())
            .spawn(move || run_flusher(&flusher_log, rx))
            .map_err(|e| StorageError(format!("cannot start the log flusher thread: {e}")))?;
        Ok(LogStore { storage, log, installing: None, flusher: tx })
    }

    /// Makes purges beyond the snapshot on disk wait while `installing` is set (the state machine's
    /// [`super::state_machine::StateMachine::installs_in_flight`]). Purges always do exactly what openraft asks,
    /// as its storage contract (and conformance suite) expects; this only orders them after the install.
    pub fn holding_purges_while(mut self, installing: Arc<AtomicBool>) -> Self {
        self.installing = Some(installing);
        self
    }

    /// A read handle on this log, for callers other than openraft (which gets its own through
    /// `get_log_reader`).
    pub fn reader(&self) -> LogReader {
        LogReader { log: self.log.clone() }
    }

    /// Runs `work` on the log off the async runtime (it syncs files).
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Log) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || work(&mut lock(&log)))
            .await
            .map_err(|e| StorageError(format!("log task failed: {e}")))?
    }

    /// Makes the metadata storage durable, off the async runtime.
    async fn flush_storage(&self) -> Result<(), StorageError> {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.flush())
            .await
            .map_err(|e| StorageError(format!("flush task failed: {e}")))?
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), RaftStorageError> {
        let bytes = codec::encode(value).map_err(io_err)?;
        self.storage.put(Keyspace::RaftMeta, key, &bytes).map_err(io_err)
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(storage: &dyn Storage, key: &[u8]) -> Result<Option<T>, StorageError> {
    match storage.get(Keyspace::RaftMeta, key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Moves log entries that an earlier version kept in `storage` ([`Keyspace::Log`]) to `file`: they are appended
/// and synced, then deleted from storage. A crash in between leaves them in both places, and the next start
/// deletes the storage copies of the entries the file already has.
fn move_legacy_entries(storage: &dyn Storage, file: &mut SegmentLog) -> Result<(), StorageError> {
    let mut moved = 0;
    let mut stale = WriteBatch::new();
    for item in storage.scan_prefix(Keyspace::Log, b"") {
        let (key, bytes) = item?;
        let entry: Entry = codec::decode(&bytes)?;
        let index = entry.log_id.index;
        if index >= file.next_index() {
            file.append([(index, bytes.as_slice())])?;
            moved += 1;
        }
        stale.delete(key);
    }
    if stale.is_empty() {
        return Ok(());
    }
    file.sync()?;
    storage.write(Keyspace::Log, &stale)?;
    storage.flush()?;
    tracing::info!(entries = moved, "moved the Raft log into segment files");
    Ok(())
}

/// Waits for appends, syncs once for all that are waiting, then tells openraft in order.
fn run_flusher(log: &Mutex<Log>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    let mut waiting = Vec::new();
    while let Ok(first) = rx.recv() {
        waiting.push(first);
        waiting.extend(rx.try_iter());
        // Every waiting append was written before it was queued, so syncing the file active now covers them all;
        // the lock is not held while the disk works.
        let handle = lock(log).file.sync_handle();
        let result = match handle {
            Some(file) => file.sync_data().map_err(|e| io::Error::other(format!("cannot sync the Raft log: {e}"))),
            None => Ok(()),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "log sync failed");
        }
        for callback in waiting.drain(..) {
            let result = result.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string()));
            callback.log_io_completed(result);
        }
    }
}

impl LogReader {
    /// Bytes on disk of the entries from `index` on.
    pub fn bytes_from(&self, index: u64) -> u64 {
        lock(&self.log).file.bytes_from(index)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let log = lock(&self.log);
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(log.file.first_index());
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        }
        .min(log.file.next_index());
        let mut entries = Vec::with_capacity(end.saturating_sub(start).min(1024) as usize);
        for index in start..end {
            match log.entry(index).map_err(read_err)? {
                Some(entry) => entries.push(entry),
                None => break,
            }
        }
        Ok(entries)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        self.reader().try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let last_purged_log_id: Option<LogId> = read_meta(self.storage.as_ref(), LAST_PURGED_KEY).map_err(read_err)?;
        let last = lock(&self.log).last;
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), RaftStorageError> {
        self.write_meta(VOTE_KEY, vote)?;
        // A vote must be durable before it is acted on, or a node could vote twice in one term.
        self.flush_storage().await.map_err(|e| StorageIOError::<NodeId>::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, RaftStorageError> {
        read_meta(self.storage.as_ref(), VOTE_KEY).map_err(read_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        // Not flushed: losing it only means re-applying from the last applied id, which openraft handles.
        self.write_meta(COMMITTED_KEY, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        Ok(read_meta::<Option<LogId>>(self.storage.as_ref(), COMMITTED_KEY).map_err(read_err)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(io_err)?;
            encoded.push((entry, bytes));
        }
        {
            let mut log = lock(&self.log);
            log.file
                .append(encoded.iter().map(|(entry, bytes)| (entry.log_id.index, bytes.as_slice())))
                .map_err(io_err)?;
            for (entry, bytes) in encoded {
                log.last = Some(entry.log_id);
                log.cache_push(entry, bytes.len());
            }
        }
        // Readable from here on, durable once the flusher acknowledges it. A leader's replication streams read the
        // entries before that (vendor/openraft/VIGIL.md), so its sync and its followers' overlap.
        self.flusher.send(callback).map_err(|_| io_err(StorageError("log flusher stopped".into())))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        tracing::debug!(from = log_id.index, "truncating log");
        let from = log_id.index;
        self.blocking(move |log| {
            log.file.truncate(from)?;
            log.cache_truncate(from);
            log.last = match from.checked_sub(1) {
                Some(prev) if prev >= log.file.first_index() => log.entry(prev)?.map(|e| e.log_id),
                _ => None,
            };
            Ok(())
        })
        .await
        .map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        // The purge openraft issues with a snapshot install runs at the same time as the install and may reach the
        // disk first; a crash in between would leave a log purged beyond its snapshot, which openraft refuses to
        // start from. So while an install is in flight, a purge beyond the snapshot on disk waits for it (the install
        // runs on the state-machine worker and does not need this task). Purging less instead would leave a hole
        // between the kept entries and those appended after the snapshot, which openraft cannot load either.
        if let Some(installing) = &self.installing {
            let deadline = tokio::time::Instant::now() + INSTALL_WAIT;
            while installing.load(Ordering::SeqCst) {
                let kept = super::state_machine::kept_snapshot_last_log_id(self.storage.as_ref()).map_err(read_err)?;
                if kept.is_some_and(|kept| kept.index >= log_id.index) {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    tracing::warn!(upto = log_id.index, "purging before the snapshot install it follows is on disk");
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        tracing::debug!(upto = log_id.index, "purging log");
        // The purge point, and the snapshot and state that replace the purged entries, are made durable before
        // any entry is deleted.
        let started = std::time::Instant::now();
        self.write_meta(LAST_PURGED_KEY, &log_id)?;
        self.flush_storage().await.map_err(io_err)?;
        tracing::debug!(upto = log_id.index, flush_ms = started.elapsed().as_millis() as u64, "purge point durable");
        let upto = log_id.index;
        self.blocking(move |log| {
            log.file.purge(upto)?;
            log.cache_purge(upto);
            if log.last.is_some_and(|last| last.index <= upto) {
                log.last = None;
            }
            Ok(())
        })
        .await
        .map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStorage;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 7), index)
    }

    fn keep_snapshot_through(storage: &dyn Storage, index: u64) {
        let key = super::super::state_machine::SNAPSHOT_LAST_LOG_ID_KEY;
        storage.put(Keyspace::State, key, &codec::encode(&Some(log_id(index))).expect("encode")).expect("put");
    }

    /// Writes blank entries where versions before the segment files kept the log.
    fn write_legacy_entries(storage: &dyn Storage, range: std::ops::RangeInclusive<u64>) {
        for index in range {
            let entry = Entry { log_id: log_id(index), payload: EntryPayload::Blank };
            storage.put(Keyspace::Log, &index.to_be_bytes(), &codec::encode(&entry).expect("encode")).expect("put");
        }
    }

    async fn indexes(reader: &mut LogReader) -> Vec<u64> {
        reader.try_get_log_entries(..).await.expect("read").iter().map(|e| e.log_id.index).collect()
    }

    /// Entries kept in storage by an earlier version are moved to the segment files, once.
    #[tokio::test]
    async fn a_log_kept_in_storage_moves_into_segment_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(SledStorage::open(dir.path()).expect("open"));
        write_legacy_entries(storage.as_ref(), 3..=9);
        storage.put(Keyspace::RaftMeta, LAST_PURGED_KEY, &codec::encode(&log_id(2)).expect("encode")).expect("put");
        let log_dir = dir.path().join("raft-log");
        let mut store = LogStore::open(&log_dir, storage.clone()).expect("log store");
        assert_eq!(indexes(&mut store.get_log_reader().await).await, (3..=9).collect::<Vec<_>>());
        assert_eq!(storage.scan_prefix(Keyspace::Log, b"").count(), 0);
        let state = store.get_log_state().await.expect("state");
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(2)), Some(log_id(9))));
        drop(store);
        let mut store = LogStore::open(&log_dir, storage).expect("reopen");
        assert_eq!(indexes(&mut store.get_log_reader().await).await, (3..=9).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_purge_during_an_install_waits_for_the_snapshot_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(SledStorage::open(dir.path()).expect("open"));
        // (LogFlushed cannot be made outside openraft, so the entries come in as a legacy log.)
        write_legacy_entries(storage.as_ref(), 1..=20);
        let installing = Arc::new(AtomicBool::new(true));
        let mut store = LogStore::open(&dir.path().join("raft-log"), storage.clone())
            .expect("log store")
            .holding_purges_while(installing.clone());
        let mut reader = store.get_log_reader().await;
        keep_snapshot_through(storage.as_ref(), 10);

        // The install (through 15) is not on disk yet: the purge waits for it, then purges all it was asked.
        let purge = tokio::spawn(async move {
            store.purge(log_id(15)).await.expect("purge");
            store
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!purge.is_finished(), "purged before the snapshot it follows was on disk");
        assert_eq!(indexes(&mut reader).await.len(), 20);
        keep_snapshot_through(storage.as_ref(), 15);
        installing.store(false, Ordering::SeqCst);
        let mut store = purge.await.expect("purge task");
        assert_eq!(store.get_log_state().await.expect("state").last_purged_log_id, Some(log_id(15)));
        assert_eq!(indexes(&mut reader).await, (16..=20).collect::<Vec<_>>());

        // No install in flight: a purge does what it is asked at once, snapshot or not.
        store.purge(log_id(19)).await.expect("purge");
        assert_eq!(store.get_log_state().await.expect("state").last_purged_log_id, Some(log_id(19)));
        assert_eq!(indexes(&mut reader).await, vec![20]);
    }
}
