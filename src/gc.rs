//! Runs garbage collection ([`crate::core::gc`]): on a timer, and when an
//! admin asks. One run at a time, across every process sharing the
//! metadata; reports are kept in the metadata store.

use std::sync::Arc;
use std::time::Duration;

use crate::config::GcConfig;
use crate::core::gc::GcReport;
use crate::core::{Registry, RegistryError, Result};
use crate::meta::MetaStore;

pub struct GarbageCollector {
    registry: Arc<Registry>,
    meta: MetaStore,
    config: GcConfig,
}

impl GarbageCollector {
    pub fn new(registry: Arc<Registry>, meta: MetaStore, config: GcConfig) -> GarbageCollector {
        GarbageCollector {
            registry,
            meta,
            config,
        }
    }

    /// Runs now, unless a run is in progress here or elsewhere (then
    /// `Conflict`).
    pub async fn run(&self, dry_run: bool) -> Result<GcReport> {
        self.registry
            .collect_garbage(self.config.options(dry_run))
            .await
    }

    /// Starts a run in the background; `Conflict` if one is in progress,
    /// here or in another process sharing the metadata. The run holds its
    /// lease before this returns, so it shows as running at once.
    pub async fn start(self: &Arc<Self>, dry_run: bool) -> Result<()> {
        let lease = self.registry.take_gc_lease().await.map_err(|e| match e {
            RegistryError::Conflict(_) => {
                RegistryError::Conflict("garbage collection is running already".into())
            }
            other => other,
        })?;
        let gc = self.clone();
        tokio::spawn(async move {
            let options = gc.config.options(dry_run);
            if let Err(e) = gc.registry.collect_garbage_holding(lease, options).await {
                tracing::warn!(error = %e, "garbage collection");
            }
        });
        Ok(())
    }

    /// Whether a collection runs, in this process or any other sharing
    /// the metadata (a replica, `berth gc`).
    pub async fn is_running(&self) -> Result<bool> {
        self.meta.lease_taken(crate::core::gc::GC_LEASE).await
    }

    /// The newest run's report, from this process or any other.
    pub async fn last_report(&self) -> Result<Option<GcReport>> {
        Ok(self
            .meta
            .last_gc_report()
            .await?
            .and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// Runs every `interval_seconds`, if set.
    pub fn spawn_timer(self: &Arc<Self>) {
        if self.config.interval_seconds == 0 {
            return;
        }
        let gc = self.clone();
        let every = Duration::from_secs(gc.config.interval_seconds);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = gc.run(false).await {
                    tracing::warn!(error = %e, "scheduled garbage collection");
                }
            }
        });
    }
}
