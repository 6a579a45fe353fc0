//! Deploy rules: which pushes roll out where. A rule matches a push by
//! repository pattern and tag policy (a glob, optionally narrowed by a
//! semver range such as `^1.2`), and names its targets: workloads in a
//! namespace, by name or label selector, and optionally one container.

use std::time::Duration;

use crate::core::event::{Action, Event};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub fn parse(s: &str) -> Option<WorkloadKind> {
        match s {
            "Deployment" => Some(WorkloadKind::Deployment),
            "StatefulSet" => Some(WorkloadKind::StatefulSet),
            "DaemonSet" => Some(WorkloadKind::DaemonSet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

/// Which workloads of a kind in a namespace.
#[derive(Clone, Debug)]
pub enum Selector {
    Name(String),
    /// A label selector, as `kubectl -l` takes it.
    Labels(String),
}

#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub kind: WorkloadKind,
    pub selector: Selector,
    /// Only this container; `None`: every container running the repository.
    pub container: Option<String>,
}

#[derive(Clone, Debug)]
pub struct DeployRule {
    pub name: String,
    pub repository: glob::Pattern,
    pub tag: glob::Pattern,
    pub semver: Option<semver::VersionReq>,
    /// Roll onto a semver-older tag than the one deployed.
    pub allow_downgrade: bool,
    /// Put the previous image back when the rollout fails or times out.
    pub rollback_on_failure: bool,
    /// How long a rollout may take before it counts as timed out.
    pub timeout: Duration,
    /// A Job to run, and see succeed, before rolling out.
    pub smoke_job: Option<serde_json::Value>,
    /// Roll out only images signed by one of these trusted keys.
    pub require_signature: Vec<String>,
    /// How long a push waits for its signature.
    pub signature_wait: Duration,
    pub targets: Vec<Target>,
}

impl DeployRule {
    pub fn from_config(c: &crate::config::DeployRuleConfig) -> anyhow::Result<DeployRule> {
        let context =
            |what: &str, e: String| anyhow::anyhow!("deploy rule {:?}: {what}: {e}", c.name);
        if c.timeout_seconds > crate::config::MAX_ROLLOUT_TIMEOUT {
            return Err(context(
                "timeout_seconds",
                format!("at most {}", crate::config::MAX_ROLLOUT_TIMEOUT),
            ));
        }
        if c.signature_wait_seconds > crate::config::MAX_SIGNATURE_WAIT {
            return Err(context(
                "signature_wait_seconds",
                format!("at most {}", crate::config::MAX_SIGNATURE_WAIT),
            ));
        }
        for key in &c.require_signature {
            crate::signature::keys::check_name(key).map_err(|e| context("require_signature", e))?;
        }
        let targets = c
            .targets
            .iter()
            .map(|t| {
                Ok(Target {
                    namespace: t.namespace.clone(),
                    kind: WorkloadKind::parse(&t.kind).ok_or_else(|| {
                        context(
                            "kind",
                            format!("{:?} is not Deployment, StatefulSet or DaemonSet", t.kind),
                        )
                    })?,
                    selector: if t.name.is_empty() {
                        Selector::Labels(t.selector.clone())
                    } else {
                        Selector::Name(t.name.clone())
                    },
                    container: Some(t.container.clone()).filter(|c| !c.is_empty()),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(DeployRule {
            name: c.name.clone(),
            repository: glob::Pattern::new(&c.repository)
                .map_err(|e| context("repository", e.to_string()))?,
            tag: glob::Pattern::new(&c.tag).map_err(|e| context("tag", e.to_string()))?,
            semver: if c.semver.is_empty() {
                None
            } else {
                Some(
                    semver::VersionReq::parse(&c.semver)
                        .map_err(|e| context("semver", e.to_string()))?,
                )
            },
            allow_downgrade: c.allow_downgrade,
            rollback_on_failure: c.rollback_on_failure,
            timeout: Duration::from_secs(c.timeout_seconds.max(1)),
            smoke_job: if c.smoke_job.as_os_str().is_empty() {
                None
            } else {
                let text = std::fs::read_to_string(&c.smoke_job)
                    .map_err(|e| context("smoke_job", format!("{}: {e}", c.smoke_job.display())))?;
                let job: serde_json::Value = serde_saphyr::from_str(&text)
                    .map_err(|e| context("smoke_job", format!("{}: {e}", c.smoke_job.display())))?;
                if job["kind"] != "Job" {
                    return Err(context("smoke_job", "the manifest is not a Job".into()));
                }
                Some(job)
            },
            require_signature: c.require_signature.clone(),
            signature_wait: Duration::from_secs(c.signature_wait_seconds),
            targets,
        })
    }
}

/// A tag as a semantic version; a leading `v` is allowed, as in `v1.2.4`.
pub fn tag_version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

impl DeployRule {
    /// Whether a push should roll out under this rule. Pushes by digest
    /// alone name no tag, and never do; nor do the tags cosign attaches to
    /// an image (`sha256-<hex>.sig`), which are no images.
    pub fn matches(&self, event: &Event) -> bool {
        let Some(tag) = event.tag.as_deref() else {
            return false;
        };
        event.action == Action::Push
            && !crate::signature::cosign::is_attachment_tag(tag)
            && event.digest.is_some()
            && self.repository.matches(&event.repository)
            && self.tag.matches(tag)
            && self
                .semver
                .as_ref()
                .is_none_or(|req| tag_version(tag).is_some_and(|v| req.matches(&v)))
    }
}

impl DeployRule {
    /// Whether a push may have brought a signature this rule waits for:
    /// a cosign tag, or a manifest pushed by digest (a referrer), in a
    /// repository of the rule.
    pub fn wants_signatures_of(&self, event: &Event) -> bool {
        !self.require_signature.is_empty()
            && event.action == Action::Push
            && self.repository.matches(&event.repository)
            && event
                .tag
                .as_deref()
                .is_none_or(crate::signature::cosign::is_attachment_tag)
    }
}

/// The repository an image reference names, without registry host, tag or
/// digest: `registry.example.com:8888/team/app:1@sha256:..` is `team/app`.
pub fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag is after the last ':' that follows the last '/'.
    let without_tag = match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    };
    match without_tag.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => without_tag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::Origin;

    fn rule(tag: &str, semver: Option<&str>) -> DeployRule {
        DeployRule {
            name: "app".into(),
            repository: glob::Pattern::new("team/*").unwrap(),
            tag: glob::Pattern::new(tag).unwrap(),
            semver: semver.map(|s| semver::VersionReq::parse(s).unwrap()),
            allow_downgrade: false,
            rollback_on_failure: false,
            timeout: Duration::from_secs(60),
            smoke_job: None,
            require_signature: vec![],
            signature_wait: Duration::from_secs(600),
            targets: vec![],
        }
    }

    fn push(repo: &str, tag: Option<&str>) -> Event {
        let mut e = Event::new(Action::Push, repo, &Origin::default());
        e.digest = Some("sha256:abc".into());
        e.tag = tag.map(String::from);
        e
    }

    #[test]
    fn tag_policies() {
        let semver = rule("*", Some("^1.2"));
        assert!(semver.matches(&push("team/app", Some("1.2.4"))));
        assert!(semver.matches(&push("team/app", Some("v1.3.0"))));
        assert!(!semver.matches(&push("team/app", Some("2.0.0"))));
        assert!(!semver.matches(&push("team/app", Some("latest"))));
        assert!(!semver.matches(&push("other/app", Some("1.2.4"))));
        assert!(!semver.matches(&push("team/app", None)));

        let exact = rule("stable", None);
        assert!(exact.matches(&push("team/app", Some("stable"))));
        assert!(!exact.matches(&push("team/app", Some("stable2"))));
        let glob = rule("release-*", None);
        assert!(glob.matches(&push("team/web", Some("release-42"))));
        let any = rule("*", None);
        let signature = format!("sha256-{}.sig", "a".repeat(64));
        assert!(!any.matches(&push("team/app", Some(&signature))));

        let mut delete = push("team/app", Some("stable"));
        delete.action = Action::Delete;
        assert!(!exact.matches(&delete));
    }

    #[test]
    fn image_references_name_their_repository() {
        let cases = [
            (
                "registry.example.com:8888/team/app:1.2@sha256:abc",
                "team/app",
            ),
            ("127.0.0.1:5000/team/app", "team/app"),
            ("localhost/team/app:1", "team/app"),
            ("team/app:1", "team/app"),
            ("app", "app"),
            ("registry:8888/app@sha256:abc", "app"),
        ];
        for (image, repo) in cases {
            assert_eq!(image_repository(image), repo, "{image}");
        }
    }
}
