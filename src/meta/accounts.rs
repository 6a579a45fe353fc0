//! Accounts and grants in the metadata store.

use sqlx::Row;

use crate::auth::accounts::{Account, AccountKind, Grant, Namespace};
use crate::auth::scope::Actions;
use crate::core::Result;
use crate::meta::{MetaStore, now_ms};

impl MetaStore {
    pub async fn account_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    pub async fn account(&self, name: &str) -> Result<Option<Account>> {
        let row =
            sqlx::query("SELECT name, kind, secret_hash, disabled FROM accounts WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| account_from_row(&r)))
    }

    pub async fn list_accounts(&self) -> Result<Vec<Account>> {
        let rows =
            sqlx::query("SELECT name, kind, secret_hash, disabled FROM accounts ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(account_from_row).collect())
    }

    /// Adds an account; false if the name is taken.
    pub async fn insert_account(
        &self,
        name: &str,
        kind: AccountKind,
        secret_hash: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO accounts (name, kind, secret_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(kind.as_str())
        .bind(secret_hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces an account's secret; false if there is no such account.
    pub async fn set_secret(&self, name: &str, secret_hash: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE accounts SET secret_hash = $1 WHERE name = $2")
            .bind(secret_hash)
            .bind(name)
            .execute(&self.pool)
            .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE accounts SET disabled = $1 WHERE name = $2")
            .bind(i64::from(disabled))
            .bind(name)
            .execute(&self.pool)
            .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes an account and its grants; false if there was none.
    pub async fn delete_account(&self, name: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM grants WHERE subject = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM accounts WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn grants(&self, subject: &str) -> Result<Vec<Grant>> {
        let rows = sqlx::query(
            "SELECT namespace, actions FROM grants WHERE subject = $1 ORDER BY namespace",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                // Rows are only written from parsed values.
                Some(Grant {
                    namespace: Namespace::parse(r.get::<&str, _>(0)).ok()?,
                    actions: Actions::parse_lenient(r.get::<&str, _>(1)),
                })
            })
            .collect())
    }

    /// Sets what `subject` may do on `namespace`, replacing an earlier grant.
    pub async fn put_grant(&self, subject: &str, grant: &Grant) -> Result<()> {
        sqlx::query(
            "INSERT INTO grants (subject, namespace, actions, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subject, namespace) DO UPDATE SET actions = excluded.actions",
        )
        .bind(subject)
        .bind(grant.namespace.as_str())
        .bind(grant.actions.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(())
    }

    /// Removes a grant; false if there was none.
    pub async fn delete_grant(&self, subject: &str, namespace: &Namespace) -> Result<bool> {
        let done = sqlx::query("DELETE FROM grants WHERE subject = $1 AND namespace = $2")
            .bind(subject)
            .bind(namespace.as_str())
            .execute(&self.pool)
            .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }
}

fn account_from_row(r: &sqlx::any::AnyRow) -> Account {
    Account {
        name: r.get(0),
        kind: AccountKind::parse(r.get::<&str, _>(1)).unwrap_or(AccountKind::User),
        secret_hash: r.get(2),
        disabled: r.get::<i64, _>(3) != 0,
    }
}
