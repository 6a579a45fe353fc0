//! A repository's settings as one thing: immutable tags and a retention
//! policy (stored with the repository) and public read (a pull grant to
//! anonymous callers). The admin API and the web UI both read and change
//! them here.

use crate::auth::Auth;
use crate::auth::accounts::ANONYMOUS;
use crate::auth::manage::AccountAdmin;
use crate::auth::scope::Actions;
use crate::core::names::RepoName;
use crate::core::retention::RetentionPolicy;
use crate::core::{Registry, RegistryError, Result};
use crate::meta::{MetaStore, SettingsRow};

#[derive(Clone, Debug, Default)]
pub struct RepositorySettings {
    pub immutable_tags: bool,
    pub public_read: bool,
    pub retention: Option<RetentionPolicy>,
}

/// Whether anonymous callers may pull from exactly `repo`.
pub async fn public_read(meta: &MetaStore, repo: &RepoName) -> Result<bool> {
    Ok(meta
        .grants(ANONYMOUS)
        .await?
        .iter()
        .any(|g| g.namespace.as_str() == repo.as_str() && g.actions.contains(Actions::PULL)))
}

pub async fn read(meta: &MetaStore, repo: &RepoName) -> Result<RepositorySettings> {
    let row = meta.repository_settings(repo.as_str()).await?;
    let retention = row
        .retention
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| RegistryError::Internal(format!("stored retention policy: {e}")))?;
    Ok(RepositorySettings {
        immutable_tags: row.immutable_tags,
        public_read: public_read(meta, repo).await?,
        retention,
    })
}

/// Stores `settings` (they may precede the repository's first push),
/// grants or revokes public read, and applies a retention policy at once.
pub async fn write(
    registry: &Registry,
    meta: &MetaStore,
    auth: &Auth,
    repo: &RepoName,
    settings: &RepositorySettings,
) -> Result<()> {
    if let Some(policy) = &settings.retention {
        policy.validate()?;
    }
    let retention = settings
        .retention
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| RegistryError::Internal(e.to_string()))?;
    meta.put_repository_settings(
        repo.as_str(),
        &SettingsRow {
            immutable_tags: settings.immutable_tags,
            retention,
        },
    )
    .await?;
    let accounts = AccountAdmin::new(meta.clone());
    let was_public = public_read(meta, repo).await?;
    if settings.public_read && !was_public {
        accounts.grant(ANONYMOUS, repo.as_str(), "pull").await?;
    } else if !settings.public_read && was_public {
        accounts.revoke(ANONYMOUS, repo.as_str()).await?;
    }
    auth.forget_cached();
    if let Some(policy) = &settings.retention {
        registry.apply_retention(repo, policy).await?;
    }
    Ok(())
}
