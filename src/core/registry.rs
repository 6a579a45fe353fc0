//! `Registry`: the push and pull operations of the distribution API over a
//! `BlobStore` (bytes) and a `MetaStore` (what exists). The order of every
//! write is bytes first, synced, then the metadata row: a crash in between
//! leaves at worst an invisible file, never a visible row without bytes.
//! Every push and delete writes its event in the same transaction.

use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::core::event::{Action, Event, LazyOrigin, Origin};
use crate::core::hashing::{UploadHasher, digest_bytes};
use crate::core::manifest::{self, ParsedManifest};
use crate::core::names::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::core::read_cache::ReadCache;
use crate::core::retention::RetentionPolicy;
use crate::core::upload_locks::UploadLocks;
use crate::core::{BodyStream, RegistryError, Result};
use crate::meta::{ManifestRow, MetaStore};
use crate::storage::BlobStore;
use crate::storage::space::DiskSpace;

/// Limits on what clients may send, and what the registry records.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    pub max_manifest_bytes: u64,
    /// Whether clients may delete manifests, tags and blobs.
    pub delete_enabled: bool,
    /// Whether each manifest GET writes a pull event.
    pub record_pulls: bool,
    /// The free space of the data directory's filesystem, where uploads
    /// (on local disk) and the SQLite database live.
    pub disk: Option<DiskSpace>,
}

/// How long an upload stays busy after the replica writing to it died:
/// short, as its client waits to go on elsewhere.
const UPLOAD_LEASE_MS: i64 = 6_000;

/// How long each readiness check may take before it counts as failed.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub struct Registry {
    pub(super) blobs: BlobStore,
    pub(super) meta: MetaStore,
    limits: RegistryOptions,
    pub(super) upload_locks: UploadLocks,
    /// Woken after each event is committed, so delivery starts at once.
    pub(super) events_written: Arc<Notify>,
    pub(super) cache: ReadCache,
    /// When each repository was last pulled, not yet written to the store:
    /// a write per pull would cost more than the pull.
    pulls: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// An inclusive byte range of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// A blob opened for reading: the whole blob's size, the range asked for,
/// and the bytes (of that range) or where to fetch them.
pub struct BlobRead {
    pub size: u64,
    pub range: Option<ByteRange>,
    pub body: BlobBody,
}

pub enum BlobBody {
    /// The bytes, streamed from storage.
    Stream(crate::storage::ByteStream),
    /// A URL the client fetches the bytes from itself (a presigned S3 URL).
    Redirect(String),
}

/// What a manifest push stored.
pub struct ManifestPushed {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

impl Registry {
    pub fn new(blobs: BlobStore, meta: MetaStore, limits: RegistryOptions) -> Registry {
        Registry {
            blobs,
            meta,
            limits,
            upload_locks: UploadLocks::default(),
            events_written: Arc::new(Notify::new()),
            cache: ReadCache::new(),
            pulls: Default::default(),
        }
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.limits
    }

    /// Whether the metadata store answers and blob storage takes writes:
    /// each part's name and, if it failed, why.
    pub async fn readiness(&self) -> Vec<(&'static str, Option<String>)> {
        let disk = match &self.limits.disk {
            Some(disk) => {
                let disk = disk.clone();
                tokio::task::spawn_blocking(move || disk.full())
                    .await
                    .unwrap_or_else(|e| Some(format!("free space check: {e}")))
            }
            None => None,
        };
        vec![
            ("disk", disk),
            (
                "metadata",
                // A probe answers quickly, whatever the pool waits for.
                match tokio::time::timeout(READY_TIMEOUT, self.meta.ping()).await {
                    Ok(pinged) => pinged.err().map(|e| e.to_string()),
                    Err(_) => Some(format!(
                        "the metadata store did not answer within {} s",
                        READY_TIMEOUT.as_secs()
                    )),
                },
            ),
            (
                "blobs",
                match tokio::time::timeout(READY_TIMEOUT, self.blobs.check_writable()).await {
                    Ok(checked) => checked.err().map(|e| e.to_string()),
                    Err(_) => Some(format!(
                        "blob storage did not answer within {} s",
                        READY_TIMEOUT.as_secs()
                    )),
                },
            ),
        ]
    }

    /// What is stored and what waits for delivery, for the metrics.
    pub async fn usage(&self) -> Result<crate::meta::Usage> {
        self.meta.usage().await
    }

    /// Notified whenever an event was written to the outbox.
    pub fn events_written(&self) -> Arc<Notify> {
        self.events_written.clone()
    }

    // ---- uploads -------------------------------------------------------

    /// Opens a new upload session in `repo` and returns its id. The
    /// session survives a power cut once this returns.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<String> {
        self.open_upload(repo, true).await
    }

    async fn open_upload(&self, repo: &RepoName, durable: bool) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.blobs.create_upload(&id, durable).await?;
        self.meta
            .create_upload(&id, repo, &UploadHasher::default().save(), durable)
            .await?;
        Ok(id)
    }

    /// Pushes a whole blob in one request (`POST ?digest=`): an upload no
    /// client sees, so nothing of it needs to outlive a power cut until
    /// the blob is committed, which is synced as any commit is.
    pub async fn push_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: impl BodyStream,
    ) -> Result<()> {
        // A blob that cannot fit is refused before a byte of it is written.
        if let (Some(length), Some(disk)) = (length, &self.limits.disk)
            && matches!(self.blobs, BlobStore::Fs(_))
            && !disk.fits(length)
        {
            let free = disk.available().map(|(free, _)| free).unwrap_or(0);
            return Err(RegistryError::StorageFull(format!(
                "a blob of {length} bytes does not fit in the {free} bytes free"
            )));
        }
        let id = self.open_upload(repo, false).await?;
        let pushed = self
            .finish_upload(repo, &id, digest, Some((Some(0), length, body)))
            .await;
        if pushed.is_err() {
            // A body cut short or refused, or a full disk: its bytes go
            // now, not at the next garbage collection (a mismatched digest
            // discarded them already). The bytes go first: on a full disk
            // the metadata may not take even a delete until they have.
            if let Ok(row) = self.upload_row(repo, &id).await {
                let state = row.storage_state.as_deref();
                if let Err(e) = self.blobs.delete_upload(&id, state).await {
                    tracing::warn!(upload = id, error = %e, "discarding a failed push's bytes");
                }
                if let Err(e) = self.meta.delete_upload(&id).await {
                    tracing::warn!(upload = id, error = %e, "discarding a failed push");
                }
            }
        }
        pushed
    }

    /// How many bytes the upload holds.
    pub async fn upload_size(&self, repo: &RepoName, id: &str) -> Result<u64> {
        Ok(self.upload_row(repo, id).await?.size)
    }

    async fn upload_row(&self, repo: &RepoName, id: &str) -> Result<crate::meta::UploadRow> {
        // Ids name files and objects in storage: one berth could not have
        // issued is unknown before it reaches either.
        if !is_upload_id(id) {
            return Err(RegistryError::BlobUploadUnknown);
        }
        self.meta
            .upload(id, repo)
            .await?
            .ok_or(RegistryError::BlobUploadUnknown)
    }

    /// Appends a chunk to an upload. `start` is where the client says the
    /// chunk begins (from Content-Range); `length` is its declared length.
    /// Returns the upload's new size.
    pub async fn append_chunk(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        length: Option<u64>,
        body: impl BodyStream,
    ) -> Result<u64> {
        let _guard = self.upload_locks.lock(id).await;
        self.exclusively(repo, id, self.append_locked(repo, id, start, length, body))
            .await
    }

    /// Runs `work` on upload `id` while no other replica sharing the
    /// metadata works on it: two writers at one offset would mix their
    /// bytes in storage before the metadata chose one. (In this process,
    /// `upload_locks` queues them.) The second writer is told where the
    /// upload stands, as for a chunk out of order.
    async fn exclusively<T>(
        &self,
        repo: &RepoName,
        id: &str,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if !self.meta.is_shared() {
            return work.await;
        }
        let lease = format!("upload:{id}");
        let holder = uuid::Uuid::new_v4().to_string();
        if !self
            .meta
            .hold_lease(&lease, &holder, UPLOAD_LEASE_MS)
            .await?
        {
            let offset = self.upload_row(repo, id).await?.size;
            return Err(RegistryError::UploadBusy { offset });
        }
        let result = self
            .meta
            .renewing(&lease, &holder, UPLOAD_LEASE_MS, work)
            .await;
        if let Err(e) = self.meta.release_lease(&lease, &holder).await {
            tracing::warn!(upload = id, error = %e, "releasing an upload's lease");
        }
        result
    }

    async fn append_locked(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        length: Option<u64>,
        body: impl BodyStream,
    ) -> Result<u64> {
        let row = self.upload_row(repo, id).await?;
        if let Some(start) = start
            && start != row.size
        {
            return Err(RegistryError::ChunkOutOfOrder {
                offset: row.size,
                start,
            });
        }
        let hasher = UploadHasher::restore(&row.hash_state).ok_or_else(|| {
            RegistryError::Internal(format!("upload {id}: unreadable hash state"))
        })?;
        let old_state = row.storage_state.as_deref();
        let appended = self
            .blobs
            .append(id, row.size, old_state, hasher, body)
            .await?;
        if let Some(length) = length
            && length != appended.written
        {
            return Err(RegistryError::SizeInvalid(format!(
                "chunk declared {length} bytes but carried {}",
                appended.written
            )));
        }
        let size = row.size + appended.written;
        if !self
            .meta
            .advance_upload(
                id,
                row.size,
                size,
                &appended.hasher.save(),
                appended.state.as_deref(),
            )
            .await?
        {
            // Someone else moved the upload on (or ended it) meanwhile.
            let offset = self.upload_row(repo, id).await?.size;
            return Err(RegistryError::ChunkOutOfOrder {
                offset,
                start: row.size,
            });
        }
        self.blobs
            .release_superseded(id, old_state, appended.state.as_deref())
            .await;
        Ok(size)
    }

    /// Ends an upload: appends the optional last chunk, checks the whole
    /// blob against `digest`, and makes the blob visible in `repo`. On a
    /// digest mismatch the upload is discarded and nothing becomes visible.
    pub async fn finish_upload<B: BodyStream>(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        last_chunk: Option<(Option<u64>, Option<u64>, B)>,
    ) -> Result<()> {
        let _guard = self.upload_locks.lock(id).await;
        self.exclusively(repo, id, self.finish_locked(repo, id, digest, last_chunk))
            .await
    }

    async fn finish_locked<B: BodyStream>(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        last_chunk: Option<(Option<u64>, Option<u64>, B)>,
    ) -> Result<()> {
        let size = match last_chunk {
            Some((start, length, body)) => {
                self.append_locked(repo, id, start, length, body).await?
            }
            None => self.upload_row(repo, id).await?.size,
        };
        let row = self.upload_row(repo, id).await?;
        let state = row.storage_state.as_deref();
        // The streamed SHA-256 is checked before storage does any work.
        if digest.algorithm() == Algorithm::Sha256 {
            let actual = UploadHasher::restore(&row.hash_state)
                .ok_or_else(|| {
                    RegistryError::Internal(format!("upload {id}: unreadable hash state"))
                })?
                .finish();
            self.check_upload_digest(id, state, &actual, digest).await?;
        }
        self.blobs.seal_upload(id, state, size).await?;
        if digest.algorithm() != Algorithm::Sha256 {
            let actual = self.blobs.hash_upload(id, state, digest).await?;
            self.check_upload_digest(id, state, &actual, digest).await?;
        }
        self.blobs.commit_upload(id, state, size, digest).await?;
        self.meta
            .commit_blob(repo, digest, size, Some(id), self.blobs.has_blob(digest))
            .await?;
        self.blobs.release_upload(id, state).await;
        Ok(())
    }

    /// On a mismatch, discards the upload: nothing becomes visible.
    async fn check_upload_digest(
        &self,
        id: &str,
        state: Option<&str>,
        actual: &Digest,
        expected: &Digest,
    ) -> Result<()> {
        if actual == expected {
            return Ok(());
        }
        self.discard_upload(id, state).await?;
        Err(RegistryError::DigestInvalid(format!(
            "the uploaded bytes hash to {actual}, not {expected}"
        )))
    }

    /// Cancels an upload and drops its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let _guard = self.upload_locks.lock(id).await;
        self.exclusively(repo, id, async {
            let row = self.upload_row(repo, id).await?;
            self.discard_upload(id, row.storage_state.as_deref()).await
        })
        .await
    }

    async fn discard_upload(&self, id: &str, state: Option<&str>) -> Result<()> {
        // The row goes first: without it the bytes are invisible garbage.
        self.meta.delete_upload(id).await?;
        self.blobs.delete_upload(id, state).await
    }

    /// Links a blob berth already stores into `repo`, if the client may see
    /// it: from `from` when named, else from anywhere. Returns whether it
    /// was mounted; if not, the client uploads it.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<bool> {
        let size = match from {
            Some(from) => self.meta.blob_in_repository(from, digest).await?,
            None => self.meta.blob_size(digest).await?,
        };
        match size {
            Some(size) => {
                match self
                    .meta
                    .commit_blob(repo, digest, size, None, self.blobs.has_blob(digest))
                    .await
                {
                    // Being collected: the client uploads it instead.
                    Err(RegistryError::BlobBeingCollected(_)) => return Ok(false),
                    other => other?,
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    // ---- blobs ---------------------------------------------------------

    /// The size of a blob visible in `repo`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        if let Some(size) = self.cache.blob_size(repo.as_str(), digest.as_str()) {
            return Ok(size);
        }
        let ticket = self.cache.ticket();
        let size = self
            .meta
            .blob_in_repository(repo, digest)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.to_string()))?;
        self.cache
            .put_blob_size(ticket, repo.as_str(), digest.as_str(), size);
        Ok(size)
    }

    /// Opens a blob of `repo` for reading, whole or the part `range` selects.
    /// A whole blob may be answered with a URL to fetch it from, when the
    /// storage hands those out.
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<RangeRequest>,
    ) -> Result<BlobRead> {
        let size = self.blob_size(repo, digest).await?;
        let range = range.map(|r| r.resolve(size)).transpose()?;
        if range.is_none()
            && let Some(url) = self.blobs.blob_url(digest).await?
        {
            return Ok(BlobRead {
                size,
                range,
                body: BlobBody::Redirect(url),
            });
        }
        let stream = match self
            .blobs
            .read_blob(digest, range.map(|r| (r.start, r.end)))
            .await
        {
            // Collected since the size was cached: gone, not broken.
            Err(_) if !self.meta.blob_known(digest).await? => {
                self.cache.forget_blob(repo.as_str(), digest.as_str());
                return Err(RegistryError::BlobUnknown(digest.to_string()));
            }
            other => other?,
        };
        Ok(BlobRead {
            size,
            range,
            body: BlobBody::Stream(stream),
        })
    }

    /// A small blob of `repo` whole (a signature payload), read from
    /// storage: at most `limit` bytes, or SIZE_INVALID.
    pub async fn read_small_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>> {
        use futures_util::StreamExt;
        let size = self.blob_size(repo, digest).await?;
        if size > limit {
            return Err(RegistryError::SizeInvalid(format!(
                "blob {digest} has {size} bytes, more than the {limit} read whole"
            )));
        }
        let mut stream = self.blobs.read_blob(digest, None).await?;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
            if bytes.len() as u64 > limit {
                return Err(RegistryError::Internal(format!(
                    "blob {digest} holds more bytes than its recorded {size}"
                )));
            }
        }
        Ok(bytes)
    }

    /// Changes whenever something a manifest read answers may have changed
    /// (a push, a delete, a cache reset): answers derived from manifests
    /// may be cached under it.
    pub fn generation(&self) -> u64 {
        self.cache.generation()
    }

    /// Whether replicas share this metadata store, so that writes made
    /// elsewhere do not move [`Registry::generation`].
    pub fn shares_store(&self) -> bool {
        self.meta.is_shared()
    }

    // ---- manifests -----------------------------------------------------

    /// Stores a manifest under `reference`, after checking it is well formed
    /// and that everything it points at is in `repo`.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: &[u8],
        origin: &Origin,
    ) -> Result<ManifestPushed> {
        let limit = self.limits.max_manifest_bytes;
        if body.len() as u64 > limit {
            return Err(RegistryError::ManifestTooLarge {
                size: body.len() as u64,
                limit,
            });
        }
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = digest_bytes(expected.algorithm(), body);
                if &actual != expected {
                    return Err(RegistryError::DigestInvalid(format!(
                        "the manifest hashes to {actual}, not {expected}"
                    )));
                }
                actual
            }
            Reference::Tag(_) => digest_bytes(Algorithm::Sha256, body),
        };
        let parsed = manifest::parse(content_type, body)?;
        self.check_references(repo, &parsed).await?;
        let tag = match reference {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        };
        let references = parsed.references();
        let record = parsed.record(&digest, body, &references);
        let mut event = Event::new(Action::Push, repo.as_str(), origin);
        event.digest = Some(digest.to_string());
        event.media_type = Some(parsed.media_type.clone());
        event.size = Some(body.len() as u64);
        event.tag = tag.map(|t| t.as_str().to_owned());
        let retention = self.meta.put_manifest(repo, &record, tag, &event).await?;
        self.cache.forget_manifests(repo.as_str());
        self.events_written.notify_one();
        if let (Some(_), Some(policy)) = (tag, retention) {
            // The push stands whatever becomes of the policy.
            if let Err(e) = self.apply_retention_json(repo, &policy).await {
                tracing::warn!(repository = %repo, error = %e, "applying the retention policy");
            }
        }
        Ok(ManifestPushed {
            digest,
            subject: parsed.subject,
        })
    }

    async fn check_references(&self, repo: &RepoName, parsed: &ParsedManifest) -> Result<()> {
        // Sizes from the read cache: a push of many tags of one image
        // asks about the same blobs each time. The store checks again, in
        // the manifest's transaction, that they are still there.
        for (digest, declared) in &parsed.blobs {
            match self.blob_size(repo, digest).await {
                Err(RegistryError::BlobUnknown(_)) => {
                    return Err(RegistryError::ManifestBlobUnknown(digest.clone()));
                }
                Err(e) => return Err(e),
                Ok(size) if size != *declared => {
                    return Err(RegistryError::ManifestInvalid(format!(
                        "descriptor of {digest} says {declared} bytes, the blob has {size}"
                    )));
                }
                Ok(_) => {}
            }
        }
        for digest in &parsed.manifests {
            if !self.meta.manifest_exists(repo, digest).await? {
                return Err(RegistryError::ManifestBlobUnknown(digest.clone()));
            }
        }
        Ok(())
    }

    /// A manifest; `pulled_by` records a pull event when pulls are
    /// recorded (a HEAD is no pull).
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        pulled_by: Option<&LazyOrigin<'_>>,
    ) -> Result<Arc<ManifestRow>> {
        let key = reference.to_string();
        // Replicas sharing a database would each cache a tag until told it
        // moved; read tags fresh there, so a pull through any replica sees
        // the push just made through another.
        let cacheable = !(self.meta.is_shared() && matches!(reference, Reference::Tag(_)));
        let cached = match cacheable {
            true => self.cache.manifest(repo.as_str(), &key),
            false => None,
        };
        let row = match cached {
            Some(row) => row,
            None => {
                // Boxed, as is recording a pull: a cache hit's future stays
                // small, and it is moved by value through every HTTP layer.
                let ticket = self.cache.ticket();
                let row = match reference {
                    Reference::Tag(tag) => Box::pin(self.meta.manifest_by_tag(repo, tag)).await?,
                    Reference::Digest(digest) => {
                        Box::pin(self.meta.manifest_by_digest(repo, digest)).await?
                    }
                };
                let row = Arc::new(row.ok_or_else(|| {
                    RegistryError::ManifestUnknown(format!("{repo}:{reference}"))
                })?);
                if cacheable {
                    self.cache
                        .put_manifest(ticket, repo.as_str(), &key, row.clone());
                }
                row
            }
        };
        if let Some(origin) = pulled_by {
            Box::pin(self.record_pull(repo, reference, &row, origin)).await?;
        }
        Ok(row)
    }

    /// Notes a pull of a manifest read with [`Registry::get_manifest`]
    /// (without `pulled_by`): its time, and its event when pulls are
    /// recorded.
    pub async fn record_pull(
        &self,
        repo: &RepoName,
        reference: &Reference,
        row: &ManifestRow,
        origin: &LazyOrigin<'_>,
    ) -> Result<()> {
        self.note_pull(repo.as_str());
        if self.limits.record_pulls {
            let mut event = Event::new(Action::Pull, repo.as_str(), origin.get());
            event.digest = Some(row.digest.to_string());
            event.media_type = Some(row.media_type.clone());
            event.size = Some(row.content.len() as u64);
            if let Reference::Tag(tag) = reference {
                event.tag = Some(tag.as_str().to_owned());
            }
            self.meta.record_event(&event).await?;
            self.events_written.notify_one();
        }
        Ok(())
    }

    // ---- deletes -------------------------------------------------------

    fn check_deletes_enabled(&self) -> Result<()> {
        if self.limits.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::Unsupported(
                "deletes are disabled on this registry".into(),
            ))
        }
    }

    /// Deletes a tag, or a manifest with every tag on it.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        origin: &Origin,
    ) -> Result<()> {
        self.check_deletes_enabled()?;
        let mut event = Event::new(Action::Delete, repo.as_str(), origin);
        let deleted = match reference {
            Reference::Tag(tag) => {
                event.tag = Some(tag.as_str().to_owned());
                self.meta.delete_tag(repo, tag, &event).await?
            }
            Reference::Digest(digest) => {
                event.digest = Some(digest.to_string());
                self.meta.delete_manifest(repo, digest, &event).await?
            }
        };
        if deleted {
            self.cache.forget_manifests(repo.as_str());
            self.events_written.notify_one();
            Ok(())
        } else {
            Err(RegistryError::ManifestUnknown(format!(
                "{repo}:{reference}"
            )))
        }
    }

    /// Removes a blob from a repository.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.check_deletes_enabled()?;
        if self.meta.unlink_blob(repo, digest).await? {
            self.cache.forget_blob(repo.as_str(), digest.as_str());
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(digest.to_string()))
        }
    }

    /// The manifests in `repo` that name `subject`, whether or not the
    /// subject itself was pushed.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<crate::meta::ReferrerRow>> {
        self.meta.referrers(repo, subject, artifact_type).await
    }

    // ---- administration ------------------------------------------------

    fn note_pull(&self, repo: &str) {
        let now = crate::meta::now_ms();
        let mut pulls = self.pulls.lock().expect("pull times");
        match pulls.get_mut(repo) {
            Some(at) => *at = now,
            None => {
                pulls.insert(repo.to_owned(), now);
            }
        }
    }

    /// Writes the pull times noted since the last call to the store.
    pub async fn flush_pulls(&self) -> Result<()> {
        let pulls: Vec<(String, i64)> = {
            let mut map = self.pulls.lock().expect("pull times");
            map.drain().collect()
        };
        if !pulls.is_empty() {
            self.meta.record_last_pulls(&pulls).await?;
        }
        Ok(())
    }

    /// A repository's last pull noted but not yet written, if any.
    pub fn unflushed_pull(&self, repo: &str) -> Option<i64> {
        self.pulls.lock().expect("pull times").get(repo).copied()
    }

    async fn apply_retention_json(&self, repo: &RepoName, policy: &str) -> Result<Vec<String>> {
        let policy: RetentionPolicy = serde_json::from_str(policy)
            .map_err(|e| RegistryError::Internal(format!("stored retention policy: {e}")))?;
        self.apply_retention(repo, &policy).await
    }

    /// Deletes the tags of `repo` that `policy` lets go; returns their
    /// names. Each deletion is a delete event by `berth:retention`.
    pub async fn apply_retention(
        &self,
        repo: &RepoName,
        policy: &RetentionPolicy,
    ) -> Result<Vec<String>> {
        let tags: Vec<(String, i64)> = self
            .meta
            .tag_rows(repo)
            .await?
            .into_iter()
            .map(|t| (t.name, t.pushed_at))
            .collect();
        let expired = policy.expired(&tags, crate::meta::now_ms());
        if expired.is_empty() {
            return Ok(expired);
        }
        let origin = Origin {
            actor: Some("berth:retention".into()),
            ..Origin::default()
        };
        self.delete_tags(repo, &expired, &origin).await?;
        tracing::info!(repository = %repo, tags = ?expired, "retention policy deleted tags");
        Ok(expired)
    }

    /// Deletes tags of `repo`, writing a delete event for each; returns how
    /// many existed. Deletes by admins and policies are not subject to
    /// `delete_enabled`, which governs clients.
    pub async fn delete_tags(
        &self,
        repo: &RepoName,
        tags: &[String],
        origin: &Origin,
    ) -> Result<u64> {
        let mut batch = Vec::with_capacity(tags.len());
        for name in tags {
            let tag = Tag::from_str(name)?;
            let mut event = Event::new(Action::Delete, repo.as_str(), origin);
            event.tag = Some(name.clone());
            batch.push((tag, event));
        }
        let deleted = self.meta.delete_tags(repo, &batch).await?;
        self.cache.forget_manifests(repo.as_str());
        self.events_written.notify_one();
        Ok(deleted)
    }

    /// Deletes a manifest (and its tags) on an admin's request.
    pub async fn delete_manifest_as_admin(
        &self,
        repo: &RepoName,
        digest: &Digest,
        origin: &Origin,
    ) -> Result<()> {
        let mut event = Event::new(Action::Delete, repo.as_str(), origin);
        event.digest = Some(digest.to_string());
        if !self.meta.delete_manifest(repo, digest, &event).await? {
            return Err(RegistryError::ManifestUnknown(format!("{repo}@{digest}")));
        }
        self.cache.forget_manifests(repo.as_str());
        self.events_written.notify_one();
        Ok(())
    }

    /// Deletes a repository with all its tags and manifests, writing a
    /// delete event per manifest.
    pub async fn delete_repository(&self, repo: &RepoName, origin: &Origin) -> Result<()> {
        let manifests = self.meta.manifest_summaries(repo).await?;
        let events: Vec<Event> = manifests
            .iter()
            .map(|m| {
                let mut event = Event::new(Action::Delete, repo.as_str(), origin);
                event.digest = Some(m.digest.clone());
                event.media_type = Some(m.media_type.clone());
                event
            })
            .collect();
        if !self.meta.delete_repository(repo, &events).await? {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        self.cache.forget_repository(repo.as_str());
        self.events_written.notify_one();
        Ok(())
    }

    /// An image's config blob, parsed, when it is JSON of at most 1 MiB.
    pub async fn image_config(&self, digest: &Digest) -> Option<serde_json::Value> {
        const MAX_CONFIG: u64 = 1 << 20;
        let bytes = self.blobs.read_small(digest, MAX_CONFIG).await?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The platforms (`os/arch[/variant]`) a manifest runs on: an index's
    /// children's, or an image's config's. Empty for artifacts.
    pub async fn platforms(&self, media_type: &str, content: &[u8]) -> Vec<String> {
        // Configs are small JSON; anything larger is not an image config.
        const MAX_CONFIG: u64 = 1 << 20;
        let json: serde_json::Value = serde_json::from_slice(content).unwrap_or_default();
        if manifest::is_index_type(media_type) {
            return json["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| manifest::platform_string(&m["platform"]))
                .collect();
        }
        let config = &json["config"];
        let (Some(digest), Some(size)) = (
            config["digest"]
                .as_str()
                .and_then(|d| Digest::from_str(d).ok()),
            config["size"].as_u64(),
        ) else {
            return Vec::new();
        };
        if size > MAX_CONFIG {
            return Vec::new();
        }
        let Some(bytes) = self.blobs.read_small(&digest, MAX_CONFIG).await else {
            return Vec::new();
        };
        let config: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        manifest::platform_string(&config).into_iter().collect()
    }

    // ---- listings ------------------------------------------------------

    /// One page of `repo`'s tags: up to `n` after `last`, in the order
    /// of [`tag_order`].
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        n: u32,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        // Replicas read tags fresh: another may have moved them.
        if self.meta.is_shared() {
            let tags = self.meta.list_tags(repo, n, last).await?;
            if tags.is_empty() && !self.meta.repository_exists(repo).await? {
                return Err(RegistryError::NameUnknown(repo.to_string()));
            }
            return Ok(tags);
        }
        let tags = match self.cache.tags(repo.as_str()) {
            Some(tags) => tags,
            None => {
                let ticket = self.cache.ticket();
                let tags = self.meta.list_tags(repo, u32::MAX, None).await?;
                if tags.is_empty() && !self.meta.repository_exists(repo).await? {
                    return Err(RegistryError::NameUnknown(repo.to_string()));
                }
                let tags = Arc::new(tags);
                self.cache.put_tags(ticket, repo.as_str(), tags.clone());
                tags
            }
        };
        let start = match last {
            Some(last) => {
                tags.partition_point(|t| tag_order(t, last) != std::cmp::Ordering::Greater)
            }
            None => 0,
        };
        let end = start.saturating_add(n as usize).min(tags.len());
        Ok(tags[start..end].to_vec())
    }

    /// One page of repository names: up to `n` after `last`.
    pub async fn list_repositories(&self, n: u32, last: Option<&str>) -> Result<Vec<String>> {
        self.meta.list_repositories(n, last).await
    }
}

/// The order tags are listed in, as the metadata store sorts them:
/// case-insensitive (ASCII letters, as SQLite's NOCASE), ties broken by
/// bytes so that every tag has one place and paging is exact.
pub fn tag_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn lower(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes().map(|c| c.to_ascii_lowercase())
    }
    lower(a).cmp(lower(b)).then_with(|| a.cmp(b))
}

/// Whether `id` could be an upload id berth issued (a UUID's characters).
fn is_upload_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// A `Range: bytes=...` request before the blob's size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// `start-` or `start-end`.
    From { start: u64, end: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl RangeRequest {
    /// Parses a `Range` header value. `None` means "ignore the header and
    /// send the whole blob", which RFC 9110 allows for forms berth does not
    /// serve (multiple ranges, other units, bad syntax).
    pub fn parse(header: &str) -> Option<RangeRequest> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (start, end) = spec.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
        };
        match (start.trim(), end.trim()) {
            ("", n) => num(n).map(RangeRequest::Suffix),
            (s, "") => num(s).map(|start| RangeRequest::From { start, end: None }),
            // A range that ends before it starts selects nothing: 416,
            // as for a start past the end.
            (s, e) => Some(RangeRequest::From {
                start: num(s)?,
                end: Some(num(e)?),
            }),
        }
    }

    /// The bytes selected in a blob of `size` bytes.
    pub fn resolve(self, size: u64) -> Result<ByteRange> {
        let unsatisfiable = RegistryError::RangeNotSatisfiable { size };
        match self {
            RangeRequest::From { start, end } => {
                if start >= size || end.is_some_and(|e| e < start) {
                    return Err(unsatisfiable);
                }
                let end = end.map_or(size - 1, |e| e.min(size - 1));
                Ok(ByteRange { start, end })
            }
            RangeRequest::Suffix(0) => Err(unsatisfiable),
            RangeRequest::Suffix(n) => {
                if size == 0 {
                    return Err(unsatisfiable);
                }
                Ok(ByteRange {
                    start: size.saturating_sub(n),
                    end: size - 1,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        let r = |h| RangeRequest::parse(h).map(|r| r.resolve(100));
        for (header, start, end) in [
            ("bytes=0-9", 0, 9),
            ("bytes=90-", 90, 99),
            ("bytes=-10", 90, 99),
            ("bytes=-1000", 0, 99),
            ("bytes=50-1000", 50, 99),
        ] {
            assert_eq!(
                r(header).unwrap().unwrap(),
                ByteRange { start, end },
                "{header}"
            );
        }
        assert!(matches!(
            r("bytes=100-").unwrap(),
            Err(RegistryError::RangeNotSatisfiable { size: 100 })
        ));
        assert!(r("bytes=-0").unwrap().is_err());
        assert!(r("bytes=500-0").unwrap().is_err());
        for ignored in ["bytes=0-1,5-6", "items=0-1", "bytes=a-b", "0-1", "bytes=-"] {
            assert!(RangeRequest::parse(ignored).is_none(), "{ignored}");
        }
    }

    proptest::proptest! {
        #[test]
        fn range_parser_never_panics(h in "\\PC*", size in 0u64..1000) {
            if let Some(r) = RangeRequest::parse(&h)
                && let Ok(b) = r.resolve(size)
            {
                proptest::prop_assert!(b.start <= b.end && b.end < size);
            }
        }
    }
}
