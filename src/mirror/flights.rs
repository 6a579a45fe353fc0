//! Fetches in flight, so that N clients asking at once cause one upstream
//! fetch.
//!
//! - [`Flights`]: small answers (manifests, tag checks) that every waiter
//!   gets a copy of once the first finishes.
//! - [`BlobFlights`], keyed by digest: one task streams the blob from the
//!   upstream into an upload; every client (the first too) reads the
//!   upload's growing file as it is written, then what the commit left.
//!   Nothing is held in memory but the chunks in transit. The last byte of
//!   what a client asked for is only released once the whole blob matched
//!   its digest, so a client never receives a complete blob that is wrong:
//!   a mismatch cuts every response short and nothing is stored.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{OnceCell, watch};

use crate::core::names::{Digest, RepoName};
use crate::storage::ByteStream;

/// Most bytes handed to a client in one piece.
const READ_CHUNK: usize = 256 * 1024;
/// How long a reader waits before looking again when the bytes it was told
/// about are not yet in the file (the writer trails the network by a few
/// chunks).
const WRITER_LAG: Duration = Duration::from_millis(5);

/// Work keyed by a string that every concurrent caller shares.
pub struct Flights<V> {
    table: Mutex<HashMap<String, Arc<OnceCell<V>>>>,
}

impl<V> Default for Flights<V> {
    fn default() -> Self {
        Flights {
            table: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> Flights<V> {
    /// Runs `work` for `key` unless it is running already, and returns its
    /// result. If the caller running it goes away (its client hung up),
    /// the next waiter runs it again.
    pub async fn run<F: Future<Output = V>>(&self, key: &str, work: impl FnOnce() -> F) -> V {
        let cell = self
            .table
            .lock()
            .expect("flights")
            .entry(key.to_owned())
            .or_default()
            .clone();
        let value = cell.get_or_init(work).await.clone();
        let mut table = self.table.lock().expect("flights");
        if table.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            table.remove(key);
        }
        value
    }
}

/// Where a blob fetch stands.
#[derive(Clone, Debug)]
pub enum BlobState {
    /// Asking the upstream.
    Connecting,
    /// Streaming into upload `upload`, `received` bytes so far of `size`
    /// (when the upstream said).
    Streaming {
        upload: String,
        size: Option<u64>,
        received: u64,
    },
    /// Stored, `size` bytes, matching its digest.
    Done { size: u64 },
    /// Failed: the upstream said it has no such blob (`not_found`), or
    /// something went wrong on the way; nothing is stored.
    Failed { not_found: bool, message: String },
}

/// One blob being fetched.
pub struct BlobFlight {
    /// The repository the fetch stores it in.
    pub repo: RepoName,
    state: watch::Sender<BlobState>,
}

impl BlobFlight {
    pub fn set(&self, state: BlobState) {
        self.state.send_replace(state);
    }

    /// Counts bytes received from the upstream.
    pub fn received(&self, n: u64) {
        self.state.send_modify(|s| {
            if let BlobState::Streaming { received, .. } = s {
                *received += n;
            }
        });
    }

    /// Waits until the fetch is past connecting.
    pub async fn started(&self) -> BlobState {
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| !matches!(s, BlobState::Connecting))
            .await
            .map(|s| s.clone());
        state.unwrap_or_else(|_| lost())
    }

    /// Waits until the fetch is done or failed.
    pub async fn finished(&self) -> BlobState {
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| matches!(s, BlobState::Done { .. } | BlobState::Failed { .. }))
            .await
            .map(|s| s.clone());
        state.unwrap_or_else(|_| lost())
    }

    /// The bytes `start..=end` as the fetch writes them to `file` (the
    /// upload's, opened before or while it is written).
    pub fn follow(&self, file: tokio::fs::File, start: u64, end: u64) -> ByteStream {
        let source = FileSource { file, at: None };
        read_as_allowed(self.state.subscribe(), source, start, end).boxed()
    }
}

/// Where a follower reads the bytes from.
trait Source: Send + 'static {
    /// Up to `want` bytes at `pos`; fewer (or none) if not yet written.
    fn read(
        &mut self,
        pos: u64,
        want: usize,
    ) -> impl Future<Output = std::io::Result<Bytes>> + Send + '_;
}

struct FileSource {
    file: tokio::fs::File,
    /// Where the file's cursor is, when known.
    at: Option<u64>,
}

impl Source for FileSource {
    async fn read(&mut self, pos: u64, want: usize) -> std::io::Result<Bytes> {
        if self.at != Some(pos) {
            self.file.seek(std::io::SeekFrom::Start(pos)).await?;
        }
        let mut buf = vec![0u8; want];
        let n = self.file.read(&mut buf).await?;
        buf.truncate(n);
        self.at = Some(pos + n as u64);
        Ok(Bytes::from(buf))
    }
}
fn lost() -> BlobState {
    BlobState::Failed {
        not_found: false,
        message: "the fetch ended without an outcome".into(),
    }
}

/// Reads `start..=end` from `source` as the fetch's state lets: only
/// bytes received, never the last one before the blob is verified.
fn read_as_allowed<S: Source>(
    rx: watch::Receiver<BlobState>,
    source: S,
    start: u64,
    end: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    futures_util::stream::unfold(
        (rx, source, start, false),
        move |(mut rx, mut source, mut pos, over)| async move {
            if over || pos > end {
                return None;
            }
            loop {
                // Bytes below `allowed` may go out.
                let allowed = match &*rx.borrow_and_update() {
                    BlobState::Connecting => Ok(0),
                    BlobState::Streaming { received, .. } => Ok((*received).min(end)),
                    BlobState::Done { .. } => Ok(end + 1),
                    BlobState::Failed { message, .. } => Err(message.clone()),
                };
                let allowed = match allowed {
                    Ok(allowed) => allowed,
                    Err(message) => {
                        let e = std::io::Error::other(format!("fetching from upstream: {message}"));
                        return Some((Err(e), (rx, source, pos, true)));
                    }
                };
                if pos < allowed {
                    let want = (allowed - pos).min(READ_CHUNK as u64) as usize;
                    match source.read(pos, want).await {
                        Ok(bytes) if !bytes.is_empty() => {
                            pos += bytes.len() as u64;
                            return Some((Ok(bytes), (rx, source, pos, false)));
                        }
                        Ok(_) => {
                            tokio::time::sleep(WRITER_LAG).await;
                            continue;
                        }
                        Err(e) => return Some((Err(e), (rx, source, pos, true))),
                    }
                }
                if rx.changed().await.is_err() {
                    let e =
                        std::io::Error::other("the fetch from upstream ended without an outcome");
                    return Some((Err(e), (rx, source, pos, true)));
                }
            }
        },
    )
}

/// Blob fetches in flight, by digest.
#[derive(Default)]
pub struct BlobFlights {
    table: Mutex<HashMap<Digest, Arc<BlobFlight>>>,
}

impl BlobFlights {
    /// The flight of `digest`, and whether the caller started it (and so
    /// must run the fetch and call [`BlobFlights::land`] after).
    pub fn join(&self, digest: &Digest, repo: &RepoName) -> (Arc<BlobFlight>, bool) {
        let mut table = self.table.lock().expect("blob flights");
        if let Some(flight) = table.get(digest) {
            return (flight.clone(), false);
        }
        let flight = Arc::new(BlobFlight {
            repo: repo.clone(),
            state: watch::channel(BlobState::Connecting).0,
        });
        table.insert(digest.clone(), flight.clone());
        (flight, true)
    }

    /// The flight of `digest`, if one is in progress.
    pub fn get(&self, digest: &Digest) -> Option<Arc<BlobFlight>> {
        self.table
            .lock()
            .expect("blob flights")
            .get(digest)
            .cloned()
    }

    /// Ends a flight: later requests look in storage (or start anew).
    pub fn land(&self, digest: &Digest) {
        self.table.lock().expect("blob flights").remove(digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "file" that grows as the test says.
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl Source for Memory {
        async fn read(&mut self, pos: u64, want: usize) -> std::io::Result<Bytes> {
            let data = self.0.lock().unwrap();
            let from = (pos as usize).min(data.len());
            let to = (from + want).min(data.len());
            Ok(Bytes::copy_from_slice(&data[from..to]))
        }
    }

    fn reader(
        flight: &BlobFlight,
        data: Arc<Mutex<Vec<u8>>>,
        start: u64,
        end: u64,
    ) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        read_as_allowed(flight.state.subscribe(), Memory(data), start, end)
    }

    fn flight() -> BlobFlight {
        BlobFlight {
            repo: "a".parse().unwrap(),
            state: watch::channel(BlobState::Connecting).0,
        }
    }

    async fn collect(
        s: impl futures_util::Stream<Item = std::io::Result<Bytes>>,
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut s = std::pin::pin!(s);
        while let Some(item) = s.next().await {
            out.extend_from_slice(&item.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn the_last_byte_waits_for_the_digest_check() {
        let f = Arc::new(flight());
        let data = Arc::new(Mutex::new(Vec::new()));
        let whole = tokio::spawn(collect(reader(&f, data.clone(), 0, 9)));
        let part = tokio::spawn(collect(reader(&f, data.clone(), 2, 4)));
        f.set(BlobState::Streaming {
            upload: "u".into(),
            size: Some(10),
            received: 0,
        });
        data.lock().unwrap().extend_from_slice(b"0123456789");
        f.received(10);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!whole.is_finished() && !part.is_finished());
        f.set(BlobState::Done { size: 10 });
        assert_eq!(whole.await.unwrap().unwrap(), b"0123456789");
        assert_eq!(part.await.unwrap().unwrap(), b"234");
    }

    #[tokio::test]
    async fn a_failed_fetch_cuts_every_reader_short() {
        let f = Arc::new(flight());
        let data = Arc::new(Mutex::new(b"01234".to_vec()));
        let whole = tokio::spawn(collect(reader(&f, data.clone(), 0, 9)));
        f.set(BlobState::Streaming {
            upload: "u".into(),
            size: Some(10),
            received: 5,
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        f.set(BlobState::Failed {
            not_found: false,
            message: "bytes hash to sha256:x".into(),
        });
        let err = whole.await.unwrap().unwrap_err();
        assert!(err.contains("sha256:x"), "{err}");
    }

    #[tokio::test]
    async fn shared_work_runs_once() {
        let flights: Arc<Flights<u32>> = Arc::default();
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", || async {
                        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        7
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
