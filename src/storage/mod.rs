//! `BlobStore`: where blob bytes live, on local disk ([`fs`]) or in an
//! S3-compatible bucket ([`s3`]). The backend is picked once, from the
//! config; the core calls this one API. This module owns the key layout of
//! both:
//!
//! ```text
//! filesystem: <data dir>/            s3: <bucket>/<prefix>/
//!
//! blobs/
//! ├── sha256/<first two hex>/<hex>     a finished blob, named by its digest
//! │                  └── <hex>.gc      set aside by garbage collection
//! └── sha512/<first two hex>/<hex>
//! uploads/
//! ├── <upload id>                      fs: the bytes of an upload in progress
//! └── <upload id>/                     s3: one upload in progress
//!     ├── tail-<uuid>                  the bytes that do not yet fill a part
//!     └── data                         its multipart upload, once completed
//! ```
//!
//! Contracts, for every backend:
//! - Bytes at a blob key are complete and hash to the key: they are only
//!   written from an upload whose digest was checked. Whether a blob is
//!   *visible* is the metadata store's decision.
//! - `append` writes at an exact offset, and what it returns (`Appended`,
//!   with the backend's upload state) describes bytes that are durable: once
//!   the metadata records it, nothing acknowledged can be lost.
//! - An upload's storage state is opaque to the core: it is kept in the
//!   metadata's uploads row and handed back on the next call.

pub mod fs;
pub mod s3;
pub mod space;

use std::path::Path;
use std::time::SystemTime;

use futures_util::stream::BoxStream;

use crate::config::Config;
use crate::core::hashing::UploadHasher;
use crate::core::names::Digest;
use crate::core::{BodyStream, RegistryError, Result};

pub use fs::FsStore;
pub use s3::S3Store;

/// A blob's bytes as they are read.
pub type ByteStream = BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// What an `append` did: the bytes it wrote, the hash state after them, and
/// the backend's new upload state (none on local disk).
pub struct Appended {
    pub written: u64,
    pub hasher: UploadHasher,
    pub state: Option<String>,
}

#[derive(Clone, Debug)]
pub enum BlobStore {
    Fs(FsStore),
    S3(S3Store),
}

/// The key of a blob, relative to the storage root.
pub(crate) fn blob_key(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("blobs/{}/{}/{hex}", digest.algorithm().name(), &hex[..2])
}

/// The digest a blob key (relative to `blobs/`) names; `None` for anything
/// else, such as blobs set aside.
pub(crate) fn parse_blob_key(key: &str) -> Option<Digest> {
    let mut parts = key.split('/');
    let (algorithm, shard, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !hex.starts_with(shard) {
        return None;
    }
    format!("{algorithm}:{hex}").parse().ok()
}

impl BlobStore {
    /// Opens (creating if needed) the storage tree on local disk under
    /// `root`.
    pub fn open(root: &Path) -> std::io::Result<BlobStore> {
        FsStore::open(root).map(BlobStore::Fs)
    }

    /// Opens the backend the config names.
    pub fn from_config(config: &Config) -> anyhow::Result<BlobStore> {
        match config.storage.backend.as_str() {
            "s3" => Ok(BlobStore::S3(S3Store::open(&config.storage.s3)?)),
            _ => Ok(BlobStore::open(&config.data_dir)?),
        }
    }

    /// Whether blobs can be written: writes and removes a probe.
    pub async fn check_writable(&self) -> Result<()> {
        match self {
            BlobStore::Fs(s) => s.check_writable().await,
            BlobStore::S3(s) => s.check_writable().await,
        }
    }

    /// Starts an upload's bytes. `durable`: the upload outlives a power cut
    /// from here on (a session the client goes on with); otherwise only
    /// what finishing it makes durable counts (a monolithic push).
    pub async fn create_upload(&self, upload: &str, durable: bool) -> Result<()> {
        match self {
            BlobStore::Fs(s) => s.create_upload(upload, durable).await,
            // Nothing to make: an empty upload has no parts and no tail.
            BlobStore::S3(_) => Ok(()),
        }
    }

    /// Writes the stream at `offset` of an upload, hashing as the bytes
    /// pass. `state` is the upload's storage state as last recorded.
    pub async fn append(
        &self,
        upload: &str,
        offset: u64,
        state: Option<&str>,
        hasher: UploadHasher,
        body: impl BodyStream,
    ) -> Result<Appended> {
        match self {
            BlobStore::Fs(s) => s.append(upload, offset, hasher, body).await,
            BlobStore::S3(s) => s.append(upload, offset, state, hasher, body).await,
        }
    }

    /// After the metadata recorded `new` in place of `old`: drops what only
    /// `old` needed.
    pub async fn release_superseded(&self, upload: &str, old: Option<&str>, new: Option<&str>) {
        if let BlobStore::S3(s) = self {
            s.release_superseded(upload, old, new).await
        }
    }

    /// Makes an upload's bytes one whole object, ready to hash and commit.
    /// Safe to repeat.
    pub async fn seal_upload(&self, upload: &str, state: Option<&str>, size: u64) -> Result<()> {
        match self {
            BlobStore::Fs(_) => Ok(()),
            BlobStore::S3(s) => s.seal_upload(upload, state, size).await,
        }
    }

    /// Hashes a sealed upload's bytes from storage with `digest`'s
    /// algorithm.
    pub async fn hash_upload(
        &self,
        upload: &str,
        state: Option<&str>,
        digest: &Digest,
    ) -> Result<Digest> {
        match self {
            BlobStore::Fs(s) => s.hash_upload(upload, digest).await,
            BlobStore::S3(s) => s.hash_upload(upload, state, digest).await,
        }
    }

    /// Puts a sealed, verified upload at its content address. A stored copy
    /// is replaced (same bytes), rather than trusted: a garbage collector
    /// may be about to delete it.
    pub async fn commit_upload(
        &self,
        upload: &str,
        state: Option<&str>,
        size: u64,
        digest: &Digest,
    ) -> Result<()> {
        match self {
            BlobStore::Fs(s) => s.commit_upload(upload, digest).await,
            BlobStore::S3(s) => s.commit_upload(upload, state, size, digest).await,
        }
    }

    /// After a committed upload's row is gone: removes what is left of it.
    /// Failures are logged, not returned: the blob is committed.
    pub async fn release_upload(&self, upload: &str, state: Option<&str>) {
        if let BlobStore::S3(s) = self
            && let Err(e) = s.delete_upload(upload, state).await
        {
            tracing::warn!(upload, error = %e, "removing a committed upload's objects");
        }
    }

    /// Removes an upload's bytes; a missing upload is not an error.
    pub async fn delete_upload(&self, upload: &str, state: Option<&str>) -> Result<()> {
        match self {
            BlobStore::Fs(s) => s.delete_upload(upload).await,
            BlobStore::S3(s) => s.delete_upload(upload, state).await,
        }
    }

    /// Opens an upload's bytes for reading while they are being written,
    /// where a backend keeps them in one file (local disk; `None` on S3,
    /// whose parts are readable only once the blob is committed). A commit
    /// renames the file: what was opened reads on, to the end.
    pub async fn open_upload(&self, upload: &str) -> Result<Option<tokio::fs::File>> {
        match self {
            BlobStore::Fs(s) => s.open_upload(upload).await.map(Some),
            BlobStore::S3(_) => Ok(None),
        }
    }

    /// Whether a blob's bytes are stored.
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        match self {
            BlobStore::Fs(s) => Ok(s.has_blob(digest)),
            BlobStore::S3(s) => s.has_blob(digest).await,
        }
    }

    /// Every stored blob: its digest, size and modification time. Keys
    /// that are not digests are left out.
    pub async fn list_blobs(&self) -> Result<Vec<(Digest, u64, SystemTime)>> {
        match self {
            BlobStore::Fs(s) => s.list_blobs().await,
            BlobStore::S3(s) => s.list_blobs().await,
        }
    }

    /// Every upload with bytes in storage: its id, size and when it was
    /// last written (the file under uploads/, or its objects on S3).
    pub async fn list_upload_files(&self) -> Result<Vec<(String, u64, SystemTime)>> {
        match self {
            BlobStore::Fs(s) => s.list_uploads().await,
            BlobStore::S3(s) => s.list_uploads().await,
        }
    }

    /// Moves a blob's bytes aside (`<hex>.gc`, beside them), where no
    /// reader or push finds them; false if there were none. Garbage
    /// collection does this before it asks whether the metadata names the
    /// blob, so a push committing meanwhile sees them gone and is refused.
    pub async fn set_aside(&self, digest: &Digest) -> Result<bool> {
        match self {
            BlobStore::Fs(s) => s.set_aside(digest).await,
            BlobStore::S3(s) => s.set_aside(digest).await,
        }
    }

    /// Puts bytes set aside back, or (`keep == false`) deletes them.
    pub async fn settle_aside(&self, digest: &Digest, keep: bool) -> Result<()> {
        match self {
            BlobStore::Fs(s) => s.settle_aside(digest, keep).await,
            BlobStore::S3(s) => s.settle_aside(digest, keep).await,
        }
    }

    /// Removes a blob's bytes; missing bytes are not an error. Only garbage
    /// collection calls this, for blobs the metadata no longer names.
    pub async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        match self {
            BlobStore::Fs(s) => s.delete_blob(digest).await,
            BlobStore::S3(s) => s.delete_blob(digest).await,
        }
    }

    /// Streams a stored blob, or the inclusive byte range `range` of it.
    pub async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream> {
        match self {
            BlobStore::Fs(s) => s.read_blob(digest, range).await,
            BlobStore::S3(s) => s.read_blob(digest, range).await,
        }
    }

    /// A URL where a client may fetch the blob itself, when the backend
    /// hands out such URLs (S3 with `redirect`).
    pub async fn blob_url(&self, digest: &Digest) -> Result<Option<String>> {
        match self {
            BlobStore::Fs(_) => Ok(None),
            BlobStore::S3(s) => s.blob_url(digest).await,
        }
    }

    /// Reads a whole blob of at most `limit` bytes into memory (small JSON
    /// such as image configs); `None` if it is larger or unreadable.
    pub async fn read_small(&self, digest: &Digest, limit: u64) -> Option<Vec<u8>> {
        use futures_util::StreamExt;
        let mut stream = self.read_blob(digest, None).await.ok()?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.ok()?);
            if bytes.len() as u64 > limit {
                return None;
            }
        }
        Some(bytes)
    }
}

impl From<object_store::Error> for RegistryError {
    fn from(e: object_store::Error) -> RegistryError {
        match e {
            // What the bucket's server answered after the retries
            // (storage.s3.max_retries) ran out, or never answered: 5xx,
            // SlowDown, connections refused or reset, timeouts.
            object_store::Error::Generic { .. } => {
                tracing::warn!(error = %e, "object storage unavailable");
                RegistryError::Unavailable("blob storage".into())
            }
            e => RegistryError::Internal(format!("object storage: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_round_trip() {
        let digest: Digest =
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse()
                .unwrap();
        let key = blob_key(&digest);
        assert_eq!(
            key,
            "blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            parse_blob_key(key.strip_prefix("blobs/").unwrap()),
            Some(digest)
        );
        for other in [
            "sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.gc",
            "sha256/ff/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256/e3",
            "md5/e3/e3b0",
        ] {
            assert_eq!(parse_blob_key(other), None, "{other}");
        }
    }
}
