//! Online garbage collection: what nothing references goes, while pushes
//! and pulls go on. In order:
//!
//! 1. manifests with no tag, no manifest pointing at them, no subject, and
//!    no rollout that ran them, older than the grace period (repeated, as
//!    deleting an index frees its children);
//! 2. blobs no manifest references and no repository linked within the
//!    grace period: first the row, then the bytes;
//! 3. uploads abandoned for longer than the upload age;
//! 4. blob files the metadata does not name (left by a crash between the
//!    bytes and the row), older than the grace period;
//! 5. upload bytes no upload row names (a crash between making the file
//!    and recording the upload, or between committing a blob and removing
//!    its upload's objects), older than the upload age.
//!
//! Every delete re-checks its condition in the same statement, and a push
//! re-checks its references inside its own transaction, so one of the two
//! wins cleanly: a blob a push references is never lost. The grace period
//! keeps what a push in progress has uploaded but not yet referenced.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::core::RegistryError;
use crate::core::event::{Action, Event, Origin};
use crate::core::names::Digest;
use crate::core::{Registry, Result};
use crate::meta::LEASE_MS;
use crate::meta::now_ms;

#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// Younger manifests, blobs and files are kept.
    pub grace: Duration,
    /// Uploads untouched for longer are purged.
    pub upload_max_age: Duration,
    /// Report what would go; delete nothing.
    pub dry_run: bool,
}

/// What a run found (or, in a dry run, would delete).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GcReport {
    pub dry_run: bool,
    /// RFC 3339.
    pub started_at: String,
    pub duration_ms: u64,
    pub manifests_deleted: u64,
    pub blobs_examined: u64,
    pub blobs_deleted: u64,
    /// Bytes of the deleted blobs, manifests and files.
    pub bytes_freed: u64,
    pub uploads_purged: u64,
    pub orphan_files_deleted: u64,
}

/// Rows fetched per query.
const BATCH: u32 = 500;
/// Most blobs marked before their bytes are removed (one cache delay per
/// round).
const MARK_ROUND: usize = 20_000;
/// How often a serving berth looks for changes made by other processes.
/// The lease a collecting process holds.
pub const GC_LEASE: &str = "gc";

const EXTERNAL_CACHE_POLL: Duration = Duration::from_millis(250);
/// How long a collector waits, after marking blobs, before removing their
/// bytes: long enough for every serving process to have dropped them from
/// its cache.
pub(super) const EXTERNAL_CACHE_DELAY: Duration = Duration::from_millis(600);

fn gc_origin() -> Origin {
    Origin {
        actor: Some("berth:gc".into()),
        ..Origin::default()
    }
}

/// The right to collect: the lease no other process collects while this
/// one is held.
pub struct GcLease {
    holder: String,
}

impl Registry {
    /// Takes the collector's lease, unless another collection holds it
    /// (then `Conflict`): two collectors would only get in each other's way.
    pub async fn take_gc_lease(&self) -> Result<GcLease> {
        let holder = uuid::Uuid::new_v4().to_string();
        if !self.meta.hold_lease(GC_LEASE, &holder, LEASE_MS).await? {
            return Err(RegistryError::Conflict(
                "garbage collection is running in another berth process".into(),
            ));
        }
        Ok(GcLease { holder })
    }

    /// Collects garbage, unless another collection is running.
    pub async fn collect_garbage(&self, options: GcOptions) -> Result<GcReport> {
        let lease = self.take_gc_lease().await?;
        self.collect_garbage_holding(lease, options).await
    }

    /// Collects garbage under `lease`, which it gives back. The report is
    /// written as the lease goes, in one transaction, and counted before
    /// either is visible: whoever sees the report sees the run over (and
    /// counted), and may start the next.
    pub async fn collect_garbage_holding(
        &self,
        lease: GcLease,
        options: GcOptions,
    ) -> Result<GcReport> {
        let started_ms = now_ms();
        let result = self
            .meta
            .renewing(
                GC_LEASE,
                &lease.holder,
                LEASE_MS,
                self.collect_garbage_now(started_ms, options),
            )
            .await;
        match result {
            Ok(report) => {
                let json = serde_json::to_string(&report).unwrap_or_default();
                let _counting = crate::metrics::counting().await;
                self.meta
                    .finish_gc_run(GC_LEASE, &lease.holder, started_ms, options.dry_run, &json)
                    .await?;
                crate::metrics::gc_finished(Some(&report), options.dry_run);
                tracing::info!(report = %json, "garbage collection finished");
                Ok(report)
            }
            Err(e) => {
                crate::metrics::gc_finished(None, options.dry_run);
                self.meta.release_lease(GC_LEASE, &lease.holder).await?;
                Err(e)
            }
        }
    }

    async fn collect_garbage_now(&self, started_ms: i64, options: GcOptions) -> Result<GcReport> {
        let started = UNIX_EPOCH + Duration::from_millis(started_ms as u64);
        let cutoff = started_ms - options.grace.as_millis() as i64;
        let mut report = GcReport {
            dry_run: options.dry_run,
            started_at: humantime::format_rfc3339_millis(started).to_string(),
            blobs_examined: self.meta.blob_count().await?,
            ..GcReport::default()
        };
        self.collect_manifests(cutoff, options.dry_run, &mut report)
            .await?;
        self.collect_blobs(cutoff, options.dry_run, &mut report)
            .await?;
        let upload_cutoff = started_ms - options.upload_max_age.as_millis() as i64;
        for id in self.meta.stale_uploads(upload_cutoff).await? {
            if options.dry_run {
                report.uploads_purged += 1;
                continue;
            }
            let _upload = self.upload_locks.lock(&id).await;
            if let Some(state) = self.meta.delete_stale_upload(&id, upload_cutoff).await? {
                self.blobs.delete_upload(&id, state.as_deref()).await?;
                report.uploads_purged += 1;
            }
        }
        self.collect_orphan_files(cutoff, options.dry_run, &mut report)
            .await?;
        self.collect_orphan_uploads(upload_cutoff, options.dry_run, &mut report)
            .await?;
        if !options.dry_run {
            self.meta.purge_expired_leases().await?;
        }
        report.duration_ms = (now_ms() - started_ms).max(0) as u64;
        Ok(report)
    }

    async fn collect_manifests(
        &self,
        cutoff: i64,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<()> {
        loop {
            let batch = self.meta.garbage_manifests(cutoff, BATCH).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let deleted = if dry_run {
                report.bytes_freed += batch.iter().map(|m| m.size as u64).sum::<u64>();
                batch.len() as u64
            } else {
                let with_events: Vec<_> = batch
                    .into_iter()
                    .map(|m| {
                        let mut event = Event::new(Action::Delete, &m.repository, &gc_origin());
                        event.digest = Some(m.digest.clone());
                        event.media_type = Some(m.media_type.clone());
                        (m, event)
                    })
                    .collect();
                let gone = self
                    .meta
                    .delete_garbage_manifests(&with_events, cutoff)
                    .await?;
                report.bytes_freed += gone.iter().map(|m| m.size as u64).sum::<u64>();
                gone.len() as u64
            };
            report.manifests_deleted += deleted;
            if deleted > 0 && !dry_run {
                self.events_written.notify_one();
                self.cache_changed().await?;
            }
            // A dry run deletes nothing, so the next query would answer the
            // same: it sees one level (children of a deleted index stay).
            if dry_run || deleted == 0 {
                return Ok(());
            }
        }
    }

    async fn collect_blobs(&self, cutoff: i64, dry_run: bool, report: &mut GcReport) -> Result<()> {
        if !dry_run {
            // Left marked by a run that stopped midway.
            let leftover = self.meta.marked_blobs().await?;
            report.blobs_deleted += leftover.len() as u64;
            report.bytes_freed += leftover.iter().map(|(_, size)| size).sum::<u64>();
            self.remove_marked_blobs(leftover).await?;
        }
        let mut after = String::new();
        let mut marked = Vec::new();
        loop {
            let batch = self.meta.garbage_blobs(cutoff, &after, BATCH).await?;
            let done = batch.is_empty();
            if let Some((last, _)) = batch.last() {
                after = last.to_string();
            }
            let newly = if dry_run {
                batch
            } else {
                self.meta.mark_garbage_blobs(&batch, cutoff).await?
            };
            report.blobs_deleted += newly.len() as u64;
            report.bytes_freed += newly.iter().map(|(_, size)| size).sum::<u64>();
            if !dry_run {
                marked.extend(newly);
            }
            if !marked.is_empty() && (done || marked.len() >= MARK_ROUND) {
                // Caches (here and in a serving berth, if this is `berth
                // gc`) drop the marked blobs before their bytes go.
                self.cache_changed().await?;
                tokio::time::sleep(EXTERNAL_CACHE_DELAY).await;
                self.remove_marked_blobs(std::mem::take(&mut marked))
                    .await?;
            }
            if done {
                return Ok(());
            }
        }
    }

    pub(super) async fn remove_marked_blobs(&self, marked: Vec<(Digest, u64)>) -> Result<()> {
        let digests: Vec<Digest> = marked.into_iter().map(|(d, _)| d).collect();
        for digest in &digests {
            self.blobs.delete_blob(digest).await?;
        }
        self.meta.delete_marked_blobs(&digests).await
    }

    /// Drops this process's cached reads and tells other processes to.
    pub(super) async fn cache_changed(&self) -> Result<()> {
        self.cache.clear();
        self.meta.bump_cache_epoch().await
    }

    /// Follows changes other processes announce, clearing the read cache
    /// when one happened. Runs until the process ends.
    pub async fn follow_cache_epoch(&self) {
        let mut seen = self.meta.cache_epoch().await.unwrap_or_default();
        loop {
            tokio::time::sleep(EXTERNAL_CACHE_POLL).await;
            match self.meta.cache_epoch().await {
                Ok(epoch) if epoch != seen => {
                    self.cache.clear();
                    seen = epoch;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the cache epoch"),
            }
        }
    }

    /// Upload bytes no upload row names, older than the upload age: a
    /// crash between creating an upload's file and recording it, or
    /// between committing a blob and removing its upload's objects (or a
    /// readiness probe's file) leaves them.
    async fn collect_orphan_uploads(
        &self,
        cutoff: i64,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<()> {
        let cutoff_time = UNIX_EPOCH + Duration::from_millis(cutoff.max(0) as u64);
        for (id, size, modified) in self.blobs.list_upload_files().await? {
            if modified >= cutoff_time {
                continue;
            }
            let _upload = self.upload_locks.lock(&id).await;
            if self.meta.upload_known(&id).await? {
                continue;
            }
            if !dry_run {
                self.blobs.delete_upload(&id, None).await?;
            }
            report.orphan_files_deleted += 1;
            report.bytes_freed += size;
        }
        Ok(())
    }

    async fn collect_orphan_files(
        &self,
        cutoff: i64,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<()> {
        let cutoff_time = UNIX_EPOCH + Duration::from_millis(cutoff.max(0) as u64);
        for (digest, size, modified) in self.blobs.list_blobs().await? {
            if modified >= cutoff_time || self.meta.blob_known(&digest).await? {
                continue;
            }
            if dry_run {
                report.orphan_files_deleted += 1;
                report.bytes_freed += size;
                continue;
            }
            // Aside first, then ask again: a push that committed since
            // the first question keeps its bytes (they go back), and one
            // committing now finds them gone and is refused.
            if !self.blobs.set_aside(&digest).await? {
                continue;
            }
            let named = self.meta.blob_known_after_writers(&digest).await?;
            self.blobs.settle_aside(&digest, named).await?;
            if !named {
                report.orphan_files_deleted += 1;
                report.bytes_freed += size;
            }
        }
        Ok(())
    }
}
