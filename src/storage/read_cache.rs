//! Decoded copies of hot values of the state keyspace, kept coherent with every write.
//!
//! Every request reads the same few records — its token, the mount table, the policies of its token — and decoding
//! them (and parsing a policy's HCL) cost more than the rest of a kv write's handling. Those reads go through
//! [`ReadCache::get_or_load`] (one key) or [`ReadCache::get_or_load_scan`] (everything under a prefix, such as the
//! mount table), which keep the decoded value; the storage drops every cached value a write touches, right after
//! the write, so a read that starts after a write returns (for example after the write that revokes a token was
//! applied) never sees the old value.
//!
//! A load races with writes: it reads storage, decodes, then inserts, and a write may land in between. Each write
//! bumps a generation, and a load inserts only if no write happened since it began, so a value read before a
//! write is never cached after it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// At most this many values are cached; past it the cache starts again empty.
const MAX_ENTRIES: usize = 16 * 1024;

type Cached = Arc<dyn Any + Send + Sync>;

/// See the module documentation.
#[derive(Default)]
pub struct ReadCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bumped by every write.
    generation: u64,
    /// Decoded values (`Option<T>`: absence is cached too), by key.
    values: HashMap<Vec<u8>, Cached>,
    /// Values derived from every key under a prefix, by prefix (a handful: the mount table).
    scans: Vec<(Vec<u8>, Cached)>,
}

impl ReadCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map is only ever replaced or edited whole; a panic elsewhere cannot leave it half-changed.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The decoded value of `key`: the cached one, or `load`'s (cached for the next caller). A value cached under
    /// `key` by a different type `T` is loaded again.
    pub fn get_or_load<T, E>(&self, key: &[u8], load: impl FnOnce() -> Result<Option<T>, E>) -> Result<Option<T>, E>
    where
        T: Clone + Send + Sync + 'static,
    {
        let generation = {
            let inner = self.lock();
            if let Some(value) = inner.values.get(key).and_then(|v| v.downcast_ref::<Option<T>>()) {
                return Ok(value.clone());
            }
            inner.generation
        };
        let value = load()?;
        let mut inner = self.lock();
        if inner.generation == generation {
            if inner.values.len() >= MAX_ENTRIES {
                inner.values.clear();
            }
            inner.values.insert(key.to_vec(), Arc::new(value.clone()));
        }
        Ok(value)
    }

    /// The value derived from every key under `prefix`: the cached one, or `load`'s (cached for the next caller).
    /// Any write under `prefix` drops it.
    pub fn get_or_load_scan<T, E>(&self, prefix: &[u8], load: impl FnOnce() -> Result<T, E>) -> Result<T, E>
    where
        T: Clone + Send + Sync + 'static,
    {
        let generation = {
            let inner = self.lock();
            let cached = inner.scans.iter().find(|(p, _)| p.as_slice() == prefix).map(|(_, value)| value);
            if let Some(value) = cached.and_then(|v| v.downcast_ref::<T>()) {
                return Ok(value.clone());
            }
            inner.generation
        };
        let value = load()?;
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.scans.retain(|(p, _)| p.as_slice() != prefix);
            inner.scans.push((prefix.to_vec(), Arc::new(value.clone())));
        }
        Ok(value)
    }

    /// Forgets everything cached about `keys` after they were written.
    pub fn invalidate<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) {
        let mut inner = self.lock();
        inner.generation += 1;
        if inner.values.is_empty() && inner.scans.is_empty() {
            return;
        }
        for key in keys {
            inner.values.remove(key);
            if inner.scans.iter().any(|(prefix, _)| key.starts_with(prefix)) {
                inner.scans.retain(|(prefix, _)| !key.starts_with(prefix));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(value: Option<&str>) -> impl FnOnce() -> Result<Option<String>, ()> + '_ {
        move || Ok(value.map(str::to_string))
    }

    #[test]
    fn values_and_absence_are_cached_until_their_key_is_written() {
        let cache = ReadCache::default();
        assert_eq!(cache.get_or_load(b"a", load(Some("one"))), Ok(Some("one".into())));
        assert_eq!(cache.get_or_load(b"a", load(Some("changed"))), Ok(Some("one".into())), "served from cache");
        assert_eq!(cache.get_or_load(b"b", load(None)), Ok(None));
        assert_eq!(cache.get_or_load(b"b", load(Some("new"))), Ok(None), "absence is cached");

        cache.invalidate([b"b".as_slice()]);
        assert_eq!(cache.get_or_load(b"a", load(Some("changed"))), Ok(Some("one".into())), "other keys stay");
        assert_eq!(cache.get_or_load(b"b", load(Some("new"))), Ok(Some("new".into())));
        // Another type under the same key is loaded, not mistaken for the cached one.
        assert_eq!(cache.get_or_load(b"a", || Ok::<_, ()>(Some(7u32))), Ok(Some(7)));
    }

    #[test]
    fn a_scan_is_cached_until_a_key_under_its_prefix_is_written() {
        let cache = ReadCache::default();
        let scan = |value: u32| move || Ok::<_, ()>(value);
        assert_eq!(cache.get_or_load_scan(b"mount/", scan(1)), Ok(1));
        assert_eq!(cache.get_or_load_scan(b"mount/", scan(2)), Ok(1), "served from cache");
        cache.invalidate([b"kv/mount/x".as_slice(), b"mounts".as_slice()]);
        assert_eq!(cache.get_or_load_scan(b"mount/", scan(2)), Ok(1), "writes outside the prefix keep it");
        cache.invalidate([b"mount/secret/".as_slice()]);
        assert_eq!(cache.get_or_load_scan(b"mount/", scan(3)), Ok(3));
    }

    #[test]
    fn a_load_that_overlaps_a_write_is_not_cached() {
        let cache = ReadCache::default();
        // The load read the old value; the write lands (and invalidates) before the load inserts.
        let stale = cache.get_or_load(b"k", || {
            cache.invalidate([b"k".as_slice()]);
            Ok::<_, ()>(Some("old".to_string()))
        });
        assert_eq!(stale, Ok(Some("old".into())), "the caller still gets what it read");
        assert_eq!(cache.get_or_load(b"k", load(Some("new"))), Ok(Some("new".into())), "but it was not cached");
    }
}
