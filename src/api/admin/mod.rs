//! The admin API, `/admin/v1/...`: JSON over HTTP for registry admins
//! (accounts with `admin` on every repository), authenticated like the
//! registry (Basic, or a bearer token issued here). The OpenAPI document is
//! generated from these handlers and served at `/admin/v1/openapi.json`.
//!
//! Names that contain `/` (repositories, namespaces) are one path segment,
//! percent-encoded: `/admin/v1/repositories/team%2Fapp`.
//!
//! This file holds what every handler shares (errors, extractors, the
//! caller, the OpenAPI document and the router); each resource has a file:
//! [`repositories`], [`accounts`], [`events`] (webhooks, deploy rules,
//! deliveries, deploys), [`gc`], [`audit`], [`mirrors`].

mod accounts;
mod audit;
mod events;
mod gc;
mod mirrors;
mod repositories;
mod signatures;

pub use events::{DeliveryInfo, DeployInfo};

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::Shared;
use crate::auth::Auth;
use crate::core::RegistryError;
use crate::core::event::Origin;
use crate::core::json_object::JsonObject;
use crate::meta::{MetaStore, NewAudit};

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Every admin error: a stable code and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// One of UNAUTHORIZED, FORBIDDEN, NOT_FOUND, INVALID, CONFLICT,
    /// TOO_MANY_REQUESTS, STORAGE_FULL, UNAVAILABLE,
    /// INTERNAL.
    pub code: &'static str,
    pub message: String,
}

/// The admin API's error: a core error, answered as JSON.
#[derive(Debug)]
pub struct AdminError(pub(super) RegistryError);

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
            Denied(_) | TagImmutable { .. } | SignatureRequired { .. } => {
                ("FORBIDDEN", StatusCode::FORBIDDEN)
            }
            NotFound(_) | NameUnknown(_) | ManifestUnknown(_) | BlobUnknown(_) | RouteUnknown => {
                ("NOT_FOUND", StatusCode::NOT_FOUND)
            }
            Conflict(_) => ("CONFLICT", StatusCode::CONFLICT),
            TooManyRequests { .. } => ("TOO_MANY_REQUESTS", StatusCode::TOO_MANY_REQUESTS),
            MethodNotAllowed => ("INVALID", StatusCode::METHOD_NOT_ALLOWED),
            StorageFull(_) => ("STORAGE_FULL", StatusCode::INSUFFICIENT_STORAGE),
            Unavailable(_) => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
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

pub(super) type ApiResult<T> = std::result::Result<T, AdminError>;

/// Bad JSON bodies, paths and queries get the admin error shape too.
/// Every body is a JSON object, as the document says.
pub struct Body<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AdminError;

    async fn from_request(req: axum::extract::Request, state: &S) -> ApiResult<Self> {
        Json::<JsonObject<T>>::from_request(req, state)
            .await
            .map(|Json(JsonObject(v))| Body(v))
            .map_err(|e| AdminError(RegistryError::Invalid(e.body_text())))
    }
}

pub struct Params<T>(pub T);

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

pub struct Segments<T>(pub T);

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
    pub(super) origin: Origin,
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
    pub(super) async fn audit(&self, meta: &MetaStore, action: &str, target: &str, detail: &str) {
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
// Shared shapes
// ---------------------------------------------------------------------------

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DryRunQuery {
    /// Only report what would be deleted.
    #[serde(default)]
    pub dry_run: bool,
}

pub(super) fn page(limit: Option<u32>) -> ApiResult<u32> {
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
    info(title = "berth admin API", description = "Manage a berth registry: repositories, accounts, webhooks, deploy rules, pull-through mirrors, signature keys, garbage collection; read the audit log."),
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
pub fn router() -> (axum::Router<Shared>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(AdminDoc::openapi())
        .routes(routes!(repositories::list_repositories))
        .routes(routes!(
            repositories::get_repository,
            repositories::delete_repository
        ))
        .routes(routes!(
            repositories::get_settings,
            repositories::put_settings
        ))
        .routes(routes!(repositories::run_retention))
        .routes(routes!(repositories::list_tags))
        .routes(routes!(repositories::delete_tag))
        .routes(routes!(repositories::list_manifests))
        .routes(routes!(repositories::delete_manifest))
        .routes(routes!(accounts::list_accounts, accounts::create_account))
        .routes(routes!(
            accounts::get_account,
            accounts::change_account,
            accounts::delete_account
        ))
        .routes(routes!(accounts::rotate_secret))
        .routes(routes!(accounts::list_grants))
        .routes(routes!(accounts::put_grant, accounts::delete_grant))
        .routes(routes!(events::webhooks::list, events::webhooks::create))
        .routes(routes!(
            events::webhooks::get,
            events::webhooks::update,
            events::webhooks::delete
        ))
        .routes(routes!(events::webhooks::test))
        .routes(routes!(events::rules::list, events::rules::create))
        .routes(routes!(
            events::rules::get,
            events::rules::update,
            events::rules::delete
        ))
        .routes(routes!(events::rules::test))
        .routes(routes!(events::list_deliveries))
        .routes(routes!(events::redeliver))
        .routes(routes!(events::list_deploys))
        .routes(routes!(audit::audit_log))
        .routes(routes!(gc::gc_status, gc::start_gc))
        .routes(routes!(mirrors::list_mirrors, mirrors::create_mirror))
        .routes(routes!(
            mirrors::get_mirror,
            mirrors::update_mirror,
            mirrors::delete_mirror
        ))
        .routes(routes!(mirrors::list_cached_repositories))
        .routes(routes!(signatures::list_keys, signatures::add_key))
        .routes(routes!(signatures::remove_key))
        .routes(routes!(signatures::list_policies))
        .routes(routes!(signatures::repository_signatures))
        .split_for_parts();
    // After the routes are in: the modifier documents every operation.
    utoipa::Modify::modify(&BasicAuth, &mut doc);
    (router, doc)
}

/// Paths under /admin/v1/ that name nothing.
pub async fn unknown_route() -> AdminError {
    AdminError(RegistryError::NotFound("no such admin endpoint".into()))
}
