//! A write-back buffer in front of a [`Storage`] for the state keyspace.
//!
//! Every applied Raft entry writes one batch to [`Keyspace::State`] (the keys its commands changed, plus the last
//! applied log id). On sled an atomic batch is not cheap: sled writes its I/O buffer out before and after the batch
//! and waits for each write with `sync_file_range`, so each entry cost two disk writes on every node, competing
//! with the Raft log's `fdatasync` — the one write that has to wait for the disk. Nothing needs those batches on
//! disk at once: the state machine is never synced, because the Raft log replays it after a crash. So this layer
//! keeps the state keyspace's recent writes in memory, serves reads from them, and hands them to the engine as one
//! merged batch every [`WRITE_BACK_INTERVAL`] (or sooner, once [`MAX_BUFFERED_BYTES`] pile up). Keys written again
//! and again (the last applied id, counters) reach the disk once per interval instead of once per entry.
//!
//! Crash safety is unchanged. Batches are merged in order and written as one atomic batch, so after a crash the
//! state keyspace still holds a prefix of its writes, whole batches only — the state as of an older applied id,
//! from which openraft re-applies the committed entries the log still holds. [`Storage::flush`] writes the buffer
//! back before it syncs, so everything that orders itself with a flush (keeping a snapshot, purging the log behind
//! it) finds the state on disk first. Only the state keyspace is buffered; other keyspaces go straight through, so
//! an unflushed write to one of them may reach the disk before an earlier state write — nothing relies on that
//! order without a flush in between.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::mem;
use std::ops::Bound;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{KeyValue, Keyspace, ReadCache, Result, ScanIter, Storage, StorageError, WriteBatch};

/// How often buffered writes are handed to the engine.
pub const WRITE_BACK_INTERVAL: Duration = Duration::from_millis(50);
/// Buffered bytes (keys and values) past which the writer hands them over itself, so a burst cannot outgrow memory.
pub const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;
/// A batch with more operations than this (a snapshot being installed) is not buffered: the buffer is written back
/// and the batch goes straight to the engine.
const DIRECT_BATCH_OPS: usize = 4096;

/// Pending writes by key: `Some(value)` to set, `None` to remove.
type Entries = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// One pending write.
type Entry = (Vec<u8>, Option<Vec<u8>>);

/// A [`Storage`] that buffers writes to the state keyspace; see the module documentation.
pub struct WriteBackStorage {
    shared: Arc<Shared>,
    /// Dropping it stops the background writer.
    stop: Option<mpsc::Sender<()>>,
    writer: Option<JoinHandle<()>>,
}

struct Shared {
    engine: Box<dyn Storage>,
    /// The read cache of the state as this layer serves it. The engine's own stays empty, so invalidating it when
    /// a write-back reaches the engine costs nothing.
    cache: ReadCache,
    buffer: Mutex<Buffer>,
    /// Held for a whole write-back (and a direct batch), so batches reach the engine in the order they were made.
    one_writer: Mutex<()>,
}

#[derive(Default)]
struct Buffer {
    /// Writes not yet handed to the engine, newest value per key.
    pending: Entries,
    /// Bytes of keys and values in `pending`.
    pending_bytes: usize,
    /// Writes being handed to the engine right now; read until the engine has them.
    in_flight: Arc<Entries>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both guarded values are only changed by whole, non-panicking steps.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WriteBackStorage {
    /// Puts a write-back buffer in front of `engine` and starts its background writer.
    pub fn new(engine: impl Storage) -> Result<Self> {
        Self::with_interval(engine, WRITE_BACK_INTERVAL)
    }

    /// Like [`WriteBackStorage::new`], writing back every `interval`.
    fn with_interval(engine: impl Storage, interval: Duration) -> Result<Self> {
        let shared = Arc::new(Shared {
            engine: Box::new(engine),
            cache: ReadCache::default(),
            buffer: Mutex::default(),
            one_writer: Mutex::new(()),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("vigil-write-back".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                        if let Err(e) = shared.write_back() {
                            // The writes stay buffered and are tried again; a flush reports the error to its caller.
                            tracing::error!(error = %e, "cannot write the state back to storage");
                        }
                    }
                })
                .map_err(|e| StorageError(format!("cannot start the write-back thread: {e}")))?
        };
        Ok(WriteBackStorage { shared, stop: Some(stop), writer: Some(writer) })
    }
}

impl Drop for WriteBackStorage {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // A clean shutdown leaves nothing to replay; after a crash the log replays what was buffered.
        if let Err(e) = self.shared.write_back() {
            tracing::error!(error = %e, "cannot write the state back to storage at shutdown");
        }
    }
}

impl Shared {
    /// Hands every buffered write to the engine as one atomic batch.
    fn write_back(&self) -> Result<()> {
        let _writing = lock(&self.one_writer);
        self.write_back_locked()
    }

    fn write_back_locked(&self) -> Result<()> {
        let entries = {
            let mut buffer = lock(&self.buffer);
            if buffer.pending.is_empty() {
                return Ok(());
            }
            let entries = Arc::new(mem::take(&mut buffer.pending));
            buffer.pending_bytes = 0;
            buffer.in_flight = entries.clone();
            entries
        };
        let mut batch = WriteBatch::new();
        for (key, value) in entries.iter() {
            match value {
                Some(value) => batch.put(key.clone(), value.clone()),
                None => batch.delete(key.clone()),
            }
        }
        let written = self.engine.write(Keyspace::State, &batch);
        let mut buffer = lock(&self.buffer);
        if written.is_err() {
            // Keep the writes, under any made since, for the next try.
            let newer = mem::take(&mut buffer.pending);
            buffer.pending = Entries::clone(&entries);
            buffer.pending_bytes = buffer.pending.iter().map(|(k, v)| entry_bytes(k, v)).sum();
            buffer.pending.extend(newer);
        }
        buffer.in_flight = Arc::default();
        written
    }

    /// The buffered writes in `range`, newest first wins, in key order.
    fn buffered_range(&self, range: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> Vec<Entry> {
        let buffer = lock(&self.buffer);
        let mut merged: Entries = buffer.in_flight.range::<Vec<u8>, _>(range.clone()).map(clone_entry).collect();
        merged.extend(buffer.pending.range::<Vec<u8>, _>(range.clone()).map(clone_entry));
        merged.into_iter().collect()
    }
}

fn clone_entry((key, value): (&Vec<u8>, &Option<Vec<u8>>)) -> Entry {
    (key.clone(), value.clone())
}

fn entry_bytes(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len)
}

impl Storage for WriteBackStorage {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if ks == Keyspace::State {
            let buffer = lock(&self.shared.buffer);
            if let Some(value) = buffer.pending.get(key).or_else(|| buffer.in_flight.get(key)) {
                return Ok(value.clone());
            }
        }
        // Not buffered: the engine has the newest value (a write-back empties `in_flight` only once it has it).
        self.shared.engine.get(ks, key)
    }

    fn range(&self, ks: Keyspace, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> ScanIter<'_> {
        if ks != Keyspace::State {
            return self.shared.engine.range(ks, range);
        }
        let buffered = self.shared.buffered_range(&range);
        if buffered.is_empty() {
            return self.shared.engine.range(ks, range);
        }
        Box::new(Merged {
            buffered: buffered.into_iter().peekable(),
            engine: self.shared.engine.range(ks, range).peekable(),
        })
    }

    fn write(&self, ks: Keyspace, batch: &WriteBatch) -> Result<()> {
        if ks != Keyspace::State {
            return self.shared.engine.write(ks, batch);
        }
        if batch.ops().len() > DIRECT_BATCH_OPS {
            let _writing = lock(&self.shared.one_writer);
            self.shared.write_back_locked()?;
            self.shared.engine.write(ks, batch)?;
            self.read_cache().invalidate(batch.ops().iter().map(|(key, _)| key.as_slice()));
            return Ok(());
        }
        let full = {
            let mut buffer = lock(&self.shared.buffer);
            for (key, value) in batch.ops() {
                buffer.pending_bytes += entry_bytes(key, value);
                buffer.pending.insert(key.clone(), value.clone());
            }
            buffer.pending_bytes >= MAX_BUFFERED_BYTES
        };
        self.read_cache().invalidate(batch.ops().iter().map(|(key, _)| key.as_slice()));
        if full {
            self.shared.write_back()?;
        }
        Ok(())
    }

    fn read_cache(&self) -> &ReadCache {
        &self.shared.cache
    }

    fn flush(&self) -> Result<()> {
        self.shared.write_back()?;
        self.shared.engine.flush()
    }
}

/// The engine's scan with the buffered writes laid over it: a buffered value replaces the engine's for its key, a
/// buffered removal hides it.
struct Merged<'a> {
    buffered: Peekable<std::vec::IntoIter<Entry>>,
    engine: Peekable<ScanIter<'a>>,
}

impl Iterator for Merged<'_> {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.buffered.peek(), self.engine.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) | (_, Some(Err(_))) => Ordering::Greater,
                (Some((buffered, _)), Some(Ok((engine, _)))) => buffered.cmp(engine),
            };
            if order == Ordering::Equal {
                // The buffered write replaces the engine's value.
                self.engine.next();
            }
            if order == Ordering::Greater {
                return self.engine.next();
            }
            if let Some((key, Some(value))) = self.buffered.next() {
                return Some(Ok((key, value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStorage;

    /// A store whose background writer never runs during a test, unless it waits for it.
    fn open(dir: &std::path::Path) -> WriteBackStorage {
        open_with(dir, Duration::from_secs(3600))
    }

    fn open_with(dir: &std::path::Path, interval: Duration) -> WriteBackStorage {
        WriteBackStorage::with_interval(SledStorage::open(dir).expect("open"), interval).expect("write-back")
    }

    fn scan(store: &dyn Storage, prefix: &[u8]) -> Vec<(String, String)> {
        store
            .scan_prefix(Keyspace::State, prefix)
            .map(|kv| kv.expect("scan"))
            .map(|(k, v)| (String::from_utf8(k).expect("utf8"), String::from_utf8(v).expect("utf8")))
            .collect()
    }

    fn batch(ops: &[(&str, Option<&str>)]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (key, value) in ops {
            match value {
                Some(value) => batch.put(key.as_bytes(), value.as_bytes()),
                None => batch.delete(key.as_bytes()),
            }
        }
        batch
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn buffered_writes_are_read_over_the_engine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.write(Keyspace::State, &batch(&[("a/1", Some("old")), ("a/2", Some("x")), ("a/4", Some("y"))])).unwrap();
        store.flush().expect("flush");
        // Now buffered over what the engine holds: a new value, a removal, a new key, one key left alone.
        store.write(Keyspace::State, &batch(&[("a/1", Some("new")), ("a/2", None), ("a/3", Some("z"))])).unwrap();
        assert_eq!(store.get(Keyspace::State, b"a/1").unwrap(), Some(b"new".to_vec()));
        assert_eq!(store.get(Keyspace::State, b"a/2").unwrap(), None);
        assert_eq!(store.get(Keyspace::State, b"a/4").unwrap(), Some(b"y".to_vec()));
        assert_eq!(scan(&store, b"a/"), pairs(&[("a/1", "new"), ("a/3", "z"), ("a/4", "y")]));
        assert_eq!(scan(&store, b"a/3"), pairs(&[("a/3", "z")]));
        assert_eq!(scan(&store, b"b/"), pairs(&[]));
    }

    #[test]
    fn writes_reach_the_engine_only_at_a_write_back_merged_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let engine = |key: &str| store.shared.engine.get(Keyspace::State, key.as_bytes()).expect("get");
        store.write(Keyspace::State, &batch(&[("k/1", Some("one")), ("applied", Some("1"))])).unwrap();
        store.write(Keyspace::State, &batch(&[("k/2", Some("two")), ("applied", Some("2"))])).unwrap();
        assert_eq!(engine("applied"), None, "buffered: a crash now loses both batches, which the log replays");
        store.flush().expect("flush");
        assert_eq!((engine("applied"), engine("k/1")), (Some(b"2".to_vec()), Some(b"one".to_vec())));
        store.write(Keyspace::State, &batch(&[("k/1", None), ("applied", Some("3"))])).unwrap();
        assert_eq!((engine("applied"), engine("k/1")), (Some(b"2".to_vec()), Some(b"one".to_vec())));
        store.shared.write_back().expect("write back");
        assert_eq!((engine("applied"), engine("k/1")), (Some(b"3".to_vec()), None));
    }

    #[test]
    fn the_writer_hands_writes_over_within_an_interval_and_at_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open_with(dir.path(), Duration::from_millis(10));
            store.write(Keyspace::State, &batch(&[("x", Some("1"))])).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let in_engine = || store.shared.engine.get(Keyspace::State, b"x").expect("get");
            while in_engine().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(in_engine(), Some(b"1".to_vec()), "the background writer handed it to the engine");
            assert!(lock(&store.shared.buffer).pending.is_empty());
            store.write(Keyspace::State, &batch(&[("y", Some("2"))])).unwrap();
        }
        // sled lets go of its lock file once its own I/O threads are done with the last write, a moment after drop.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let engine = loop {
            match SledStorage::open(dir.path()) {
                Ok(engine) => break engine,
                Err(e) if std::time::Instant::now() < deadline && e.0.contains("could not acquire lock") => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        assert_eq!(scan(&engine, b""), pairs(&[("x", "1"), ("y", "2")]));
    }

    #[test]
    fn a_large_batch_goes_straight_to_the_engine_after_the_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.write(Keyspace::State, &batch(&[("big/0000", Some("buffered")), ("small", Some("s"))])).unwrap();
        let cached = |store: &WriteBackStorage| {
            store.read_cache().get_or_load(b"big/0000", || store.get(Keyspace::State, b"big/0000")).expect("read")
        };
        assert_eq!(cached(&store), Some(b"buffered".to_vec()));
        let mut large = WriteBatch::new();
        for i in 0..=DIRECT_BATCH_OPS {
            large.put(format!("big/{i:04}").into_bytes(), b"direct".to_vec());
        }
        store.write(Keyspace::State, &large).unwrap();
        assert!(lock(&store.shared.buffer).pending.is_empty());
        assert_eq!(store.get(Keyspace::State, b"big/0000").unwrap(), Some(b"direct".to_vec()), "the later write wins");
        assert_eq!(cached(&store), Some(b"direct".to_vec()), "and is not hidden by the read cache");
        assert_eq!(store.get(Keyspace::State, b"small").unwrap(), Some(b"s".to_vec()));
        assert_eq!(store.scan_prefix(Keyspace::State, b"big/").count(), DIRECT_BATCH_OPS + 1);
    }

    #[test]
    fn writes_invalidate_the_read_cache_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let read = |store: &WriteBackStorage| {
            store.read_cache().get_or_load(b"t", || store.get(Keyspace::State, b"t")).expect("read")
        };
        assert_eq!(read(&store), None);
        store.write(Keyspace::State, &batch(&[("t", Some("v"))])).unwrap();
        assert_eq!(read(&store), Some(b"v".to_vec()));
    }

    #[test]
    fn other_keyspaces_are_not_buffered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.put(Keyspace::Node, b"secret", b"s").unwrap();
        assert!(lock(&store.shared.buffer).pending.is_empty());
        assert_eq!(store.get(Keyspace::Node, b"secret").unwrap(), Some(b"s".to_vec()));
    }
}
