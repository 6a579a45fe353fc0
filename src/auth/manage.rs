//! Managing accounts and grants: what `berth user|robot|grant` (and later
//! the admin API) do. Secrets are generated here when none is given, and
//! returned once; only their hashes are stored.

use crate::auth::accounts::{
    self, ANONYMOUS, Account, AccountKind, Grant, Namespace, validate_account_name,
};
use crate::auth::scope::Actions;
use crate::core::{RegistryError, Result};
use crate::meta::MetaStore;

pub struct AccountAdmin {
    meta: MetaStore,
}

impl AccountAdmin {
    pub fn new(meta: MetaStore) -> AccountAdmin {
        AccountAdmin { meta }
    }

    /// Adds a user with `password`, or a generated one; returns the password.
    /// An `admin` may do everything everywhere.
    pub async fn add_user(
        &self,
        name: &str,
        password: Option<String>,
        admin: bool,
    ) -> Result<String> {
        let password = password.unwrap_or_else(accounts::random_secret);
        self.add(name, AccountKind::User, &password).await?;
        if admin {
            self.grant(name, "", "*").await?;
        }
        Ok(password)
    }

    /// Adds a robot account; returns its generated secret.
    pub async fn add_robot(&self, name: &str) -> Result<String> {
        let secret = accounts::random_secret();
        self.add(name, AccountKind::Robot, &secret).await?;
        Ok(secret)
    }

    async fn add(&self, name: &str, kind: AccountKind, secret: &str) -> Result<()> {
        validate_account_name(name).map_err(RegistryError::Invalid)?;
        check_password(kind, secret)?;
        if !self
            .meta
            .insert_account(name, kind, &accounts::hash_secret(secret))
            .await?
        {
            return Err(RegistryError::Conflict(format!(
                "account {name:?} already exists"
            )));
        }
        Ok(())
    }

    /// Sets a new secret: the given password for a user, or a generated one.
    /// Returns the new secret.
    pub async fn set_secret(&self, name: &str, password: Option<String>) -> Result<String> {
        let account = self.account(name).await?;
        if account.kind == AccountKind::Robot && password.is_some() {
            return Err(RegistryError::Invalid(
                "robot secrets are generated; omit the password to rotate it".into(),
            ));
        }
        let secret = password.unwrap_or_else(accounts::random_secret);
        check_password(account.kind, &secret)?;
        self.meta
            .set_secret(name, &accounts::hash_secret(&secret))
            .await?;
        Ok(secret)
    }

    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<()> {
        if !self.meta.set_disabled(name, disabled).await? {
            return Err(RegistryError::NotFound(format!("no account {name:?}")));
        }
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        if !self.meta.delete_account(name).await? {
            return Err(RegistryError::NotFound(format!("no account {name:?}")));
        }
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<Account>> {
        self.meta.list_accounts().await
    }

    async fn account(&self, name: &str) -> Result<Account> {
        self.meta
            .account(name)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no account {name:?}")))
    }

    /// Imports the bcrypt entries of an htpasswd file as users (their
    /// hashes kept as they are). Returns the names added; names that exist
    /// already are left alone.
    pub async fn import_htpasswd(&self, text: &str) -> Result<Vec<String>> {
        let mut added = Vec::new();
        for (name, hash) in accounts::parse_htpasswd(text).map_err(RegistryError::Invalid)? {
            if self
                .meta
                .insert_account(&name, AccountKind::User, &hash)
                .await?
            {
                added.push(name);
            }
        }
        Ok(added)
    }

    /// Lets `subject` (an account, or `anonymous`) do `actions` on
    /// `namespace`, replacing what it had there.
    pub async fn grant(&self, subject: &str, namespace: &str, actions: &str) -> Result<Grant> {
        self.subject(subject).await?;
        let grant = Grant {
            namespace: Namespace::parse(namespace).map_err(RegistryError::Invalid)?,
            actions: Actions::parse_strict(actions).map_err(RegistryError::Invalid)?,
        };
        if subject == ANONYMOUS && grant.actions != Actions::PULL {
            return Err(RegistryError::Invalid(
                "anonymous callers can only be granted pull".into(),
            ));
        }
        self.meta.put_grant(subject, &grant).await?;
        Ok(grant)
    }

    pub async fn revoke(&self, subject: &str, namespace: &str) -> Result<()> {
        let namespace = Namespace::parse(namespace).map_err(RegistryError::Invalid)?;
        if !self.meta.delete_grant(subject, &namespace).await? {
            return Err(RegistryError::NotFound(format!(
                "{subject:?} has no grant on {:?}",
                namespace.as_str()
            )));
        }
        Ok(())
    }

    pub async fn grants(&self, subject: &str) -> Result<Vec<Grant>> {
        self.subject(subject).await?;
        self.meta.grants(subject).await
    }

    async fn subject(&self, subject: &str) -> Result<()> {
        if subject != ANONYMOUS {
            self.account(subject).await?;
        }
        Ok(())
    }
}

fn check_password(kind: AccountKind, secret: &str) -> Result<()> {
    if kind == AccountKind::User && secret.chars().count() < 8 {
        return Err(RegistryError::Invalid(
            "passwords must be at least 8 characters".into(),
        ));
    }
    if secret.contains(':') || secret.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(
            "passwords may not contain ':' or control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn admin() -> (AccountAdmin, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(&crate::meta::Location::Sqlite(dir.path().join("meta.db")))
            .await
            .unwrap();
        (AccountAdmin::new(meta), dir)
    }

    #[tokio::test]
    async fn accounts_and_grants() {
        let (admin, _dir) = admin().await;
        let password = admin.add_user("alice", None, false).await.unwrap();
        assert_eq!(password.len(), 43);
        assert!(
            admin
                .add_user("alice", Some("another-pass".into()), false)
                .await
                .is_err()
        );
        assert!(
            admin
                .add_user("bob", Some("short".into()), false)
                .await
                .is_err()
        );
        assert!(admin.add_user("anonymous", None, false).await.is_err());
        let secret = admin.add_robot("ci").await.unwrap();
        assert!(
            admin
                .set_secret("ci", Some("chosen-secret".into()))
                .await
                .is_err()
        );
        assert_ne!(admin.set_secret("ci", None).await.unwrap(), secret);

        let grant = admin.grant("alice", "team/", "pull,push").await.unwrap();
        assert_eq!(grant.namespace.as_str(), "team");
        assert!(admin.grant("alice", "team", "pull,fly").await.is_err());
        assert!(admin.grant("nobody", "team", "pull").await.is_err());
        assert!(admin.grant("anonymous", "public", "push").await.is_err());
        admin.grant("anonymous", "public", "pull").await.unwrap();
        assert_eq!(admin.grants("alice").await.unwrap().len(), 1);
        admin.revoke("alice", "team").await.unwrap();
        assert!(admin.revoke("alice", "team").await.is_err());

        admin.delete("ci").await.unwrap();
        assert!(admin.delete("ci").await.is_err());
        let names: Vec<String> = admin
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["alice"]);
    }

    #[tokio::test]
    async fn htpasswd_users_keep_their_passwords() {
        let (admin, _dir) = admin().await;
        let hash = bcrypt::hash("registry-pass", 4).unwrap();
        let added = admin
            .import_htpasswd(&format!("carol:{hash}\n"))
            .await
            .unwrap();
        assert_eq!(added, ["carol"]);
        let account = admin.account("carol").await.unwrap();
        assert!(accounts::verify_secret(
            &account.secret_hash,
            "registry-pass"
        ));
        assert!(
            admin
                .import_htpasswd(&format!("carol:{hash}\n"))
                .await
                .unwrap()
                .is_empty()
        );
    }
}
