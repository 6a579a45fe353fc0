//! Group commit for the embedded SQLite file: every writing transaction
//! returns only once it is on disk, and transactions that commit at the
//! same time share one `fdatasync`.
//!
//! SQLite runs with `synchronous = NORMAL` in WAL mode: a commit appends
//! its frames to the `-wal` file but does not sync it. [`WalSync::durable`]
//! then syncs that file. The first committer to get there syncs for every
//! transaction committed so far; whoever committed while that sync ran
//! waits for the next one, which covers them all. SQLite validates WAL
//! frames by checksum on recovery, so a sync that covers a commit frame
//! makes its transaction survive a power cut; and a crash of the process
//! alone loses nothing even before it, as the kernel holds the frames.
//!
//! Why not `synchronous = FULL`: SQLite then syncs inside the write lock,
//! so concurrent pushes queue for one disk flush each.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::{RegistryError, Result};

#[derive(Debug)]
pub struct WalSync {
    /// `<database>-wal`.
    wal: PathBuf,
    /// Commits that asked to be durable so far.
    committed: AtomicU64,
    /// How many of them the last finished sync covered.
    synced: tokio::sync::Mutex<u64>,
    /// Syncs done.
    syncs: AtomicU64,
}

impl WalSync {
    pub fn new(database: &std::path::Path) -> WalSync {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal: PathBuf::from(wal),
            committed: AtomicU64::new(0),
            synced: tokio::sync::Mutex::new(0),
            syncs: AtomicU64::new(0),
        }
    }

    /// Returns once everything committed before the call is on disk. Call
    /// it after the commit returned.
    pub async fn durable(&self) -> Result<()> {
        let mine = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        if *synced >= mine {
            // A sync that started after this commit has finished.
            return Ok(());
        }
        // Everyone counted by now committed before this sync starts.
        let covers = self.committed.load(Ordering::SeqCst);
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || match std::fs::File::open(&wal) {
            Ok(file) => file.sync_data(),
            // No WAL: the last connection closed and checkpointed it into
            // the database file, which SQLite synced before removing it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| RegistryError::Internal(format!("syncing the metadata: {e}")))??;
        *synced = covers;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_commits_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("meta.db");
        std::fs::write(dir.path().join("meta.db-wal"), b"frames").unwrap();
        let sync = std::sync::Arc::new(WalSync::new(&db));
        let waits: Vec<_> = (0..64)
            .map(|_| {
                let sync = sync.clone();
                tokio::spawn(async move { sync.durable().await })
            })
            .collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        // Every commit counted, in far fewer syncs than commits.
        assert_eq!(*sync.synced.lock().await, 64);
        let syncs = sync.syncs.load(Ordering::Relaxed);
        assert!((1..=4).contains(&syncs), "{syncs} syncs for 64 commits");
        // A later commit is covered by a new sync.
        sync.durable().await.unwrap();
        assert_eq!(*sync.synced.lock().await, 65);
        // Without a WAL file there is nothing left to sync.
        std::fs::remove_file(dir.path().join("meta.db-wal")).unwrap();
        sync.durable().await.unwrap();
    }
}
