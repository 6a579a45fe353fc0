//! The hottest reads, answered from memory: manifests by reference, tag
//! lists and blob sizes, per repository. A pull otherwise crosses to a
//! database thread and back for each of them, which costs more than
//! everything else the request does.
//!
//! On an SQLite file the cache is exact, not eventually consistent: this
//! process is the only writer of its metadata store, and every write that
//! could change a cached answer invalidates it after committing. A
//! generation counter stops a read that began before such a write from
//! caching what it read. Replicas sharing PostgreSQL read tags fresh (they
//! move), and learn of deletes made elsewhere through the cache epoch the
//! deleting transaction bumps, within a poll interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::meta::ManifestRow;

/// Entries (manifests, tag names, blob sizes) kept in all; past this the
/// cache starts over. Bounds its memory to a few MiB.
const CAPACITY: usize = 50_000;

/// What is cached of one repository.
#[derive(Default)]
struct Repository {
    /// By reference: a tag or a digest.
    manifests: HashMap<String, Arc<ManifestRow>>,
    /// Every tag, in the order the tag list pages through them.
    tags: Option<Arc<Vec<String>>>,
    blob_sizes: HashMap<String, u64>,
}

impl Repository {
    fn entries(&self) -> usize {
        self.manifests.len() + self.tags.as_ref().map_or(0, |t| t.len()) + self.blob_sizes.len()
    }
}

#[derive(Default)]
struct Repositories {
    by_name: HashMap<String, Repository>,
    entries: usize,
}

impl Repositories {
    /// The entry of `repo`, to add `adding` entries to; the whole cache
    /// starts over first if that would pass the capacity.
    fn entry(&mut self, repo: &str, adding: usize) -> &mut Repository {
        if self.entries + adding > CAPACITY {
            self.by_name.clear();
            self.entries = 0;
        }
        self.entries += adding;
        self.by_name.entry(repo.to_owned()).or_default()
    }

    fn remove(&mut self, repo: &str) -> Option<Repository> {
        let removed = self.by_name.remove(repo)?;
        self.entries -= removed.entries();
        Some(removed)
    }
}

pub struct ReadCache {
    generation: AtomicU64,
    repos: RwLock<Repositories>,
}

/// Taken before reading the store; an answer read under a stale ticket is
/// not cached.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl ReadCache {
    pub fn new() -> ReadCache {
        ReadCache {
            generation: AtomicU64::new(0),
            repos: RwLock::new(Repositories::default()),
        }
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::Acquire))
    }

    /// A number that changes with every write that could change a cached
    /// answer: what other caches of derived answers key on.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn current(&self, ticket: Ticket) -> bool {
        self.generation.load(Ordering::Acquire) == ticket.0
    }

    fn read<T>(&self, repo: &str, f: impl FnOnce(&Repository) -> Option<T>) -> Option<T> {
        f(self.repos.read().expect("cache lock").by_name.get(repo)?)
    }

    /// Runs `f` on `repo`'s entry if nothing was written since `ticket`.
    fn write(&self, ticket: Ticket, repo: &str, adding: usize, f: impl FnOnce(&mut Repository)) {
        let mut repos = self.repos.write().expect("cache lock");
        // Checked under the lock: a write that invalidates takes it too.
        if self.current(ticket) {
            f(repos.entry(repo, adding));
        }
    }

    /// After a write committed: no read that began before it caches.
    fn invalidate(&self, f: impl FnOnce(&mut Repositories)) {
        let mut repos = self.repos.write().expect("cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        f(&mut repos);
    }

    pub fn manifest(&self, repo: &str, reference: &str) -> Option<Arc<ManifestRow>> {
        self.read(repo, |r| r.manifests.get(reference).cloned())
    }

    pub fn put_manifest(&self, ticket: Ticket, repo: &str, reference: &str, row: Arc<ManifestRow>) {
        self.write(ticket, repo, 1, |r| {
            r.manifests.insert(reference.to_owned(), row);
        });
    }

    /// Every tag of `repo`, if cached.
    pub fn tags(&self, repo: &str) -> Option<Arc<Vec<String>>> {
        self.read(repo, |r| r.tags.clone())
    }

    pub fn put_tags(&self, ticket: Ticket, repo: &str, tags: Arc<Vec<String>>) {
        self.write(ticket, repo, tags.len(), |r| r.tags = Some(tags));
    }

    pub fn blob_size(&self, repo: &str, digest: &str) -> Option<u64> {
        self.read(repo, |r| r.blob_sizes.get(digest).copied())
    }

    pub fn put_blob_size(&self, ticket: Ticket, repo: &str, digest: &str, size: u64) {
        self.write(ticket, repo, 1, |r| {
            r.blob_sizes.insert(digest.to_owned(), size);
        });
    }

    /// After a write committed that changes what `repo`'s manifests or tags
    /// answer.
    pub fn forget_manifests(&self, repo: &str) {
        self.invalidate(|repos| {
            if let Some(mut r) = repos.remove(repo) {
                // Blob sizes stand: put them back.
                r.manifests.clear();
                r.tags = None;
                if !r.blob_sizes.is_empty() {
                    let adding = r.blob_sizes.len();
                    *repos.entry(repo, adding) = r;
                }
            }
        });
    }

    /// After `repo` was deleted with everything in it.
    pub fn forget_repository(&self, repo: &str) {
        self.invalidate(|repos| {
            repos.remove(repo);
        });
    }

    /// After a change this process cannot pin down (another process
    /// collected garbage).
    pub fn clear(&self) {
        self.invalidate(|repos| *repos = Repositories::default());
    }

    /// After a blob was unlinked from `repo`.
    pub fn forget_blob(&self, repo: &str, digest: &str) {
        self.invalidate(|repos| {
            if let Some(r) = repos.by_name.get_mut(repo)
                && r.blob_sizes.remove(digest).is_some()
            {
                repos.entries -= 1;
            }
        });
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
        cache.put_tags(before, "a", Arc::new(vec!["latest".into()]));
        assert!(cache.manifest("a", "latest").is_none());
        assert!(cache.tags("a").is_none());
        let after = cache.ticket();
        cache.put_manifest(after, "a", "latest", row());
        cache.put_tags(after, "a", Arc::new(vec!["latest".into()]));
        assert!(cache.manifest("a", "latest").is_some());
        cache.forget_manifests("b");
        assert!(cache.manifest("a", "latest").is_some());
        assert!(cache.tags("a").is_some());
        cache.forget_manifests("a");
        assert!(cache.manifest("a", "latest").is_none());
        assert!(cache.tags("a").is_none());
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
        // A push to a repository keeps its blob sizes.
        cache.forget_manifests("b");
        assert_eq!(cache.blob_size("b", "d1"), Some(5));
        cache.forget_repository("b");
        assert_eq!(cache.blob_size("b", "d1"), None);
    }

    #[test]
    fn the_cache_starts_over_past_its_capacity() {
        let cache = ReadCache::new();
        let t = cache.ticket();
        cache.put_blob_size(t, "first", "d", 1);
        let many = Arc::new(vec![String::new(); CAPACITY]);
        cache.put_tags(t, "big", many);
        assert_eq!(cache.blob_size("first", "d"), None);
        assert!(cache.tags("big").is_some());
        assert_eq!(cache.repos.read().unwrap().entries, CAPACITY);
    }
}
