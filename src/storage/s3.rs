//! `S3Store`: blobs in an S3-compatible bucket, through `object_store`
//! (the key layout is drawn in the parent module).
//!
//! An upload is an S3 multipart upload to `uploads/<id>/data`, created with
//! its first part. Clients send chunks of any size, but every part except
//! the last must be at least the server's minimum, so the bytes that do not
//! yet fill a part are kept in a tail object, read back and put in front of
//! the next chunk. Each PATCH writes a fresh tail object (never overwriting
//! the one the metadata names), so a PATCH that fails leaves the recorded
//! state whole. The multipart id, the parts' ETags and the tail's name are
//! the upload's storage state ([`UploadState`]), kept in the metadata's
//! uploads row: any replica sharing the bucket and database can continue
//! the upload.
//!
//! Finishing completes the multipart upload (the tail becomes the last
//! part) and copies the object to its content address: server side with
//! CopyObject up to `max_copy_bytes` (S3 stops at 5 GiB), streamed through
//! berth as a new multipart upload above it.
//!
//! Part sizes grow with the part number (`part_size` for parts 1–1000, then
//! doubling per thousand), so a layer of any size stays under S3's limit of
//! 10,000 parts. A part is held in memory while it is sent: memory per
//! upload is bounded by the part size, not the blob size.
//!
//! A multipart upload whose creating PATCH failed before the metadata
//! recorded it is invisible to berth: a bucket lifecycle rule that aborts
//! incomplete multipart uploads after a day reclaims such leftovers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use crate::config::S3Config;
use crate::core::hashing::{BlobHasher, UploadHasher};
use crate::core::names::Digest;
use crate::core::{BodyStream, RegistryError, Result};
use crate::storage::{Appended, ByteStream, blob_key, parse_blob_key};

/// S3's largest part.
const MAX_PART: u64 = 5 << 30;
/// S3's most parts in one upload; streamed copies keep a margin below it.
const MAX_PARTS: u64 = 10_000;
/// How many body chunks may wait for the hashing thread.
const HASH_QUEUE: usize = 8;
/// Parts a streamed copy sends at once.
const COPY_CONCURRENCY: usize = 4;

#[derive(Clone, Debug)]
pub struct S3Store {
    store: Arc<AmazonS3>,
    /// `""` or `a/b/`: prepended to every key.
    prefix: String,
    part_size: u64,
    max_copy_bytes: u64,
    redirect: Option<Duration>,
}

/// An upload's storage state, as kept in the metadata (JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadState {
    /// The record's version: 1.
    v: u32,
    /// The multipart upload, once the first part was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<String>,
    /// The ETags of the parts sent, in part order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<String>,
    /// Bytes held in those parts; the rest of the upload is in the tail.
    #[serde(default)]
    parted: u64,
    /// The tail object's name under `uploads/<id>/`, when there is a tail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail: Option<String>,
}

const STATE_VERSION: u32 = 1;
const DATA: &str = "data";

impl UploadState {
    fn parse(upload: &str, state: Option<&str>) -> Result<UploadState> {
        let Some(state) = state else {
            return Ok(UploadState {
                v: STATE_VERSION,
                ..UploadState::default()
            });
        };
        let parsed: UploadState = serde_json::from_str(state).map_err(|e| {
            RegistryError::Internal(format!("upload {upload}: unreadable storage state: {e}"))
        })?;
        if parsed.v != STATE_VERSION {
            return Err(RegistryError::Internal(format!(
                "upload {upload}: storage state version {} is not known here",
                parsed.v
            )));
        }
        Ok(parsed)
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("upload state serializes")
    }
}

/// Received bytes not yet sent as a part, without copying them.
#[derive(Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    len: u64,
}

impl Pending {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len() as u64;
        self.chunks.push_back(chunk);
    }

    /// The first `n` bytes (`n <= len`).
    fn take(&mut self, n: u64) -> PutPayload {
        let mut taken = Vec::new();
        let mut left = n;
        while left > 0 {
            let mut chunk = self.chunks.pop_front().expect("pending holds n bytes");
            if chunk.len() as u64 > left {
                let rest = chunk.split_off(left as usize);
                self.chunks.push_front(rest);
            }
            left -= chunk.len() as u64;
            taken.push(chunk);
        }
        self.len -= n;
        taken.into_iter().collect()
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl S3Store {
    pub fn open(config: &S3Config) -> anyhow::Result<S3Store> {
        crate::install_crypto_provider();
        // Credentials and settings the file leaves out come from the
        // environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            // object_store tries each request again on a 5xx (SlowDown
            // included), a reset or refused connection and a timeout, with
            // exponential backoff (100 ms doubling, at most 15 s); its own
            // defaults (10 retries within 3 minutes) would hold a client
            // that long in an outage before it got its 503.
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig::default(),
                max_retries: config.max_retries,
                retry_timeout: Duration::from_secs(config.retry_timeout_seconds),
            });
        if !config.endpoint.is_empty() {
            builder = builder
                .with_endpoint(&config.endpoint)
                .with_allow_http(config.endpoint.starts_with("http://"));
        }
        if !config.access_key_id.is_empty() {
            builder = builder
                .with_access_key_id(&config.access_key_id)
                .with_secret_access_key(&config.secret_access_key);
        }
        if !config.session_token.is_empty() {
            builder = builder.with_token(&config.session_token);
        }
        let store = builder
            .build()
            .map_err(|e| anyhow::anyhow!("storage.s3: {e}"))?;
        let prefix = config.prefix.trim_matches('/');
        Ok(S3Store {
            store: Arc::new(store),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            part_size: config.part_size,
            max_copy_bytes: config.max_copy_bytes,
            redirect: config
                .redirect
                .then(|| Duration::from_secs(config.redirect_expiry_seconds)),
        })
    }

    fn path(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }

    fn blob_path(&self, digest: &Digest) -> Path {
        self.path(&blob_key(digest))
    }

    fn aside_path(&self, digest: &Digest) -> Path {
        self.path(&format!("{}.gc", blob_key(digest)))
    }

    fn upload_path(&self, upload: &str, name: &str) -> Path {
        self.path(&format!("uploads/{upload}/{name}"))
    }

    /// The size of part `index` (from 0): the base size for the first
    /// thousand parts, then doubling per thousand, so 10,000 parts of the
    /// smallest base (5 MiB) hold 4.9 TiB, near S3's largest object (5 TiB),
    /// and of the default base (16 MiB) more than that.
    fn part_size(&self, index: usize) -> u64 {
        let doublings = (index / 1000).min(20) as u32;
        (self.part_size << doublings).min(MAX_PART)
    }

    pub async fn check_writable(&self) -> Result<()> {
        let probe = self.path(&format!("uploads/.ready-{}", uuid::Uuid::new_v4()));
        self.store.put(&probe, PutPayload::from_static(b"")).await?;
        self.store.delete(&probe).await?;
        Ok(())
    }

    pub async fn append(
        &self,
        upload: &str,
        offset: u64,
        state: Option<&str>,
        mut hasher: UploadHasher,
        mut body: impl BodyStream,
    ) -> Result<Appended> {
        let mut state = UploadState::parse(upload, state)?;
        let tail_len = offset.checked_sub(state.parted).ok_or_else(|| {
            RegistryError::Internal(format!("upload {upload}: parts hold more than its size"))
        })?;
        let mut pending = Pending::default();
        if tail_len > 0 {
            let tail = self.read_tail(upload, &state, tail_len).await?;
            pending.push(tail);
        }
        let (hash_tx, mut hash_rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
        let hashing = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = hash_rx.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher
        });
        let data = self.upload_path(upload, DATA);
        let had_multipart = state.multipart.is_some();
        let mut written = 0u64;
        let streamed: Result<()> = async {
            while let Some(item) = body.next().await {
                let chunk = item.map_err(|e| RegistryError::BodyRead(e.to_string()))?;
                written += chunk.len() as u64;
                if hash_tx.send(chunk.clone()).await.is_err() {
                    return Err(RegistryError::Internal("upload hasher stopped".into()));
                }
                pending.push(chunk);
                loop {
                    let size = self.part_size(state.parts.len());
                    if pending.len < size {
                        break;
                    }
                    self.put_part(&data, &mut state, pending.take(size)).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            // A multipart upload this call began is named by no metadata:
            // abort it now, or nothing would (short of a bucket lifecycle
            // rule). One begun earlier goes with its upload.
            if let (false, Some(id)) = (had_multipart, &state.multipart)
                && let Err(abort) = self.store.abort_multipart(&data, id).await
            {
                tracing::warn!(upload, error = %abort, "aborting a failed chunk's multipart upload");
            }
            return Err(e);
        }
        drop(hash_tx);
        // Written under a new name: the tail the metadata names stays whole
        // until the metadata names this one.
        state.tail = if pending.len > 0 {
            let name = format!("tail-{}", uuid::Uuid::new_v4());
            let len = pending.len;
            self.store
                .put(&self.upload_path(upload, &name), pending.take(len))
                .await?;
            Some(name)
        } else {
            None
        };
        let hasher = hashing
            .await
            .map_err(|e| RegistryError::Internal(format!("upload hasher: {e}")))?;
        Ok(Appended {
            written,
            hasher,
            state: Some(state.to_json()),
        })
    }

    async fn read_tail(&self, upload: &str, state: &UploadState, len: u64) -> Result<Bytes> {
        let name = state.tail.as_deref().ok_or_else(|| {
            RegistryError::Internal(format!("upload {upload}: {len} bytes but no tail object"))
        })?;
        let bytes = self
            .store
            .get(&self.upload_path(upload, name))
            .await?
            .bytes()
            .await?;
        if bytes.len() as u64 != len {
            return Err(RegistryError::Internal(format!(
                "upload {upload}: the tail holds {} bytes, the metadata says {len}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    async fn put_part(&self, data: &Path, state: &mut UploadState, part: PutPayload) -> Result<()> {
        let id = match &state.multipart {
            Some(id) => id.clone(),
            None => {
                let id = self.store.create_multipart(data).await?;
                state.multipart = Some(id.clone());
                id
            }
        };
        let len = part.content_length() as u64;
        let part = self
            .store
            .put_part(data, &id, state.parts.len(), part)
            .await?;
        state.parts.push(part.content_id);
        state.parted += len;
        Ok(())
    }

    pub async fn release_superseded(&self, upload: &str, old: Option<&str>, new: Option<&str>) {
        let (Ok(old), Ok(new)) = (
            UploadState::parse(upload, old),
            UploadState::parse(upload, new),
        ) else {
            return;
        };
        if let Some(tail) = old.tail.filter(|t| new.tail.as_ref() != Some(t))
            && let Err(e) = self.store.delete(&self.upload_path(upload, &tail)).await
        {
            // Left for the upload's end, which removes all its objects.
            tracing::warn!(upload, error = %e, "removing a superseded upload tail");
        }
    }

    /// Whether the upload's bytes are in a multipart upload (else all in the
    /// tail, or none).
    fn has_parts(state: &UploadState) -> bool {
        state.multipart.is_some() && !state.parts.is_empty()
    }

    /// The object that holds a sealed upload's bytes; `None` for no bytes.
    fn sealed_path(&self, upload: &str, state: &UploadState) -> Option<Path> {
        if Self::has_parts(state) {
            Some(self.upload_path(upload, DATA))
        } else {
            state.tail.as_deref().map(|t| self.upload_path(upload, t))
        }
    }

    pub async fn seal_upload(&self, upload: &str, state: Option<&str>, size: u64) -> Result<()> {
        let state = UploadState::parse(upload, state)?;
        let Some(id) = state.multipart.clone().filter(|_| Self::has_parts(&state)) else {
            return Ok(());
        };
        let data = self.upload_path(upload, DATA);
        let completed = async {
            let mut parts: Vec<PartId> = state
                .parts
                .iter()
                .map(|etag| PartId {
                    content_id: etag.clone(),
                })
                .collect();
            let tail_len = size - state.parted;
            if tail_len > 0 {
                let tail = self.read_tail(upload, &state, tail_len).await?;
                parts.push(
                    self.store
                        .put_part(&data, &id, parts.len(), tail.into())
                        .await?,
                );
            }
            self.store.complete_multipart(&data, &id, parts).await?;
            Result::Ok(())
        }
        .await;
        match completed {
            Ok(()) => Ok(()),
            // Sealed before, by a PUT that failed later on.
            Err(e) => match self.store.head(&data).await {
                Ok(meta) if meta.size == size => Ok(()),
                _ => Err(e),
            },
        }
    }

    pub async fn hash_upload(
        &self,
        upload: &str,
        state: Option<&str>,
        digest: &Digest,
    ) -> Result<Digest> {
        let state = UploadState::parse(upload, state)?;
        let mut hasher = BlobHasher::new(digest.algorithm());
        if let Some(path) = self.sealed_path(upload, &state) {
            let mut stream = self.store.get(&path).await?.into_stream();
            while let Some(chunk) = stream.next().await {
                hasher.update(&chunk?);
            }
        }
        Ok(hasher.finish())
    }

    pub async fn commit_upload(
        &self,
        upload: &str,
        state: Option<&str>,
        size: u64,
        digest: &Digest,
    ) -> Result<()> {
        let state = UploadState::parse(upload, state)?;
        let to = self.blob_path(digest);
        match self.sealed_path(upload, &state) {
            Some(from) => self.copy(&from, &to, size).await,
            None => {
                self.store.put(&to, PutPayload::new()).await?;
                Ok(())
            }
        }
    }

    /// Copies an object of `size` bytes: server side while CopyObject takes
    /// it, else streamed through berth into a multipart upload.
    async fn copy(&self, from: &Path, to: &Path, size: u64) -> Result<()> {
        if size <= self.max_copy_bytes {
            self.store.copy(from, to).await?;
            return Ok(());
        }
        let chunk = self
            .part_size
            .max(size.div_ceil(MAX_PARTS - 100))
            .min(MAX_PART);
        let mut writer = WriteMultipart::new_with_chunk_size(
            self.store.put_multipart(to).await?,
            chunk as usize,
        );
        let mut stream = self.store.get(from).await?.into_stream();
        while let Some(item) = stream.next().await {
            let result = match item {
                Ok(bytes) => writer
                    .wait_for_capacity(COPY_CONCURRENCY)
                    .await
                    .map(|()| bytes),
                Err(e) => Err(e),
            };
            match result {
                Ok(bytes) => writer.put(bytes),
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e.into());
                }
            }
        }
        writer.finish().await?;
        Ok(())
    }

    /// Aborts the multipart upload, if any, and removes every object of the
    /// upload.
    pub async fn delete_upload(&self, upload: &str, state: Option<&str>) -> Result<()> {
        let state = UploadState::parse(upload, state)?;
        if let Some(id) = &state.multipart {
            match self
                .store
                .abort_multipart(&self.upload_path(upload, DATA), id)
                .await
            {
                // Completed or aborted already.
                Err(e) if !is_not_found(&e) => return Err(e.into()),
                _ => {}
            }
        }
        let prefix = self.path(&format!("uploads/{upload}"));
        let objects: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for object in objects {
            self.delete_quietly(&object).await?;
        }
        Ok(())
    }

    async fn delete_quietly(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Err(e) if !is_not_found(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        match self.store.head(&self.blob_path(digest)).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_blobs(&self) -> Result<Vec<(Digest, u64, SystemTime)>> {
        let root = format!("{}blobs/", self.prefix);
        let mut objects = self.store.list(Some(&self.path("blobs")));
        let mut found = Vec::new();
        while let Some(meta) = objects.try_next().await? {
            let digest = meta
                .location
                .as_ref()
                .strip_prefix(&root)
                .and_then(parse_blob_key);
            if let Some(digest) = digest {
                found.push((digest, meta.size, meta.last_modified.into()));
            }
        }
        Ok(found)
    }

    /// Every upload with objects under uploads/: its id, the bytes of its
    /// objects and when the newest was written. (Multipart parts not yet
    /// completed are no objects: aborting them is the upload row's job,
    /// or a bucket lifecycle rule's.)
    pub async fn list_uploads(&self) -> Result<Vec<(String, u64, SystemTime)>> {
        let root = format!("{}uploads/", self.prefix);
        let mut objects = self.store.list(Some(&self.path("uploads")));
        let mut found: std::collections::BTreeMap<String, (u64, SystemTime)> =
            std::collections::BTreeMap::new();
        while let Some(meta) = objects.try_next().await? {
            let Some(id) = meta
                .location
                .as_ref()
                .strip_prefix(&root)
                .and_then(|rest| rest.split('/').next())
                .filter(|id| !id.is_empty())
            else {
                continue;
            };
            let modified: SystemTime = meta.last_modified.into();
            let entry = found.entry(id.to_owned()).or_insert((0, modified));
            entry.0 += meta.size;
            entry.1 = entry.1.max(modified);
        }
        Ok(found
            .into_iter()
            .map(|(id, (size, modified))| (id, size, modified))
            .collect())
    }

    /// S3 has no rename: a copy, then a delete. Stray objects, the only
    /// ones set aside, are rare.
    pub async fn set_aside(&self, digest: &Digest) -> Result<bool> {
        let from = self.blob_path(digest);
        let size = match self.store.head(&from).await {
            Ok(meta) => meta.size,
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.copy(&from, &self.aside_path(digest), size).await?;
        self.delete_quietly(&from).await?;
        Ok(true)
    }

    pub async fn settle_aside(&self, digest: &Digest, keep: bool) -> Result<()> {
        let aside = self.aside_path(digest);
        if keep {
            let size = self.store.head(&aside).await?.size;
            self.copy(&aside, &self.blob_path(digest), size).await?;
        }
        self.delete_quietly(&aside).await
    }

    pub async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        self.delete_quietly(&self.blob_path(digest)).await
    }

    pub async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream> {
        let options = GetOptions {
            range: range.map(|(start, end)| GetRange::Bounded(start..end + 1)),
            ..GetOptions::default()
        };
        match self.store.get_opts(&self.blob_path(digest), options).await {
            Ok(result) => Ok(result.into_stream().map_err(std::io::Error::other).boxed()),
            // The metadata says the blob exists but its bytes are gone:
            // that is berth's fault, never the client's.
            Err(e) if is_not_found(&e) => Err(RegistryError::Internal(format!(
                "blob {digest} missing from storage"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn blob_url(&self, digest: &Digest) -> Result<Option<String>> {
        let Some(expires) = self.redirect else {
            return Ok(None);
        };
        let url = self
            .store
            .signed_url(
                object_store::signer::Method::GET,
                &self.blob_path(digest),
                expires,
            )
            .await?;
        Ok(Some(url.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_takes_exact_parts_without_copying() {
        let mut pending = Pending::default();
        pending.push(Bytes::from_static(b"abc"));
        pending.push(Bytes::from_static(b"defgh"));
        let part = pending.take(4);
        assert_eq!(part.content_length(), 4);
        let bytes: Vec<u8> = part.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(bytes, b"abcd");
        assert_eq!(pending.len, 4);
        let rest: Vec<u8> = pending.take(4).iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(rest, b"efgh");
    }

    #[test]
    fn upload_state_round_trips_and_is_versioned() {
        let state = UploadState {
            v: STATE_VERSION,
            multipart: Some("m".into()),
            parts: vec!["\"e1\"".into()],
            parted: 5 << 20,
            tail: Some("tail-x".into()),
        };
        assert_eq!(
            UploadState::parse("u", Some(&state.to_json())).unwrap(),
            state
        );
        assert_eq!(UploadState::parse("u", None).unwrap().v, STATE_VERSION);
        assert!(UploadState::parse("u", Some(r#"{"v":2}"#)).is_err());
        assert!(UploadState::parse("u", Some("nonsense")).is_err());
    }

    #[test]
    fn part_sizes_keep_large_layers_under_ten_thousand_parts() {
        crate::install_crypto_provider();
        let store = S3Store {
            store: Arc::new(
                AmazonS3Builder::new()
                    .with_bucket_name("b")
                    .with_region("us-east-1")
                    .build()
                    .unwrap(),
            ),
            prefix: String::new(),
            part_size: 5 << 20,
            max_copy_bytes: 5 << 30,
            redirect: None,
        };
        assert_eq!(store.part_size(0), 5 << 20);
        assert_eq!(store.part_size(999), 5 << 20);
        assert_eq!(store.part_size(1000), 10 << 20);
        let total: u64 = (0..MAX_PARTS as usize).map(|i| store.part_size(i)).sum();
        assert!(total > 4 << 40, "{total}");
        assert_eq!(store.part_size(9999), 5 << 29);
    }
}
