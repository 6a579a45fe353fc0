//! berth: a self-hosted OCI container registry.
//!
//! - [`core`]: registry logic (names, uploads, manifests), no HTTP.
//! - [`storage`]: `BlobStore`, the bytes.
//! - [`meta`]: `MetaStore`, what exists.
//! - [`api`]: HTTP, translating requests to core calls.

pub mod api;
pub mod config;
pub mod core;
pub mod meta;
pub mod storage;

use std::sync::Arc;

use crate::config::Config;
use crate::core::{Registry, RegistryLimits};
use crate::meta::MetaStore;
use crate::storage::BlobStore;

/// A registry ready to serve: the core and the HTTP router over it.
pub struct App {
    pub registry: Arc<Registry>,
    pub router: axum::Router,
}

impl App {
    pub async fn build(config: &Config) -> anyhow::Result<App> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let blobs = BlobStore::open(&config.data_dir)?;
        let meta = MetaStore::open(&config.data_dir.join("meta.db")).await?;
        let limits = RegistryLimits {
            max_manifest_bytes: config.limits.max_manifest_bytes,
            delete_enabled: config.delete_enabled,
        };
        let registry = Arc::new(Registry::new(blobs, meta, limits));
        let router = api::router(registry.clone());
        Ok(App { registry, router })
    }
}
