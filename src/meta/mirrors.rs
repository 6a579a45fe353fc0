//! What pull-through mirrors store beside pushed content: cached manifests,
//! tags and blob links (rows marked with their mirror's namespace), when
//! each was last pulled, the counts of each cached repository, and the
//! mirrors made through the admin API.

use sqlx::Row;

use crate::core::Result;
use crate::core::names::{Digest, RepoName, Tag};
use crate::meta::{MetaStore, NewManifest, now_ms};

/// A cached tag: what it points at, and when the upstream last confirmed
/// it.
pub struct CachedTag {
    pub digest: Digest,
    pub checked_at: i64,
}

/// Something a mirror cached that eviction may take: a manifest, or a
/// blob's link into a repository.
#[derive(Clone, Debug)]
pub struct CachedItem {
    pub repository: String,
    pub digest: String,
    pub manifest: bool,
    pub size: u64,
}

/// A repository a mirror filled, as the admin API shows it.
#[derive(Clone, Debug)]
pub struct MirrorRepositoryRow {
    pub repository: String,
    pub mirror: String,
    pub hits: i64,
    pub misses: i64,
    pub last_fetch: Option<i64>,
    pub last_pull: Option<i64>,
    pub tag_count: i64,
    /// Bytes of its cached blobs and manifests.
    pub size: i64,
}

/// A mirror made through the admin API.
#[derive(Clone, Debug)]
pub struct MirrorSpecRow {
    pub namespace: String,
    pub spec: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Pulls noted since the last write: `(repository, digest, manifest?)`
/// and when.
pub type CachedPull = ((String, String, bool), i64);

/// Hits and misses noted since the last write, per repository.
pub type CountDelta = (String, u64, u64);

impl MetaStore {
    /// Stores a manifest a mirror fetched, marked as the mirror's, points
    /// `tag` at it (confirmed now) if given, in one transaction. Unlike a
    /// push, what it references need not be here: a cache fetches blobs
    /// and an index's children as clients ask for them.
    pub async fn put_cached_manifest(
        &self,
        repo: &RepoName,
        mirror: &str,
        m: &NewManifest<'_>,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        Self::ensure_repository(&mut tx, repo).await?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO mirror_repositories (repository, mirror, last_fetch) VALUES ($1, $2, $3) \
             ON CONFLICT (repository) DO UPDATE SET last_fetch = excluded.last_fetch",
        )
        .bind(repo.as_str())
        .bind(mirror)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO manifests (repository, digest, media_type, artifact_type, subject, annotations, \
             size, content, created_at, mirror, last_pull) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9) ON CONFLICT DO NOTHING",
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
        .bind(mirror)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            for target in m.references {
                sqlx::query(
                    "INSERT INTO manifest_references (repository, manifest, target) VALUES ($1, $2, $3) \
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
                "INSERT INTO tags (repository, name, digest, updated_at, checked_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (repository, name) DO UPDATE SET \
                 digest = excluded.digest, checked_at = excluded.checked_at, \
                 updated_at = CASE WHEN tags.digest = excluded.digest THEN tags.updated_at \
                 ELSE excluded.updated_at END",
            )
            .bind(repo.as_str())
            .bind(tag.as_str())
            .bind(m.digest.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A cached tag of `repo`, if there is one.
    pub async fn cached_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<CachedTag>> {
        let row = sqlx::query(
            "SELECT digest, COALESCE(checked_at, 0) FROM tags WHERE repository = $1 AND name = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(CachedTag {
                digest: r.get::<String, _>(0).parse()?,
                checked_at: r.get(1),
            })
        })
        .transpose()
    }

    /// Records that the upstream still has `tag` at `digest`; false if the
    /// tag points elsewhere now (or is gone).
    pub async fn confirm_cached_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tags SET checked_at = $1 WHERE repository = $2 AND name = $3 AND digest = $4",
        )
        .bind(now_ms())
        .bind(repo.as_str())
        .bind(tag.as_str())
        .bind(digest.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks the link of a blob a mirror fetched (or found stored) into
    /// `repo` as the mirror's.
    pub async fn mark_cached_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        mirror: &str,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO mirror_repositories (repository, mirror, last_fetch) VALUES ($1, $2, $3) \
             ON CONFLICT (repository) DO UPDATE SET last_fetch = excluded.last_fetch",
        )
        .bind(repo.as_str())
        .bind(mirror)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE repository_blobs SET mirror = $1, last_pull = $2 \
             WHERE repository = $3 AND digest = $4",
        )
        .bind(mirror)
        .bind(now)
        .bind(repo.as_str())
        .bind(digest.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes when cached manifests and blobs were last pulled, and the
    /// hits and misses of cached repositories.
    pub async fn record_mirror_use(
        &self,
        pulls: &[CachedPull],
        counts: &[CountDelta],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for ((repo, digest, manifest), at) in pulls {
            let sql = match manifest {
                true => {
                    "UPDATE manifests SET last_pull = $1 WHERE repository = $2 AND digest = $3 \
                     AND mirror IS NOT NULL AND COALESCE(last_pull, 0) < $1"
                }
                false => {
                    "UPDATE repository_blobs SET last_pull = $1 WHERE repository = $2 AND digest = $3 \
                     AND mirror IS NOT NULL AND COALESCE(last_pull, 0) < $1"
                }
            };
            sqlx::query(sql)
                .bind(at)
                .bind(repo)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
        }
        for (repo, hits, misses) in counts {
            sqlx::query(
                "UPDATE mirror_repositories SET hits = hits + $1, misses = misses + $2 \
                 WHERE repository = $3",
            )
            .bind(*hits as i64)
            .bind(*misses as i64)
            .bind(repo)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Bytes a mirror holds: its cached manifests, and each blob linked by
    /// one of its repositories once.
    pub async fn mirror_usage(&self, mirror: &str) -> Result<u64> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT CAST( \
               COALESCE((SELECT SUM(b.size) FROM blobs b WHERE b.digest IN \
                 (SELECT rb.digest FROM repository_blobs rb WHERE rb.mirror = $1)), 0) \
             + COALESCE((SELECT SUM(m.size) FROM manifests m WHERE m.mirror = $1), 0) AS BIGINT)",
        )
        .bind(mirror)
        .fetch_one(&self.pool)
        .await?;
        Ok(bytes as u64)
    }

    /// Up to `limit` of a mirror's cached manifests and blob links, least
    /// recently pulled first.
    pub async fn least_recently_pulled(&self, mirror: &str, limit: u32) -> Result<Vec<CachedItem>> {
        let rows = sqlx::query(
            "SELECT repository, digest, manifest, size FROM ( \
               SELECT m.repository, m.digest, 1 AS manifest, m.size, \
                 COALESCE(m.last_pull, m.created_at) AS used FROM manifests m WHERE m.mirror = $1 \
               UNION ALL \
               SELECT rb.repository, rb.digest, 0 AS manifest, b.size, \
                 COALESCE(rb.last_pull, rb.created_at) AS used \
                 FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.mirror = $1 \
             ) AS cached ORDER BY used, manifest, repository, digest LIMIT CAST($2 AS BIGINT)",
        )
        .bind(mirror)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CachedItem {
                repository: r.get(0),
                digest: r.get(1),
                manifest: r.get::<i64, _>(2) == 1,
                size: r.get::<i64, _>(3) as u64,
            })
            .collect())
    }

    /// Removes a cached manifest (with its tags) or blob link; false if it
    /// was not there (or is no mirror's).
    pub async fn evict_cached(&self, item: &CachedItem) -> Result<bool> {
        let sql = match item.manifest {
            true => {
                "DELETE FROM manifests WHERE repository = $1 AND digest = $2 AND mirror IS NOT NULL"
            }
            false => {
                "DELETE FROM repository_blobs WHERE repository = $1 AND digest = $2 AND mirror IS NOT NULL"
            }
        };
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(sql)
            .bind(&item.repository)
            .bind(&item.digest)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            self.announce_delete(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks as being collected each of `digests` that nothing keeps any
    /// more: no repository links it, and no manifest but cached ones
    /// references it (a cached manifest fetches its blobs again when
    /// pulled). Returns those marked, whose bytes may then go.
    pub async fn mark_evicted_blobs(&self, digests: &[String]) -> Result<Vec<(Digest, u64)>> {
        let mut tx = self.write_tx().await?;
        let mut marked = Vec::new();
        for digest in digests {
            let row = sqlx::query(
                "UPDATE blobs AS b SET deleting = 1 WHERE b.digest = $1 AND b.deleting = 0 \
                 AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest) \
                 AND NOT EXISTS (SELECT 1 FROM manifest_references r JOIN manifests m \
                   ON m.repository = r.repository AND m.digest = r.manifest \
                   WHERE r.target = b.digest AND m.mirror IS NULL) \
                 RETURNING size",
            )
            .bind(digest)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                marked.push((digest.parse()?, row.get::<i64, _>(0) as u64));
            }
        }
        tx.commit().await?;
        Ok(marked)
    }

    /// The repositories a mirror filled, in name order.
    pub async fn mirror_repositories(&self, mirror: &str) -> Result<Vec<MirrorRepositoryRow>> {
        let rows = sqlx::query(
            "SELECT mr.repository, mr.mirror, mr.hits, mr.misses, mr.last_fetch, r.last_pull, \
             (SELECT COUNT(*) FROM tags t WHERE t.repository = mr.repository), \
             CAST((SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs rb \
                JOIN blobs b ON b.digest = rb.digest WHERE rb.repository = mr.repository) \
              + (SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repository = mr.repository) \
              AS BIGINT) \
             FROM mirror_repositories mr JOIN repositories r ON r.name = mr.repository \
             WHERE mr.mirror = $1 ORDER BY mr.repository",
        )
        .bind(mirror)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| MirrorRepositoryRow {
                repository: r.get(0),
                mirror: r.get(1),
                hits: r.get(2),
                misses: r.get(3),
                last_fetch: r.get(4),
                last_pull: r.get(5),
                tag_count: r.get(6),
                size: r.get(7),
            })
            .collect())
    }

    /// Changes whenever a stored mirror is created, changed or deleted.
    pub async fn mirrors_version(&self) -> Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(updated_at), 0) AS BIGINT) FROM mirrors",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn mirror_specs(&self) -> Result<Vec<MirrorSpecRow>> {
        let rows = sqlx::query(
            "SELECT namespace, spec, created_at, updated_at FROM mirrors ORDER BY namespace",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| MirrorSpecRow {
                namespace: r.get(0),
                spec: r.get(1),
                created_at: r.get(2),
                updated_at: r.get(3),
            })
            .collect())
    }

    /// Creates a stored mirror (false if the namespace is taken).
    pub async fn insert_mirror(&self, namespace: &str, spec: &str) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO mirrors (namespace, spec, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(namespace)
        .bind(spec)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a stored mirror's spec (false if there is none).
    pub async fn update_mirror(&self, namespace: &str, spec: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE mirrors SET spec = $1, updated_at = $2 WHERE namespace = $3")
                .bind(spec)
                .bind(now_ms())
                .bind(namespace)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_mirror(&self, namespace: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM mirrors WHERE namespace = $1")
            .bind(namespace)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
