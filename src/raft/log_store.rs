//! The durable Raft log: openraft's `RaftLogStorage` on our [`Storage`].
//!
//! Entries are keyed by big-endian index in [`Keyspace::Log`]; the vote, the committed log id and the last purged
//! log id live in [`Keyspace::RaftMeta`].
//!
//! An appended entry is acknowledged to openraft (its `LogFlushed` callback) only after a storage flush that
//! covers it. Every flush of the log — after appends, votes and truncations — runs on one dedicated flusher thread,
//! which takes every request waiting at that moment and serves them all with one fsync: under load one fsync
//! serves many appends (group commit at the disk), openraft keeps appending while a flush is in progress, and the
//! async runtime never blocks on the disk. Requests are answered in the order they were made.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError, Vote};
use tokio::sync::oneshot;

use super::{codec, Entry, LogId, NodeId, RaftStorageError, TypeConfig};
use crate::storage::{Keyspace, Storage, StorageError, WriteBatch};

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";
/// Longest a purge waits for the snapshot install it follows (openraft's own install timeout is 10 s).
const INSTALL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The Raft log of one node.
pub struct LogStore {
    storage: Arc<dyn Storage>,
    /// While set, purges beyond the snapshot on disk wait for it (see [`LogStore::holding_purges_while`]).
    installing: Option<Arc<AtomicBool>>,
    flusher: mpsc::Sender<FlushRequest>,
}

/// Something waiting for the writes made before it to be durable.
enum FlushRequest {
    /// An append: tell openraft through its callback.
    Append(LogFlushed<TypeConfig>),
    /// A vote or truncation: wake the waiting task.
    Wait(oneshot::Sender<Result<(), StorageError>>),
}

/// A cheap read handle on the log, used by openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    storage: Arc<dyn Storage>,
}

fn io_err(e: StorageError) -> RaftStorageError {
    StorageIOError::<NodeId>::write_logs(&e).into()
}

fn read_err(e: StorageError) -> RaftStorageError {
    StorageIOError::<NodeId>::read_logs(&e).into()
}

impl LogStore {
    /// Opens the log on `storage` and starts its flusher thread (which ends when the store is dropped).
    pub fn new(storage: Arc<dyn Storage>) -> Result<Self, StorageError> {
        let (tx, rx) = mpsc::channel();
        let flusher_storage = storage.clone();
        std::thread::Builder::new()
            .name("vigil-log-flush".into())
            .spawn(move || run_flusher(flusher_storage.as_ref(), rx))
            .map_err(|e| StorageError(format!("cannot start the log flusher thread: {e}")))?;
        Ok(LogStore { storage, installing: None, flusher: tx })
    }

    /// Makes purges beyond the snapshot on disk wait while `installing` is set (the state machine's
    /// [`super::state_machine::StateMachine::installs_in_flight`]). Purges always do exactly what openraft asks,
    /// as its storage contract (and conformance suite) expects; this only orders them after the install.
    pub fn holding_purges_while(mut self, installing: Arc<AtomicBool>) -> Self {
        self.installing = Some(installing);
        self
    }

    /// Waits until every write made so far is durable.
    async fn flush(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.flusher.send(FlushRequest::Wait(tx)).map_err(|_| StorageError("log flusher stopped".into()))?;
        rx.await.map_err(|_| StorageError("log flusher stopped".into()))?
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, RaftStorageError> {
        match self.storage.get(Keyspace::RaftMeta, key).map_err(read_err)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), RaftStorageError> {
        let bytes = codec::encode(value).map_err(io_err)?;
        self.storage.put(Keyspace::RaftMeta, key, &bytes).map_err(io_err)
    }

    /// Deletes log entries with index in `range` (one atomic batch).
    fn delete_range(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> Result<(), RaftStorageError> {
        let mut batch = WriteBatch::new();
        for item in self.storage.range(Keyspace::Log, range) {
            batch.delete(item.map_err(read_err)?.0);
        }
        self.storage.write(Keyspace::Log, batch).map_err(io_err)
    }
}

/// Waits for flush requests, flushes once for all that are waiting, then answers them in order.
fn run_flusher(storage: &dyn Storage, rx: mpsc::Receiver<FlushRequest>) {
    let mut waiting = Vec::new();
    while let Ok(first) = rx.recv() {
        waiting.push(first);
        waiting.extend(rx.try_iter());
        let result = storage.flush();
        if let Err(e) = &result {
            tracing::error!(error = %e, "log flush failed");
        }
        for request in waiting.drain(..) {
            match request {
                FlushRequest::Append(callback) => {
                    callback.log_io_completed(result.clone().map_err(|e| io::Error::other(e.0)))
                }
                FlushRequest::Wait(tx) => {
                    let _ = tx.send(result.clone());
                }
            }
        }
    }
}

fn index_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.storage
            .range(Keyspace::Log, (start, end))
            .map(|item| {
                let (_, bytes) = item.map_err(read_err)?;
                codec::decode::<Entry>(&bytes).map_err(read_err)
            })
            .collect()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        LogReader { storage: self.storage.clone() }.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(LAST_PURGED_KEY)?;
        let last = match self.storage.last(Keyspace::Log).map_err(read_err)? {
            Some((_, bytes)) => Some(codec::decode::<Entry>(&bytes).map_err(read_err)?.log_id),
            None => None,
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { storage: self.storage.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), RaftStorageError> {
        self.write_meta(VOTE_KEY, vote)?;
        // A vote must be durable before it is acted on, or a node could vote twice in one term.
        self.flush().await.map_err(|e| StorageIOError::<NodeId>::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, RaftStorageError> {
        self.read_meta(VOTE_KEY)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        // Not flushed: losing it only means re-applying from the last applied id, which openraft handles.
        self.write_meta(COMMITTED_KEY, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        for entry in entries {
            batch.put(index_key(entry.log_id.index), codec::encode(&entry).map_err(io_err)?);
        }
        self.storage.write(Keyspace::Log, batch).map_err(io_err)?;
        // Acknowledged by the flusher once durable.
        self.flusher
            .send(FlushRequest::Append(callback))
            .map_err(|_| io_err(StorageError("log flusher stopped".into())))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        tracing::debug!(from = log_id.index, "truncating log");
        self.delete_range((Bound::Included(index_key(log_id.index)), Bound::Unbounded))?;
        self.flush().await.map_err(io_err)
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
        // Record the purge point first: storage persists writes in order, so the marker is never behind the data.
        self.write_meta(LAST_PURGED_KEY, &log_id)?;
        self.delete_range((Bound::Unbounded, Bound::Included(index_key(log_id.index))))
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

    #[tokio::test]
    async fn a_purge_during_an_install_waits_for_the_snapshot_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(SledStorage::open(dir.path()).expect("open"));
        for index in 1..=20 {
            let entry = Entry { log_id: log_id(index), payload: EntryPayload::Blank };
            storage.put(Keyspace::Log, &index_key(index), &codec::encode(&entry).expect("encode")).expect("put");
        }
        let installing = Arc::new(AtomicBool::new(true));
        let mut store = LogStore::new(storage.clone()).expect("log store").holding_purges_while(installing.clone());
        keep_snapshot_through(storage.as_ref(), 10);

        // The install (through 15) is not on disk yet: the purge waits for it, then purges all it was asked.
        let purge = tokio::spawn(async move {
            store.purge(log_id(15)).await.expect("purge");
            store
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!purge.is_finished(), "purged before the snapshot it follows was on disk");
        assert_eq!(storage.scan_prefix(Keyspace::Log, b"").count(), 20);
        keep_snapshot_through(storage.as_ref(), 15);
        installing.store(false, Ordering::SeqCst);
        let mut store = purge.await.expect("purge task");
        assert_eq!(store.get_log_state().await.expect("state").last_purged_log_id, Some(log_id(15)));
        let first = storage.scan_prefix(Keyspace::Log, b"").next().map(|kv| kv.expect("kv").0);
        assert_eq!(first, Some(index_key(16)));

        // No install in flight: a purge does what it is asked at once, snapshot or not.
        store.purge(log_id(19)).await.expect("purge");
        assert_eq!(store.get_log_state().await.expect("state").last_purged_log_id, Some(log_id(19)));
    }
}
