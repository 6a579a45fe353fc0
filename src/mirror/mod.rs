//! Pull-through mirrors: berth as the one registry a cluster's nodes
//! need, caching images of Docker Hub, quay.io, ghcr.io or any other
//! registry beside the repositories pushed to it.
//!
//! A mirror is a source of content for [`crate::core`], not a storage
//! backend. Each has a namespace (`docker.io`) and keeps what it fetched
//! in ordinary repositories under it (`docker.io/library/nginx`), its rows
//! marked as the mirror's, so a cached pull is a local pull. What it lacks
//! it fetches through [`upstream::Upstream`]; concurrent requests for the
//! same thing share one fetch ([`flights`]).
//!
//! - [`route`]: which requests a mirror answers, and under which names.
//! - [`pull`]: tags revalidated with a HEAD after `tag_ttl_seconds`,
//!   content by digest never fetched twice, stale tags served when the
//!   upstream fails.
//! - [`usage`]: hits, misses and last pulls, written in batches; the size
//!   cap evicts by them.

pub mod flights;
pub mod pull;
pub mod route;
pub mod upstream;
pub mod usage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::{Config, MirrorConfig, validate_mirrors};
use crate::core::{Registry, RegistryError, Result};
use crate::meta::MetaStore;

pub use pull::Pulled;
pub use route::Route;

/// How often stored mirrors are checked for changes made elsewhere, and
/// noted pulls written.
const POLL: Duration = Duration::from_secs(2);

/// One mirror: its settings, its upstream, and what is in flight.
pub struct Mirror {
    pub config: MirrorConfig,
    /// Whether the config file defines it (the admin API cannot change it).
    pub from_config: bool,
    upstream: upstream::Upstream,
    /// Tag checks and manifest fetches in flight, by repository and
    /// reference.
    manifests: flights::Flights<std::result::Result<pull::TagAnswer, pull::Failure>>,
    /// Tags this process confirmed, and when: trusted for the tag TTL
    /// without asking the metadata store.
    checked: Mutex<HashMap<(String, String), Instant>>,
    /// Set while an eviction runs; another is asked for with `evict_again`.
    evicting: AtomicBool,
    evict_again: AtomicBool,
}

impl Mirror {
    fn new(config: MirrorConfig, from_config: bool) -> anyhow::Result<Mirror> {
        let upstream = upstream::Upstream::new(
            &config.upstream,
            &config.username,
            &config.password,
            Duration::from_secs(config.timeout_seconds),
        )?;
        crate::metrics::mirror_started(&config.namespace);
        Ok(Mirror {
            config,
            from_config,
            upstream,
            manifests: Default::default(),
            checked: Mutex::new(HashMap::new()),
            evicting: AtomicBool::new(false),
            evict_again: AtomicBool::new(false),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    /// Whether the upstream is Docker Hub, whose one-part names
    /// (`nginx`) mean `library/<name>`.
    pub fn is_docker_hub(&self) -> bool {
        let host = self
            .config
            .upstream
            .split_once("://")
            .map_or("", |(_, rest)| rest)
            .trim_end_matches('/');
        self.config.namespace == "docker.io"
            || matches!(
                host,
                "registry-1.docker.io"
                    | "index.docker.io"
                    | "docker.io"
                    | "registry.hub.docker.com"
            )
    }

    /// Keeps the mirror under its cap: evicts in the background, one run
    /// at a time (a request during a run makes it go round again).
    fn evict_soon(self: &Arc<Self>, registry: Arc<Registry>, uses: Arc<usage::UseLog>) {
        let max = self.config.max_bytes;
        if max == 0 {
            return;
        }
        self.evict_again.store(true, Ordering::SeqCst);
        if self.evicting.swap(true, Ordering::SeqCst) {
            return;
        }
        let mirror = self.clone();
        tokio::spawn(async move {
            while mirror.evict_again.swap(false, Ordering::SeqCst) {
                // Recent pulls first, so eviction sees what is in use.
                if let Err(e) = uses.flush(&registry).await {
                    tracing::warn!(error = %e, "recording mirror pulls");
                }
                if let Err(e) = registry.evict_cached(mirror.namespace(), max).await {
                    tracing::warn!(mirror = mirror.namespace(), error = %e, "evicting cached content");
                }
            }
            mirror.evicting.store(false, Ordering::SeqCst);
            // A request between the last round and the flag's reset.
            if mirror.evict_again.load(Ordering::SeqCst) {
                mirror.evict_soon(registry, uses);
            }
        });
    }
}

/// Every mirror: those of the config file, fixed until restart, and those
/// made through the admin API, kept in the metadata store.
pub struct Mirrors {
    registry: Arc<Registry>,
    meta: MetaStore,
    from_config: Vec<MirrorConfig>,
    current: RwLock<Arc<Vec<Arc<Mirror>>>>,
    blobs: Arc<flights::BlobFlights>,
    uses: Arc<usage::UseLog>,
}

impl Mirrors {
    /// The mirrors of `config` and of the store.
    pub async fn new(config: &Config, registry: Arc<Registry>, meta: MetaStore) -> Result<Mirrors> {
        let mirrors = Mirrors {
            registry,
            meta,
            from_config: config.mirrors.clone(),
            current: RwLock::new(Arc::new(Vec::new())),
            blobs: Default::default(),
            uses: Default::default(),
        };
        mirrors.reload().await?;
        Ok(mirrors)
    }

    /// The mirrors now, by namespace.
    pub fn all(&self) -> Arc<Vec<Arc<Mirror>>> {
        self.current.read().expect("mirrors").clone()
    }

    pub fn get(&self, namespace: &str) -> Option<Arc<Mirror>> {
        self.all()
            .iter()
            .find(|m| m.namespace() == namespace)
            .cloned()
    }

    pub fn uses(&self) -> &usage::UseLog {
        &self.uses
    }

    /// The stored mirrors' specs, as the store has them.
    async fn stored(&self) -> Result<Vec<MirrorConfig>> {
        self.meta
            .mirror_specs()
            .await?
            .into_iter()
            .map(|row| {
                serde_json::from_str(&row.spec).map_err(|e| {
                    RegistryError::Internal(format!("stored mirror {}: {e}", row.namespace))
                })
            })
            .collect()
    }

    /// Rebuilds the set from the config and the store. A mirror whose
    /// settings did not change is kept, with its tokens and flights.
    pub async fn reload(&self) -> Result<()> {
        let stored = self.stored().await?;
        let before = self.all();
        let mut next = Vec::new();
        let specs = self
            .from_config
            .iter()
            .map(|c| (c.clone(), true))
            .chain(stored.into_iter().map(|c| (c, false)));
        for (config, from_config) in specs {
            if next
                .iter()
                .any(|m: &Arc<Mirror>| m.namespace() == config.namespace)
            {
                // The config file's wins over a stored one of its name.
                continue;
            }
            let same = before.iter().find(|m| {
                m.from_config == from_config
                    && serde_json::to_value(&m.config).ok() == serde_json::to_value(&config).ok()
            });
            let mirror = match same {
                Some(m) => m.clone(),
                None => Arc::new(
                    Mirror::new(config, from_config)
                        .map_err(|e| RegistryError::Internal(format!("mirror: {e:#}")))?,
                ),
            };
            next.push(mirror);
        }
        next.sort_by(|a, b| a.namespace().cmp(b.namespace()));
        *self.current.write().expect("mirrors") = Arc::new(next);
        Ok(())
    }

    /// Checks that `candidate` (replacing the mirror of its namespace, if
    /// any) fits with the others.
    fn check_with_others(&self, candidate: &MirrorConfig) -> Result<()> {
        candidate.validate().map_err(RegistryError::Invalid)?;
        let mut all: Vec<MirrorConfig> = self
            .all()
            .iter()
            .filter(|m| m.namespace() != candidate.namespace)
            .map(|m| m.config.clone())
            .collect();
        all.push(candidate.clone());
        validate_mirrors(&all).map_err(RegistryError::Invalid)
    }

    /// Creates a mirror through the admin API.
    pub async fn create(&self, config: MirrorConfig) -> Result<Arc<Mirror>> {
        if self.get(&config.namespace).is_some() {
            return Err(RegistryError::Conflict(format!(
                "a mirror of namespace {} exists",
                config.namespace
            )));
        }
        self.check_with_others(&config)?;
        let spec =
            serde_json::to_string(&config).map_err(|e| RegistryError::Internal(e.to_string()))?;
        if !self.meta.insert_mirror(&config.namespace, &spec).await? {
            return Err(RegistryError::Conflict(format!(
                "a mirror of namespace {} exists",
                config.namespace
            )));
        }
        self.reload().await?;
        self.get(&config.namespace)
            .ok_or_else(|| RegistryError::Internal("the new mirror vanished".into()))
    }

    /// Replaces a stored mirror's settings. An empty password keeps the
    /// one stored (the API never shows it).
    pub async fn update(&self, mut config: MirrorConfig) -> Result<Arc<Mirror>> {
        let current = self.stored_mirror(&config.namespace)?;
        if config.password.is_empty() && config.username == current.config.username {
            config.password = current.config.password.clone();
        }
        self.check_with_others(&config)?;
        let spec =
            serde_json::to_string(&config).map_err(|e| RegistryError::Internal(e.to_string()))?;
        if !self.meta.update_mirror(&config.namespace, &spec).await? {
            return Err(RegistryError::NotFound(format!(
                "no mirror of namespace {}",
                config.namespace
            )));
        }
        self.reload().await?;
        self.get(&config.namespace)
            .ok_or_else(|| RegistryError::Internal("the changed mirror vanished".into()))
    }

    /// Deletes a stored mirror with everything it cached.
    pub async fn delete(&self, namespace: &str) -> Result<()> {
        self.stored_mirror(namespace)?;
        if !self.meta.delete_mirror(namespace).await? {
            return Err(RegistryError::NotFound(format!(
                "no mirror of namespace {namespace}"
            )));
        }
        self.reload().await?;
        for row in self.meta.mirror_repositories(namespace).await? {
            let repo = row.repository.parse()?;
            let origin = crate::core::event::Origin {
                actor: Some("berth:mirror".into()),
                ..Default::default()
            };
            match self.registry.delete_repository(&repo, &origin).await {
                Ok(()) | Err(RegistryError::NameUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The mirror of `namespace` if the store (not the config) has it.
    fn stored_mirror(&self, namespace: &str) -> Result<Arc<Mirror>> {
        match self.get(namespace) {
            Some(m) if m.from_config => Err(RegistryError::Conflict(format!(
                "mirror {namespace} is defined in the config file; change it there"
            ))),
            Some(m) => Ok(m),
            None => Err(RegistryError::NotFound(format!(
                "no mirror of namespace {namespace}"
            ))),
        }
    }

    /// Writes noted pulls now and then, and follows mirrors changed
    /// through another replica's admin API. Runs until the process ends.
    pub async fn run_workers(&self) {
        let mut seen = self.meta.mirrors_version().await.ok();
        loop {
            tokio::time::sleep(POLL).await;
            if let Err(e) = self.uses.flush(&self.registry).await {
                tracing::warn!(error = %e, "recording mirror pulls");
            }
            match self.meta.mirrors_version().await {
                Ok(version) if Some(version) != seen => match self.reload().await {
                    Ok(()) => seen = Some(version),
                    Err(e) => tracing::warn!(error = %e, "reloading mirrors"),
                },
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the mirrors' version"),
            }
        }
    }
}
