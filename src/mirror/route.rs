//! Which requests a mirror answers, and under which names. Clients address
//! a mirror in three ways:
//!
//! - a path prefix: `/v2/docker.io/library/nginx/...` (docker, podman and
//!   CRI-O `registries.conf` mirrors with `location = "berth/docker.io"`,
//!   skopeo);
//! - containerd's hosts.toml mirrors: `/v2/library/nginx/...?ns=docker.io`,
//!   the upstream's name and the registry it belongs to;
//! - docker's `registry-mirrors`, for Docker Hub only: `/v2/library/nginx/...`
//!   with nothing to say it is Docker Hub's. A mirror with `unprefixed =
//!   true` answers those pulls, for names outside every mirror namespace
//!   that no local repository has: local repositories and pushes always
//!   win.
//!
//! Each lands in the same local repository, `<namespace>/<upstream name>`
//! (`docker.io/library/nginx`), so all three share one cache. On Docker
//! Hub a one-part name means `library/<name>`, as docker and podman read
//! it.

use std::sync::Arc;

use crate::auth::scope::{Actions, Resource, ResourceScope};
use crate::core::names::RepoName;
use crate::core::{RegistryError, Result};
use crate::mirror::{Mirror, Mirrors};

/// Where a request on a mirrored name goes.
#[derive(Clone)]
pub struct Route {
    pub mirror: Arc<Mirror>,
    /// The repository the content is kept in.
    pub local: RepoName,
    /// Its name upstream.
    pub upstream: String,
    /// Reached by a name of no namespace (docker's `registry-mirrors`): a
    /// caller who may not pull through the mirror is served locally.
    pub unprefixed: bool,
}

impl Route {
    /// The refusal of a push, or a client's delete, into the mirror.
    pub fn refuse_write(&self) -> RegistryError {
        RegistryError::Denied(format!(
            "{} is a pull-through mirror of {}: it takes no pushes or deletes; \
             push to a namespace of your own",
            self.mirror.namespace(),
            self.mirror.config.upstream
        ))
    }
}

impl Mirrors {
    /// The mirror a request on `repo` goes to, if any. `ns` is the `ns`
    /// query parameter; `pull` says the request only reads.
    pub async fn route(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
        pull: bool,
    ) -> Result<Option<Route>> {
        let mirrors = self.all();
        if let Some(ns) = ns.filter(|ns| !ns.is_empty()) {
            let mirror = mirrors
                .iter()
                .find(|m| m.namespace() == ns)
                .ok_or_else(|| {
                    RegistryError::NameUnknown(format!(
                        "{repo}: berth mirrors no registry named {ns:?} (ns={ns})"
                    ))
                })?;
            // Already under the namespace (a hosts.toml entry whose path
            // names it): not prefixed twice.
            let name = repo
                .as_str()
                .strip_prefix(&format!("{ns}/"))
                .unwrap_or(repo.as_str());
            return Ok(Some(route_to(mirror, name, false)?));
        }
        for mirror in mirrors.iter() {
            let namespace = mirror.namespace();
            if repo.as_str() == namespace {
                return Err(RegistryError::NameUnknown(format!(
                    "{namespace} is a mirror: name an image under it, e.g. {namespace}/library/busybox"
                )));
            }
            if let Some(name) = repo.as_str().strip_prefix(&format!("{namespace}/")) {
                return Ok(Some(route_to(mirror, name, false)?));
            }
        }
        let Some(mirror) = mirrors.iter().find(|m| m.config.unprefixed) else {
            return Ok(None);
        };
        if !pull || self.meta.repository_exists(repo).await? {
            return Ok(None);
        }
        Ok(Some(route_to(mirror, repo.as_str(), true)?))
    }

    /// For a token request: the scopes a client asking for `wanted` also
    /// needs to pull through a mirror, which names the repository
    /// differently than the client did (docker asks for the name it
    /// pulls, not for the challenge's scope): `docker.io/nginx` is kept as
    /// `docker.io/library/nginx`, and an unprefixed `library/nginx` as
    /// `docker.io/library/nginx`. The token service grants them as it
    /// grants any scope: if the caller may.
    pub async fn pull_aliases(&self, wanted: &[ResourceScope]) -> Vec<ResourceScope> {
        let mut aliases = Vec::new();
        for scope in wanted {
            let Resource::Repository(repo) = &scope.resource else {
                continue;
            };
            if !scope.actions.contains(Actions::PULL) {
                continue;
            }
            if let Ok(Some(route)) = self.route(repo, None, true).await
                && &route.local != repo
            {
                aliases.push(ResourceScope::repository(route.local, Actions::PULL));
            }
        }
        aliases
    }
}

fn route_to(mirror: &Arc<Mirror>, name: &str, unprefixed: bool) -> Result<Route> {
    let upstream = if mirror.is_docker_hub() && !name.contains('/') {
        format!("library/{name}")
    } else {
        name.to_owned()
    };
    let local = format!("{}/{upstream}", mirror.namespace()).parse()?;
    Ok(Route {
        mirror: mirror.clone(),
        local,
        upstream,
        unprefixed,
    })
}

/// The value of a `Warning` header (the distribution spec's form: code
/// 299, agent `-`, a quoted text; at most 4096 bytes in all).
pub fn warning_value(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .take(1000)
        .collect();
    format!("299 - \"{clean}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_one_quoted_string() {
        assert_eq!(warning_value("a \"b\" \\ c\n"), "299 - \"a 'b' / c?\"");
        assert!(warning_value(&"x".repeat(9000)).len() < 4096);
    }
}
