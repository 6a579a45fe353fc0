//! berth: a self-hosted OCI container registry.
//!
//! - [`core`]: registry logic (names, uploads, manifests), no HTTP.
//! - [`storage`]: `BlobStore`, the bytes.
//! - [`meta`]: `MetaStore`, what exists.
//! - [`auth`]: accounts, grants, tokens: who may do what.
//! - [`api`]: HTTP, translating requests to core calls.

pub mod api;
pub mod auth;
pub mod config;
pub mod core;
pub mod meta;
pub mod storage;

use std::sync::Arc;

use crate::auth::Auth;
use crate::config::Config;
use crate::core::{Registry, RegistryLimits};
use crate::meta::MetaStore;
use crate::storage::BlobStore;

/// A registry ready to serve: the core and the HTTP router over it.
pub struct App {
    pub registry: Arc<Registry>,
    pub auth: Arc<Auth>,
    pub router: axum::Router,
    /// The first admin's password, when this start created the account.
    pub initial_admin_password: Option<String>,
}

impl App {
    pub async fn build(config: &Config) -> anyhow::Result<App> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let blobs = BlobStore::open(&config.data_dir)?;
        let meta = MetaStore::open(&config.data_dir.join("meta.db")).await?;
        let auth = Arc::new(Auth::new(config, meta.clone())?);
        let initial_admin_password = auth.create_initial_admin(&config.data_dir).await?;
        let limits = RegistryLimits {
            max_manifest_bytes: config.limits.max_manifest_bytes,
            delete_enabled: config.delete_enabled,
        };
        let registry = Arc::new(Registry::new(blobs, meta, limits));
        let router = api::router(api::AppState {
            registry: registry.clone(),
            auth: auth.clone(),
        });
        Ok(App {
            registry,
            auth,
            router,
            initial_admin_password,
        })
    }
}
