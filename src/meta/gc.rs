//! The queries garbage collection runs. Each delete repeats its candidate
//! condition in the same statement, so whatever a push committed in the
//! meantime (a tag, a reference, a fresh link) keeps the row.

use sqlx::Row;

use crate::core::Result;
use crate::core::event::Event;
use crate::core::names::Digest;
use crate::meta::{MetaStore, now_ms};

/// A manifest nothing needs any more: no tag, no manifest that points at
/// it, no subject it refers to, and no rollout that ran it. `?1` is the
/// cutoff time: younger manifests are kept. A mirror's cached manifests
/// are never garbage (one pulled by digest has no tag): the mirror's size
/// cap evicts them.
macro_rules! manifest_is_garbage {
    () => {
        "m.created_at < $1 AND m.mirror IS NULL \
         AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository = m.repository AND t.digest = m.digest) \
         AND NOT EXISTS (SELECT 1 FROM manifest_references r \
                         WHERE r.repository = m.repository AND r.target = m.digest) \
         AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s \
                         WHERE s.repository = m.repository AND s.digest = m.subject)) \
         AND NOT EXISTS (SELECT 1 FROM deploys d WHERE d.state IN ('patching', 'rolling', 'succeeded') \
                         AND d.new_image LIKE '%/' || m.repository || '@' || m.digest)"
    };
}

/// A blob no manifest references and no repository linked since the
/// cutoff `?1`, nor a mirror cached (its size cap evicts those).
macro_rules! blob_is_garbage {
    () => {
        "b.created_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.target = b.digest) \
         AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest \
                         AND (rb.created_at >= $1 OR rb.mirror IS NOT NULL))"
    };
}

/// A manifest garbage collection may delete.
pub struct GarbageManifest {
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    pub size: i64,
}

impl MetaStore {
    pub async fn garbage_manifests(&self, cutoff: i64, limit: u32) -> Result<Vec<GarbageManifest>> {
        let rows = sqlx::query(concat!(
            "SELECT m.repository, m.digest, m.media_type, m.size FROM manifests m WHERE ",
            manifest_is_garbage!(),
            " ORDER BY m.repository, m.digest LIMIT CAST($2 AS BIGINT)"
        ))
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| GarbageManifest {
                repository: r.get(0),
                digest: r.get(1),
                media_type: r.get(2),
                size: r.get(3),
            })
            .collect())
    }

    /// Deletes each manifest that is still garbage, writing its event with
    /// it, in one transaction; returns those deleted.
    pub async fn delete_garbage_manifests<'a>(
        &self,
        batch: &'a [(GarbageManifest, Event)],
        cutoff: i64,
    ) -> Result<Vec<&'a GarbageManifest>> {
        let mut tx = self.write_tx().await?;
        let mut deleted = Vec::new();
        for (m, event) in batch {
            let done = sqlx::query(concat!(
                "DELETE FROM manifests AS m WHERE m.repository = $2 AND m.digest = $3 AND ",
                manifest_is_garbage!()
            ))
            .bind(cutoff)
            .bind(&m.repository)
            .bind(&m.digest)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                Self::insert_event(&mut tx, event).await?;
                deleted.push(m);
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Up to `limit` garbage blobs after `after`, in digest order.
    pub async fn garbage_blobs(
        &self,
        cutoff: i64,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(Digest, u64)>> {
        let rows = sqlx::query(concat!(
            "SELECT b.digest, b.size FROM blobs b WHERE b.digest > $2 AND b.deleting = 0 AND ",
            blob_is_garbage!(),
            " ORDER BY b.digest LIMIT CAST($3 AS BIGINT)"
        ))
        .bind(cutoff)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.get::<String, _>(0).parse()?, r.get::<i64, _>(1) as u64)))
            .collect()
    }

    pub async fn blob_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Marks each blob that is still garbage as being collected (and drops
    /// its links), in one transaction; returns those marked, whose bytes
    /// may then go.
    pub async fn mark_garbage_blobs(
        &self,
        batch: &[(Digest, u64)],
        cutoff: i64,
    ) -> Result<Vec<(Digest, u64)>> {
        let mut tx = self.write_tx().await?;
        let mut marked = Vec::new();
        for (digest, size) in batch {
            let done = sqlx::query(concat!(
                "UPDATE blobs AS b SET deleting = 1 WHERE b.digest = $2 AND b.deleting = 0 AND ",
                blob_is_garbage!()
            ))
            .bind(cutoff)
            .bind(digest.as_str())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                sqlx::query("DELETE FROM repository_blobs WHERE digest = $1")
                    .bind(digest.as_str())
                    .execute(&mut *tx)
                    .await?;
                marked.push((digest.clone(), *size));
            }
        }
        tx.commit().await?;
        Ok(marked)
    }

    /// Blobs marked by a collection that did not finish.
    pub async fn marked_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let rows = sqlx::query("SELECT digest, size FROM blobs WHERE deleting = 1 ORDER BY digest")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.get::<String, _>(0).parse()?, r.get::<i64, _>(1) as u64)))
            .collect()
    }

    /// Removes marked blobs' rows, once their bytes are gone.
    pub async fn delete_marked_blobs(&self, digests: &[Digest]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for digest in digests {
            sqlx::query("DELETE FROM blobs WHERE digest = $1 AND deleting = 1")
                .bind(digest.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Tells other processes' caches that something they may hold went.
    pub async fn bump_cache_epoch(&self) -> Result<()> {
        sqlx::query("UPDATE cache_epoch SET n = n + 1 WHERE id = 1")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn cache_epoch(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT n FROM cache_epoch WHERE id = 1")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Whether the metadata names a blob, asked as a writer: the answer
    /// waits for any push that is committing (and has already checked the
    /// bytes are there) instead of reading around it.
    pub async fn blob_known_after_writers(&self, digest: &Digest) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        // Any write takes SQLite's write lock, which a committing push
        // holds until it is done.
        sqlx::query("UPDATE cache_epoch SET n = n WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 AND deleting = 0")
            .bind(digest.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.is_some())
    }

    /// Whether the metadata names a blob.
    pub async fn blob_known(&self, digest: &Digest) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 AND deleting = 0")
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Uploads nobody has written to since `cutoff`.
    pub async fn stale_uploads(&self, cutoff: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM uploads WHERE updated_at < $1 ORDER BY id")
            .bind(cutoff)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Whether an upload with this id exists.
    pub async fn upload_known(&self, id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Ends an upload if it is still stale. Returns `None` if it was not,
    /// else the upload's storage state, for the bytes to go too.
    pub async fn delete_stale_upload(
        &self,
        id: &str,
        cutoff: i64,
    ) -> Result<Option<Option<String>>> {
        let row = sqlx::query(
            "DELETE FROM uploads WHERE id = $1 AND updated_at < $2 RETURNING storage_state",
        )
        .bind(id)
        .bind(cutoff)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Records a finished run's report and gives back the collector's
    /// lease `lease` held by `holder`, in one transaction.
    pub async fn finish_gc_run(
        &self,
        lease: &str,
        holder: &str,
        started_at: i64,
        dry_run: bool,
        report: &str,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO gc_runs (started_at, finished_at, dry_run, report) VALUES ($1, $2, $3, $4)",
        )
        .bind(started_at)
        .bind(now_ms())
        .bind(dry_run as i64)
        .bind(report)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(lease)
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The newest run's report (JSON).
    pub async fn last_gc_report(&self) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT report FROM gc_runs ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
