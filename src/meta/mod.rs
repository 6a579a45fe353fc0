//! `MetaStore`: the metadata that decides what exists (repositories, blobs
//! and their links, manifests, tags, uploads in progress), in an embedded
//! SQLite file. Every write commits with `synchronous=FULL`: once a method
//! returns, the row survives a power cut.

mod accounts;
mod admin;
mod events;
mod gc;

pub use admin::{
    AuditRow, ManifestSummary, NewAudit, RepositorySummary, SettingsRow, SinkRow, TagRow,
};
pub use events::{AttemptOutcome, DeliveryRow, DeployRow, NewDeploy};
pub use gc::GarbageManifest;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::core::Result;
use crate::core::names::{Digest, RepoName, Tag};
use crate::events::Event;

#[derive(Clone, Debug)]
pub struct MetaStore {
    pool: SqlitePool,
}

/// An upload in progress.
pub struct UploadRow {
    pub size: u64,
    pub hash_state: Vec<u8>,
    /// The blob store's state of the upload (opaque here).
    pub storage_state: Option<String>,
}

/// A stored manifest, as served.
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub content: bytes::Bytes,
}

/// A manifest that names another as its subject.
pub struct ReferrerRow {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
    pub size: u64,
}

/// What the store holds and what is waiting, for the metrics.
#[derive(Debug, Default)]
pub struct Usage {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub uploads_in_progress: u64,
    /// Events not yet fanned out to their sinks.
    pub events_pending: u64,
    /// Deliveries waiting for an attempt, per sink that has any.
    pub deliveries_pending: Vec<(String, u64)>,
}

/// A manifest to store, with the digests it points at.
pub struct NewManifest<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a Digest>,
    pub annotations: Option<&'a str>,
    pub content: &'a [u8],
    pub references: &'a [Digest],
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// A stored time (Unix ms) as RFC 3339 with milliseconds, as APIs and
/// events show it.
pub fn format_ms(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

fn parse_digest(s: String) -> Result<Digest> {
    // Rows are only ever written from validated digests.
    Digest::from_str(&s)
}

impl MetaStore {
    /// Opens (creating and migrating if needed) the SQLite file at `path`.
    pub async fn open(path: &Path) -> Result<MetaStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| crate::core::RegistryError::Internal(format!("migrations: {e}")))?;
        Ok(MetaStore { pool })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Counts for the metrics. The pending counts use the partial indexes
    /// on what is pending; the blob sum reads the blobs table, a few dozen
    /// bytes a row.
    pub async fn usage(&self) -> Result<Usage> {
        let (blobs, blob_bytes, uploads, events): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), \
             (SELECT COUNT(*) FROM uploads), \
             (SELECT COUNT(*) FROM events WHERE fanned_out = 0) FROM blobs",
        )
        .fetch_one(&self.pool)
        .await?;
        let pending: Vec<(String, i64)> = sqlx::query_as(
            "SELECT sink, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY sink ORDER BY sink",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(Usage {
            blobs: blobs as u64,
            blob_bytes: blob_bytes as u64,
            uploads_in_progress: uploads as u64,
            events_pending: events as u64,
            deliveries_pending: pending
                .into_iter()
                .map(|(sink, n)| (sink, n as u64))
                .collect(),
        })
    }

    async fn ensure_repository(tx: &mut Transaction<'_, Sqlite>, repo: &RepoName) -> Result<()> {
        sqlx::query(
            "INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = ?")
            .bind(repo.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    pub async fn create_upload(&self, id: &str, repo: &RepoName, hash_state: &[u8]) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO uploads (id, repository, size, hash_state, created_at, updated_at) \
             VALUES (?, ?, 0, ?, ?, ?)",
        )
        .bind(id)
        .bind(repo.as_str())
        .bind(hash_state)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The upload `id` of repository `repo`, if it exists.
    pub async fn upload(&self, id: &str, repo: &RepoName) -> Result<Option<UploadRow>> {
        let row = sqlx::query(
            "SELECT size, hash_state, storage_state FROM uploads WHERE id = $1 AND repository = $2",
        )
        .bind(id)
        .bind(repo.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UploadRow {
            size: r.get::<i64, _>(0) as u64,
            hash_state: r.get(1),
            storage_state: r.get(2),
        }))
    }

    /// Records that an upload grew from `from` to `to` bytes, with its new
    /// hash and storage states. Returns false (and changes nothing) if the
    /// upload no longer has `from` bytes.
    pub async fn advance_upload(
        &self,
        id: &str,
        from: u64,
        to: u64,
        hash_state: &[u8],
        storage_state: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE uploads SET size = $1, hash_state = $2, storage_state = $3, updated_at = $4 \
             WHERE id = $5 AND size = $6",
        )
        .bind(to as i64)
        .bind(hash_state)
        .bind(storage_state)
        .bind(now_ms())
        .bind(id)
        .bind(from as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_upload(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Makes a stored blob visible in `repo`, and ends the upload that
    /// brought it, in one transaction. `bytes_present` is awaited inside
    /// the transaction: a collector that removed the bytes has removed or
    /// marked the row too, so a row is never written without its bytes.
    /// A blob being collected is refused; the client uploads it again.
    pub async fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        upload: Option<&str>,
        bytes_present: impl std::future::Future<Output = Result<bool>> + Send,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::ensure_repository(&mut tx, repo).await?;
        let deleting: Option<i64> =
            sqlx::query_scalar("SELECT deleting FROM blobs WHERE digest = ?")
                .bind(digest.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if deleting == Some(1) || !bytes_present.await? {
            return Err(crate::core::RegistryError::BlobUploadInvalid(format!(
                "{digest} is being garbage collected; upload it again"
            )));
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(digest.as_str())
        .bind(size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO repository_blobs (repository, digest, created_at) VALUES (?, ?, ?) \
             ON CONFLICT DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(id) = upload {
            sqlx::query("DELETE FROM uploads WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The size of a blob if it is visible in `repo`.
    pub async fn blob_in_repository(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repository = ? AND rb.digest = ?",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    /// The size of a blob if berth stores it, in any repository.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM blobs WHERE digest = ? AND deleting = 0")
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    /// Whether `repo` holds the manifest `digest`.
    pub async fn manifest_exists(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM manifests WHERE repository = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Stores a manifest, points `tag` at it if given, and writes `event`,
    /// in one transaction. A tag of a repository with immutable tags only
    /// ever points at its first manifest. Returns the repository's
    /// retention policy (JSON), if it has one.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest<'_>,
        tag: Option<&Tag>,
        event: &Event,
    ) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        Self::ensure_repository(&mut tx, repo).await?;
        let now = now_ms();
        let settings = sqlx::query(
            "SELECT immutable_tags, retention FROM repository_settings WHERE repository = ?",
        )
        .bind(repo.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let (immutable, retention) = settings
            .map(|r| (r.get::<i64, _>(0) != 0, r.get::<Option<String>, _>(1)))
            .unwrap_or_default();
        if let (true, Some(tag)) = (immutable, tag) {
            let current: Option<String> =
                sqlx::query_scalar("SELECT digest FROM tags WHERE repository = ? AND name = ?")
                    .bind(repo.as_str())
                    .bind(tag.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(current) = current.filter(|d| d != m.digest.as_str()) {
                return Err(crate::core::RegistryError::TagImmutable {
                    repository: repo.to_string(),
                    tag: tag.to_string(),
                    digest: current,
                });
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO manifests (repository, digest, media_type, artifact_type, subject, annotations, size, content, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(m.digest.as_str())
        .bind(m.media_type)
        .bind(m.artifact_type)
        .bind(m.subject.map(Digest::as_str))
        .bind(m.annotations)
        .bind(m.content.len() as i64)
        .bind(m.content)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Checked again inside the transaction: garbage collection may
        // have taken a blob or child manifest since the caller looked.
        for target in m.references {
            let present: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1 AND deleting = 0) \
                 OR EXISTS (SELECT 1 FROM manifests WHERE repository = ?2 AND digest = ?1)",
            )
            .bind(target.as_str())
            .bind(repo.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if !present {
                return Err(crate::core::RegistryError::ManifestBlobUnknown(
                    target.clone(),
                ));
            }
        }
        if inserted.rows_affected() == 1 {
            for target in m.references {
                sqlx::query(
                    "INSERT INTO manifest_references (repository, manifest, target) VALUES (?, ?, ?) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(repo.as_str())
                .bind(m.digest.as_str())
                .bind(target.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(tag) = tag {
            sqlx::query(
                "INSERT INTO tags (repository, name, digest, updated_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (repository, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo.as_str())
            .bind(tag.as_str())
            .bind(m.digest.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        Self::insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(retention)
    }

    pub async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(
            "SELECT media_type, content FROM manifests WHERE repository = ? AND digest = ?",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| ManifestRow {
            digest: digest.clone(),
            media_type: r.get(0),
            content: r.get::<Vec<u8>, _>(1).into(),
        }))
    }

    pub async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content FROM tags t \
             JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest \
             WHERE t.repository = ? AND t.name = ?",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ManifestRow {
                digest: parse_digest(r.get(0))?,
                media_type: r.get(1),
                content: r.get::<Vec<u8>, _>(2).into(),
            })
        })
        .transpose()
    }

    /// Up to `limit` tags of `repo` after `last`, in case-insensitive
    /// lexical order (ties broken by byte order so paging is exact).
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        limit: u32,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        let rows = match last {
            None => {
                sqlx::query(
                    "SELECT name FROM tags WHERE repository = ? \
                     ORDER BY name COLLATE NOCASE, name LIMIT ?",
                )
                .bind(repo.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            Some(last) => {
                sqlx::query(
                    "SELECT name FROM tags WHERE repository = ? \
                     AND (name > ? COLLATE NOCASE OR (name = ? COLLATE NOCASE AND name > ?)) \
                     ORDER BY name COLLATE NOCASE, name LIMIT ?",
                )
                .bind(repo.as_str())
                .bind(last)
                .bind(last)
                .bind(last)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Up to `limit` repository names after `last`, in lexical order.
    pub async fn list_repositories(&self, limit: u32, last: Option<&str>) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?")
                .bind(last.unwrap_or(""))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Runs a `DELETE` keyed by repository and one more column; true if it
    /// removed a row.
    /// `event`, if given, is written with the delete when it removed a row.
    async fn delete_one(
        &self,
        sql: &'static str,
        repo: &RepoName,
        key: &str,
        event: Option<&Event>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sql)
            .bind(repo.as_str())
            .bind(key)
            .execute(&mut *tx)
            .await?;
        let deleted = done.rows_affected() == 1;
        if let (true, Some(event)) = (deleted, event) {
            Self::insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Removes a tag; false if `repo` had no such tag.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag, event: &Event) -> Result<bool> {
        self.delete_one(
            "DELETE FROM tags WHERE repository = ? AND name = ?",
            repo,
            tag.as_str(),
            Some(event),
        )
        .await
    }

    /// Removes a manifest and every tag on it; false if `repo` had no such
    /// manifest.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        event: &Event,
    ) -> Result<bool> {
        self.delete_one(
            "DELETE FROM manifests WHERE repository = ? AND digest = ?",
            repo,
            digest.as_str(),
            Some(event),
        )
        .await
    }

    /// Unlinks a blob from a repository; false if it was not linked. The
    /// bytes stay until garbage collection finds nothing links them.
    pub async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.delete_one(
            "DELETE FROM repository_blobs WHERE repository = ? AND digest = ?",
            repo,
            digest.as_str(),
            None,
        )
        .await
    }

    /// The manifests of `repo` whose subject is `subject`, optionally only
    /// those of one artifact type, in digest order.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRow>> {
        let rows = sqlx::query(
            "SELECT digest, media_type, artifact_type, annotations, size FROM manifests \
             WHERE repository = ? AND subject = ? AND (? IS NULL OR artifact_type = ?) ORDER BY digest",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .bind(artifact_type)
        .bind(artifact_type)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ReferrerRow {
                digest: r.get(0),
                media_type: r.get(1),
                artifact_type: r.get(2),
                annotations: r.get(3),
                size: r.get::<i64, _>(4) as u64,
            })
            .collect())
    }
}
