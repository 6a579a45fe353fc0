//! berth: a self-hosted OCI container registry.
//!
//! - [`core`]: registry logic (names, uploads, manifests), no HTTP.
//! - [`storage`]: `BlobStore`, the bytes.
//! - [`meta`]: `MetaStore`, what exists.
//! - [`auth`]: accounts, grants, tokens: who may do what.
//! - [`api`]: HTTP, translating requests to core calls.
//! - [`metrics`]: what berth counts, in Prometheus's text format.
//! - [`mirror`]: pull-through caches of other registries.
//! - [`signature`]: cosign signature verification and pull policies.
//! - [`server`]: serving the router, within timeouts and a connection cap.
//! - [`ui`]: the web UI, pages rendered from what the admin API reads.
//! - [`settings`]: repository settings, shared by the admin API and the UI.

pub mod api;
pub mod auth;
pub mod config;
pub mod core;
pub mod deploy;
pub mod events;
pub mod gc;
pub mod meta;
pub mod metrics;
pub mod mirror;
pub mod server;
pub mod settings;
pub mod signature;
pub mod sinks;
pub mod storage;
pub mod ui;

use std::sync::Arc;

use crate::auth::Auth;
use crate::config::Config;
use crate::core::{Registry, RegistryOptions};
use crate::meta::MetaStore;
use crate::storage::BlobStore;

/// A registry ready to serve: the core and the HTTP router over it.
pub struct App {
    pub registry: Arc<Registry>,
    pub meta: MetaStore,
    pub auth: Arc<Auth>,
    pub sinks: Arc<sinks::SinkCatalog>,
    pub gc: Arc<gc::GarbageCollector>,
    pub mirrors: Arc<mirror::Mirrors>,
    pub signatures: Arc<signature::Signatures>,
    pub router: axum::Router,
    /// The first admin's password, when this start created the account.
    pub initial_admin_password: Option<String>,
}

impl App {
    pub async fn build(config: &Config) -> anyhow::Result<App> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let blobs = BlobStore::from_config(config)?;
        let meta = MetaStore::open(&config.database.location(&config.data_dir)).await?;
        let auth = Arc::new(Auth::new(config, meta.clone())?);
        let initial_admin_password = auth
            .create_initial_admin(&config.data_dir, &config.auth.initial_admin_password_file)
            .await?;
        let limits = RegistryOptions {
            max_manifest_bytes: config.limits.max_manifest_bytes,
            delete_enabled: config.delete_enabled,
            record_pulls: config.events.pulls,
            disk: Some(crate::storage::space::DiskSpace::new(
                &config.data_dir,
                config.storage.min_free_bytes,
            )),
        };
        let registry = Arc::new(Registry::new(blobs, meta.clone(), limits));
        let signatures =
            Arc::new(signature::Signatures::new(config, registry.clone(), meta.clone()).await?);
        let sinks = Arc::new(sinks::SinkCatalog::new(
            config,
            meta.clone(),
            signatures.clone(),
        ));
        let gc = Arc::new(gc::GarbageCollector::new(
            registry.clone(),
            meta.clone(),
            config.gc.clone(),
        ));
        let mirrors = Arc::new(mirror::Mirrors::new(config, registry.clone(), meta.clone()).await?);
        let router = api::router(api::AppState {
            registry: registry.clone(),
            auth: auth.clone(),
            meta: meta.clone(),
            sinks: sinks.clone(),
            gc: gc.clone(),
            mirrors: mirrors.clone(),
            signatures: signatures.clone(),
            metrics: api::metrics::MetricsPlace {
                on_main_listener: config.metrics.listen_addr()?.is_none(),
            },
            sessions: Arc::default(),
        });
        Ok(App {
            registry,
            meta,
            auth,
            sinks,
            gc,
            mirrors,
            signatures,
            router,
            initial_admin_password,
        })
    }
}

impl App {
    /// Starts the background workers: event delivery to webhooks and
    /// deploy rules (and the rollouts that were being watched at the last
    /// stop), and the writer of pull times. `addr` is where this instance
    /// serves, as events name it.
    pub async fn start_workers(&self, config: &Config, addr: &str) -> anyhow::Result<()> {
        use crate::events::outbox::{Dispatcher, RetryPolicy};
        use std::time::Duration;

        self.sinks.start(addr).await?;
        let policy = RetryPolicy {
            first_backoff: Duration::from_secs(config.events.first_backoff_seconds),
            max_backoff: Duration::from_secs(config.events.max_backoff_seconds),
            give_up_after: Duration::from_secs(config.events.give_up_after_seconds),
        };
        Dispatcher::new(
            self.meta.clone(),
            self.sinks.set(),
            policy,
            self.registry.events_written(),
            &format!("{}/{addr}", host_name()),
        )
        .spawn();
        self.gc.spawn_timer();
        let sinks = self.sinks.clone();
        tokio::spawn(async move { sinks.follow_store().await });
        let registry = self.registry.clone();
        tokio::spawn(async move { registry.follow_cache_epoch().await });
        let mirrors = self.mirrors.clone();
        tokio::spawn(async move { mirrors.run_workers().await });
        let signatures = self.signatures.clone();
        tokio::spawn(async move { signatures.follow_store().await });
        let registry = self.registry.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if let Err(e) = registry.flush_pulls().await {
                    tracing::warn!(error = %e, "recording pull times");
                }
                release_free_memory();
            }
        });
        Ok(())
    }
}

/// Makes ring the process's TLS crypto provider, the one linked in. TLS
/// clients that take the process's provider (the S3 client's) need it
/// installed; calling this again does nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Gives the pages malloc holds free back to the system, so that memory
/// a burst of work took does not stay with an idle berth.
fn release_free_memory() {
    // SAFETY: malloc_trim only returns free pages of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This machine's name, as the kernel knows it.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match ok {
        true => String::from_utf8_lossy(&buf[..end]).into_owned(),
        false => "localhost".into(),
    }
}
