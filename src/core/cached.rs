//! Content a pull-through mirror brings in from its upstream, stored
//! beside pushed content and marked as the mirror's (`src/mirror` decides
//! what to fetch; this is how it is kept). Blobs come in through the same
//! upload path as a push (hashed as they stream, checked against their
//! digest, synced, then committed); manifests are checked against their
//! digest and stored without the push's demand that what they reference
//! be here, since a cache fetches layers and an index's children as
//! clients ask for them. Cached rows are never garbage collection's: a
//! mirror's size cap evicts them, least recently pulled first.

use std::sync::Arc;

use crate::core::hashing::digest_bytes;
use crate::core::manifest;
use crate::core::names::{Digest, RepoName, Tag};
use crate::core::{Registry, RegistryError, Result};
use crate::meta::{CachedItem, CachedPull, CachedTag, CountDelta, ManifestRow};

/// Cached items looked at per query while evicting.
const EVICT_BATCH: u32 = 200;

/// What an eviction took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    pub manifests: u64,
    pub blob_links: u64,
    /// Bytes of the blobs whose bytes went (nothing else kept them).
    pub bytes_freed: u64,
    /// The mirror's bytes after it.
    pub usage: u64,
}

impl Registry {
    /// Stores `body`, fetched from `mirror`'s upstream, as the manifest
    /// `digest` of `repo`, tagged `tag` if given. Bytes that do not hash to
    /// `digest` are refused and nothing is stored.
    pub async fn store_cached_manifest(
        &self,
        repo: &RepoName,
        mirror: &str,
        tag: Option<&Tag>,
        digest: &Digest,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Arc<ManifestRow>> {
        let limit = self.options().max_manifest_bytes;
        if body.len() as u64 > limit {
            return Err(RegistryError::ManifestTooLarge {
                size: body.len() as u64,
                limit,
            });
        }
        let actual = digest_bytes(digest.algorithm(), body);
        if &actual != digest {
            return Err(RegistryError::DigestInvalid(format!(
                "the upstream's manifest hashes to {actual}, not {digest}"
            )));
        }
        let parsed = manifest::parse(content_type, body)?;
        let references = parsed.references();
        let record = parsed.record(digest, body, &references);
        self.meta
            .put_cached_manifest(repo, mirror, &record, tag)
            .await?;
        self.cache.forget_manifests(repo.as_str());
        Ok(Arc::new(ManifestRow {
            digest: digest.clone(),
            media_type: parsed.media_type,
            content: bytes::Bytes::copy_from_slice(body),
        }))
    }

    /// A cached tag of `repo`: its digest and when it was last confirmed.
    pub async fn cached_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<CachedTag>> {
        self.meta.cached_tag(repo, tag).await
    }

    /// Records that the upstream still has `tag` at `digest`; false if the
    /// cached tag moved meanwhile.
    pub async fn confirm_cached_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool> {
        self.meta.confirm_cached_tag(repo, tag, digest).await
    }

    /// Marks a blob just committed to `repo` by a mirror's fetch as the
    /// mirror's.
    pub async fn mark_cached_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        mirror: &str,
    ) -> Result<()> {
        self.meta.mark_cached_blob(repo, digest, mirror).await
    }

    /// Links a blob berth already stores into `repo` as `mirror`'s, without
    /// fetching its bytes again; false if berth does not store it.
    pub async fn link_cached_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        mirror: &str,
    ) -> Result<bool> {
        if !self.mount_blob(repo, digest, None).await? {
            return Ok(false);
        }
        self.meta.mark_cached_blob(repo, digest, mirror).await?;
        Ok(true)
    }

    /// The size of a blob if berth stores it, in any repository.
    pub async fn stored_blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        self.meta.blob_size(digest).await
    }

    /// Opens upload `id`'s bytes while a fetch writes them (local disk
    /// only).
    pub async fn follow_upload(&self, id: &str) -> Result<Option<tokio::fs::File>> {
        self.blobs.open_upload(id).await
    }

    /// Writes when cached content was pulled, and per-repository counts.
    pub async fn record_mirror_use(
        &self,
        pulls: &[CachedPull],
        counts: &[CountDelta],
    ) -> Result<()> {
        if pulls.is_empty() && counts.is_empty() {
            return Ok(());
        }
        self.meta.record_mirror_use(pulls, counts).await
    }

    /// The bytes `mirror` holds.
    pub async fn mirror_usage(&self, mirror: &str) -> Result<u64> {
        self.meta.mirror_usage(mirror).await
    }

    /// Evicts `mirror`'s least recently pulled manifests and blob links
    /// until it holds at most `max_bytes`, then removes the bytes of the
    /// blobs nothing else keeps (a link elsewhere, a pushed manifest), as
    /// garbage collection would: marked first, then the bytes, then the
    /// row, so a push of the same blob meanwhile uploads it again.
    pub async fn evict_cached(&self, mirror: &str, max_bytes: u64) -> Result<Evicted> {
        let mut evicted = Evicted::default();
        let mut usage = self.meta.mirror_usage(mirror).await?;
        let mut unlinked: Vec<String> = Vec::new();
        while usage > max_bytes {
            let batch = self.meta.least_recently_pulled(mirror, EVICT_BATCH).await?;
            if batch.is_empty() {
                break;
            }
            // Within a batch, the bytes each item frees are estimated (a
            // blob two cached repositories link goes with the second);
            // the next round starts from the real figure.
            let mut estimate = usage;
            for item in batch {
                if estimate <= max_bytes {
                    break;
                }
                if !self.meta.evict_cached(&item).await? {
                    continue;
                }
                estimate = estimate.saturating_sub(item.size);
                self.forget_evicted(&item, &mut evicted, &mut unlinked);
            }
            usage = self.meta.mirror_usage(mirror).await?;
        }
        evicted.usage = usage;
        unlinked.sort();
        unlinked.dedup();
        let marked = self.meta.mark_evicted_blobs(&unlinked).await?;
        if !marked.is_empty() {
            evicted.bytes_freed = marked.iter().map(|(_, size)| size).sum();
            // Readers here and in other processes drop the blobs from their
            // caches before the bytes go.
            self.cache_changed().await?;
            tokio::time::sleep(super::gc::EXTERNAL_CACHE_DELAY).await;
            self.remove_marked_blobs(marked).await?;
        }
        if evicted != Evicted::default() {
            tracing::info!(mirror, ?evicted, "evicted cached content");
        }
        Ok(evicted)
    }

    fn forget_evicted(&self, item: &CachedItem, evicted: &mut Evicted, unlinked: &mut Vec<String>) {
        if item.manifest {
            self.cache.forget_manifests(&item.repository);
            evicted.manifests += 1;
        } else {
            self.cache.forget_blob(&item.repository, &item.digest);
            evicted.blob_links += 1;
            unlinked.push(item.digest.clone());
        }
    }
}
