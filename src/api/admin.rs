//! The admin API, `/admin/v1/...`: JSON over HTTP for registry admins
//! (accounts with `admin` on every repository), authenticated like the
//! registry (Basic, or a bearer token issued here). The OpenAPI document is
//! generated from these handlers and served at `/admin/v1/openapi.json`.
//!
//! Names that contain `/` (repositories, namespaces) are one path segment,
//! percent-encoded: `/admin/v1/repositories/team%2Fapp`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::auth::Auth;
use crate::auth::accounts::{ANONYMOUS, Account, Grant};
use crate::auth::manage::AccountAdmin;
use crate::auth::scope::Actions;
use crate::core::names::{Digest, RepoName};
use crate::core::retention::RetentionPolicy;
use crate::core::{Registry, RegistryError};
use crate::events::Origin;
use crate::gc::GarbageCollector;
use crate::meta::{MetaStore, NewAudit, format_ms};
use crate::sinks::{SinkCatalog, SinkEntry, SinkKind};

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Every admin error: a stable code and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// One of UNAUTHORIZED, FORBIDDEN, NOT_FOUND, INVALID, CONFLICT,
    /// TOO_MANY_REQUESTS, INTERNAL.
    pub code: &'static str,
    pub message: String,
}

/// The admin API's error: a core error, answered as JSON.
#[derive(Debug)]
pub struct AdminError(RegistryError);

impl From<RegistryError> for AdminError {
    fn from(e: RegistryError) -> Self {
        AdminError(e)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        use RegistryError::*;
        let (code, status) = match &self.0 {
            Unauthorized(_) | InsufficientScope(_) => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED),
            Denied(_) | TagImmutable { .. } => ("FORBIDDEN", StatusCode::FORBIDDEN),
            NotFound(_) | NameUnknown(_) | ManifestUnknown(_) | BlobUnknown(_) | RouteUnknown => {
                ("NOT_FOUND", StatusCode::NOT_FOUND)
            }
            Conflict(_) => ("CONFLICT", StatusCode::CONFLICT),
            TooManyRequests { .. } => ("TOO_MANY_REQUESTS", StatusCode::TOO_MANY_REQUESTS),
            MethodNotAllowed => ("INVALID", StatusCode::METHOD_NOT_ALLOWED),
            Internal(_) => ("INTERNAL", StatusCode::INTERNAL_SERVER_ERROR),
            _ => ("INVALID", StatusCode::BAD_REQUEST),
        };
        let message = match &self.0 {
            Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "internal error; see the registry's log".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ApiError { code, message })).into_response();
        match self.0 {
            Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"berth admin\""),
                );
            }
            TooManyRequests { retry_after } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        response
    }
}

type ApiResult<T> = std::result::Result<T, AdminError>;

/// Bad JSON bodies, paths and queries get the admin error shape too.
pub struct Body<T>(T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AdminError;

    async fn from_request(req: axum::extract::Request, state: &S) -> ApiResult<Self> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Body(v))
            .map_err(|e| AdminError(RegistryError::Invalid(e.body_text())))
    }
}

pub struct Params<T>(T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|e| AdminError(RegistryError::Invalid(e.body_text())))
    }
}

pub struct Segments<T>(T);

impl<S, T> FromRequestParts<S> for Segments<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Segments(v))
            .map_err(|e| AdminError(RegistryError::Invalid(e.body_text())))
    }
}

// ---------------------------------------------------------------------------
// Who is calling
// ---------------------------------------------------------------------------

/// An authenticated registry admin, and how the request reached us (for
/// the audit log and the events it causes).
pub struct AdminCaller {
    origin: Origin,
}

impl<S> FromRequestParts<S> for AdminCaller
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let auth = Arc::<Auth>::from_ref(state);
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let caller = crate::api::auth::admit(&auth, &parts.headers, peer, None).await?;
        if caller.account.is_none() {
            return Err(RegistryError::Unauthorized(
                "the admin API needs an admin account's credentials".into(),
            )
            .into());
        }
        if !auth.is_admin(&caller).await? {
            return Err(RegistryError::Denied(format!(
                "{} is not a registry admin",
                caller.account.as_deref().unwrap_or_default()
            ))
            .into());
        }
        Ok(AdminCaller {
            origin: crate::api::auth::origin(&caller, peer, &parts.headers, &parts.method),
        })
    }
}

impl AdminCaller {
    /// Records a change in the audit log. A change that happened is not
    /// undone because its audit line could not be written; it is logged.
    async fn audit(&self, meta: &MetaStore, action: &str, target: &str, detail: &str) {
        let entry = NewAudit {
            actor: self.origin.actor.as_deref(),
            address: self.origin.addr.as_deref(),
            action,
            target,
            detail,
        };
        if let Err(e) = meta.append_audit(&entry).await {
            tracing::error!(error = %e, action, target, "writing the audit log");
        }
    }
}

// ---------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------

fn repo_name(name: &str) -> ApiResult<RepoName> {
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
    pub size: i64,
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
    pub size: i64,
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DryRunQuery {
    /// Only report what would be deleted.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize, ToSchema)]
pub struct GrantInfo {
    /// A repository name prefix, or `*` for every repository.
    pub namespace: String,
    pub actions: Vec<String>,
}

impl From<&Grant> for GrantInfo {
    fn from(g: &Grant) -> Self {
        GrantInfo {
            namespace: if g.namespace.is_everything() {
                "*".into()
            } else {
                g.namespace.as_str().to_owned()
            },
            actions: g
                .actions
                .to_string()
                .split(',')
                .map(str::to_owned)
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AccountInfo {
    pub name: String,
    /// `user` or `robot`.
    pub kind: String,
    pub disabled: bool,
    pub grants: Vec<GrantInfo>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub name: String,
    /// `user` (default) or `robot`.
    #[serde(default)]
    pub kind: Option<String>,
    /// A user's password (8 characters or more); generated when absent.
    /// Robots always get a generated secret.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AccountSecret {
    pub name: String,
    /// Shown once; berth keeps only its hash.
    pub secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountChange {
    pub disabled: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    /// A user's new password; generated when absent.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantActions {
    /// Any of pull, push, delete, admin (`*` for all).
    pub actions: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SinkInfo {
    pub name: String,
    pub kind: SinkKind,
    /// Defined in the config file: read-only here.
    pub from_config: bool,
    /// The fields of `[[events.webhooks]]` or `[[deploy.rules]]` (see
    /// config.toml); a webhook's secret shows as `(set)`.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<SinkEntry> for SinkInfo {
    fn from(e: SinkEntry) -> Self {
        SinkInfo {
            name: e.name,
            kind: e.kind,
            from_config: e.from_config,
            spec: e.spec,
            created_at: e.created_at.map(format_ms),
            updated_at: e.updated_at.map(format_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TestResult {
    pub ok: bool,
    pub detail: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryInfo {
    pub event_seq: i64,
    pub event_id: String,
    pub sink: String,
    /// pending, delivered or gave_up.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub updated_at: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    pub sink: Option<String>,
    pub state: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct DeployInfo {
    pub id: i64,
    pub rule: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub container: String,
    pub tag: Option<String>,
    pub old_image: Option<String>,
    pub new_image: String,
    /// patching, rolling, succeeded, failed, timed_out, rolled_back,
    /// skipped.
    pub state: String,
    pub message: String,
    pub started_at: String,
    pub finished_at: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeployQuery {
    pub rule: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub at: String,
    pub actor: Option<String>,
    pub address: Option<String>,
    /// e.g. manifest.push, manifest.delete, repository.delete,
    /// settings.change, account.create, grant.put.
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only entries before this time (RFC 3339).
    pub before: Option<String>,
}

fn page(limit: Option<u32>) -> ApiResult<u32> {
    match limit.unwrap_or(100) {
        n @ 1..=1000 => Ok(n),
        n => Err(RegistryError::Invalid(format!("limit {n} is not between 1 and 1000")).into()),
    }
}

// ---------------------------------------------------------------------------
// The document and the router
// ---------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(title = "berth admin API", description = "Manage a berth registry: repositories, accounts, webhooks, deploy rules, garbage collection; read the audit log."),
    components(schemas(ApiError)),
    security(("basic" = [])),
)]
struct AdminDoc;

struct BasicAuth;

impl utoipa::Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        // Every operation checks the caller before anything else, so each
        // can answer these; documented once here rather than on each.
        let answers = [
            ("401", "No credentials, or wrong ones"),
            ("403", "The account is not a registry admin"),
            ("429", "Too many failed logins from this address"),
        ];
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, description) in answers {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

/// A documented error answer: an [`ApiError`] body.
fn error_response(
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::response::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ApiError")))
                .build(),
        )
        .build()
        .into()
}

/// The admin routes, and the OpenAPI document describing them.
pub fn router() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(AdminDoc::openapi())
        .routes(routes!(list_repositories))
        .routes(routes!(get_repository, delete_repository))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(run_retention))
        .routes(routes!(list_tags))
        .routes(routes!(delete_tag))
        .routes(routes!(list_manifests))
        .routes(routes!(delete_manifest))
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, change_account, delete_account))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_grants))
        .routes(routes!(put_grant, delete_grant))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::test))
        .routes(routes!(rules::list, rules::create))
        .routes(routes!(rules::get, rules::update, rules::delete))
        .routes(routes!(rules::test))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
        .routes(routes!(list_deploys))
        .routes(routes!(audit_log))
        .routes(routes!(gc_status, start_gc))
        .split_for_parts();
    // After the routes are in: the modifier documents every operation.
    utoipa::Modify::modify(&BasicAuth, &mut doc);
    (router, doc)
}

/// Paths under /admin/v1/ that name nothing.
pub async fn unknown_route() -> AdminError {
    AdminError(RegistryError::NotFound("no such admin endpoint".into()))
}

// ---------------------------------------------------------------------------
// Repositories, tags, manifests
// ---------------------------------------------------------------------------

fn repository_info(registry: &Registry, s: crate::meta::RepositorySummary) -> RepositoryInfo {
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
async fn list_repositories(
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
async fn get_repository(
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
async fn delete_repository(
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

async fn public_read(meta: &MetaStore, repo: &RepoName) -> ApiResult<bool> {
    Ok(meta
        .grants(ANONYMOUS)
        .await?
        .iter()
        .any(|g| g.namespace.as_str() == repo.as_str() && g.actions.contains(Actions::PULL)))
}

async fn settings_of(meta: &MetaStore, repo: &RepoName) -> ApiResult<RepositorySettings> {
    let row = meta.repository_settings(repo.as_str()).await?;
    let retention = row
        .retention
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| RegistryError::Internal(format!("stored retention policy: {e}")))?;
    Ok(RepositorySettings {
        immutable_tags: row.immutable_tags,
        public_read: public_read(meta, repo).await?,
        retention,
    })
}

#[utoipa::path(get, path = "/admin/v1/repositories/{name}/settings", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded")),
    responses((status = 200, body = RepositorySettings), (status = 400, body = ApiError)))]
async fn get_settings(
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
async fn put_settings(
    admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments(name): Segments<String>,
    Body(settings): Body<RepositorySettings>,
) -> ApiResult<Json<RepositorySettings>> {
    let repo = repo_name(&name)?;
    if let Some(policy) = &settings.retention {
        policy.validate()?;
    }
    let retention = settings
        .retention
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| RegistryError::Internal(e.to_string()))?;
    meta.put_repository_settings(
        repo.as_str(),
        &crate::meta::SettingsRow {
            immutable_tags: settings.immutable_tags,
            retention,
        },
    )
    .await?;
    let accounts = AccountAdmin::new(meta.clone());
    let was_public = public_read(&meta, &repo).await?;
    if settings.public_read && !was_public {
        accounts.grant(ANONYMOUS, repo.as_str(), "pull").await?;
    } else if !settings.public_read && was_public {
        accounts.revoke(ANONYMOUS, repo.as_str()).await?;
    }
    auth.forget_cached();
    let detail = serde_json::to_string(&settings).unwrap_or_default();
    admin
        .audit(&meta, "settings.change", repo.as_str(), &detail)
        .await;
    if let Some(policy) = &settings.retention {
        registry.apply_retention(&repo, policy).await?;
    }
    Ok(Json(settings_of(&meta, &repo).await?))
}

#[utoipa::path(post, path = "/admin/v1/repositories/{name}/retention", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded"), DryRunQuery),
    responses((status = 200, body = RetentionRun), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn run_retention(
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

async fn existing_repo(meta: &MetaStore, name: &str) -> ApiResult<RepoName> {
    let repo = repo_name(name)?;
    if !meta.repository_exists(&repo).await? {
        return Err(RegistryError::NameUnknown(repo.to_string()).into());
    }
    Ok(repo)
}

#[utoipa::path(get, path = "/admin/v1/repositories/{name}/tags", tag = "repositories",
    params(("name" = String, Path, description = "Repository name, percent-encoded")),
    responses((status = 200, body = Vec<TagInfo>), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn list_tags(
    _admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<Vec<TagInfo>>> {
    let repo = existing_repo(&meta, &name).await?;
    let mut tags = Vec::new();
    for t in meta.tag_rows(&repo).await? {
        let platforms = platforms_of(&registry, &meta, &repo, &t.digest, &t.media_type).await;
        tags.push(TagInfo {
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

async fn platforms_of(
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
async fn delete_tag(
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
async fn list_manifests(
    _admin: AdminCaller,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<Vec<ManifestInfo>>> {
    let repo = existing_repo(&meta, &name).await?;
    let mut out = Vec::new();
    for m in meta.manifest_summaries(&repo).await? {
        let platforms = platforms_of(&registry, &meta, &repo, &m.digest, &m.media_type).await;
        out.push(ManifestInfo {
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
async fn delete_manifest(
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

// ---------------------------------------------------------------------------
// Accounts and grants
// ---------------------------------------------------------------------------

async fn account_info(meta: &MetaStore, a: Account) -> ApiResult<AccountInfo> {
    let grants = meta.grants(&a.name).await?;
    Ok(AccountInfo {
        kind: a.kind.as_str().to_owned(),
        disabled: a.disabled,
        grants: grants.iter().map(GrantInfo::from).collect(),
        name: a.name,
    })
}

#[utoipa::path(get, path = "/admin/v1/accounts", tag = "accounts",
    responses((status = 200, body = Vec<AccountInfo>)))]
async fn list_accounts(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
) -> ApiResult<Json<Vec<AccountInfo>>> {
    let mut out = Vec::new();
    for a in AccountAdmin::new(meta.clone()).list().await? {
        out.push(account_info(&meta, a).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/admin/v1/accounts", tag = "accounts",
    request_body = NewAccount,
    responses((status = 201, body = AccountSecret), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn create_account(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    Body(new): Body<NewAccount>,
) -> ApiResult<(StatusCode, Json<AccountSecret>)> {
    let accounts = AccountAdmin::new(meta.clone());
    let secret = match new.kind.as_deref().unwrap_or("user") {
        "user" => accounts.add_user(&new.name, new.password, false).await?,
        "robot" if new.password.is_some() => {
            return Err(RegistryError::Invalid("robot secrets are generated".into()).into());
        }
        "robot" => accounts.add_robot(&new.name).await?,
        other => {
            return Err(
                RegistryError::Invalid(format!("kind {other:?} is not user or robot")).into(),
            );
        }
    };
    admin.audit(&meta, "account.create", &new.name, "").await;
    Ok((
        StatusCode::CREATED,
        Json(AccountSecret {
            name: new.name,
            secret,
        }),
    ))
}

async fn account(meta: &MetaStore, name: &str) -> ApiResult<Account> {
    Ok(meta
        .account(name)
        .await?
        .ok_or_else(|| RegistryError::NotFound(format!("no account {name:?}")))?)
}

#[utoipa::path(get, path = "/admin/v1/accounts/{name}", tag = "accounts",
    params(("name" = String, Path)),
    responses((status = 200, body = AccountInfo), (status = 404, body = ApiError)))]
async fn get_account(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<AccountInfo>> {
    let a = account(&meta, &name).await?;
    Ok(Json(account_info(&meta, a).await?))
}

#[utoipa::path(patch, path = "/admin/v1/accounts/{name}", tag = "accounts",
    params(("name" = String, Path)),
    request_body = AccountChange,
    responses((status = 200, body = AccountInfo), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn change_account(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments(name): Segments<String>,
    Body(change): Body<AccountChange>,
) -> ApiResult<Json<AccountInfo>> {
    AccountAdmin::new(meta.clone())
        .set_disabled(&name, change.disabled)
        .await?;
    auth.forget_cached();
    let action = if change.disabled {
        "account.disable"
    } else {
        "account.enable"
    };
    admin.audit(&meta, action, &name, "").await;
    let a = account(&meta, &name).await?;
    Ok(Json(account_info(&meta, a).await?))
}

#[utoipa::path(post, path = "/admin/v1/accounts/{name}/secret", tag = "accounts",
    params(("name" = String, Path)),
    request_body = NewSecret,
    responses((status = 200, body = AccountSecret), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn rotate_secret(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments(name): Segments<String>,
    Body(new): Body<NewSecret>,
) -> ApiResult<Json<AccountSecret>> {
    let secret = AccountAdmin::new(meta.clone())
        .set_secret(&name, new.password)
        .await?;
    auth.forget_cached();
    admin.audit(&meta, "account.secret", &name, "").await;
    Ok(Json(AccountSecret { name, secret }))
}

#[utoipa::path(delete, path = "/admin/v1/accounts/{name}", tag = "accounts",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
async fn delete_account(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments(name): Segments<String>,
) -> ApiResult<StatusCode> {
    AccountAdmin::new(meta.clone()).delete(&name).await?;
    auth.forget_cached();
    admin.audit(&meta, "account.delete", &name, "").await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/admin/v1/accounts/{name}/grants", tag = "accounts",
    params(("name" = String, Path, description = "An account, or `anonymous`")),
    responses((status = 200, body = Vec<GrantInfo>), (status = 404, body = ApiError)))]
async fn list_grants(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<Vec<GrantInfo>>> {
    let grants = AccountAdmin::new(meta).grants(&name).await?;
    Ok(Json(grants.iter().map(GrantInfo::from).collect()))
}

#[utoipa::path(put, path = "/admin/v1/accounts/{name}/grants/{namespace}", tag = "accounts",
    params(("name" = String, Path, description = "An account, or `anonymous`"),
           ("namespace" = String, Path, description = "Repository name prefix, percent-encoded, or `*`")),
    request_body = GrantActions,
    responses((status = 200, body = GrantInfo), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn put_grant(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments((name, namespace)): Segments<(String, String)>,
    Body(body): Body<GrantActions>,
) -> ApiResult<Json<GrantInfo>> {
    let actions = body.actions.join(",");
    let grant = AccountAdmin::new(meta.clone())
        .grant(&name, &namespace, &actions)
        .await?;
    auth.forget_cached();
    admin
        .audit(
            &meta,
            "grant.put",
            &format!("{name} on {namespace}"),
            &actions,
        )
        .await;
    Ok(Json(GrantInfo::from(&grant)))
}

#[utoipa::path(delete, path = "/admin/v1/accounts/{name}/grants/{namespace}", tag = "accounts",
    params(("name" = String, Path), ("namespace" = String, Path, description = "Percent-encoded, or `*`")),
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn delete_grant(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments((name, namespace)): Segments<(String, String)>,
) -> ApiResult<StatusCode> {
    AccountAdmin::new(meta.clone())
        .revoke(&name, &namespace)
        .await?;
    auth.forget_cached();
    admin
        .audit(&meta, "grant.delete", &format!("{name} on {namespace}"), "")
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------
// Webhooks and deploy rules
// ---------------------------------------------------------------------------

async fn list_sinks(sinks: &SinkCatalog, kind: SinkKind) -> ApiResult<Json<Vec<SinkInfo>>> {
    Ok(Json(
        sinks
            .list(kind)
            .await?
            .into_iter()
            .map(SinkInfo::from)
            .collect(),
    ))
}

fn audit_name(kind: SinkKind) -> &'static str {
    match kind {
        SinkKind::Webhook => "webhook",
        SinkKind::DeployRule => "deploy_rule",
    }
}

async fn create_sink(
    admin: &AdminCaller,
    meta: &MetaStore,
    sinks: &SinkCatalog,
    kind: SinkKind,
    spec: &serde_json::Value,
) -> ApiResult<(StatusCode, Json<SinkInfo>)> {
    let entry = sinks.create(kind, spec).await?;
    admin
        .audit(
            meta,
            &format!("{}.create", audit_name(kind)),
            &entry.name,
            "",
        )
        .await;
    Ok((StatusCode::CREATED, Json(entry.into())))
}

async fn update_sink(
    admin: &AdminCaller,
    meta: &MetaStore,
    sinks: &SinkCatalog,
    kind: SinkKind,
    name: &str,
    spec: &serde_json::Value,
) -> ApiResult<Json<SinkInfo>> {
    let entry = sinks.update(kind, name, spec).await?;
    admin
        .audit(meta, &format!("{}.change", audit_name(kind)), name, "")
        .await;
    Ok(Json(entry.into()))
}

async fn delete_sink(
    admin: &AdminCaller,
    meta: &MetaStore,
    sinks: &SinkCatalog,
    kind: SinkKind,
    name: &str,
) -> ApiResult<StatusCode> {
    sinks.delete(kind, name).await?;
    admin
        .audit(meta, &format!("{}.delete", audit_name(kind)), name, "")
        .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn test_sink(sinks: &SinkCatalog, kind: SinkKind, name: &str) -> ApiResult<Json<TestResult>> {
    let result = sinks.test(kind, name).await?;
    Ok(Json(match result {
        Ok(detail) => TestResult { ok: true, detail },
        Err(detail) => TestResult { ok: false, detail },
    }))
}

/// The six handlers of a kind of sink (list, create, get, change, delete,
/// test-fire), in a module of their own. The two kinds differ only in
/// paths, names and the spec their bodies carry.
macro_rules! sink_handlers {
    ($module:ident, $kind:expr, $spec:ty,
     $collection:literal, $item:literal, $test:literal,
     [$list_id:literal, $create_id:literal, $get_id:literal, $update_id:literal,
      $delete_id:literal, $test_id:literal], $test_doc:literal) => {
        mod $module {
            use super::*;

            #[utoipa::path(get, path = $collection, tag = "events", operation_id = $list_id,
                responses((status = 200, body = Vec<SinkInfo>)))]
            pub async fn list(
                _admin: AdminCaller,
                State(sinks): State<Arc<SinkCatalog>>,
            ) -> ApiResult<Json<Vec<SinkInfo>>> {
                list_sinks(&sinks, $kind).await
            }

            /// The body has the fields of the config file's section.
            #[utoipa::path(post, path = $collection, tag = "events", operation_id = $create_id,
                request_body(content = $spec),
                responses((status = 201, body = SinkInfo), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
            pub async fn create(
                admin: AdminCaller,
                State(meta): State<MetaStore>,
                State(sinks): State<Arc<SinkCatalog>>,
                Body(spec): Body<serde_json::Value>,
            ) -> ApiResult<(StatusCode, Json<SinkInfo>)> {
                create_sink(&admin, &meta, &sinks, $kind, &spec).await
            }

            #[utoipa::path(get, path = $item, tag = "events", operation_id = $get_id,
                params(("name" = String, Path)),
                responses((status = 200, body = SinkInfo), (status = 404, body = ApiError)))]
            pub async fn get(
                _admin: AdminCaller,
                State(sinks): State<Arc<SinkCatalog>>,
                Segments(name): Segments<String>,
            ) -> ApiResult<Json<SinkInfo>> {
                Ok(Json(sinks.get($kind, &name).await?.into()))
            }

            #[utoipa::path(put, path = $item, tag = "events", operation_id = $update_id,
                params(("name" = String, Path)),
                request_body(content = $spec),
                responses((status = 200, body = SinkInfo), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
            pub async fn update(
                admin: AdminCaller,
                State(meta): State<MetaStore>,
                State(sinks): State<Arc<SinkCatalog>>,
                Segments(name): Segments<String>,
                Body(spec): Body<serde_json::Value>,
            ) -> ApiResult<Json<SinkInfo>> {
                update_sink(&admin, &meta, &sinks, $kind, &name, &spec).await
            }

            #[utoipa::path(delete, path = $item, tag = "events", operation_id = $delete_id,
                params(("name" = String, Path)),
                responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
            pub async fn delete(
                admin: AdminCaller,
                State(meta): State<MetaStore>,
                State(sinks): State<Arc<SinkCatalog>>,
                Segments(name): Segments<String>,
            ) -> ApiResult<StatusCode> {
                delete_sink(&admin, &meta, &sinks, $kind, &name).await
            }

            #[doc = $test_doc]
            #[utoipa::path(post, path = $test, tag = "events", operation_id = $test_id,
                params(("name" = String, Path)),
                responses((status = 200, body = TestResult), (status = 404, body = ApiError)))]
            pub async fn test(
                _admin: AdminCaller,
                State(sinks): State<Arc<SinkCatalog>>,
                Segments(name): Segments<String>,
            ) -> ApiResult<Json<TestResult>> {
                test_sink(&sinks, $kind, &name).await
            }
        }
    };
}

sink_handlers!(
    webhooks,
    SinkKind::Webhook,
    crate::config::WebhookConfig,
    "/admin/v1/webhooks",
    "/admin/v1/webhooks/{name}",
    "/admin/v1/webhooks/{name}/test",
    [
        "list_webhooks",
        "create_webhook",
        "get_webhook",
        "update_webhook",
        "delete_webhook",
        "test_webhook"
    ],
    "Sends a `ping` event; the answer says whether the receiver took it."
);

sink_handlers!(
    rules,
    SinkKind::DeployRule,
    crate::config::DeployRuleConfig,
    "/admin/v1/deploy-rules",
    "/admin/v1/deploy-rules/{name}",
    "/admin/v1/deploy-rules/{name}/test",
    [
        "list_rules",
        "create_rule",
        "get_rule",
        "update_rule",
        "delete_rule",
        "test_rule"
    ],
    "A dry run: which workloads and containers a push would patch, and the images they run now. Changes nothing."
);

#[utoipa::path(get, path = "/admin/v1/deliveries", tag = "events",
    params(DeliveryQuery),
    responses((status = 200, body = Vec<DeliveryInfo>), (status = 400, body = ApiError)))]
async fn list_deliveries(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Params(q): Params<DeliveryQuery>,
) -> ApiResult<Json<Vec<DeliveryInfo>>> {
    let rows = meta
        .deliveries(page(q.limit)?, q.sink.as_deref(), q.state.as_deref())
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|d| DeliveryInfo {
                event_seq: d.event_seq,
                event_id: d.event_id,
                sink: d.sink,
                state: d.state,
                attempts: d.attempts,
                last_error: d.last_error,
                updated_at: format_ms(d.updated_at),
            })
            .collect(),
    ))
}

/// Queues a delivery again, due now, whatever became of it.
#[utoipa::path(post, path = "/admin/v1/deliveries/{event_seq}/{sink}/redeliver", tag = "events",
    params(("event_seq" = i64, Path), ("sink" = String, Path, description = "e.g. webhook:ci or deploy:web")),
    responses((status = 202, description = "Queued"), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn redeliver(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(registry): State<Arc<Registry>>,
    Segments((event_seq, sink)): Segments<(i64, String)>,
) -> ApiResult<StatusCode> {
    if !meta.redeliver(event_seq, &sink).await? {
        return Err(
            RegistryError::NotFound(format!("no delivery of event {event_seq} to {sink}")).into(),
        );
    }
    registry.events_written().notify_one();
    admin
        .audit(
            &meta,
            "delivery.redeliver",
            &format!("{event_seq} to {sink}"),
            "",
        )
        .await;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/admin/v1/deploys", tag = "events",
    params(DeployQuery),
    responses((status = 200, body = Vec<DeployInfo>), (status = 400, body = ApiError)))]
async fn list_deploys(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Params(q): Params<DeployQuery>,
) -> ApiResult<Json<Vec<DeployInfo>>> {
    let rows = meta.deploys(page(q.limit)?, q.rule.as_deref()).await?;
    Ok(Json(
        rows.into_iter()
            .map(|d| DeployInfo {
                id: d.id,
                rule: d.rule,
                namespace: d.namespace,
                kind: d.kind,
                name: d.name,
                container: d.container,
                tag: d.tag,
                old_image: d.old_image,
                new_image: d.new_image,
                state: d.state,
                message: d.message,
                started_at: format_ms(d.started_at),
                finished_at: d.finished_at.map(format_ms),
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------
// Garbage collection
// ---------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct GcStatus {
    pub running: bool,
    /// The newest finished run (of any kind, dry or not).
    pub last: Option<crate::core::gc::GcReport>,
}

#[utoipa::path(get, path = "/admin/v1/gc", tag = "gc",
    responses((status = 200, body = GcStatus)))]
async fn gc_status(
    _admin: AdminCaller,
    State(gc): State<Arc<GarbageCollector>>,
) -> ApiResult<Json<GcStatus>> {
    Ok(Json(GcStatus {
        running: gc.is_running().await?,
        last: gc.last_report().await?,
    }))
}

/// Starts a run in the background; `GET /admin/v1/gc` shows when it is
/// done and what it found.
#[utoipa::path(post, path = "/admin/v1/gc", tag = "gc",
    params(DryRunQuery),
    responses((status = 202, description = "Started"), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn start_gc(
    admin: AdminCaller,
    State(gc): State<Arc<GarbageCollector>>,
    State(meta): State<MetaStore>,
    Params(q): Params<DryRunQuery>,
) -> ApiResult<StatusCode> {
    gc.start(q.dry_run).await?;
    let what = if q.dry_run { "dry run" } else { "" };
    admin.audit(&meta, "gc.start", "registry", what).await;
    Ok(StatusCode::ACCEPTED)
}

// ---------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------

#[utoipa::path(get, path = "/admin/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ApiError)))]
async fn audit_log(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Params(q): Params<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let before = q
        .before
        .as_deref()
        .map(|b| {
            humantime::parse_rfc3339_weak(b)
                .map_err(|e| RegistryError::Invalid(format!("before {b:?}: {e}")))
                .map(|t| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64)
        })
        .transpose()?;
    let rows = meta.audit_rows(page(q.limit)?, before).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditEntry {
                at: format_ms(r.at),
                actor: r.actor,
                address: r.address,
                action: r.action,
                target: r.target,
                detail: r.detail,
            })
            .collect(),
    ))
}
