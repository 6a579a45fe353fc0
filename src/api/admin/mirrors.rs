//! Pull-through mirrors: their settings (those of the config file are
//! listed, and changed only there), and what each has cached.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::{AdminCaller, ApiError, ApiResult, Body, Segments};
use crate::config::MirrorConfig;
use crate::core::{Registry, RegistryError};
use crate::meta::{MetaStore, format_ms};
use crate::mirror::{Mirror, Mirrors};

#[derive(Serialize, ToSchema)]
pub struct MirrorInfo {
    pub namespace: String,
    pub upstream: String,
    /// The upstream account; its password is never shown.
    pub username: String,
    pub tag_ttl_seconds: u64,
    pub max_bytes: u64,
    pub timeout_seconds: u64,
    pub unprefixed: bool,
    /// Defined in the config file: the API cannot change it.
    pub from_config: bool,
    /// Bytes of what it cached (each blob once).
    pub cached_bytes: u64,
    pub repositories: u64,
    /// Pulls answered from the cache.
    pub hits: u64,
    /// Pulls that fetched from the upstream.
    pub misses: u64,
}

#[derive(Serialize, ToSchema)]
pub struct CachedRepositoryInfo {
    pub name: String,
    pub tag_count: i64,
    /// Bytes of its cached blobs and manifests.
    pub size: i64,
    pub hits: u64,
    pub misses: u64,
    pub last_pull: Option<String>,
    /// When it last fetched from the upstream.
    pub last_fetch: Option<String>,
}

async fn cached_repositories(
    registry: &Registry,
    mirrors: &Mirrors,
    meta: &MetaStore,
    namespace: &str,
) -> ApiResult<Vec<CachedRepositoryInfo>> {
    Ok(meta
        .mirror_repositories(namespace)
        .await?
        .into_iter()
        .map(|row| {
            let (hits, misses) = mirrors.uses().unflushed(&row.repository);
            let last_pull = match (row.last_pull, registry.unflushed_pull(&row.repository)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            CachedRepositoryInfo {
                tag_count: row.tag_count,
                size: row.size,
                hits: row.hits as u64 + hits,
                misses: row.misses as u64 + misses,
                last_pull: last_pull.map(format_ms),
                last_fetch: row.last_fetch.map(format_ms),
                name: row.repository,
            }
        })
        .collect())
}

async fn info(
    registry: &Registry,
    mirrors: &Mirrors,
    meta: &MetaStore,
    mirror: &Mirror,
) -> ApiResult<MirrorInfo> {
    let c = &mirror.config;
    let repositories = cached_repositories(registry, mirrors, meta, &c.namespace).await?;
    Ok(MirrorInfo {
        namespace: c.namespace.clone(),
        upstream: c.upstream.clone(),
        username: c.username.clone(),
        tag_ttl_seconds: c.tag_ttl_seconds,
        max_bytes: c.max_bytes,
        timeout_seconds: c.timeout_seconds,
        unprefixed: c.unprefixed,
        from_config: mirror.from_config,
        cached_bytes: registry.mirror_usage(&c.namespace).await?,
        repositories: repositories.len() as u64,
        hits: repositories.iter().map(|r| r.hits).sum(),
        misses: repositories.iter().map(|r| r.misses).sum(),
    })
}

fn known(mirrors: &Mirrors, namespace: &str) -> ApiResult<Arc<Mirror>> {
    mirrors.get(namespace).ok_or_else(|| {
        RegistryError::NotFound(format!("no mirror of namespace {namespace}")).into()
    })
}

/// The mirror's settings without its password, for the audit log.
fn audit_detail(config: &MirrorConfig) -> String {
    let mut shown = serde_json::to_value(config).unwrap_or_default();
    if let Some(map) = shown.as_object_mut() {
        map.remove("password");
    }
    shown.to_string()
}

#[utoipa::path(get, path = "/admin/v1/mirrors", tag = "mirrors",
    responses((status = 200, body = Vec<MirrorInfo>)))]
pub(super) async fn list_mirrors(
    _admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(mirrors): State<Arc<Mirrors>>,
    State(meta): State<MetaStore>,
) -> ApiResult<Json<Vec<MirrorInfo>>> {
    let mut out = Vec::new();
    for mirror in mirrors.all().iter() {
        out.push(info(&registry, &mirrors, &meta, mirror).await?);
    }
    Ok(Json(out))
}

/// Pulls of `<namespace>/...` (and with `?ns=<namespace>`) go through it
/// from now on; pushes into it are refused.
#[utoipa::path(post, path = "/admin/v1/mirrors", tag = "mirrors",
    request_body = MirrorConfig,
    responses((status = 201, body = MirrorInfo), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn create_mirror(
    admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(mirrors): State<Arc<Mirrors>>,
    State(meta): State<MetaStore>,
    Body(config): Body<MirrorConfig>,
) -> ApiResult<(StatusCode, Json<MirrorInfo>)> {
    let detail = audit_detail(&config);
    let mirror = mirrors.create(config).await?;
    admin
        .audit(&meta, "mirror.create", mirror.namespace(), &detail)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(info(&registry, &mirrors, &meta, &mirror).await?),
    ))
}

#[utoipa::path(get, path = "/admin/v1/mirrors/{namespace}", tag = "mirrors",
    params(("namespace" = String, Path, description = "The mirror's namespace, percent-encoded")),
    responses((status = 200, body = MirrorInfo), (status = 404, body = ApiError)))]
pub(super) async fn get_mirror(
    _admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(mirrors): State<Arc<Mirrors>>,
    State(meta): State<MetaStore>,
    Segments(namespace): Segments<String>,
) -> ApiResult<Json<MirrorInfo>> {
    let mirror = known(&mirrors, &namespace)?;
    Ok(Json(info(&registry, &mirrors, &meta, &mirror).await?))
}

/// Replaces a mirror's settings; an empty password keeps the stored one.
#[utoipa::path(put, path = "/admin/v1/mirrors/{namespace}", tag = "mirrors",
    params(("namespace" = String, Path, description = "The mirror's namespace, percent-encoded")),
    request_body = MirrorConfig,
    responses((status = 200, body = MirrorInfo), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn update_mirror(
    admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(mirrors): State<Arc<Mirrors>>,
    State(meta): State<MetaStore>,
    Segments(namespace): Segments<String>,
    Body(config): Body<MirrorConfig>,
) -> ApiResult<Json<MirrorInfo>> {
    if config.namespace != namespace {
        return Err(RegistryError::Invalid(format!(
            "the body names namespace {:?}, the path {namespace:?}: a mirror's namespace \
             cannot change (delete it and create another)",
            config.namespace
        ))
        .into());
    }
    let detail = audit_detail(&config);
    let mirror = mirrors.update(config).await?;
    admin
        .audit(&meta, "mirror.change", mirror.namespace(), &detail)
        .await;
    Ok(Json(info(&registry, &mirrors, &meta, &mirror).await?))
}

/// Deletes a mirror made through the API, with everything it cached.
#[utoipa::path(delete, path = "/admin/v1/mirrors/{namespace}", tag = "mirrors",
    params(("namespace" = String, Path, description = "The mirror's namespace, percent-encoded")),
    responses((status = 204, description = "Deleted with its cache"), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn delete_mirror(
    admin: AdminCaller,
    State(mirrors): State<Arc<Mirrors>>,
    State(meta): State<MetaStore>,
    Segments(namespace): Segments<String>,
) -> ApiResult<StatusCode> {
    mirrors.delete(&namespace).await?;
    admin.audit(&meta, "mirror.delete", &namespace, "").await;
    Ok(StatusCode::NO_CONTENT)
}

/// The repositories a mirror filled, with what their pulls found. Their
/// tags and manifests are those of any repository
/// (`/admin/v1/repositories/{name}/tags`).
#[utoipa::path(get, path = "/admin/v1/mirrors/{namespace}/repositories", tag = "mirrors",
    params(("namespace" = String, Path, description = "The mirror's namespace, percent-encoded")),
    responses((status = 200, body = Vec<CachedRepositoryInfo>), (status = 404, body = ApiError)))]
pub(super) async fn list_cached_repositories(
    _admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(mirrors): State<Arc<Mirrors>>,
    State(meta): State<MetaStore>,
    Segments(namespace): Segments<String>,
) -> ApiResult<Json<Vec<CachedRepositoryInfo>>> {
    known(&mirrors, &namespace)?;
    Ok(Json(
        cached_repositories(&registry, &mirrors, &meta, &namespace).await?,
    ))
}
