//! What mirrors' pulls found, noted in memory and written in batches (a
//! write per pull would cost more than the pull): hits and misses per
//! cached repository, and when each cached manifest and blob was last
//! pulled, which is the order eviction follows.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::core::{Registry, Result};
use crate::meta::{CachedPull, CountDelta, now_ms};

#[derive(Default)]
pub struct UseLog {
    pulls: Mutex<HashMap<(String, String, bool), i64>>,
    counts: Mutex<HashMap<String, (u64, u64)>>,
    /// Counts being written now: still shown until they are.
    writing: Mutex<HashMap<String, (u64, u64)>>,
}

/// How a pull through a mirror was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// From the cache.
    Hit,
    /// From the cache, because the upstream failed.
    Stale,
    /// Fetched from the upstream.
    Miss,
}

impl UseLog {
    /// Notes a pull of `digest` (a manifest or a blob) from `repo` of
    /// mirror `mirror`.
    pub fn note(&self, mirror: &str, repo: &str, digest: &str, manifest: bool, answer: Answer) {
        self.pulls
            .lock()
            .expect("mirror pulls")
            .insert((repo.to_owned(), digest.to_owned(), manifest), now_ms());
        let mut counts = self.counts.lock().expect("mirror counts");
        let entry = counts.entry(repo.to_owned()).or_default();
        match answer {
            Answer::Hit | Answer::Stale => entry.0 += 1,
            Answer::Miss => entry.1 += 1,
        }
        drop(counts);
        crate::metrics::mirror_pull(mirror, answer == Answer::Miss);
        if answer == Answer::Stale {
            crate::metrics::mirror_stale_serve(mirror);
        }
    }

    /// Hits and misses of `repo` noted but not yet written.
    pub fn unflushed(&self, repo: &str) -> (u64, u64) {
        let writing = self.writing.lock().expect("mirror counts");
        let counts = self.counts.lock().expect("mirror counts");
        let (a, b) = (
            counts.get(repo).copied().unwrap_or_default(),
            writing.get(repo).copied().unwrap_or_default(),
        );
        (a.0 + b.0, a.1 + b.1)
    }

    /// Writes what was noted since the last call.
    pub async fn flush(&self, registry: &Registry) -> Result<()> {
        let pulls: Vec<CachedPull> = self.pulls.lock().expect("mirror pulls").drain().collect();
        let counts: Vec<CountDelta> = {
            let mut writing = self.writing.lock().expect("mirror counts");
            let mut counts = self.counts.lock().expect("mirror counts");
            *writing = std::mem::take(&mut *counts);
            writing
                .iter()
                .map(|(repo, (hits, misses))| (repo.clone(), *hits, *misses))
                .collect()
        };
        let written = registry.record_mirror_use(&pulls, &counts).await;
        let mut writing = self.writing.lock().expect("mirror counts");
        if written.is_err() {
            // Counted again at the next flush.
            let mut counts = self.counts.lock().expect("mirror counts");
            for (repo, (hits, misses)) in writing.drain() {
                let entry = counts.entry(repo).or_default();
                entry.0 += hits;
                entry.1 += misses;
            }
        }
        writing.clear();
        written
    }
}
