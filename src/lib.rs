//! berth: a self-hosted OCI container registry.
//!
//! - [`core`]: registry logic (names, uploads, manifests), no HTTP.
//! - [`storage`]: `BlobStore`, the bytes.
//! - [`meta`]: `MetaStore`, what exists.
//! - [`auth`]: accounts, grants, tokens: who may do what.
//! - [`api`]: HTTP, translating requests to core calls.
//! - [`metrics`]: what berth counts, in Prometheus's text format.

pub mod api;
pub mod auth;
pub mod config;
pub mod core;
pub mod deploy;
pub mod events;
pub mod meta;
pub mod metrics;
pub mod storage;

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
        let limits = RegistryOptions {
            max_manifest_bytes: config.limits.max_manifest_bytes,
            delete_enabled: config.delete_enabled,
            record_pulls: config.events.pulls,
        };
        let registry = Arc::new(Registry::new(blobs, meta.clone(), limits));
        let router = api::router(api::AppState {
            registry: registry.clone(),
            auth: auth.clone(),
            metrics: api::metrics::MetricsPlace {
                on_main_listener: config.metrics.listen_addr()?.is_none(),
            },
        });
        Ok(App {
            registry,
            meta,
            auth,
            router,
            initial_admin_password,
        })
    }
}

impl App {
    /// Starts the background workers: event delivery to webhooks and
    /// deploy rules, and the rollouts that were being watched at the last
    /// stop. `addr` is where this instance serves, as events name it.
    pub async fn start_workers(&self, config: &Config, addr: &str) -> anyhow::Result<()> {
        use crate::events::EventFilter;
        use crate::events::envelope::Source;
        use crate::events::outbox::{Dispatcher, RetryPolicy, Sink};
        use crate::events::webhook::{Webhook, WebhookSettings};
        use std::time::Duration;

        let source = Source {
            addr: addr.to_owned(),
            instance_id: uuid::Uuid::new_v4().to_string(),
        };
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        for w in &config.events.webhooks {
            let headers: Vec<(String, String)> = w.headers.clone().into_iter().collect();
            let webhook = Webhook::new(
                WebhookSettings {
                    name: &w.name,
                    url: &w.url,
                    format: &w.format,
                    secret: &w.secret,
                    headers: &headers,
                    filter: EventFilter::new(&w.actions, &w.repositories)?,
                    timeout: Duration::from_secs(w.timeout_seconds.max(1)),
                },
                source.clone(),
            )?;
            sinks.push(Arc::new(webhook));
        }
        if !config.deploy.rules.is_empty() {
            let cluster = Arc::new(deploy::Cluster::connect(&config.deploy.kubeconfig).await?);
            for rule in &config.deploy.rules {
                let sink = deploy::RuleSink::new(
                    deploy::rule::DeployRule::from_config(rule)?,
                    cluster.clone(),
                    self.meta.clone(),
                    &config.deploy.registry_host,
                );
                sink.resume().await?;
                sinks.push(Arc::new(sink));
            }
        }
        let policy = RetryPolicy {
            first_backoff: Duration::from_secs(config.events.first_backoff_seconds),
            max_backoff: Duration::from_secs(config.events.max_backoff_seconds),
            give_up_after: Duration::from_secs(config.events.give_up_after_seconds),
        };
        Dispatcher::new(
            self.meta.clone(),
            sinks,
            policy,
            self.registry.events_written(),
        )
        .spawn();
        Ok(())
    }
}
