//! What the admin API reads and changes beyond pushes and pulls:
//! repository summaries and settings, tag and manifest details, the audit
//! log, and the webhooks and deploy rules created through the API.

use std::collections::HashMap;

use sqlx::Row;

use crate::core::Result;
use crate::core::event::Event;
use crate::core::names::{RepoName, Tag};
use crate::meta::{MetaStore, now_ms};

/// One repository, as the admin listing shows it. Sizes count each blob
/// once; `unique_size` only blobs no other repository links.
#[derive(Clone, Debug)]
pub struct RepositorySummary {
    pub name: String,
    pub tag_count: i64,
    pub manifest_count: i64,
    pub total_size: i64,
    pub unique_size: i64,
    pub created_at: i64,
    pub last_push: Option<i64>,
    pub last_pull: Option<i64>,
}

/// A repository's settings as stored; `retention` is JSON.
#[derive(Clone, Debug, Default)]
pub struct SettingsRow {
    pub immutable_tags: bool,
    pub retention: Option<String>,
}

/// A tag with what it points at.
#[derive(Clone, Debug)]
pub struct TagRow {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub pushed_at: i64,
}

impl TagRow {
    /// From a row of `name, digest, media_type, size, pushed_at`.
    fn from_row(r: &sqlx::any::AnyRow) -> TagRow {
        TagRow {
            name: r.get(0),
            digest: r.get(1),
            media_type: r.get(2),
            size: r.get(3),
            pushed_at: r.get(4),
        }
    }
}

/// A manifest with the tags on it.
#[derive(Clone, Debug)]
pub struct ManifestSummary {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    pub size: i64,
    pub pushed_at: i64,
    pub tags: Vec<String>,
}

/// One line of the audit log.
#[derive(Clone, Debug)]
pub struct AuditRow {
    pub at: i64,
    pub actor: Option<String>,
    pub address: Option<String>,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// An entry to append to the audit log.
pub struct NewAudit<'a> {
    pub actor: Option<&'a str>,
    pub address: Option<&'a str>,
    pub action: &'a str,
    pub target: &'a str,
    pub detail: &'a str,
}

/// A webhook or deploy rule created through the API.
#[derive(Clone, Debug)]
pub struct SinkRow {
    pub name: String,
    pub kind: String,
    pub spec: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The summary columns for repository `r` (a macro: sqlx takes only
/// static SQL).
macro_rules! summary_columns {
    ($greatest:literal) => {
        concat!(
        "r.name, \
         (SELECT COUNT(*) FROM tags t WHERE t.repository = r.name), \
         (SELECT COUNT(*) FROM manifests m WHERE m.repository = r.name), \
         CAST((SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
            WHERE rb.repository = r.name) \
          + (SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repository = r.name) AS BIGINT), \
         CAST((SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
            WHERE rb.repository = r.name AND NOT EXISTS \
            (SELECT 1 FROM repository_blobs o WHERE o.digest = rb.digest AND o.repository <> r.name)) \
          + (SELECT COALESCE(SUM(m.size), 0) FROM manifests m WHERE m.repository = r.name) AS BIGINT), \
         r.created_at, \
         ", $greatest, "(COALESCE((SELECT MAX(t.updated_at) FROM tags t WHERE t.repository = r.name), 0), \
             COALESCE((SELECT MAX(m.created_at) FROM manifests m WHERE m.repository = r.name), 0)), \
         r.last_pull"
        )
    };
}

fn summary_from_row(r: &sqlx::any::AnyRow) -> RepositorySummary {
    RepositorySummary {
        name: r.get(0),
        tag_count: r.get(1),
        manifest_count: r.get(2),
        total_size: r.get(3),
        unique_size: r.get(4),
        created_at: r.get(5),
        last_push: Some(r.get::<i64, _>(6)).filter(|t| *t > 0),
        last_pull: r.get(7),
    }
}

impl MetaStore {
    /// Up to `limit` repositories after `after` in name order, whose name
    /// contains `filter` if given.
    pub async fn repository_summaries(
        &self,
        limit: u32,
        after: Option<&str>,
        filter: Option<&str>,
    ) -> Result<Vec<RepositorySummary>> {
        let rows = sqlx::query(self.pick(
            concat!(
                "SELECT ",
                summary_columns!("MAX"),
                " FROM repositories r WHERE r.name > $1 AND instr(r.name, $2) > 0 ORDER BY r.name LIMIT CAST($3 AS BIGINT)"
            ),
            concat!(
                "SELECT ",
                summary_columns!("GREATEST"),
                " FROM repositories r WHERE r.name > $1 AND strpos(r.name, $2) > 0 ORDER BY r.name LIMIT CAST($3 AS BIGINT)"
            ),
        ))
        .bind(after.unwrap_or(""))
        .bind(filter.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(summary_from_row).collect())
    }

    /// Up to `limit` repository names after `after` in name order, whose
    /// name contains `filter` if given: cheap enough to filter by what a
    /// caller may see before reading summaries.
    pub async fn repository_names(
        &self,
        limit: u32,
        after: Option<&str>,
        filter: Option<&str>,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(self.pick(
            "SELECT name FROM repositories WHERE name > $1 AND instr(name, $2) > 0 \
             ORDER BY name LIMIT CAST($3 AS BIGINT)",
            "SELECT name FROM repositories WHERE name > $1 AND strpos(name, $2) > 0 \
             ORDER BY name LIMIT CAST($3 AS BIGINT)",
        ))
        .bind(after.unwrap_or(""))
        .bind(filter.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Bytes each repository holds (its blobs and manifests; a blob
    /// shared by several repositories counts in each), largest first.
    pub async fn repository_sizes(&self) -> Result<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT repository, CAST(SUM(size) AS BIGINT) FROM ( \
               SELECT rb.repository AS repository, b.size AS size FROM repository_blobs rb \
                 JOIN blobs b ON b.digest = rb.digest \
               UNION ALL SELECT repository, size FROM manifests \
             ) AS held GROUP BY repository ORDER BY 2 DESC, 1",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// One page of `repo`'s tags with what they point at: newest push
    /// first, or by name in the order the tag listing uses.
    pub async fn tag_rows_page(
        &self,
        repo: &RepoName,
        by_name: bool,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<TagRow>> {
        let sql = match by_name {
            false => {
                "SELECT t.name, t.digest, m.media_type, m.size, t.updated_at FROM tags t \
                 JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest \
                 WHERE t.repository = $1 ORDER BY t.updated_at DESC, t.name LIMIT CAST($2 AS BIGINT) OFFSET CAST($3 AS BIGINT)"
            }
            true => self.pick(
                "SELECT t.name, t.digest, m.media_type, m.size, t.updated_at FROM tags t \
                 JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest \
                 WHERE t.repository = $1 ORDER BY t.name COLLATE NOCASE, t.name LIMIT CAST($2 AS BIGINT) OFFSET CAST($3 AS BIGINT)",
                "SELECT t.name, t.digest, m.media_type, m.size, t.updated_at FROM tags t \
                 JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest \
                 WHERE t.repository = $1 ORDER BY lower(t.name), t.name LIMIT CAST($2 AS BIGINT) OFFSET CAST($3 AS BIGINT)",
            ),
        };
        let rows = sqlx::query(sql)
            .bind(repo.as_str())
            .bind(i64::from(limit))
            .bind(offset as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(TagRow::from_row).collect())
    }

    /// Who last pushed each of `tags` of `repo`, from the push events.
    pub async fn tag_pushers(
        &self,
        repo: &RepoName,
        tags: &[&str],
    ) -> Result<HashMap<String, String>> {
        let names = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(self.pick(
            "SELECT tag, actor FROM events WHERE repository = $1 AND action = 'push' \
             AND tag IN (SELECT value FROM json_each($2)) ORDER BY seq",
            "SELECT tag, actor FROM events WHERE repository = $1 AND action = 'push' \
             AND tag IN (SELECT jsonb_array_elements_text($2::jsonb)) ORDER BY seq",
        ))
        .bind(repo.as_str())
        .bind(names)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(tag, actor)| Some((tag, actor?)))
            .collect())
    }

    pub async fn repository_summary(&self, repo: &RepoName) -> Result<Option<RepositorySummary>> {
        let row = sqlx::query(self.pick(
            concat!(
                "SELECT ",
                summary_columns!("MAX"),
                " FROM repositories r WHERE r.name = $1"
            ),
            concat!(
                "SELECT ",
                summary_columns!("GREATEST"),
                " FROM repositories r WHERE r.name = $1"
            ),
        ))
        .bind(repo.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(summary_from_row))
    }

    /// Deletes a repository with its tags, manifests and blob links, and
    /// writes `events` (one per manifest) with it. False if it did not
    /// exist. The blobs themselves stay for garbage collection.
    pub async fn delete_repository(&self, repo: &RepoName, events: &[Event]) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM repository_settings WHERE repository = $1")
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await?;
        for event in events {
            Self::insert_event(&mut tx, event).await?;
        }
        self.announce_delete(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn repository_settings(&self, repo: &str) -> Result<SettingsRow> {
        let row = sqlx::query(
            "SELECT immutable_tags, retention FROM repository_settings WHERE repository = $1",
        )
        .bind(repo)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| SettingsRow {
                immutable_tags: r.get::<i64, _>(0) != 0,
                retention: r.get(1),
            })
            .unwrap_or_default())
    }

    pub async fn put_repository_settings(&self, repo: &str, s: &SettingsRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO repository_settings (repository, immutable_tags, retention, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (repository) DO UPDATE SET \
             immutable_tags = excluded.immutable_tags, retention = excluded.retention, \
             updated_at = excluded.updated_at",
        )
        .bind(repo)
        .bind(s.immutable_tags as i64)
        .bind(&s.retention)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// Every tag of `repo` with its manifest, newest push first.
    pub async fn tag_rows(&self, repo: &RepoName) -> Result<Vec<TagRow>> {
        let rows = sqlx::query(
            "SELECT t.name, t.digest, m.media_type, m.size, t.updated_at FROM tags t \
             JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest \
             WHERE t.repository = $1 ORDER BY t.updated_at DESC, t.name",
        )
        .bind(repo.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(TagRow::from_row).collect())
    }

    /// The image size of every manifest of `repo`: the bytes of the blobs
    /// it references (an image's config and layers), each counted once, and
    /// for an index those of its images. What a client downloads to run
    /// it, as `docker images` shows it.
    pub async fn image_sizes(&self, repo: &RepoName) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT mr.manifest, mr.target, b.size FROM manifest_references mr \
             LEFT JOIN blobs b ON b.digest = mr.target WHERE mr.repository = $1",
        )
        .bind(repo.as_str())
        .fetch_all(&self.pool)
        .await?;
        // A manifest's blobs, and the manifests (an index's images) it names.
        let mut blobs: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        for r in &rows {
            let (manifest, target): (String, String) = (r.get(0), r.get(1));
            match r.get::<Option<i64>, _>(2) {
                Some(size) => blobs.entry(manifest).or_default().push((target, size)),
                None => children.entry(manifest).or_default().push(target),
            }
        }
        let mut sizes = HashMap::new();
        for manifest in blobs.keys().chain(children.keys()) {
            let mut seen = std::collections::HashSet::new();
            let mut total = 0;
            let images =
                std::iter::once(manifest).chain(children.get(manifest).into_iter().flatten());
            for image in images {
                for (digest, size) in blobs.get(image).into_iter().flatten() {
                    if seen.insert(digest) {
                        total += size;
                    }
                }
            }
            sizes.insert(manifest.clone(), total);
        }
        Ok(sizes)
    }

    /// Every manifest of `repo` with its tags, newest first.
    pub async fn manifest_summaries(&self, repo: &RepoName) -> Result<Vec<ManifestSummary>> {
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.artifact_type, m.subject, m.size, m.created_at, \
             (SELECT string_agg(t.name, '\n') FROM tags t \
                WHERE t.repository = m.repository AND t.digest = m.digest) \
             FROM manifests m WHERE m.repository = $1 ORDER BY m.created_at DESC, m.digest",
        )
        .bind(repo.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let tags: Option<String> = r.get(6);
                let mut tags: Vec<String> = tags
                    .map(|t| t.lines().map(str::to_owned).collect())
                    .unwrap_or_default();
                tags.sort();
                ManifestSummary {
                    digest: r.get(0),
                    media_type: r.get(1),
                    artifact_type: r.get(2),
                    subject: r.get(3),
                    size: r.get(4),
                    pushed_at: r.get(5),
                    tags,
                }
            })
            .collect())
    }

    /// Deletes the given tags of `repo`, writing each tag's event with it;
    /// returns how many existed.
    pub async fn delete_tags(&self, repo: &RepoName, tags: &[(Tag, Event)]) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let mut deleted = 0;
        for (tag, event) in tags {
            let done = sqlx::query("DELETE FROM tags WHERE repository = $1 AND name = $2")
                .bind(repo.as_str())
                .bind(tag.as_str())
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 1 {
                Self::insert_event(&mut tx, event).await?;
                deleted += 1;
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Stores when repositories were last pulled.
    pub async fn record_last_pulls(&self, pulls: &[(String, i64)]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for (repo, at) in pulls {
            sqlx::query(
                "UPDATE repositories SET last_pull = $1 WHERE name = $2 AND COALESCE(last_pull, 0) < $1",
            )
            .bind(at)
            .bind(repo)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn append_audit(&self, a: &NewAudit<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, address, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now_ms())
        .bind(a.actor)
        .bind(a.address)
        .bind(a.action)
        .bind(a.target)
        .bind(a.detail)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// The newest `limit` entries before `before` (Unix ms), newest first:
    /// the admin changes, and the pushes and deletes from the outbox.
    pub async fn audit_rows(&self, limit: u32, before: Option<i64>) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT at, actor, address, action, target, detail FROM ( \
               SELECT at, actor, address, action, target, detail FROM audit_log WHERE at < $1 \
               UNION ALL \
               SELECT created_at, actor, request_addr, 'manifest.' || action, \
                 repository || COALESCE(':' || tag, '') || COALESCE('@' || digest, ''), '' \
                 FROM events WHERE action IN ('push', 'delete') AND created_at < $1 \
             ) AS entries ORDER BY at DESC LIMIT CAST($2 AS BIGINT)",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditRow {
                at: r.get(0),
                actor: r.get(1),
                address: r.get(2),
                action: r.get(3),
                target: r.get(4),
                detail: r.get(5),
            })
            .collect())
    }

    /// Changes whenever a stored webhook or rule is created, changed or
    /// deleted.
    pub async fn sinks_version(&self) -> Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(updated_at), 0) AS BIGINT) FROM sinks",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn sink_rows(&self) -> Result<Vec<SinkRow>> {
        let rows = sqlx::query(
            "SELECT name, kind, spec, created_at, updated_at FROM sinks ORDER BY kind, name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SinkRow {
                name: r.get(0),
                kind: r.get(1),
                spec: r.get(2),
                created_at: r.get(3),
                updated_at: r.get(4),
            })
            .collect())
    }

    /// Creates a sink (false if the name is taken).
    pub async fn insert_sink(&self, name: &str, kind: &str, spec: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO sinks (name, kind, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(kind)
        .bind(spec)
        .bind(now_ms())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a sink's spec (false if there is no such sink of `kind`).
    pub async fn update_sink(&self, name: &str, kind: &str, spec: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sinks SET spec = $1, updated_at = $2 WHERE name = $3 AND kind = $4",
        )
        .bind(spec)
        .bind(now_ms())
        .bind(name)
        .bind(kind)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_sink(&self, name: &str, kind: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sinks WHERE name = $1 AND kind = $2")
            .bind(name)
            .bind(kind)
            .execute(&self.pool)
            .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts a delivery back in the queue, due now, whatever became of it.
    /// False if there is no such delivery.
    pub async fn redeliver(&self, event_seq: i64, sink: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = $1, updated_at = $2 \
             WHERE event_seq = $3 AND sink = $4",
        )
        .bind(now_ms())
        .bind(now_ms())
        .bind(event_seq)
        .bind(sink)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }
}
