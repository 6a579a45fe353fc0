//! What signature verification reads beside the manifests: the trusted
//! keys added through the admin API, and the indexes a manifest is a child
//! of (an index's signature covers its children).

use sqlx::Row;

use crate::core::Result;
use crate::core::names::{Digest, RepoName};
use crate::meta::{MetaStore, now_ms};

/// A trusted key added through the admin API.
#[derive(Clone, Debug)]
pub struct SignatureKeyRow {
    pub name: String,
    pub public_key: String,
    pub created_at: i64,
}

impl MetaStore {
    pub async fn signature_keys(&self) -> Result<Vec<SignatureKeyRow>> {
        let rows =
            sqlx::query("SELECT name, public_key, created_at FROM signature_keys ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| SignatureKeyRow {
                name: r.get(0),
                public_key: r.get(1),
                created_at: r.get(2),
            })
            .collect())
    }

    /// Stores a key (false if the name is taken).
    pub async fn insert_signature_key(&self, name: &str, public_key: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO signature_keys (name, public_key, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(public_key)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a key (false if there is none of that name).
    pub async fn delete_signature_key(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM signature_keys WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The manifests of `repo` that point at `digest` as a child (indexes
    /// listing it).
    pub async fn parent_manifests(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Digest>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT manifest FROM manifest_references WHERE repository = $1 AND target = $2 \
             ORDER BY manifest",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().filter_map(|d| d.parse().ok()).collect())
    }
}
