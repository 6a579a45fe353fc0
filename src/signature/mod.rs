//! cosign signature verification: which keys are trusted, whether an image
//! carries a valid signature by one of them, and the pull policies that
//! refuse unsigned images in protected namespaces. Deploy rules and the
//! pull path ask [`Signatures`]; neither reads cosign's formats itself.
//!
//! Verification is key-based and offline, like `cosign verify --key
//! --insecure-ignore-tlog`: no certificate authority, no transparency log,
//! no network call. A signature counts when it verifies over the exact
//! payload blob with a trusted key and the payload names the image's
//! digest. Verdicts are cached per (repository, digest, key set) until the
//! next write to the registry, so a protected pull costs a map lookup.

pub mod cosign;
pub mod keys;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::core::event::Origin;
use crate::core::names::{Digest, Reference, RepoName};
use crate::core::{Registry, RegistryError, Result};
use crate::meta::{ManifestRow, MetaStore, NewAudit};
pub use keys::TrustedKey;

/// Largest payload read: cosign's are a few hundred bytes.
const MAX_PAYLOAD: u64 = 64 * 1024;
/// Most signature manifests looked at for one image.
const MAX_SIGNATURES: usize = 64;
/// Verdicts kept; past this the cache starts over.
const CACHE_CAPACITY: usize = 20_000;

/// Pulls of `namespace/...` need a valid signature by one of `keys`.
#[derive(Clone, Debug)]
pub struct PullPolicy {
    pub namespace: String,
    pub keys: Vec<String>,
}

impl PullPolicy {
    fn covers(&self, repo: &str) -> bool {
        repo == self.namespace
            || repo
                .strip_prefix(self.namespace.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// How refusals and audit lines name it.
    pub fn describe(&self) -> String {
        format!(
            "pull policy of namespace {} (signed by {})",
            self.namespace,
            self.keys.join(" or ")
        )
    }
}

/// Whether an image is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A valid signature by the trusted key `key`, in the signature
    /// manifest `signature` (for a child of a signed index: the index's).
    Signed { key: String, signature: String },
    /// A signature or other artifact attached to an image: not an image
    /// to protect, and pullable so that tools can verify.
    Attached,
    /// No valid signature; `reason` says what was found instead.
    Unsigned { reason: String },
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Verdict::Unsigned { .. })
    }
}

/// The trusted keys at one moment, and a number that changes with them.
pub struct KeySet {
    pub version: u64,
    pub keys: Vec<Arc<TrustedKey>>,
    /// Names of the keys the config file defines (the API cannot change
    /// them).
    pub from_config: Vec<String>,
    /// When each key added through the API was added (Unix ms).
    pub added_at: HashMap<String, i64>,
}

impl KeySet {
    fn named<'a>(&'a self, names: &[String]) -> Vec<&'a Arc<TrustedKey>> {
        self.keys
            .iter()
            .filter(|k| names.is_empty() || names.contains(&k.name))
            .collect()
    }
}

pub struct Signatures {
    registry: Arc<Registry>,
    meta: MetaStore,
    config_keys: Vec<Arc<TrustedKey>>,
    policies: Vec<PullPolicy>,
    keys: RwLock<Arc<KeySet>>,
    versions: AtomicU64,
    /// Verdicts by key-set version, key names and image, with the registry
    /// generation they were reached at.
    cache: RwLock<HashMap<String, (u64, Arc<Verdict>)>>,
}

impl Signatures {
    /// The keys and policies of the config file, and the keys stored by the
    /// admin API.
    pub async fn new(
        config: &Config,
        registry: Arc<Registry>,
        meta: MetaStore,
    ) -> anyhow::Result<Signatures> {
        let mut config_keys = Vec::new();
        for k in &config.signatures.keys {
            config_keys.push(Arc::new(read_key_file(&k.name, &k.public_key_file)?));
        }
        let policies = config
            .signatures
            .pull_policies
            .iter()
            .map(|p| PullPolicy {
                namespace: p.namespace.trim_end_matches('/').to_owned(),
                keys: p.keys.clone(),
            })
            .collect::<Vec<PullPolicy>>();
        for p in &policies {
            crate::metrics::signature_policy_started(&p.namespace);
        }
        let signatures = Signatures {
            registry,
            meta,
            config_keys,
            policies,
            keys: RwLock::new(Arc::new(KeySet {
                version: 0,
                keys: Vec::new(),
                from_config: Vec::new(),
                added_at: HashMap::new(),
            })),
            versions: AtomicU64::new(0),
            cache: RwLock::new(HashMap::new()),
        };
        signatures.reload().await?;
        Ok(signatures)
    }

    /// Reads the stored keys again. A stored key that no longer parses is
    /// left out (and logged), never trusted.
    pub async fn reload(&self) -> Result<()> {
        let mut keys = self.config_keys.clone();
        let mut added_at = HashMap::new();
        for row in self.meta.signature_keys().await? {
            if keys.iter().any(|k| k.name == row.name) {
                continue;
            }
            match TrustedKey::from_pem(&row.name, &row.public_key) {
                Ok(key) => {
                    added_at.insert(row.name.clone(), row.created_at);
                    keys.push(Arc::new(key));
                }
                Err(e) => tracing::error!(key = %row.name, error = %e, "a stored key is unusable"),
            }
        }
        let version = self.versions.fetch_add(1, Ordering::AcqRel) + 1;
        *self.keys.write().expect("key set") = Arc::new(KeySet {
            version,
            keys,
            from_config: self.config_keys.iter().map(|k| k.name.clone()).collect(),
            added_at,
        });
        Ok(())
    }

    /// Follows keys added or removed through another replica's admin API.
    pub async fn follow_store(&self) {
        let fingerprint = |rows: &[crate::meta::SignatureKeyRow]| {
            rows.iter()
                .map(|r| format!("{}={}", r.name, r.created_at))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut seen = None;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            match self.meta.signature_keys().await {
                Ok(rows) => {
                    let now = fingerprint(&rows);
                    if seen.as_ref().is_some_and(|s| s != &now)
                        && let Err(e) = self.reload().await
                    {
                        tracing::warn!(error = %e, "reloading trusted keys");
                        continue;
                    }
                    seen = Some(now);
                }
                Err(e) => tracing::warn!(error = %e, "reading trusted keys"),
            }
        }
    }

    pub fn key_set(&self) -> Arc<KeySet> {
        self.keys.read().expect("key set").clone()
    }

    pub fn policies(&self) -> &[PullPolicy] {
        &self.policies
    }

    /// Trusts a key from now on.
    pub async fn add_key(&self, name: &str, pem: &str) -> Result<Arc<TrustedKey>> {
        let key = TrustedKey::from_pem(name, pem).map_err(RegistryError::Invalid)?;
        if self.config_keys.iter().any(|k| k.name == name)
            || !self.meta.insert_signature_key(name, &key.pem).await?
        {
            return Err(RegistryError::Conflict(format!(
                "a key named {name:?} exists"
            )));
        }
        self.reload().await?;
        Ok(Arc::new(key))
    }

    /// Trusts a key no longer: signatures made with it stop counting at once.
    pub async fn remove_key(&self, name: &str) -> Result<()> {
        if self.config_keys.iter().any(|k| k.name == name) {
            return Err(RegistryError::Conflict(format!(
                "key {name:?} is defined in the config file; remove it there"
            )));
        }
        if !self.meta.delete_signature_key(name).await? {
            return Err(RegistryError::NotFound(format!("no key named {name:?}")));
        }
        self.reload().await
    }

    /// The policy protecting `repo`, if any: the one of the longest
    /// namespace.
    pub fn policy_for(&self, repo: &str) -> Option<&PullPolicy> {
        self.policies
            .iter()
            .filter(|p| p.covers(repo))
            .max_by_key(|p| p.namespace.len())
    }

    /// Answers a manifest GET or HEAD of `repo`: an error if a pull policy
    /// protects it and the manifest has no valid signature. Signatures and
    /// other attached artifacts stay pullable. A refusal is counted and
    /// written to the audit log.
    pub async fn check_pull(
        &self,
        repo: &RepoName,
        reference: &Reference,
        row: &ManifestRow,
        origin: &Origin,
    ) -> Result<()> {
        let Some(policy) = self.policy_for(repo.as_str()) else {
            return Ok(());
        };
        if let Reference::Tag(tag) = reference
            && cosign::is_attachment_tag(tag.as_str())
        {
            return Ok(());
        }
        let verdict = self
            .verdict(repo, &row.digest, Some(&row.content), &policy.keys)
            .await?;
        let Verdict::Unsigned { reason } = verdict.as_ref() else {
            return Ok(());
        };
        let image = format!("{repo}@{}", row.digest);
        crate::metrics::signature_refusal(&policy.namespace);
        tracing::warn!(%image, policy = %policy.namespace, %reason, actor = origin.actor.as_deref().unwrap_or(""), "pull refused: no valid signature");
        let audit = NewAudit {
            actor: origin.actor.as_deref(),
            address: origin.addr.as_deref(),
            action: "signature.refuse",
            target: &image,
            detail: reason,
        };
        if let Err(e) = self.meta.append_audit(&audit).await {
            tracing::error!(error = %e, "writing the audit log");
        }
        Err(RegistryError::SignatureRequired {
            image,
            policy: policy.describe(),
            reason: reason.clone(),
        })
    }

    /// Whether `digest` in `repo` has a valid signature by one of the keys
    /// named (every trusted key if none are named). `content` is the
    /// manifest when the caller has it: an attached artifact is no image.
    pub async fn verdict(
        &self,
        repo: &RepoName,
        digest: &Digest,
        content: Option<&[u8]>,
        key_names: &[String],
    ) -> Result<Arc<Verdict>> {
        let keys = self.key_set();
        let generation = self.registry.generation();
        let cache_key = format!(
            "{}\0{}\0{}@{}",
            keys.version,
            key_names.join(","),
            repo,
            digest
        );
        if let Some((at, verdict)) = self.cache.read().expect("verdicts").get(&cache_key)
            && *at == generation
        {
            return Ok(verdict.clone());
        }
        let verdict = Arc::new(
            self.compute(repo, digest, content, &keys, key_names)
                .await?,
        );
        // Writes elsewhere do not move the generation when replicas share
        // the store: an unsigned verdict there is read again each time.
        if verdict.is_allowed() || !self.registry.shares_store() {
            let mut cache = self.cache.write().expect("verdicts");
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(cache_key, (generation, verdict.clone()));
        }
        Ok(verdict)
    }

    async fn compute(
        &self,
        repo: &RepoName,
        digest: &Digest,
        content: Option<&[u8]>,
        keys: &KeySet,
        key_names: &[String],
    ) -> Result<Verdict> {
        if content.is_some_and(cosign::is_attached_artifact) {
            return Ok(Verdict::Attached);
        }
        let trusted = keys.named(key_names);
        let wanted = match key_names.is_empty() {
            true => "any trusted key".to_owned(),
            false => key_names.join(" or "),
        };
        if trusted.is_empty() {
            return Ok(Verdict::Unsigned {
                reason: format!("no key named {wanted} is trusted"),
            });
        }
        let direct = self.check_signatures(repo, digest, &trusted).await?;
        if !matches!(direct, Verdict::Unsigned { .. }) {
            return Ok(direct);
        }
        // A child of a signed index is covered by the index's signature.
        for parent in self.meta.parent_manifests(repo, digest).await? {
            if let Verdict::Signed { key, signature } =
                self.check_signatures(repo, &parent, &trusted).await?
            {
                return Ok(Verdict::Signed {
                    key,
                    signature: format!("{signature} (of index {parent})"),
                });
            }
        }
        Ok(direct)
    }

    /// The signature manifests of `digest`: under the tag scheme and as
    /// referrers.
    async fn signature_manifests(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<(String, Arc<ManifestRow>)>> {
        let mut found = Vec::new();
        let tag = cosign::signature_tag(digest);
        if let Ok(reference) = tag.parse::<Reference>() {
            match self.registry.get_manifest(repo, &reference, None).await {
                Ok(row) => found.push((format!("tag {tag}"), row)),
                Err(RegistryError::ManifestUnknown(_) | RegistryError::NameUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for referrer in self.registry.referrers(repo, digest, None).await? {
            if found.len() >= MAX_SIGNATURES {
                break;
            }
            let Ok(reference) = referrer.digest.parse::<Reference>() else {
                continue;
            };
            match self.registry.get_manifest(repo, &reference, None).await {
                Ok(row) if !cosign::signature_layers(&row.content).is_empty() => {
                    found.push((format!("referrer {}", referrer.digest), row))
                }
                Ok(_) | Err(RegistryError::ManifestUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    async fn check_signatures(
        &self,
        repo: &RepoName,
        digest: &Digest,
        trusted: &[&Arc<TrustedKey>],
    ) -> Result<Verdict> {
        let manifests = self.signature_manifests(repo, digest).await?;
        if manifests.is_empty() {
            return Ok(Verdict::Unsigned {
                reason: format!(
                    "no signature: neither the tag {} nor a referrer signs {digest}",
                    cosign::signature_tag(digest)
                ),
            });
        }
        let mut reasons = Vec::new();
        for (place, row) in manifests {
            let layers = cosign::signature_layers(&row.content);
            if layers.is_empty() {
                reasons.push(format!("{place}: no simple-signing payload"));
            }
            for layer in layers {
                match self.check_layer(repo, digest, &layer, trusted).await? {
                    Ok(key) => {
                        return Ok(Verdict::Signed {
                            key,
                            signature: row.digest.to_string(),
                        });
                    }
                    Err(reason) => reasons.push(format!("{place}: {reason}")),
                }
            }
        }
        Ok(Verdict::Unsigned {
            reason: reasons.join("; "),
        })
    }

    /// The trusted key that made this payload's signature, or why none did.
    async fn check_layer(
        &self,
        repo: &RepoName,
        digest: &Digest,
        layer: &cosign::SignatureLayer,
        trusted: &[&Arc<TrustedKey>],
    ) -> Result<std::result::Result<String, String>> {
        let signature = match layer.signature_bytes() {
            Ok(s) => s,
            Err(reason) => return Ok(Err(reason)),
        };
        let payload = match self
            .registry
            .read_small_blob(repo, &layer.payload, MAX_PAYLOAD)
            .await
        {
            Ok(p) => p,
            Err(RegistryError::BlobUnknown(_)) => {
                return Ok(Err(format!(
                    "the payload {} is not in the repository",
                    layer.payload
                )));
            }
            Err(RegistryError::SizeInvalid(reason)) => return Ok(Err(reason)),
            Err(e) => return Err(e),
        };
        let Some(key) = trusted.iter().find(|k| k.verifies(&payload, &signature)) else {
            let names: Vec<&str> = trusted.iter().map(|k| k.name.as_str()).collect();
            return Ok(Err(format!(
                "the signature does not verify over the payload with the trusted key {} \
                 (made with another key, or the payload was altered)",
                names.join(" or ")
            )));
        };
        match cosign::signed_digest(&payload) {
            Ok(signed) if signed == digest.as_str() => Ok(Ok(key.name.clone())),
            Ok(signed) => Ok(Err(format!(
                "the payload signed by {} names {signed}, not {digest}",
                key.name
            ))),
            Err(reason) => Ok(Err(reason)),
        }
    }
}

/// A key from a PEM file of the config.
fn read_key_file(name: &str, path: &Path) -> anyhow::Result<TrustedKey> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("signatures key {name:?}: {}: {e}", path.display()))?;
    TrustedKey::from_pem(name, &pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_cover_their_namespace() {
        let p = PullPolicy {
            namespace: "prod".into(),
            keys: vec!["ci".into()],
        };
        assert!(p.covers("prod"));
        assert!(p.covers("prod/app"));
        assert!(p.covers("prod/team/app"));
        assert!(!p.covers("production/app"));
        assert!(!p.covers("dev/prod"));
    }
}
