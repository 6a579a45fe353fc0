//! HTTP: the router and the layers every request passes. Each surface has
//! its own file; `errors` maps core errors to responses.

pub mod admin;
pub mod auth;
pub mod distribution;
pub mod endpoint;
pub mod errors;
pub mod metrics;
pub mod ops;
pub mod request_scope;
mod unread_body;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue};
use axum::routing::{any, get};
use tower::ServiceBuilder;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::Auth;
use crate::core::{Registry, RegistryError};

/// What handlers share; each takes only the part it needs.
pub struct AppState {
    pub registry: Arc<Registry>,
    pub auth: Arc<Auth>,
    pub meta: crate::meta::MetaStore,
    pub sinks: Arc<crate::sinks::SinkCatalog>,
    pub gc: Arc<crate::gc::GarbageCollector>,
    pub mirrors: Arc<crate::mirror::Mirrors>,
    pub signatures: Arc<crate::signature::Signatures>,
    pub metrics: metrics::MetricsPlace,
    pub sessions: Arc<crate::ui::Sessions>,
}

/// The router's state: [`AppState`] behind one `Arc`, because axum clones
/// the state for every request, and one count costs less than one per part.
#[derive(Clone)]
pub struct Shared(Arc<AppState>);

impl std::ops::Deref for Shared {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

/// Lets a handler take one part (`State<Arc<Registry>>`, ...).
macro_rules! parts {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(impl axum::extract::FromRef<Shared> for $ty {
            fn from_ref(state: &Shared) -> $ty {
                state.0.$field.clone()
            }
        })*
    };
}

parts! {
    registry: Arc<Registry>,
    auth: Arc<Auth>,
    meta: crate::meta::MetaStore,
    sinks: Arc<crate::sinks::SinkCatalog>,
    gc: Arc<crate::gc::GarbageCollector>,
    mirrors: Arc<crate::mirror::Mirrors>,
    signatures: Arc<crate::signature::Signatures>,
    metrics: metrics::MetricsPlace,
    sessions: Arc<crate::ui::Sessions>,
}

/// Largest admin API request body: settings, accounts, rules.
const MAX_ADMIN_BODY: usize = 1 << 20;

/// Every answer says which API it speaks, errors included: clients use it
/// to recognise a registry.
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

pub fn router(state: AppState) -> Router {
    let (admin, openapi) = admin::router();
    let openapi = Arc::new(openapi);
    let admin = admin
        .route(
            "/admin/v1/openapi.json",
            get(move || async move { axum::Json(openapi.as_ref().clone()) }),
        )
        .route("/admin/v1/{*rest}", any(admin::unknown_route))
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY));
    Router::new()
        .merge(admin)
        .merge(crate::ui::router())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/auth/token", any(auth::token))
        .route("/v2", any(distribution::dispatch))
        .route("/v2/", any(distribution::dispatch))
        .route("/v2/{*path}", any(distribution::dispatch))
        .fallback(|| async { RegistryError::RouteUnknown })
        // One `layer` call for the whole stack, outermost first: axum boxes
        // each layered route, and clones and boxes again per request for
        // every `layer` call.
        .layer(
            ServiceBuilder::new()
                .layer(metrics::TrackLayer)
                .layer(request_scope::RequestScopeLayer)
                .layer(unread_body::CloseIfUnreadLayer)
                .layer(SetResponseHeaderLayer::overriding(
                    API_VERSION,
                    HeaderValue::from_static("registry/2.0"),
                ))
                // Bodies are streamed, and bounded where they are read whole.
                .layer(DefaultBodyLimit::disable()),
        )
        .with_state(Shared(Arc::new(state)))
}
