//! The hottest reads, answered from memory: manifests by reference and
//! blob sizes per repository. A pull otherwise crosses to a database thread
//! and back for each of them, which costs more than everything else the
//! request does.
//!
//! On an SQLite file the cache is exact, not eventually consistent: this
//! process is the only writer of its metadata store, and every write that
//! could change a cached answer invalidates it after committing. A
//! generation counter stops a read that began before such a write from
//! caching what it read. Replicas sharing PostgreSQL read tags fresh (they
//! move), and learn of deletes made elsewhere through the cache epoch the
//! deleting transaction bumps, within a poll interval.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::meta::ManifestRow;

/// Entries kept per map; past this the map starts over.
const CAPACITY: usize = 10_000;

struct Map<K, V> {
    entries: RwLock<HashMap<K, V>>,
}

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    fn new() -> Self {
        Map {
            entries: RwLock::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        self.entries.read().expect("cache lock").get(key).cloned()
    }

    fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.write().expect("cache lock");
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, value);
    }

    fn retain(&self, keep: impl Fn(&K) -> bool) {
        self.entries
            .write()
            .expect("cache lock")
            .retain(|k, _| keep(k));
    }
}

/// `(repository, reference)` and `(repository, digest)` keys.
type Key = (String, String);

pub struct ReadCache {
    generation: AtomicU64,
    manifests: Map<Key, Arc<ManifestRow>>,
    blob_sizes: Map<Key, u64>,
}

/// Taken before reading the store; an answer read under a stale ticket is
/// not cached.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl ReadCache {
    pub fn new() -> ReadCache {
        ReadCache {
            generation: AtomicU64::new(0),
            manifests: Map::new(),
            blob_sizes: Map::new(),
        }
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::Acquire))
    }

    fn current(&self, ticket: Ticket) -> bool {
        self.generation.load(Ordering::Acquire) == ticket.0
    }

    pub fn manifest(&self, repo: &str, reference: &str) -> Option<Arc<ManifestRow>> {
        self.manifests.get(&(repo.to_owned(), reference.to_owned()))
    }

    pub fn put_manifest(&self, ticket: Ticket, repo: &str, reference: &str, row: Arc<ManifestRow>) {
        if self.current(ticket) {
            self.manifests
                .insert((repo.to_owned(), reference.to_owned()), row);
        }
    }

    pub fn blob_size(&self, repo: &str, digest: &str) -> Option<u64> {
        self.blob_sizes.get(&(repo.to_owned(), digest.to_owned()))
    }

    pub fn put_blob_size(&self, ticket: Ticket, repo: &str, digest: &str, size: u64) {
        if self.current(ticket) {
            self.blob_sizes
                .insert((repo.to_owned(), digest.to_owned()), size);
        }
    }

    /// After a write committed that changes what `repo`'s manifests or tags
    /// answer.
    pub fn forget_manifests(&self, repo: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.manifests.retain(|(r, _)| r != repo);
    }

    /// After `repo` was deleted with everything in it.
    pub fn forget_repository(&self, repo: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.manifests.retain(|(r, _)| r != repo);
        self.blob_sizes.retain(|(r, _)| r != repo);
    }

    /// After a change this process cannot pin down (another process
    /// collected garbage).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.manifests.retain(|_| false);
        self.blob_sizes.retain(|_| false);
    }

    /// After a blob was unlinked from `repo`.
    pub fn forget_blob(&self, repo: &str, digest: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.blob_sizes.retain(|(r, d)| !(r == repo && d == digest));
    }
}

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Arc<ManifestRow> {
        Arc::new(ManifestRow {
            digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                .parse()
                .unwrap(),
            media_type: "m".into(),
            content: bytes::Bytes::from_static(b"{}"),
        })
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_cached() {
        let cache = ReadCache::new();
        let before = cache.ticket();
        cache.forget_manifests("a");
        cache.put_manifest(before, "a", "latest", row());
        assert!(cache.manifest("a", "latest").is_none());
        let after = cache.ticket();
        cache.put_manifest(after, "a", "latest", row());
        assert!(cache.manifest("a", "latest").is_some());
        cache.forget_manifests("b");
        assert!(cache.manifest("a", "latest").is_some());
        cache.forget_manifests("a");
        assert!(cache.manifest("a", "latest").is_none());
    }

    #[test]
    fn blob_sizes_are_forgotten_per_repository_and_digest() {
        let cache = ReadCache::new();
        let t = cache.ticket();
        cache.put_blob_size(t, "a", "d1", 5);
        cache.put_blob_size(t, "b", "d1", 5);
        cache.forget_blob("a", "d1");
        assert_eq!(cache.blob_size("a", "d1"), None);
        assert_eq!(cache.blob_size("b", "d1"), Some(5));
    }
}
