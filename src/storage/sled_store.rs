//! [`Storage`] on sled 0.34: one sled database per node, one sled tree per [`Keyspace`].
//!
//! sled keeps a single write-ahead log for all trees, so a flush makes every earlier write durable whatever its
//! tree, and a tree's `apply_batch` is atomic across crashes.
//!
//! sled's own flush is not an fsync: on Linux it writes its buffers and calls `sync_file_range`, which flushes
//! neither the disk's write cache nor the file's size, and it never syncs the files it keeps large values in
//! (`blobs/`). [`Storage::flush`] therefore follows sled's flush with a real `fsync` of the database file and of
//! every blob file. It is called rarely (votes, purges, kept snapshots, the cluster secret): the Raft log, the one
//! thing synced per write, lives in segment files, and the state machine is never synced (the log replays it).

use std::collections::HashMap;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::{KeyValue, Keyspace, ReadCache, Result, ScanIter, Storage, StorageError, WriteBatch};

/// sled-backed storage for one node.
pub struct SledStorage {
    db: sled::Db,
    path: PathBuf,
    trees: HashMap<Keyspace, sled::Tree>,
    cache: ReadCache,
}

impl SledStorage {
    /// Opens (or creates) the database in directory `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            // No periodic flush: nothing needs one (the Raft log replays the state machine; votes, purges and
            // snapshots flush explicitly), and it would add fsyncs beside the log's.
            .flush_every_ms(None)
            .open()
            .map_err(|e| StorageError(format!("cannot open database at {}: {e}", path.display())))?;
        let mut trees = HashMap::new();
        for ks in Keyspace::ALL {
            let tree = db.open_tree(ks.name()).map_err(StorageError::new)?;
            trees.insert(ks, tree);
        }
        Ok(SledStorage { db, path: path.to_path_buf(), trees, cache: ReadCache::default() })
    }

    fn tree(&self, ks: Keyspace) -> &sled::Tree {
        // Every keyspace is opened in `open`, so the lookup cannot miss.
        &self.trees[&ks]
    }
}

fn to_kv(item: sled::Result<(sled::IVec, sled::IVec)>) -> Result<KeyValue> {
    item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(StorageError::new)
}

impl Storage for SledStorage {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(ks).get(key).map_err(StorageError::new)?.map(|v| v.to_vec()))
    }

    fn range(&self, ks: Keyspace, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> ScanIter<'_> {
        Box::new(self.tree(ks).range::<Vec<u8>, _>(range).map(to_kv))
    }

    fn write(&self, ks: Keyspace, batch: &WriteBatch) -> Result<()> {
        let tree = self.tree(ks);
        let ops = batch.ops();
        match ops {
            // One key is atomic by itself. A sled batch is not free: it writes out sled's I/O buffer before and
            // after itself (two writes, each waited for with `sync_file_range`), so single keys skip it.
            [(key, Some(value))] => tree.insert(key.as_slice(), value.as_slice()).map(|_| ()),
            [(key, None)] => tree.remove(key.as_slice()).map(|_| ()),
            ops => {
                let mut sled_batch = sled::Batch::default();
                for (key, value) in ops {
                    match value {
                        Some(v) => sled_batch.insert(key.as_slice(), v.as_slice()),
                        None => sled_batch.remove(key.as_slice()),
                    }
                }
                tree.apply_batch(sled_batch)
            }
        }
        .map_err(StorageError::new)?;
        if ks == Keyspace::State {
            self.cache.invalidate(ops.iter().map(|(key, _)| key.as_slice()));
        }
        Ok(())
    }

    fn read_cache(&self) -> &ReadCache {
        &self.cache
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(StorageError::new)?;
        // Where sled 0.34 keeps its data: the `db` file, and one file per large value under `blobs/`.
        let fsync = |path: &Path| {
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| StorageError(format!("cannot sync {}: {e}", path.display())))
        };
        fsync(&self.path.join("db"))?;
        let blobs = self.path.join("blobs");
        if blobs.is_dir() {
            for item in
                std::fs::read_dir(&blobs).map_err(|e| StorageError(format!("cannot list {}: {e}", blobs.display())))?
            {
                let path = item.map_err(StorageError::new)?.path();
                // sled deletes blobs it no longer needs at any time; a vanished one needs no sync.
                match File::open(&path) {
                    Ok(file) => {
                        file.sync_all().map_err(|e| StorageError(format!("cannot sync {}: {e}", path.display())))?
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError(format!("cannot open {}: {e}", path.display()))),
                }
            }
            fsync(&blobs)?;
        }
        fsync(&self.path)
    }
}
