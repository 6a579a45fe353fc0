//! Repositories, their settings, tags and manifests.

use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AdminCaller, ApiError, ApiResult, Body, DryRunQuery, Params, Segments, page};
use crate::auth::Auth;
use crate::core::names::{Digest, RepoName};
use crate::core::retention::RetentionPolicy;
use crate::core::{Registry, RegistryError};
use crate::meta::{MetaStore, format_ms};

pub(super) fn repo_name(name: &str) -> ApiResult<RepoName> {
    Ok(RepoName::from_str(name)?)
}

#[derive(Serialize, ToSchema)]
pub struct RepositoryInfo {
    pub name: String,
    pub tag_count: i64,
    pub manifest_count: i64,
    /// Bytes of every blob and manifest the repository holds.
    pub total_size: i64,
    /// Bytes that no other repository shares: what deleting it frees.
    pub unique_size: i64,
    pub created_at: String,
    pub last_push: Option<String>,
    pub last_pull: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RepositoryList {
    pub repositories: Vec<RepositoryInfo>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RepositoryQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only names after this one.
    pub after: Option<String>,
    /// Only names containing this.
    pub q: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepositorySettings {
    /// A pushed tag can never move to another manifest.
    #[serde(default)]
    pub immutable_tags: bool,
    /// Anyone may pull, without credentials.
    #[serde(default)]
    pub public_read: bool,
    /// Which tags to keep; none: keep all.
    #[serde(default)]
    pub retention: Option<RetentionPolicy>,
}

#[derive(Serialize, ToSchema)]
pub struct TagInfo {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    /// Bytes of the manifest itself.
    pub size: i64,
    /// Bytes of the blobs it references (an image's config and layers,
    /// an index's images), each counted once: what a pull downloads.
    pub image_size: i64,
    /// `os/arch[/variant]` of the image, or of each image of an index.
    pub platforms: Vec<String>,
    pub pushed_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ManifestInfo {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    /// Bytes of the manifest itself.
    pub size: i64,
    /// Bytes of the blobs it references, each counted once.
    pub image_size: i64,
    pub platforms: Vec<String>,
    pub tags: Vec<String>,
    pub pushed_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct RetentionRun {
    /// Tags the policy deleted (or, in a dry run, would delete).
    pub tags: Vec<String>,
    pub dry_run: bool,
}

pub(super) fn repository_info(
    registry: &Registry,
    s: crate::meta::RepositorySummary,
) -> RepositoryInfo {
    let last_pull = match (s.last_pull, registry.unflushed_pull(&s.name)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    RepositoryInfo {
        tag_count: s.tag_count,
        manifest_count: s.manifest_count,
        total_size: s.total_size,
        unique_size: s.unique_size,
        created_at: format_ms(s.created_at),
        last_push: s.last_push.map(format_ms),
        last_pull: last_pull.map(format_ms),
        name: s.name,
    }
}

#[utoipa::path(get, path = "/admin/v1/repositories", tag = "repositories",
    params(RepositoryQuery),
    responses((status = 200, body = RepositoryList), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub(super) async fn list_repositories(
    _admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    Params(q): Params<RepositoryQuery>,
) -> ApiResult<Json<RepositoryList>> {
    let limit = page(q.limit)?;
    let rows = meta
        .repository_summaries(limit + 1, q.after.as_deref(), q.q.as_deref())
        .await?;
    let more = rows.len() > limit as usize;
    let repositories: Vec<RepositoryInfo> = rows
        .into_iter()
        .take(limit as usize)
        .map(|row| repository_info(&registry, row))
        .collect();
    let next = more
        .then(|| repositories.last().map(|r| r.name.clone()))
        .flatten();
    Ok(Json(RepositoryList { repositories, next }))
}

#[utoipa::path(get, path = "/admin/v1/repositories/{name}", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded")),
    responses((status = 200, body = RepositoryInfo), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn get_repository(
    _admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<RepositoryInfo>> {
    let repo = repo_name(&name)?;
    let row = meta
        .repository_summary(&repo)
        .await?
        .ok_or_else(|| RegistryError::NameUnknown(repo.to_string()))?;
    Ok(Json(repository_info(&registry, row)))
}

#[utoipa::path(delete, path = "/admin/v1/repositories/{name}", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded")),
    responses((status = 204, description = "Deleted with all its tags and manifests"), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn delete_repository(
    admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<StatusCode> {
    let repo = repo_name(&name)?;
    registry.delete_repository(&repo, &admin.origin).await?;
    admin
        .audit(&meta, "repository.delete", repo.as_str(), "")
        .await;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn settings_of(
    meta: &MetaStore,
    repo: &RepoName,
) -> ApiResult<RepositorySettings> {
    let s = crate::settings::read(meta, repo).await?;
    Ok(RepositorySettings {
        immutable_tags: s.immutable_tags,
        public_read: s.public_read,
        retention: s.retention,
    })
}

#[utoipa::path(get, path = "/admin/v1/repositories/{name}/settings", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded")),
    responses((status = 200, body = RepositorySettings), (status = 400, body = ApiError)))]
pub(super) async fn get_settings(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<RepositorySettings>> {
    let repo = repo_name(&name)?;
    Ok(Json(settings_of(&meta, &repo).await?))
}

/// Settings may be set before the repository's first push. A retention
/// policy applies at once, then after every tag push.
#[utoipa::path(put, path = "/admin/v1/repositories/{name}/settings", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded")),
    request_body = RepositorySettings,
    responses((status = 200, body = RepositorySettings), (status = 400, body = ApiError)))]
pub(super) async fn put_settings(
    admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments(name): Segments<String>,
    Body(settings): Body<RepositorySettings>,
) -> ApiResult<Json<RepositorySettings>> {
    let repo = repo_name(&name)?;
    let detail = serde_json::to_string(&settings).unwrap_or_default();
    let settings = crate::settings::RepositorySettings {
        immutable_tags: settings.immutable_tags,
        public_read: settings.public_read,
        retention: settings.retention,
    };
    crate::settings::write(&registry, &meta, &auth, &repo, &settings).await?;
    admin
        .audit(&meta, "settings.change", repo.as_str(), &detail)
        .await;
    Ok(Json(settings_of(&meta, &repo).await?))
}

#[utoipa::path(post, path = "/admin/v1/repositories/{name}/retention", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded"), DryRunQuery),
    responses((status = 200, body = RetentionRun), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn run_retention(
    _admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
    Params(q): Params<DryRunQuery>,
) -> ApiResult<Json<RetentionRun>> {
    let repo = repo_name(&name)?;
    let policy = settings_of(&meta, &repo)
        .await?
        .retention
        .ok_or_else(|| RegistryError::NotFound(format!("{repo} has no retention policy")))?;
    let tags = if q.dry_run {
        let tags: Vec<(String, i64)> = meta
            .tag_rows(&repo)
            .await?
            .into_iter()
            .map(|t| (t.name, t.pushed_at))
            .collect();
        policy.expired(&tags, crate::meta::now_ms())
    } else {
        registry.apply_retention(&repo, &policy).await?
    };
    Ok(Json(RetentionRun {
        tags,
        dry_run: q.dry_run,
    }))
}

pub(super) async fn existing_repo(meta: &MetaStore, name: &str) -> ApiResult<RepoName> {
    let repo = repo_name(name)?;
    if !meta.repository_exists(&repo).await? {
        return Err(RegistryError::NameUnknown(repo.to_string()).into());
    }
    Ok(repo)
}

#[utoipa::path(get, path = "/admin/v1/repositories/{name}/tags", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded")),
    responses((status = 200, body = Vec<TagInfo>), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn list_tags(
    _admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<Vec<TagInfo>>> {
    let repo = existing_repo(&meta, &name).await?;
    let sizes = meta.image_sizes(&repo).await?;
    let mut tags = Vec::new();
    for t in meta.tag_rows(&repo).await? {
        let platforms = platforms_of(&registry, &meta, &repo, &t.digest, &t.media_type).await;
        tags.push(TagInfo {
            image_size: sizes.get(&t.digest).copied().unwrap_or(0),
            name: t.name,
            digest: t.digest,
            media_type: t.media_type,
            size: t.size,
            platforms,
            pushed_at: format_ms(t.pushed_at),
        });
    }
    Ok(Json(tags))
}

pub(super) async fn platforms_of(
    registry: &Registry,
    meta: &MetaStore,
    repo: &RepoName,
    digest: &str,
    media_type: &str,
) -> Vec<String> {
    let Ok(digest) = Digest::from_str(digest) else {
        return Vec::new();
    };
    match meta.manifest_by_digest(repo, &digest).await {
        Ok(Some(row)) => registry.platforms(media_type, &row.content).await,
        _ => Vec::new(),
    }
}

#[utoipa::path(delete, path = "/admin/v1/repositories/{name}/tags/{tag}", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded"), ("tag" = String, Path)),
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn delete_tag(
    admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    Segments((name, tag)): Segments<(String, String)>,
) -> ApiResult<StatusCode> {
    let repo = repo_name(&name)?;
    crate::core::names::Tag::from_str(&tag)?;
    if registry
        .delete_tags(&repo, std::slice::from_ref(&tag), &admin.origin)
        .await?
        == 0
    {
        return Err(RegistryError::ManifestUnknown(format!("{repo}:{tag}")).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/admin/v1/repositories/{name}/manifests", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded")),
    responses((status = 200, body = Vec<ManifestInfo>), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn list_manifests(
    _admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<Vec<ManifestInfo>>> {
    let repo = existing_repo(&meta, &name).await?;
    let sizes = meta.image_sizes(&repo).await?;
    let mut out = Vec::new();
    for m in meta.manifest_summaries(&repo).await? {
        let platforms = platforms_of(&registry, &meta, &repo, &m.digest, &m.media_type).await;
        out.push(ManifestInfo {
            image_size: sizes.get(&m.digest).copied().unwrap_or(0),
            digest: m.digest,
            media_type: m.media_type,
            artifact_type: m.artifact_type,
            subject: m.subject,
            size: m.size,
            platforms,
            tags: m.tags,
            pushed_at: format_ms(m.pushed_at),
        });
    }
    Ok(Json(out))
}

#[utoipa::path(delete, path = "/admin/v1/repositories/{name}/manifests/{digest}", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded"), ("digest" = String, Path)),
    responses((status = 204, description = "Deleted with every tag on it"), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn delete_manifest(
    admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    Segments((name, digest)): Segments<(String, String)>,
) -> ApiResult<StatusCode> {
    let repo = repo_name(&name)?;
    let digest = Digest::from_str(&digest)?;
    registry
        .delete_manifest_as_admin(&repo, &digest, &admin.origin)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
