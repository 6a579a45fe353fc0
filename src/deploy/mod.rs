//! The Kubernetes deployer: each deploy rule is an event sink. On a
//! matching push it patches the pod template of each target workload to
//! `<registry host>/<repo>@<digest>` (pinned, so a restart cannot pull
//! something else under the same tag), records the attempt, then watches
//! the rollout and records how it ended, rolling back if the rule asks.
//!
//! Workloads are handled as dynamic objects (`apps/v1` Deployment,
//! StatefulSet, DaemonSet) since all three keep their containers at
//! `spec.template.spec.containers` and report rollouts in `status`.

pub mod rule;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value, json};

use crate::core::event::Event;
use crate::deploy::rule::{
    DeployRule, Selector, Target, WorkloadKind, image_repository, tag_version,
};
use crate::events::outbox::Sink;
use crate::meta::{DeployRow, MetaStore, NewDeploy};
use crate::signature::{Signatures, Verdict};

/// The field manager berth's patches are recorded under.
pub const FIELD_MANAGER: &str = "berth";
/// Annotations berth leaves on a workload it rolled out.
pub const TAG_ANNOTATION: &str = "berth.dev/tag";
pub const DIGEST_ANNOTATION: &str = "berth.dev/digest";
/// Label on the smoke-test Jobs berth makes, naming their rule.
pub const RULE_LABEL: &str = "berth.dev/rule";
/// How often a rollout's status is read.
const ROLLOUT_POLL: Duration = Duration::from_secs(1);

/// How berth reaches the cluster.
pub struct Cluster {
    client: kube::Client,
}

impl Cluster {
    /// From a kubeconfig file, or (empty path) the in-cluster service
    /// account, falling back to `$KUBECONFIG` / `~/.kube/config`.
    pub async fn connect(kubeconfig: &std::path::Path) -> anyhow::Result<Cluster> {
        let config = if kubeconfig.as_os_str().is_empty() {
            kube::Config::infer().await?
        } else {
            let file = kube::config::Kubeconfig::read_from(kubeconfig)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", kubeconfig.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await?
        };
        Ok(Cluster {
            client: kube::Client::try_from(config)?,
        })
    }

    fn api(&self, kind: WorkloadKind, namespace: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("apps", "v1", kind.as_str());
        Api::namespaced_with(self.client.clone(), namespace, &ApiResource::from_gvk(&gvk))
    }
}

/// One deploy rule, as an event sink.
pub struct RuleSink {
    sink_name: String,
    rule: Arc<DeployRule>,
    cluster: Arc<Cluster>,
    meta: MetaStore,
    /// How kubelets name this registry; empty: as the pushing client did.
    registry_host: String,
    /// What checks signatures, for rules that require one.
    signatures: Option<Arc<Signatures>>,
}

/// What a rule that requires a signature does with a push now.
enum Gate {
    /// Signed: roll out.
    Go,
    /// The delivery's outcome, without rolling out: `Err` to look again
    /// later (still waiting), `Ok` when it ended (unsigned).
    Stop(Result<String, String>),
}

impl RuleSink {
    pub fn new(
        rule: DeployRule,
        cluster: Arc<Cluster>,
        meta: MetaStore,
        registry_host: &str,
    ) -> RuleSink {
        RuleSink {
            sink_name: format!("deploy:{}", rule.name),
            rule: Arc::new(rule),
            cluster,
            meta,
            registry_host: registry_host.to_owned(),
            signatures: None,
        }
    }

    /// Checks signatures with `signatures`, as a rule that requires one
    /// must.
    pub fn with_signatures(mut self, signatures: Arc<Signatures>) -> RuleSink {
        self.signatures = Some(signatures);
        self
    }

    /// Watches rollouts that were in progress when berth last stopped.
    pub async fn resume(&self) -> crate::core::Result<()> {
        for row in self.meta.rolling_deploys().await? {
            if row.rule != self.rule.name {
                continue;
            }
            let Some(kind) = WorkloadKind::parse(&row.kind) else {
                continue;
            };
            tokio::spawn(watch_rollout(
                self.cluster.clone(),
                self.meta.clone(),
                self.rule.clone(),
                kind,
                row,
                None,
            ));
        }
        Ok(())
    }

    async fn deploy(&self, event: &Event) -> Result<String, String> {
        let digest = event.digest.as_deref().ok_or("the event names no digest")?;
        let host = if self.registry_host.is_empty() {
            event
                .origin
                .host
                .as_deref()
                .ok_or("no registry host: set deploy.registry_host")?
        } else {
            &self.registry_host
        };
        let image = format!("{host}/{}@{digest}", event.repository);
        if !self.rule.require_signature.is_empty()
            && let Gate::Stop(outcome) = self.signature_gate(event, digest, &image).await
        {
            return outcome;
        }
        if let Some(template) = &self.rule.smoke_job
            && let Err(reason) = self.smoke_test(template, event, digest, &image).await
        {
            // The test ran and failed: a retry would only fail again.
            for target in &self.rule.targets {
                self.record_failure(event, target, &describe(target), &image, &reason)
                    .await;
            }
            return Ok(format!("not rolled out: {reason}"));
        }
        let mut done = Vec::new();
        let mut failures = Vec::new();
        for target in &self.rule.targets {
            match self.names(target).await {
                Ok(names) if names.is_empty() => {
                    failures.push(self.record_missing(event, target, &image).await)
                }
                Ok(names) => {
                    for name in names {
                        match self.deploy_one(event, target, &name, &image).await {
                            Ok(d) => done.push(d),
                            Err(e) => failures.push(e),
                        }
                    }
                }
                Err(e) => failures.push(
                    self.record_failure(event, target, &describe(target), &image, &e)
                        .await,
                ),
            }
        }
        if failures.is_empty() {
            Ok(done.join("; "))
        } else {
            Err(failures.join("; "))
        }
    }

    /// For a rule that requires a signature: whether the push is signed,
    /// still waits for its signature (recorded as `waiting_signature`), or
    /// waited `signature_wait` in vain (recorded as `unsigned`).
    async fn signature_gate(&self, event: &Event, digest: &str, image: &str) -> Gate {
        let keys = &self.rule.require_signature;
        let parsed = (
            event.repository.parse::<crate::core::names::RepoName>(),
            digest.parse::<crate::core::names::Digest>(),
        );
        let (repo, digest) = match parsed {
            (Ok(repo), Ok(digest)) => (repo, digest),
            _ => return Gate::Stop(Ok("the event names no valid image".into())),
        };
        let Some(signatures) = &self.signatures else {
            return Gate::Stop(Err("no signature verifier is set up".into()));
        };
        let verdict = match signatures.verdict(&repo, &digest, None, keys).await {
            Ok(verdict) => verdict,
            Err(e) => return Gate::Stop(Err(format!("checking the signature: {e}"))),
        };
        let waiting = match self.meta.waiting_deploys(event.seq, &self.rule.name).await {
            Ok(ids) => ids,
            Err(e) => return Gate::Stop(Err(e.to_string())),
        };
        let reason = match verdict.as_ref() {
            Verdict::Signed { key, signature } => {
                let message = format!("signed by {key} (signature {signature}); rolling out");
                for id in waiting {
                    if let Err(e) = self.meta.update_deploy(id, "signed", &message).await {
                        return Gate::Stop(Err(e.to_string()));
                    }
                }
                return Gate::Go;
            }
            Verdict::Attached => {
                return Gate::Stop(Ok(
                    "an artifact attached to an image: nothing to roll".into()
                ));
            }
            Verdict::Unsigned { reason } => reason,
        };
        let wait = self.rule.signature_wait;
        let waited = crate::meta::now_ms() - event.created_at;
        let expired = waited >= wait.as_millis() as i64;
        let (state, message) = match expired {
            true => (
                "unsigned",
                format!(
                    "no valid signature by {} within {}: {reason}",
                    keys.join(" or "),
                    humantime::format_duration(wait)
                ),
            ),
            false => (
                "waiting_signature",
                format!(
                    "waiting up to {} for a signature by {}: {reason}",
                    humantime::format_duration(wait),
                    keys.join(" or ")
                ),
            ),
        };
        if waiting.is_empty() {
            for target in &self.rule.targets {
                let row = NewDeploy {
                    event_seq: event.seq,
                    rule: &self.rule.name,
                    namespace: &target.namespace,
                    kind: target.kind.as_str(),
                    name: &describe(target),
                    container: target.container.as_deref().unwrap_or(""),
                    tag: event.tag.as_deref(),
                    old_image: None,
                    new_image: image,
                    state,
                    message: &message,
                };
                if let Err(e) = self.meta.insert_deploy(&row).await {
                    return Gate::Stop(Err(e.to_string()));
                }
            }
        } else if expired {
            for id in waiting {
                if let Err(e) = self.meta.update_deploy(id, state, &message).await {
                    return Gate::Stop(Err(e.to_string()));
                }
            }
        }
        if expired {
            tracing::warn!(rule = %self.rule.name, %image, %reason, "not rolled out: unsigned");
            Gate::Stop(Ok(format!("not rolled out: unsigned: {message}")))
        } else {
            Gate::Stop(Err(message))
        }
    }

    /// A push that may have brought a signature: the deliveries of its
    /// repository that wait for one are looked at again now.
    async fn signature_arrived(&self, event: &Event) -> Result<String, String> {
        let n = self
            .meta
            .hurry_deliveries(&self.sink_name, &event.repository)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "a possible signature: {n} waiting deliveries due now"
        ))
    }

    /// The workloads a target names.
    async fn names(&self, target: &Target) -> Result<Vec<String>, String> {
        match &target.selector {
            Selector::Name(name) => Ok(vec![name.clone()]),
            Selector::Labels(labels) => {
                let api = self.cluster.api(target.kind, &target.namespace);
                let list = api
                    .list(&ListParams::default().labels(labels))
                    .await
                    .map_err(|e| {
                        format!(
                            "listing {}s in {}: {e}",
                            target.kind.as_str(),
                            target.namespace
                        )
                    })?;
                Ok(list
                    .items
                    .into_iter()
                    .filter_map(|o| o.metadata.name)
                    .collect())
            }
        }
    }

    async fn record_missing(&self, event: &Event, target: &Target, image: &str) -> String {
        let message = format!("no {} matches {}", target.kind.as_str(), describe(target));
        self.record_failure(event, target, &describe(target), image, &message)
            .await
    }

    async fn record_failure(
        &self,
        event: &Event,
        target: &Target,
        name: &str,
        image: &str,
        message: &str,
    ) -> String {
        let row = NewDeploy {
            event_seq: event.seq,
            rule: &self.rule.name,
            namespace: &target.namespace,
            kind: target.kind.as_str(),
            name,
            container: target.container.as_deref().unwrap_or(""),
            tag: event.tag.as_deref(),
            old_image: None,
            new_image: image,
            state: "failed",
            message,
        };
        if let Err(e) = self.meta.insert_deploy(&row).await {
            tracing::error!(error = %e, "recording a deploy");
        }
        format!("{}/{name}: {message}", target.namespace)
    }

    async fn deploy_one(
        &self,
        event: &Event,
        target: &Target,
        name: &str,
        image: &str,
    ) -> Result<String, String> {
        let api = self.cluster.api(target.kind, &target.namespace);
        let object = match api.get(name).await {
            Ok(object) => object,
            Err(e) => {
                let message = format!("reading {} {name}: {e}", target.kind.as_str());
                return Err(self
                    .record_failure(event, target, name, image, &message)
                    .await);
            }
        };
        let containers = containers(&object.data);
        let chosen: Vec<&(String, String)> = containers
            .iter()
            .filter(|(c, current)| match &target.container {
                Some(wanted) => c == wanted,
                None => image_repository(current) == event.repository,
            })
            .collect();
        if chosen.is_empty() {
            let message = match &target.container {
                Some(c) => format!("{} {name} has no container {c:?}", target.kind.as_str()),
                None => format!(
                    "no container of {} {name} runs {}",
                    target.kind.as_str(),
                    event.repository
                ),
            };
            return Err(self
                .record_failure(event, target, name, image, &message)
                .await);
        }
        let container_names: Vec<&str> = chosen.iter().map(|(c, _)| c.as_str()).collect();
        let old_image = chosen[0].1.clone();
        let mut row = NewDeploy {
            event_seq: event.seq,
            rule: &self.rule.name,
            namespace: &target.namespace,
            kind: target.kind.as_str(),
            name,
            container: &container_names.join(","),
            tag: event.tag.as_deref(),
            old_image: Some(&old_image),
            new_image: image,
            state: "patching",
            message: "",
        };
        if let Some(reason) = self.skip_reason(event, target, name, &chosen, image).await {
            row.state = "skipped";
            row.message = &reason;
            self.meta
                .insert_deploy(&row)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(format!("{}/{name}: skipped: {reason}", target.namespace));
        }
        let id = self
            .meta
            .insert_deploy(&row)
            .await
            .map_err(|e| e.to_string())?;
        let patch = image_patch(
            &container_names,
            image,
            event.tag.as_deref(),
            event.digest.as_deref(),
        );
        let patched = match api
            .patch(name, &patch_params(), &Patch::Strategic(patch))
            .await
        {
            Ok(patched) => patched,
            Err(e) => {
                let message = format!("patching {} {name}: {e}", target.kind.as_str());
                let _ = self.meta.update_deploy(id, "failed", &message).await;
                return Err(format!("{}/{name}: {message}", target.namespace));
            }
        };
        let message = format!("patched to {image}; waiting for the rollout");
        self.meta
            .update_deploy(id, "rolling", &message)
            .await
            .map_err(|e| e.to_string())?;
        let row = DeployRow {
            id,
            event_seq: event.seq,
            rule: self.rule.name.clone(),
            namespace: target.namespace.clone(),
            kind: target.kind.as_str().to_owned(),
            name: name.to_owned(),
            container: container_names.join(","),
            tag: event.tag.clone(),
            old_image: Some(old_image),
            new_image: image.to_owned(),
            state: "rolling".into(),
            message,
            started_at: 0,
            finished_at: None,
        };
        tokio::spawn(watch_rollout(
            self.cluster.clone(),
            self.meta.clone(),
            self.rule.clone(),
            target.kind,
            row,
            patched.metadata.generation,
        ));
        Ok(format!("{}/{name}: patched", target.namespace))
    }

    /// Runs the rule's smoke-test Job for this push and waits for it.
    /// The Job's name derives from the rule and digest, so a retry after a
    /// restart finds the Job already made instead of making another.
    async fn smoke_test(
        &self,
        template: &Value,
        event: &Event,
        digest: &str,
        image: &str,
    ) -> Result<(), String> {
        let mut job = template.clone();
        let namespace = job["metadata"]["namespace"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| self.rule.targets.first().map(|t| t.namespace.clone()))
            .ok_or("the smoke-test Job has no namespace")?;
        let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
        let rule_part: String = self.rule.name.chars().take(30).collect();
        let name = format!("berth-{rule_part}-{}", &hex[..hex.len().min(12)]).to_lowercase();
        job["metadata"]["name"] = json!(name);
        job["metadata"]["namespace"] = json!(namespace);
        job["metadata"]["labels"][RULE_LABEL] = json!(self.rule.name);
        job["metadata"]["annotations"][TAG_ANNOTATION] = json!(event.tag);
        if let Some(containers) = job
            .pointer_mut("/spec/template/spec/containers")
            .and_then(Value::as_array_mut)
        {
            for c in containers.iter_mut().filter(|c| c["image"] == "$IMAGE") {
                c["image"] = json!(image);
            }
        }
        let gvk = GroupVersionKind::gvk("batch", "v1", "Job");
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.cluster.client.clone(),
            &namespace,
            &ApiResource::from_gvk(&gvk),
        );
        let object: DynamicObject =
            serde_json::from_value(job).map_err(|e| format!("the smoke-test Job: {e}"))?;
        let params = kube::api::PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&params, &object).await {
            Ok(_) => {}
            // Made by an earlier attempt at this same push.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(format!("creating smoke-test Job {namespace}/{name}: {e}")),
        }
        let deadline = Instant::now() + self.rule.timeout;
        loop {
            let job = api
                .get(&name)
                .await
                .map_err(|e| format!("reading smoke-test Job {namespace}/{name}: {e}"))?;
            let conditions = job.data["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let holds = |kind: &str| {
                conditions
                    .iter()
                    .find(|c| c["type"] == kind && c["status"] == "True")
                    .cloned()
            };
            if holds("Complete").is_some() {
                return Ok(());
            }
            if let Some(failed) = holds("Failed") {
                return Err(format!(
                    "smoke-test Job {namespace}/{name} failed: {}",
                    failed["reason"].as_str().unwrap_or("no reason given")
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "smoke-test Job {namespace}/{name} did not finish within {:?}",
                    self.rule.timeout
                ));
            }
            tokio::time::sleep(ROLLOUT_POLL).await;
        }
    }

    /// Puts each target workload back on the image it ran before its last
    /// deploy under this rule, or on `to` (a digest of the same
    /// repository), and records it. What `kubectl rollout undo` does, but
    /// onto a pinned digest and with the history in berth.
    pub async fn rollback(&self, to: Option<&str>) -> Result<Vec<String>, String> {
        let mut done = Vec::new();
        for target in &self.rule.targets {
            for name in self.names(target).await? {
                let api = self.cluster.api(target.kind, &target.namespace);
                let object = api
                    .get(&name)
                    .await
                    .map_err(|e| format!("reading {} {name}: {e}", target.kind.as_str()))?;
                let last = self
                    .meta
                    .last_successful_deploy(&target.namespace, target.kind.as_str(), &name)
                    .await
                    .map_err(|e| e.to_string())?
                    .filter(|d| d.rule == self.rule.name)
                    .ok_or_else(|| {
                        format!("{}/{name}: berth never rolled it out", target.namespace)
                    })?;
                let image = match to {
                    Some(digest) => {
                        let base = last.new_image.split('@').next().unwrap_or(&last.new_image);
                        format!("{base}@{digest}")
                    }
                    None => last.old_image.clone().ok_or_else(|| {
                        format!("{}/{name}: no earlier image recorded", target.namespace)
                    })?,
                };
                let names: Vec<&str> = last.container.split(',').collect();
                let current = containers(&object.data)
                    .into_iter()
                    .find(|(c, _)| c == names[0])
                    .map(|(_, image)| image);
                let patch = image_patch(&names, &image, None, to);
                let (state, message) = match api
                    .patch(&name, &patch_params(), &Patch::Strategic(patch))
                    .await
                {
                    Ok(_) => ("rolled_back", format!("rolled back by hand to {image}")),
                    Err(e) => ("failed", format!("rolling back to {image}: {e}")),
                };
                let row = NewDeploy {
                    event_seq: last.event_seq,
                    rule: &self.rule.name,
                    namespace: &target.namespace,
                    kind: target.kind.as_str(),
                    name: &name,
                    container: &last.container,
                    tag: None,
                    old_image: current.as_deref(),
                    new_image: &image,
                    state,
                    message: &message,
                };
                self.meta
                    .insert_deploy(&row)
                    .await
                    .map_err(|e| e.to_string())?;
                if state == "failed" {
                    return Err(format!("{}/{name}: {message}", target.namespace));
                }
                done.push(format!("{}/{name}: {message}", target.namespace));
            }
        }
        Ok(done)
    }

    /// Why this push should not roll onto the workload, if it should not.
    async fn skip_reason(
        &self,
        event: &Event,
        target: &Target,
        name: &str,
        chosen: &[&(String, String)],
        image: &str,
    ) -> Option<String> {
        if chosen.iter().all(|(_, current)| current == image) {
            return Some("already runs this digest".into());
        }
        if self.rule.allow_downgrade || self.rule.semver.is_none() {
            return None;
        }
        let new = tag_version(event.tag.as_deref()?)?;
        let last = self
            .meta
            .last_successful_deploy(&target.namespace, target.kind.as_str(), name)
            .await
            .ok()??;
        let deployed = tag_version(last.tag.as_deref()?)?;
        (new < deployed).then(|| format!("{new} is older than the deployed {deployed}"))
    }
}

impl Sink for RuleSink {
    fn name(&self) -> &str {
        &self.sink_name
    }

    fn wants(&self, event: &Event) -> bool {
        self.rule.matches(event) || self.rule.wants_signatures_of(event)
    }

    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<String, String>> {
        match self.rule.matches(event) {
            true => Box::pin(self.deploy(event)),
            false => Box::pin(self.signature_arrived(event)),
        }
    }

    fn retry_by(&self, event: &Event) -> Option<i64> {
        (!self.rule.require_signature.is_empty() && self.rule.matches(event))
            .then(|| event.created_at + self.rule.signature_wait.as_millis() as i64)
    }

    fn test(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(self.dry_run())
    }

    fn resume(&self) -> BoxFuture<'_, crate::core::Result<()>> {
        Box::pin(RuleSink::resume(self))
    }
}

impl RuleSink {
    /// What a push would roll out: each workload and container the rule
    /// would patch, with the image it runs now. Reads only.
    async fn dry_run(&self) -> Result<String, String> {
        let mut lines = Vec::new();
        for target in &self.rule.targets {
            let kind = target.kind.as_str();
            let names = self.names(target).await?;
            if names.is_empty() {
                return Err(format!("no {kind} matches {}", describe(target)));
            }
            for name in names {
                let api = self.cluster.api(target.kind, &target.namespace);
                let object = api
                    .get(&name)
                    .await
                    .map_err(|e| format!("reading {kind} {}/{name}: {e}", target.namespace))?;
                let chosen: Vec<(String, String)> = containers(&object.data)
                    .into_iter()
                    .filter(|(c, current)| match &target.container {
                        Some(wanted) => c == wanted,
                        None => self.rule.repository.matches(image_repository(current)),
                    })
                    .collect();
                if chosen.is_empty() {
                    return Err(format!(
                        "no container of {kind} {}/{name} would be patched",
                        target.namespace
                    ));
                }
                for (container, image) in chosen {
                    lines.push(format!(
                        "{kind} {}/{name} container {container} runs {image}",
                        target.namespace
                    ));
                }
            }
        }
        Ok(lines.join("\n"))
    }
}

fn describe(target: &Target) -> String {
    match &target.selector {
        Selector::Name(name) => name.clone(),
        Selector::Labels(labels) => format!("-l {labels}"),
    }
}

/// `(name, image)` of each container in the pod template.
fn containers(data: &Value) -> Vec<(String, String)> {
    data.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    Some((
                        c["name"].as_str()?.to_owned(),
                        c["image"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Patches recorded under berth's field manager.
fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// A strategic merge patch: containers merge by name, so only the image of
/// the named ones changes.
fn image_patch(containers: &[&str], image: &str, tag: Option<&str>, digest: Option<&str>) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|name| json!({ "name": name, "image": image }))
        .collect();
    json!({
        "metadata": { "annotations": { TAG_ANNOTATION: tag, DIGEST_ANNOTATION: digest } },
        "spec": { "template": { "spec": { "containers": containers } } }
    })
}

/// Where a rollout stands.
#[derive(Debug, PartialEq)]
enum Rollout {
    Done(String),
    Waiting(String),
    Failed(String),
}

/// Reads a workload's rollout status the way `kubectl rollout status` does.
fn rollout_state(kind: WorkloadKind, object: &DynamicObject, generation: i64) -> Rollout {
    let status = &object.data["status"];
    let spec = &object.data["spec"];
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    if int(&status["observedGeneration"]) < generation {
        return Rollout::Waiting("waiting for the controller to see the change".into());
    }
    match kind {
        WorkloadKind::Deployment => {
            let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
            {
                return Rollout::Failed("progress deadline exceeded".into());
            }
            let want = spec["replicas"].as_i64().unwrap_or(1);
            let (updated, total, available) = (
                int(&status["updatedReplicas"]),
                int(&status["replicas"]),
                int(&status["availableReplicas"]),
            );
            if updated < want {
                Rollout::Waiting(format!("{updated} of {want} replicas updated"))
            } else if total > updated {
                Rollout::Waiting(format!(
                    "{} old replicas pending termination",
                    total - updated
                ))
            } else if available < updated {
                Rollout::Waiting(format!(
                    "{available} of {updated} updated replicas available"
                ))
            } else {
                Rollout::Done(format!("{updated} replicas updated and available"))
            }
        }
        WorkloadKind::StatefulSet => {
            let want = spec["replicas"].as_i64().unwrap_or(1);
            let ready = int(&status["readyReplicas"]);
            if ready < want {
                Rollout::Waiting(format!("{ready} of {want} replicas ready"))
            } else if status["updateRevision"] != status["currentRevision"] {
                Rollout::Waiting("waiting for the update revision to become current".into())
            } else {
                Rollout::Done(format!("{ready} replicas ready"))
            }
        }
        WorkloadKind::DaemonSet => {
            let want = int(&status["desiredNumberScheduled"]);
            let updated = int(&status["updatedNumberScheduled"]);
            let available = int(&status["numberAvailable"]);
            if updated < want {
                Rollout::Waiting(format!("{updated} of {want} pods updated"))
            } else if available < want {
                Rollout::Waiting(format!("{available} of {want} pods available"))
            } else {
                Rollout::Done(format!("{available} pods updated and available"))
            }
        }
    }
}

/// Rollouts this process watches, by deploy id: when it takes a rule over
/// again (a changed rule, or a lease lost and regained), it must not watch
/// one twice.
static WATCHING: std::sync::Mutex<std::collections::BTreeSet<i64>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Marks a rollout watched by this process until dropped.
struct Watching(i64);

impl Watching {
    fn start(id: i64) -> Option<Watching> {
        // The set's lock is let go before a `Watching` exists: dropping one
        // takes it again.
        let fresh = WATCHING.lock().expect("watch set").insert(id);
        fresh.then(|| Watching(id))
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        WATCHING.lock().expect("watch set").remove(&self.0);
    }
}

/// Follows one rollout to its end and records it. `generation` is the one
/// the patch produced; when resuming after a restart, the current one.
async fn watch_rollout(
    cluster: Arc<Cluster>,
    meta: MetaStore,
    rule: Arc<DeployRule>,
    kind: WorkloadKind,
    row: DeployRow,
    generation: Option<i64>,
) {
    let Some(_watching) = Watching::start(row.id) else {
        return;
    };
    let api = cluster.api(kind, &row.namespace);
    let deadline = Instant::now() + rule.timeout;
    let mut last;
    let (state, message) = loop {
        match api.get(&row.name).await {
            Ok(object) => {
                let generation = generation.or(object.metadata.generation).unwrap_or(0);
                match rollout_state(kind, &object, generation) {
                    Rollout::Done(m) => break ("succeeded", m),
                    Rollout::Failed(m) => break ("failed", m),
                    Rollout::Waiting(m) => last = m,
                }
            }
            Err(e) => last = format!("reading the rollout: {e}"),
        }
        if Instant::now() >= deadline {
            break (
                "timed_out",
                format!("not done after {:?}: {last}", rule.timeout),
            );
        }
        tokio::time::sleep(ROLLOUT_POLL).await;
    };
    let (state, message) = match (state, rule.rollback_on_failure, &row.old_image) {
        ("failed" | "timed_out", true, Some(old)) => {
            let containers: Vec<&str> = row.container.split(',').collect();
            let patch = image_patch(&containers, old, None, None);
            match api
                .patch(&row.name, &patch_params(), &Patch::Strategic(patch))
                .await
            {
                Ok(_) => ("rolled_back", format!("{message}; rolled back to {old}")),
                Err(e) => (state, format!("{message}; rollback to {old} failed: {e}")),
            }
        }
        _ => (state, message),
    };
    tracing::info!(rule = %rule.name, namespace = %row.namespace, name = %row.name, state, %message, "rollout ended");
    if let Err(e) = meta.update_deploy(row.id, state, &message).await {
        tracing::error!(error = %e, "recording a rollout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: Value, replicas: i64) -> DynamicObject {
        let mut o = DynamicObject::new(
            "app",
            &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")),
        );
        o.metadata.generation = Some(generation);
        o.data = json!({ "spec": { "replicas": replicas }, "status": status });
        o
    }

    #[test]
    fn deployment_rollouts_read_like_kubectl() {
        let d = deployment(2, json!({ "observedGeneration": 1 }), 1);
        assert!(matches!(
            rollout_state(WorkloadKind::Deployment, &d, 2),
            Rollout::Waiting(_)
        ));
        let d = deployment(
            2,
            json!({ "observedGeneration": 2, "updatedReplicas": 1, "replicas": 2, "availableReplicas": 1 }),
            1,
        );
        assert!(matches!(
            rollout_state(WorkloadKind::Deployment, &d, 2),
            Rollout::Waiting(_)
        ));
        let d = deployment(
            2,
            json!({ "observedGeneration": 2, "updatedReplicas": 1, "replicas": 1, "availableReplicas": 1 }),
            1,
        );
        assert!(matches!(
            rollout_state(WorkloadKind::Deployment, &d, 2),
            Rollout::Done(_)
        ));
        let d = deployment(2, json!({ "observedGeneration": 2 }), 0);
        assert!(matches!(
            rollout_state(WorkloadKind::Deployment, &d, 2),
            Rollout::Done(_)
        ));
        let d = deployment(
            2,
            json!({ "observedGeneration": 2, "conditions": [{ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded" }] }),
            1,
        );
        assert!(matches!(
            rollout_state(WorkloadKind::Deployment, &d, 2),
            Rollout::Failed(_)
        ));
    }

    #[test]
    fn patches_touch_only_named_containers() {
        let patch = image_patch(
            &["app"],
            "r:1/team/app@sha256:abc",
            Some("1.2.4"),
            Some("sha256:abc"),
        );
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"],
            json!([{ "name": "app", "image": "r:1/team/app@sha256:abc" }])
        );
        assert_eq!(patch["metadata"]["annotations"][TAG_ANNOTATION], "1.2.4");
        let data = json!({ "spec": { "template": { "spec": { "containers": [
            { "name": "app", "image": "r/team/app:1" }, { "name": "sidecar", "image": "envoy:1" } ] } } } });
        assert_eq!(containers(&data).len(), 2);
    }
}
