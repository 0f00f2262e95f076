//! [`Storage`] on sled 0.34: one sled database per node, one sled tree per [`Keyspace`].
//!
//! sled keeps a single write-ahead log for all trees, so a flush makes every earlier write durable whatever its
//! tree, and a tree's `apply_batch` is atomic across crashes.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;

use super::{KeyValue, Keyspace, Result, ScanIter, Storage, StorageError, WriteBatch};

/// sled-backed storage for one node.
pub struct SledStorage {
    db: sled::Db,
    trees: HashMap<Keyspace, sled::Tree>,
}

impl SledStorage {
    /// Opens (or creates) the database in directory `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            // sled's own periodic flush is harmless but not what durability rests on: we flush explicitly.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| StorageError(format!("cannot open database at {}: {e}", path.display())))?;
        let mut trees = HashMap::new();
        for ks in Keyspace::ALL {
            let tree = db.open_tree(ks.name()).map_err(StorageError::new)?;
            trees.insert(ks, tree);
        }
        Ok(SledStorage { db, trees })
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

    fn last(&self, ks: Keyspace) -> Result<Option<KeyValue>> {
        self.tree(ks).last().map_err(StorageError::new).map(|o| o.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn write(&self, ks: Keyspace, batch: WriteBatch) -> Result<()> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.into_ops() {
            match value {
                Some(v) => sled_batch.insert(key, v),
                None => sled_batch.remove(key),
            }
        }
        self.tree(ks).apply_batch(sled_batch).map_err(StorageError::new)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(StorageError::new)
    }
}
