//! The webhooks and deploy rules that events flow to: those of the config
//! file, fixed until restart, and those made through the admin API, kept in
//! the metadata store. Each change rebuilds the [`SinkSet`] the dispatcher
//! follows; a sink whose spec did not change keeps its delivery loop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, DeployRuleConfig, WebhookConfig};
use crate::core::{RegistryError, Result};
use crate::deploy::{Cluster, RuleSink, rule::DeployRule};
use crate::events::EventFilter;
use crate::events::envelope::Source;
use crate::events::outbox::{Sink, SinkSet};
use crate::events::webhook::{Webhook, WebhookSettings};
use crate::meta::MetaStore;
use crate::signature::Signatures;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Webhook,
    DeployRule,
}

impl SinkKind {
    fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::DeployRule => "deploy_rule",
        }
    }

    /// The name deliveries of this sink are recorded under.
    pub fn sink_name(self, name: &str) -> String {
        match self {
            SinkKind::Webhook => format!("webhook:{name}"),
            SinkKind::DeployRule => format!("deploy:{name}"),
        }
    }
}

/// A webhook or deploy rule as the admin API shows it.
#[derive(Clone, Debug)]
pub struct SinkEntry {
    pub name: String,
    pub kind: SinkKind,
    /// True if the config file defines it (the API cannot change it).
    pub from_config: bool,
    /// The fields of the config section, as JSON; a webhook's secret is
    /// never shown.
    pub spec: serde_json::Value,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// A sink and the spec (JSON) it was built from.
type BuiltSink = (String, Arc<dyn Sink>);

/// How often stored webhooks and rules are checked for changes made
/// elsewhere.
const STORE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

pub struct SinkCatalog {
    config_webhooks: Vec<WebhookConfig>,
    config_rules: Vec<DeployRuleConfig>,
    kubeconfig: PathBuf,
    registry_host: String,
    meta: MetaStore,
    signatures: Arc<Signatures>,
    source: RwLock<Source>,
    cluster: tokio::sync::OnceCell<Arc<Cluster>>,
    set: Arc<SinkSet>,
    /// Built sinks by sink name.
    built: tokio::sync::Mutex<HashMap<String, BuiltSink>>,
}

impl SinkCatalog {
    pub fn new(config: &Config, meta: MetaStore, signatures: Arc<Signatures>) -> SinkCatalog {
        SinkCatalog {
            config_webhooks: config.events.webhooks.clone(),
            config_rules: config.deploy.rules.clone(),
            kubeconfig: config.deploy.kubeconfig.clone(),
            registry_host: config.deploy.registry_host.clone(),
            meta,
            signatures,
            source: RwLock::new(Source {
                addr: config.listen.to_string(),
                instance_id: uuid::Uuid::new_v4().to_string(),
            }),
            cluster: tokio::sync::OnceCell::new(),
            set: Arc::new(SinkSet::default()),
            built: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The set the dispatcher follows.
    pub fn set(&self) -> Arc<SinkSet> {
        self.set.clone()
    }

    /// Builds every sink for the first time, as an instance serving at
    /// `addr`. (The delivery loop that takes a sink resumes its rollouts.)
    pub async fn start(&self, addr: &str) -> anyhow::Result<()> {
        self.source.write().expect("source").addr = addr.to_owned();
        self.reload().await?;
        Ok(())
    }

    /// Follows webhooks and rules changed through another replica's admin
    /// API: rebuilds the set whenever the stored ones change. Runs until
    /// the process ends.
    pub async fn follow_store(&self) {
        let mut seen = self.meta.sinks_version().await.ok();
        loop {
            tokio::time::sleep(STORE_POLL).await;
            match self.meta.sinks_version().await {
                Ok(version) if Some(version) != seen => {
                    if let Err(e) = self.reload().await {
                        tracing::warn!(error = %e, "reloading webhooks and rules");
                        continue;
                    }
                    seen = Some(version);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading webhooks and rules"),
            }
        }
    }

    /// Rebuilds the sink set from the config and the store.
    pub async fn reload(&self) -> Result<()> {
        let mut specs: Vec<(SinkKind, String, String)> = Vec::new();
        for w in &self.config_webhooks {
            specs.push((SinkKind::Webhook, w.name.clone(), to_json(w)));
        }
        for r in &self.config_rules {
            specs.push((SinkKind::DeployRule, r.name.clone(), to_json(r)));
        }
        for row in self.meta.sink_rows().await? {
            let kind = match row.kind.as_str() {
                "webhook" => SinkKind::Webhook,
                _ => SinkKind::DeployRule,
            };
            specs.push((kind, row.name, row.spec));
        }
        let mut built = self.built.lock().await;
        let mut next = HashMap::new();
        for (kind, name, spec) in specs {
            let sink_name = kind.sink_name(&name);
            let sink = match built.remove(&sink_name) {
                Some((old_spec, sink)) if old_spec == spec => sink,
                _ => match self.build(kind, &spec).await {
                    Ok(sink) => sink,
                    Err(e) => {
                        // One broken stored sink must not stop the others.
                        tracing::error!(sink = %sink_name, error = %e, "cannot build sink");
                        continue;
                    }
                },
            };
            next.insert(sink_name, (spec, sink));
        }
        *built = next;
        self.set
            .replace(built.values().map(|(_, s)| s.clone()).collect());
        Ok(())
    }

    async fn cluster(&self) -> Result<Arc<Cluster>> {
        self.cluster
            .get_or_try_init(|| async {
                Cluster::connect(&self.kubeconfig)
                    .await
                    .map(Arc::new)
                    .map_err(|e| {
                        RegistryError::Invalid(format!("cannot reach the Kubernetes API: {e:#}"))
                    })
            })
            .await
            .cloned()
    }

    /// A sink from its JSON spec; errors say what is wrong with it.
    async fn build(&self, kind: SinkKind, spec: &str) -> Result<Arc<dyn Sink>> {
        let invalid = |e: String| RegistryError::Invalid(e);
        match kind {
            SinkKind::Webhook => {
                let w: WebhookConfig =
                    serde_json::from_str(spec).map_err(|e| invalid(format!("webhook: {e}")))?;
                if w.timeout_seconds > crate::config::MAX_WEBHOOK_TIMEOUT {
                    return Err(invalid(format!(
                        "webhook {}: timeout_seconds is at most {}",
                        w.name,
                        crate::config::MAX_WEBHOOK_TIMEOUT
                    )));
                }
                let headers: Vec<(String, String)> = w.headers.clone().into_iter().collect();
                let filter = EventFilter::new(&w.actions, &w.repositories)
                    .map_err(|e| invalid(format!("{e:#}")))?;
                let source = self.source.read().expect("source").clone();
                let webhook = Webhook::new(
                    WebhookSettings {
                        name: &w.name,
                        url: &w.url,
                        format: &w.format,
                        secret: &w.secret,
                        headers: &headers,
                        filter,
                        timeout: Duration::from_secs(w.timeout_seconds.max(1)),
                    },
                    source,
                )
                .map_err(|e| invalid(format!("{e:#}")))?;
                Ok(Arc::new(webhook))
            }
            SinkKind::DeployRule => {
                let r: DeployRuleConfig =
                    serde_json::from_str(spec).map_err(|e| invalid(format!("deploy rule: {e}")))?;
                let rule = DeployRule::from_config(&r).map_err(|e| invalid(format!("{e:#}")))?;
                let cluster = self.cluster().await?;
                Ok(Arc::new(
                    RuleSink::new(rule, cluster, self.meta.clone(), &self.registry_host)
                        .with_signatures(self.signatures.clone()),
                ))
            }
        }
    }

    /// Every webhook or deploy rule, config file first.
    pub async fn list(&self, kind: SinkKind) -> Result<Vec<SinkEntry>> {
        let mut entries = Vec::new();
        let from_config: Vec<(String, serde_json::Value)> = match kind {
            SinkKind::Webhook => self
                .config_webhooks
                .iter()
                .map(|w| (w.name.clone(), serde_json::to_value(w).unwrap_or_default()))
                .collect(),
            SinkKind::DeployRule => self
                .config_rules
                .iter()
                .map(|r| (r.name.clone(), serde_json::to_value(r).unwrap_or_default()))
                .collect(),
        };
        for (name, spec) in from_config {
            entries.push(SinkEntry {
                name,
                kind,
                from_config: true,
                spec: redact(spec),
                created_at: None,
                updated_at: None,
            });
        }
        for row in self.meta.sink_rows().await? {
            if row.kind != kind.as_str() {
                continue;
            }
            entries.push(SinkEntry {
                name: row.name,
                kind,
                from_config: false,
                spec: redact(serde_json::from_str(&row.spec).unwrap_or_default()),
                created_at: Some(row.created_at),
                updated_at: Some(row.updated_at),
            });
        }
        Ok(entries)
    }

    pub async fn get(&self, kind: SinkKind, name: &str) -> Result<SinkEntry> {
        self.list(kind)
            .await?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| RegistryError::NotFound(format!("no {} named {name:?}", kind.as_str())))
    }

    /// Rolls the targets of the deploy rule `rule` back to the image each
    /// ran before its last deploy, or onto the digest `to`; returns what
    /// was done, a line per workload.
    pub async fn rollback(&self, rule: &str, to: Option<&str>) -> Result<Vec<String>> {
        if let Some(digest) = to {
            digest.parse::<crate::core::names::Digest>()?;
        }
        let entry = self.get(SinkKind::DeployRule, rule).await?;
        let config: DeployRuleConfig = serde_json::from_value(entry.spec)
            .map_err(|e| RegistryError::Internal(format!("deploy rule {rule}: {e}")))?;
        let rule = DeployRule::from_config(&config)
            .map_err(|e| RegistryError::Invalid(format!("{e:#}")))?;
        let sink = RuleSink::new(
            rule,
            self.cluster().await?,
            self.meta.clone(),
            &self.registry_host,
        );
        sink.rollback(to).await.map_err(RegistryError::Conflict)
    }

    fn in_config(&self, kind: SinkKind, name: &str) -> bool {
        match kind {
            SinkKind::Webhook => self.config_webhooks.iter().any(|w| w.name == name),
            SinkKind::DeployRule => self.config_rules.iter().any(|r| r.name == name),
        }
    }

    /// Checks a spec and returns its name and canonical JSON.
    async fn checked_spec(
        &self,
        kind: SinkKind,
        spec: &serde_json::Value,
    ) -> Result<(String, String)> {
        let json = spec.to_string();
        self.build(kind, &json).await?;
        let name = spec["name"].as_str().unwrap_or_default().to_owned();
        if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
            return Err(RegistryError::Invalid(
                "name must be 1 to 128 printable characters".into(),
            ));
        }
        Ok((name, json))
    }

    pub async fn create(&self, kind: SinkKind, spec: &serde_json::Value) -> Result<SinkEntry> {
        let (name, json) = self.checked_spec(kind, spec).await?;
        if self.in_config(kind, &name)
            || !self.meta.insert_sink(&name, kind.as_str(), &json).await?
        {
            return Err(RegistryError::Conflict(format!(
                "a {} named {name:?} exists",
                kind.as_str()
            )));
        }
        self.reload().await?;
        self.get(kind, &name).await
    }

    pub async fn update(
        &self,
        kind: SinkKind,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<SinkEntry> {
        self.check_owned(kind, name)?;
        let (spec_name, json) = self.checked_spec(kind, spec).await?;
        if spec_name != name {
            return Err(RegistryError::Invalid(format!(
                "the body names {spec_name:?}, the path {name:?}; a name cannot change"
            )));
        }
        if !self.meta.update_sink(name, kind.as_str(), &json).await? {
            return Err(RegistryError::NotFound(format!(
                "no {} named {name:?}",
                kind.as_str()
            )));
        }
        self.reload().await?;
        self.get(kind, name).await
    }

    pub async fn delete(&self, kind: SinkKind, name: &str) -> Result<()> {
        self.check_owned(kind, name)?;
        if !self.meta.delete_sink(name, kind.as_str()).await? {
            return Err(RegistryError::NotFound(format!(
                "no {} named {name:?}",
                kind.as_str()
            )));
        }
        self.reload().await
    }

    fn check_owned(&self, kind: SinkKind, name: &str) -> Result<()> {
        if self.in_config(kind, name) {
            return Err(RegistryError::Conflict(format!(
                "{} {name:?} is defined in the config file; change it there",
                kind.as_str()
            )));
        }
        Ok(())
    }

    /// Test-fires a sink: a webhook gets a `ping` event, a deploy rule
    /// reports what it would patch.
    pub async fn test(
        &self,
        kind: SinkKind,
        name: &str,
    ) -> Result<std::result::Result<String, String>> {
        self.get(kind, name).await?;
        let sink = self.set.find(&kind.sink_name(name)).ok_or_else(|| {
            RegistryError::Conflict(format!(
                "{} {name:?} could not be built; see the log",
                kind.as_str()
            ))
        })?;
        Ok(sink.test().await)
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn redact(mut spec: serde_json::Value) -> serde_json::Value {
    if let Some(secret) = spec.get_mut("secret")
        && secret.as_str().is_some_and(|s| !s.is_empty())
    {
        *secret = serde_json::Value::String("(set)".into());
    }
    spec
}
