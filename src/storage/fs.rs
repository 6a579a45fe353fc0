//! `FsStore`: blobs as files under the data directory (the layout is drawn
//! in the parent module).
//!
//! Contracts:
//! - A file under `blobs/` is complete and its bytes hash to its name: it is
//!   only ever created by renaming a synced upload file whose digest was
//!   checked. Whether it is *visible* is the metadata store's decision.
//! - `append` writes at an exact offset: whatever lies past that offset (the
//!   tail of a chunk that failed midway) is cut first, so a file never holds
//!   bytes the metadata does not account for; a chunk that fails (a body cut
//!   short, a full disk) is cut again as it fails, giving its space back.
//! - Every method that returns `Ok` after writing has synced what it wrote
//!   (file data, and the directory entry for renames): a power cut after it
//!   returns loses nothing.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::core::hashing::{UploadHasher, hash_reader};
use crate::core::names::Digest;
use crate::core::{BodyStream, RegistryError, Result};
use crate::storage::{Appended, ByteStream};

/// Body chunks go to the hashing and writing threads in batches of about
/// this many bytes: one wake-up of each thread (and one write) per batch
/// rather than per chunk, however small the chunks the network gives.
const BATCH_BYTES: usize = 512 * 1024;

/// The batch size of an upload while no other is being written in this
/// process. Half the hand-offs cut a 1 GiB push's CPU by 7% (1.55 to
/// 1.62 GB/s) and a chunked one's by 8% (1.10 to 1.24 GB/s). But the
/// upload holds twice the memory: for every upload, that raised the peak
/// RSS with eight clients pushing and pulling by 3-6 MiB, so uploads
/// running side by side keep the smaller batches.
const LONE_BATCH_BYTES: usize = 1024 * 1024;

/// How many batches may wait for each of those threads. With the one being
/// filled and the one each works on, an upload holds at most about three
/// batches (1.5 MiB, or 3 MiB alone). Two waiting bought no speed, and with
/// eight clients pushing and pulling the peak RSS was 5 MiB higher.
const WRITE_QUEUE: usize = 1;

/// Uploads being written in this process, for the batch size.
static APPENDING: AtomicUsize = AtomicUsize::new(0);

/// Counts an upload in [`APPENDING`] for as long as it lives.
struct Appending;

impl Appending {
    fn start() -> Appending {
        APPENDING.fetch_add(1, Ordering::Relaxed);
        Appending
    }

    fn batch_bytes(&self) -> usize {
        if APPENDING.load(Ordering::Relaxed) == 1 {
            LONE_BATCH_BYTES
        } else {
            BATCH_BYTES
        }
    }
}

impl Drop for Appending {
    fn drop(&mut self) {
        APPENDING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A batch of body chunks, shared by the hashing and writing threads (not
/// copied).
type Chunks = std::sync::Arc<[Bytes]>;

/// Read buffer for streaming blobs out.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens (creating if needed) the storage tree under `root`.
    pub fn open(root: &Path) -> io::Result<FsStore> {
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("uploads"))?;
        Ok(FsStore {
            root: root.to_path_buf(),
        })
    }

    /// Whether blobs can be written: creates, syncs and removes a probe
    /// file where uploads go.
    pub async fn check_writable(&self) -> Result<()> {
        let probe = self.upload_path(&format!(".ready-{}", uuid::Uuid::new_v4()));
        blocking(move || {
            let file = File::create(&probe)?;
            file.sync_all()?;
            std::fs::remove_file(&probe)
        })
        .await
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, upload: &str) -> PathBuf {
        self.root.join("uploads").join(upload)
    }

    /// Creates the empty file of a new upload; `durable`: synced, with its
    /// directory entry, so that a power cut does not lose the session.
    pub async fn create_upload(&self, upload: &str, durable: bool) -> Result<()> {
        let path = self.upload_path(upload);
        blocking(move || {
            let file = File::create(&path)?;
            if durable {
                file.sync_all()?;
                sync_dir(path.parent().expect("uploads/ holds uploads"))?;
            }
            Ok(())
        })
        .await
    }

    /// Writes the stream at `offset` of an upload, hashing as the bytes pass,
    /// and syncs. Receiving from the network, hashing and writing run on
    /// three threads, so none waits for the others: one stream is not held
    /// to one core. Chunks are shared between them, not copied.
    pub async fn append(
        &self,
        upload: &str,
        offset: u64,
        mut hasher: UploadHasher,
        mut body: impl BodyStream,
    ) -> Result<Appended> {
        let path = self.upload_path(upload);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunks>(WRITE_QUEUE);
        let (hash_tx, mut hash_rx) = tokio::sync::mpsc::channel::<Chunks>(WRITE_QUEUE);
        let hashing = tokio::task::spawn_blocking(move || {
            while let Some(batch) = hash_rx.blocking_recv() {
                for chunk in batch.iter() {
                    hasher.update(chunk);
                }
            }
            hasher
        });
        let writer = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let mut file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(offset)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut written = 0u64;
            let mut flushing = Writeback::new(offset);
            while let Some(batch) = rx.blocking_recv() {
                written += write_all_vectored(&mut file, &batch)?;
                flushing.wrote(&file, offset + written);
            }
            file.sync_data()?;
            Ok(written)
        });

        let appending = Appending::start();
        let mut body_error = None;
        let mut batch = Vec::new();
        let mut batched = 0;
        loop {
            let item = body.next().await;
            let end = match item {
                Some(Ok(chunk)) => {
                    batched += chunk.len();
                    batch.push(chunk);
                    false
                }
                Some(Err(e)) => {
                    body_error = Some(e.to_string());
                    break;
                }
                None => true,
            };
            if batched >= appending.batch_bytes() || (end && !batch.is_empty()) {
                let full: Chunks = std::mem::take(&mut batch).into();
                batched = 0;
                // A send fails only when the writer stopped on an I/O
                // error, which its result reports below.
                if hash_tx.send(full.clone()).await.is_err() || tx.send(full).await.is_err() {
                    break;
                }
            }
            if end {
                break;
            }
        }
        drop(tx);
        drop(hash_tx);
        let written = writer
            .await
            .map_err(|e| RegistryError::Internal(format!("upload writer: {e}")))?;
        if written.is_err() || body_error.is_some() {
            // What this call wrote is not the upload's: cut it now, so a
            // failed chunk (on a full disk above all) gives its space back
            // at once rather than when the upload next moves.
            let path = self.upload_path(upload);
            let cut = blocking(move || match OpenOptions::new().write(true).open(&path) {
                Ok(file) => file.set_len(offset),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            })
            .await;
            if let Err(e) = cut {
                tracing::warn!(upload, error = %e, "cutting a failed chunk");
            }
        }
        let written = written.map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RegistryError::BlobUploadUnknown,
            _ => RegistryError::from(e),
        })?;
        let hasher = hashing
            .await
            .map_err(|e| RegistryError::Internal(format!("upload hasher: {e}")))?;
        match body_error {
            Some(e) => Err(RegistryError::BodyRead(e)),
            None => Ok(Appended {
                written,
                hasher,
                state: None,
            }),
        }
    }

    /// Hashes an upload's bytes from disk with any algorithm.
    pub async fn hash_upload(&self, upload: &str, digest: &Digest) -> Result<Digest> {
        let path = self.upload_path(upload);
        let algorithm = digest.algorithm();
        blocking(move || hash_reader(algorithm, File::open(path)?)).await
    }

    /// Moves a finished, verified upload to its content address. A stored
    /// copy is replaced (same bytes, atomically), rather than trusted: a
    /// garbage collector may be about to delete it.
    pub async fn commit_upload(&self, upload: &str, digest: &Digest) -> Result<()> {
        let from = self.upload_path(upload);
        let to = self.blob_path(digest);
        blocking(move || {
            let shard = to.parent().expect("blob path has a parent");
            if !shard.exists() {
                // New directories are durable only once their parents'
                // entries are: blobs/ and blobs/<algorithm>/.
                std::fs::create_dir_all(shard)?;
                let algorithm_dir = shard.parent().expect("shard has a parent");
                sync_dir(algorithm_dir)?;
                sync_dir(algorithm_dir.parent().expect("algorithm dir has a parent"))?;
            }
            // The bytes were synced by the append that wrote them.
            match std::fs::rename(&from, &to) {
                // An earlier attempt moved them, and its metadata commit
                // failed (a full disk): the client is trying again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && to.is_file() => {}
                other => other?,
            }
            sync_dir(shard)
        })
        .await
    }

    /// Removes an upload's bytes; a missing file is not an error.
    pub async fn delete_upload(&self, upload: &str) -> Result<()> {
        let path = self.upload_path(upload);
        blocking(move || match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    /// Opens an upload's file for reading.
    pub async fn open_upload(&self, upload: &str) -> Result<tokio::fs::File> {
        Ok(tokio::fs::File::open(self.upload_path(upload)).await?)
    }

    /// Every file under uploads/: its name, size and modification time.
    pub async fn list_uploads(&self) -> Result<Vec<(String, u64, std::time::SystemTime)>> {
        let root = self.root.join("uploads");
        blocking(move || {
            let mut found = Vec::new();
            for file in std::fs::read_dir(&root)? {
                let file = file?;
                let meta = file.metadata()?;
                if let (Some(name), true) = (file.file_name().to_str(), meta.is_file()) {
                    found.push((name.to_owned(), meta.len(), meta.modified()?));
                }
            }
            Ok(found)
        })
        .await
    }

    /// Whether a blob's bytes are stored.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Every stored blob file: its digest, size and modification time.
    /// Files whose names are not digests are left out.
    pub async fn list_blobs(&self) -> Result<Vec<(Digest, u64, std::time::SystemTime)>> {
        let root = self.root.join("blobs");
        blocking(move || {
            let mut found = Vec::new();
            for algorithm in std::fs::read_dir(&root)? {
                let algorithm = algorithm?;
                let Some(name) = algorithm.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !algorithm.file_type()?.is_dir() {
                    continue;
                }
                for shard in std::fs::read_dir(algorithm.path())? {
                    let shard = shard?;
                    if !shard.file_type()?.is_dir() {
                        continue;
                    }
                    for file in std::fs::read_dir(shard.path())? {
                        let file = file?;
                        let meta = file.metadata()?;
                        let digest = file
                            .file_name()
                            .to_str()
                            .and_then(|hex| format!("{name}:{hex}").parse::<Digest>().ok());
                        if let (Some(digest), true) = (digest, meta.is_file()) {
                            found.push((digest, meta.len(), meta.modified()?));
                        }
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    /// Moves a blob's bytes aside (`<hex>.gc`, beside them), where no
    /// reader or push finds them; false if there were none. Garbage
    /// collection does this before it asks whether the metadata names the
    /// blob, so a push committing meanwhile sees them gone and is refused.
    pub async fn set_aside(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        let aside = path.with_extension("gc");
        blocking(move || match std::fs::rename(&path, &aside) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    /// Puts bytes set aside back, or (`keep == false`) deletes them.
    pub async fn settle_aside(&self, digest: &Digest, keep: bool) -> Result<()> {
        let path = self.blob_path(digest);
        let aside = path.with_extension("gc");
        blocking(move || {
            if keep {
                std::fs::rename(&aside, &path)
            } else {
                std::fs::remove_file(&aside)
            }
        })
        .await
    }

    /// Removes a blob's bytes; a missing file is not an error. Only garbage
    /// collection calls this, for blobs the metadata no longer names.
    pub async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        blocking(move || match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    /// Streams a stored blob, or the inclusive byte range `range` of it.
    pub async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream> {
        let path = self.blob_path(digest);
        let missing = format!("blob {digest} missing from storage");
        let (file, len) = blocking(move || {
            let mut file = File::open(&path).map_err(|e| match e.kind() {
                // The metadata says the blob exists but its bytes are gone:
                // that is berth's fault, never the client's.
                io::ErrorKind::NotFound => io::Error::other(missing),
                _ => e,
            })?;
            let len = match range {
                Some((start, end)) => {
                    file.seek(SeekFrom::Start(start))?;
                    end - start + 1
                }
                None => file.metadata()?.len(),
            };
            Ok((file, len))
        })
        .await?;
        Ok(read_chunks(file, len))
    }
}

/// Streams `len` bytes of `file` from where it stands. Each chunk is read
/// straight into the buffer that is sent (tokio's `File` reads into one of
/// its own and copies), and the next is read while the socket takes the
/// one before.
fn read_chunks(file: File, len: u64) -> ByteStream {
    fn read_next(
        mut file: File,
        left: u64,
    ) -> Option<tokio::task::JoinHandle<io::Result<(File, Bytes)>>> {
        use std::io::Read;
        let want = left.min(READ_CHUNK as u64);
        (want > 0).then(|| {
            tokio::task::spawn_blocking(move || {
                let mut chunk = Vec::with_capacity(want as usize);
                (&mut file).take(want).read_to_end(&mut chunk)?;
                if chunk.is_empty() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok((file, Bytes::from(chunk)))
            })
        })
    }
    let first = read_next(file, len);
    futures_util::stream::unfold((first, len), |(reading, left)| async move {
        let read = match reading?.await {
            Ok(read) => read,
            Err(e) => Err(io::Error::other(e)),
        };
        Some(match read {
            Ok((file, chunk)) => {
                let left = left - chunk.len() as u64;
                (Ok(chunk), (read_next(file, left), left))
            }
            Err(e) => (Err(e), (None, 0)),
        })
    })
    .boxed()
}

/// Starts writing an upload's bytes to disk while it is still arriving, a
/// window at a time, so that the sync that ends it waits only for the
/// last window rather than the whole blob: the disk works while the
/// network and the hash do.
struct Writeback {
    /// Where the next window to hand to the disk starts.
    from: u64,
}

/// Bytes handed to the disk at a time. A chunk's sync waits for up to one
/// window: with 8 MiB, a chunked push of 8 MiB chunks (a common client
/// size) overlapped nothing and ran at 55% of a monolithic one; with 2 MiB
/// at 75%, monolithic pushes as fast.
const WRITEBACK_WINDOW: u64 = 2 << 20;

impl Writeback {
    fn new(offset: u64) -> Writeback {
        Writeback { from: offset }
    }

    /// After the file was written up to `end`.
    fn wrote(&mut self, file: &File, end: u64) {
        use std::os::fd::AsRawFd;
        if end - self.from < WRITEBACK_WINDOW {
            return;
        }
        // SAFETY: the descriptor is open for writing for the whole call.
        // Only a hint: the upload's closing sync is what makes it durable,
        // so a failure here changes nothing but speed.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                self.from as i64,
                (end - self.from) as i64,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.from = end;
    }
}

/// Writes every chunk, as few system calls as the kernel allows; how many
/// bytes that was.
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> io::Result<u64> {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let n = file.write_vectored(slices)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut slices, n);
    }
    Ok(total as u64)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::Internal(format!("storage task: {e}")))?
        .map_err(RegistryError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hashing::digest_bytes;
    use crate::core::names::Algorithm;

    async fn read_all(stream: ByteStream) -> Vec<u8> {
        let chunks: Vec<Bytes> = stream.map(|chunk| chunk.unwrap()).collect().await;
        assert!(
            chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= READ_CHUNK)
        );
        chunks.concat()
    }

    #[tokio::test]
    async fn blobs_and_ranges_read_whole_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..READ_CHUNK * 2 + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        let digest = digest_bytes(Algorithm::Sha256, &bytes);
        let path = store.blob_path(&digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();

        assert_eq!(
            read_all(store.read_blob(&digest, None).await.unwrap()).await,
            bytes
        );
        for (start, end) in [
            (0, 0),
            (10, 19),
            (READ_CHUNK - 1, READ_CHUNK + 1),
            (5, bytes.len() - 1),
        ] {
            let range = Some((start as u64, end as u64));
            let read = read_all(store.read_blob(&digest, range).await.unwrap()).await;
            assert_eq!(read, bytes[start..=end], "bytes {start}-{end}");
        }
    }

    #[tokio::test]
    async fn a_blob_whose_file_is_gone_is_an_internal_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let digest = digest_bytes(Algorithm::Sha256, b"never stored");
        let Err(RegistryError::Internal(message)) = store.read_blob(&digest, None).await else {
            panic!("a missing blob file must be berth's own error");
        };
        assert!(message.contains("missing from storage"), "{message}");
    }
}
